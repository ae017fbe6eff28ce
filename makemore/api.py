"""The library behind the CLI: train, lr-find, mix and inspect here; a loaded model (load, Trained) in
makemore.trained. Raises exceptions, never exits."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import checkpoint, declarations, distributed, instruments, memory, mixing, options, plots, threads
from makemore.batches import BATCH_CHUNK, GATHER
from makemore.constraints import NothingFound, Samples
from makemore.data import DEFAULT_SPLIT_SEED, DEFAULT_SPLITS, Data, Vocab, read_items, read_items_file
from makemore.dataset import build_dataset
from makemore.errors import CheckpointError, DataError, Interrupted, MakemoreError, OptionError
from makemore.files import atomic_write
from makemore.models import get_model_class
from makemore.models.mixture import Mixture, MixtureConfig
from makemore.train import LoopState, TrainConfig, evaluate, make_optimizer, stop_on_signals, train_loop
from makemore.trained import Trained, _changed_data, _model_from, load, resolve_device

PLOT_HINT = plots.INSTALL_HINT
latest = checkpoint.latest  # the checkpoint trained last in a folder

__all__ = ["load", "train", "inspect", "mix", "lr_find", "read_items", "read_items_file", "Data", "Trained", "Samples",
           "resolve_device", "MakemoreError", "OptionError", "NothingFound"]


def model_config(model_name: str, given: dict):
    """The model's config with the given (non-None) options applied, each checked where it is declared;
    an option the model does not take is an OptionError naming the models that take it."""
    given = _given(given)
    declarations.from_classes().check(model_name, given, {})
    return get_model_class(model_name).config_from(given)


def _given(values: dict | None) -> dict:
    """The options the user gave: those not None."""
    return {k: v for k, v in (values or {}).items() if v is not None}


def train_config(model_name: str, given: dict) -> TrainConfig:
    """The loop's settings: TrainConfig's defaults, then the model's train_defaults, then the given values;
    checked as declared (a counting model takes none)."""
    given = _given(given)
    declarations.from_classes().check(model_name, {}, given)
    return options.make(TrainConfig, dict(get_model_class(model_name).train_defaults, **given), what="training")


def apply_size_rules(cls, tconfig: TrainConfig, given: dict | None, n_examples: int) -> None:
    """Set the loop settings that the model's rules derive from the number of training examples
    (its default_steps and default_weight_decay hooks), wherever the user gave no value of their own."""
    given = given or {}
    if given.get("steps") is None:
        steps = cls.default_steps(n_examples, tconfig.batch_size)
        tconfig.steps = steps if steps is not None else tconfig.steps
    if given.get("weight_decay") is None:
        decay = cls.default_weight_decay(n_examples)
        tconfig.weight_decay = decay if decay is not None else tconfig.weight_decay


def build_run(cls, mconfig, tconfig: TrainConfig, vocab: Vocab, parts: dict, dev: torch.device,
              with_dev: bool = True):
    """A fresh model initialised from tconfig.seed, and the train and dev datasets (dev None when empty, or
    when not with_dev: only the main process of a distributed run evaluates) on dev; first a check that
    they and the training steps fit in memory."""
    check_fits(cls, mconfig, tconfig, len(vocab), parts["train"] + (parts["dev"] if with_dev else []), dev)
    torch.manual_seed(tconfig.seed)
    net = cls(mconfig, len(vocab)).to(dev)
    train_set = build_dataset(parts["train"], vocab, mconfig.block_size, cls.whole_items).to(dev)
    dev_set = None
    if parts["dev"] and with_dev:
        dev_set = build_dataset(parts["dev"], vocab, mconfig.block_size, cls.whole_items).to(dev)
    return net, train_set, dev_set


def check_fits(cls, mconfig, tconfig: TrainConfig, vocab_size: int, items: list[str], dev: torch.device) -> None:
    """A one-line error, before anything is allocated, when the model, its training and the datasets of items
    cannot fit in the memory this process may still allocate on dev."""
    T, B = mconfig.block_size, tconfig.batch_size
    n_chars = sum(map(len, items))
    # tokens (one byte each for a small vocabulary, four for a large one) with block_size boundary tokens
    # before every item, and a position (up to 8 bytes) per example; building them takes about twice that
    token_bytes = 1 if vocab_size < 256 else 4
    data = 2 * (token_bytes * (n_chars + len(items) * (T + 1)) + 8 * (n_chars + len(items)))
    # the items a checkpoint keeps: joined, as a tensor, and serialised (UTF-8, up to 4 bytes a character)
    kept = 3 * (4 if vocab_size >= 128 else 1) * (n_chars + len(items))
    steps = 0
    if not cls.counts:
        # a chunk of BATCH_CHUNK steps of indices (int64); the contexts and targets gathered for several steps
        # at once (up to GATHER examples, int64, with the indices that gather them); a step's activations
        # and gradients
        gathered = max(B, min(GATHER, B * BATCH_CHUNK))
        positions = T if cls.whole_items else 1
        steps = (B * BATCH_CHUNK * 8 + gathered * (16 * T + 8 * positions)
                 + B * 4 * cls.example_numbers(mconfig, vocab_size))
    copies = 2 if cls.counts else memory.training_copies(tconfig.optimizer)
    weights = copies * memory.tensor_bytes(cls.expected_tensors(mconfig, vocab_size))
    memory.check_fits({"weights and their copies": weights, "batches": steps, "datasets": data,
                       "items kept in the checkpoint": kept}, dev,
                      "make the model smaller (--n-hidden, --n-embd, --block-size) or the batches (--batch-size)"
                      if not cls.counts else "use less data or a smaller --block-size")


@dataclass
class TrainResult:
    path: Path
    step: int
    train_loss: float
    dev_loss: float  # nan without a dev split
    seconds: float
    replaced: bool  # an earlier checkpoint of the same name was replaced
    curve: Path | None = None  # the loss-curve PNG beside the checkpoint (None without matplotlib)


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):  # nameless where the OS allows, so nothing is left behind
            pass
    except OSError as e:
        raise MakemoreError(f"cannot write to the output directory {out_dir}: {e.strerror}") from None


@distributed.leaves_process_group
def train(model: str = "mlp", data: str | Path | None = None, out: str | Path = "out", name: str | None = None,
          model_options: dict | None = None, train_options: dict | None = None,
          splits=DEFAULT_SPLITS, split_seed: int = DEFAULT_SPLIT_SEED, resume: str | Path | None = None,
          device: str = "auto", progress: bool = True, strict: bool = False, warn=None,
          n_threads: int | None = None) -> TrainResult:
    """Train a model (or resume the checkpoint named by resume) and write its checkpoint under out.

    n_threads: torch's thread count; None lets makemore.threads choose it and adapt it to the machine's load.

    Under torchrun every process calls this; rank 0 alone warns, evaluates and writes (see distributed).
    """
    warn = warn or (lambda message: print(message, file=sys.stderr))
    world, dev = distributed.setup(resolve_device(device))
    if not world.is_main:
        warn, progress = (lambda message: None), False
    prior = None
    if resume is not None:
        prior = checkpoint.load(resume)
        model, name, out = prior["model"], Path(resume).stem, Path(resume).parent
        data = data if data is not None else prior["data"]["path"]
        splits, split_seed = tuple(prior["split"]["fractions"]), prior["split"]["seed"]
    cls = get_model_class(model)
    if prior is not None:
        mconfig = cls.config_from(prior["config"], complete=True)
        given = {k: v for k, v in (train_options or {}).items() if v is not None}
        tconfig = options.make(TrainConfig, dict(prior["train"], **given), what="the run to resume")
        resumed = _model_from(prior, resume)  # a checkpoint whose weights do not fit is refused before any work
        if not cls.counts and prior["step"] > 0:
            checkpoint.check_resumable(prior, resume, make_optimizer(resumed, tconfig))
    else:
        mconfig = model_config(model, model_options or {})
        tconfig = train_config(model, train_options or {})
    dataset = Data.read(data)
    if prior is not None and dataset.fingerprint != prior["data"]["fingerprint"]:
        _changed_data(prior, dataset, strict, warn)
    parts = dataset.split(splits, split_seed)
    if prior is None:
        mconfig = cls.config_for_data(mconfig, _given(model_options), parts["train"])
    vocab = Vocab(prior["vocab"]) if prior is not None else Vocab.from_items(dataset.items)
    if prior is not None and vocab.unknown("".join(dataset.items)):
        raise DataError(f"{dataset.path}: has characters the checkpoint's vocabulary lacks: "
                        f"{''.join(vocab.unknown(''.join(dataset.items)))!r}")
    net, train_set, dev_set = build_run(cls, mconfig, tconfig, vocab, parts, dev, with_dev=world.is_main)
    out = Path(out)
    if world.is_main:  # made only now: a run refused above leaves no empty folder behind
        check_writable(out)
    governor = threads.Governor(threads.setup(n_threads, dev, threads.work(net, tconfig.batch_size)))
    if prior is None:  # a resumed run keeps the settings it started with
        apply_size_rules(cls, tconfig, train_options, len(train_set))

    path = out / f"{name or model}{checkpoint.SUFFIX}"
    replaced = path.exists() and prior is None
    base = dict(
        model=model, config=mconfig, vocab=vocab.chars, train=tconfig,
        split=dict(fractions=list(splits), seed=split_seed),
        data=dict(path=str(dataset.path.resolve()), fingerprint=dataset.fingerprint, n_items=len(dataset.items)),
        items="\n".join(dataset.items),
    )
    metrics_path = path.with_suffix(".metrics.jsonl")

    def write(state: LoopState, net) -> None:
        resume = None
        if state.optimizer is not None:
            resume = dict(state_dict=net.state_dict(), optimizer=state.optimizer, rng=state.rng,
                          elapsed=state.elapsed, world_size=world.size)
        checkpoint.save(checkpoint.build(**base, state_dict=state.best_state or net.state_dict(), step=state.step,
                                         best_dev_loss=state.best_dev_loss, metrics=list(state.metrics or []),
                                         resume=resume), path)
        checkpoint.write_latest(out, path)
        atomic_metrics(metrics_path, state.metrics or [])

    if cls.counts:
        if world.is_main:  # counting is one quick pass: the other processes have nothing to do
            net.fit(train_set)
        state = LoopState(step=0, metrics=[], best_state=net.state_dict())
        if world.is_main:
            write(state, net)
    else:
        state = LoopState()
        if prior is not None and "resume" not in prior:  # saved before the first step: start afresh from it
            net.load_state_dict(prior["state_dict"])
        elif prior is not None:
            r = prior["resume"]
            if r.get("world_size", 1) != world.size:
                warn(f"warning: resuming with {world.size} process(es) a run trained with {r.get('world_size', 1)}: "
                     f"the batch of each step changes from {r.get('world_size', 1) * tconfig.batch_size} to "
                     f"{world.size * tconfig.batch_size} examples")
            net.load_state_dict(r["state_dict"])
            state = LoopState(step=prior["step"], best_dev_loss=prior["best_dev_loss"],
                              best_state={k: v.to(dev) for k, v in prior["state_dict"].items()},
                              optimizer=r["optimizer"], rng=r["rng"], metrics=list(prior["metrics"]),
                              elapsed=r["elapsed"])
        with stop_on_signals() as stop:
            if world.is_main and prior is None and (not path.exists() or tconfig.steps == 0):
                # a complete checkpoint from the very start, but never one that replaces an earlier
                # checkpoint with untrained weights: that is left until the first evaluation
                write(state, net)
            # the loop writes the checkpoint at every evaluation, the last step included
            try:
                state = train_loop(net, train_set, dev_set, tconfig, state, save=write if world.is_main else None,
                                   progress=progress, stop=stop, world=world, governor=governor)
            except Interrupted as e:
                e.path, e.step = path, state.step
                raise
        if state.best_state is not None:  # None when no step ran (--steps 0)
            net.load_state_dict(state.best_state)
    seconds = state.elapsed
    if not world.is_main:
        return TrainResult(path, state.step, float("nan"), float("nan"), seconds, replaced)
    train_loss = evaluate(net, train_set)
    dev_loss = evaluate(net, dev_set) if dev_set is not None else float("nan")
    curve = plots.write_curve_if_possible(state.metrics, plots.curve_path(path),
                                           plots.curve_title(model, dataset.path))
    return TrainResult(path, state.step, train_loss, dev_loss, seconds, replaced, curve)


def atomic_metrics(path: Path, metrics: list[dict]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in metrics)
    atomic_write(path, lambda f: f.write(text.encode()))


def lr_find(model: str = "mlp", data=None, model_options: dict | None = None, train_options: dict | None = None,
            min_lr: float = 1e-3, max_lr: float = 1.0, steps: int = 1000, splits=DEFAULT_SPLITS,
            split_seed: int = DEFAULT_SPLIT_SEED, device: str = "auto", progress: bool = True,
            plot_path: str | Path | None = None, n_threads: int | None = None) -> instruments.Sweep:
    """The lecture's sweep on a fresh model, set up from the data and options exactly as train would be;
    with plot_path, its plot too, when matplotlib is installed (sweep.plot: the file, or None)."""
    cls = get_model_class(model)
    declarations.from_classes().check_sweep(model, min_lr, max_lr)
    dev = resolve_device(device)
    dataset = Data.read(data)
    parts = dataset.split(splits, split_seed)
    mconfig = cls.config_for_data(model_config(model, model_options or {}), _given(model_options), parts["train"])
    tconfig = train_config(model, train_options or {})
    vocab = Vocab.from_items(dataset.items)
    net, train_set, _ = build_run(cls, mconfig, tconfig, vocab, dict(parts, dev=[]), dev)
    apply_size_rules(cls, tconfig, train_options, len(train_set))  # the weight decay train would use
    lrs = instruments.exponential_lrs(min_lr, max_lr, steps)
    governor = threads.Governor(threads.setup(n_threads, dev, threads.work(net, tconfig.batch_size)))
    sweep = instruments.lr_sweep(net, train_set, make_optimizer(net, tconfig), lrs, tconfig.batch_size, tconfig.seed,
                                 tconfig.weight_decay, progress, governor)
    sweep.settings = dict(model=model, data=str(dataset.path), optimizer=tconfig.optimizer,
                          batch_size=tconfig.batch_size, weight_decay=tconfig.weight_decay, seed=tconfig.seed,
                          min_lr=min_lr, max_lr=max_lr, steps=steps, config=dataclasses.asdict(mconfig))
    sweep.plot = plots.lr_sweep(sweep, Path(plot_path)) if plot_path is not None and plots.available() else None
    return sweep


@dataclass
class MixResult:
    path: Path
    components: list[str]
    weights: list[float]
    component_dev_losses: list[float]
    dev_loss: float
    iterations: int  # steps of the fit (EM or Newton); 0 when the weights were given
    seconds: float
    kind: str = "log-linear"


def _check_same_data(trained: list) -> None:
    """Refuse to mix checkpoints of different data, split or vocabulary."""
    first = trained[0]
    for other in trained[1:]:
        for what, key in (("data file", "data"), ("split", "split"), ("vocabulary", "vocab")):
            a, b = first.ckpt[key], other.ckpt[key]
            if key == "data":
                a, b = a["fingerprint"], b["fingerprint"]
            if a != b:
                raise CheckpointError(f"{first.path} and {other.path} were trained on a different {what}; "
                                      "mix only checkpoints of the same data file, split and vocabulary")


def mix(paths: list, out: str | Path = "out", name: str = "mixture", weights: list | None = None,
        device: str = "cpu", n_threads: int | None = None, kind: str = "log-linear") -> MixResult:
    """Load the checkpoints, fit the mixture weights on dev (or use the given ones), write the mixture.

    kind: "log-linear" (p proportional to prod_i p_i^w_i) or "linear" (p = sum_i w_i p_i); see makemore.mixing."""
    t0 = time.perf_counter()
    if kind not in mixing.KINDS:
        raise OptionError(f"--kind {kind!r}: choose one of {', '.join(mixing.KINDS)}")
    if weights is not None:
        if len(weights) != len(paths):
            raise OptionError(f"--weights: {len(weights)} weights for {len(paths)} checkpoints")
        if not all(0 <= w < math.inf for w in weights) or sum(weights) <= 0:
            raise OptionError("--weights must be numbers >= 0, not all 0")
        if kind == "log-linear" and max(weights) > mixing.MAX_LOG_LINEAR_WEIGHT:
            raise OptionError(f"--weights of a log-linear mixture are at most {mixing.MAX_LOG_LINEAR_WEIGHT:g}")
    trained = [load(p, device=device, n_threads=n_threads) for p in paths]
    _check_same_data(trained)
    first = trained[0]
    dev_items = first.splits(first.read_data())["dev"]
    if not dev_items and weights is None:
        raise DataError("the checkpoints' dev split is empty, so there is nothing to fit the weights on; "
                        "give them with --weights")
    models = [t.model for t in trained]
    losses, iterations = [float("nan")] * len(models), 0
    dev, dev_loss = None, float("nan")
    if dev_items:
        dev = build_dataset(dev_items, first.vocab, max(m.block_size for m in models)).to(resolve_device(device))
        P = mixing.target_probs(models, dev)
        losses = (-P.log().mean(0)).tolist()
        if weights is None and kind == "linear":
            fitted, history = mixing.em(P)
            weights, iterations = fitted.tolist(), len(history) - 1
        elif weights is None:
            L, y = mixing.log_probs(models, dev, len(first.vocab))
            fitted, history = mixing.fit_log_linear(L, y)
            weights, iterations = fitted.tolist(), len(history) - 1
            if len(y) == len(dev):  # fitted on all of dev: its loss is known without reading dev again
                dev_loss = history[-1]
    if kind == "linear":
        total = sum(weights)
        weights = [w / total for w in weights]
    config = MixtureConfig(
        components=tuple(dict(model=t.ckpt["model"], config=t.ckpt["config"]) for t in trained),
        weights=tuple(weights),
        kind=kind,
    )
    net = Mixture(config, len(first.vocab))
    net.components.load_state_dict(torch.nn.ModuleList(models).state_dict())
    net.to(resolve_device(device))
    if dev is not None and math.isnan(dev_loss):
        dev_loss = evaluate(net, dev)
    out = Path(out)
    check_writable(out)
    path = out / f"{name}{checkpoint.SUFFIX}"
    ckpt = checkpoint.build(
        model="mixture", config=config, vocab=first.vocab.chars, train={}, split=first.ckpt["split"],
        data=first.ckpt["data"], items=first.ckpt.get("items", ""), state_dict=net.state_dict(), step=0,
        best_dev_loss=dev_loss, metrics=[],
        mix=dict(components=[str(p) for p in paths], component_dev_losses=losses, dev_loss=dev_loss,
                 em_iterations=iterations),
    )
    checkpoint.save(ckpt, path)
    checkpoint.write_latest(out, path)
    return MixResult(path, [str(p) for p in paths], weights, losses, dev_loss, iterations, time.perf_counter() - t0,
                     kind)


def inspect(path: str | Path | None = None, out: str | Path = "out") -> dict:
    """What a checkpoint holds, as a JSON-ready dict: model and hyperparameters, vocabulary, data file
    (and whether it is still there unchanged), split settings, training, file size and format."""
    trained = load(path, out)
    ckpt, vocab = trained.ckpt, trained.vocab
    data = dict(ckpt["data"])
    # read in chunks, and only when it is a regular file: the path is whatever the checkpoint says
    data["status"] = checkpoint.recorded_data_status(data["path"], data["fingerprint"])
    split = dict(ckpt["split"])
    if ckpt.get("items"):
        split["sizes"] = {name: len(part) for name, part in trained.splits().items()}
    best = ckpt.get("best_dev_loss")
    return dict(
        checkpoint=str(trained.path), file_size=trained.path.stat().st_size,
        format_version=ckpt["format_version"], makemore_version=ckpt.get("makemore_version"),
        model=ckpt["model"], config=dict(ckpt["config"]),
        n_params=sum(p.numel() for p in trained.model.parameters()),
        # what the checkpoint stores (a counting model's counts), not tables derived from it on load
        n_buffers=sum(v.numel() for k, v in ckpt["state_dict"].items()
                      if k not in dict(trained.model.named_parameters())),
        vocab=vocab.chars, vocab_size=len(vocab), boundary=vocab.boundary,
        data=data, split=split, train=dict(ckpt.get("train") or {}), steps=ckpt.get("step", 0),
        best_dev_loss=best if best is not None and math.isfinite(best) else None,
        resumable="resume" in ckpt,
    )
