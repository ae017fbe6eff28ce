"""One self-describing checkpoint file per trained model: a plain dict of tensors and primitives.

It is loaded with torch.load(weights_only=True), so a checkpoint can never run code, and written
atomically (a temporary file in the same folder, then a rename), so the file on disk is always complete.
"""
from __future__ import annotations

import glob
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch

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
    ckpt = dict(ckpt, format_version=FORMAT_VERSION)
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is a CheckpointError with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train one first with: makemore train")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint")
    damaged = f"{path}: not a readable checkpoint (damaged, truncated, or not a makemore checkpoint at all)"
    # torch.save writes a zip archive with a CRC per member; torch.load does not check them, so a flipped
    # bit in the weights would load silently. Checking them first catches damage of any kind.
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise CheckpointError(damaged) from None
    if bad_member is not None:
        raise CheckpointError(f"{path}: damaged (checksum mismatch in {bad_member}); train again or restore a copy")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load: it holds Python objects{what}, not only tensors and "
                              "plain values, and loading it could run code") from None
    except Exception:  # noqa: BLE001 - a damaged archive can make torch.load raise almost anything
        raise CheckpointError(damaged) from None
    check(ckpt, path)
    return ckpt


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
