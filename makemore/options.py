"""Options declared once, on the config dataclasses' fields (option(...)): the CLI's flags, help texts and
defaults, and the checks of a value given or read from a checkpoint, all come from there. Imports no torch."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from makemore.errors import OptionError

_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Option:
    """How one config field is given and checked. parse, when set, turns a value (a string from the
    command line, or the JSON value of a checkpoint) into the field's value or raises ValueError saying
    what is wrong; otherwise the value must be of kind, within [low, high] and among choices."""

    help: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed (a learning rate above 0)
    choices: tuple = ()
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    note: str = ""  # said after a value out of range: what to do instead
    divides: str = ""  # another field of the config whose value this one's must divide (heads of a width)

    def check(self, name: str, value):
        """The value, checked (and normalised by parse); OptionError naming the flag when it does not fit."""
        if self.parse is not None:
            try:
                return self.parse(value)
            except (ValueError, TypeError, OverflowError) as e:
                raise OptionError(f"{flag(name)}: {e}") from None
        if not _is_kind(value, self.kind):
            raise OptionError(f"{flag(name)}: {_shown(value)} is not {_KIND_NAMES[self.kind]}")
        if self.choices and value not in self.choices:
            raise OptionError(f"{flag(name)}: {_shown(value)} is not one of {', '.join(map(str, self.choices))}")
        if self.kind is float and not math.isfinite(value):
            raise OptionError(f"{flag(name)}: {_shown(value)} is not a finite number")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            above = "above" if self.low_open else "at least"
            raise OptionError(f"{flag(name)}: {_shown(value)} is too small; it must be {above} {_num(self.low)}")
        if self.high is not None and value > self.high:
            note = f"; {self.note}" if self.note else ""
            raise OptionError(f"{flag(name)}: {_shown(value)} is too large; it must be at most {_num(self.high)}{note}")
        return float(value) if self.kind is float else value


def plain(value) -> str:
    """A setting's value as the user types it: 0.003, 0.8,0.1,0.1, none."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(plain(v) for v in value)
    return "none" if value is None else str(value)


def _is_kind(value, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def option(default, help: str, *, kind: type | None = None, choices=(), **spec):
    """A dataclass field declared as an option: its default, a help text and what values it takes (spec: the
    other fields of Option)."""
    kind = kind or type(default)
    if kind not in _KIND_NAMES:
        raise TypeError(f"an option's kind is one of {tuple(_KIND_NAMES)}, not {kind}")
    return dataclasses.field(default=default, metadata={"option": Option(help, kind, choices=tuple(choices), **spec)})


def declared(config_cls) -> dict[str, tuple[Option, Any]]:
    """Every option of a config dataclass: name -> (Option, default)."""
    return {f.name: (f.metadata["option"], f.default) for f in dataclasses.fields(config_cls)
            if "option" in f.metadata}


def check_device(name) -> str:
    """A --device value of a form makemore runs on (whether this machine has it is torch's to say)."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,4})?", name):
        raise OptionError(f"--device: unknown device {_shown(name)}; use auto, cpu, cuda, cuda:N or mps")
    return name


def flag(name: str) -> str:
    """The command-line flag of a field: block_size -> --block-size."""
    return "--" + name.replace("_", "-")


def make(config_cls, values: dict, *, what: str, complete: bool = False):
    """config_cls built from values (field name -> value), each checked against its declaration; a name it does
    not declare is an OptionError naming what (e.g. "--model mlp"), and with complete so is a missing one."""
    options = declared(config_cls)
    if not isinstance(values, dict):
        raise OptionError(f"the options of {what} are not a mapping of names to values")
    for name in values:
        if name not in options:
            known = ", ".join(flag(n) for n in options) or "none"
            raise OptionError(f"{flag(str(name))} does not apply to {what} (its options: {known})")
    if complete:
        missing = [name for name in options if name not in values]
        if missing:
            raise OptionError(f"{what} lacks the option {flag(missing[0])}")
    try:
        checked = {name: options[name][0].check(name, value) for name, value in values.items()}
        for name, (spec, default) in options.items():  # given values where given, else the defaults
            if spec.divides and spec.divides in options:
                value = checked.get(name, default)
                whole = checked.get(spec.divides, options[spec.divides][1])
                if value and whole % value:
                    raise OptionError(f"{flag(spec.divides)} {whole} is not a multiple of {flag(name)} {value}")
    except OptionError as e:
        if not what.startswith("--"):  # the message names the flag already
            raise
        raise OptionError(f"{e} ({what})") from None
    return config_cls(**checked)


def numbers(text) -> tuple[float, ...]:
    """Comma-separated numbers (or a list of numbers from JSON) as a tuple of floats."""
    if isinstance(text, str):
        try:
            parts = tuple(float(p) for p in text.split(","))
        except ValueError:
            raise ValueError(f"{_shown(text)} is not numbers separated by commas") from None
    elif isinstance(text, (list, tuple)) and all(_is_kind(p, float) for p in text):
        parts = tuple(float(p) for p in text)
    else:
        raise ValueError(f"{_shown(text)} is not a list of numbers")
    if not all(math.isfinite(p) for p in parts):
        raise ValueError(f"{_shown(text)} holds a number that is not finite")
    return parts


def check_splits(splits) -> tuple[float, float, float]:
    """--splits: three fractions >= 0 summing to 1, the train fraction above 0."""
    try:
        parts = numbers(splits)
    except ValueError as e:
        raise OptionError(f"--splits: {e}") from None
    if len(parts) != 3 or any(p < 0 for p in parts):
        raise OptionError(f"--splits: {plain(parts)} must be three non-negative numbers such as 0.8,0.1,0.1")
    if abs(sum(parts) - 1) > 1e-6:
        raise OptionError(f"--splits: {plain(parts)} sums to {sum(parts):g}, not 1")
    if parts[0] == 0:
        raise OptionError("--splits: the train fraction must be above 0")
    return parts


# --time: a week at most; a longer run is better set by --steps (and a typo such as 10d for 10m is caught)
MAX_TIME_BUDGET = 7 * 24 * 3600
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)")


def time_budget(value) -> float:
    """--time: seconds (a number, or text such as 600), or a duration with its unit (90s, 10m, 1.5h, 1d), above 0
    and at most MAX_TIME_BUDGET; ValueError saying what is wrong."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{_shown(value)} is not a duration such as 600, 90s, 10m or 1.5h")
        seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    elif _is_kind(value, float):
        # an int too large for a float is too long a budget (or too far below 0)
        seconds = float(value) if isinstance(value, float) or abs(value) <= MAX_TIME_BUDGET else (
            math.inf if value > 0 else -math.inf)
    else:
        raise ValueError(f"{_shown(value)} is not a number of seconds")
    if math.isnan(seconds):
        raise ValueError(f"{_shown(value)} is not a number of seconds")
    if seconds > MAX_TIME_BUDGET:
        raise ValueError(f"{_shown(value)} is longer than the {MAX_TIME_BUDGET // 86400} days a budget may be; "
                         "for a longer run give --steps")
    if seconds <= 0:
        raise ValueError(f"{_shown(value)} is no time at all; give a budget above 0")
    return seconds


def check_time_budget(value) -> float:
    """time_budget(value), or an OptionError naming --time."""
    try:
        return time_budget(value)
    except ValueError as e:
        raise OptionError(f"--time: {e}") from None
