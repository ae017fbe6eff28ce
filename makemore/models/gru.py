"""A gated recurrent network (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder"):
the recurrent network of makemore.models.rnn with a GRU cell, whose update and reset gates decide how much of
the state each character keeps, so that it carries information further than a plain tanh cell."""
from __future__ import annotations

from torch import nn

from makemore.models import register
from makemore.models.rnn import RNN


@register("gru")
class GRU(RNN):
    """The RNN with torch's fused nn.GRU as its cell."""

    cell = nn.GRU
