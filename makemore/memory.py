"""Will it fit? The memory a command needs, estimated from its settings, against what this process may still
allocate: a size that cannot fit is a one-line error before anything is allocated, not a crash minutes later."""
from __future__ import annotations

import math
import resource
from pathlib import Path

import torch

from makemore.errors import MakemoreError

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
# a limit at or above this is no limit: cgroup v1 writes "unlimited" as the largest page-aligned int64
NO_LIMIT = 1 << 62
MAX_CONTEXT = 1024  # the widest context of a model whose config does not say (a mixture)
# the bytes one chunk of a forward pass without gradients aims at: more rows buy no speed (a chunk that stays
# near the cache is faster on the CPU), and a large vocabulary's logits must not take a large share of memory
CHUNK_BYTES = 128 << 20


def available(device: torch.device, proc: Path = PROC, cgroup: Path = CGROUP, rlimit=resource.getrlimit) -> int:
    """Bytes this process may still allocate on device: a GPU's free memory; on the CPU the least of MemAvailable,
    the room under RLIMIT_AS (less VmSize) and RLIMIT_DATA (less VmData), and under each memory cgroup (v1 or v2)
    the process is in and their parents. proc, cgroup and rlimit stand in for the system's (for tests)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    status = _kilobyte_fields(proc / "self" / "status", "VmSize", "VmData")
    rooms = [_kilobyte_fields(proc / "meminfo", "MemAvailable").get("MemAvailable"), _cgroup_room(proc, cgroup)]
    for limit, in_use in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = rlimit(limit)[0]
        if soft != resource.RLIM_INFINITY and 0 <= soft < NO_LIMIT:
            rooms.append(soft - status.get(in_use, 0))
    known = [room for room in rooms if room is not None]
    if not known:
        return NO_LIMIT  # nothing could be read: let the allocator speak
    return max(0, min(known))


def _kilobyte_fields(path: Path, *fields: str) -> dict[str, int]:
    """The values of a /proc file's 'Field:   123 kB' lines, in bytes (those that could be read)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in fields and value.split() and value.split()[0].isdecimal():
            found[name] = int(value.split()[0]) * 1024
    return found


def _cgroup_room(proc: Path, root: Path) -> int | None:
    """The least room (limit less usage) under the memory cgroups this process is in and their ancestors, None
    without a limit. /proc/self/cgroup names them: '0::/path' (v2) or 'N:memory:/path' (v1). A container's mount
    may show only the process's own cgroup, at its root: then path is not found under it."""
    try:
        lines = (proc / "self" / "cgroup").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    rooms = []
    for _, controllers, path in (line.split(":", 2) for line in lines if line.count(":") >= 2):
        if controllers == "":  # v2: at the root of a pure v2 mount, or under unified/ of a hybrid one
            mounts, files = (root, root / "unified"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            mounts, files = (root / "memory",), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        parts = [part for part in path.split("/") if part]
        for mount in mounts:
            here = mount.joinpath(*parts) if ".." not in parts else mount
            here = here if here.is_dir() else mount
            found = (_room(folder, *files) for folder in [here, *here.parents] if folder.is_relative_to(mount))
            rooms += [room for room in found if room is not None]
    return min(rooms, default=None)


def _room(folder: Path, limit_name: str, usage_name: str) -> int | None:
    try:
        limit = (folder / limit_name).read_text().strip()
        if limit == "max" or int(limit) >= NO_LIMIT:
            return None
        return int(limit) - int((folder / usage_name).read_text().strip())
    except (OSError, ValueError):
        return None


def tensor_bytes(expected: dict) -> int:
    """Bytes of the tensors model.expected_tensors describes (sizes that depend on the data count as 1)."""
    total = 0
    for dtype, shape in expected.values():
        dtype = dtype[0] if isinstance(dtype, tuple) else dtype
        total += math.prod(1 if size is None else size for size in shape) * dtype.itemsize
    return total


def training_copies(optimizer: str) -> int:
    """Copies of the weights a training run holds at its peak, while it writes a checkpoint: the weights,
    their gradients, the optimizer's moments (AdamW two, SGD none), the best-on-dev weights, and the
    checkpoint's bytes as they are serialised (the best and the latest weights, and the moments)."""
    moments = 2 if optimizer == "adamw" else 0
    return 3 + moments + (2 + moments)


def thread_stacks(threads: int) -> int:
    """Address space that threads reserve for their stacks (RLIMIT_STACK each, 8 MB where unlimited):
    counted by an address-space limit though rarely touched."""
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return threads * (soft if soft != resource.RLIM_INFINITY and 0 < soft < NO_LIMIT else 8 << 20)


def check_fits(needs: dict[str, int], device: torch.device, advice: str) -> None:
    """Raise MakemoreError when the parts of needs (name -> bytes) add up to more than device has free."""
    total, free = sum(needs.values()), available(device)
    if total <= free:
        return
    parts = ", ".join(f"{name} {gb(n)}" for name, n in sorted(needs.items(), key=lambda kv: -kv[1]) if n >= 2**20)
    raise MakemoreError(f"this run needs about {gb(total)} of memory ({parts}) but {where(device)} has "
                        f"{gb(free)} available; {advice}")


def where(device: torch.device) -> str:
    return "this process" if device.type == "cpu" else device.type


def gb(n: int) -> str:
    """Bytes in words: '1.5 GB', '12 MB'."""
    return f"{n / 2**30:.1f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def row_bytes(cls, config, vocab_size: int) -> int:
    """Bytes of one row (example) of a forward pass without gradients: its activations (the model's
    example_numbers, which count them with their gradients for training: half of that, in float32), the
    logits in float64 and their log-softmax where the loss is summed, and its int64 context and targets."""
    block_size = getattr(config, "block_size", None) or MAX_CONTEXT  # a mixture's: its widest component's
    positions = block_size if cls.whole_items else 1
    return 2 * cls.example_numbers(config, vocab_size) + 16 * positions * vocab_size + 16 * block_size


def rows_that_fit(cls, config, vocab_size: int, device: torch.device, wanted: int) -> int:
    """The most rows (examples) of one forward pass without gradients, at most wanted and about CHUNK_BYTES (one
    at least), that fit in half the memory this process may still allocate; MakemoreError if not one does."""
    per_row = max(1, row_bytes(cls, config, vocab_size))
    free = available(device)
    rows = min(wanted, max(1, CHUNK_BYTES // per_row), free // 2 // per_row)
    if rows < 1:
        raise MakemoreError(f"one example of this {cls.name} model needs about {gb(per_row)} of memory, more than "
                            f"the {gb(free // 2)} a forward pass may take (50% of the {gb(free)} "
                            f"{where(device)} has available); use a machine with more memory or a smaller model")
    return rows
