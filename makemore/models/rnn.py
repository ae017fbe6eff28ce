"""A recurrent network (Mikolov et al. 2010, "Recurrent neural network based language model"): a hidden state
carried from character to character, h_t = tanh(W_x x_t + W_h h_{t-1} + b), from a learned starting state
at the item's boundary token; each state predicts the next character. It reads whole items, every position
at once (see SequenceModel); makemore.models.gru swaps the cell for a gated one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import register
from makemore.models.base import SequenceModel, by_label, item_context, label_table
from makemore.options import option


@dataclass
class RNNConfig:
    block_size: int = item_context()
    n_embd: int = option(64, "Dimensions of each character's embedding.", low=1, high=8192)
    n_hidden: int = option(128, "Size of the hidden state of each layer.", low=1, high=8192)
    n_layer: int = option(1, "Recurrent layers, each reading the states of the one below.", low=1, high=16)
    # the plain cell underfits the lecture's names rather than overfits (BENCHMARKS.md, tuning notes)
    dropout: float = option(0.0, "Dropout between layers and before the output while training.", low=0.0, high=0.9)


@register("rnn")
class RNN(SequenceModel):
    """Embedding table, n_layer recurrent layers (torch's fused nn.RNN: tanh), a linear layer to the logits."""

    Config = RNNConfig
    cell = nn.RNN
    # chosen on the lecture's names for the RNN and the GRU alike (BENCHMARKS.md, tuning notes)
    train_defaults = dict(steps=10000, batch_size=64, lr=3e-3, optimizer="adamw", schedule="cosine", warmup=100,
                          weight_decay=0.01)

    @classmethod
    def example_numbers(cls, config: RNNConfig, vocab_size: int) -> int:
        """Per row: the embeddings, each layer's states and gates (a GRU has three), the logits, and gradients."""
        T = config.block_size or 1024
        return T * 2 * (config.n_embd + 4 * config.n_layer * config.n_hidden + vocab_size)

    def __init__(self, config: RNNConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        self.wte = nn.Embedding(vocab_size, config.n_embd)
        self.layers = self.cell(config.n_embd, config.n_hidden, num_layers=config.n_layer, batch_first=True,
                                dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.start = nn.Parameter(torch.zeros(config.n_layer, 1, config.n_hidden))  # the state before an item
        self.lm_head = nn.Linear(config.n_hidden, vocab_size)
        # a label's vector added to every character's embedding: each step is told the label afresh, not only
        # the state before the item, whose trace a long item would wash out
        self.label_embd = label_table(n_labels, config.n_embd)

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = self.wte(idx)
        if self.label_embd is not None:
            x = x + by_label(self.label_embd, label)[:, None, :]
        states, _ = self.layers(x, self.start.expand(-1, idx.shape[0], -1).contiguous())
        return self.lm_head(nn.functional.dropout(states, self.config.dropout, self.training))

    def embeddings(self) -> torch.Tensor:
        return self.wte.weight
