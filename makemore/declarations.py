"""What the registered models and the training loop declare as options, gathered from the classes: each
model's Config (fields declared with options.option), its counts, train_defaults and data-size rules, and
train.TrainConfig. The CLI builds its flags and their help from it, and makemore.api checks the values given
against it. Reading it imports every model, and so torch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from makemore import options
from makemore.errors import OptionError

SIZE_RULE = "by data size"  # a setting's default in the help, where the model derives it from the data


@dataclass
class ModelDeclarations:
    """What one registered model declares."""

    options: dict[str, tuple[options.Option, Any]]  # as options.declared(cls.Config) gives them
    counts: bool  # fitted in one pass: it takes no training settings
    train_defaults: dict
    size_rules: tuple[str, ...]  # training settings it derives from the data size when they are not given
    # its config_from is Model's, so that its declarations alone decide which values it takes
    checked_by_declarations: bool


@dataclass
class Declarations:
    """Every registered model's declarations (in the registry's order), and TrainConfig's."""

    models: dict[str, ModelDeclarations]
    train: dict[str, tuple[options.Option, Any]]

    def flags(self, train_fields: tuple = ()) -> list[tuple[str, options.Option, dict]]:
        """The flags of the models' options and of the given training settings: (field name, its Option,
        its default by model name). A name several models declare is one flag."""
        found: dict[str, tuple[options.Option, dict]] = {}
        helps: dict[str, list[str]] = {}
        for model, declared in self.models.items():
            for name, (spec, default) in declared.options.items():
                first, defaults = found.setdefault(name, (spec, {}))
                if first.kind is not spec.kind:
                    raise TypeError(f"{options.flag(name)} is a {first.kind.__name__} in one model and a "
                                    f"{spec.kind.__name__} in {model}: one flag has one kind")
                defaults[model] = default
                helps.setdefault(name, []).append((model, spec.help))
        for name, texts in helps.items():  # a flag of several models says what it means for each of them
            spec, defaults = found[name]
            found[name] = (dataclasses.replace(spec, help=_per_model(texts)), defaults)
        trained = {model: declared for model, declared in self.models.items() if not declared.counts}
        for name in train_fields:
            spec, default = self.train[name]
            found[name] = (spec, {model: SIZE_RULE if name in declared.size_rules
                                  else declared.train_defaults.get(name, default)
                                  for model, declared in trained.items()})
        return [(name, spec, defaults) for name, (spec, defaults) in found.items()]

    def split(self, settings: dict) -> tuple[dict, dict]:
        """Flag values (None where not given) as (model options, training settings)."""
        model_options = {k: v for k, v in settings.items() if k not in self.train}
        return model_options, {k: v for k, v in settings.items() if k in self.train}

    # The checks below are the only ones of their kind: makemore.api (model_config, train_config, lr_find)
    # makes them before anything is read or allocated.

    def check(self, model: str, model_options: dict, train_options: dict) -> None:
        """OptionError for given (non-None) values that the declarations alone refuse: an option the model does not take, a value out of its range, a
        training setting given to a counting model. Checks across fields or against the data (the model's
        check_config, memory) are the model's own, made once torch is imported."""
        declared = self.models[model]
        given = {k: v for k, v in model_options.items() if v is not None}
        for name in given:
            if name not in declared.options:
                others = [m for m, d in self.models.items() if name in d.options]
                raise OptionError(f"{options.flag(name)} does not apply to --model {model}; it is an option of "
                                  f"{', '.join(others) or 'no model'}")
        if not declared.checked_by_declarations:  # the model's own config_from decides, first
            return
        options.check_all(declared.options, given, what=f"--model {model}")
        given = {k: v for k, v in train_options.items() if v is not None}
        if declared.counts and given:
            raise OptionError(f"{options.flag(next(iter(given)))} does not apply to --model {model}: it is "
                              "counted in one pass, not trained step by step")
        options.check_all(self.train, dict(declared.train_defaults, **given), what="training")

    def check_sweep(self, model: str, min_lr: float, max_lr: float) -> None:
        """OptionError for an lr-find of a model without a learning rate, or an empty range of rates."""
        if self.models[model].counts:
            trainable = [m for m, d in self.models.items() if not d.counts]
            raise OptionError(f"--model {model} is counted in one pass, it has no learning rate; lr-find "
                              f"applies to {', '.join(trainable)}")
        if not min_lr < max_lr:
            raise OptionError(f"--min-lr ({min_lr:g}) must be below --max-lr ({max_lr:g})")


def from_classes() -> Declarations:
    """The declarations read from the classes themselves (imports every model, and so torch)."""
    from makemore.models import trainable_classes
    from makemore.models.base import Model
    from makemore.train import TrainConfig

    train = options.declared(TrainConfig)
    return Declarations({model: ModelDeclarations(
        options=options.declared(cls.Config), counts=cls.counts, train_defaults=dict(cls.train_defaults),
        size_rules=() if cls.counts else tuple(name for name in train if _size_rule(cls, name) is not None),
        checked_by_declarations=getattr(cls.config_from, "__func__", None) is Model.config_from.__func__,
    ) for model, cls in trainable_classes().items()}, train)


PROBE_EXAMPLES = 100_000  # any data size: the help only asks whether a model has a rule


def _size_rule(cls, name: str):
    """What the model's rule for a setting gives for some data size, or None without a rule."""
    return cls.train_defaults_for(PROBE_EXAMPLES, cls.train_defaults.get("batch_size", 32)).get(name)


def _per_model(texts: list[tuple[str, str]]) -> str:
    """One help text from (model, help) pairs: the text itself when every model says the same, else each text
    with the models that say it ("mlp: tanh hidden units. rnn, gru: Size of the hidden state ...")."""
    by_text: dict[str, list[str]] = {}
    for model, text in texts:
        by_text.setdefault(text, []).append(model)
    if len(by_text) == 1:
        return next(iter(by_text))
    return " ".join(f"{', '.join(models)}: {text}" for text, models in by_text.items())
