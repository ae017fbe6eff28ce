"""Counting n-grams over the block_size context: add-k, or interpolated modified Kneser-Ney.

Only the n-grams that occur are kept, as sorted integer keys with their counts (a dense table would have
V^(K+1) cells), and contexts are looked up by binary search. Modified Kneser-Ney is Chen and Goodman's
(1998, section 3), interpolated as KenLM and SRILM build it:

    p(w | h) = (c(h w) - D(c(h w))) / c(h .)  +  gamma(h) p(w | h')      gamma(h) = sum_w D(c(h w)) / c(h .)

h' is h without its oldest character, D one of the order's three discounts D1, D2, D3+, and the empty
context interpolates with the uniform distribution. The longest order counts occurrences, shorter ones
continuations (how many different characters precede h w), except a context of boundary padding only,
which nothing else can precede: it keeps its real counts, as KenLM's <s>.

A model of several labels also counts each label's n-grams of every order (the same tables, per label) and
interpolates them as above, order by order from the shortest, with a prior of beta counts on each context:

    p_L(w | h) = (c_L(h w) - D(c_L(h w))) / (c_L(h .) + beta)  +  gamma_L(h) p_L(w | h')
    gamma_L(h) = (sum_w D(c_L(h w)) + beta) / (c_L(h .) + beta)

Where the plain model ends in the uniform distribution, each label's chain ends in the pooled model's
p(w | h) of the whole context: p_L(w | h) = A_L(w | h) + G_L(h) p(w | h), A_L being the chain started from
zero and G_L(h) the product of gamma_L over the suffixes of h the label saw. So a label's own shorter contexts
tell it apart from the others (what a language is made of), and a context the label has rarely seen keeps the
pooled model's whole structure.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from makemore import options
from makemore.errors import DataError, OptionError
from makemore.models import register
from makemore.models.base import Model
from makemore.options import option

INT64_MAX = 2**63 - 1
# Numbers (float64) of whole distributions kept per seen context for fast lookups: 64 MB, and as much again for a
# labelled model's own rows. Orders beyond it are interpolated at every forward pass from their sparse tables.
DENSE_ROWS = 2**23
# beta above: counts each context of a label leaves to its shorter ones beyond the discounts, so that a label of
# a few items leans on the pooled model. Tuned on the dev splits of words-8langs and names-1990s and on a label of 4
# and of 24 Finnish words beside 2,400 of each other language (BENCHMARKS.md, labels): 0 trusts a small label's
# few counts too much, 4 costs the words 0.09 of dev loss
LABEL_PRIOR = 1.0


def parse_smoothing(value) -> float | str:
    """'kn' or a finite number k >= 0 (add-k)."""
    if isinstance(value, str) and value.strip().lower() == "kn":
        return "kn"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is neither a number (add-k) nor kn")
    try:
        k = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a number (add-k) nor kn") from None
    if not 0 <= k < math.inf:
        raise ValueError(f"{value!r} must be a finite number >= 0 (add-k), or kn")
    return k


def parse_discount(value) -> tuple[float, float, float] | None:
    """None, or D or D1,D2,D3 (a string, or a list from a checkpoint) as (D1, D2, D3+), with 0 < Dr <= r, so
    that every discounted count stays >= 0 and every seen context leaves some probability to the shorter ones."""
    if value is None:
        return None
    values = options.numbers([value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(0 < d <= r for r, d in zip((1, 2, 3), values)):
        raise ValueError(f"{value!r} must be D or D1,D2,D3 with 0 < D1 <= 1, 0 < D2 <= 2, 0 < D3 <= 3")
    return tuple(values)


def smoothing_option(default):
    """--smoothing, declared once for the n-gram models, each with its default."""
    return option(default, "add-k (a number k >= 0) or kn (interpolated modified Kneser-Ney).", kind=str,
                  parse=parse_smoothing, metavar="K|kn")


@dataclass
class NGramConfig:
    # 5 is the best on the lecture's names (BENCHMARKS.md, tuning notes); beyond 16 characters almost every
    # context is seen once, so the longest orders only add memory
    block_size: int = option(5, "Characters of context.", low=1, high=16)  # it counts (block_size+1)-grams
    # Kneser-Ney is the best counting smoother (Chen & Goodman 1998)
    smoothing: float | str = smoothing_option("kn")
    discount: tuple | None = option(None, "With --smoothing kn: the discounts D or D1,D2,D3+ of every order "
                                    "(none: estimated per order from the counts).", kind=str,
                                    parse=parse_discount, metavar="D|D1,D2,D3")


def estimate_discounts(counts: torch.Tensor) -> list[float]:
    """Chen & Goodman's D1, D2, D3+ from the numbers n1..n4 of n-grams seen exactly 1..4 times; where tiny data
    makes one meaningless, Ney's single discount Y = n1 / (n1 + 2 n2) (or 0.5 without any n1)."""
    n1, n2, n3, n4 = (int((counts == r).sum()) for r in (1, 2, 3, 4))
    Y = n1 / (n1 + 2 * n2) if n1 else 0.5
    found = []
    for r, (a, b) in enumerate(((n1, n2), (n2, n3), (n3, n4)), start=1):
        D = r - (r + 1) * Y * b / a if a else float("nan")
        found.append(D if 0 < D <= r else Y)
    return found


