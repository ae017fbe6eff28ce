"""The one training loop. It knows no model: it needs only logits = model(contexts).

It draws random batches, steps the optimizer under a learning-rate schedule, evaluates on dev now and
then, keeps the best-on-dev weights, and hands its state to a callback that writes checkpoints. Nothing
here prints to stdout; progress goes to a tqdm bar on stderr.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

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
def evaluate(model, dataset, batch_size: int | None = None) -> float:
    """Mean negative log-likelihood per predicted token (nats), summed in float64."""
    if len(dataset) == 0:
        return float("nan")
    if batch_size is None:
        # on the CPU a chunk whose activations stay in cache is faster than a large one (the lecture's
        # MLP on its dev set: 26 ms in chunks of 4,096 against 42 ms in chunks of 16,384)
        batch_size = 4096 if dataset.positions.device.type == "cpu" else 65536
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
        try:  # one fused kernel for all parameters: 3x less time per step than foreach on the CPU
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, fused=True)
        except RuntimeError:  # a device without the fused kernel
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd, foreach=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


@torch.no_grad()
def divergence_limit(model, x, y) -> float:
    """A train loss above this means the run diverged: ten times the loss at the start, or ten times a
    uniform guess's log(vocab_size) when that is larger (a resumed run starts low)."""
    was_training = model.training
    model.eval()
    logits = model(x)
    start = F.cross_entropy(logits.double(), y).item()
    model.train(was_training)
    return 10 * max(start, math.log(logits.shape[-1])) if math.isfinite(start) else math.inf


