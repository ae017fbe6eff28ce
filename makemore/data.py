"""Items, vocabulary, the train/dev/test split, and a data file read once (Data), without importing torch (only
characters() and the memory check use it); the tensors built from them are makemore.dataset's."""
from __future__ import annotations

import hashlib
import math
import os
import random
import stat
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from makemore.errors import DataError, VocabularyError, printable

BOUNDARY = "."
FALLBACK_BOUNDARY = "\n"  # items are lines, so a newline is never part of one: the boundary when the data has '.'
MAX_VOCAB = 10_000  # characters, boundary included: sampling allocates 256 x V numbers, a counting model V^2
# characters of one item: one stray megabyte-long line must not make every step of every model that wide
MAX_ITEM_CHARS = 1000
# bytes of a data file: every checkpoint keeps the items, three times over while saving (BENCHMARKS.md)
MAX_DATA_BYTES = 64 << 20
# what reading a data file holds at its peak, measured: bytes per byte of the file, and per line
READ_BYTES_PER_BYTE = 5
READ_BYTES_PER_LINE = 100
SPLIT_NAMES = ("train", "dev", "test")
DEFAULT_SPLITS = (0.8, 0.1, 0.1)
DEFAULT_SPLIT_SEED = 42


def default_data_path() -> Path:
    """names.txt in the working directory if there is one, else the copy shipped with the package."""
    here = Path("names.txt")
    if here.is_file():
        return here
    shipped = resources.files("makemore") / "names.txt"
    if shipped.is_file():
        return Path(str(shipped))
    # an editable install: the package sits beside the repository's names.txt
    return Path(__file__).resolve().parent.parent / "names.txt"


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a data file. Refused unread: a path that is not a regular file (a FIFO would block, a device
    never end), a file of more than MAX_DATA_BYTES (nor is more read of one that grows meanwhile) and one whose
    reading would not fit in memory."""
    path = Path(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    mode, size = info.st_mode, info.st_size
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory, not a text file")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: is not a regular file (a FIFO, socket or device); give a text file")
    if size > MAX_DATA_BYTES:
        _too_large(path, size)
    check_reading_fits(path, size)
    try:
        with open(path, "rb") as f:
            raw = f.read(size + 1)  # not a buffer of the limit's size: one more copy at the peak
            if len(raw) > size:
                raw += f.read(MAX_DATA_BYTES + 1 - len(raw))
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None
    if len(raw) > MAX_DATA_BYTES:
        _too_large(path, len(raw))
    return raw


def _too_large(path: Path, size: int):
    raise DataError(f"{path}: {_megabytes(size)}; makemore reads data files of at most {_megabytes(MAX_DATA_BYTES)} "
                    "(every checkpoint keeps the items): train on a sample of its lines")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def check_reading_fits(path: Path, size: int, lines: int | None = None, held: int = 0) -> None:
    """A DataError when reading a file of size bytes (and lines lines, once known) would not fit in the memory
    this process may still allocate, held bytes of it being allocated already."""
    import torch  # with makemore.memory: only when a data file is read

    from makemore import memory

    need = READ_BYTES_PER_BYTE * size + READ_BYTES_PER_LINE * (lines or 0) - held
    free = memory.available(torch.device("cpu"))
    if need > free:
        raise DataError(f"{path}: reading its {_megabytes(size)}"
                        + (f" of {lines:,} lines" if lines else "")
                        + f" needs about {memory.gb(need)} of memory but this process has {memory.gb(free)} "
                        "available; train on a sample of its lines")


def recordable(path: Path) -> str:
    """The data file's path as a checkpoint records it: absolute, with escapes for control characters and bytes
    that are not UTF-8."""
    return printable(os.path.abspath(path))


def recorded_status(path: str, fingerprint: str) -> str:
    """Whether the data file a checkpoint records is still the one it was trained on: "unchanged", "changed",
    "missing" or "unreadable". The path is untrusted: only a regular file of at most MAX_DATA_BYTES is read,
    and only hashed (a larger one cannot be the data a checkpoint keeps: "changed" unread)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    h = hashlib.sha256()
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):  # a directory, FIFO or device is never read
            return "unreadable"
        if found.st_size > MAX_DATA_BYTES:
            return "changed"
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > MAX_DATA_BYTES:  # it grew while being read
                return "changed"
            h.update(chunk)
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
    return "unchanged" if h.hexdigest()[:len(fingerprint)] == fingerprint and fingerprint else "changed"


def fingerprint_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def fingerprint(path: str | Path) -> str:
    """A short content hash of the data file, kept in checkpoints to notice a changed file."""
    return fingerprint_bytes(read_bytes(path))


