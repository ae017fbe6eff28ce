"""One self-describing checkpoint file per trained model, in the safetensors format, with no pickle in it.

The file is a safetensors file (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
length, a JSON header naming every tensor with its dtype, shape and byte range, then the tensors' bytes.
Loading it cannot run code, any language can read it, and the tensors can be memory-mapped. Everything
that is not a tensor (the model's name and config, the vocabulary, the split, the data file, the training
settings and history) is one JSON document kept as a string in the header's __metadata__, beside a SHA-256
of that document and of every tensor, so that a damaged file is noticed. The README's "Checkpoints" section
documents the layout key by key.

load() checks before it allocates: the path is a regular file (a directory, FIFO or device is refused
without being read); the header's length and number of tensors are within makemore's bounds and the
tensors fit in the memory the process may use (makemore.checkpoint_checks, before safetensors parses or
maps anything); safetensors' own reader checks the header and that its byte ranges tile the file exactly;
every JSON field has its type and range, and every tensor's dtype and shape is the one the model built
from the config has; only then are the tensors read, never more bytes than the file holds; then the
checksum. Every failure is a CheckpointError with a one-line message that starts with the path.

Files are written atomically (a temporary file in the same folder, then a rename), so the file on disk is
always complete.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import hmac
import json
import math
import os
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from makemore import __version__, options
from makemore import checkpoint_checks as checks
from makemore.data import MAX_ITEM_CHARS, MAX_VOCAB, SPLIT_NAMES, split_sizes
from makemore.errors import CheckpointError, MakemoreError
from makemore.files import atomic_write
from makemore.models import BUILT, MODELS, get_model_class
from makemore.models.base import config_dict
from makemore.train import TrainConfig

FORMAT_VERSION = 2  # 1 was a torch.save (zip + pickle) archive, no longer read
SUFFIX = ".safetensors"
LATEST = "latest"  # a file in the output folder naming the checkpoint trained last
METADATA_KEY = "makemore"  # __metadata__ key of the JSON document
# a U8 tensor of 32 bytes: SHA-256 of the document and every other tensor. A tensor, not a second metadata key:
# safetensors writes __metadata__ in a random order, and one key keeps a checkpoint's bytes reproducible
DIGEST = "sha256"

MAX_DEPTH = 24  # nesting of the JSON document (a mixture of mixtures is the deepest: about 12)
MAX_TEXT = 4096  # characters of a path or another short string
MAX_ITEMS = 10**9
MAX_STEP = 10**12
MAX_WORLD = 1 << 16
_READ = 1 << 20
_FINITE_SLICE = 1 << 22  # numbers: a temporary of 16 MB (float32)

# safetensors dtype name -> (torch dtype name, bytes per element)
_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
           "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
           "U8": ("uint8", 1), "BOOL": ("bool", 1)}
_NAMES = {torch_name: st_name for st_name, (torch_name, _) in _DTYPES.items()}

# the JSON document's keys: required, then optional
REQUIRED = ("format_version", "makemore_version", "model", "config", "vocab", "train", "split", "data", "step",
            "best_dev_loss", "metrics")
OPTIONAL = ("resume", "mix")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

# optimizer state per parameter, by optimizer (makemore.train.OPTIMIZERS): the keys torch.optim keeps
_OPTIMIZER_STATE = {"adamw": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
_OPTIONAL_FLAGS = ("foreach", "fused")  # param_group flags that may be None or a bool


# ------------------------------------------------------------------------------------------------ writing

def build(*, model: str, config, vocab: str, train, split: dict, data: dict, items, state_dict: dict, step: int,
          best_dev_loss: float, metrics: list, resume: dict | None = None, mix: dict | None = None) -> dict:
    """The checkpoint as a dict, as load() returns it: the one place where its contents are put together
    (makemore train and makemore mix both call this, then save()).

    config and train may be dataclasses or plain dicts; items a list of items or the items joined by
    newlines; tensors may be on any device. resume, for `train --resume`: state_dict (the latest weights),
    optimizer (torch.optim's state_dict()), rng (the batch generator's state), elapsed and world_size.
    """

    ckpt = dict(
        format_version=FORMAT_VERSION, makemore_version=__version__, model=model, config=_plain(config),
        vocab=vocab, train=_plain(train), split=dict(fractions=[float(f) for f in split["fractions"]],
                                                       seed=int(split["seed"])),
        data=dict(path=str(data["path"]), fingerprint=str(data["fingerprint"]), n_items=int(data["n_items"])),
        items=items if isinstance(items, str) else "\n".join(items),
        state_dict=_cpu(state_dict), step=int(step), best_dev_loss=float(best_dev_loss),
        metrics=[dict(record) for record in metrics],
    )
    if resume is not None:
        ckpt["resume"] = dict(state_dict=_cpu(resume["state_dict"]), optimizer=_cpu(resume["optimizer"]),
                              rng=_cpu(resume["rng"]), elapsed=float(resume["elapsed"]),
                              world_size=int(resume.get("world_size", 1)))
    if mix is not None:
        ckpt["mix"] = _plain(mix)
    return ckpt


def _plain(value):
    """Dataclasses as dicts and tuples as lists, all the way down: the values JSON holds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cpu(obj):

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save(ckpt: dict, path: Path) -> None:
    """Write ckpt (as build() makes it) to path atomically, as a safetensors file.

    What load() would refuse is never written: the document and the tensors' dtypes and shapes go through
    the same checks first (a failure there is a bug in makemore, raised as RuntimeError)."""

    document, tensors = _to_file(ckpt)
    text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    entries = {name: (_NAMES[str(t.dtype).removeprefix("torch.")], tuple(t.shape)) for name, t in tensors.items()}
    try:
        _, wanted = _fields(_parse_json(text))
        _check_tensors(entries, wanted, path)
    except (_Refused, CheckpointError) as e:
        raise RuntimeError(f"{path}: makemore would not read back the checkpoint it is writing: {e}") from None
    digest = _digest(text, {name: (*entries[name], t.numel() * t.element_size(), [_bytes_of(t)])
                            for name, t in tensors.items()})
    tensors[DIGEST] = torch.frombuffer(bytearray.fromhex(digest), dtype=torch.uint8)
    # written straight to the file: serialising to bytes first held the whole file twice more in memory
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: text}), by_path=True)


