"""Will it fit? The memory a run needs, estimated from its settings before anything is allocated, against
the memory the device has free: a size that cannot fit is a one-line error, not an allocation traceback
(or the machine swapping) minutes later."""
from __future__ import annotations

import os

import torch

from makemore.errors import MakemoreError

# copies of the weights a training run keeps: the weights, their gradients, AdamW's two moments, the
# best-on-dev weights and the copy written to the checkpoint
TRAINING_COPIES = 6


def available(device: torch.device) -> int:
    """Bytes free for new tensors on device: the GPU's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the allocator speak


def tensor_bytes(expected: dict) -> int:
    """Bytes of the tensors model.expected_tensors describes (sizes that depend on the data count as 1)."""
    total = 0
    for dtype, shape in expected.values():
        dtype = dtype[0] if isinstance(dtype, tuple) else dtype
        numel = 1
        for size in shape:
            numel *= size if size is not None else 1
        total += numel * dtype.itemsize
    return total


def check_fits(needs: dict[str, int], device: torch.device, advice: str) -> None:
    """Raise MakemoreError when the parts of needs (name -> bytes) add up to more than device has free."""
    total, free = sum(needs.values()), available(device)
    if total <= free:
        return
    parts = ", ".join(f"{name} {_gb(n)}" for name, n in sorted(needs.items(), key=lambda kv: -kv[1]) if n)
    raise MakemoreError(f"this run needs about {_gb(total)} of memory ({parts}) but {device.type} has "
                        f"{_gb(free)} available; {advice}")


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def rows_that_fit(cls, config, vocab_size: int, device: torch.device, wanted: int, share: float = 0.5) -> int:
    """The most rows (examples) of one forward pass without gradients, at most wanted, whose activations fit
    in share of the memory this process may still allocate on device; MakemoreError when not one row fits."""
    # a mixture's config has no block_size: its components' contexts are counted in its example_numbers
    per_row = 4 * cls.example_numbers(config, vocab_size) + 8 * getattr(config, "block_size", 0)
    rows = min(wanted, int(share * available(device)) // max(1, per_row))
    if rows < 1:
        raise MakemoreError(f"one example of this {cls.name} model needs about {_gb(per_row)} of memory but "
                            f"{device.type} has {_gb(available(device))} available")
    return rows
