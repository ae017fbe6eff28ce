"""The counting bigram of the lecture: the n-gram model at block size 1, add-1 smoothed by default.

P(next | prev) = (N[prev, next] + k) / rowsum(N[prev] + k), in float64 so that the lecture's figures are
reproduced to four decimals. It is makemore.models.ngram with one character of context; only the counts
that occur are stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.models import register
from makemore.models.ngram import NGram, _option_error


@dataclass
class BigramConfig:
    block_size: int = 1  # a bigram sees one previous character
    # add-k: k fake counts in every cell, so no transition has probability 0 (or "kn", as for ngram)
    smoothing: float | str = 1.0
    discount: tuple | None = None  # kn only: (D1, D2, D3+)


@register("bigram")
class Bigram(NGram):
    """Counts N[prev, next] in one pass; P = (N + k) / rowsum(N + k). No gradient descent."""

    Config = BigramConfig

    def __init__(self, config: BigramConfig, vocab_size: int):
        if config.block_size != 1:
            raise _option_error("--model bigram has block size 1; for a longer context use --model ngram --block-size K")
        super().__init__(config, vocab_size)

    @property
    def N(self) -> torch.Tensor:
        """The lecture's dense (V, V) count table N[prev, next], rebuilt from the stored bigrams."""
        V = self.vocab_size
        N = torch.zeros(V * V, dtype=torch.float64, device=self.counts_2.device)
        N[self.ngrams_2.long()] = self.counts_2.double()
        return N.view(V, V)

    def probs(self) -> torch.Tensor:
        """The lecture's (V, V) table P[prev, next]."""
        prev = torch.arange(self.vocab_size, device=self.discounts.device)[:, None]
        return self(prev).exp()
