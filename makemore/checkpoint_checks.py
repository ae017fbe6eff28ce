"""The checks of a checkpoint file from anywhere: every bound, field, dtype, shape and value that
makemore.checkpoint's load() applies, each before the work or the memory it bounds. A check that fails raises
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
from makemore.data import MAX_DATA_BYTES, MAX_ITEM_CHARS, MAX_VOCAB, SPLIT_NAMES, split_sizes
from makemore.errors import CheckpointError, MakemoreError
from makemore.models import BUILT, MODELS, get_model_class
from makemore.models.base import config_dict
from makemore.train import TrainConfig

# Bytes of the safetensors header: 1-6 KB for every model at its defaults, about 6 MB for the largest the
# model limits allow (a mixture of 64 transformers of 64 layers) or a run that logged each of 100,000 steps.
# safetensors' own limit, 100 MB, let a header of a million empty tensors take 1.15 GB to parse.
MAX_HEADER_BYTES = 16 << 20
# Tensors in the header: at most 49,536 (that mixture), about 1.2 KB each to parse
MAX_TENSORS = 1 << 16
MAX_ITEMS_BYTES = MAX_DATA_BYTES  # the training items are the lines of a data file
MAX_DEPTH = 24  # nesting of the JSON document (a mixture of mixtures is the deepest: about 12)
MAX_TEXT = 4096  # characters of a path or another short string
MAX_ITEMS = 10**9
MAX_STEP = 10**12
MAX_WORLD = 1 << 16
_FINITE_SLICE = 1 << 22  # numbers: a temporary of 16 MB (float32)

# the JSON document's keys: required, then optional
REQUIRED = ("format_version", "makemore_version", "model", "config", "vocab", "train", "split", "data", "step",
            "best_dev_loss", "metrics")
OPTIONAL = ("resume", "mix")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # how save writes these floats
# optimizer state per parameter, by optimizer (makemore.train.OPTIMIZERS): the keys torch.optim keeps
_OPTIMIZER_STATE = {"adamw": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
_OPTIONAL_FLAGS = ("foreach", "fused")  # param_group flags that may be None or a bool
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
    if stat.S_ISDIR(mode):
        raise Refused("is a directory, not a checkpoint")
    if not stat.S_ISREG(mode):
        raise Refused("is not a regular file (a FIFO, socket or device), so not a checkpoint; "
                      "give the path of a checkpoint file")
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            if first.startswith(_OLDER):
                raise older(1)
            header = _header(first, f)
            data_bytes = os.fstat(f.fileno()).st_size - 8 - header
    except OSError as e:
        raise Refused(f"cannot read it ({e.strerror})") from None
    needed = data_bytes + 2 * min(data_bytes, MAX_ITEMS_BYTES)  # the items as bytes and as text
    free = memory.available(torch.device("cpu"))
    if needed > free:
        raise Refused(f"loading it needs about {_mb(needed)} of memory (its tensors and items) but "
                      f"this process has {_mb(free)} available; free memory or use a larger machine")


def _header(first: bytes, f) -> int:
    """The header's length, given the file's first 8 bytes and f just after them, once it is within bounds."""
    if len(first) < 8:
        raise damaged("the file is empty" if not first else "shorter than a safetensors header")
    length = int.from_bytes(first, "little")
    if length > MAX_HEADER_BYTES:
        raise damaged(f"its header would be {length:,} bytes long; a makemore checkpoint's is at most "
                      f"{MAX_HEADER_BYTES:,}")
    header = f.read(length)
    if len(header) < length:
        raise damaged("the file ends inside its header")
    # Each tensor's entry is a JSON object: the braces outside strings (the document's included) count the
    # tensors, the outer object and __metadata__ two more
    objects = _JSON_STRING.sub(b"", header).count(b"{")
    if objects > MAX_TENSORS + 2:
        raise damaged(f"its header lists about {objects - 2:,} tensors; a makemore checkpoint holds at most "
                      f"{MAX_TENSORS:,}")
    return length


def _mb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{max(1, round(n / 2**20))} MB"


# ---------------------------------------------------------------------------------------- the JSON document

def parse(text: str, reads: int) -> dict:
    """The JSON document: an object without NaN, Infinity, a key given twice, deep nesting or huge integers, of
    the format version this makemore reads."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    def unique(pairs):
        found = dict(pairs)
        if len(found) != len(pairs):
            raise ValueError("a key is given twice")
        return found

    try:
        parsed = json.loads(text, parse_constant=refuse, object_pairs_hook=unique)
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
    _keys(document, "the checkpoint", REQUIRED, OPTIONAL)
    ckpt = dict(format_version=document["format_version"],
                makemore_version=_text(document["makemore_version"], "makemore_version", 100))
    name = ckpt["model"] = _text(document["model"], "model", 100)
    try:
        cls = get_model_class(name)
    except KeyError:
        raise Refused(f"holds a {name!r} model, which this makemore does not have (it has "
                      f"{', '.join(MODELS)}); upgrade makemore") from None
    vocab = ckpt["vocab"] = _text(document["vocab"], "vocab", MAX_VOCAB)
    if len(vocab) < 2 or len(set(vocab)) != len(vocab):
        raise Refused("its vocabulary (vocab) is not the boundary and at least one more character, each once")
    config = _options(lambda: cls.config_from(document["config"], complete=True), f"its {name} config")
    ckpt["config"] = config_dict(config)
    expected = _options(lambda: cls.expected_tensors(config, len(vocab)),
                        f"its {name} config does not fit its vocabulary of {len(vocab)}")

    built = name in BUILT  # a mixture: made by makemore mix, never trained
    tconfig = None
    if built and document["train"] != {}:
        raise Refused(f"a {name} is not trained, yet its training settings (train) are not empty")
    if not built:
        tconfig = _options(lambda: options.make(TrainConfig, document["train"], what="the training settings",
                                                complete=True), "its training settings")
    ckpt["train"] = {} if built else config_dict(tconfig)

    split = _keys(document["split"], "split", ("fractions", "seed"))
    fractions = split["fractions"]
    if (not isinstance(fractions, list) or len(fractions) != 3 or not all(_is_number(x) and x >= 0 for x in fractions)
            or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0):
        raise Refused(f"its split fractions are {_shown(fractions)}, not three numbers >= 0 summing to 1")
    ckpt["split"] = dict(fractions=[float(x) for x in fractions],
                         seed=_int(split["seed"], "the split seed", -(1 << 64) + 1, (1 << 64) - 1))

    data = _keys(document["data"], "data", ("path", "fingerprint", "n_items"))
    data_path = _text(data["path"], "the data path")
    fingerprint = _text(data["fingerprint"], "the data fingerprint", 64)
    if not data_path or "\x00" in data_path or any(len(part.encode()) > 255 for part in data_path.split("/")):
        # no file that training read has such a path; os.stat would raise on it
        raise Refused("the data path is empty, holds a NUL character or a name longer than 255 bytes")
    if not fingerprint or any(c not in "0123456789abcdef" for c in fingerprint):
        raise Refused(f"the data fingerprint {_shown(fingerprint)} is not hexadecimal")
    n_items = _int(data["n_items"], "the data's number of items", 1, MAX_ITEMS)
    for split_name, fraction, size in zip(SPLIT_NAMES, fractions, split_sizes(n_items, fractions)):
        if fraction > 0 and size == 0:  # every split with a fraction got an item when it was trained
            raise Refused(f"its {split_name} split of {n_items:,} items would be empty")
    ckpt["data"] = dict(path=data_path, fingerprint=fingerprint, n_items=n_items)

    ckpt["step"] = _int(document["step"], "step", 0, MAX_STEP)
    ckpt["best_dev_loss"] = _number(document["best_dev_loss"], "best_dev_loss", nonfinite=True)
    ckpt["metrics"] = [_record(record) for record in _want(document["metrics"], list, "metrics", "a list")]
    if built != ("mix" in document):
        raise Refused("a mixture and only a mixture records how it was mixed (mix)")
    if built:
        ckpt["mix"] = _mix(document["mix"])

    wanted = {f"state_dict.{key}": spec for key, spec in expected.items()}
    wanted["items"] = (torch.uint8, (None,), "optional")
    if "resume" in document:
        if tconfig is None or cls.counts:
            raise Refused(f"a {name} is not trained step by step, yet the checkpoint holds a training state (resume)")
        ckpt["resume"], resume_wanted = _resume(document["resume"], cls, config, len(vocab), tconfig)
        wanted.update({f"resume.state_dict.{key}": spec for key, spec in expected.items()})
        wanted.update(resume_wanted)
    return ckpt, wanted


