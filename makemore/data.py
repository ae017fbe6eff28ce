"""Items, vocabulary, the train/dev/test split and the block_size dataset builder."""
from __future__ import annotations

import hashlib
import math
import random
import unicodedata
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
    """Decode UTF-8 (a byte-order mark is allowed), one item per line, stripped, blank lines dropped.

    Lines end at LF, CRLF or CR, as in Python's text mode. Items are put in Unicode NFC form, so an
    accented letter is one character whether the file spelt it precomposed or as letter + combining mark.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: UTF-16 text; convert it to UTF-8 first, e.g. iconv -f UTF-16 -t UTF-8")
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
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    items = [unicodedata.normalize("NFC", line.strip()) for line in lines]
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
        text = "".join(items)
        if text.isascii():  # the common case, counted in C: ~10x faster than set(text)
            seen = torch.bincount(torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8), minlength=128)
            charset = {chr(i) for i in seen.nonzero().flatten().tolist()}
        else:
            charset = set(text)
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


def split_items(items: list[str], splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED,
                name: str = "the data") -> dict[str, list[str]]:
    """Shuffle with the seed, then cut by fractions exactly as the lecture does.

    random.Random(seed).shuffle gives the same order as the lecture's random.seed(seed); random.shuffle.
    """
    items = list(items)
    random.Random(seed).shuffle(items)
    sizes = _split_sizes(len(items), splits)
    for split, frac, size in zip(SPLIT_NAMES, splits, sizes):
        if frac > 0 and size == 0:
            raise DataError(
                f"{name}: the {split} split would be empty ({len(items)} items at "
                f"--splits {','.join(f'{f:g}' for f in splits)}); it needs at least {min_items(splits)} items"
            )
    n1, n2 = sizes[0], sizes[0] + sizes[1]
    return {"train": items[:n1], "dev": items[n1:n2], "test": items[n2:]}


def _split_sizes(n: int, splits) -> tuple[int, int, int]:
    n1 = int(splits[0] * n)
    # float round-off must not leave a stray item in an empty test split
    n2 = n if splits[2] == 0 else int((splits[0] + splits[1]) * n)
    return n1, n2 - n1, n - n2


def min_items(splits) -> int:
    """The fewest items for which every split with a positive fraction gets at least one item."""
    def enough(n: int) -> bool:
        return all(size > 0 for frac, size in zip(splits, _split_sizes(n, splits)) if frac > 0)

    # From n >= 2/f on, floor arithmetic gives every fraction f at least one item, so the search is short
    # unless a fraction is tiny; then that bound is the answer. Below it, counts that work can be
    # followed by ones that do not, so the answer is one past the largest count that does not.
    bound = math.ceil(2 / min(f for f in splits if f > 0)) + 1
    if bound > 10**6:
        return bound
    return next((n + 1 for n in range(bound - 1, 0, -1) if not enough(n)), 1)


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


BUILD_CHUNK = 1 << 16  # items encoded at a time: the working tensors stay in cache, the peak near the result


def build_dataset(items: list[str], vocab: Vocab, block_size: int) -> Dataset:
    """Encode items with whole-string and tensor operations: no Python loop per character."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    token_parts, position_parts, offset = [], [], 0
    for start in range(0, max(len(items), 1), BUILD_CHUNK):
        tokens, positions = _encode_items(items[start:start + BUILD_CHUNK], vocab, block_size)
        position_parts.append(positions.to(_smallest_int_dtype(offset + tokens.numel())).add_(offset))
        token_parts.append(tokens)
        offset += tokens.numel()
    tokens = token_parts[0] if len(token_parts) == 1 else torch.cat(token_parts)
    positions = position_parts[0] if len(position_parts) == 1 else torch.cat(position_parts)
    return Dataset(tokens, positions.to(_smallest_int_dtype(offset)), block_size, len(items))


def _encode_items(items: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token stream and target positions (int64) of some items; chunks of it concatenate to the whole."""
    # Each item gets block_size newlines before it and one after: the newlines become boundary
    # tokens, so a context window never reaches into the previous item.
    pad = "\n" * (block_size + 1)
    text = "\n" * block_size + pad.join(items) + "\n"
    ids = _encode_ascii(text, vocab) if text.isascii() and len(vocab) < 128 else _encode_any(text, vocab)
    if ids is None:
        bad = "".join(vocab.unknown("".join(items)))
        raise DataError(f"the data has characters outside the model's vocabulary: {bad!r}")
    tokens = ids.to(_smallest_int_dtype(len(vocab) - 1))
    # A target is every item character and the boundary right after an item.
    nonzero = tokens != 0
    is_target = nonzero.clone()
    is_target[1:] |= nonzero[:-1]
    return tokens, is_target.nonzero().squeeze(1)


def _encode_ascii(text: str, vocab: Vocab) -> torch.Tensor | None:
    """Token ids (uint8) of an ASCII text, or None if it has a character outside vocab.

    str.translate maps ASCII to ASCII in C at about a byte per nanosecond; every ASCII character outside
    the vocabulary maps to 127, an id no token has (the vocabulary has fewer than 128 entries).
    """
    unknown = 127
    table = [unknown] * 128
    for i, c in enumerate(vocab.chars):
        if i and ord(c) < 128:  # other characters cannot occur in an ASCII text
            table[ord(c)] = i
    table[ord("\n")] = 0  # newline is the boundary's stand-in whatever the boundary character is
    ids = torch.frombuffer(bytearray(text.translate(table).encode("ascii")), dtype=torch.uint8)
    return None if bool((ids == unknown).any()) else ids


def _encode_any(text: str, vocab: Vocab) -> torch.Tensor | None:
    """Token ids (int32) of any text via code points, or None if it has a character outside vocab."""
    codes = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
    table = torch.tensor(sorted(ord(c) for c in vocab.chars[1:]), dtype=torch.int32)
    ids = torch.searchsorted(table, codes).to(torch.int32) + 1
    newline = codes == 10
    known = table[(ids - 1).clamp(max=len(table) - 1)] == codes
    if not bool((known | newline).all()):
        return None
    return ids.masked_fill(newline, 0)
