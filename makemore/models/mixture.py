"""A mixture of trained models, as in Bengio et al. (2003), "A Neural Probabilistic Language Model", section 4:

    p(next | context) = sum_i w_i p_i(next | context)

Their network's perplexity improved most when its probabilities were averaged with an interpolated n-gram's:
the two are wrong in different places. The components are any models of the registry (mixtures included);
each reads its own block_size of the same context. makemore.mixing fits the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from makemore.models import get_model_class, register
from makemore.models.base import Model


@dataclass
class MixtureConfig:
    # each component as {"model": registry name, "config": its config dict}; its tensors are in the state_dict
    components: tuple = ()
    weights: tuple = ()  # one per component, summing to 1


@register("mixture")
class Mixture(Model):
    """The weighted average of its components' next-character distributions, returned as log-probabilities."""

    Config = MixtureConfig

    def __init__(self, config: MixtureConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        if len(config.components) < 1 or len(config.weights) != len(config.components):
            raise ValueError("a mixture needs one weight per component")
        if any(not w >= 0 for w in config.weights) or not math.isclose(sum(config.weights), 1, abs_tol=1e-6):
            raise ValueError(f"mixture weights must be >= 0 and sum to 1, not {list(config.weights)}")
        models = []
        for part in config.components:
            cls = get_model_class(part["model"])
            models.append(cls(cls.Config(**part["config"]), vocab_size))
        self.components = nn.ModuleList(models)
        # log 0 = -inf: a component with weight 0 then adds exactly nothing in the logsumexp
        self.register_buffer("log_weights", torch.tensor(config.weights, dtype=torch.float64).log(), persistent=False)

    @property
    def block_size(self) -> int:
        return max(m.block_size for m in self.components)

    def component_log_probs(self, idx: torch.Tensor) -> torch.Tensor:
        """(M, B, V) float64: each component's log-probabilities, reading its own block_size of the context."""
        return torch.stack([torch.log_softmax(m(idx[:, idx.shape[1] - m.block_size:]).double(), dim=-1)
                            for m in self.components])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """log sum_i w_i p_i(. | idx), computed in log space so that no probability underflows."""
        return torch.logsumexp(self.log_weights[:, None, None] + self.component_log_probs(idx), dim=0)
