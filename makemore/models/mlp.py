"""The MLP of Bengio et al. 2003, "A Neural Probabilistic Language Model", as built in the lecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    # Bengio et al.'s direct connections from the concatenated embeddings to the logits
    direct: bool = False
    # "layer": LayerNorm on the hidden pre-activations, before tanh; "none": as in the lecture
    norm: str = "none"


@register("mlp")
class MLP(Model):
    """Embedding table C, block_size embeddings concatenated, a tanh hidden layer, linear to logits.

    With direct=True the concatenated embeddings also feed the logits through Wd (Bengio et al.'s
    "direct connections"): logits = tanh(x W1 + b1) W2 + b2 + x Wd.
    """

    Config = MLPConfig
    train_defaults = dict(steps=20000, batch_size=128, lr=3e-3, optimizer="adamw", schedule="cosine")
    # Without --steps, training makes EPOCHS passes over the training examples, within these bounds
    EPOCHS = 18
    MIN_STEPS = 2000
    MAX_STEPS = 60000

    @classmethod
    def default_steps(cls, n_examples: int, batch_size: int) -> int:
        """How many steps to train when the user gives no --steps: it follows the size of the data.

        EPOCHS passes over the n_examples training examples (one example per character, boundary
        included), but at least MIN_STEPS, so that a small file still trains long enough to learn, and
        at most MAX_STEPS, so that a large one does not train for hours. On a small file the
        best-on-dev weights kept by the loop then guard against overfitting.
        """
        return int(min(cls.MAX_STEPS, max(cls.MIN_STEPS, round(cls.EPOCHS * n_examples / batch_size))))

    def __init__(self, config: MLPConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        V, E, H, T = vocab_size, config.n_embd, config.n_hidden, config.block_size
        if config.init not in ("scaled", "randn"):
            raise ValueError(f"init must be 'scaled' or 'randn', not {config.init!r}")
        if config.norm not in ("none", "layer"):
            raise ValueError(f"norm must be 'none' or 'layer', not {config.norm!r}")
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
        if config.direct:
            self.Wd = nn.Parameter(torch.zeros(T * E, V))  # starts as no path at all; learns what tanh misses
        if config.norm == "layer":
            self.ln_gain = nn.Parameter(torch.ones(H))
            self.ln_bias = nn.Parameter(torch.zeros(H))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.embedding(idx, self.C).view(idx.shape[0], -1)  # (B, T*E): the embeddings side by side
        pre = torch.addmm(self.b1, x, self.W1)  # (B, H); addmm = one op for x @ W1 + b1
        if self.config.norm == "layer":
            pre = F.layer_norm(pre, pre.shape[-1:], self.ln_gain, self.ln_bias)
        logits = torch.addmm(self.b2, torch.tanh(pre), self.W2)  # (B, V)
        if self.config.direct:
            logits = torch.addmm(logits, x, self.Wd)
        return logits
