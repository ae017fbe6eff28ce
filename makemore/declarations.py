"""What the registered models and the training loop declare as options, readable without importing torch.

The classes are the single source of truth: each model's Config (fields declared with options.option), its
counts, train_defaults and data-size rules, and train.TrainConfig. Reading them imports every model, and so
torch (1.5 s), which `makemore train --help` and a usage error should not wait for. declarations.json,
beside this file, holds what they declare, derived from them by `python -m makemore.declarations` and keyed
by a fingerprint of the sources it was derived from. load() uses it while the fingerprint matches the
sources as they are now, and reads the classes otherwise (a model edited or added, a registry changed at
run time): slower, never wrong. Both give the same Declarations, from which the CLI builds its flags and
checks the values given.

Importing this module does not import torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from makemore import __version__, options
from makemore.errors import OptionError
from makemore.models import MODELS

MANIFEST = Path(__file__).with_name("declarations.json")
REGENERATE = "python -m makemore.declarations"
FORMAT = 1
# the sources of every manifest besides the models' own modules: how options are declared, the hooks'
# defaults, the training settings, and this reader (its size rules)
MACHINERY = ("makemore.options", "makemore.models.base", "makemore.train", "makemore.declarations")
KINDS = {kind.__name__: kind for kind in options.KINDS}
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
                helps.setdefault(name, []).append(spec.help)
        for name, texts in helps.items():  # a flag of several models says what most of them say
            spec, defaults = found[name]
            found[name] = (dataclasses.replace(spec, help=max(texts, key=texts.count)), defaults)
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

    # The checks below are the only ones of their kind: the CLI makes them before torch is imported, and
    # makemore.api (model_config, train_config, lr_find) makes the same calls on the classes' declarations.

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


def load() -> Declarations:
    """The declarations: the manifest's while it matches the sources as they are now, else the classes'."""
    found = read_manifest()
    return found if found is not None else from_classes()


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
    if name == "steps":
        return cls.default_steps(PROBE_EXAMPLES, cls.train_defaults.get("batch_size", 32))
    if name == "weight_decay":
        return cls.default_weight_decay(PROBE_EXAMPLES)
    return None


def fingerprint(sources: list[str]) -> str | None:
    """SHA-256 of the version, the registry and the source files of the modules named; None when a
    module's source cannot be found (then the manifest is not used)."""
    try:
        digest = hashlib.sha256(json.dumps([__version__, MODELS, list(sources)]).encode())
    except TypeError:  # a registry entry that is not a module name
        return None
    for module in sources:
        try:
            spec = importlib.util.find_spec(module)  # imports the parent packages only
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.has_location or not spec.origin:
            return None
        try:
            source = Path(spec.origin).read_bytes()
        except OSError:
            return None
        digest.update(len(source).to_bytes(8, "little") + source)
    return digest.hexdigest()


def _sources(classes) -> list[str]:
    """The modules the declarations come from: the registry's, the machinery's, and those of the classes
    the models and their configs inherit from (a base shared by two models, in a module of its own)."""
    from makemore.models.base import Model

    found = [*MODELS.values(), *MACHINERY]
    inherited = {c.__module__ for cls in classes for c in cls.__mro__ if issubclass(c, Model)}
    inherited |= {c.__module__ for cls in classes for c in cls.Config.__mro__ if c is not object}
    return found + sorted(inherited - set(found))


# ---- the manifest: writing ----

def manifest_text() -> str:
    """The manifest as the classes make it now, as declarations.json holds it."""
    from makemore.models import trainable_classes

    declared = from_classes()
    sources = _sources(trainable_classes().values())
    digest = fingerprint(sources)
    if digest is None:
        raise ValueError(f"cannot read the source of one of {', '.join(sources)}")
    data = dict(format=FORMAT, fingerprint=digest, sources=sources,
                models={model: dict(options=_declared_json(d.options), counts=d.counts,
                                    train_defaults={k: _value_json(v) for k, v in d.train_defaults.items()},
                                    size_rules=list(d.size_rules), checked_by_declarations=d.checked_by_declarations)
                        for model, d in declared.models.items()},
                train=_declared_json(declared.train))
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if from_json(json.loads(text)) != declared:
        raise ValueError("the manifest does not read back as the classes declare: a default or a bound that "
                         "JSON does not hold exactly")
    return text


def _declared_json(declared: dict) -> dict:
    return {name: dict(default=_value_json(default), option=_option_json(name, spec))
            for name, (spec, default) in declared.items()}


def _option_json(name: str, spec: options.Option) -> dict:
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return dict(fields, kind=spec.kind.__name__, choices=[_value_json(c) for c in spec.choices],
                parse=_reference(name, spec.parse))


def _reference(name: str, function) -> str | None:
    """module:function, by which the manifest names a parse function."""
    if function is None:
        return None
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    try:
        found = getattr(importlib.import_module(module), qualname, None) if qualname.isidentifier() else None
    except (ImportError, AttributeError, TypeError, ValueError):  # no module of that name
        found = None
    if found is not function:
        raise ValueError(f"{options.flag(name)}: its parse function {function!r} must be a module-level function "
                         "(in a module that does not import torch) for the manifest to name it")
    return f"{module}:{qualname}"


