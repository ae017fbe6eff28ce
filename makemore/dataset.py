"""The dataset builder: every item as windows (block_size previous tokens -> the next token, for the MLP and
the other fixed-context models) or as whole rows (every position of an item predicted at once, for the
models that read an item left to right), both from one token stream with the same targets: each character
of an item and the boundary token that ends it."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from makemore.data import Vocab
from makemore.errors import DataError


def _smallest_int_dtype(max_value: int) -> torch.dtype:
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


IGNORE = -1  # the target of a row position that predicts nothing (after the item's end, or a tail row's start)


@dataclass
class Dataset:
    """Every item as examples: one token stream in the smallest integer type and where each example sits in
    it, the contexts gathered per batch. Windows (rows None): the block_size previous tokens -> the next token.
    Rows: an item's boundary token and characters -> every next token (IGNORE after its end), and a tail row
    for each target block_size or more characters into it, read from the block_size characters before it."""

    tokens: torch.Tensor  # (T,) token ids, small integer type
    positions: torch.Tensor  # (N,) windows: where each target sits in tokens; rows: where each row starts
    block_size: int
    n_items: int
    rows: torch.Tensor | None = None  # (N,) rows: the first position of each row that has a target
    n_targets: int = -1  # rows: the characters and item ends the rows predict
    # rows: the columns a row needs, min(block_size, longest item + 1): a block size far above every item
    # must not make every row (and every evaluation) that wide
    width: int = 0
    labels: torch.Tensor | None = None  # (N,) each example's label id (uint8), or None for unlabelled items

    def __post_init__(self):
        if self.rows is None:
            self.n_targets = self.positions.numel()

    @property
    def whole_items(self) -> bool:
        return self.rows is not None

    def __len__(self) -> int:
        return self.positions.numel()

    def batch(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Windows: contexts (B, block_size) and targets (B,); rows: inputs and targets (B, block_size);
        and the examples' labels (B,) or None; int64, for the examples ix."""
        p = self.positions[ix].long()
        label = self.labels[ix].long() if self.labels is not None else None
        if self.rows is None:
            rel = torch.arange(-self.block_size, 0, device=p.device)
            return self.tokens[p[:, None] + rel].long(), self.tokens[p].long(), label
        # the last item's row reads past the stream's end: those positions lie after its end, so the
        # clamped index is as good as any
        at = (p[:, None] + torch.arange(self.width + 1, device=p.device)).clamp_(max=self.tokens.numel() - 1)
        row = self.tokens[at].long()
        x, y = row[:, :-1], row[:, 1:]
        is_end = y == 0
        after_end = (is_end.cumsum(1) - is_end.long()) > 0
        before_first = torch.arange(self.width, device=p.device) < self.rows[ix].long()[:, None]
        return x, y.masked_fill(after_end | before_first, IGNORE), label

    def chunks(self, size: int):
        """All examples in order, a chunk at a time."""
        for start in range(0, len(self), size):
            ix = torch.arange(start, min(start + size, len(self)), device=self.positions.device)
            yield self.batch(ix)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every context and target at once (for small data and tests)."""
        return self.batch(torch.arange(len(self), device=self.positions.device))

    def to(self, device) -> Dataset:
        rows = None if self.rows is None else self.rows.to(device)
        labels = None if self.labels is None else self.labels.to(device)
        return replace(self, tokens=self.tokens.to(device), positions=self.positions.to(device), rows=rows,
                       labels=labels)


BUILD_CHUNK = 1 << 16  # items encoded at a time: the working tensors stay in cache, the peak near the result


def build_dataset(items: list[str], vocab: Vocab, block_size: int, whole_items: bool = False,
                  labels: list[int] | None = None) -> Dataset:
    """Encode items with whole-string and tensor operations: no Python loop per character. whole_items:
    rows instead of windows (see Dataset); labels: each item's label id, kept for each of its examples."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    # a window must never reach into the previous item, so it gets block_size boundary tokens before it;
    # a row starts at its item's boundary token and a tail row inside its item, so one is enough
    lead = 1 if whole_items else block_size
    token_parts, position_parts, row_parts, label_parts, offset, n_targets = [], [], [], [], 0, 0
    for start in range(0, max(len(items), 1), BUILD_CHUNK):
        chunk = items[start:start + BUILD_CHUNK]
        tokens, positions = _encode_items(chunk, vocab, lead)
        n_targets += positions.numel()
        if labels is not None:  # an item's targets: its characters and its end
            target_labels = torch.tensor(labels[start:start + BUILD_CHUNK], dtype=torch.uint8).repeat_interleave(
                torch.tensor([len(item) + 1 for item in chunk]))
        if whole_items:
            positions, first, source = _rows(tokens, positions, block_size)
            row_parts.append(first)
            if labels is not None:
                target_labels = target_labels[source]
        if labels is not None:
            label_parts.append(target_labels)
        position_parts.append(positions.to(_smallest_int_dtype(offset + tokens.numel())).add_(offset))
        token_parts.append(tokens)
        offset += tokens.numel()
    tokens = token_parts[0] if len(token_parts) == 1 else torch.cat(token_parts)
    positions = position_parts[0] if len(position_parts) == 1 else torch.cat(position_parts)
    positions = positions.to(_smallest_int_dtype(offset))
    example_labels = torch.cat(label_parts) if labels is not None else None
    if not whole_items:
        return Dataset(tokens, positions, block_size, len(items), labels=example_labels)
    rows = torch.cat(row_parts).to(_smallest_int_dtype(block_size))
    width = min(block_size, max(map(len, items), default=0) + 1)
    return Dataset(tokens, positions, block_size, len(items), rows, n_targets, width, example_labels)


def _rows(tokens: torch.Tensor, targets: torch.Tensor, block_size: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each row starts, its first position with a target and the index of the target it starts from, in
    stream order, from the targets' positions: a row at each item's boundary token, and a tail row for each
    target at least block_size characters into its item."""
    starts_item = tokens[targets - 1] == 0  # the first character's target follows the boundary token
    index = torch.arange(targets.numel())
    into_item = index - torch.where(starts_item, index, 0).cummax(0).values  # 0 for an item's first target
    tail = into_item >= block_size
    starts = torch.cat([targets[starts_item] - 1, targets[tail] - block_size])
    first = torch.cat([torch.zeros(int(starts_item.sum()), dtype=torch.long),
                       torch.full((int(tail.sum()),), block_size - 1, dtype=torch.long)])
    source = torch.cat([index[starts_item], index[tail]])
    order = starts.argsort(stable=True)
    return starts[order], first[order], source[order]


def _encode_items(items: list[str], vocab: Vocab, lead: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token stream and target positions (int64) of some items, each item with lead boundary tokens before
    it and one after; chunks of it concatenate to the whole."""
    pad = "\n" * (lead + 1)
    text = "\n" * lead + pad.join(items) + "\n"
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
    """Token ids (uint8) of an ASCII text, or None if it has a character outside vocab; str.translate maps
    in C at about a byte per nanosecond, and a character outside vocab to 127, an id no token has."""
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
