"""The one training loop. It knows no model: it needs only logits = model(contexts), shaped like the targets
plus a vocabulary dimension, and computes every model's loss in one place (loss_of). Nothing here prints to stdout.
"""
from __future__ import annotations

import copy
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from makemore import budget as budgets
from makemore import memory
from makemore.batches import BatchSampler
from makemore.budget import Budget
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
    schedule: str = option("constant", "constant; step (the lecture's: lr/10 after --decay-at of the steps); cosine.",
                           choices=SCHEDULES)
    # the lecture's MLP drops its rate half way (0.5), its WaveNet for the last quarter (0.75)
    decay_at: float = option(0.5, "With --schedule step: the fraction of the steps after which the rate drops "
                             "tenfold.", low=0.0, high=1.0)
    warmup: int = option(0, "Linear warmup steps (cosine).", low=0, high=10**9)
    weight_decay: float = option(0.0, "Weight decay, acting as --decay says.", low=0.0, high=1e6)
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

    @property
    def penalty(self) -> float:
        """The weight of the decay's term in the loss (0 where the optimizer decays)."""
        return self.weight_decay if self.decay == "penalty" else 0.0


@contextmanager
def stop_on_signals():
    """Turn SIGINT and SIGTERM into a flag that the loop checks between steps."""
    flag = SimpleNamespace(signum=0)

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
    """A progress bar on stderr that shows itself only after a second: quick work stays silent, long work is
    never a silence."""
    return tqdm(total=total, disable=not progress, delay=1.0, leave=False, mininterval=1.0, desc=desc)


