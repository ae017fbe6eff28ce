"""A model that lives only in the tests: what the README's "Adding a model" section shows, one file whose
config declares two options. test_options registers it with one line, as makemore/models/__init__.py would."""
from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import register
from makemore.models.base import Model
from makemore.options import option


@dataclass
class ToyConfig:
    block_size: int = option(2, "Characters of context.", low=1, high=8)
    # a temperature on the logits: how sure the toy is of itself
    sharpness: float = option(1.5, "A factor on the logits.", low=0.0, low_open=True, high=100.0)


@register("toy")
class Toy(Model):
    """The sum of the context characters' embeddings, times sharpness, is the logits."""

    Config = ToyConfig
    train_defaults = dict(steps=20, batch_size=16, lr=0.1, optimizer="adamw")

    def __init__(self, config: ToyConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        self.E = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.config.sharpness * self.E[idx].sum(1)
