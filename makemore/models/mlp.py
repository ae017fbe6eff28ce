"""The MLP of Bengio et al. 2003, "A Neural Probabilistic Language Model", as built in the lecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import register
from makemore.models.base import Model, steps_for_epochs
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
        # a label's own character embeddings, hidden biases and logit biases, each label's a copy of the unlabelled
        # model's draw (so an unlabelled file is the case of one label), and its hidden units' gains; each window
        # reads them, so the label reaches every position, also after the item's start has left the context. In
        # place of shared tables plus per-label offsets, a step took 1.10-1.19x an unlabelled one, not 1.23-1.26x, at
        # the same accuracy (BENCHMARKS.md, labels)
        if n_labels > 1:
            # copies by expand and contiguous: repeat or cat on the meta device (Model.on_meta) imports sympy, 0.3 s
            with torch.no_grad():
                # (n_labels * V, E): label l's embeddings from row l * V
                self.C = nn.Parameter(self.C.expand(n_labels, V, E).contiguous().view(n_labels * V, E))
                self.b1 = nn.Parameter(self.b1.expand(n_labels, H).contiguous())  # (n_labels, H)
                self.b2 = nn.Parameter(self.b2.expand(n_labels, V).contiguous())  # (n_labels, V)
        # the hidden units' gains, 1 at first: a product, not pre + pre * gain, whose backward adds two gradients
        self.label_gain = nn.Parameter(torch.ones(n_labels, H)) if n_labels > 1 else None

    def embeddings(self) -> torch.Tensor:
        """The character embeddings; a labelled model's averaged over its labels."""
        return self.C if self.n_labels == 1 else self.C.view(self.n_labels, self.vocab_size, -1).mean(0)

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        b1, b2 = self.b1, self.b2
        if self.uses_labels(label):
            idx = idx + label[:, None] * self.vocab_size  # the label's own embeddings
            b1, b2 = F.embedding(label, b1), F.embedding(label, b2)
        x = F.embedding(idx, self.C).view(idx.shape[0], -1)  # (B, T*E): the embeddings side by side
        pre = torch.addmm(b1, x, self.W1)  # (B, H); addmm: x @ W1 + b1 in one op
        if self.label_gain is not None:
            pre = pre * F.embedding(label, self.label_gain)
        logits = torch.addmm(b2, torch.tanh(pre), self.W2)  # (B, V)
        if self.config.direct:
            logits = torch.addmm(logits, x, self.Wd)
        return logits
