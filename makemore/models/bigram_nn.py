"""The lecture's one-layer bigram network: one-hot(previous char) @ W, softmax. Trained, not counted. A labelled
model adds its label's own table: logits = W[prev] + W_label[label, prev]."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import register
from makemore.models.base import Model, label_table
from makemore.options import option


@dataclass
class BigramNNConfig:
    block_size: int = option(1, "Characters of context.", low=1, high=1)  # one, as the counting bigram


@register("bigram-nn")
class BigramNN(Model):
    """logits = one_hot(prev) @ W, computed as the row lookup W[prev]. Trained to convergence without penalty
    its loss is the counting bigram's with smoothing 0: the best softmax of row W[i] is the counts' row."""

    Config = BigramNNConfig
    # Adam on batches of 8192: within 0.01 nats of the counts in ~50 steps, 0.001 in 300 (batches of 2048 or 4096
    # end 0.001-0.002 away); the lecture's full-batch descent needs 171 steps of all 228k (BENCHMARKS.md, core).
    # --weight-decay is the lecture's penalty in the loss, weight_decay * (W**2).mean(), not the optimizer's decay
    train_defaults = dict(steps=300, batch_size=8192, lr=0.3, optimizer="adamw", schedule="cosine", decay="penalty")
    # a time budget buys what the default run does: 300 steps, 13 passes over the lecture's names (2,000 passes
    # there ended 0.002 higher on dev)
    BUDGET_EPOCHS, BUDGET_MIN_STEPS = 13, 300

    def __init__(self, config: BigramNNConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        self.W = nn.Parameter(torch.randn(vocab_size, vocab_size))
        # each label's (V, V) difference from the shared table, rows side by side: zero at first, so that a rare
        # label keeps the shared bigrams until its own items move it (n_labels V^2 numbers: the memory check
        # refuses a vocabulary and a count of labels too large for this process)
        self.W_label = label_table(n_labels, vocab_size * vocab_size)

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        prev = idx[:, -1]
        if self.W_label is None:
            return self.W[prev]
        if label is None:
            raise ValueError("a labelled model needs each example's label")
        V, rows = self.vocab_size, label * self.vocab_size + prev  # row label * V + prev of the tables stacked
        if self.n_labels * V < len(prev):
            # a training batch: every label's whole table summed first, then one lookup, costs about what the
            # unlabelled lookup does (a second (B, V) lookup and its backward cost 40% more a step at B 8192)
            return (self.W + self.W_label.view(-1, V, V)).view(-1, V)[rows]
        return self.W[prev] + self.W_label.view(-1, V)[rows]  # the same sums, for a few rows (sampling)
