"""A decoder-only transformer (Vaswani et al. 2017, "Attention Is All You Need"; as in GPT, Radford et al.
2018/2019): n_layer blocks of causal self-attention and a feed-forward layer, each with a residual connection
and a LayerNorm before it. It reads whole items, every position at once (see SequenceModel)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import register
from makemore.models.base import SequenceModel, by_label, item_context, label_table, on_meta_device
from makemore.options import option


@dataclass
class TransformerConfig:
    block_size: int = item_context()
    n_layer: int = option(4, "Transformer blocks.", low=1, high=64)
    n_head: int = option(4, "Attention heads per block (they split n_embd evenly).", low=1, high=256, divides="n_embd")
    n_embd: int = option(96, "Width of the token and position embeddings and of every block.", low=1, high=8192)
    # regularises a small file; it also costs a third of a step on the CPU (drawing the masks)
    dropout: float = option(0.2, "Dropout on the embeddings, the attention weights and the attention and feed-forward "
                            "outputs while training.",
                            low=0.0, high=0.9)
    # off: with the other defaults, 10 minutes on the lecture's names reach dev 1.9325 without it, 1.9452 with it
    # (BENCHMARKS.md, tuning notes); its bias costs a tenth of a step
    alibi: bool = option(False, "ALiBi: attention scores lowered in proportion to distance, at a slope per head "
                         "(Press et al. 2021).")
    alibi_scale: float = option(1.0, "ALiBi's slopes as a multiple of Press et al.'s (2^(-8h/n_head) for head h).",
                                low=0.0, low_open=True, high=1024.0)
    learned_positions: bool = option(True, "Learned position embeddings added to the token embeddings (GPT's); "
                                     "without them only ALiBi (or the causal mask) tells positions apart.")
    tie_embeddings: bool = option(False, "The logits read the token embeddings (transposed) instead of a "
                                  "separate output matrix (Press & Wolf 2017).")


class SelfAttention(nn.Module):
    """Causal multi-head self-attention: each position mixes the values of itself and the positions before it."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                     for t in self.qkv(x).split(C, dim=2))  # each (B, n_head, T, head size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(x)
        # ALiBi's bias holds -inf above the diagonal: causal as well; dropout on the attention weights
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)), self.dropout, self.training)

    def weights(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """(B, n_head, T, T): how much each position's output takes from each position's value (forward's
        softmax, which the fused attention never shows)."""
        q, k, _ = self.heads(x)
        T = x.shape[1]
        if bias is None:  # the causal mask alone
            bias = torch.full((T, T), float("-inf"), device=x.device).triu(1)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias, dim=-1)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        C = config.n_embd
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(C), SelfAttention(config), nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, attention: list | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        if attention is not None:
            attention.append(self.attn.weights(h, bias))
        x = x + self.attn(h, bias)
        return x + self.mlp(self.ln_2(x))


@register("transformer")
class Transformer(SequenceModel):
    """Token embeddings (plus learned position embeddings with learned_positions), n_layer blocks, a final
    LayerNorm and a linear layer to the logits (the token embeddings' transpose with tie_embeddings)."""

    Config = TransformerConfig
    # the recipe of issue 33 (width 96, dropout 0.2, untied, AdamW with betas 0.9, 0.99 and weight decay on the
    # matrices and embeddings only); the steps keep a default run within 10 minutes on 2 CPU cores
    train_defaults = dict(steps=14015, batch_size=64, lr=2e-3, optimizer="adamw", schedule="cosine", warmup=200,
                          weight_decay=0.1)
    adam_betas = (0.9, 0.99)
    EPOCHS = 35  # 14,015 steps on the lecture's names: about 25 steps a second there on 2 cores, evaluations included
    MAX_STEPS = 15000
    BUDGET_EPOCHS = 70  # a time budget's passes: its dropout keeps it learning past the default's (38 in 10 minutes)

    @classmethod
    def example_numbers(cls, config: TransformerConfig, vocab_size: int) -> int:
        """Per row and position: each block's activations (~20 per unit of width), attention weights, logits."""
        T, C = config.block_size or 1024, config.n_embd
        return T * (config.n_layer * (20 * C + 4 * config.n_head * T) + 4 * vocab_size)

    def __init__(self, config: TransformerConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        C = config.n_embd
        self.wte = nn.Embedding(vocab_size, C)
        if config.learned_positions:
            self.wpe = nn.Embedding(config.block_size, C)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C)
        if config.tie_embeddings:
            self.lm_bias = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.lm_head = nn.Linear(C, vocab_size)
        if not on_meta_device():
            # Press et al.'s slopes, 2^(-8/n_head) down to 2^-8: each head looks back over a distance of its own
            n_head = config.n_head
            slopes = config.alibi_scale * 2.0 ** (-8.0 / n_head * torch.arange(1, n_head + 1))
            self.register_buffer("slopes", slopes[:, None, None], persistent=False)
        with torch.no_grad():  # GPT-2's initialisation: small normal weights, the residual outputs smaller still
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() == 2:
                    deep = name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight")
                    nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer) if deep else 0.02)
        # added to every position's token embedding; made after the initialisation above, so it starts at zero
        self.label_embd = label_table(n_labels, C)

    def attention_bias(self, T: int, device) -> torch.Tensor | None:
        """(n_head, T, T): ALiBi's -slope * distance to each earlier position, -inf to every later one."""
        if not self.config.alibi:
            return None
        position = torch.arange(T, device=device)
        distance = (position[:, None] - position[None, :]).to(self.slopes.dtype)
        return (-self.slopes * distance).masked_fill(distance < 0, float("-inf"))

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None, attention: list | None = None
                ) -> torch.Tensor:
        """(B, T) -> (B, T, vocab_size) logits; each block appends its attention weights to attention when given."""
        T = idx.shape[1]
        x = self.wte(idx)
        if self.config.learned_positions:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        if self.label_embd is not None:
            x = x + by_label(self.label_embd, label)[:, None, :]
        x = F.dropout(x, self.config.dropout, self.training)
        bias = self.attention_bias(T, idx.device)
        for block in self.blocks:
            x = block(x, bias, attention)
        x = self.ln_f(x)
        if self.config.tie_embeddings:
            return F.linear(x, self.wte.weight, self.lm_bias)
        return self.lm_head(x)

    def decayed(self, name: str, parameter: nn.Parameter) -> bool:
        """Weight decay on the weight matrices and embeddings only, not on biases and LayerNorm gains (GPT's)."""
        return parameter.dim() >= 2

    def embeddings(self) -> torch.Tensor:
        return self.wte.weight

    @torch.no_grad()
    def attention(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """(n_layer, B, n_head, T, T): the attention weights of every block for the rows idx (B, T) that start
        at their item's boundary token (under their labels); what `makemore serve` draws."""
        weights: list = []
        self(idx, label, weights)
        return torch.stack(weights)