def _to_file(ckpt: dict) -> tuple[dict, dict]:
    """The JSON document and the named tensors that hold ckpt."""

    document = {key: ckpt[key] for key in REQUIRED if key in ckpt}
    document["format_version"] = FORMAT_VERSION
    document["best_dev_loss"] = _encode_number(ckpt["best_dev_loss"])
    document["metrics"] = [{k: _encode_number(v) for k, v in record.items()} for record in ckpt["metrics"]]
    tensors = {f"state_dict.{name}": t for name, t in ckpt["state_dict"].items()}
    if ckpt.get("items"):
        tensors["items"] = torch.frombuffer(bytearray(ckpt["items"].encode("utf-8")), dtype=torch.uint8)
    if "mix" in ckpt:
        mix = dict(ckpt["mix"])
        mix["dev_loss"] = _encode_number(mix["dev_loss"])
        mix["component_dev_losses"] = [_encode_number(v) for v in mix["component_dev_losses"]]
        document["mix"] = mix
    if ckpt.get("resume") is not None:
        r = ckpt["resume"]
        state, groups = r["optimizer"]["state"], r["optimizer"]["param_groups"]
        plain_state = {}
        for index, entry in state.items():
            plain_state[str(index)] = {}
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"resume.optimizer.state.{index}.{key}"] = value
                else:
                    plain_state[str(index)][key] = value
        document["resume"] = dict(elapsed=r["elapsed"], world_size=r.get("world_size", 1),
                                  optimizer=dict(state=plain_state, param_groups=_plain(groups)))
        tensors.update({f"resume.state_dict.{name}": t for name, t in r["state_dict"].items()})
        tensors["resume.rng"] = r["rng"]
    # safetensors wants contiguous tensors that share no memory (the best weights may be the latest ones)
    seen, out = set(), {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        where = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if where is not None and where in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(where)
        out[name] = t
    return document, out


def _encode_number(value):
    """A float as JSON holds it: finite numbers as they are, inf and nan as the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _bytes_of(t):
    """A contiguous CPU tensor's bytes, without a copy (t must stay alive while they are used)."""
    n = t.numel() * t.element_size()
    return (ctypes.c_char * n).from_address(t.data_ptr()) if n else b""


def _digest(text: str, tensors: dict) -> str:
    """SHA-256 of the JSON document and of every tensor in name order: its name, dtype and shape, then its
    bytes, each part preceded by its length (8 bytes, little-endian). tensors: {name: (dtype, shape,
    number of bytes, the bytes in chunks)}. It does not depend on where the tensors lie in the file."""
    h = hashlib.sha256(b"makemore checkpoint\x00")
    _part(h, len(text.encode("utf-8")), [text.encode("utf-8")])
    for name in sorted(tensors):
        dtype, shape, nbytes, chunks = tensors[name]
        head = f"{name}\x00{dtype}\x00{','.join(map(str, shape))}".encode("utf-8")
        _part(h, len(head), [head])
        _part(h, nbytes, chunks)
    return h.hexdigest()


def _part(h, nbytes: int, chunks) -> None:
    h.update(nbytes.to_bytes(8, "little"))
    for chunk in chunks:
        h.update(chunk)


def write_latest(out_dir: Path, path: Path) -> None:
    atomic_write(Path(out_dir) / LATEST, lambda f: f.write(Path(path).name.encode() + b"\n"))


def latest(out_dir: str | Path) -> Path:
    """The checkpoint trained last in out_dir."""
    out_dir = Path(out_dir)
    pointer = out_dir / LATEST
    if pointer.is_file():
        try:
            named = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            named = ""  # a damaged pointer: fall back to the newest checkpoint
        if named and "/" not in named and "\x00" not in named and named not in (".", "..") \
                and (out_dir / named).is_file():
            return out_dir / named
    found = sorted(out_dir.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime) if out_dir.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {out_dir}/; train one first with: makemore train")
    return found[-1]


# ------------------------------------------------------------------------------------------------ reading

def load(path: str | Path) -> dict:
    """Read and check a checkpoint; every failure is a CheckpointError with a one-line message.

    Returns the dict build() makes: the JSON document's values (config and train as plain dicts) with
    state_dict {name: tensor}, items (a str, "" when the file keeps none) and, when the file holds it,
    resume {state_dict, optimizer (as torch.optim's state_dict(), with int keys), rng, elapsed,
    world_size}.
    """
    path = Path(path)
    _check_file(path)
    try:
        # safetensors checks the header (its size, JSON, dtypes, shapes, byte ranges that tile the file
        # exactly) when it opens the file, and maps it instead of reading it
        with safe_open(path, framework="pt") as f:
            document, text = _document(f.metadata(), path)
            entries = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}
            if entries.pop(DIGEST, None) != ("U8", (32,)):
                raise checks.damaged(path, f"no checksum (a {DIGEST} tensor of 32 bytes)")
            if "items" in entries:
                checks.items_size(path, math.prod(entries["items"][1]))
            ckpt, wanted = _check_document(document, path)
            _check_tensors(entries, wanted, path)
            tensors = {name: f.get_tensor(name) for name in entries}
            stored = bytes(f.get_tensor(DIGEST).tolist()).hex()
    except SafetensorError as e:
        raise checks.damaged(path, _first_line(e)) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or _first_line(e)})") from None
    except (RuntimeError, MemoryError) as e:  # the file could not be mapped: more than this process may use
        raise CheckpointError(f"{path}: does not fit in the memory this process may use ({_first_line(e)})") \
            from None
    found = _digest(text, {name: (*entries[name], t.numel() * t.element_size(), [_bytes_of(t)])
                           for name, t in tensors.items()})
    if not hmac.compare_digest(found, stored):
        raise CheckpointError(f"{path}: damaged (its contents do not match their checksum); train again or restore "
                              "a copy")
    _assemble(ckpt, tensors, path)
    return ckpt


