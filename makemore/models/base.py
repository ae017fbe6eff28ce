"""What every model shares: a config dataclass and the contexts -> logits contract."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn


class Model(nn.Module):
    """Base class. Subclasses set Config (a dataclass whose fields are the CLI flags' names).

    Trainable models are fitted by the shared loop in makemore.train; counting models (counts = True)
    are fitted in one pass by fit(dataset) and return log-probabilities as logits.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    counts: ClassVar[bool] = False
    # defaults of the training loop that suit this model; the user's flags override them
    train_defaults: ClassVar[dict] = {}

    def __init__(self, config, vocab_size: int):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @classmethod
    def config_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Config)]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, block_size) -> (B, vocab_size)
        raise NotImplementedError

    def fit(self, dataset) -> None:
        raise NotImplementedError(f"{self.name} is trained by gradient descent, not counted")
