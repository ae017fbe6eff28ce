"""Data-parallel training across processes started by torchrun, with torch's DistributedDataParallel.

torchrun starts every process with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its
environment. With WORLD_SIZE above 1 each process holds a full copy of the model and trains on its own
part of every batch; DDP averages the gradients, so the copies stay identical. Rank 0 alone evaluates,
prints and writes checkpoints. Without torchrun (or with one process) nothing here does anything.

The rank helpers read the environment only, so the CLI can ask them without importing torch.
"""
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
        """The module to run forward/backward through: DDP around model when there are several processes.

        The model itself stays the one to evaluate and save: its state_dict has no 'module.' prefix.
        """
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
        """At a log point: the train loss averaged over processes, and the stop signal if any process got one.

        This is the only exchange besides DDP's gradient all-reduce, and it happens at log points only,
        so stopping never costs a synchronisation per step.
        """
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

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


def setup(device):
    """Join the process group torchrun set up the environment for; returns (World, this process's device).

    gloo on the CPU, nccl on CUDA, where each process takes the GPU numbered by its LOCAL_RANK unless
    --device names one.
    """
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
    """Leave the process group; together: first wait for the others (they all reach this point).

    Leaving together matters: a gloo process that left while another still held its connection was
    seen to abort ('terminate called without an active exception') about once in 30 runs.
    """
    if launched():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def leaves_process_group(function):
    """Decorator: leave the process group (set up inside function by setup) when function ends.

    After a return or an agreed stop every process gets here, so they leave together; after an error
    of one process's own the others may never come, so it leaves at once.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except Interrupted:
            teardown(together=True)
            raise
        except BaseException:
            teardown()
            raise
        teardown(together=True)
        return result

    return wrapper
