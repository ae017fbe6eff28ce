"""The MLP of Bengio et al. 2003, "A Neural Probabilistic Language Model", as built in the lecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import register
from makemore.models.base import Model, label_table, steps_for_epochs
from makemore.options import option


@dataclass
class MLPConfig:
    # tuned on the dev split of the lecture's names (BENCHMARKS.md, tuning notes): a context of 6 ties with
    # longer ones there and generalises better elsewhere
    block_size: int = option(6, "Characters of context.", low=1, high=4096)
    n_embd: int = option(32, "Dimensions of each character's embedding.", low=1, high=65536)
    n_hidden: int = option(512, "tanh hidden units.", low=1, high=1 << 20)
    # "scaled" for tanh (lecture part 3) trains faster than part 2's plain N(0, 1)
    init: str = option("scaled", "Weight init: scaled for tanh, or randn as in lecture part 2.",
                       choices=("scaled", "randn"))
    # Bengio et al.'s direct connections from the concatenated embeddings to the logits
    direct: bool = option(True, "Direct connections from the embeddings to the logits (Bengio et al.).")


@register("mlp")
class MLP(Model):
    """Embedding table C, block_size embeddings concatenated into x, a tanh hidden layer, linear to logits;
    with direct, Bengio et al.'s direct connections: logits = tanh(x W1 + b1) W2 + b2 + x Wd."""

    Config = MLPConfig
    # weight decay is what keeps this wide model from overfitting (BENCHMARKS.md, tuning notes)
    train_defaults = dict(steps=25000, batch_size=128, lr=3e-3, optimizer="adamw", schedule="cosine",
                          weight_decay=0.05)
    # without --steps, EPOCHS passes over the training examples within these bounds (as SequenceModel's)
    EPOCHS = 18
    MIN_STEPS = 2000
    MAX_STEPS = 60000
    BUDGET_EPOCHS = 60  # a time budget's passes: 65 reached dev 1.9640 on the lecture's names, 235 1.9678

    # without --weight-decay, the decay times sqrt(REFERENCE_EXAMPLES / n_examples) on smaller data, at most 4x
    REFERENCE_EXAMPLES = 182625  # training examples of the lecture's names under the default split
    MAX_DECAY_FACTOR = 4.0

    @classmethod
    def example_numbers(cls, config: MLPConfig, vocab_size: int) -> int:
        """The embeddings side by side, the hidden layer and the logits, each with its gradient."""
        return 2 * (config.block_size * config.n_embd + 2 * config.n_hidden + 2 * vocab_size)

    @classmethod
    def train_defaults_for(cls, n_examples: int, batch_size: int) -> dict:
        """EPOCHS passes over the training examples, and a stronger decay on data smaller than the tuning data
        (BENCHMARKS.md, tuning notes)."""
        factor = (cls.REFERENCE_EXAMPLES / max(1, n_examples)) ** 0.5
        return dict(steps=steps_for_epochs(cls, n_examples, batch_size),
                    weight_decay=cls.train_defaults["weight_decay"] * min(cls.MAX_DECAY_FACTOR, max(1.0, factor)))

    def __init__(self, config: MLPConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
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
        if config.direct:
            self.Wd = nn.Parameter(torch.zeros(T * E, V))  # starts as no path at all; learns what tanh misses
        # what a label changes, at every window (so it reaches every position, also after the item's start has left
        # the context): each character's embedding, the hidden units' gains and biases,
        # and the logits' biases; the embeddings and gains told 3-4 points more dev items' labels right than biases
        # alone (BENCHMARKS.md, labels)
        self.label_chars = label_table(n_labels, V, E)
        self.label_gain, self.label_hidden = label_table(n_labels, H), label_table(n_labels, H)
        self.label_logits = label_table(n_labels, V)

    def embeddings(self) -> torch.Tensor:
        return self.C

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        labelled = self.uses_labels(label)
        emb = F.embedding(idx, self.C)  # (B, T, E)
        if labelled:
            emb = emb + F.embedding(idx + label[:, None] * self.vocab_size, self.label_chars.flatten(0, 1))
        x = emb.view(idx.shape[0], -1)  # (B, T*E): the embeddings side by side
        pre = torch.addmm(self.b1, x, self.W1)  # (B, H); addmm: x @ W1 + b1 in one op
        if labelled:
            pre = torch.addcmul(F.embedding(label, self.label_hidden), pre, 1 + F.embedding(label, self.label_gain))
        logits = torch.addmm(self.b2, torch.tanh(pre), self.W2)  # (B, V)
        if self.config.direct:
            logits = torch.addmm(logits, x, self.Wd)
        if labelled:
            logits = logits + F.embedding(label, self.label_logits)
        return logits