class FastStep:
    """optimizer.step(), with the Python bookkeeping done once instead of at every step.

    torch's optimizers collect parameters, gradients and state anew at every call; for the lecture's
    small MLP that bookkeeping costs as much as the maths. For plain SGD and fused AdamW with one
    parameter group this calls the same kernels the optimizers call, on lists gathered once; anything
    else (momentum, several groups, a parameter without a gradient) goes through optimizer.step().
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else None
        self.params = list(self.group["params"]) if self.group else []
        self.kind = None
        g = self.group
        if g is None or g.get("maximize") or g.get("differentiable"):
            return
        if isinstance(optimizer, torch.optim.SGD) and g["momentum"] == 0 and hasattr(torch, "_foreach_add_"):
            self.kind = "sgd"
        elif (isinstance(optimizer, torch.optim.AdamW) and g.get("fused") and not g["amsgrad"]
              and not g.get("capturable") and hasattr(torch, "_fused_adamw_")):
            self.kind = "adamw"
        self.adam_state = None

    def _adam_lists(self):
        state = self.optimizer.state
        if not all(p in state and "exp_avg" in state[p] for p in self.params):
            return None  # the first step creates the state
        return ([state[p]["exp_avg"] for p in self.params], [state[p]["exp_avg_sq"] for p in self.params],
                [state[p]["step"] for p in self.params])

    def __call__(self, lr: float) -> None:
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._step(lr)
        return self._step(lr)  # the loop already turned autograd off: no context to enter at every step

    def _step(self, lr: float) -> None:
        g = self.group
        if g is not None:
            g["lr"] = lr
        grads = [p.grad for p in self.params]
        if self.kind is None or any(grad is None for grad in grads):
            self.optimizer.step()
            return
        if self.kind == "sgd":
            if g["weight_decay"]:
                grads = torch._foreach_add(grads, self.params, alpha=g["weight_decay"])
            torch._foreach_add_(self.params, grads, alpha=-lr)
            return
        if self.adam_state is None:
            self.adam_state = self._adam_lists()
            if self.adam_state is None:
                self.optimizer.step()
                return
        exp_avgs, exp_avg_sqs, steps = self.adam_state
        beta1, beta2 = g["betas"]
        torch._foreach_add_(steps, 1)
        try:
            torch._fused_adamw_(self.params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr,
                                beta1=beta1, beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"],
                                maximize=False, grad_scale=None, found_inf=None)
        except TypeError:  # a torch whose private kernel takes other arguments: the public path
            torch._foreach_add_(steps, -1)
            self.kind = None
            self.optimizer.step()


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

    The step itself is kept lean, because for small models the per-step overhead, not the maths, sets
    the speed: batches are gathered for many steps at once, the loss is read back only at log points,
    a model with a step_by_hand method does its steps without autograd (and with plain SGD applies
    the update itself), and otherwise the optimizer step goes through FastStep.

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
    optimizer_step = FastStep(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
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
    # a model that writes out its own steps skips autograd (DDP needs autograd's hooks, so not there)
    make_step = getattr(model, "step_by_hand", None) if world.size == 1 and penalty is None else None
    fused_sgd = make_step is not None and optimizer_step.kind == "sgd"
    by_hand = make_step(sgd=fused_sgd) if make_step is not None else None
    sgd_group = optimizer.param_groups[0] if fused_sgd else None
    N, B = len(train_set), config.batch_size
    # Batches are drawn in chunks of random indices (one randint call per chunk, not per step); the
    # generator state at a chunk's start is what a checkpoint keeps, so resuming redraws the same chunk.
    # Every process draws the global batch, as one process with world.size x B would, and keeps its own
    # columns: the processes see different examples and share one generator state to resume from.
    chunk = BATCH_CHUNK
    mine = world.columns(B)
    # Contexts are gathered for `group` steps at once (about 64k examples), then handed out as views.
    group = max(1, min(chunk, 65536 // B))

    model.train()
    t0 = time.perf_counter() - state.elapsed
    losses = []  # this log interval's losses, still on the device: reading them back would sync
    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, leave=False,
               dynamic_ncols=True, mininterval=0.5, desc=f"training {getattr(model, 'name', '')}".strip())
    step = state.step
    chunk_start = step - step % chunk
    chunk_rng = state.rng if state.rng is not None else gen.get_state()
    gen.set_state(chunk_rng)
    batches = torch.randint(N, (chunk, B * world.size), generator=gen)[:, mine].to(device)
    limit = divergence_limit(model, *train_set.batch(batches[step - chunk_start]))
    xs = ys = ()
    group_start = step

    def mark() -> LoopState:
        """Record where we are: the generator state from which the next batch indices are drawn."""
        at_chunk_end = step - chunk_start == chunk
        state.rng = gen.get_state() if at_chunk_end else chunk_rng
        state.elapsed = time.perf_counter() - t0
        state.optimizer = optimizer.state_dict()
        return state

    def next_event(step: int) -> int:
        """The next step after which the loop logs or evaluates."""
        return min(config.steps, (step // log_every + 1) * log_every, (step // eval_every + 1) * eval_every)

    event = next_event(step)
    modes = ExitStack()
    try:
        if by_hand is not None:
            # Steps by hand need no graph, and inference mode also skips autograd's bookkeeping on
            # every op (about a tenth of a step at the lecture's sizes). The optimizer state made in it
            # is saved by value and dropped with the optimizer at the end, never used by autograd.
            modes.enter_context(torch.inference_mode())
        while step < config.steps:
            if step - chunk_start == chunk:
                chunk_start = step
                chunk_rng = gen.get_state()
                batches = torch.randint(N, (chunk, B * world.size), generator=gen)[:, mine].to(device)
            if step - group_start >= len(xs):
                group_start = step
                rows = batches[step - chunk_start:min(step - chunk_start + group, chunk)]
                x, y = train_set.batch(rows.reshape(-1))
                if by_hand is not None:  # the shapes a step by hand takes: flat contexts, a column of targets
                    xs, ys = x.view(rows.shape[0], -1).unbind(0), y.view(rows.shape[0], B, 1).unbind(0)
                else:
                    xs, ys = x.view(rows.shape[0], B, -1).unbind(0), y.view(rows.shape[0], B).unbind(0)
            lr = config.lr_at(step)
            if by_hand is not None:
                # the probabilities of the targets; their mean -log is the loss, read at log points
                losses.append(by_hand(xs[step - group_start], ys[step - group_start], lr, wd))
                if fused_sgd:
                    sgd_group["lr"] = lr  # the step applied the update; the optimizer keeps the lr it would have
                else:
                    optimizer_step(lr)
            else:
                loss = F.cross_entropy(forward(xs[step - group_start]), ys[step - group_start])
                objective = loss + penalty(wd) if penalty is not None and wd else loss
                for p in params:
                    p.grad = None
                objective.backward()
                optimizer_step(lr)
                losses.append(loss.detach())
            step += 1
            state.step = step

            # one process stops at once; several agree on it at the next log point
            halt = stop.signum if stop is not None and world.size == 1 else 0
            if step == event:
                event = next_event(step)
                last = step == config.steps
                if by_hand is not None:
                    # a target probability that underflowed to 0 (a loss beyond 87 nats: a diverging run, or
                    # the lecture's randn init in its first steps) counts as 87 nats (in float32), not as infinity
                    probs = torch.cat(losses)
                    mean_loss = -probs.clamp_min_(torch.finfo(probs.dtype).tiny).log().mean()
                else:
                    mean_loss = torch.stack(losses).mean()
                train_loss, halt = world.agree(mean_loss, stop.signum if stop is not None else 0)
                losses.clear()
                if not math.isfinite(train_loss) or train_loss > limit:
                    raise TrainingError(
                        f"training diverged: the loss became {train_loss:.4g} at step {step} (lr {lr:g}); "
                        f"try a lower --lr such as {config.lr / 10:g}; the best checkpoint so far is kept"
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
                bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False,  # update() redraws, at most twice a second
                                **({"dev": f"{record['dev_loss']:.4f}"} if "dev_loss" in record else {}))
                bar.update(step - bar.n)
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
        modes.close()
        bar.close()
        if by_hand is not None:
            for p in params:
                p.grad = None  # the step's reused buffers: no later backward() may accumulate into them
    return mark()
