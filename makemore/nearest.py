"""The closest item of a list to each query by Levenshtein edit distance, in batched tensor operations.

An edit changes at most one character of the multiset of characters, so distance(a, b) >= max(len(a), len(b)) -
common(a, b), where common counts the characters a and b share as multisets: one matmul of "count of c is at least t"
indicator features bounds every pair. Pairs are then scored exactly in rising order of their bound (1,000 queries
against 32,000 items are 32 million pairs, too many to score each), and a query is settled as soon as its best
distance is no more than the bound of every pair not yet scored.
"""
from __future__ import annotations

import torch

QUERY_CHUNK = 256  # queries whose bounds against all items are held at once: 256 x 32,000 floats = 33 MB
PAIR_CHUNK = 1 << 18  # pairs scored exactly at once


def _encode(strings: list[str], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Character ids (len(strings), longest) padded with -1, and the lengths; index: each character's id."""
    lengths = torch.tensor([len(s) for s in strings], dtype=torch.long)
    ids = torch.full((len(strings), max(1, max(map(len, strings), default=0))), -1, dtype=torch.long)
    flat = torch.tensor([index[c] for s in strings for c in s], dtype=torch.long)
    ids[torch.arange(ids.shape[1]) < lengths[:, None]] = flat  # a mask fills row by row, as the list runs
    return ids, lengths


def _counts(ids: torch.Tensor, n_chars: int) -> torch.Tensor:
    """(S, n_chars) how often each character occurs in each string."""
    counts = torch.zeros(ids.shape[0], n_chars + 1, dtype=torch.long)
    counts.scatter_add_(1, ids + 1, torch.ones_like(ids))
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
    index = {c: i for i, c in enumerate(dict.fromkeys("".join(items) + "".join(queries)))}
    item_ids, item_len = _encode(items, index)
    query_ids, query_len = _encode(queries, index)
    item_counts = _counts(item_ids, len(index))
    levels = item_counts.max(0).values
    item_feat = _features(item_counts, levels)
    query_feat = _features(_counts(query_ids, len(index)), levels)  # counts above an item's max are moot
    query_len_f, item_len_f = query_len.float(), item_len.float()
    # each query's best pair as distance * len(items) + item index: the least is the closest, then the first
    best = torch.full((len(queries),), torch.iinfo(torch.int64).max)
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
                best.scatter_reduce_(0, qi, d.long() * len(items) + ci, reduce="amin")
            # every pair left has distance >= its bound > level, so a best of <= level is final
            still = best[rows] // len(items) > level
            rows, bound = rows[still], bound[still]
            level += 1
    return (best % len(items)).tolist(), (best // len(items)).tolist()

