"""The MLP of Bengio et al. 2003, "A Neural Probabilistic Language Model", as built in the lecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import register
from makemore.models.base import Model


@dataclass
class MLPConfig:
    block_size: int = 3  # characters of context
    n_embd: int = 10  # dimensions of each character's embedding
    n_hidden: int = 200  # tanh units
    # "scaled": weights scaled for tanh (lecture part 3); "randn": plain N(0,1) as in lecture part 2
    init: str = "scaled"


@register("mlp")
class MLP(Model):
    """Embedding table C, block_size embeddings concatenated, a tanh hidden layer, linear to logits."""

    Config = MLPConfig
    train_defaults = dict(steps=20000, batch_size=128, lr=3e-3, optimizer="adamw", schedule="cosine")

    def __init__(self, config: MLPConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        V, E, H, T = vocab_size, config.n_embd, config.n_hidden, config.block_size
        self.C = nn.Parameter(torch.randn(V, E))
        self.W1 = nn.Parameter(torch.randn(T * E, H))
        self.b1 = nn.Parameter(torch.randn(H))
        self.W2 = nn.Parameter(torch.randn(H, V))
        self.b2 = nn.Parameter(torch.randn(V))
        if config.init == "scaled":
            with torch.no_grad():
                self.W1 *= (5 / 3) / (T * E) ** 0.5  # tanh gain / sqrt(fan_in) keeps pre-activations ~N(0,1)
                self.b1 *= 0.01
                self.W2 *= 0.01  # near-uniform first predictions: initial loss ~ log(V), not in the tens
                self.b2.zero_()
        elif config.init != "randn":
            raise ValueError(f"init must be 'scaled' or 'randn', not {config.init!r}")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        emb = self.C[idx]  # (B, T, E)
        h = torch.tanh(emb.view(emb.shape[0], -1) @ self.W1 + self.b1)  # (B, H)
        return h @ self.W2 + self.b2  # (B, V)
