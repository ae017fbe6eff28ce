"""A mixture of trained models (any of the registry, mixtures included, each reading its own block_size):

- linear (Bengio et al. 2003, section 4): p = sum_i w_i p_i, the weights summing to 1; their network gained
  most averaged with an interpolated n-gram, the two being wrong in different places;
- log-linear (Klakow 1998): p proportional to prod_i p_i^w_i, weights >= 0 of any sum; on the lecture's names
  it beats the linear mixture of the same checkpoints (BENCHMARKS.md).

makemore.mixing fits the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from makemore.errors import OptionError
from makemore.mixing import KINDS, LOG_FLOOR, MAX_LOG_LINEAR_WEIGHT
from makemore.models import get_model_class, register
from makemore.models.base import Model, config_dict, next_log_probs


# Checked from the config before any component is built: every trained model runs at each step of evaluation
# and sampling, so cost grows with their number (nesting only mixes mixtures already made). 64 is far above
# what helps (ten default models load in 0.2 s); 262,144 models were still loading after 150 s.
MAX_DEPTH = 4
MAX_COMPONENTS = 64
MAX_MODELS = 64


def check_weights(weights, kind: str, n: int, given: bool = False) -> tuple[float, ...]:
    """A mixture's n weights by the rules of its kind, as floats. given: the user's --weights, which mix
    normalises (so not all 0); else a config's, whose linear weights sum to 1 and may all be 0 when log-linear
    (the uniform distribution, which a fit to components worse than it may choose)."""
    what = "--weights" if given else "a mixture's weights"
    if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise OptionError(f"{what}: not a list of numbers")
    if len(weights) != n:
        raise OptionError(f"{what}: {len(weights)} weights for {n} {'checkpoints' if given else 'components'}")
    if not all(0 <= w < math.inf for w in weights) or (given and sum(weights) <= 0):
        raise OptionError(f"{what} must be numbers >= 0" + (", not all 0" if given else f", not {list(weights)[:8]}"))
    if kind == "log-linear" and max(weights) > MAX_LOG_LINEAR_WEIGHT:
        raise OptionError(f"{what} of a log-linear mixture are at most {MAX_LOG_LINEAR_WEIGHT:g}")
    if kind == "linear" and not given and not math.isclose(sum(weights), 1, abs_tol=1e-6):
        raise OptionError(f"{what} of a linear mixture sum to 1, not {list(weights)[:8]}")
    return tuple(float(w) for w in weights)


@dataclass
class MixtureConfig:
    # each component as {"model": registry name, "config": its config dict}; its tensors are in the state_dict
    components: tuple = ()
    weights: tuple = ()  # one per component: summing to 1 (linear), or >= 0 of any sum (log-linear)
    kind: str = "linear"  # or "log-linear": see KINDS


@register("mixture")
class Mixture(Model):
    """Its components' next-character distributions combined by the config's kind, as log-probabilities."""

    Config = MixtureConfig

    @classmethod
    def config_from(cls, values: dict, complete: bool = False, depth: int = 0) -> MixtureConfig:
        """Built by makemore mix, not by flags: each component's config is checked by its model, the nesting by
        check_size."""
        if depth == 0:
            cls.check_size(values)
        required = {"components", "weights", "kind"} if complete else {"components", "weights"}
        if not isinstance(values, dict) or not required <= set(values) <= {"components", "weights", "kind"}:
            raise OptionError("a mixture's config holds exactly 'components', 'weights' and 'kind'")
        parts, weights, kind = values["components"], values["weights"], values.get("kind", "linear")
        if kind not in KINDS:
            raise OptionError(f"a mixture's kind is one of {', '.join(KINDS)}, not {str(kind)[:40]!r}")
        if not isinstance(parts, (list, tuple)) or not 1 <= len(parts) <= MAX_COMPONENTS:
            raise OptionError(f"a mixture has 1 to {MAX_COMPONENTS} components")
        components = []
        for part in parts:
            if not isinstance(part, dict) or set(part) != {"model", "config"} or not isinstance(part["model"], str):
                raise OptionError("a mixture's component is {'model': name, 'config': {...}}")
            try:
                part_cls = get_model_class(part["model"])
            except KeyError as e:
                raise OptionError(str(e.args[0])) from None
            if part_cls is cls:
                config = cls.config_from(part["config"], complete, depth + 1)
            else:
                config = part_cls.config_from(part["config"], complete=complete)
            components.append(dict(model=part["model"], config=config_dict(config)))
        return MixtureConfig(tuple(components), check_weights(weights, kind, len(parts)), kind)

    @classmethod
    def check_size(cls, values) -> None:
        """OptionError for a config (as JSON holds it) nested deeper than MAX_DEPTH or of more than MAX_MODELS
        trained models, found by a walk that stops at the first excess. Each mixture inside holds a model and
        has at most MAX_DEPTH - 1 above it: beyond MAX_DEPTH * MAX_MODELS components, too many models."""
        components, models, stack = 0, 0, [(values, 0)]
        while stack:
            values, depth = stack.pop()
            if depth >= MAX_DEPTH:
                raise OptionError(f"mixtures nest at most {MAX_DEPTH} deep")
            parts = values.get("components") if isinstance(values, dict) else None
            for part in parts if isinstance(parts, (list, tuple)) else ():
                nested = isinstance(part, dict) and part.get("model") == cls.name
                components, models = components + 1, models + (not nested)
                if models > MAX_MODELS or components > MAX_DEPTH * MAX_MODELS:
                    raise OptionError(f"a mixture holds at most {MAX_MODELS} trained models in all, however nested")
                if nested:
                    stack.append((part.get("config"), depth + 1))

    @classmethod
    def _parts(cls, config: MixtureConfig):
        for part in config.components:
            part_cls = get_model_class(part["model"])
            yield part_cls, part_cls.config_from(part["config"])

    @classmethod
    def expected_tensors(cls, config: MixtureConfig, vocab_size: int, n_labels: int = 1) -> dict:
        return {f"components.{i}.{name}": spec for i, (part_cls, part_config) in enumerate(cls._parts(config))
                for name, spec in part_cls.expected_tensors(part_config, vocab_size, n_labels).items()}

    @classmethod
    def example_numbers(cls, config: MixtureConfig, vocab_size: int) -> int:
        """The components', and the (M, V) float64 log-probabilities that forward stacks, floors and weighs per
        row (three such tensors at once: 12 float32 numbers per entry, as the hook counts them with gradients)."""
        parts = list(cls._parts(config))
        return (sum(part_cls.example_numbers(part_config, vocab_size) for part_cls, part_config in parts)
                + 12 * len(parts) * vocab_size)

    def __init__(self, config: MixtureConfig, vocab_size: int, n_labels: int = 1):
        super().__init__(config, vocab_size, n_labels)
        self.components = nn.ModuleList(part_cls(part_config, vocab_size, n_labels)
                                        for part_cls, part_config in self._parts(config))
        # derived from the config, so not saved
        self.register_buffer("weights", torch.tensor(config.weights, dtype=torch.float64), persistent=False)

    @property
    def block_size(self) -> int:
        return max(m.block_size for m in self.components)

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """Linear: log sum_i w_i p_i(. | idx), in log space so that no probability underflows. Log-linear:
        sum_i w_i log p_i(. | idx), normalised; log-probabilities floored at LOG_FLOOR (makemore.mixing)."""
        log_probs = torch.stack([next_log_probs(m, idx, label) for m in self.components])  # (M, B, V)
        if self.config.kind == "linear":  # log 0 = -inf: a component with weight 0 adds exactly nothing
            return torch.logsumexp(self.weights.log()[:, None, None] + log_probs, dim=0)
        return torch.log_softmax(torch.einsum("mbv,m->bv", log_probs.clamp_min(LOG_FLOOR), self.weights), dim=-1)
