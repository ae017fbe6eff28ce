"""Data-parallel training across the processes torchrun starts, with torch's DistributedDataParallel: each
trains a copy of the model on its part of every batch, and rank 0 alone evaluates, prints and saves. With one
process nothing here does anything; the rank helpers read only the environment (no torch for the CLI)."""
from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass

from makemore.errors import Interrupted, MakemoreError, OptionError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0 of several, or the one process (a stray RANK without WORLD_SIZE does not count)."""
    return not launched() or rank() == 0


@dataclass(frozen=True)
class World:
    """This process's place among the processes training together (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """What to run forward and backward: DDP around model when there are several processes (the model
        itself is the one to evaluate and save: its state_dict has no 'module.' prefix)."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        # gradient_as_bucket_view: gradients live in the all-reduce buckets, saving a copy per step
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)

    def columns(self, batch_size: int) -> slice:
        """This process's share of indices drawn for the global batch of size x batch_size examples."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)

    def agree(self, loss, signum: int) -> tuple[float, int]:
        """At a log point: the train loss averaged over processes, and the stop signal if any got one (the only
        exchange besides DDP's, at log points only, so that stopping costs no synchronisation per step)."""
        if self.size == 1:
            return loss.item(), signum
        import torch
        import torch.distributed as dist

        flags = torch.tensor([signum == signal.SIGINT, signum == signal.SIGTERM], dtype=torch.float64)
        t = torch.cat([loss.detach().double().reshape(1), flags.to(loss.device)])
        dist.all_reduce(t)
        mean, sigint, sigterm = t.tolist()
        if not signum:  # stop for another process's signal, as if it had come here
            signum = signal.SIGINT if sigint else signal.SIGTERM if sigterm else 0
        return mean / self.size, signum

    def broadcast(self, value: float, device) -> float:
        """Rank 0's value, in every process (a number: float64 holds a step count exactly)."""
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return t.item()

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


def setup(device):
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA, each process on the GPU of its LOCAL_RANK
    unless --device names one); returns (World, this process's device)."""
    if not launched():
        return World(), device
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise MakemoreError("this torch build has no torch.distributed; train with one process")
    world = World(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if device.index is None:
            if world.local_rank >= torch.cuda.device_count():
                raise OptionError(f"{torch.cuda.device_count()} GPU(s) on this machine but process "
                                  f"{world.local_rank} needs its own: use --nproc-per-node "
                                  f"{torch.cuda.device_count()} or fewer")
            device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise OptionError(f"--device {device.type}: training with torchrun runs on cpu or cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return world, device


def teardown(together: bool = False) -> None:
    """Leave the process group; together: first wait for the others (they all reach this point), since a gloo
    process left while another held its connection aborted about once in 30 runs."""
    if launched():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def leaves_process_group(function):
    """Decorator: leave the process group when function ends: together after a return or an agreed stop,
    at once after an error of this process's own (the others may never come)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            teardown(together=isinstance(error, Interrupted))
            raise
        teardown(together=True)
        return result

    return wrapper
