"""The counting bigram of the lecture: a table of next-character counts, add-k smoothed, rows normalised."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.models import register
from makemore.models.base import Model


@dataclass
class BigramConfig:
    block_size: int = 1  # a bigram sees one previous character
    smoothing: float = 1.0  # add-k: k fake counts in every cell, so no transition has probability 0


@register("bigram")
class Bigram(Model):
    """Counts N[prev, next] in one pass; P = (N + k) / rowsum(N + k). No gradient descent."""

    Config = BigramConfig
    counts = True

    def __init__(self, config: BigramConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        if config.block_size != 1:
            raise ValueError("bigram has block_size 1")
        # float64: the lecture's figures are reproduced to four decimals
        self.register_buffer("N", torch.zeros(vocab_size, vocab_size, dtype=torch.float64))

    def fit(self, dataset) -> None:
        V = self.vocab_size
        self.N.zero_()
        for x, y in dataset.chunks(1 << 20):
            self.N += torch.bincount(x[:, -1] * V + y, minlength=V * V).view(V, V).to(self.N)

    def probs(self) -> torch.Tensor:
        P = self.N + self.config.smoothing
        rowsum = P.sum(1, keepdim=True)
        # a context never seen in training (possible only with smoothing 0) predicts uniformly
        return torch.where(rowsum > 0, P / rowsum.clamp(min=1e-300), 1.0 / self.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.probs().log()[idx[:, -1]]
