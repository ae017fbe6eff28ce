"""Items, vocabulary, the train/dev/test split and the block_size dataset builder."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from makemore.errors import DataError

BOUNDARY = "."
# Items are lines, so a newline can never be part of one: it is the boundary when the data has '.'.
FALLBACK_BOUNDARY = "\n"
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
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a text file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None


def fingerprint_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def fingerprint(path: str | Path) -> str:
    """A short content hash of the data file, kept in checkpoints to notice a changed file."""
    return fingerprint_bytes(read_bytes(path))


def parse_items(raw: bytes, name: str = "data") -> list[str]:
    """Decode UTF-8 (a byte-order mark is allowed), one item per line, stripped, blank lines dropped."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{name}: binary content (a NUL byte at offset {nul}); expected a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it first, e.g. iconv -t UTF-8"
        ) from None
    items = [line.strip() for line in text.split("\n")]
    items = [item for item in items if item]
    if not items:
        what = "is empty" if not text.strip("\n\r\ufeff") else "has only blank lines"
        raise DataError(f"{name}: {what}; expected one item per line")
    return items


def read_items(path: str | Path) -> list[str]:
    return parse_items(read_bytes(path), str(path))


class Vocab:
    """Characters <-> integer ids. Index 0 is the boundary token that starts and ends every item."""

    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_items(cls, items: list[str]) -> "Vocab":
        charset = set("".join(items))  # one pass in C; a set per item would cost ~200 bytes per line
        boundary = FALLBACK_BOUNDARY if BOUNDARY in charset else BOUNDARY
        return cls(boundary + "".join(sorted(charset)))

    @property
    def boundary(self) -> str:
        return self.chars[0]

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of text outside the vocabulary (the boundary included: it is not a character)."""
        return sorted({c for c in text if c not in self.stoi or self.stoi[c] == 0})

    def encode(self, text: str) -> list[int]:
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def show(self, char: str) -> str:
        """How a character is printed: the boundary as '.', or '\\n' when that is the boundary."""
        return "\\n" if char == "\n" else char


def split_items(items: list[str], splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list[str]]:
    """Shuffle with the seed, then cut by fractions exactly as the lecture does.

    random.Random(seed).shuffle gives the same order as the lecture's random.seed(seed); random.shuffle.
    """
    items = list(items)
    random.Random(seed).shuffle(items)
    n = len(items)
    n1 = int(splits[0] * n)
    n2 = int((splits[0] + splits[1]) * n)
    if splits[2] == 0:
        n2 = n  # float round-off must not leave a stray item in an empty test split
    parts = {"train": items[:n1], "dev": items[n1:n2], "test": items[n2:]}
    for name, frac in zip(SPLIT_NAMES, splits):
        if frac > 0 and not parts[name]:
            need = next(k for k in range(1, 10**9) if _split_sizes(k, splits)[SPLIT_NAMES.index(name)] > 0)
            raise DataError(
                f"the {name} split would be empty: {n} items at {frac:g} give none; it needs at least {need} items"
            )
    return parts


def _split_sizes(n: int, splits) -> tuple[int, int, int]:
    n1 = int(splits[0] * n)
    n2 = n if splits[2] == 0 else int((splits[0] + splits[1]) * n)
    return n1, n2 - n1, n - n2


def _smallest_int_dtype(max_value: int) -> torch.dtype:
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


@dataclass
class Dataset:
    """Every item as len(item)+1 examples: the block_size previous tokens (boundary-padded) -> the next token.

    Kept compact: one flat token stream in the smallest integer type, each item preceded by block_size
    boundary tokens, and the positions of the targets in it. Contexts are gathered per batch, so memory
    grows with the data, not with data x block_size.
    """

    tokens: torch.Tensor  # (T,) token ids, small integer type
    positions: torch.Tensor  # (N,) where each target sits in tokens
    block_size: int
    n_items: int

    def __len__(self) -> int:
        return self.positions.numel()

    def batch(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contexts (B, block_size) and targets (B,) as int64 for the examples ix."""
        p = self.positions[ix].long()
        rel = torch.arange(-self.block_size, 0, device=p.device)
        x = self.tokens[p[:, None] + rel].long()
        y = self.tokens[p].long()
        return x, y

    def chunks(self, size: int = 65536):
        """All examples in order, a chunk at a time."""
        for start in range(0, len(self), size):
            ix = torch.arange(start, min(start + size, len(self)), device=self.positions.device)
            yield self.batch(ix)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every context and target at once (for small data and tests)."""
        return self.batch(torch.arange(len(self), device=self.positions.device))

    def to(self, device) -> "Dataset":
        return Dataset(self.tokens.to(device), self.positions.to(device), self.block_size, self.n_items)


ENCODE_CHUNK = 1 << 18  # items encoded at once: temporaries stay near 100 MB however large the data
POSITIONS_CHUNK = 1 << 22  # tokens scanned at once for target positions


def build_dataset(items: list[str], vocab: Vocab, block_size: int) -> Dataset:
    """Encode items with tensor operations: no Python loop per character.

    The text is encoded a chunk of items at a time and only the small tokens are kept, so memory at
    the peak stays a little above the dataset's own size (3 million lines: about 0.3 GB).
    """
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    table = torch.tensor(sorted(ord(c) for c in vocab.chars[1:]), dtype=torch.int32)
    token_dtype = _smallest_int_dtype(len(vocab) - 1)
    pieces = []
    for text in _texts(items, block_size):
        codes = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
        del text
        ids = torch.searchsorted(table, codes, out_int32=True).add_(1)
        newline = codes == 10
        known = table[(ids - 1).clamp_(max=len(table) - 1)] == codes
        if not bool(known.logical_or_(newline).all()):
            bad = "".join(vocab.unknown("".join(items)))
            raise DataError(f"the data has characters outside the model's vocabulary: {bad!r}")
        pieces.append(ids.masked_fill_(newline, 0).to(token_dtype))
        del codes, ids, newline, known
    tokens = torch.cat(pieces)
    del pieces
    # A target is every item character and the boundary right after an item: a token that is not
    # the boundary, or that follows one that is not.
    position_dtype = _smallest_int_dtype(tokens.numel())
    positions = []
    for start in range(0, tokens.numel(), POSITIONS_CHUNK):
        nonzero = tokens[max(start - 1, 0):start + POSITIONS_CHUNK] != 0
        if start == 0:  # nothing precedes the first token
            nonzero = torch.cat([torch.zeros(1, dtype=torch.bool), nonzero])
        is_target = nonzero[1:] | nonzero[:-1]
        positions.append((is_target.nonzero().squeeze(1) + start).to(position_dtype))
    positions = torch.cat(positions) if positions else torch.zeros(0, dtype=position_dtype)
    return Dataset(tokens, positions, block_size, len(items))


def _texts(items: list[str], block_size: int):
    """The text to encode, in pieces of ENCODE_CHUNK items.

    Each item gets block_size newlines before it and one after: the newlines become boundary
    tokens, so a context window never reaches into the previous item.
    """
    pad = "\n" * (block_size + 1)
    if not items:
        yield pad
    for start in range(0, len(items), ENCODE_CHUNK):
        head = "\n" * block_size if start == 0 else ""
        tail = "\n" if start + ENCODE_CHUNK >= len(items) else pad
        yield head + pad.join(items[start:start + ENCODE_CHUNK]) + tail