def _key_dtype(bound: int) -> torch.dtype:
    """The smallest integer type holding keys below bound (checkpoints stay small)."""
    return torch.int32 if bound <= 2**31 - 1 else torch.int64


def grouped(keys: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor | None):
    """Equal (label, key) pairs (keys alone without labels) merged, in increasing order, label first: their labels
    (or None), keys, summed counts, and how many entries each merged."""
    if labels is None:
        unique, group, merged = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
        sums = torch.zeros(len(unique), dtype=counts.dtype, device=keys.device).index_add_(0, group, counts)
        return None, unique, sums, merged
    # a stable sort by label after one by key: by label, then key (a key of both could overflow 64 bits)
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    keys, counts, labels = keys[order], counts[order], labels[order]
    new = torch.ones(len(keys), dtype=torch.bool, device=keys.device)
    new[1:] = (keys[1:] != keys[:-1]) | (labels[1:] != labels[:-1])
    group = torch.cumsum(new, 0) - 1
    n_groups = int(new.sum())
    sums = torch.zeros(n_groups, dtype=counts.dtype, device=keys.device).index_add_(0, group, counts)
    return labels[new], keys[new], sums, torch.bincount(group, minlength=n_groups)


def count_orders(labels, top: torch.Tensor, raw: torch.Tensor, V: int, longest: int, shortest: int,
                 continuations: bool) -> dict:
    """Order n -> (labels, keys, counts) of the n-grams of every order from longest down to shortest, each from the
    order above it. With continuations (Kneser-Ney), the shorter orders count how many different characters precede
    an n-gram instead of its occurrences, except a context of padding only, which keeps its real counts."""
    tables = {longest: (labels, top, raw)}
    for n in range(longest - 1, shortest - 1, -1):
        # every occurrence of a shorter n-gram is the end of some window above: never the data again
        labels, keys, raw, preceding = grouped(tables[n + 1][1] % V**n, raw, labels)
        # a context of padding only (key < V) can only be preceded by padding: its continuation counts would
        # all be 1, so it keeps its real counts, as KenLM's <s>
        if continuations:
            tables[n] = (labels, keys, torch.where(keys < V, raw, preceding) if n >= 2 else preceding)
        else:
            tables[n] = (labels, keys, raw)
    return tables


