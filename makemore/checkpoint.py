"""One self-describing checkpoint file per trained model: a plain dict of tensors and primitives.

It is loaded with torch.load(weights_only=True), so a checkpoint can never run code, and written
atomically (a temporary file in the same folder, then a rename), so the file on disk is always complete.
read_without_torch reads the same file as plain Python numbers, for sampling a few items without the
seconds that importing torch takes; torch is imported only by the functions that need it.
"""
from __future__ import annotations

import glob
import io
import os
import pickle
import re
import sys
import tempfile
import zipfile
from array import array
from collections import OrderedDict
from pathlib import Path

from makemore.errors import CheckpointError

FORMAT_VERSION = 1
LATEST = "latest"  # a file in the output folder naming the checkpoint trained last


def atomic_write(path: Path, write) -> None:
    """Call write(file object) on a temporary file beside path, then rename it over path.

    The temporary file's name holds the writer's process id, so that temporaries left by a writer that
    was killed (SIGKILL, power loss) are recognised and removed by the next write of the same path.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of path whose writing process no longer exists."""
    path = Path(path)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass  # another writer removed it first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(ckpt: dict, path: Path) -> None:
    import torch

    ckpt = dict(ckpt, format_version=FORMAT_VERSION)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is a CheckpointError with a one-line message."""
    import torch

    path = Path(path)
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load: it holds Python objects{what}, not only tensors and "
                              "plain values, and loading it could run code") from None
    except Exception:  # noqa: BLE001 - a damaged archive can make torch.load raise almost anything
        raise CheckpointError(_damaged(path)) from None
    check(ckpt, path)
    return ckpt


def _damaged(path: Path) -> str:
    return f"{path}: not a readable checkpoint (damaged, truncated, or not a makemore checkpoint at all)"


def _check_archive(path: Path) -> None:
    """Raise CheckpointError unless path is a zip archive whose members all match their checksums."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train one first with: makemore train")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint")
    # torch.save writes a zip archive with a CRC per member; torch.load does not check them, so a flipped
    # bit in the weights would load silently. Checking them first catches damage of any kind.
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise CheckpointError(_damaged(path)) from None
    if bad_member is not None:
        raise CheckpointError(f"{path}: damaged (checksum mismatch in {bad_member}); train again or restore a copy")


class Array:
    """A tensor read without torch: its numbers as a flat list, row-major, and its shape."""

    def __init__(self, values: list, shape: tuple):
        self.values, self.shape = values, shape

    def rows(self) -> list[list]:
        """A 2-D array as a list of rows."""
        n_rows, n_cols = self.shape
        return [self.values[i * n_cols:(i + 1) * n_cols] for i in range(n_rows)]


# the storages torch.save writes, as the array module's type codes (all but bool keep their meaning)
_TYPECODES = dict(FloatStorage="f", DoubleStorage="d", LongStorage="q", IntStorage="i", ShortStorage="h",
                  CharStorage="b", ByteStorage="B", BoolStorage="B")


class _Tensor:
    """A tensor as the pickle describes it; made into an Array only when asked (most are never used)."""

    def __init__(self, storage, offset, shape, stride, *rest):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def read(self, archive: zipfile.ZipFile, prefix: str, big_endian: bool) -> Array:
        kind, key = self.storage
        numbers = array(_TYPECODES[kind])
        numbers.frombytes(archive.read(f"{prefix}data/{key}"))
        if big_endian != (sys.byteorder == "big"):
            numbers.byteswap()
        values = numbers.tolist()
        n = 1
        for size in self.shape:
            n *= size
        if _contiguous(self.shape, self.stride):
            return Array(values[self.offset:self.offset + n], self.shape)
        places = [self.offset]  # element (i, j, ...) sits at offset + i * stride[0] + j * stride[1] + ...
        for size, step in zip(self.shape, self.stride):
            places = [p + j * step for p in places for j in range(size)]
        return Array([values[p] for p in places], self.shape)


def _contiguous(shape: tuple, stride: tuple) -> bool:
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride)):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


class _Unpickler(pickle.Unpickler):
    """Builds only what torch.load(weights_only=True) would for a makemore checkpoint; anything else is
    refused, so reading a checkpoint can never run code."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if module == "torch" and name in _TYPECODES:
            return name
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid):
        kind, key = pid[1], pid[2]  # ("storage", type, key, location, numel)
        if pid[0] != "storage" or kind not in _TYPECODES:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        return kind, key


def read_without_torch(path: str | Path) -> dict | None:
    """The checkpoint with the tensors of its state_dict as Arrays, read without importing torch.

    Raises CheckpointError as load does for a file that is missing, damaged or not a checkpoint; returns
    None for a readable file that only torch can read (an object this reader does not know), so that the
    caller can fall back to load, which says why when it refuses the file. Tensors outside the
    state_dict (the training state kept for --resume) are left unread, as None.
    """
    path = Path(path)
    _check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                return None
            prefix = pickles[0][:-len("data.pkl")]
            big_endian = prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") == b"big"
            ckpt = _Unpickler(io.BytesIO(archive.read(pickles[0]))).load()
            if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
                ckpt["state_dict"] = {name: t.read(archive, prefix, big_endian) if isinstance(t, _Tensor) else t
                                      for name, t in ckpt["state_dict"].items()}
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, IndexError, AttributeError, EOFError):
        return None
    ckpt = _drop_tensors(ckpt)
    check(ckpt, path)
    return ckpt


def _drop_tensors(obj):
    """Unread tensors (outside the state_dict) as None, in plain dicts and lists."""
    if isinstance(obj, _Tensor):
        return None
    if isinstance(obj, dict):
        return {key: _drop_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_drop_tensors(value) for value in obj)
    return obj


# What the rest of makemore reads from a checkpoint, and the type each must have.
REQUIRED = dict(model=str, config=dict, vocab=str, state_dict=dict, train=dict, split=dict, data=dict, step=int)


def check(ckpt, path: Path) -> None:
    """Raise CheckpointError unless ckpt is a complete checkpoint this version of makemore can read."""
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path}: not a makemore checkpoint")
    version = ckpt["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: not a makemore checkpoint (format version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer makemore (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade makemore"
        )
    for key, kind in REQUIRED.items():
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: incomplete checkpoint ({key!r} is missing or not a {kind.__name__})")
    from makemore.models import BUILT_NAMES, MODEL_NAMES

    if ckpt["model"] not in MODEL_NAMES + BUILT_NAMES:
        raise CheckpointError(f"{path}: holds a {ckpt['model']!r} model, which this makemore does not have "
                              f"(it has {', '.join(MODEL_NAMES)}); upgrade makemore")


def check_resumable(ckpt: dict, path) -> None:
    """Raise CheckpointError unless ckpt holds the training state that `train --resume` needs."""
    import torch

    resume = ckpt.get("resume")
    if not isinstance(resume, dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    wanted = dict(state_dict=dict, optimizer=dict, rng=torch.Tensor, elapsed=(int, float))
    for key, kind in wanted.items():
        if not isinstance(resume.get(key), kind):
            raise CheckpointError(f"{path}: incomplete training state ({key!r}); it cannot be resumed")
    if not isinstance(ckpt.get("best_dev_loss"), float) or not isinstance(ckpt.get("metrics"), list):
        raise CheckpointError(f"{path}: incomplete training state; it cannot be resumed")


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
        if named and "/" not in named and (out_dir / named).is_file():
            return out_dir / named
    found = sorted(out_dir.glob("*.pt"), key=lambda p: p.stat().st_mtime) if out_dir.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {out_dir}/; train one first with: makemore train")
    return found[-1]
