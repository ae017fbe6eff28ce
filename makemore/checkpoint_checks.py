"""The checks of a checkpoint file from anywhere: every bound, field, dtype, shape and value that
makemore.checkpoint's load() applies, each before the work or the memory it bounds. A failed check raises
Refused, which load() gives the user as a one-line CheckpointError that starts with the path.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import torch

from makemore import memory, options
from makemore.data import (MAX_DATA_BYTES, MAX_ITEM_CHARS, MAX_LABEL_CHARS, MAX_LABELS, MAX_VOCAB, SPLIT_NAMES, Vocab,
                           first_too_long, split_sizes)
from makemore.errors import MakemoreError
from makemore.models import BUILT, MODELS, get_model_class
from makemore.models.base import config_dict
from makemore.train import TrainConfig

# Bytes of the safetensors header: about 6 MB for the largest model the limits allow or a run that logged each of
# 100,000 steps (safetensors' own limit, 100 MB, let a header of a million empty tensors take 1.15 GB to parse)
MAX_HEADER_BYTES = 16 << 20
# Tensors in the header: at most 49,536 (that mixture), about 1.2 KB each to parse
MAX_TENSORS = 1 << 16
MAX_DEPTH = 24  # nesting of the JSON document (a mixture of mixtures is the deepest: about 12)
MAX_TEXT = 4096  # characters of a path or another short string
_FINITE_SLICE = 1 << 22  # numbers: a temporary of 16 MB (float32)

# The JSON document's layout, {key: kind}: a key ending in "?" is optional, "*" stands for any other key. A kind
# is a layout, [kind] (a list of such), (str, most characters), (int or float, lowest, highest), LOSS (a number,
# or "nan", "inf" or "-inf" as save writes those) or ANY (checked where it is read).
ANY, LOSS = None, "loss"
STEP = (int, 0, 10**12)
LAYOUT = {
    "format_version": ANY, "makemore_version": (str, 100), "model": (str, 100), "config": ANY,
    "vocab": (str, MAX_VOCAB), "train": ANY,
    "split": {"fractions": [(float, 0, 1)], "seed": (int, 1 - (1 << 64), (1 << 64) - 1)},
    "data": {"path": (str, MAX_TEXT), "fingerprint": (str, 64), "n_items": (int, 1, 10**9)},
    "step": STEP, "best_dev_loss": LOSS,
    "metrics": [{"step": STEP, "train_loss": LOSS, "*": LOSS}],
    "resume?": ANY,  # checked against its model's parameters, when the model is known
    "time_budget?": {"seconds": (float, 0, 1e12), "planned_steps": (int, 1, 10**12), "step_seconds": (float, 0, 1e12),
                     "evaluation_seconds": (float, 0, 1e12), "reserved_seconds": (float, 0, 1e12),
                     "most_steps?": (int, 1, 10**12),
                     "revisions": [{"step": STEP, "old_steps": (int, 1, 10**12), "new_steps": (int, 1, 10**12)}]},
    "mix?": {"components": [(str, MAX_TEXT)], "component_dev_losses": [LOSS], "dev_loss": LOSS,
             "em_iterations": STEP},
    "labels?": {"names": [(str, MAX_LABEL_CHARS)], "counts": [(int, 1, 10**9)]},
}
REQUIRED = tuple(key for key in LAYOUT if not key.endswith("?"))
RESUME = {"elapsed": (float, 0, 1e12), "world_size": (int, 1, 1 << 16),
          "optimizer": {"state": {"*": {"momentum_buffer?": ANY}}, "param_groups": [ANY]}}
# optimizer state per parameter, by optimizer (makemore.train.OPTIMIZERS): the keys torch.optim keeps
_OPTIMIZER_STATE = {"adamw": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
# a JSON string: its quotes and what lies between them, escapes included (written not to backtrack)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OLDER = (b"PK\x03\x04", b"\x80\x02\x8a\n")  # a torch.save archive (zip, or pickle): checkpoint format 1


class Refused(Exception):
    """A check failed: what is wrong with the file and what to do, without its path."""


def damaged(why: str) -> Refused:
    return Refused(f"not a readable checkpoint ({why}); it is damaged, truncated or not a makemore checkpoint: "
                   "train again or restore a copy")


def older(version: int) -> Refused:
    return Refused(f"written by an older makemore (checkpoint format {version}), which this version does not "
                   "read; train the model again with: makemore train")


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _cut(lines[0] if lines else type(error).__name__, 300)


# ---------------------------------------------------------------------------------------- the file's bounds

def file(path: Path) -> None:
    """Refuse, before safetensors parses or maps anything: a path that is not a regular file (a FIFO would
    block, a device never end), a torch.save archive, a header longer than MAX_HEADER_BYTES or listing more
    than MAX_TENSORS tensors, and tensors (with the items' decoded text) that would not fit in memory."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise Refused("no such checkpoint; train one first with: makemore train") from None
    except OSError as e:
        raise Refused(f"cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise Refused("is a directory, not a checkpoint" if stat.S_ISDIR(mode) else "is not a regular file (a FIFO, "
                      "socket or device), so not a checkpoint; give the path of a checkpoint file")
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            if first.startswith(_OLDER):
                raise older(1)
            if len(first) < 8:
                raise damaged("the file is empty" if not first else "shorter than a safetensors header")
            length = int.from_bytes(first, "little")
            if length > MAX_HEADER_BYTES:
                raise damaged(f"its header would be {length:,} bytes long; a makemore checkpoint's is at most "
                              f"{MAX_HEADER_BYTES:,}")
            header = f.read(length)
            data_bytes = os.fstat(f.fileno()).st_size - 8 - length
    except OSError as e:
        raise Refused(f"cannot read it ({e.strerror})") from None
    if len(header) < length:
        raise damaged("the file ends inside its header")
    # Each tensor's entry is a JSON object: the braces outside strings (the document's included) count the
    # tensors, the outer object and __metadata__ two more
    objects = _JSON_STRING.sub(b"", header).count(b"{")
    if objects > MAX_TENSORS + 2:
        raise damaged(f"its header lists about {objects - 2:,} tensors; a makemore checkpoint holds at most "
                      f"{MAX_TENSORS:,}")
    needed = data_bytes + 2 * min(data_bytes, MAX_DATA_BYTES)  # the items as bytes and as text
    free = memory.available(torch.device("cpu"))
    if needed > free:
        raise Refused(f"loading it needs about {memory.gb(needed)} of memory (its tensors and items) but "
                      f"this process has {memory.gb(free)} available; free memory or use a larger machine")


# ---------------------------------------------------------------------------------------- the JSON document

def parse(text: str, reads: int) -> dict:
    """The JSON document: an object without a key given twice, of the format version this makemore reads."""
    def unique(pairs):
        found = dict(pairs)
        if len(found) != len(pairs):
            raise ValueError("a key is given twice")
        return found

    try:
        parsed = json.loads(text, object_pairs_hook=unique)
    except (ValueError, RecursionError):
        raise damaged("its makemore metadata is not JSON") from None
    if not isinstance(parsed, dict):
        raise damaged("its makemore metadata is not a JSON object")
    version = parsed.get("format_version")
    if not _is_int(version) or version < 1:
        raise Refused(f"not a makemore checkpoint (format version {_shown(version)})")
    if version > reads:
        raise Refused(f"written by a newer makemore (checkpoint format {version}, this one reads "
                      f"{reads}); upgrade makemore")
    if version < reads:
        raise older(version)
    return parsed


def fields(document: dict) -> tuple[dict, dict]:
    """The checkpoint's values, checked, and the tensors the file must hold: {name: (dtypes, shape[, optional])},
    a None in a shape for a size the data decides."""
    _walk(document)
    ckpt = _check(document, LAYOUT, "")
    name, vocab = ckpt["model"], ckpt["vocab"]
    try:
        cls = get_model_class(name)
    except KeyError:
        raise Refused(f"holds a {name!r} model, which this makemore does not have (it has "
                      f"{', '.join(MODELS)}); upgrade makemore") from None
    if len(vocab) < 2 or len(set(vocab)) != len(vocab):
        raise Refused("its vocabulary (vocab) is not the boundary and at least one more character, each once")
    config = _options(lambda: cls.config_from(ckpt["config"], complete=True), f"its {name} config")
    ckpt["config"] = config_dict(config)
    n_labels = labels(ckpt)
    expected = _options(lambda: cls.expected_tensors(config, len(vocab), n_labels),
                        f"its {name} config does not fit its vocabulary of {len(vocab)}")
    built = name in BUILT  # a mixture: made by makemore mix, never trained
    if built != ("mix" in ckpt):
        raise Refused("a mixture and only a mixture records how it was mixed (mix)")
    if built and ckpt["train"] != {}:
        raise Refused(f"a {name} is not trained, yet its training settings (train) are not empty")
    if not built:
        ckpt["train"] = config_dict(_options(lambda: options.make(TrainConfig, ckpt["train"], complete=True,
                                                                  what="the training settings"),
                                             "its training settings"))

    if "time_budget" in ckpt:
        if built or cls.counts:
            raise Refused(f"a {name} is not trained step by step, yet the checkpoint records a time budget")
        _time_budget(ckpt["time_budget"], ckpt["train"]["steps"])

    fractions, n_items = ckpt["split"]["fractions"], ckpt["data"]["n_items"]
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise Refused(f"its split fractions are {_shown(fractions)}, not three numbers >= 0 summing to 1")
    for split_name, fraction, size in zip(SPLIT_NAMES, fractions, split_sizes(n_items, fractions)):
        if fraction > 0 and size == 0:  # every split with a fraction got an item when it was trained
            raise Refused(f"its {split_name} split of {n_items:,} items would be empty")
    data_path, fingerprint = ckpt["data"]["path"], ckpt["data"]["fingerprint"]
    if not data_path or "\x00" in data_path or any(len(part.encode()) > 255 for part in data_path.split("/")):
        # no file that training read has such a path; os.stat would raise on it
        raise Refused("the data path is empty, holds a NUL character or a name longer than 255 bytes")
    if not fingerprint or any(c not in "0123456789abcdef" for c in fingerprint):
        raise Refused(f"the data fingerprint {_shown(fingerprint)} is not hexadecimal")

    wanted = {f"state_dict.{key}": spec for key, spec in expected.items()}
    wanted["items"] = (torch.uint8, (None,), "optional")
    if "labels" in ckpt:
        wanted["item_labels"] = (torch.uint8, (n_items,), "optional")
    if "resume" in ckpt:
        if built or cls.counts:
            raise Refused(f"a {name} is not trained step by step, yet the checkpoint holds a training state (resume)")
        ckpt["resume"] = _check(ckpt["resume"], RESUME, "resume")
        wanted.update(_resume(ckpt["resume"]["optimizer"], cls.expected_parameters(config, len(vocab), n_labels),
                              cls.expected_groups(config, len(vocab), n_labels), ckpt["train"]["optimizer"]))
        wanted.update({f"resume.state_dict.{key}": spec for key, spec in expected.items()})
    return ckpt, wanted


def _time_budget(record: dict, steps: int) -> None:
    """The revisions of a time budget's step count follow one another and end at the run's steps."""
    at, current = 0, record["planned_steps"]
    for revision in record["revisions"]:
        if not at <= revision["step"] < revision["new_steps"] or revision["old_steps"] != current:
            raise Refused(f"its time budget's revisions do not follow one another ({_shown(revision)})")
        at, current = revision["step"], revision["new_steps"]
    if current != steps:
        raise Refused(f"its time budget ends at {current:,} steps, but it records {steps:,} as its steps")
    if steps > record.get("most_steps", steps):
        raise Refused(f"its time budget ends at {steps:,} steps, more than the {record['most_steps']:,} it allows")


def _resume(optimizer: dict, params: list, groups_wanted: list[list[int]], kind: str) -> dict:
    """Check the optimizer's state (torch.optim's state_dict()) against the model's parameters (params: their
    dtypes and shapes, in the model's order) and its groups (positions in params), in place; the tensors the
    training state needs. One group of all the parameters in order, as makemore wrote before groups, is accepted."""
    groups = optimizer["param_groups"]
    if not all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups):
        raise Refused("the optimizer state's parameter groups are not JSON objects that list their parameters")
    if [len(group["params"]) for group in groups] not in ([len(g) for g in groups_wanted], [len(params)]):
        raise Refused(f"the optimizer state's parameter groups do not hold the model's {len(params)} parameters "
                      f"as it groups them ({len(groups_wanted)} group{'s' * (len(groups_wanted) != 1)})")
    order = [i for g in groups_wanted for i in g] if len(groups) == len(groups_wanted) else list(range(len(params)))
    start = 0
    for group in groups:  # torch numbers the parameters group after group
        if group["params"] != list(range(start, start + len(group["params"]))):
            raise Refused(f"the optimizer state is not one of the model's {len(params)} parameters")
        start += len(group["params"])
    # which settings a group holds depends on torch's version (api._check_resumable compares them with the
    # loop's): each is a flag, a number or a list of numbers (betas), which torch.optim keeps as a tuple
    for group in groups:
        for key, value in group.items():
            where = f"optimizer's {_shown(key)}"
            if isinstance(value, list) and key != "params":
                group[key] = tuple(_check(value, [(float, 0, 0.999999999)], where))
            elif key != "params" and value is not None and not isinstance(value, bool):
                _check(value, (float, 0, 1e12), where)

    keys = _OPTIMIZER_STATE[kind]
    wanted = {"resume.rng": (torch.uint8, tuple(torch.Generator().get_state().shape))}
    for index, entry in optimizer["state"].items():
        if index not in [str(i) for i in range(len(params))]:
            raise Refused(f"the optimizer state names a parameter {_shown(index)} the model does not have")
        if entry and (kind != "sgd" or entry["momentum_buffer"] is not None):  # SGD without momentum keeps None
            raise Refused(f"the optimizer state holds an unexpected entry in {_shown(entry)}")
        dtype, shape = params[order[int(index)]]
        for key in keys:
            if key not in entry:
                spec = ((torch.float32, torch.float64), ()) if key == "step" else (dtype, shape)
                wanted[f"resume.optimizer.state.{index}.{key}"] = spec
    optimizer["state"] = {int(index): entry for index, entry in optimizer["state"].items()}
    return wanted


def _walk(document) -> None:
    """Nothing nested deeper than MAX_DEPTH, every string valid Unicode (no lone surrogates), every number
    finite and every integer within 64 bits."""
    stack = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Refused(f"holds a string that is not valid Unicode ({_shown(value)})") from None
        elif _is_int(value) and not -(1 << 64) < value < 1 << 64:
            raise Refused(f"holds an integer beyond 64 bits ({_shown(value)})")
        elif isinstance(value, float) and not math.isfinite(value):
            raise Refused("holds a number that is not finite")


def _check(value, kind, where: str):
    """value, of the kind LAYOUT describes, as load() gives it."""
    named = f"its {where}" if where else "the checkpoint"
    if isinstance(kind, dict):
        _want(value, dict, named, "a JSON object")
        missing = [key for key in kind if key != "*" and not key.endswith("?") and key not in value]
        if missing:
            raise Refused(f"incomplete checkpoint ({named} lacks {missing[0]!r})")
        known = {key.removesuffix("?"): inner for key, inner in kind.items()}
        extra = [key for key in value if key not in known and "*" not in known]
        if extra:
            raise Refused(f"{named} holds an unexpected entry {_shown(extra[0])}")
        checked = {}
        for key, item in value.items():
            inner = f"{where} {key if key in known else _shown(key)}".lstrip()
            checked[key] = _check(item, known.get(key, known.get("*")), inner)
        return checked
    if isinstance(kind, list):
        return [_check(item, kind[0], where) for item in _want(value, list, named, "a list")]
    if kind is ANY:
        return value
    if kind is LOSS:
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            return float(value)
        kind = (float, -math.inf, math.inf)
    if kind[0] is str:
        if len(_want(value, str, named, "a string")) > kind[1]:
            raise Refused(f"{named} is longer than {kind[1]:,} characters")
        return value
    whole, low, high = kind[0] is int, kind[1], kind[2]
    if not (_is_int(value) or not whole and isinstance(value, float)) or not low <= value <= high:
        shown = f"{low:,} to {high:,}" if whole else f"{low:g} to {high:g}"
        raise Refused(f"{named} is {_shown(value)}, not a {'whole ' * whole}number from {shown}")
    return value  # an int stays an int: a setting of the optimizer's round-trips exactly


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cut(text: str, longest: int) -> str:
    return text if len(text) <= longest else text[:longest - 3] + "..."


def _shown(value) -> str:
    return _cut(repr(value), 60)


def _want(value, kind, where: str, what: str):
    if not isinstance(value, kind):
        raise Refused(f"{where} is {_shown(value)}, not {what}")
    return value


def _options(make, where: str):
    """make() with the options' errors (and any a parser lets through) as one-line refusals."""
    try:
        return make()
    except (MakemoreError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as e:
        raise Refused(f"{where}: {first_line(e)}") from None


# ------------------------------------------------------------------------------------------- the tensors

def tensors(entries: dict, wanted: dict) -> None:
    """Every tensor the checkpoint needs is there with its dtype and shape, and there is no other. entries:
    {name: (torch dtype, or the safetensors name of one torch lacks, shape)}, as the header lists them."""
    for name, spec in wanted.items():
        dtypes, shape = spec[0], spec[1]
        if name not in entries:
            if len(spec) > 2:  # optional
                continue
            raise Refused(f"does not fit its model: it lacks the tensor {_shown(name)}")
        dtypes = dtypes if isinstance(dtypes, tuple) else (dtypes,)
        found, found_shape = entries[name]
        fits = len(found_shape) == len(shape) and all(w is None or w == got for w, got in zip(shape, found_shape))
        if found not in dtypes or not fits:
            shown = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise Refused(f"does not fit its model: tensor {_shown(name)} is {_dtype(found)} {tuple(found_shape)}, "
                          f"its config gives {'/'.join(map(_dtype, dtypes))} {shown}")
    extra = [name for name in entries if name not in wanted]
    if extra:
        raise Refused(f"does not fit its model: it holds an unexpected tensor {_shown(extra[0])}")


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def labels(ckpt: dict) -> int:
    """The number of labels a checkpoint's model conditions on (1 without labels), its labels checked."""
    if "labels" not in ckpt:
        return 1
    names, counts = ckpt["labels"]["names"], ckpt["labels"]["counts"]
    if not 2 <= len(names) <= MAX_LABELS or len(set(names)) != len(names) or names != sorted(names):
        raise Refused(f"its labels are not 2 to {MAX_LABELS} distinct names in order")
    if len(counts) != len(names):
        raise Refused(f"it records {len(counts)} label counts for {len(names)} labels")
    return len(names)


def item_labels(t, ckpt: dict) -> list[int] | None:
    """Each kept item's label id, checked against the labels (None when the checkpoint keeps no items)."""
    if t is None:
        if ckpt["items"]:
            raise Refused("it keeps training items but not their labels (item_labels)")
        return None
    if not ckpt["items"]:
        raise Refused("it keeps the labels of training items (item_labels) but no items")
    if t.numel() and int(t.max()) >= len(ckpt["labels"]["names"]):
        raise Refused("an item's label (item_labels) is not one of its labels")
    return t.tolist()


def items_size(n_bytes: int) -> None:
    """Refuse an items tensor larger than any data file makemore reads, before it is read."""
    if n_bytes > MAX_DATA_BYTES:
        raise Refused(f"keeps {n_bytes:,} bytes of training items; a checkpoint keeps at most {MAX_DATA_BYTES:,} "
                      "(the size of the largest data file makemore reads)")


def items(raw, ckpt: dict) -> str:
    """The training items (UTF-8 bytes) as text, checked as a data file's: their count, length and characters."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        raise Refused("its training items are not UTF-8 text") from None
    n, recorded = text.count("\n") + 1, ckpt["data"]["n_items"]
    if n != recorded or text.startswith("\n") or text.endswith("\n") or "\n\n" in text:
        raise Refused(f"it keeps {n:,} training items (or empty ones), but its data had {recorded:,}")
    too_long = first_too_long(text)
    if too_long:
        raise Refused(f"its training item {too_long[0]:,} is {too_long[1]:,} characters long; items "
                      f"are at most {MAX_ITEM_CHARS:,}")
    if any(c != "\n" for c in Vocab(ckpt["vocab"]).unknown(text)):  # the newlines between items aside
        raise Refused("its training items hold characters its vocabulary lacks")
    return text


def values(ckpt: dict) -> None:
    """What only the tensors' numbers show: weights and optimizer state that are not finite, a random state
    torch would not take, an optimizer step below zero."""
    resume = ckpt.get("resume") or {}
    weights = [("weights", ckpt["state_dict"]), ("latest weights", resume.get("state_dict", {}))]
    if resume:
        try:
            torch.Generator().set_state(resume["rng"])
        except RuntimeError:
            raise Refused("its training state's random state (resume.rng) is not a generator state") from None
        state = resume["optimizer"]["state"]
        if any(not 0 <= float(entry["step"]) < math.inf for entry in state.values() if "step" in entry):
            raise Refused("its optimizer state's step is not a finite number >= 0")
        weights.append(("optimizer state", {f"{index}.{key}": t for index, entry in state.items()
                                            for key, t in entry.items() if isinstance(t, torch.Tensor)}))
    for where, named in weights:
        for name, t in named.items():
            # max |x| < inf is False for an inf and a NaN: one reduction, faster than isfinite().all(); over
            # slices, so that the temporary |x| of a large tensor stays small
            if t.is_floating_point() and not all(bool(part.abs().max() < math.inf)
                                                 for part in t.reshape(-1).split(_FINITE_SLICE) if part.numel()):
                raise Refused(f"its {where} hold a number that is not finite ({name})")