@register("ngram")
class NGram(Model):
    """Saves per order n = 1..block_size+1 the sorted keys of the n-grams that occur (token ids in base V, the
    oldest character most significant) and their counts; the lookup tables are derived from them (_derive)."""

    Config = NGramConfig
    counts = True

    @classmethod
    def config_for_data(cls, config: NGramConfig, given: dict, items: list[str], vocab_size: int) -> NGramConfig:
        """The default block size, shortened where a large vocabulary's keys would not fit in 64 bits."""
        if "block_size" in given or vocab_size ** (config.block_size + 1) <= INT64_MAX:
            return config
        return dataclasses.replace(config, block_size=max(1, cls._longest_keyed(config.block_size, vocab_size)))

    @staticmethod
    def _longest_keyed(K: int, V: int) -> int:
        """The longest block size up to K whose (block_size+1)-grams over V tokens have 64-bit keys (0: none)."""
        return max((k for k in range(1, K + 1) if V ** (k + 1) <= INT64_MAX), default=0)

    @classmethod
    def check_config(cls, config: NGramConfig, vocab_size: int) -> None:
        K, V = config.block_size, vocab_size
        if V ** (K + 1) > INT64_MAX:
            # a block size that fits a smaller vocabulary: what this data cannot do, not a value no model takes
            raise DataError(f"--block-size {K} is too long for {cls.name}'s 64-bit keys with this data's vocabulary "
                            f"of {V} characters; use at most {cls._longest_keyed(K, V)}")
        if config.discount is not None and config.smoothing != "kn":
            raise OptionError("--discount applies only with --smoothing kn")

    @classmethod
    def expected_tensors(cls, config: NGramConfig, vocab_size: int, n_labels: int = 1) -> dict:
        """The count tables' lengths depend on the data (None); the discounts are one row per order."""
        cls.check_config(config, vocab_size)
        K = config.block_size
        kinds = ("ngrams", "counts") + (("label_ngrams", "label_counts") if n_labels > 1 else ())
        tables = {f"{kind}_{n}": ((torch.int32, torch.int64), (None,)) for n in range(1, K + 2) for kind in kinds}
        ends = {f"label_ends_{n}": (torch.int64, (n_labels,)) for n in range(1, K + 2) if n_labels > 1}
        return tables | ends | {"discounts": (torch.float64, (K + 1, 3))}

    def __init__(self, config: NGramConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        K = config.block_size
        self.kn = config.smoothing == "kn"
        for n in range(1, K + 2):
            self.register_buffer(f"ngrams_{n}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"counts_{n}", torch.zeros(0, dtype=torch.int64))
            if n_labels > 1:  # each label's n-grams, label by label: label l's end where label_ends[l] says
                self.register_buffer(f"label_ngrams_{n}", torch.zeros(0, dtype=torch.int64))
                self.register_buffer(f"label_counts_{n}", torch.zeros(0, dtype=torch.int64))
                self.register_buffer(f"label_ends_{n}", torch.zeros(n_labels, dtype=torch.int64))
        # the discounts used per order (row n-1 for n-grams of length n), kept for inspection and loading
        self.register_buffer("discounts", torch.zeros(K + 1, 3, dtype=torch.float64))
        self._derive()
        self.register_load_state_dict_pre_hook(NGram._take_stored_shapes)
        self.register_load_state_dict_post_hook(NGram._check_and_derive)

    def fit(self, dataset) -> None:
        """Count the (K+1)-grams chunk by chunk (per label with labels), then the shorter orders from them."""
        K, V = self.block_size, self.vocab_size
        labelled = self.n_labels > 1
        keys, counts, labels = [], [], []
        for x, y, label in dataset.chunks(1 << 20):
            if labelled and label is None:
                raise ValueError("a labelled model needs each example's label")
            key = torch.zeros(len(y), dtype=torch.int64, device=y.device)
            for j in range(K):  # oldest context character first: it ends up most significant
                key = key * V + x[:, j]
            key = key * V + y
            label_u, u, c, _ = grouped(key, torch.ones_like(key), label if labelled else None)
            keys.append(u)
            counts.append(c)
            labels.append(label_u)
        # the chunks' tables, merged: the same n-gram may occur in several chunks
        label, top, raw, _ = grouped(torch.cat(keys), torch.cat(counts), torch.cat(labels) if labelled else None)
        if labelled:
            # every order, add-k's too: each label's shorter contexts are the prior of its longer ones
            per_label = count_orders(label, top, raw, V, K + 1, 1, self.kn)
            for n, (label_n, keys_n, counts_n) in per_label.items():
                self._store(f"label_ngrams_{n}", f"label_counts_{n}", keys_n, counts_n, n)
                setattr(self, f"label_ends_{n}", torch.cumsum(torch.bincount(label_n, minlength=self.n_labels), 0))
            _, top, raw, _ = grouped(top, raw, None)  # the pooled (K+1)-grams: every label's together
        tables = count_orders(None, top, raw, V, K + 1, 1 if self.kn else K + 1, self.kn)
        for n in range(1, K + 2):
            empty = torch.zeros(0, dtype=torch.int64, device=top.device)
            _, keys_n, counts_n = tables.get(n, (None, empty, empty))
            self._store(f"ngrams_{n}", f"counts_{n}", keys_n, counts_n, n)
            if self.kn:
                D = self.config.discount or estimate_discounts(counts_n)
                self.discounts[n - 1] = torch.tensor(D, dtype=torch.float64)
        self._derive()

    def _store(self, keys_name: str, counts_name: str, keys: torch.Tensor, counts: torch.Tensor, n: int) -> None:
        """A table of n-grams and their counts, each in the smallest integer type that holds it."""
        top_count = int(counts.max()) + 1 if len(counts) else 0
        setattr(self, keys_name, keys.to(_key_dtype(self.vocab_size**n)))
        setattr(self, counts_name, counts.to(_key_dtype(top_count)))

    def _derive(self) -> None:
        """From the stored keys and counts, the per-order lookup tables (buffers that are not saved)."""
        K, V = self.block_size, self.vocab_size
        device = self.discounts.device
        f64 = dict(dtype=torch.float64, device=device)
        unigram = torch.full((V,), 1.0 / V, **f64)
        if self.kn and len(self.counts_1):
            w, c = self.ngrams_1.long(), self.counts_1.to(**f64)
            d = self._discount_of(1, c)
            total = c.sum()
            alpha = torch.zeros(V, **f64).index_add_(0, w, (c - d) / total)
            unigram = alpha + d.sum() / total / V
        for n in range(2, K + 2):
            keys, c = getattr(self, f"ngrams_{n}").long(), getattr(self, f"counts_{n}").to(**f64)
            ctx, inverse, width = torch.unique_consecutive(keys // V, return_inverse=True, return_counts=True)
            total = torch.zeros(len(ctx), **f64).index_add_(0, inverse, c)
            if self.kn:
                d = self._discount_of(n, c)
                alpha = (c - d) / total[inverse]
                gamma = torch.zeros(len(ctx), **f64).index_add_(0, inverse, d) / total
            else:
                k = float(self.config.smoothing)
                # add-k: (c + k) / (total + kV) = c / (total + kV) + gamma / V with gamma = kV / (total + kV),
                # written so that a huge k (kV beyond float64) gives the uniform distribution, not inf / inf
                denom = total + k * V
                alpha = c / denom[inverse]
                gamma = 1 / (1 + total / k / V)
            self.register_buffer(f"ctx_{n}", ctx, persistent=False)
            # where each context's n-grams start in the table, and (last) where the table ends
            self.register_buffer(f"start_{n}", F.pad(torch.cumsum(width, 0), (1, 0)), persistent=False)
            self.register_buffer(f"next_{n}", keys % V, persistent=False)
            self.register_buffer(f"alpha_{n}", alpha, persistent=False)
            self.register_buffer(f"gamma_{n}", gamma, persistent=False)
        # The whole distribution of every seen context, order by order while they fit in DENSE_ROWS numbers:
        # then a forward pass only finds each context's longest seen suffix and reads its row.
        self.register_buffer("rows", unigram[None], persistent=False)
        self.first_row = [0, 0]  # first_row[n]: where order n's rows start in self.rows
        self.dense_orders = 1
        for n in range(2, K + 2):
            ctx = getattr(self, f"ctx_{n}")
            if len(self.rows) + len(ctx) > DENSE_ROWS // V:
                break
            suffixes = [ctx % V**k for k in range(n - 1)]
            rows = self._longest_seen(suffixes) * getattr(self, f"gamma_{n}")[:, None]
            seen = torch.arange(len(ctx), device=device)
            self._add_alphas(rows, n, seen, torch.ones_like(seen, dtype=torch.bool))
            self.first_row.append(len(self.rows))
            self.rows = torch.cat([self.rows, rows])
            self.dense_orders = n
        if self.n_labels > 1:
            self._derive_labels()

    def _derive_labels(self) -> None:
        """Per order, each label's contexts (by label, then context), where their n-grams start, and their discounted
        counts alpha and leftover gamma; then each label's A and G (module docstring) after every context it saw, order
        by order while they fit in DENSE_ROWS numbers."""
        V = self.vocab_size
        f64 = dict(dtype=torch.float64, device=self.discounts.device)
        discounts = torch.zeros(self.block_size + 1, 3, **f64)
        for n in range(1, self.block_size + 2):
            keys, c = getattr(self, f"label_ngrams_{n}").long(), getattr(self, f"label_counts_{n}").to(**f64)
            # the labels' own discounts: add-k models keep no pooled discounts of the shorter orders
            discounts[n - 1] = torch.tensor(self.config.discount or estimate_discounts(c), **f64)
            ends = getattr(self, f"label_ends_{n}")
            label = torch.repeat_interleave(torch.arange(self.n_labels, device=keys.device),
                                            torch.diff(ends, prepend=ends[:1] * 0), output_size=len(keys))
            ctx = keys // V
            new = torch.ones(len(keys), dtype=torch.bool, device=keys.device)
            new[1:] = (ctx[1:] != ctx[:-1]) | (label[1:] != label[:-1])
            group = torch.cumsum(new, 0) - 1
            n_ctx = int(new.sum())
            total = torch.zeros(n_ctx, **f64).index_add_(0, group, c)
            D = self._discount_of(n, c, discounts)
            # a (label, context) pair as one increasing key, label * U + the context's rank among the U contexts
            # any label saw: label * V^(n-1) + context could overflow 64 bits
            contexts = torch.unique(ctx[new], sorted=True)
            self.register_buffer(f"label_contexts_{n}", contexts, persistent=False)
            self.register_buffer(f"label_ctx_{n}", label[new] * len(contexts) + torch.searchsorted(contexts, ctx[new]),
                                 persistent=False)
            self.register_buffer(f"label_start_{n}", F.pad(torch.cumsum(torch.bincount(group, minlength=n_ctx), 0),
                                                           (1, 0)), persistent=False)
            self.register_buffer(f"label_next_{n}", keys % V, persistent=False)
            self.register_buffer(f"label_alpha_{n}", (c - D) / (total + LABEL_PRIOR)[group], persistent=False)
            leftover = torch.zeros(n_ctx, **f64).index_add_(0, group, D) + LABEL_PRIOR
            self.register_buffer(f"label_gamma_{n}", leftover / (total + LABEL_PRIOR), persistent=False)
        # A and G after every (label, context) pair of order n a label saw, order by order while they fit: row
        # label_first_row[n] + the pair's place in label_ctx_n. Row 0 (A = 0, G = 1) is a label that saw nothing.
        self.register_buffer("label_rows", torch.zeros(1, V, **f64), persistent=False)
        self.register_buffer("label_leftover", torch.ones(1, **f64), persistent=False)
        self.label_first_row = [0]
        self.label_dense_orders = 0
        for n in range(1, self.block_size + 2):
            pairs = getattr(self, f"label_ctx_{n}")
            if len(self.label_rows) + len(pairs) > DENSE_ROWS // V:
                break
            contexts = getattr(self, f"label_contexts_{n}")
            label, ctx = pairs // len(contexts), contexts[pairs % len(contexts)]
            A, G = self._longest_label_seen([ctx % V**k for k in range(n)], label)
            seen = torch.arange(len(pairs), device=pairs.device)
            self._label_order(A, G, n, seen, torch.ones_like(seen, dtype=torch.bool))
            self.label_first_row.append(len(self.label_rows))
            self.label_rows = torch.cat([self.label_rows, A])
            self.label_leftover = torch.cat([self.label_leftover, G])
            self.label_dense_orders = n

    def _find_label(self, n: int, key: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each (label, context key) pair sits in order n's label table, and whether it is there at all."""
        contexts, pairs = getattr(self, f"label_contexts_{n}"), getattr(self, f"label_ctx_{n}")
        if len(pairs) == 0:  # (empty before fit)
            return torch.zeros_like(key), torch.zeros_like(key, dtype=torch.bool)
        rank = torch.searchsorted(contexts, key).clamp(max=len(contexts) - 1)
        pair = label * len(contexts) + rank
        pos = torch.searchsorted(pairs, pair).clamp(max=len(pairs) - 1)
        return pos, (contexts[rank] == key) & (pairs[pos] == pair)

    def _longest_label_seen(self, suffixes: list, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of A and G after each row's longest suffix its label saw in training; suffixes[k] holds the keys
        of the last k characters (k = 0, 1, ...); only orders up to label_dense_orders are searched."""
        index = torch.zeros_like(label)
        for n in range(1, min(len(suffixes), self.label_dense_orders) + 1):
            pos, found = self._find_label(n, suffixes[n - 1], label)
            index = torch.where(found, self.label_first_row[n] + pos, index)
        return self.label_rows[index], self.label_leftover[index]

    def _label_order(self, A: torch.Tensor, G: torch.Tensor, n: int, pos: torch.Tensor, found: torch.Tensor) -> None:
        """A and G after the context of order n-1 become those after the one of order n (at pos in the label table
        where found; an unseen one leaves them as they are)."""
        gamma = torch.where(found, getattr(self, f"label_gamma_{n}")[pos], 1.0)
        A *= gamma[:, None]
        G *= gamma
        self._add_alphas(A, n, pos, found, "label_")

    def _longest_seen(self, suffixes: list) -> torch.Tensor:
        """The dense row of each context's longest suffix seen in training. suffixes[k] holds the keys of
        the last k characters (k = 0, 1, ...); only orders up to dense_orders are searched."""
        index = torch.zeros_like(suffixes[0])  # the unigram row, for contexts not seen at all
        for n in range(2, min(len(suffixes) + 1, self.dense_orders) + 1):
            pos, found = self._find(n, suffixes[n - 1])
            index = torch.where(found, self.first_row[n] + pos, index)
        return self.rows[index]

    def _find(self, n: int, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each context key sits in order n's table, and whether it is there at all."""
        ctx = getattr(self, f"ctx_{n}")
        if len(ctx) == 0:  # add-k keeps only the longest order
            return torch.zeros_like(key), torch.zeros_like(key, dtype=torch.bool)
        pos = torch.searchsorted(ctx, key).clamp(max=len(ctx) - 1)
        return pos, ctx[pos] == key

    def _add_alphas(self, P: torch.Tensor, n: int, pos: torch.Tensor, found: torch.Tensor, table: str = "") -> None:
        """P[b, w] += alpha(h, w) for every n-gram h w seen in training, h the context at pos[b] of order n (in the
        pooled tables, or with table "label_" the labels')."""
        start_n = getattr(self, f"{table}start_{n}")
        start = start_n[pos]
        width = torch.where(found, start_n[pos + 1] - start, 0)
        total = int(width.sum())
        # the rows' n-grams lie side by side in the tables: expand each row into its range of entries
        rows = torch.repeat_interleave(torch.arange(len(pos), device=P.device), width, output_size=total)
        first = torch.repeat_interleave(torch.cumsum(width, 0) - width, width, output_size=total)
        flat = torch.repeat_interleave(start, width, output_size=total) + torch.arange(total, device=P.device) - first
        P[rows, getattr(self, f"{table}next_{n}")[flat]] += getattr(self, f"{table}alpha_{n}")[flat]

    def _discount_of(self, n: int, c: torch.Tensor, discounts: torch.Tensor | None = None) -> torch.Tensor:
        D1, D2, D3 = (self.discounts if discounts is None else discounts)[n - 1]
        return torch.where(c >= 3, D3, torch.where(c == 2, D2, D1))

    @staticmethod
    def _take_stored_shapes(module, state_dict: dict, prefix: str, *args) -> None:
        """Before loading: the tables' sizes depend on the data, so each takes the checkpoint's shape and type."""
        labelled = ("label_ngrams", "label_counts") if module.n_labels > 1 else ()
        for n in range(1, module.block_size + 2):
            for name in [f"{kind}_{n}" for kind in ("ngrams", "counts") + labelled]:
                stored = state_dict.get(prefix + name)
                if isinstance(stored, torch.Tensor):
                    setattr(module, name, torch.empty_like(stored, device=module.discounts.device))

    @staticmethod
    def _check_and_derive(module, incompatible_keys) -> None:
        """After loading: ValueError unless the tables are what fit() makes (per order, increasing keys of n-grams
        of this vocabulary with positive counts; discounts 0 <= Dr <= r), then the lookup tables derived."""
        V = module.vocab_size
        for n in range(1, module.block_size + 2):
            keys, counts = getattr(module, f"ngrams_{n}").long(), getattr(module, f"counts_{n}")
            if len(keys) != len(counts):
                raise ValueError(f"order {n} has {len(keys)} n-grams but {len(counts)} counts")
            if len(keys) and (int(keys[0]) < 0 or int(keys[-1]) >= V**n or not bool((keys[1:] > keys[:-1]).all())):
                raise ValueError(f"order {n}'s n-grams are not increasing keys below {V}^{n}")
            if len(counts) and int(counts.min()) < 1:
                raise ValueError(f"order {n} has a count below 1")
            if module.n_labels > 1:
                module._check_label_table(n)
        limits = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        if not bool(((module.discounts >= 0) & (module.discounts <= limits)).all()):
            raise ValueError("a discount is outside 0 <= Dr <= r")
        module._derive()

    def _check_label_table(self, n: int) -> None:
        """ValueError unless order n's label table is what fit() makes: per label, increasing keys of n-grams of this
        vocabulary with positive counts, the labels' ends increasing up to the table's length."""
        V = self.vocab_size
        keys, counts = getattr(self, f"label_ngrams_{n}").long(), getattr(self, f"label_counts_{n}")
        ends = getattr(self, f"label_ends_{n}")
        if len(keys) != len(counts):
            raise ValueError(f"order {n}'s label table has {len(keys)} n-grams but {len(counts)} counts")
        if int(ends[0]) < 0 or not bool((ends[1:] >= ends[:-1]).all()) or int(ends[-1]) != len(keys):
            raise ValueError(f"order {n}'s label ends are not increasing up to its {len(keys)} n-grams")
        if len(keys) and (int(keys.min()) < 0 or int(keys.max()) >= V**n):
            raise ValueError(f"order {n}'s label table has a key outside [0, {V}^{n})")
        first = torch.zeros(len(keys), dtype=torch.bool, device=keys.device)
        first[ends[:-1][ends[:-1] < len(keys)]] = True  # where a label after the first starts
        if not bool(((keys[1:] > keys[:-1]) | first[1:]).all()):
            raise ValueError(f"order {n}'s label table does not list each label's n-grams in increasing order")
        if len(counts) and int(counts.min()) < 1:
            raise ValueError(f"order {n}'s label table has a count below 1")

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities (B, V) in float64: the row of the longest seen context, then the orders kept
        sparse (beyond DENSE_ROWS) interpolated on top of it; with labels, each label's A and G on top of that."""
        labelled = self.uses_labels(label)
        V = self.vocab_size
        suffixes = [torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)]
        for k in range(1, self.block_size + 1):  # one more (older) character of context each time
            suffixes.append(suffixes[-1] + idx[:, -k].long() * V ** (k - 1))
        P = self._longest_seen(suffixes)
        for n in range(self.dense_orders + 1, self.block_size + 2):
            if not len(getattr(self, f"ctx_{n}")):  # add-k keeps the longest order only
                continue
            pos, found = self._find(n, suffixes[n - 1])
            # an unseen context passes the shorter context's distribution on unchanged (gamma = 1)
            P *= torch.where(found, getattr(self, f"gamma_{n}")[pos], 1.0)[:, None]
            self._add_alphas(P, n, pos, found)
        if not labelled:
            return P.log()
        A, G = self._longest_label_seen(suffixes, label)
        for n in range(self.label_dense_orders + 1, self.block_size + 2):
            self._label_order(A, G, n, *self._find_label(n, suffixes[n - 1], label))
        return torch.addcmul(A, G[:, None], P).log()