@torch.no_grad()
def evaluate(model, dataset, progress: bool = False) -> float:
    """Mean negative log-likelihood per predicted token (nats), summed in float64, in chunks that fit memory."""
    if len(dataset) == 0:
        return float("nan")
    # on the CPU a chunk whose activations stay in cache is faster (the lecture's MLP on its dev set: 26 ms in
    # chunks of 4,096, 42 ms in chunks of 16,384)
    batch_size = 4096 if dataset.positions.device.type == "cpu" else 65536
    if dataset.whole_items:  # a row is up to width predictions
        batch_size = max(1, batch_size // dataset.width)
    # smaller chunks where a row is large (a wide context, many heads): the loss is the same sum
    batch_size = chunk_rows(model, batch_size, dataset.positions.device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    with long_work(-(-len(dataset) // batch_size), progress, "evaluating") as bar:
        for x, y, label in dataset.chunks(batch_size):
            total += loss_of(model(x, label).double(), y, reduction="sum").cpu()
            bar.update()
    model.train(was_training)
    return total.item() / dataset.n_targets


def chunk_rows(model, wanted: int, device: torch.device) -> int:
    """The rows of a forward pass without gradients, at most wanted, that fit in memory
    (makemore.memory.rows_that_fit); MakemoreError when not one does."""
    return memory.rows_that_fit(type(model), model.config, model.vocab_size, device, wanted)


def loss_of(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Every model's loss: cross-entropy of logits shaped like the targets plus a vocabulary dimension,
    positions whose target is IGNORE left out."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


def seed_step(seed: int, step: int, rank: int, device: torch.device) -> None:
    """Seed what is random within a step (dropout's masks) from the run's seed, the step and the process, so
    that a resumed run draws what an uninterrupted one would. Only the device's own generator: 1 µs, not 75."""
    value = (seed * 1_000_003 + step * 64 + rank) % (1 << 63)
    if device.type == "cuda":
        torch.cuda.manual_seed(value)
    else:
        torch.default_generator.manual_seed(value)


def make_optimizer(model, config: TrainConfig):
    """The optimizer over the model's parameter groups (Model.parameter_groups): weight decay on the decayed ones."""
    wd = config.weight_decay if config.decay == "decoupled" else 0.0
    groups = [dict(params=params, weight_decay=wd if decays else 0.0) for params, decays in model.parameter_groups()]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, foreach=True)
    if config.optimizer == "adamw":
        try:  # one fused kernel for all parameters: 3x less time per step than foreach on the CPU
            return torch.optim.AdamW(groups, lr=config.lr, betas=model.adam_betas, fused=True)
        except RuntimeError:  # a device without the fused kernel
            return torch.optim.AdamW(groups, lr=config.lr, betas=model.adam_betas, foreach=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


class TrainStep:
    """One optimizer step on a batch: step(contexts, targets, label, lr), through autograd, the lr set at every step.
    With a penalty (TrainConfig.penalty) it descends the loss plus penalty * mean(w**2) over the trained weights;
    take_loss() gives the mean loss alone of the steps since its last call."""

    def __init__(self, model, optimizer, penalty: float = 0.0, world: World = World()):
        self.optimizer, self.groups = optimizer, optimizer.param_groups
        self.params = [p for group in self.groups for p in group["params"]]
        self.penalty = penalty
        self.n_weights = sum(p.numel() for p in self.params)
        self.forward = world.wrap(model)
        self.whole_items = model.whole_items
        # a running sum of the losses on the device, not a list of each step's tensors, which kept about a
        # step's activations per step (bigram-nn at batch 8192: 150 MB/s)
        self.loss_sum, self.terms = None, 0

    def __call__(self, contexts: torch.Tensor, targets: torch.Tensor, label: torch.Tensor | None, lr: float) -> None:
        for group in self.groups:
            group["lr"] = lr
        if self.whole_items:  # rows are as wide as the longest item: read only as far as this batch's longest
            width = int((targets != IGNORE).any(0).nonzero()[-1]) + 1
            contexts, targets = contexts[:, :width], targets[:, :width]
        loss = loss_of(self.forward(contexts, label), targets)
        objective = loss
        if self.penalty:
            # mean(w**2) over all the weights, without a concatenated copy of them (bigram-nn's W is V x V)
            squares = sum(p.square().sum() for p in self.params)
            objective = loss + self.penalty * squares / self.n_weights
        for p in self.params:
            p.grad = None
        objective.backward()
        self.optimizer.step()
        if not self.terms:  # float64 where the device has it: thousands of steps add up without drift
            wide = torch.float32 if loss.device.type == "mps" else torch.float64
            self.loss_sum, self.loss_dtype = torch.zeros((), dtype=wide, device=loss.device), loss.dtype
        self.loss_sum.add_(loss.detach())
        self.terms += 1

    def take_loss(self) -> torch.Tensor:
        """The mean train loss of the steps since the last call (nan when none), a tensor on the device:
        reading it back is the only synchronisation of the steps."""
        if not self.terms:
            return torch.tensor(math.nan)
        loss = (self.loss_sum / self.terms).to(self.loss_dtype)
        self.terms = 0
        return loss


def log_interval(config: TrainConfig, eval_every: int, device: torch.device, world: World) -> int:
    """Steps between log points, where the loop reads the train loss back and checks it: about 200 a run, and
    every step of a short run on the CPU, where reading a loss is free."""
    if world.size > 1:
        # the processes agree on stopping at log points: often enough that a signal stops them well within
        # torchrun's 30 s grace before it kills them
        return min(eval_every, 100, max(10, config.steps // 200))
    if device.type == "cpu" and config.steps <= 200:
        return 1
    return max(1, min(eval_every, config.steps // 200))


@torch.no_grad()
def divergence_limit(model, x: torch.Tensor, y: torch.Tensor, label: torch.Tensor | None = None) -> float:
    """A train loss above it means the run diverged: ten times the loss on the batch (x, y), or ten times a
    uniform guess's log(vocab_size) when that is larger (a resumed run starts low)."""
    was_training = model.training
    model.eval()
    logits = model(x, label)
    start = loss_of(logits.double(), y).item()
    model.train(was_training)
    return 10 * max(start, math.log(logits.shape[-1])) if math.isfinite(start) else math.inf


def _steps_left(state: LoopState, config: TrainConfig):
    """The loop's steps, config.steps read anew after each: a time budget's revision may change it."""
    while state.step < config.steps:
        yield state.step


def lr_at(config: TrainConfig, time_budget: dict | None, step: int) -> float:
    """The learning rate of step: config's schedule, or for a run on a time budget that schedule laid over its
    planned steps, the rest stretched or shrunk at each revision (budget.position)."""
    if time_budget is None:
        return config.lr_at(step)
    planned = time_budget["planned_steps"]
    position = budgets.position(step, time_budget)
    return config.lr_at(position) if planned == config.steps else TrainConfig(
        **dict(vars(config), steps=planned)).lr_at(position)


PROBE_SECONDS = (0.02, 0.3, 3.0)  # the probe's share of the budget, within these seconds
PROBE_STEPS = (3, 2000)  # the fewest and the most steps it times


def measure_steps(model, optimizer, train_step: TrainStep, train_set, config: TrainConfig, world: World,
                  seconds: float, device: torch.device) -> float:
    """Seconds per step of throwaway steps (two to warm up, then for about seconds by rank 0's clock), on batches
    of their own; then their effect is undone: the weights, buffers and optimizer state are restored, and the run's
    batches and dropout masks (seeded per step) are those it would have drawn without them."""
    # the optimizer's own state and group objects are restored in place: TrainStep holds its groups
    weights = _clone_state(model)
    moments = {p: copy.deepcopy(s) for p, s in optimizer.state.items()}
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    batches = BatchSampler(train_set, config.batch_size, config.seed + 1, world=world)
    lr = config.lr_at(0)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            train_step(*batches.next(), lr)
        train_step.take_loss().item()  # waits for the device's work
        return time.perf_counter() - t0

    timed(2)
    steps, spent, n = 0, 0.0, PROBE_STEPS[0]
    while n:  # rounds of steps, each at most as many as those before, until about seconds are spent
        spent += timed(n)
        steps += n
        more = 0 if spent >= seconds or steps >= PROBE_STEPS[1] else min(
            steps, PROBE_STEPS[1] - steps, math.ceil((seconds - spent) * steps / max(spent, 1e-9)))
        n = int(world.broadcast(more, device))  # rank 0's count: every process runs the same steps
    rate = world.broadcast(spent / steps, device)
    model.load_state_dict(weights)
    optimizer.state.clear()
    optimizer.state.update(moments)
    for group, saved in zip(optimizer.param_groups, settings):
        group.update(saved)
    return rate


def plan_steps(model, optimizer, train_step: TrainStep, train_set, dev_set, config: TrainConfig, world: World,
               budget: Budget) -> dict:
    """Fix config.steps to fill the budget: the step time measured (measure_steps), one evaluation timed and the
    time already spent and still to spend after the last step subtracted; rank 0's count for every process.
    Returns the record (Budget.record)."""
    device = next(model.parameters()).device
    low, high = PROBE_SECONDS[1:]
    step_seconds = measure_steps(model, optimizer, train_step, train_set, config, world,
                                 min(high, max(low, PROBE_SECONDS[0] * budget.seconds)), device)
    evaluation_seconds = finish_seconds = 0.0
    if world.is_main:  # the others wait for rank 0's count
        timed_set = dev_set if dev_set is not None else train_set  # the caller evaluates train after the loop
        t0 = time.perf_counter()
        evaluate(model, timed_set)
        per_target = (time.perf_counter() - t0) / max(1, timed_set.n_targets)
        evaluation_seconds = per_target * dev_set.n_targets if dev_set is not None else 0.0
        finish_seconds = per_target * budget.final_targets + budget.after_seconds
    evaluations = None if config.eval_interval else 10
    steps = budget.plan(step_seconds, evaluation_seconds, finish_seconds, config.eval_interval or 1, evaluations)
    config.steps = int(world.broadcast(steps, device))
    budget.record["planned_steps"] = config.steps
    return budget.record


def keep_to_budget(budget: Budget, evaluated: bool, seconds: float, step: int, config: TrainConfig, world: World,
                   device: torch.device, bar) -> None:
    """At a log point: note the evaluation's time, and revise the steps when the run would end off its budget
    (rank 0's decision for every process)."""
    if evaluated:
        budget.evaluated(seconds)
    steps = int(world.broadcast(budget.proposal(step), device))
    if steps != config.steps:
        budget.revise(step, steps)
        config.steps = bar.total = steps


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
    time_budget: dict | None = None  # how a time budget set the steps (Budget.record), as the checkpoint keeps it


def train_loop(model, train_set, dev_set, config: TrainConfig, state: LoopState | None = None,
               save=None, on_log=None, progress: bool = True, stop=None, world: World = World(),
               governor: Governor | None = None, budget: Budget | None = None) -> LoopState:
    """Train model in place for config.steps steps (resuming from state), keeping the best-on-dev weights in
    state.best_state (without a dev split, the latest), and return the final state.

    save(state, model) is called at every evaluation and on a stop (stop.signum set, by stop_on_signals);
    on_log(record) at every log point with {step, train_loss, lr, elapsed} (+ dev_loss at evaluations); with
    progress, a bar on stderr. Under torchrun (world) each process trains on its share of every batch through
    DDP; the caller gives dev_set, save and progress to rank 0 only. A governor (makemore.threads) hears of
    every step and may change torch's thread count; without one the count stays as the caller set it. With a
    budget (a fresh run) the step count is chosen to fill it (plan_steps) and may be revised as the run goes.
    """
    governor = governor or Governor.keeping(torch.get_num_threads())
    state = state or LoopState()
    state.metrics = state.metrics if state.metrics is not None else []
    optimizer = make_optimizer(model, config)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    device = next(model.parameters()).device
    dev_set = dev_set if dev_set is not None and len(dev_set) else None
    solo_stop = stop if world.size == 1 else None  # one process stops at once; several at a log point
    model.train()
    t0 = time.perf_counter() - state.elapsed
    train_step = TrainStep(model, optimizer, config.penalty, world)
    # the batches are gathered for many steps at once, and the loss read back only at log points: for small
    # models the per-step overhead, not the maths, sets the speed
    batches = BatchSampler(train_set, config.batch_size, config.seed, state.rng, state.step, world)
    limit = divergence_limit(model, *batches.peek())
    if budget is not None and state.time_budget is None:
        state.time_budget = plan_steps(model, optimizer, train_step, train_set, dev_set, config, world, budget)
    planned = state.time_budget["planned_steps"] if state.time_budget is not None else config.steps
    eval_every = config.eval_interval or max(1, planned // 10)
    log_every = log_interval(config, eval_every, device, world)

    def keep_best() -> float | None:
        """The dev loss now (None without a dev split), keeping the weights if they are the best so far."""
        if dev_set is None:
            state.best_state = _clone_state(model)
            return None
        dev_loss = evaluate(model, dev_set)
        if dev_loss < state.best_dev_loss:
            state.best_dev_loss, state.best_state = dev_loss, _clone_state(model)
        return dev_loss

    def snapshot() -> LoopState:
        """The state as a checkpoint keeps it: where the batches resume, the time, the optimizer."""
        state.rng = batches.resume_state()
        state.elapsed = time.perf_counter() - t0
        state.optimizer = optimizer.state_dict()
        return state

    if solo_stop is not None and solo_stop.signum:  # before the first step: nothing worth a checkpoint
        raise Interrupted(solo_stop.signum, saved=False)
    with tqdm(total=config.steps, initial=state.step, disable=not progress, leave=False, dynamic_ncols=True,
              mininterval=0.5, desc=f"training {model.name}") as bar:
        for step in _steps_left(state, config):
            lr = lr_at(config, state.time_budget, step)
            seed_step(config.seed, step, world.rank, device)
            train_step(*batches.next(), lr)
            state.step = step + 1
            governor.tick(state.step)
            halt = solo_stop.signum if solo_stop is not None else 0
            evaluates = state.step % eval_every == 0 or state.step == config.steps
            if evaluates or state.step % log_every == 0:
                train_loss, halt = world.agree(train_step.take_loss(), stop.signum if stop is not None else 0)
                if not math.isfinite(train_loss) or train_loss > limit:
                    raise TrainingError(
                        f"training diverged: the loss became {train_loss:.4g} at step {state.step} (lr {lr:g}); "
                        f"try a lower --lr such as {config.lr / 10:g}; the best checkpoint so far is kept")
                record = dict(step=state.step, train_loss=round(train_loss, 6), lr=lr)
                postfix = dict(loss=f"{record['train_loss']:.4f}")
                if budget is not None:
                    postfix["left"] = budget.left_text(state.step)
                evaluation_start = time.perf_counter()
                if evaluates:
                    with governor.paused():  # an evaluation is not a step: its time is left out
                        dev_loss = keep_best()
                    if dev_loss is not None:
                        record["dev_loss"] = round(dev_loss, 6)
                        postfix["dev"] = f"{record['dev_loss']:.4f}"
                record["elapsed"] = round(time.perf_counter() - t0, 3)
                state.metrics.append(record)
                if on_log is not None:
                    on_log(record)
                bar.set_postfix(postfix, refresh=False)  # update() redraws, at most twice a second
                bar.update(state.step - bar.n)
                if evaluates and save is not None:
                    with governor.paused():
                        save(snapshot(), model)
                if budget is not None:
                    keep_to_budget(budget, evaluates, time.perf_counter() - evaluation_start, state.step, config,
                                   world, device, bar)
            if halt:
                if state.best_state is None:  # a run stopped before its first evaluation
                    state.best_state = _clone_state(model)
                if save is not None:
                    save(snapshot(), model)
                world.barrier()  # the others wait for rank 0's checkpoint before torchrun sees them exit
                raise Interrupted(halt)
    return snapshot()
