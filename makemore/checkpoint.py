"""The checkpoint format: one safetensors file per trained model (no pickle: loading it cannot run code), its
tensors beside one JSON document in __metadata__ that holds the rest, and a SHA-256 of both (the README's
"Checkpoints" section has the layout). save() checks nothing; load() reads what makemore.checkpoint_checks passes."""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import hmac
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from makemore import __version__
from makemore import checkpoint_checks as checks
from makemore.errors import CheckpointError
from makemore.files import atomic_write

# 1 was a torch.save (zip + pickle) archive; 3 records every training setting (decay came after 2)
FORMAT_VERSION = 3
SUFFIX = ".safetensors"
LATEST = "latest"  # a file in the output folder naming the checkpoint trained last
METADATA_KEY = "makemore"  # __metadata__ key of the JSON document
# a U8 tensor of 32 bytes: SHA-256 of the document and every other tensor. A tensor, not a second metadata key:
# safetensors writes __metadata__ in a random order, and one key keeps a checkpoint's bytes reproducible
DIGEST = "sha256"
# safetensors dtype name -> torch dtype
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


# ------------------------------------------------------------------------------------------------ writing

def build(*, model: str, config, vocab: str, train, split: dict, data: dict, items, state_dict: dict, step: int,
          best_dev_loss: float, metrics: list, resume: dict | None = None, mix: dict | None = None,
          labels: dict | None = None, item_labels: list[int] | None = None,
          time_budget: dict | None = None) -> dict:
    """The checkpoint as a dict, as load() returns it. config and train may be dataclasses; items a list or
    the items joined by newlines; tensors on any device. resume, for `train --resume`: state_dict (the latest
    weights), optimizer (torch.optim's state_dict()), rng (the batch generator's state), elapsed, world_size.
    time_budget: how a time budget set the steps (makemore.budget.Budget.record)."""
    ckpt = dict(
        format_version=FORMAT_VERSION, makemore_version=__version__, model=model, config=_plain(config),
        vocab=vocab, train=_plain(train), split=dict(fractions=[float(f) for f in split["fractions"]],
                                                       seed=int(split["seed"])),
        data=dict(path=str(data["path"]), fingerprint=str(data["fingerprint"]), n_items=int(data["n_items"])),
        items=items if isinstance(items, str) else "\n".join(items),
        state_dict=state_dict, step=int(step), best_dev_loss=float(best_dev_loss),
        metrics=[dict(record) for record in metrics],
    )
    if resume is not None:
        ckpt["resume"] = dict(state_dict=resume["state_dict"], optimizer=resume["optimizer"], rng=resume["rng"],
                              elapsed=float(resume["elapsed"]),
                              world_size=int(resume.get("world_size", 1)))
    if mix is not None:
        ckpt["mix"] = _plain(mix)
    if labels is not None:  # a labelled model: its label names, their training counts, each kept item's label
        ckpt["labels"] = dict(names=list(labels["names"]), counts=[int(c) for c in labels["counts"]])
        ckpt["item_labels"] = list(item_labels) if item_labels is not None else None
    if time_budget is not None:
        ckpt["time_budget"] = _plain(time_budget)
    return ckpt


def _plain(value):
    """Dataclasses as dicts, tuples as lists and floats that are not finite as "nan", "inf" or "-inf", all the way
    down: the values JSON holds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def save(ckpt: dict, path: Path) -> None:
    """Write ckpt (as build() makes it) to path atomically, as a safetensors file. What it writes is
    checked when it is loaded, never here: a test checks that it loads."""
    document, tensors = _to_file(ckpt)
    text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    tensors[DIGEST] = torch.frombuffer(bytearray.fromhex(digest(text, tensors)), dtype=torch.uint8)
    # written straight to the file: serialising to bytes first held the whole file twice more in memory
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: text}), by_path=True)


def _to_file(ckpt: dict) -> tuple[dict, dict]:
    """The JSON document and the named tensors that hold ckpt."""
    document = _plain({key: ckpt[key] for key in checks.REQUIRED})
    document["format_version"] = FORMAT_VERSION
    tensors = {f"state_dict.{name}": t for name, t in ckpt["state_dict"].items()}
    if ckpt.get("items"):
        tensors["items"] = torch.frombuffer(bytearray(ckpt["items"].encode("utf-8")), dtype=torch.uint8)
    for key in ("mix", "time_budget", "labels"):
        if key in ckpt:
            document[key] = _plain(ckpt[key])
    if "labels" in ckpt and ckpt.get("items") and ckpt.get("item_labels") is not None:
        tensors["item_labels"] = torch.tensor(ckpt["item_labels"], dtype=torch.uint8)
    if ckpt.get("resume") is not None:
        r, state = ckpt["resume"], ckpt["resume"]["optimizer"]["state"]
        # the optimizer state's tensors as tensors of the file, the rest (SGD's None) in the document
        tensors.update({f"resume.optimizer.state.{index}.{key}": value for index, entry in state.items()
                        for key, value in entry.items() if isinstance(value, torch.Tensor)})
        plain = {str(index): {key: value for key, value in entry.items() if not isinstance(value, torch.Tensor)}
                 for index, entry in state.items()}
        document["resume"] = dict(elapsed=r["elapsed"], world_size=r.get("world_size", 1), optimizer=dict(
            state=plain, param_groups=_plain(r["optimizer"]["param_groups"])))
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


def _bytes_of(t):
    """A contiguous CPU tensor's bytes, without a copy (t must stay alive while they are used)."""
    n = t.numel() * t.element_size()
    return (ctypes.c_char * n).from_address(t.data_ptr()) if n else b""


