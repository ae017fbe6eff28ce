"""The model registry.

Every model takes a batch of contexts, a (B, block_size) tensor of token ids, and returns (B, vocab_size)
logits; the loss is cross-entropy on them everywhere. To add a model, write makemore/models/<name>.py
with a class decorated @register("<name>") and add the name to MODEL_NAMES: that is all.
"""
from __future__ import annotations

import importlib

MODEL_NAMES = ("bigram", "bigram-nn", "mlp", "ngram")  # kept as plain names so that --help needs no torch
# models built from other checkpoints (makemore mix), not trained by makemore train
BUILT_NAMES = ("mixture",)

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a model available as --model NAME."""

    def add(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def get_model_class(name: str) -> type:
    if name not in _REGISTRY:
        if name not in MODEL_NAMES + BUILT_NAMES:
            raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
        importlib.import_module(f"makemore.models.{name.replace('-', '_')}")
    return _REGISTRY[name]