def parse_items(raw: bytes, name: str) -> list[str]:
    """Decode UTF-8 (a byte-order mark is allowed), one item per line (LF, CRLF or CR), stripped, blank lines
    dropped; in NFC form, so that an accented letter is one character however the file spelt it."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: UTF-16 text; convert it to UTF-8 first, e.g. iconv -f UTF-16 -t UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{name}: binary content (a NUL byte at offset {nul}); expected a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not valid UTF-8 (at byte offset {e.start:,}); "
                        "convert it first, e.g. iconv -t UTF-8") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    items = [unicodedata.normalize("NFC", line.strip()) for line in lines]
    too_long = first_too_long("\n".join(items))
    if too_long:
        raise DataError(f"{name}: line {too_long[0]:,} is {too_long[1]:,} characters long; makemore models items "
                        f"of at most {MAX_ITEM_CHARS:,} characters (one per line): split or drop that line")
    items = [item for item in items if item]
    if not items:
        what = "is empty" if not text.strip("\n\r\ufeff") else "has only blank lines"
        raise DataError(f"{name}: {what}; expected one item per line")
    return items


def first_too_long(text: str) -> tuple[int, int] | None:
    """(line number from 1, length) of the first line of text longer than MAX_ITEM_CHARS, or None."""
    # a newline in every stretch of half that many characters keeps every line shorter: found without making a
    # string of each line (in C, but for one call per stretch)
    stretch = MAX_ITEM_CHARS // 2
    if all(text.find("\n", start, start + stretch) >= 0 for start in range(0, len(text) - stretch + 1, stretch)):
        return None
    lengths = map(len, text.split("\n"))
    return next(((n, length) for n, length in enumerate(lengths, 1) if length > MAX_ITEM_CHARS), None)


def characters(text: str) -> set[str]:
    """The distinct characters of text; an ASCII text's counted in C, about 10x faster than set(text)."""
    if not text or not text.isascii():
        return set(text)
    import torch

    counts = torch.bincount(torch.frombuffer(bytearray(text, "ascii"), dtype=torch.uint8), minlength=128)
    return {chr(c) for c in counts.nonzero().flatten().tolist()}


def read_items(path: str | Path) -> list[str]:
    return parse_items(read_bytes(path), str(path))


def read_items_file(path: str | Path) -> list[str]:
    """The items of a file such as --exclude's, one per line; an empty file has none."""
    raw = read_bytes(path)
    if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
        return []
    return parse_items(raw, str(path))


class Vocab:
    """Characters <-> integer ids. Index 0 is the boundary token that starts and ends every item."""

    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_items(cls, items: list[str]) -> "Vocab":
        charset = characters("".join(items))
        boundary = FALLBACK_BOUNDARY if BOUNDARY in charset else BOUNDARY
        if len(charset) + 1 > MAX_VOCAB:
            raise DataError(f"the data has {len(charset):,} distinct characters; makemore models at most "
                            f"{MAX_VOCAB - 1:,}")
        return cls(boundary + "".join(sorted(charset)))

    @property
    def boundary(self) -> str:
        return self.chars[0]

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of text outside the vocabulary (the boundary included: it is not a character)."""
        return sorted(c for c in characters(text) if self.stoi.get(c, 0) == 0)

    def check_items(self, items: list[str], what: str) -> None:
        """A VocabularyError naming where (item and character number, never which character: the items may come
        from a file named only inside a checkpoint) the first character outside the vocabulary is."""
        if not self.unknown("".join(items)):  # the common case, at the speed of a set
            return
        for number, item in enumerate(items, 1):
            column = next((i for i, c in enumerate(item, 1) if self.stoi.get(c, 0) == 0), None)
            if column is not None:
                raise VocabularyError(f"{what}: item {number:,}, character {column}, is not in the model's "
                                      "vocabulary; use data of the characters it was trained on")

    def encode(self, text: str) -> list[int]:
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def show(self, char: str) -> str:
        """How a character is printed: the boundary as '.', or '\\n' when that is the boundary."""
        return "\\n" if char == "\n" else char


def split_items(items: list[str], splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED,
                name: str = "the data") -> dict[str, list[str]]:
    """Shuffle with the seed, then cut by fractions exactly as the lecture does (random.Random(seed).shuffle
    gives the order of its random.seed(seed); random.shuffle)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    sizes = split_sizes(len(items), splits)
    for split, frac, size in zip(SPLIT_NAMES, splits, sizes):
        if frac > 0 and size == 0:
            raise DataError(f"{name}: the {split} split would be empty ({len(items)} items at --splits "
                            f"{','.join(f'{f:g}' for f in splits)}); it needs at least {min_items(splits)} items")
    n1, n2 = sizes[0], sizes[0] + sizes[1]
    return {"train": items[:n1], "dev": items[n1:n2], "test": items[n2:]}


def split_sizes(n: int, splits) -> tuple[int, int, int]:
    n1 = int(splits[0] * n)
    # float round-off must not leave a stray item in an empty test split
    n2 = n if splits[2] == 0 else int((splits[0] + splits[1]) * n)
    return n1, n2 - n1, n - n2


def min_items(splits) -> int:
    """The fewest items for which every split with a positive fraction gets at least one item."""
    def enough(n: int) -> bool:
        return all(size > 0 for frac, size in zip(splits, split_sizes(n, splits)) if frac > 0)

    # from n >= 2/f on, every fraction f gets an item; below, a count that works may be followed by one that
    # does not, so the answer is one past the largest that does not (a tiny fraction: the bound itself)
    bound = math.ceil(2 / min(f for f in splits if f > 0)) + 1
    if bound > 10**6:
        return bound
    return next((n + 1 for n in range(bound - 1, 0, -1) if not enough(n)), 1)


@dataclass
class Data:
    """A data file read once: its items, fingerprint and split."""

    path: Path
    items: list[str]
    fingerprint: str

    @classmethod
    def read(cls, path: str | Path | None = None) -> "Data":
        path = Path(path) if path is not None else default_data_path()
        raw = read_bytes(path)
        # lines end at LF, CRLF or CR: counting both bytes errs towards more lines
        check_reading_fits(path, len(raw), raw.count(b"\n") + raw.count(b"\r") + 1, held=len(raw))
        return cls(path, parse_items(raw, str(path)), fingerprint_bytes(raw))

    def split(self, splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list[str]]:
        return split_items(self.items, splits, seed, str(self.path))
