"""Bounds on the work a checkpoint file implies, checked before the work starts (issue 29): a small valid file
must not make the loader parse a gigabyte of header, map more than the process may allocate, or decode items
that no data file could have held.

makemore.checkpoint calls these in this order: header_bounds() on the first bytes, before safetensors parses
anything; fits_in_memory() before the file is mapped; items_bounds() on the items' size from the header and
on their text once decoded. Each refusal is a CheckpointError of one line that starts with the path.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from makemore import memory
from makemore.data import MAX_DATA_BYTES, MAX_ITEM_CHARS
from makemore.errors import CheckpointError

# Bytes of the safetensors header (the tensors' names, dtypes, shapes and offsets, and the JSON document).
# Measured: 1-6 KB for every model at its defaults, 28 KB for a default transformer with its training state,
# 16 KB for a mixture of ten; each training log record adds about 90 bytes (about 200 a run). The largest
# header the model limits allow, a mixture of 64 transformers of 64 layers, is about 6 MB. 16 MB leaves a
# margin of 2.5 over that and lets a run that logged every step for 100,000 steps load; safetensors' own
# limit is 100 MB, and a header of a million empty tensors within it took 1.15 GB to parse.
MAX_HEADER_BYTES = 16 << 20
# Tensors listed in the header. The most a checkpoint holds: a mixture of 64 transformers of 64 layers, 774
# tensors each (49,536); a resumable transformer of 64 layers holds 3,900. Parsing costs about 1.2 KB per
# tensor, so 65,536 of them about 80 MB.
MAX_TENSORS = 1 << 16
# Bytes of the training items kept in a checkpoint (UTF-8, joined by newlines): the items are the lines of
# a data file, whose size makemore.data bounds
MAX_ITEMS_BYTES = MAX_DATA_BYTES

# a JSON string: its quotes and what lies between them, escapes included (written so that the engine does
# not backtrack)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def header_bounds(path: Path, first: bytes, f) -> int:
    """The header's length, given the file's first 8 bytes and f open just after them, once it is at most
    MAX_HEADER_BYTES and lists at most MAX_TENSORS tensors: what safetensors then parses is bounded."""
    if len(first) < 8:
        raise damaged(path, "shorter than a safetensors header")
    length = int.from_bytes(first, "little")
    if length > MAX_HEADER_BYTES:
        raise damaged(path, f"its header would be {length:,} bytes long; a makemore checkpoint's is at most "
                            f"{MAX_HEADER_BYTES:,}")
    header = f.read(length)
    if len(header) < length:
        raise damaged(path, "the file ends inside its header")
    # Every tensor's entry is a JSON object: the braces outside strings bound the tensors (the outer object
    # and __metadata__ are two more). A brace inside a string, the document's included, is not counted.
    objects = _JSON_STRING.sub(b"", header).count(b"{")
    if objects > MAX_TENSORS + 2:
        raise damaged(path, f"its header lists about {objects - 2:,} tensors; a makemore checkpoint holds at most "
                            f"{MAX_TENSORS:,}")
    return length


def fits_in_memory(path: Path, data_bytes: int) -> None:
    """Refuse a file whose tensors (data_bytes, mapped whole by safetensors) and the items' decoded text
    would not fit in the memory this process may still allocate."""
    needed = data_bytes + 2 * min(data_bytes, MAX_ITEMS_BYTES)  # the items as bytes and as text
    free = memory.available(torch.device("cpu"))
    if needed > free:
        raise CheckpointError(f"{path}: loading it needs about {_mb(needed)} of memory (its tensors and items) but "
                              f"this process has {_mb(free)} available; free memory or use a larger machine")


def items_size(path: Path, n_bytes: int) -> None:
    """Refuse an items tensor larger than any data file makemore reads, before it is read."""
    if n_bytes > MAX_ITEMS_BYTES:
        raise CheckpointError(f"{path}: keeps {n_bytes:,} bytes of training items; a checkpoint keeps at most "
                              f"{MAX_ITEMS_BYTES:,} (the size of the largest data file makemore reads)")


def longest_item(raw: bytearray, text: str) -> tuple[int, int] | None:
    """(line number from 1, length in characters) of the first item of the UTF-8 raw (its text decoded: text)
    longer than MAX_ITEM_CHARS, or None. Lengths are found in bytes first, in C: a character takes at least a
    byte, so only the lines longer than that in bytes are decoded and counted."""
    if not raw:
        return None
    ascii = len(raw) == len(text)
    newlines = (torch.frombuffer(raw, dtype=torch.uint8) == ord("\n")).nonzero().flatten()
    bounds = torch.cat([torch.tensor([-1]), newlines, torch.tensor([len(raw)])])
    for line in ((bounds.diff() - 1) > MAX_ITEM_CHARS).nonzero().flatten().tolist():
        start, end = int(bounds[line]) + 1, int(bounds[line + 1])
        chars = end - start if ascii else len(raw[start:end].decode("utf-8"))
        if chars > MAX_ITEM_CHARS:
            return line + 1, chars
    return None


def _mb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{max(1, round(n / 2**20))} MB"


def damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable checkpoint ({why}); it is damaged, truncated or not a makemore "
                           "checkpoint: train again or restore a copy")
