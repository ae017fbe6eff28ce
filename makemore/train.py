"""The one training loop. It knows no model: it needs only logits = model(contexts).

It draws random batches, steps the optimizer under a learning-rate schedule, evaluates on dev now and
then, keeps the best-on-dev weights, and hands its state to a callback that writes checkpoints. Nothing
here prints to stdout; progress goes to a tqdm bar on stderr.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F

from makemore.distributed import World
from makemore.errors import TrainingError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine")
BATCH_CHUNK = 256  # steps of batch indices drawn at once; fixed, so resuming redraws the same batches


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    # "step": the lecture's decay, lr x0.1 for the second half; "cosine": down to 0 after a warmup
    schedule: str = "constant"
    warmup: int = 0  # steps of linear warmup (cosine only)
    weight_decay: float = 0.0
    eval_interval: int = 0  # steps between dev evaluations; 0 = ten evaluations per run
    seed: int = 42

    def lr_at(self, step: int) -> float:
        if self.schedule == "step":
            return self.lr if step < self.steps // 2 else self.lr * 0.1
        if self.schedule == "cosine":
            if step < self.warmup:
                return self.lr * (step + 1) / self.warmup
            progress = (step - self.warmup) / max(1, self.steps - self.warmup)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.lr

    def eval_every(self) -> int:
        return self.eval_interval or max(1, self.steps // 10)


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving its state."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopFlag:
    signum = 0


@contextmanager
def stop_on_signals():
    """Turn SIGINT and SIGTERM into a flag that the loop checks between steps."""
    flag = _StopFlag()

    def handler(signum, frame):
        flag.signum = signum

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: no signal handling
        old = {}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 16384) -> float:
    """Mean negative log-likelihood per predicted token (nats), summed in float64."""
    if len(dataset) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    for x, y in dataset.chunks(batch_size):
        logits = model(x)
        total += F.cross_entropy(logits.double(), y, reduction="sum").cpu()
    model.train(was_training)
    return total.item() / len(dataset)


def make_optimizer(model, config: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    # bigram-nn's penalty is the lecture's term in the loss; other models decay in the optimizer
    wd = 0.0 if hasattr(model, "penalty") else config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=wd, foreach=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, foreach=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _clone_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class LoopState:
    """Everything that resumes a run exactly."""

    step: int = 0
    best_dev_loss: float = float("inf")
    best_state: dict | None = None
    optimizer: dict | None = None
    rng: torch.Tensor | None = None  # batch generator state at the start of the current draw
    metrics: list | None = None
    elapsed: float = 0.0


def train_loop(model, train_set, dev_set, config: TrainConfig, state: LoopState | None = None,
               save=None, on_log=None, progress: bool = True, stop=None, world: World = World()) -> LoopState:
    """Train model in place for config.steps steps (resuming from state) and return the final state.

    save(state, model) is called at every evaluation and on interruption; on_log(record) at
    every log point with {step, train_loss, lr, elapsed} (+ dev_loss at evaluations).
    With several processes (world, from makemore.distributed) each trains on its share of every batch
    through DDP; the caller gives dev_set, save and progress to rank 0 only.
    """
    from tqdm import tqdm

    state = state or LoopState()
    state.metrics = state.metrics if state.metrics is not None else []
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    gen = torch.Generator(device="cpu")
    if state.rng is not None:
        gen.set_state(state.rng)
    else:
        gen.manual_seed(config.seed)
    penalty = getattr(model, "penalty", None)
    wd = config.weight_decay
    eval_every = config.eval_every()
    # Log (and check the loss is finite) about 200 times a run; on the CPU reading a loss is free, so
    # a diverging run is caught at the very step it diverges.
    log_every = 1 if device.type == "cpu" and config.steps <= 200 else max(1, min(eval_every, config.steps // 200))
    if world.size > 1:
        # processes exchange the loss and stop flags at log points: not every step, but often enough
        # that a signal stops them well within torchrun's 30 s grace before it kills them
        log_every = min(eval_every, 100, max(10, config.steps // 200))
    forward = world.wrap(model)
    N, B = len(train_set), config.batch_size
    # Batches are drawn in chunks of random indices (one randint call per chunk, not per step); the
    # generator state at a chunk's start is what a checkpoint keeps, so resuming redraws the same chunk.
    # Every process draws the global batch, as one process with world.size x B would, and keeps its own
    # columns: the processes see different examples and share one generator state to resume from.
    chunk = BATCH_CHUNK
    mine = world.columns(B)

    model.train()
    t0 = time.perf_counter() - state.elapsed
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, leave=False,
               dynamic_ncols=True, mininterval=0.5, desc=f"training {getattr(model, 'name', '')}".strip())
    step = state.step
    chunk_start = step - step % chunk
    chunk_rng = state.rng if state.rng is not None else gen.get_state()
    gen.set_state(chunk_rng)
    batches = torch.randint(N, (chunk, B * world.size), generator=gen)[:, mine].to(device)
    def mark() -> LoopState:
        """Record where we are: the generator state from which the next batch indices are drawn."""
        at_chunk_end = step - chunk_start == chunk
        state.rng = gen.get_state() if at_chunk_end else chunk_rng
        state.elapsed = time.perf_counter() - t0
        state.optimizer = optimizer.state_dict()
        return state

    try:
        while step < config.steps:
            if step - chunk_start == chunk:
                chunk_start = step
                chunk_rng = gen.get_state()
                batches = torch.randint(N, (chunk, B * world.size), generator=gen)[:, mine].to(device)
            lr = config.lr_at(step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = train_set.batch(batches[step - chunk_start])
            loss = F.cross_entropy(forward(x), y)
            objective = loss + penalty(wd) if penalty is not None and wd else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            loss_sum += loss.detach()
            loss_count += 1
            step += 1
            state.step = step

            last = step == config.steps
            # one process stops at once; several agree on it at the next log point
            halt = stop.signum if stop is not None and world.size == 1 else 0
            if step % log_every == 0 or last or step % eval_every == 0:
                train_loss, halt = world.agree(loss_sum / loss_count, stop.signum if stop is not None else 0)
                loss_sum.zero_()
                loss_count = 0
                if not math.isfinite(train_loss):
                    raise TrainingError(
                        f"the loss became {train_loss} at step {step} (lr {lr:g}): try a lower --lr; "
                        "the best checkpoint so far is kept"
                    )
                record = dict(step=step, train_loss=round(train_loss, 6), lr=lr)
                if step % eval_every == 0 or last:
                    if dev_set is not None and len(dev_set):
                        dev_loss = evaluate(model, dev_set)
                        record["dev_loss"] = round(dev_loss, 6)
                        if dev_loss < state.best_dev_loss:
                            state.best_dev_loss = dev_loss
                            state.best_state = _clone_state(model)
                    else:  # without a dev split the latest weights are the ones kept
                        state.best_state = _clone_state(model)
                    evaluated = True
                else:
                    evaluated = False
                record["elapsed"] = round(time.perf_counter() - t0, 3)
                state.metrics.append(record)
                if on_log is not None:
                    on_log(record)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{train_loss:.4f}",
                                **({"dev": f"{record['dev_loss']:.4f}"} if "dev_loss" in record else {}))
                if evaluated and save is not None:
                    save(mark(), model)
            if halt:
                if state.best_state is None:
                    state.best_state = _clone_state(model)
                if save is not None:
                    save(mark(), model)
                world.barrier()  # the others wait for rank 0's checkpoint before torchrun sees them exit
                raise Interrupted(halt)
    finally:
        bar.close()
    return mark()


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
