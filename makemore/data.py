"""Items, vocabulary, the train/dev/test split, and a data file read once (Data), without importing torch (only
characters() and the memory check use it); the tensors built from them are makemore.dataset's."""
from __future__ import annotations

import csv
import hashlib
import io
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
# labels of a labelled file: classifying an item scores it under each, and their ids fit in a byte
MAX_LABELS = 256
MAX_LABEL_CHARS = 100
# entries of a labelled folder listed at most: its LABEL.txt files and whatever else it holds
MAX_FOLDER_ENTRIES = 65536
SPLIT_NAMES = ("train", "dev", "test")
DEFAULT_SPLITS = (0.8, 0.1, 0.1)
DEFAULT_SPLIT_SEED = 42
# how a path a checkpoint names is opened to be hashed: without blocking (a FIFO), closed in any child
_UNTRUSTED_OPEN = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


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
    and only hashed (a larger one cannot be the data a checkpoint keeps: "changed" unread); a folder (a labelled
    one of LABEL.txt files) is hashed as Data.read hashed it, its files under the same bounds."""
    try:
        fd = os.open(path, _UNTRUSTED_OPEN)
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    h = hashlib.sha256()
    try:
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            return _recorded_folder_status(Path(path), fingerprint)
        if not stat.S_ISREG(found.st_mode):  # a FIFO or device is never read
            return "unreadable"
        if _hash_within(fd, found, h, MAX_DATA_BYTES) is None:
            return "changed"
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
    return "unchanged" if h.hexdigest()[:len(fingerprint)] == fingerprint and fingerprint else "changed"


def _hash_within(fd: int, found: os.stat_result, h, budget: int) -> int | None:
    """Hash a regular file's bytes into h, reading at most budget of them: its size, or None when it holds more
    (then it cannot be data a checkpoint keeps)."""
    if found.st_size > budget:
        return None
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > budget:  # it grew while being read
            return None
        h.update(chunk)
    return total


def _recorded_folder_status(path: Path, fingerprint: str) -> str:
    """recorded_status of a folder: its .txt files hashed in turn as _read_folder hashes them, at most
    MAX_LABELS of them and MAX_DATA_BYTES in all; any that is not a regular file could not have been read."""
    try:
        files = _label_files(path)
    except DataError:
        return "unreadable"
    if not files or len(files) > MAX_LABELS:
        return "changed"
    h, budget = hashlib.sha256(), MAX_DATA_BYTES
    for file in files:
        try:
            fd = os.open(file, _UNTRUSTED_OPEN)
        except (OSError, ValueError):
            return "changed"
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                return "changed"
            h.update(_folder_entry(file))
            size = _hash_within(fd, found, h, budget)
            if size is None:
                return "changed"
            budget -= size
            h.update(b"\0")
        except OSError:
            return "unreadable"
        finally:
            os.close(fd)
    return "unchanged" if h.hexdigest()[:len(fingerprint)] == fingerprint and fingerprint else "changed"


def _label_files(path: Path) -> list[Path]:
    """The .txt files of a labelled folder, sorted: one per label; a folder of more than MAX_FOLDER_ENTRIES
    entries is refused before all are listed (a checkpoint may name any folder)."""
    files = []
    try:
        with os.scandir(path) as entries:
            for i, entry in enumerate(entries):
                if i == MAX_FOLDER_ENTRIES:
                    raise DataError(f"{path}: holds more than {MAX_FOLDER_ENTRIES:,} entries; with --labels a folder "
                                    "holds one LABEL.txt file per label")
                if entry.name.endswith(".txt") and entry.name != ".txt":
                    files.append(path / entry.name)
    except OSError as e:
        raise DataError(f"{path}: cannot list the folder ({e.strerror})") from None
    return sorted(files)


def _folder_entry(file: Path) -> bytes:
    """What a folder's fingerprint hashes before each file's bytes (a NUL after them): its name and a NUL."""
    return file.name.encode("utf-8", "surrogateescape") + b"\0"


def fingerprint_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def fingerprint(path: str | Path) -> str:
    """A short content hash of the data file, kept in checkpoints to notice a changed file."""
    return fingerprint_bytes(read_bytes(path))


def decode_lines(raw: bytes, name: str) -> list[str]:
    """Decode UTF-8 (a byte-order mark is allowed) into lines (LF, CRLF or CR), each in NFC form, so that an
    accented letter is one character however the file spelt it."""
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
    return [unicodedata.normalize("NFC", line) for line in lines]


def check_lengths(items: list[str], name: str, lines: list[int] | None = None) -> None:
    """A DataError naming the first item longer than MAX_ITEM_CHARS (by its line: lines[i], else i + 1)."""
    too_long = first_too_long("\n".join(items))
    if too_long:
        line = lines[too_long[0] - 1] if lines else too_long[0]
        raise DataError(f"{name}: line {line:,} is {too_long[1]:,} characters long; makemore models items "
                        f"of at most {MAX_ITEM_CHARS:,} characters (one per line): split or drop that line")


def parse_items(raw: bytes, name: str) -> list[str]:
    """One item per line, stripped (decode_lines), blank lines dropped; a DataError when none is left."""
    items = [line.strip() for line in decode_lines(raw, name)]
    check_lengths(items, name)
    items = [item for item in items if item]
    if not items:
        what = "is empty" if not raw.strip(b"\n\r\xef\xbb\xbf") else "has only blank lines"
        raise DataError(f"{name}: {what}; expected one item per line")
    return items


def parse_labelled(raw: bytes, name: str) -> tuple[list[str], list[str]]:
    """(labels, items) of a file of `label<TAB>item` lines, blank lines dropped; a DataError naming the first line
    without a tab or with an empty label or item."""
    lines = decode_lines(raw, name)
    labels, items, numbers = [], [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, tab, item = line.partition("\t")
        label, item = label.strip(), item.strip()
        if not tab:
            raise DataError(f"{name}: line {number:,} has no tab; with --labels each line is LABEL<TAB>ITEM (for a "
                            "CSV give --item-column and --label-column)")
        if not label or not item:
            raise DataError(f"{name}: line {number:,} has an empty {'label' if not label else 'item'}; each line "
                            "is LABEL<TAB>ITEM")
        labels.append(label)
        items.append(item)
        numbers.append(number)
    if not items:
        raise DataError(f"{name}: has no LABEL<TAB>ITEM line")
    check_lengths(items, name, numbers)
    return labels, items


def parse_csv(raw: bytes, name: str, item_column: str, label_column: str | None) -> tuple[list[str] | None, list[str]]:
    """(labels or None, items) of a CSV file with a header row, from the named columns; rows with an empty item are
    dropped, an empty label is a DataError."""
    text = "\n".join(decode_lines(raw, name))
    try:
        rows = csv.reader(io.StringIO(text))
        header = [column.strip() for column in next(rows, [])]
        wanted = [item_column] + ([label_column] if label_column is not None else [])
        missing = [column for column in wanted if column not in header]
        if missing:
            shown = ", ".join(printable(c) for c in header[:20]) or "none"
            raise DataError(f"{name}: has no column {printable(missing[0])!r} in its header (its columns: {shown})")
        at = [header.index(column) for column in wanted]
        labels, items, lines = [], [], []
        for row in rows:
            cells = [row[i].strip() if i < len(row) else "" for i in at]
            if not cells[0]:
                continue
            if label_column is not None and not cells[1]:
                raise DataError(f"{name}: row {rows.line_num - 1:,} has an empty {printable(label_column)!r}")
            items.append(cells[0])
            labels.append(cells[1] if label_column is not None else "")
            lines.append(rows.line_num)
    except csv.Error as e:
        raise DataError(f"{name}: not a CSV file this reader understands ({e})") from None
    if not items:
        raise DataError(f"{name}: has no item in its column {printable(item_column)!r}")
    check_lengths(items, name, lines)
    return (labels if label_column is not None else None), items


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
    _check_sizes(sizes, len(items), splits, name)
    n1, n2 = sizes[0], sizes[0] + sizes[1]
    return {"train": items[:n1], "dev": items[n1:n2], "test": items[n2:]}


def _check_sizes(sizes, n: int, splits, name: str) -> None:
    for split, frac, size in zip(SPLIT_NAMES, splits, sizes):
        if frac > 0 and size == 0:
            raise DataError(f"{name}: the {split} split would be empty ({n} items at --splits "
                            f"{','.join(f'{f:g}' for f in splits)}); it needs at least {min_items(splits)} items")


def split_labelled(items: list[str], item_labels: list[int] | None, label_names: list[str] | None,
                   splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED,
                   name: str = "the data") -> tuple[dict[str, list[str]], dict[str, list[int]] | None]:
    """The split stratified by label: each label's items shuffled and cut by the fractions (one generator seeded
    with seed, the labels in id order), so that every label keeps its share of each split. Without labels (None):
    split_items' split, and None."""
    if item_labels is None:
        return split_items(items, splits, seed, name), None
    by_label = [[] for _ in label_names]
    for item, label in zip(items, item_labels):
        by_label[label].append(item)
    rng = random.Random(seed)
    parts = {split: [] for split in SPLIT_NAMES}
    labels = {split: [] for split in SPLIT_NAMES}
    for label, group in enumerate(by_label):
        rng.shuffle(group)
        sizes = split_sizes(len(group), splits)
        if sizes[0] == 0:
            raise DataError(f"{name}: label {printable(label_names[label])!r} would have no training items ("
                            f"{len(group)} item{'s' * (len(group) != 1)} at --splits "
                            f"{','.join(f'{f:g}' for f in splits)}); give it more items or drop it")
        start = 0
        for split, size in zip(SPLIT_NAMES, sizes):
            parts[split].extend(group[start:start + size])
            labels[split].extend([label] * size)
            start += size
    if len(label_names) == 1:
        _check_sizes([len(parts[split]) for split in SPLIT_NAMES], len(items), splits, name)
    for split, frac in zip(SPLIT_NAMES, splits):
        if frac > 0 and not parts[split]:  # each label is cut apart: the items' total says nothing here
            raise DataError(f"{name}: the {split} split would be empty: it is cut per label, and none of the "
                            f"{len(label_names)} labels has the {min_items(splits)} items that give every split one "
                            f"at --splits {','.join(f'{f:g}' for f in splits)} (the largest has "
                            f"{max(map(len, by_label))})")
    return parts, labels


