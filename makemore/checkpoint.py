"""One self-describing checkpoint file per trained model: a plain dict of tensors and primitives.

It is loaded with torch.load(weights_only=True), so a checkpoint can never run code, and written
atomically (a temporary file in the same folder, then a rename), so the file on disk is always complete.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from makemore.errors import CheckpointError

FORMAT_VERSION = 1
LATEST = "latest"  # a file in the output folder naming the checkpoint trained last


def atomic_write(path: Path, write) -> None:
    """Call write(file object) on a temporary file beside path, then rename it over path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(ckpt: dict, path: Path) -> None:
    ckpt = dict(ckpt, format_version=FORMAT_VERSION)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is a CheckpointError with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train one first with: makemore train")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load: not a plain checkpoint ({first[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged or truncated: {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a makemore checkpoint")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer makemore (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade makemore"
        )
    return ckpt


def write_latest(out_dir: Path, path: Path) -> None:
    atomic_write(Path(out_dir) / LATEST, lambda f: f.write(Path(path).name.encode() + b"\n"))


def latest(out_dir: str | Path) -> Path:
    """The checkpoint trained last in out_dir."""
    out_dir = Path(out_dir)
    pointer = out_dir / LATEST
    if pointer.is_file():
        return out_dir / pointer.read_text(encoding="utf-8").strip()
    found = sorted(out_dir.glob("*.pt"), key=lambda p: p.stat().st_mtime) if out_dir.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {out_dir}/; train one first with: makemore train")
    return found[-1]
