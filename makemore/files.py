"""Writes that never leave a half-written file: a temporary file beside the target, then a rename."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from makemore.errors import OptionError, printable

# bytes of a checkpoint's name: with the longest suffix (.embeddings.png) and atomic_write's temporary-file
# decoration, every file a run writes stays within the 255 bytes file systems allow
MAX_NAME_BYTES = 200


def check_name(name: str) -> None:
    """OptionError unless name can name a checkpoint in its folder: a plain, visible file name of valid
    Unicode without control characters, at most MAX_NAME_BYTES bytes."""
    problem = None
    if name in ("", ".", ".."):
        problem = "is empty" if not name else "is not a file name"
    elif any(c in name for c in "/\\"):
        problem = "has a slash: a checkpoint's name is a file name, its folder is --out's"
    elif not name.isprintable():
        problem = "has a control character or a byte that is not UTF-8"
    elif name.startswith("."):
        problem = "starts with a dot, which would hide the checkpoint"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        shown = printable(name if len(name) <= 60 else name[:57] + "...")
        raise OptionError(f"--name '{shown}' {problem}; give a plain file name")


def check_not_inputs(outputs, inputs) -> None:
    """OptionError when a file a command would write is one of the files it reads (the data, a checkpoint):
    writing it would lose the user's file."""
    for written in outputs:
        for read in inputs:
            if read is not None and same_file(written, read):
                raise OptionError(f"{printable(written)} is a file this command reads; it would be written over: "
                                  "choose another output")


def same_file(a, b) -> bool:
    """Whether paths a and b name the same file (a link to it included); two paths of files not made yet
    are the same when they are the same path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the same path is the same file
        return os.path.abspath(a) == os.path.abspath(b)
    except ValueError:  # a NUL in a name: no file has it
        return False


def atomic_write(path: Path, write, by_path: bool = False) -> None:
    """Call write(file object) on a temporary file beside path, then rename it over path; with by_path,
    write(its path), for a writer that makes the file itself. The temporary lies in a folder whose name holds the
    process id, so that the next write in the folder removes those of a writer that was killed."""
    path = Path(path)
    remove_stale_temporaries(path)
    folder = tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        tmp = os.path.join(folder, path.name)
        if by_path:
            write(tmp)
        else:
            with open(tmp, "wb") as f:
                write(f)
        umask = os.umask(0)
        os.umask(umask)  # the only way to read it is to set it
        os.chmod(tmp, 0o666 & ~umask)  # a normal file's mode: safetensors makes its file private
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries in path's folder whose writer no longer runs, its neighbours' too (a resumed run
    writes a new name, so a killed run's temporary may never be written again)."""
    path = Path(path)
    for tmp in path.parent.glob(".*.tmp"):
        parts = tmp.name[:-len(".tmp")].rsplit(".", 2)  # .NAME.PID.RANDOM.tmp
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            try:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
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
