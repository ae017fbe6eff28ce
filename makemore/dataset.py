"""The block_size dataset builder: every item as contexts of block_size tokens and the next token."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.data import Vocab
from makemore.errors import DataError


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