def digest(text: str, tensors: dict) -> str:
    """SHA-256 of the JSON document and of every tensor in name order: its name, dtype and shape, then its
    bytes, each part preceded by its length (8 bytes, little-endian). tensors: {name: tensor}, or {name:
    (safetensors dtype name, shape, bytes)}. It does not depend on where the tensors lie in the file."""
    h = hashlib.sha256(b"makemore checkpoint\x00")
    _part(h, text.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name]
        dtype, shape, data = (_NAMES[t.dtype], t.shape, _bytes_of(t)) if isinstance(t, torch.Tensor) else t
        _part(h, f"{name}\x00{dtype}\x00{','.join(map(str, shape))}".encode("utf-8"))
        _part(h, data)
    return h.hexdigest()


def _part(h, data) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


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
        if "/" not in named and (out_dir / named).is_file():  # "", "." and ".." are folders, a NUL no file's
            return out_dir / named
    found = sorted(out_dir.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime) if out_dir.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {out_dir}/; train one first with: makemore train")
    return found[-1]


# ------------------------------------------------------------------------------------------------ reading

def load(path: str | Path) -> dict:
    """Read and check a checkpoint: the dict build() makes, config and train as plain dicts, items "" when the
    file keeps none, the optimizer state's keys ints. Every failure is a CheckpointError with a one-line message."""
    path = Path(path)
    try:
        return _read(path)
    except checks.Refused as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read(path: Path) -> dict:
    checks.file(path)
    try:
        # safetensors checks the header (its JSON, dtypes, shapes, byte ranges that tile the file exactly) when
        # it opens the file, and maps it instead of reading it
        with safe_open(path, framework="pt") as f:
            text = _document_text(f.metadata())
            document = checks.parse(text, FORMAT_VERSION)
            entries = {}
            for name in f.keys():
                part = f.get_slice(name)
                entries[name] = (_DTYPES.get(part.get_dtype(), part.get_dtype()), tuple(part.get_shape()))
            if entries.pop(DIGEST, None) != (torch.uint8, (32,)):
                raise checks.damaged(f"no checksum (a {DIGEST} tensor of 32 bytes)")
            if "items" in entries:
                checks.items_size(math.prod(entries["items"][1]))
            ckpt, wanted = checks.fields(document)
            checks.tensors(entries, wanted)
            tensors = {name: f.get_tensor(name) for name in entries}
            stored = bytes(f.get_tensor(DIGEST).tolist()).hex()
    except SafetensorError as e:
        raise checks.damaged(checks.first_line(e)) from None
    except OSError as e:
        raise checks.Refused(f"cannot read it ({e.strerror or checks.first_line(e)})") from None
    except (RuntimeError, MemoryError) as e:  # the file could not be mapped: more than this process may use
        raise checks.Refused(f"does not fit in the memory this process may use ({checks.first_line(e)})") from None
    if not hmac.compare_digest(digest(text, tensors), stored):
        raise checks.Refused("damaged (its contents do not match their checksum); train again or restore a copy")
    _assemble(ckpt, tensors)
    checks.values(ckpt)
    return ckpt


def _document_text(metadata) -> str:
    if not isinstance(metadata, dict) or not isinstance(metadata.get(METADATA_KEY), str):
        raise checks.Refused("a safetensors file without makemore's metadata, so not a makemore checkpoint")
    if set(metadata) != {METADATA_KEY}:
        raise checks.damaged("unexpected metadata beside makemore's")
    return metadata[METADATA_KEY]


def _assemble(ckpt: dict, tensors: dict) -> None:
    """Put the tensors, by their names in the file, where build() has them."""
    def under(prefix: str) -> dict:
        return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}

    ckpt["state_dict"] = under("state_dict.")
    items = tensors.get("items")
    ckpt["items"] = "" if items is None else checks.items(_bytes_of(items), ckpt)
    if "labels" in ckpt:
        ckpt["item_labels"] = checks.item_labels(tensors.get("item_labels"), ckpt)
    if "resume" in ckpt:
        ckpt["resume"]["state_dict"] = under("resume.state_dict.")
        ckpt["resume"]["rng"] = tensors["resume.rng"]
        for name, t in under("resume.optimizer.state.").items():
            index, key = name.split(".", 1)
            ckpt["resume"]["optimizer"]["state"][int(index)][key] = t