def _record(record) -> dict:
    """A metrics record: its step, its train_loss and any other numbers."""
    _want(record, dict, "a metrics record", "a JSON object")
    if "step" not in record or "train_loss" not in record:
        raise Refused("a metrics record lacks its step or train_loss")
    return {key: _int(value, "a metrics step", 0, MAX_STEP) if key == "step"
            else _number(value, f"metrics' {_shown(key)}", nonfinite=True) for key, value in record.items()}


def _mix(mix) -> dict:
    _keys(mix, "mix", ("components", "component_dev_losses", "dev_loss", "em_iterations"))
    components = _want(mix["components"], list, "mix's components", "a list")
    losses = _want(mix["component_dev_losses"], list, "mix's component_dev_losses", "a list")
    return dict(components=[_text(c, "a mixed checkpoint's path") for c in components],
                component_dev_losses=[_number(x, "a component's dev loss", nonfinite=True) for x in losses],
                dev_loss=_number(mix["dev_loss"], "mix's dev_loss", nonfinite=True),
                em_iterations=_int(mix["em_iterations"], "mix's em_iterations", 0, MAX_STEP))


def _resume(resume, cls, config, vocab_size: int, tconfig) -> tuple[dict, dict]:
    """The training state for `train --resume`, checked against the model's parameters (the optimizer's
    settings against the loop's by check_resumable); and the tensors it needs."""
    _keys(resume, "resume", ("elapsed", "world_size", "optimizer"))
    out = dict(elapsed=_number(resume["elapsed"], "resume's elapsed", 0, 1e12),
               world_size=_int(resume["world_size"], "resume's world_size", 1, MAX_WORLD))
    optimizer = _keys(resume["optimizer"], "the optimizer state", ("state", "param_groups"))
    params = cls.expected_parameters(config, vocab_size)  # in the optimizer's order, without allocating
    groups = _want(optimizer["param_groups"], list, "the optimizer's param_groups", "a list")
    if len(groups) != 1:
        raise Refused("the optimizer state does not hold exactly one parameter group")
    group = _want(groups[0], dict, "the optimizer's parameter group", "a JSON object")
    if group.get("params") != list(range(len(params))):
        raise Refused(f"the optimizer state is not one of the model's {len(params)} parameters")
    # which settings a group holds depends on torch's version: each is a flag, a number or a few numbers
    restored = {}
    for key, value in group.items():  # in the file's order, so that a checkpoint saved again is the same bytes
        where = f"the optimizer's {_shown(key)}"
        if key == "params" or value is None or isinstance(value, bool):
            restored[key] = value
        elif isinstance(value, list):
            if not 1 <= len(value) <= 4:
                raise Refused(f"{where} is {_shown(value)}, not a few numbers")
            restored[key] = tuple(_number(v, where, 0, 0.999999999) for v in value)
        else:
            _number(value, where, 0, 1e12)
            restored[key] = value  # an int stays an int: the state round-trips exactly
    if restored.get("fused") and restored.get("foreach"):
        raise Refused("the optimizer state asks for both fused and foreach steps")

    state = _want(optimizer["state"], dict, "the optimizer's state", "a JSON object")
    keys = _OPTIMIZER_STATE[tconfig.optimizer]
    plain = {}
    wanted = {"resume.rng": (torch.uint8, tuple(torch.Generator().get_state().shape))}
    for index, entry in state.items():
        if not index.isdigit() or index != str(int(index)) or int(index) >= len(params):
            raise Refused(f"the optimizer state names a parameter {_shown(index)} the model does not have")
        _want(entry, dict, "an optimizer state entry", "a JSON object")
        for key, value in entry.items():
            if key != "momentum_buffer" or key not in keys or value is not None:
                raise Refused(f"the optimizer state holds an unexpected {_shown(key)} = {_shown(value)}")
        plain[int(index)] = dict(entry)
        dtype, shape = params[int(index)]
        for key in keys:
            if key not in entry:
                spec = (torch.float32, torch.float64) if key == "step" else dtype
                wanted[f"resume.optimizer.state.{index}.{key}"] = (spec, () if key == "step" else shape)
    out["optimizer"] = dict(state=plain, param_groups=[restored])
    return out, wanted


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cut(text: str, longest: int) -> str:
    return text if len(text) <= longest else text[:longest - 3] + "..."