class _Refused(Exception):
    """A check failed; load turns it into CheckpointError(f"{path}: {message}")."""


def _check_file(path: Path) -> None:
    """Refuse, without opening it, a path that is not a regular file (a FIFO would block, a device never
    end); a checkpoint of the format before safetensors, by its first bytes; a header that would take
    safetensors unbounded work to parse; and tensors that would not fit in memory."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise CheckpointError(f"{path}: no such checkpoint; train one first with: makemore train") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: is not a regular file (a FIFO, socket or device), so not a checkpoint; "
                              "give the path of a checkpoint file")
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            if not first:
                raise checks.damaged(path, "the file is empty")
            if first.startswith(b"PK\x03\x04") or first.startswith(b"\x80\x02\x8a\n"):
                raise CheckpointError(f"{path}: a checkpoint of an older makemore (a torch.save archive), which "
                                      "this version no longer reads; train the model again with: makemore train")
            header_bytes = checks.header_bounds(path, first, f)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    checks.fits_in_memory(path, size - 8 - header_bytes)


def _document(metadata: dict, path: Path) -> tuple[dict, str]:
    """The JSON document, once its format version is one this makemore reads."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get(METADATA_KEY), str):
        raise CheckpointError(f"{path}: a safetensors file without makemore's metadata, so not a makemore "
                              "checkpoint")
    if set(metadata) != {METADATA_KEY}:
        raise checks.damaged(path, "unexpected metadata beside makemore's")
    text = metadata[METADATA_KEY]
    try:
        document = _parse_json(text)
    except (ValueError, RecursionError):
        raise checks.damaged(path, "its makemore metadata is not JSON") from None
    if not isinstance(document, dict):
        raise checks.damaged(path, "its makemore metadata is not a JSON object")
    version = document.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: not a makemore checkpoint (format version {_shown(version)})")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer makemore (checkpoint format {version}, this one reads "
                              f"{FORMAT_VERSION}); upgrade makemore")
    if version < FORMAT_VERSION:
        raise CheckpointError(f"{path}: a checkpoint of an older makemore (format {version}), which this version "
                              "no longer reads; train the model again with: makemore train")
    return document, text


