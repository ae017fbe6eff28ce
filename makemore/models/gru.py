"""A gated recurrent network (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder"):
makemore.models.rnn with a GRU cell, whose update and reset gates let the state carry information further."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from makemore.models import register
from makemore.models.rnn import RNN, RNNConfig
from makemore.options import option


@dataclass
class GRUConfig(RNNConfig):
    # the gated cell fits the lecture's names faster than it generalises (BENCHMARKS.md, tuning notes)
    dropout: float = option(0.2, "Dropout between layers and before the output while training.", low=0.0, high=0.9)


@register("gru")
class GRU(RNN):
    """The RNN with torch's fused nn.GRU as its cell."""

    Config = GRUConfig
    cell = nn.GRU
