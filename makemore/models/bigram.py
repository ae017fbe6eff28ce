"""The lecture's counting bigram, P(next | prev) = (N[prev, next] + k) / rowsum(N[prev] + k) in float64 (its
figures to four decimals): makemore.models.ngram with one character of context, add-1 by default."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.models import register
from makemore.models.ngram import NGram, NGramConfig, smoothing_option
from makemore.options import option


@dataclass
class BigramConfig(NGramConfig):
    block_size: int = option(1, "Characters of context.", low=1, high=1,  # a bigram sees one
                             note="for a longer context use --model ngram --block-size K")
    # add-k: k fake counts in every cell, so no transition has probability 0 (the lecture's add-1)
    smoothing: float | str = smoothing_option(1.0)


@register("bigram")
class Bigram(NGram):
    """Counts N[prev, next] in one pass; P = (N + k) / rowsum(N + k). No gradient descent."""

    Config = BigramConfig

    def bigram_counts(self) -> torch.Tensor:
        """The lecture's dense (V, V) count table N[prev, next], rebuilt from the stored bigrams."""
        V = self.vocab_size
        N = torch.zeros(V * V, dtype=torch.float64, device=self.counts_2.device)
        N[self.ngrams_2.long()] = self.counts_2.double()
        return N.view(V, V)

    N = property(bigram_counts)  # the lecture's name for it

    def probs(self, label: int | None = None) -> torch.Tensor:
        """The lecture's (V, V) table P[prev, next] (a labelled model's: that label's)."""
        prev = torch.arange(self.vocab_size, device=self.discounts.device)[:, None]
        return self(prev, None if label is None else torch.full_like(prev[:, 0], label)).exp()
