"""The one training loop. It knows no model: it needs only logits = model(contexts), shaped like the targets
plus a vocabulary dimension, and computes every model's loss in one place (loss_of).

The loop is a few parts with one job each:

- BatchSampler (makemore.batches): the batch of every step, resumable exactly;
- TrainStep: one optimizer step on a batch, through autograd; lr-find (makemore.instruments.lr_sweep) takes
  the same step;
- Cadence: after which steps the loop logs and evaluates;
- Divergence: stops a run whose train loss blows up;
- BestKeeper: evaluates on dev and keeps the best-on-dev weights;
- Progress: the log records (the state's metrics, on_log) and a tqdm bar on stderr;
- the caller's save(state, model), which writes checkpoints;
- stop_on_signals and World.agree: stopping on SIGINT or SIGTERM, all processes together under torchrun.

Nothing here prints to stdout.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from makemore import memory
from makemore.batches import BatchSampler
from makemore.dataset import IGNORE
from makemore.distributed import World
from makemore.errors import Interrupted, TrainingError
from makemore.options import option
from makemore.threads import Governor

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine")
DECAYS = ("decoupled", "penalty")


@dataclass
class TrainConfig:
    """The loop's settings; each model's train_defaults override these defaults, the user's flags both."""

    steps: int = option(10000, "Optimizer steps (with --resume: the new total).", low=0, high=10**9)
    batch_size: int = option(32, "Examples per step, per process under torchrun (N processes: N x this).",
                             low=1, high=1 << 24)
    lr: float = option(0.1, "Learning rate (the peak of the schedule).", low=0.0, low_open=True, high=1e6)
    optimizer: str = option("sgd", "The optimizer.", choices=OPTIMIZERS)
    # "step": the lecture's decay, lr x0.1 for the second half; "cosine": down to 0 after a warmup
    schedule: str = option("constant", "constant; step (the lecture's: lr/10 after --decay-at of the steps); cosine.",
                           choices=SCHEDULES)
    # the lecture's MLP drops its rate half way (0.5), its WaveNet for the last quarter (0.75)
    decay_at: float = option(0.5, "With --schedule step: the fraction of the steps after which the rate drops "
                             "tenfold.", low=0.0, high=1.0)
    warmup: int = option(0, "Linear warmup steps (cosine).", low=0, high=10**9)
    weight_decay: float = option(0.0, "Weight decay, acting as --decay says.", low=0.0, high=1e6)
    # bigram-nn's default is the lecture's penalty: for its one weight W, weight_decay * (W**2).mean()
    decay: str = option("decoupled", "Where --weight-decay acts: decoupled, the optimizer's decay of every weight; "
                        "penalty, the term weight_decay * mean(w**2) over all trained weights added to the loss.",
                        choices=DECAYS)
    eval_interval: int = option(0, "Steps between dev evaluations; 0: ten evaluations per run.", low=0,
                                high=10**9)
    seed: int = option(42, "Seed of initialisation and batches.", low=0, high=2**63 - 1)

    def lr_at(self, step: int) -> float:
        if self.schedule == "step":
            return self.lr if step < int(self.steps * self.decay_at) else self.lr * 0.1
        if self.schedule == "cosine":
            if step < self.warmup:
                return self.lr * (step + 1) / self.warmup
            progress = (step - self.warmup) / max(1, self.steps - self.warmup)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.lr

    def eval_every(self) -> int:
        return self.eval_interval or max(1, self.steps // 10)

    @property
    def penalty(self) -> float:
        """The weight of the decay's term in the loss (0 where the optimizer decays)."""
        return self.weight_decay if self.decay == "penalty" else 0.0


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


def long_work(total: int, progress: bool, desc: str) -> tqdm:
    """A progress bar on stderr for work of total chunks that may take a while: it shows itself only after a
    second, so that quick work stays silent and long work is never a silence."""
    return tqdm(total=total, disable=not progress, delay=1.0, leave=False, mininterval=1.0, desc=desc)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int | None = None, progress: bool = False) -> float:
    """Mean negative log-likelihood per predicted token (nats), summed in float64; with progress, a bar on
    stderr when it takes more than a second."""
    if len(dataset) == 0:
        return float("nan")
    if batch_size is None:
        # on the CPU a chunk whose activations stay in cache is faster than a large one (the lecture's
        # MLP on its dev set: 26 ms in chunks of 4,096 against 42 ms in chunks of 16,384)
        batch_size = 4096 if dataset.positions.device.type == "cpu" else 65536
    if dataset.whole_items:  # a row is up to width predictions
        batch_size = max(1, batch_size // dataset.width)
    # smaller chunks where a row is large (a wide context, many heads): the loss is the same sum
    batch_size = chunk_rows(model, batch_size, dataset.positions.device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    with long_work(-(-len(dataset) // batch_size), progress, "evaluating") as bar:
        for x, y in dataset.chunks(batch_size):
            total += loss_of(model(x).double(), y, reduction="sum").cpu()
            bar.update()
    model.train(was_training)
    return total.item() / dataset.n_targets


def chunk_rows(model, wanted: int, device: torch.device) -> int:
    """The rows of a forward pass without gradients, at most wanted, that fit in half the memory this process
    may still allocate (makemore.memory.rows_that_fit); MakemoreError when not one does."""
    return memory.rows_that_fit(type(model), model.config, model.vocab_size, device, wanted)


def loss_of(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Every model's loss: cross-entropy of logits shaped like the targets plus a vocabulary dimension,
    positions whose target is IGNORE left out."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


def seed_step(seed: int, step: int, rank: int, device: torch.device) -> None:
    """Seed the generator that draws what is random within a step (dropout's masks) from the run's seed,
    the step and the process, so that a resumed run draws what the run never stopped would have drawn.
    Only the device's own generator: seeding every device's costs 75 µs a step, this about 1 µs."""
    value = (seed * 1_000_003 + step * 64 + rank) % (1 << 63)
    if device.type == "cuda":
        torch.cuda.manual_seed(value)
    else:
        torch.default_generator.manual_seed(value)


def make_optimizer(model, config: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    wd = config.weight_decay if config.decay == "decoupled" else 0.0
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=wd, foreach=True)
    if config.optimizer == "adamw":
        try:  # one fused kernel for all parameters: 3x less time per step than foreach on the CPU
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, fused=True)
        except RuntimeError:  # a device without the fused kernel
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, foreach=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


class TrainStep:
    """One optimizer step on a batch: step(contexts, targets, lr). take_loss() is the mean train loss of the
    steps since its last call, a tensor on the device (reading it back is the step's only synchronisation).

    With a penalty (TrainConfig.penalty) the objective is the loss plus penalty * mean(w**2) over all the
    trained weights; the loss recorded is the model's alone. The optimizer's lr is set at every step, so its
    state_dict records the lr of the last step.
    """

    def __init__(self, model, optimizer, penalty: float = 0.0, world: World = World()):
        self.optimizer, self.groups = optimizer, optimizer.param_groups
        self.params = [p for group in self.groups for p in group["params"]]
        self.penalty = penalty
        self.forward = world.wrap(model)
        self.whole_items = model.whole_items
        # the sum of the steps' losses since take_loss and its count of terms: a running sum, not a list of
        # each step's tensors, which grew by about a step's activations per step kept (measured: bigram-nn at
        # batch 8192, 800 KB a step, so a million steps, 5,000 between log points, grew by 150 MB/s)
        self.loss_sum, self.terms, self.loss_dtype = None, 0, torch.float32

    def __call__(self, contexts: torch.Tensor, targets: torch.Tensor, lr: float) -> None:
        for group in self.groups:
            group["lr"] = lr
        if self.whole_items:  # rows are as wide as the longest item: read only as far as this batch's longest
            width = int((targets != IGNORE).any(0).nonzero()[-1]) + 1
            contexts, targets = contexts[:, :width], targets[:, :width]
        loss = loss_of(self.forward(contexts), targets)
        objective = loss
        if self.penalty:
            objective = loss + self.penalty * torch.cat([p.flatten() for p in self.params]).square().mean()
        for p in self.params:
            p.grad = None
        objective.backward()
        self.optimizer.step()
        if self.loss_sum is None:  # float64 where the device has it: thousands of steps add up without drift
            wide = torch.float32 if loss.device.type == "mps" else torch.float64
            self.loss_sum, self.loss_dtype = torch.zeros((), dtype=wide, device=loss.device), loss.dtype
        self.loss_sum.add_(loss.detach())
        self.terms += 1

    def take_loss(self) -> torch.Tensor:
        """The mean train loss of the steps since the last call (nan when none)."""
        if self.loss_sum is None:
            return torch.tensor(math.nan, dtype=self.loss_dtype)
        loss = (self.loss_sum / max(1, self.terms)).to(self.loss_dtype)
        self.loss_sum.zero_()
        self.terms = 0
        return loss


class Cadence:
    """After which steps the loop logs (reads the train loss back, checks it, and under torchrun agrees with
    the other processes on stopping) and after which it evaluates."""

    def __init__(self, config: TrainConfig, device: torch.device, world: World = World()):
        self.steps, self.eval_every = config.steps, config.eval_every()
        # Log (and check the loss is finite) about 200 times a run; on the CPU reading a loss is free, so
        # a diverging run is caught at the very step it diverges.
        if world.size > 1:
            # processes exchange the loss and stop flags at log points: not every step, but often enough
            # that a signal stops them well within torchrun's 30 s grace before it kills them
            self.log_every = min(self.eval_every, 100, max(10, config.steps // 200))
        elif device.type == "cpu" and config.steps <= 200:
            self.log_every = 1
        else:
            self.log_every = max(1, min(self.eval_every, config.steps // 200))

    def next_log(self, step: int) -> int:
        """The first step after step at which the loop logs (every evaluation is also a log point)."""
        return min(self.steps, (step // self.log_every + 1) * self.log_every,
                   (step // self.eval_every + 1) * self.eval_every)

    def evaluates(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.steps


class Divergence:
    """A train loss above limit means the run diverged: ten times the loss at the start, or ten times a
    uniform guess's log(vocab_size) when that is larger (a resumed run starts low)."""

    @torch.no_grad()
    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, config: TrainConfig):
        was_training = model.training
        model.eval()
        logits = model(x)
        start = loss_of(logits.double(), y).item()
        model.train(was_training)
        self.limit = 10 * max(start, math.log(logits.shape[-1])) if math.isfinite(start) else math.inf
        self.config = config

    def check(self, train_loss: float, step: int, lr: float) -> None:
        if not math.isfinite(train_loss) or train_loss > self.limit:
            raise TrainingError(
                f"training diverged: the loss became {train_loss:.4g} at step {step} (lr {lr:g}); "
                f"try a lower --lr such as {self.config.lr / 10:g}; the best checkpoint so far is kept"
            )


def _clone_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class LoopState:
    """Everything that resumes a run exactly."""

    step: int = 0
    best_dev_loss: float = float("inf")
    best_state: dict | None = None
    optimizer: dict | None = None
    rng: torch.Tensor | None = None  # where the batches resume (BatchSampler.resume_state)
    metrics: list | None = None
    elapsed: float = 0.0


class BestKeeper:
    """Evaluates the model on dev and keeps the best-on-dev weights and loss in state; without a dev split
    the latest weights are the ones kept."""

    def __init__(self, model, dev_set, state: LoopState):
        self.model, self.state = model, state
        self.dev_set = dev_set if dev_set is not None and len(dev_set) else None

    def evaluate(self) -> float | None:
        """The dev loss now (None without a dev split), keeping the weights if they are the best so far."""
        if self.dev_set is None:
            self.state.best_state = _clone_state(self.model)
            return None
        dev_loss = evaluate(self.model, self.dev_set)
        if dev_loss < self.state.best_dev_loss:
            self.state.best_dev_loss = dev_loss
            self.state.best_state = _clone_state(self.model)
        return dev_loss

    def keep_some(self) -> None:
        """Before a checkpoint of a run stopped early: the current weights, if none are kept yet."""
        if self.state.best_state is None:
            self.state.best_state = _clone_state(self.model)


class Progress:
    """The log records ({step, train_loss, lr, dev_loss at evaluations, elapsed}): appended to the metrics,
    handed to on_log, and shown on a tqdm bar on stderr (when show)."""

    def __init__(self, metrics: list, total: int, initial: int, on_log=None, show: bool = True, desc: str = ""):
        self.metrics, self.on_log = metrics, on_log
        self.bar = tqdm(total=total, initial=initial, disable=not show, leave=False, dynamic_ncols=True,
                        mininterval=0.5, desc=desc)

    def log(self, record: dict) -> None:
        self.metrics.append(record)
        if self.on_log is not None:
            self.on_log(record)
        dev = {"dev": f"{record['dev_loss']:.4f}"} if "dev_loss" in record else {}
        # refresh=False: update() redraws, at most twice a second
        self.bar.set_postfix(loss=f"{record['train_loss']:.4f}", refresh=False, **dev)
        self.bar.update(record["step"] - self.bar.n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def train_loop(model, train_set, dev_set, config: TrainConfig, state: LoopState | None = None,
               save=None, on_log=None, progress: bool = True, stop=None, world: World = World(),
               governor: Governor | None = None) -> LoopState:
    """Train model in place for config.steps steps (resuming from state) and return the final state.

    save(state, model) is called at every evaluation and on interruption; on_log(record) at every log
    point with {step, train_loss, lr, elapsed} (+ dev_loss at evaluations).

    The step is kept lean, because for small models the per-step overhead, not the maths, sets the speed:
    batches are gathered for many steps at once (BatchSampler) and the loss is read back only at log points.

    With several processes (world, from makemore.distributed) each trains on its share of every batch
    through DDP; the caller gives dev_set, save and progress to rank 0 only. A governor (makemore.threads)
    hears of every step and may change torch's thread count as the machine's load changes; without one the
    count stays as the caller set it.
    """
    governor = governor or Governor.keeping(torch.get_num_threads())
    state = state or LoopState()
    state.metrics = state.metrics if state.metrics is not None else []
    optimizer = make_optimizer(model, config)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    device = next(model.parameters()).device
    cadence = Cadence(config, device, world)
    keeper = BestKeeper(model, dev_set, state)
    solo_stop = stop if world.size == 1 else None  # one process stops at once; several at a log point
    model.train()
    t0 = time.perf_counter() - state.elapsed

    def snapshot() -> LoopState:
        """The state as a checkpoint keeps it: where the batches resume, the time, the optimizer."""
        state.rng = batches.resume_state()
        state.elapsed = time.perf_counter() - t0
        state.optimizer = optimizer.state_dict()
        return state

    train_step = TrainStep(model, optimizer, config.penalty, world)
    with Progress(state.metrics, config.steps, state.step, on_log, progress, f"training {model.name}") as shown:
        batches = BatchSampler(train_set, config.batch_size, config.seed, state.rng, state.step, world)
        divergence = Divergence(model, *batches.peek(), config)
        step = state.step
        event = cadence.next_log(step)
        if solo_stop is not None and solo_stop.signum:  # before the first step: nothing worth a checkpoint
            raise Interrupted(solo_stop.signum, saved=False)
        while step < config.steps:
            lr = config.lr_at(step)
            seed_step(config.seed, step, world.rank, device)
            train_step(*batches.next(), lr)
            step += 1
            state.step = step
            governor.tick(step)
            halt = solo_stop.signum if solo_stop is not None else 0
            if step == event:  # a log point
                event = cadence.next_log(step)
                train_loss, halt = world.agree(train_step.take_loss(), stop.signum if stop is not None else 0)
                divergence.check(train_loss, step, lr)
                record = dict(step=step, train_loss=round(train_loss, 6), lr=lr)
                evaluated = cadence.evaluates(step)
                if evaluated:
                    with governor.paused():  # an evaluation is not a step: its time is left out
                        dev_loss = keeper.evaluate()
                    if dev_loss is not None:
                        record["dev_loss"] = round(dev_loss, 6)
                record["elapsed"] = round(time.perf_counter() - t0, 3)
                shown.log(record)
                if evaluated and save is not None:
                    with governor.paused():
                        save(snapshot(), model)
            if halt:
                keeper.keep_some()
                if save is not None:
                    save(snapshot(), model)
                world.barrier()  # the others wait for rank 0's checkpoint before torchrun sees them exit
                raise Interrupted(halt)
    return snapshot()