def _parse_json(text: str):
    """JSON without NaN, Infinity or a key given twice; deep nesting raises RecursionError, a huge integer
    ValueError."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    def unique(pairs):
        found = dict(pairs)
        if len(found) != len(pairs):
            raise ValueError("a key is given twice")
        return found

    return json.loads(text, parse_constant=refuse, object_pairs_hook=unique)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---- the JSON document, field by field

def _check_document(document: dict, path: Path) -> tuple[dict, dict]:
    """The checkpoint's values, checked, and the tensors the file must hold: {name: (dtypes, shape)}, a
    None in a shape for a size the data decides."""
    try:
        return _fields(document)
    except _Refused as e:
        raise CheckpointError(f"{path}: {e}") from None


def _walk(document) -> None:
    """Depth, strings and numbers everywhere: nothing nested deeper than MAX_DEPTH, every string valid
    Unicode (no lone surrogates), every number finite and every integer within 64 bits."""
    stack = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            for key, item in value.items():
                _valid_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _valid_text(value)
        elif _is_int(value):
            if not -(1 << 64) < value < 1 << 64:
                raise _Refused(f"holds an integer beyond 64 bits ({_shown(value)})")
        elif isinstance(value, float) and not math.isfinite(value):
            raise _Refused("holds a number that is not finite")


def _valid_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(f"holds a string that is not valid Unicode ({_shown(text)})") from None


def _want(value, kind, where: str, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _Refused(f"{where} is {_shown(value)}, not {what}")
    return value


def _int(value, where: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise _Refused(f"{where} is {_shown(value)}, not a whole number from {low:,} to {high:,}")
    return value


def _number(value, where: str, low: float = -math.inf, high: float = math.inf, nonfinite: bool = False) -> float:
    """A number in [low, high]; with nonfinite also "nan", "inf" or "-inf" (how save writes them)."""
    if nonfinite and isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if not _is_number(value) or not low <= value <= high:
        raise _Refused(f"{where} is {_shown(value)}, not a number from {low:g} to {high:g}")
    return float(value)


def _text(value, where: str, longest: int = MAX_TEXT) -> str:
    _want(value, str, where, "a string")
    if len(value) > longest:
        raise _Refused(f"{where} is longer than {longest:,} characters")
    return value


def _keys(value, where: str, required: tuple, optional: tuple = ()) -> dict:
    _want(value, dict, where, "a JSON object")
    missing = [k for k in required if k not in value]
    if missing:
        raise _Refused(f"incomplete checkpoint ({where} lacks {missing[0]!r})")
    extra = [k for k in value if k not in required + optional]
    if extra:
        raise _Refused(f"{where} holds an unexpected entry {_shown(extra[0])}")
    return value


def _options(make, where: str):
    """make() with the options' errors (and any a parser lets through) as one-line refusals."""
    try:
        return make()
    except (MakemoreError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as e:
        raise _Refused(f"{where}: {_first_line(e)}") from None


def _fields(document: dict) -> tuple[dict, dict]:


    _walk(document)
    _keys(document, "the checkpoint", REQUIRED, OPTIONAL)
    ckpt = dict(format_version=document["format_version"],
                makemore_version=_text(document["makemore_version"], "makemore_version", 100))

    name = _text(document["model"], "model", 100)
    try:
        cls = get_model_class(name)
    except KeyError:
        raise _Refused(f"holds a {name!r} model, which this makemore does not have (it has "
                       f"{', '.join(MODELS)}); upgrade makemore") from None
    ckpt["model"] = name

    vocab = _text(document["vocab"], "vocab", MAX_VOCAB)
    if len(vocab) < 2 or len(set(vocab)) != len(vocab):
        raise _Refused("its vocabulary (vocab) is not the boundary and at least one more character, each once")
    ckpt["vocab"] = vocab

    config = _options(lambda: cls.config_from(document["config"], complete=True), f"its {name} config")
    ckpt["config"] = config_dict(config)
    expected = _options(lambda: cls.expected_tensors(config, len(vocab)),
                        f"its {name} config does not fit its vocabulary of {len(vocab)}")

    built = name in BUILT  # a mixture: made by makemore mix, never trained
    tconfig = None
    if built:
        if document["train"] != {}:
            raise _Refused(f"a {name} is not trained, yet its training settings (train) are not empty")
        ckpt["train"] = {}
    else:

        tconfig = _options(lambda: options.make(TrainConfig, document["train"], what="the training settings",
                                                complete=True), "its training settings")
        ckpt["train"] = _plain(tconfig)

    split = _keys(document["split"], "split", ("fractions", "seed"))
    fractions = split["fractions"]
    if (not isinstance(fractions, list) or len(fractions) != 3 or not all(_is_number(x) and x >= 0 for x in fractions)
            or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0):
        raise _Refused(f"its split fractions are {_shown(fractions)}, not three numbers >= 0 summing to 1")
    ckpt["split"] = dict(fractions=[float(x) for x in fractions],
                         seed=_int(split["seed"], "the split seed", -(1 << 64) + 1, (1 << 64) - 1))

    data = _keys(document["data"], "data", ("path", "fingerprint", "n_items"))
    data_path = _text(data["path"], "the data path")
    fingerprint = _text(data["fingerprint"], "the data fingerprint", 64)
    if not data_path or "\x00" in data_path or any(len(part.encode()) > 255 for part in data_path.split("/")):
        # no file that training read has such a path; os.stat would raise on it
        raise _Refused("the data path is empty, holds a NUL character or a name longer than 255 bytes")
    if not fingerprint or any(c not in "0123456789abcdef" for c in fingerprint):
        raise _Refused(f"the data fingerprint {_shown(fingerprint)} is not hexadecimal")
    n_items = _int(data["n_items"], "the data's number of items", 1, MAX_ITEMS)
    _check_split_sizes(ckpt["split"]["fractions"], n_items)
    ckpt["data"] = dict(path=data_path, fingerprint=fingerprint, n_items=n_items)

    ckpt["step"] = _int(document["step"], "step", 0, MAX_STEP)
    ckpt["best_dev_loss"] = _number(document["best_dev_loss"], "best_dev_loss", nonfinite=True)
    ckpt["metrics"] = _metrics(document["metrics"])

    if built != ("mix" in document):
        raise _Refused("a mixture and only a mixture records how it was mixed (mix)")
    if built:
        ckpt["mix"] = _mix(document["mix"])

    wanted = {f"state_dict.{key}": spec for key, spec in expected.items()}
    wanted["items"] = (torch.uint8, (None,), "optional")
    if "resume" in document:
        if tconfig is None or cls.counts:
            raise _Refused(f"a {name} is not trained step by step, yet the checkpoint holds a training state (resume)")
        ckpt["resume"], resume_wanted = _resume(document["resume"], cls, config, len(vocab), tconfig)
        wanted.update({f"resume.state_dict.{key}": spec for key, spec in expected.items()})
        wanted.update(resume_wanted)
    return ckpt, wanted


def _check_split_sizes(fractions: list, n_items: int) -> None:
    """Every split with a positive fraction gets an item, as when the checkpoint was trained."""

    for split, fraction, size in zip(SPLIT_NAMES, fractions, split_sizes(n_items, fractions)):
        if fraction > 0 and size == 0:
            raise _Refused(f"its {split} split of {n_items:,} items would be empty")


def _metrics(metrics) -> list:
    _want(metrics, list, "metrics", "a list")
    out = []
    for record in metrics:
        _want(record, dict, "a metrics record", "a JSON object")
        if "step" not in record or "train_loss" not in record:
            raise _Refused("a metrics record lacks its step or train_loss")
        checked = {}
        for key, value in record.items():
            checked[key] = (_int(value, "a metrics step", 0, MAX_STEP) if key == "step"
                            else _number(value, f"metrics' {_shown(key)}", nonfinite=True))
        out.append(checked)
    return out


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
    settings are compared with the loop's by check_resumable); and the tensors it needs."""
    _keys(resume, "resume", ("elapsed", "world_size", "optimizer"))
    out = dict(elapsed=_number(resume["elapsed"], "resume's elapsed", 0, 1e12),
               world_size=_int(resume["world_size"], "resume's world_size", 1, MAX_WORLD))
    optimizer = _keys(resume["optimizer"], "the optimizer state", ("state", "param_groups"))
    params = cls.expected_parameters(config, vocab_size)  # in the optimizer's order, without allocating
    groups = _want(optimizer["param_groups"], list, "the optimizer's param_groups", "a list")
    if len(groups) != 1:
        raise _Refused("the optimizer state does not hold exactly one parameter group")
    group = _want(groups[0], dict, "the optimizer's parameter group", "a JSON object")
    if group.get("params") != list(range(len(params))):
        raise _Refused(f"the optimizer state is not one of the model's {len(params)} parameters")
    # Which settings a group holds depends on torch's version: train --resume compares them with the
    # optimizer it makes (check_resumable); here each is a flag, a number or a few numbers.
    restored = {}
    for key, value in group.items():  # in the file's order, so that a checkpoint saved again is the same bytes
        where = f"the optimizer's {_shown(key)}"
        if key == "params":
            restored[key] = list(range(len(params)))
        elif value is None or isinstance(value, bool):
            restored[key] = value
        elif isinstance(value, list):
            if not 1 <= len(value) <= 4:
                raise _Refused(f"{where} is {_shown(value)}, not a few numbers")
            restored[key] = tuple(_number(v, where, 0, 0.999999999) for v in value)
        else:
            _number(value, where, 0, 1e12)
            restored[key] = value  # an int stays an int: the state round-trips exactly
    if restored.get("fused") and restored.get("foreach"):
        raise _Refused("the optimizer state asks for both fused and foreach steps")

    state = _want(optimizer["state"], dict, "the optimizer's state", "a JSON object")
    keys = _OPTIMIZER_STATE[tconfig.optimizer]
    plain = {}
    wanted = {"resume.rng": (torch.uint8, tuple(torch.Generator().get_state().shape))}
    for index, entry in state.items():
        if not index.isdigit() or index != str(int(index)) or int(index) >= len(params):
            raise _Refused(f"the optimizer state names a parameter {_shown(index)} the model does not have")
        _want(entry, dict, "an optimizer state entry", "a JSON object")
        for key, value in entry.items():
            if key != "momentum_buffer" or key not in keys or value is not None:
                raise _Refused(f"the optimizer state holds an unexpected {_shown(key)} = {_shown(value)}")
        plain[int(index)] = dict(entry)
        dtype, shape = params[int(index)]
        for key in keys:
            if key not in entry:
                spec = (torch.float32, torch.float64) if key == "step" else dtype
                wanted[f"resume.optimizer.state.{index}.{key}"] = (spec, () if key == "step" else shape)
    out["optimizer"] = dict(state=plain, param_groups=[restored])
    return out, wanted


# ---- the tensors

def _check_tensors(entries: dict, wanted: dict, path: Path) -> None:
    """Every tensor the checkpoint needs is there with its dtype and shape, and there is no other."""

    for name, spec in wanted.items():
        dtypes, shape = spec[0], spec[1]
        if name not in entries:
            if len(spec) > 2:  # optional
                continue
            raise CheckpointError(f"{path}: does not fit its model: it lacks the tensor {_shown(name)}")
        dtypes = dtypes if isinstance(dtypes, tuple) else (dtypes,)
        st_dtype, st_shape = entries[name][:2]
        if st_dtype not in _DTYPES:
            raise CheckpointError(f"{path}: does not fit its model: tensor {_shown(name)} is of dtype "
                                  f"{_shown(st_dtype)}")
        found = getattr(torch, _DTYPES[st_dtype][0])
        fits = len(st_shape) == len(shape) and all(want is None or want == got for want, got in zip(shape, st_shape))
        if found not in dtypes or not fits:
            shown = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise CheckpointError(f"{path}: does not fit its model: tensor {_shown(name)} is "
                                  f"{_DTYPES[st_dtype][0]} {tuple(st_shape)}, its config gives "
                                  f"{'/'.join(str(d).removeprefix('torch.') for d in dtypes)} {shown}")
    extra = [name for name in entries if name not in wanted]
    if extra:
        raise CheckpointError(f"{path}: does not fit its model: it holds an unexpected tensor {_shown(extra[0])}")


def _assemble(ckpt: dict, tensors: dict, path: Path) -> None:
    """Put the tensors into ckpt, checking what only their values show."""

    def refuse(why: str):
        raise CheckpointError(f"{path}: {why}")

    ckpt["state_dict"] = {name[len("state_dict."):]: t for name, t in tensors.items() if name.startswith("state_dict.")}
    items = tensors.get("items")
    ckpt["items"] = "" if items is None else _items(bytearray(_bytes_of(items)), ckpt, refuse)
    resume = ckpt.get("resume")
    if resume is not None:
        resume["state_dict"] = {name[len("resume.state_dict."):]: t for name, t in tensors.items()
                                if name.startswith("resume.state_dict.")}
        resume["rng"] = tensors["resume.rng"]
        try:
            torch.Generator().set_state(resume["rng"])
        except RuntimeError:
            refuse("its training state's random state (resume.rng) is not a generator state")
        state = resume["optimizer"]["state"]
        for name, t in tensors.items():
            if name.startswith("resume.optimizer.state."):
                index, key = name[len("resume.optimizer.state."):].split(".", 1)
                if key == "step" and not 0 <= float(t) < math.inf:
                    refuse("its optimizer state's step is not a finite number >= 0")
                state[int(index)][key] = t
    optimizer_tensors = {} if resume is None else {
        f"{index}.{key}": t for index, entry in resume["optimizer"]["state"].items()
        for key, t in entry.items() if isinstance(t, torch.Tensor)}
    for where, weights in (("weights", ckpt["state_dict"]), ("latest weights", (resume or {}).get("state_dict", {})),
                           ("optimizer state", optimizer_tensors)):
        for name, t in weights.items():
            if t.is_floating_point() and not _finite(t):
                refuse(f"its {where} hold a number that is not finite ({name})")


def _finite(t: torch.Tensor) -> bool:
    """Whether every number of t is finite. max |x| < inf is False for an inf and for a NaN: one reduction,
    faster than isfinite().all(); taken over slices of _FINITE_SLICE numbers, so that the temporary |x| of a
    large tensor stays small."""
    return all(bool(part.abs().max() < math.inf) for part in t.reshape(-1).split(_FINITE_SLICE) if part.numel())


def _items(raw: bytearray, ckpt: dict, refuse) -> str:
    """The training items, checked against the data's count and the vocabulary."""

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        refuse("its training items are not UTF-8 text")
    n = text.count("\n") + 1
    if n != ckpt["data"]["n_items"] or text.startswith("\n") or text.endswith("\n") or "\n\n" in text:
        refuse(f"it keeps {n:,} training items (or empty ones), but its data had {ckpt['data']['n_items']:,}")
    too_long = checks.longest_item(raw, text)
    if too_long is not None:
        refuse(f"its training item {too_long[0]:,} is {too_long[1]:,} characters long; items are at most "
               f"{MAX_ITEM_CHARS:,}")
    if text.isascii():  # counted in C: a set() of 25 million characters takes a second
        counts = torch.bincount(torch.frombuffer(raw, dtype=torch.uint8), minlength=128)
        chars = {chr(c) for c in counts.nonzero().flatten().tolist()}
    else:
        chars = set(text)
    if not chars <= set(ckpt["vocab"][1:]) | {"\n"} or ckpt["vocab"][0] in text.replace("\n", ""):
        refuse("its training items hold characters its vocabulary lacks")
    return text


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
        fits = (value is None or isinstance(value, bool)) if (ref is None or isinstance(ref, bool)) else (
            isinstance(value, tuple) == isinstance(ref, tuple) and (not isinstance(ref, tuple) or len(value) == len(ref)))
        fixed = isinstance(ref, bool) and key not in _OPTIONAL_FLAGS
        if not fits or (fixed and value != ref):
            raise CheckpointError(f"{path}: the optimizer's {key} is {_shown(value)}; makemore trains with "
                                  f"{_shown(ref)}; it cannot be resumed")