def _shown(value) -> str:
    return _cut(repr(value), 60)


def _want(value, kind, where: str, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise Refused(f"{where} is {_shown(value)}, not {what}")
    return value


def _int(value, where: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise Refused(f"{where} is {_shown(value)}, not a whole number from {low:,} to {high:,}")
    return value


def _number(value, where: str, low: float = -math.inf, high: float = math.inf, nonfinite: bool = False) -> float:
    """A number in [low, high]; with nonfinite also "nan", "inf" or "-inf"."""
    if nonfinite and isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if not _is_number(value) or not low <= value <= high:
        raise Refused(f"{where} is {_shown(value)}, not a number from {low:g} to {high:g}")
    return float(value)


def _text(value, where: str, longest: int = MAX_TEXT) -> str:
    _want(value, str, where, "a string")
    if len(value) > longest:
        raise Refused(f"{where} is longer than {longest:,} characters")
    return value


def _keys(value, where: str, required: tuple, optional: tuple = ()) -> dict:
    _want(value, dict, where, "a JSON object")
    missing = [k for k in required if k not in value]
    if missing:
        raise Refused(f"incomplete checkpoint ({where} lacks {missing[0]!r})")
    extra = [k for k in value if k not in required + optional]
    if extra:
        raise Refused(f"{where} holds an unexpected entry {_shown(extra[0])}")
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
        if not isinstance(found, torch.dtype):
            raise Refused(f"does not fit its model: tensor {_shown(name)} is of dtype {_shown(found)}")
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


def items_size(n_bytes: int) -> None:
    """Refuse an items tensor larger than any data file makemore reads, before it is read."""
    if n_bytes > MAX_ITEMS_BYTES:
        raise Refused(f"keeps {n_bytes:,} bytes of training items; a checkpoint keeps at most {MAX_ITEMS_BYTES:,} "
                      "(the size of the largest data file makemore reads)")


def items(raw: bytearray, ckpt: dict) -> str:
    """The training items as text, checked against the data's count, the item length and the vocabulary."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("its training items are not UTF-8 text") from None
    n, recorded = text.count("\n") + 1, ckpt["data"]["n_items"]
    if n != recorded or text.startswith("\n") or text.endswith("\n") or "\n\n" in text:
        raise Refused(f"it keeps {n:,} training items (or empty ones), but its data had {recorded:,}")
    too_long = longest_item(raw, text)
    if too_long is not None:
        raise Refused(f"its training item {too_long[0]:,} is {too_long[1]:,} characters long; items "
                      f"are at most {MAX_ITEM_CHARS:,}")
    if text.isascii():  # counted in C: a set() of 25 million characters takes a second
        counts = torch.bincount(torch.frombuffer(raw, dtype=torch.uint8), minlength=128)
        chars = {chr(c) for c in counts.nonzero().flatten().tolist()}
    else:
        chars = set(text)
    if not chars <= set(ckpt["vocab"][1:]) | {"\n"} or ckpt["vocab"][0] in text.replace("\n", ""):
        raise Refused("its training items hold characters its vocabulary lacks")
    return text


def longest_item(raw: bytearray, text: str) -> tuple[int, int] | None:
    """(line number from 1, length in characters) of the first item of the UTF-8 raw (decoded: text) longer
    than MAX_ITEM_CHARS, or None. Lines are measured in bytes first, in C: only those longer than that in
    bytes are decoded and counted."""
    if not raw:
        return None
    ascii = len(raw) == len(text)
    newlines = (torch.frombuffer(raw, dtype=torch.uint8) == ord("\n")).nonzero().flatten()
    bounds = torch.cat([torch.tensor([-1]), newlines, torch.tensor([len(raw)])])
    for line in ((bounds.diff() - 1) > MAX_ITEM_CHARS).nonzero().flatten().tolist():
        start, end = int(bounds[line]) + 1, int(bounds[line + 1])
        chars = end - start if ascii else len(raw[start:end].decode("utf-8"))
        if chars > MAX_ITEM_CHARS:
            return line + 1, chars
    return None


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


def check_resumable(ckpt: dict, path, optimizer) -> None:
    """Raise CheckpointError unless ckpt holds the training state that `train --resume` needs, for the
    optimizer the loop makes (its settings, which depend on torch's version, must match the saved ones)."""
    if not isinstance(ckpt.get("resume"), dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    reference = optimizer.state_dict()["param_groups"][0]
    group = ckpt["resume"]["optimizer"]["param_groups"][0]
    if set(group) != set(reference):
        raise CheckpointError(f"{path}: its optimizer state is not one of a {ckpt['train']['optimizer']} optimizer "
                              f"of this torch (its settings: {', '.join(sorted(map(str, group)))[:120]}); it cannot "
                              "be resumed")
    for key, ref in reference.items():
        value = group[key]
        if ref is None or isinstance(ref, bool):
            fits = value is None or isinstance(value, bool)
        else:
            fits = isinstance(value, tuple) == isinstance(ref, tuple) and (not isinstance(ref, tuple)
                                                                            or len(value) == len(ref))
        fixed = isinstance(ref, bool) and key not in _OPTIONAL_FLAGS
        if not fits or (fixed and value != ref):
            raise CheckpointError(f"{path}: the optimizer's {key} is {_shown(value)}; makemore trains with "
                                  f"{_shown(ref)}; it cannot be resumed")
