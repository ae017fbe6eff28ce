"""The closest item of a list to each query, by Levenshtein edit distance, in batched tensor operations.

Comparing 1,000 queries with 32,000 items is 32 million pairs: too many for an exact distance each.
A cheap lower bound rules most of them out first. An edit changes at most one character of the
multiset of characters, so for strings a and b

    distance(a, b) >= max(len(a), len(b)) - common(a, b)

where common counts the characters the two share as multisets (sum over c of min(count_a(c), count_b(c))).
common is a matrix product of "count of c is at least t" indicator features, so the bound for every
pair costs one matmul. Pairs are then scored exactly in rising order of their bound, and a query is
settled as soon as its best exact distance is no more than the bound of every pair not yet scored.
"""
from __future__ import annotations

import torch

QUERY_CHUNK = 256  # queries whose bounds against all items are held at once: 256 x 32,000 floats = 33 MB
PAIR_CHUNK = 1 << 18  # pairs scored exactly at once


def _encode(strings: list[str], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Character ids (len(strings), longest) padded with -1, and the lengths; codes are the sorted
    code points of all characters, and a character's id is its place among them."""
    lengths = torch.tensor([len(s) for s in strings], dtype=torch.long)
    width = max(1, int(lengths.max())) if strings else 1
    ids = torch.full((len(strings), width), -1, dtype=torch.long)
    text = "".join(strings)
    if text:
        flat = torch.searchsorted(codes, _code_points(text))
        row = torch.repeat_interleave(torch.arange(len(strings)), lengths)
        starts = torch.cumsum(lengths, 0) - lengths
        ids[row, torch.arange(len(text)) - starts[row]] = flat
    return ids, lengths


def _code_points(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()


def _counts(ids: torch.Tensor, n_chars: int) -> torch.Tensor:
    """(S, n_chars) how often each character occurs in each string."""
    counts = torch.zeros(ids.shape[0], n_chars + 1, dtype=torch.long)
    counts.scatter_add_(1, ids.clamp(min=-1) + 1, torch.ones_like(ids))
    return counts[:, 1:]  # column 0 gathered the padding


def _features(counts: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Indicator features [count(c) >= t] for t = 1..levels[c]; their dot product is the shared count."""
    cols = [counts[:, c : c + 1] >= torch.arange(1, int(levels[c]) + 1) for c in range(counts.shape[1])]
    return torch.cat(cols, dim=1).float()


def pair_distances(a: torch.Tensor, la: torch.Tensor, b: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """Exact edit distances of P pairs of padded id rows a (P, A) and b (P, B) with lengths la, lb.

    The Wagner-Fischer table is filled a row at a time for all pairs together. Within a row the
    insertion chain D[i, j] = min_k (tmp[k] + j - k) is a running minimum, so no loop over j is needed.
    """
    P, B = b.shape
    j = torch.arange(B + 1, dtype=torch.int32)
    prev = j.expand(P, B + 1)
    out = torch.where(la == 0, lb, 0).to(torch.int32)
    for i in range(1, int(la.max()) + 1 if P else 1):
        cost = (a[:, i - 1 : i] != b).to(torch.int32)
        tmp = torch.empty(P, B + 1, dtype=torch.int32)
        tmp[:, 0] = i
        tmp[:, 1:] = torch.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
        cur = torch.cummin(tmp - j, dim=1).values + j
        out = torch.where(la == i, cur.gather(1, lb[:, None]).squeeze(1), out)
        prev = cur
    return out


def nearest(queries: list[str], items: list[str]) -> tuple[list[int], list[int]]:
    """For each query: the index in items of its closest item (the first one on a tie) and the distance."""
    if not items:
        raise ValueError("nearest needs at least one item to compare with")
    codes = _code_points("".join(sorted(set("".join(items)) | set("".join(queries)))))
    item_ids, item_len = _encode(items, codes)
    query_ids, query_len = _encode(queries, codes)
    item_counts = _counts(item_ids, len(codes))
    levels = item_counts.max(0).values
    item_feat = _features(item_counts, levels)
    query_feat = _features(_counts(query_ids, len(codes)), levels)  # counts above an item's max are moot
    query_len_f, item_len_f = query_len.float(), item_len.float()
    best = torch.full((len(queries),), torch.iinfo(torch.int32).max, dtype=torch.int32)
    best_ix = torch.zeros(len(queries), dtype=torch.long)
    for start in range(0, len(queries), QUERY_CHUNK):
        # the bound of every pair of this chunk, in float32: small integers, so exact
        bound = torch.maximum(query_len_f[start : start + QUERY_CHUNK, None], item_len_f[None, :])
        bound.sub_(query_feat[start : start + QUERY_CHUNK] @ item_feat.T)
        rows = torch.arange(bound.shape[0]) + start  # queries of the chunk not settled yet
        level = int(bound.min())
        while rows.numel():
            r, c = (bound == level).nonzero(as_tuple=True)
            for p in range(0, r.numel(), PAIR_CHUNK):
                qi, ci = rows[r[p : p + PAIR_CHUNK]], c[p : p + PAIR_CHUNK]
                d = pair_distances(query_ids[qi], query_len[qi], item_ids[ci], item_len[ci])
                _keep_best(best, best_ix, qi, ci, d, len(items))
            # every pair left has distance >= its bound > level, so a best of <= level is final
            still = best[rows] > level
            rows, bound = rows[still], bound[still]
            level += 1
    return best_ix.tolist(), best.tolist()


def _keep_best(best: torch.Tensor, best_ix: torch.Tensor, qi: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
               n_items: int) -> None:
    """Lower best[qi] to d where d is smaller, or equal with an earlier item (ties go to the first item)."""
    # one key per pair orders by distance, then by item index; scatter_reduce keeps each query's least key
    key = d.long() * n_items + c
    old = best.long() * n_items + best_ix
    old = torch.where(best == torch.iinfo(torch.int32).max, torch.iinfo(torch.int64).max, old)
    least = old.scatter_reduce(0, qi, key, reduce="amin")
    changed = least != old
    best[changed] = (least[changed] // n_items).to(torch.int32)
    best_ix[changed] = least[changed] % n_items
