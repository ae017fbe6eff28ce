"""The counting bigram of the lecture: the n-gram model at block size 1, add-1 smoothed by default.

P(next | prev) = (N[prev, next] + k) / rowsum(N[prev] + k), in float64 so that the lecture's figures are
reproduced to four decimals. It is makemore.models.ngram with one character of context; only the counts
that occur are stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.models import register
from makemore.models.ngram import NGram
from makemore.models.smoothing import parse_discount, parse_smoothing
from makemore.options import option


@dataclass
class BigramConfig:
    block_size: int = option(1, "Characters of context.", low=1, high=1,  # a bigram sees one
                             note="for a longer context use --model ngram --block-size K")
    # add-k: k fake counts in every cell, so no transition has probability 0 (the lecture's add-1)
    smoothing: float | str = option(1.0, "add-k (a number k >= 0) or kn (interpolated modified Kneser-Ney).",
                                    kind=str, parse=parse_smoothing, metavar="K|kn")
    discount: tuple | None = option(None, "With --smoothing kn: the discounts D or D1,D2,D3+ of every order "
                                    "(none: estimated per order from the counts).", kind=str,
                                    parse=parse_discount, metavar="D|D1,D2,D3")


@register("bigram")
class Bigram(NGram):
    """Counts N[prev, next] in one pass; P = (N + k) / rowsum(N + k). No gradient descent."""

    Config = BigramConfig

    @property
    def N(self) -> torch.Tensor:
        """The lecture's dense (V, V) count table N[prev, next], rebuilt from the stored bigrams."""
        V = self.vocab_size
        N = torch.zeros(V * V, dtype=torch.float64, device=self.counts_2.device)
        N[self.ngrams_2.long()] = self.counts_2.double()
        return N.view(V, V)

    def bigram_counts(self) -> torch.Tensor:
        return self.N

    def probs(self) -> torch.Tensor:
        """The lecture's (V, V) table P[prev, next]."""
        prev = torch.arange(self.vocab_size, device=self.discounts.device)[:, None]
        return self(prev).exp()
