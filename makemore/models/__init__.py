"""The model registry: one line per model, its name and the module that defines it (plain strings, so that
the CLI lists them without importing torch). To add a model, write makemore/models/<name>.py with a class
decorated @register("<name>") (see base.Model) and add its line below."""
from __future__ import annotations

import importlib

# the models `makemore train --model NAME` trains
MODELS = {
    "bigram": "makemore.models.bigram",
    "bigram-nn": "makemore.models.bigram_nn",
    "mlp": "makemore.models.mlp",
    "ngram": "makemore.models.ngram",
    "wavenet": "makemore.models.wavenet",
    "rnn": "makemore.models.rnn",
    "gru": "makemore.models.gru",
    "transformer": "makemore.models.transformer",
}
# models built from other checkpoints (makemore mix), not trained by makemore train
BUILT = {"mixture": "makemore.models.mixture"}
MODEL_NAMES = tuple(MODELS)

_CLASSES: dict[str, type] = {}


def register(name: str):
    """Class decorator: the model class of registry name."""

    def add(cls):
        cls.name = name
        _CLASSES[name] = cls
        return cls

    return add


def get_model_class(name: str) -> type:
    """The class of a registered model; KeyError for a name the registry does not have."""
    module = MODELS.get(name) or BUILT.get(name)
    if module is None:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    importlib.import_module(module)
    return _CLASSES[name]


def trainable_classes() -> dict[str, type]:
    """Every model of makemore train, by name (imports them all, and so torch)."""
    return {name: get_model_class(name) for name in MODELS}