def _value_json(value):
    if isinstance(value, tuple) and all(_scalar(v) for v in value):
        return list(value)
    if _scalar(value):
        return value
    raise ValueError(f"{value!r}: the manifest holds numbers, strings, booleans, None and tuples of these")


# ---- the manifest: reading ----

class Malformed(ValueError):
    """The manifest is not what manifest_text writes."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise Malformed(what)


def read_manifest(path: Path | None = None) -> Declarations | None:
    """The manifest's declarations; None when it is missing, malformed, or derived from other sources."""
    try:
        data = json.loads(Path(path or MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # a decoding error is a ValueError
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or list(data["models"]) != list(MODELS):
        return None  # another registry: no need to look for its sources
    sources = data.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources) \
            or not {*MODELS.values(), *MACHINERY} <= set(sources):
        return None
    if data.get("fingerprint") != fingerprint(sources):
        return None
    try:
        return from_json(data)
    except Malformed:
        return None


def from_json(data) -> Declarations:
    """The declarations a manifest holds; Malformed when it is not what manifest_text writes."""
    _require(isinstance(data, dict) and data.get("format") == FORMAT, "not a manifest of this format")
    models = data.get("models")
    _require(isinstance(models, dict) and list(models) == list(MODELS), "not the registry's models")
    train = _declared(data.get("train"))
    return Declarations({model: _model(entry, train) for model, entry in models.items()}, train)


def _model(entry, train: dict) -> ModelDeclarations:
    names = [f.name for f in dataclasses.fields(ModelDeclarations)]
    _require(isinstance(entry, dict) and sorted(entry) == sorted(names), "a model's entry has other keys")
    counts, checked, rules, defaults = (entry["counts"], entry["checked_by_declarations"], entry["size_rules"],
                                        entry["train_defaults"])
    _require(isinstance(counts, bool) and isinstance(checked, bool), "counts or checked_by_declarations")
    _require(isinstance(rules, list) and all(isinstance(r, str) and r in train for r in rules), "size_rules")
    _require(isinstance(defaults, dict) and all(k in train for k in defaults), "train_defaults")
    return ModelDeclarations(_declared(entry["options"]), counts, {k: _value(v) for k, v in defaults.items()},
                             tuple(rules), checked)


def _declared(entries) -> dict[str, tuple[options.Option, Any]]:
    _require(isinstance(entries, dict), "declarations are not a mapping")
    found = {}
    for name, entry in entries.items():
        _require(name.isidentifier() and isinstance(entry, dict) and sorted(entry) == ["default", "option"],
                 f"the declaration of {name!r}")
        found[name] = (_option(entry["option"]), _value(entry["default"]))
    return found


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# each of Option's fields as the manifest holds it: is it well-formed, and its value
_FIELDS = {
    "help": (lambda v: isinstance(v, str), None),
    "kind": (lambda v: isinstance(v, str) and v in KINDS, KINDS.get),
    "low": (_number_or_none, None),
    "high": (_number_or_none, None),
    "low_open": (lambda v: isinstance(v, bool), None),
    "choices": (lambda v: isinstance(v, list) and all(_scalar(c) for c in v), tuple),
    "parse": (lambda v: v is None or isinstance(v, str), lambda v: None if v is None else _resolve(v)),
    "metavar": (lambda v: v is None or isinstance(v, str), None),
    "note": (lambda v: isinstance(v, str), None),
    "divides": (lambda v: isinstance(v, str), None),
}


def _option(entry) -> options.Option:
    _require(isinstance(entry, dict) and sorted(entry) == sorted(f.name for f in dataclasses.fields(options.Option))
             and set(entry) <= set(_FIELDS), "an option has other fields")
    values = {}
    for name, value in entry.items():
        well_formed, convert = _FIELDS[name]
        _require(well_formed(value), f"an option's {name}")
        values[name] = convert(value) if convert else value
    return options.Option(**values)


def _resolve(reference: str):
    """The parse function a manifest names as module:function."""
    module, _, name = reference.partition(":")
    _require(all(part.isidentifier() for part in module.split(".")) and name.isidentifier(), reference)
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise Malformed(f"{reference} is not there") from None
    _require(callable(function), reference)
    return function


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _value(value):
    """A default as the manifest holds it (a tuple as a list) back as the class declares it."""
    if isinstance(value, list) and all(_scalar(v) for v in value):
        return tuple(value)
    _require(_scalar(value), f"the value {value!r}")
    return value


def main() -> None:
    """Write the manifest from the classes as they are now."""
    from makemore.files import atomic_write

    text = manifest_text()
    atomic_write(MANIFEST, lambda f: f.write(text.encode()))
    print(f"wrote {MANIFEST}")


if __name__ == "__main__":
    main()
