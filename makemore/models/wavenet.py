"""The hierarchical network of the lecture's part 5, after WaveNet (van den Oord et al. 2016, "WaveNet: A
Generative Model for Raw Audio"): instead of squashing all block_size embeddings into one layer as the MLP
does, it fuses them two at a time, level by level, so that each layer sees a little more of the context:

    embeddings (B, 8, n_embd) -> pairs (B, 4, 2 n_embd) -> linear, BatchNorm, tanh -> (B, 4, n_hidden)
                              -> pairs (B, 2, 2 n_hidden) -> linear, BatchNorm, tanh -> (B, 2, n_hidden)
                              -> pairs (B, 1, 2 n_hidden) -> linear, BatchNorm, tanh -> (B, n_hidden) -> logits

BatchNorm normalises with the batch's statistics while training and with its running averages (buffers, so
checkpoints keep them) in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import register
from makemore.models.base import Model, by_label, label_table
from makemore.options import option


@dataclass
class WaveNetConfig:
    # the lecture's part 5 model: 8 characters (three levels of pairs), embeddings of 24, 128 hidden units
    block_size: int = option(8, "Characters of context: a power of two (one level of pairs per doubling).",
                             choices=(2, 4, 8, 16, 32, 64, 128, 256))
    n_embd: int = option(24, "Dimensions of each character's embedding.", low=1, high=65536)
    n_hidden: int = option(128, "Units of each level.", low=1, high=1 << 16)


class Level(nn.Module):
    """Fuse consecutive pairs of positions: (B, T, C) -> (B, T/2, 2C) -> linear, BatchNorm, tanh."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        # no bias: BatchNorm's shift replaces it, as in the lecture
        self.linear = nn.Linear(2 * n_in, n_out, bias=False)
        self.norm = nn.BatchNorm1d(n_out)  # statistics over the batch and the positions, per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.linear(x.reshape(B, T // 2, 2 * C))  # (B, T/2, n_out)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants the channels second
        return torch.tanh(h)


@register("wavenet")
class WaveNet(Model):
    """Embedding table C, log2(block_size) levels of pairwise fusion, a linear layer to the logits."""

    Config = WaveNetConfig
    # the lecture's part 5 training (SGD lr 0.1, then 0.01 for the last quarter, batch 32): val 1.993
    train_defaults = dict(steps=200000, batch_size=32, lr=0.1, optimizer="sgd", schedule="step", decay_at=0.75)
    min_batch_size = 2  # the last level's BatchNorm sees one position per example
    BUDGET_EPOCHS = 20  # a time budget's passes: 18 reached dev 1.9876 on the lecture's names, 35 1.9925, 65 2.0077

    @classmethod
    def example_numbers(cls, config: WaveNetConfig, vocab_size: int) -> int:
        """The embeddings, every level's activations (linear, norm, tanh, gradient) and the logits."""
        return 2 * config.block_size * config.n_embd + 4 * config.block_size * config.n_hidden + 2 * vocab_size

    def __init__(self, config: WaveNetConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        E, H = config.n_embd, config.n_hidden
        self.C = nn.Embedding(vocab_size, E)
        n_levels = config.block_size.bit_length() - 1
        self.levels = nn.ModuleList(Level(E if i == 0 else H, H) for i in range(n_levels))
        self.lm_head = nn.Linear(H, vocab_size)
        with torch.no_grad():
            nn.init.normal_(self.C.weight)  # the lecture's randn table
            for level in self.levels:  # the lecture's Linear: randn / sqrt(fan_in)
                nn.init.normal_(level.linear.weight, std=level.linear.in_features ** -0.5)
            nn.init.normal_(self.lm_head.weight, std=0.1 * H ** -0.5)  # last layer x0.1: a less confident start
            self.lm_head.bias.zero_()
        # a label's vector added to every position's embedding: the label reaches every window, also after the
        # item's start has left the context (per-label logit biases as well gained nothing on dev and cost 4% a step)
        self.label_embd = label_table(n_labels, E)

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = self.C(idx)  # (B, T, n_embd)
        if self.label_embd is not None:
            x = x + by_label(self.label_embd, label)[:, None, :]
        for level in self.levels:
            x = level(x)  # (B, T/2, n_hidden), then (B, T/4, n_hidden), ...
        return self.lm_head(x.squeeze(1))  # (B, vocab_size)

    def embeddings(self) -> torch.Tensor:
        return self.C.weight