def check_labels(labels: list[str], name: str) -> tuple[list[str], list[int]]:
    """(label names, sorted; each item's label id) of the items' labels; a DataError for more than MAX_LABELS
    labels, a label of one item, or a label too long or holding a control character."""
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
        if len(counts) > MAX_LABELS:
            raise DataError(f"{name}: has more than {MAX_LABELS} labels; makemore models at most {MAX_LABELS} (merge "
                            "the rare ones)")
    names = sorted(counts)
    for label in names:
        if len(label) > MAX_LABEL_CHARS or printable(label) != label:
            raise DataError(f"{name}: the label {printable(label)[:MAX_LABEL_CHARS]!r} is longer than "
                            f"{MAX_LABEL_CHARS} characters or holds a control character")
        if counts[label] == 1:
            raise DataError(f"{name}: the label {label!r} has only one item; a label needs items to train on and "
                            "to check on: give it more or drop it")
    ids = {label: i for i, label in enumerate(names)}
    return names, [ids[label] for label in labels]


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
    """A data file (or a folder of them, one per label) read once: its items, fingerprint and split; labels: the
    label names (sorted) and item_labels each item's label id, or both None for an unlabelled file."""

    path: Path
    items: list[str]
    fingerprint: str
    labels: list[str] | None = None
    item_labels: list[int] | None = None

    @classmethod
    def read(cls, path: str | Path | None = None, labels: bool = False, item_column: str | None = None,
             label_column: str | None = None) -> "Data":
        """A text file of one item per line; with labels, LABEL<TAB>ITEM lines, or a folder of LABEL.txt files;
        with item_column (and label_column), a CSV file with a header."""
        path = Path(path) if path is not None else default_data_path()
        if label_column is not None and item_column is None:
            raise DataError("--label-column needs --item-column: the column of the items")
        if labels and item_column is None and path.is_dir():
            return cls._read_folder(path)
        raw = read_bytes(path)
        # lines end at LF, CRLF or CR: counting both bytes errs towards more lines
        check_reading_fits(path, len(raw), raw.count(b"\n") + raw.count(b"\r") + 1, held=len(raw))
        name, names = str(path), None
        if item_column is not None:
            names, items = parse_csv(raw, name, item_column, label_column)
        elif labels:
            names, items = parse_labelled(raw, name)
        else:
            items = parse_items(raw, name)
        return cls._made(path, items, fingerprint_bytes(raw), names, name)

    @classmethod
    def _read_folder(cls, path: Path) -> "Data":
        """Every *.txt file of the folder: the items of the label its name (without .txt) says."""
        files = _label_files(path)
        if not files:
            raise DataError(f"{path}: holds no .txt file; with --labels a folder holds one LABEL.txt file per label")
        if len(files) > MAX_LABELS:
            raise DataError(f"{path}: holds {len(files):,} .txt files; makemore models at most {MAX_LABELS} labels")
        h, total, labels, items = hashlib.sha256(), 0, [], []
        for file in files:
            raw = read_bytes(file)
            total += len(raw)
            if total > MAX_DATA_BYTES:
                _too_large(path, total)
            h.update(_folder_entry(file) + raw + b"\0")
            found = parse_items(raw, str(file))
            labels.extend([unicodedata.normalize("NFC", file.stem)] * len(found))
            items.extend(found)
        return cls._made(path, items, h.hexdigest()[:16], labels, str(path))

    @classmethod
    def _made(cls, path: Path, items: list[str], fingerprint: str, labels: list[str] | None, name: str) -> "Data":
        if labels is None:
            return cls(path, items, fingerprint)
        names, ids = check_labels(labels, name)
        return cls(path, items, fingerprint, names, ids)

    @property
    def n_labels(self) -> int:
        return len(self.labels) if self.labels is not None else 1

    def split(self, splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list[str]]:
        """The items by split (stratified by label)."""
        return self.labelled_split(splits, seed)[0]

    def labelled_split(self, splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED
                       ) -> tuple[dict[str, list[str]], dict[str, list[int]] | None]:
        """(items by split, their label ids by split or None): split_labelled."""
        return split_labelled(self.items, self.item_labels, self.labels, splits, seed, str(self.path))
