"""The library behind the CLI: train, lr_find, mix and inspect; a loaded model (load, Trained) is in
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

from makemore import checkpoint, distributed, instruments, memory, mixing, options, plots, threads
from makemore import budget as budgets
from makemore.budget import Budget
from makemore.batches import BATCH_CHUNK, GATHER
from makemore.constraints import NothingFound, Samples
from makemore.data import (DEFAULT_SPLIT_SEED, DEFAULT_SPLITS, MAX_LABELS, Data, Vocab, read_items, read_items_file,
                           recordable, recorded_status)
from makemore.dataset import build_dataset
from makemore.errors import (CheckpointError, DataError, Interrupted, MakemoreError, OptionError, TrainingError,
                             VocabularyError, printable)
from makemore.files import atomic_write, check_name, check_not_inputs, same_file
from makemore.models import MODELS, get_model_class, trainable_classes
from makemore.models.base import budget_steps
from makemore.models.mixture import MAX_MODELS, Mixture, MixtureConfig, check_weights
from makemore.train import LoopState, TrainConfig, evaluate, make_optimizer, stop_on_signals, train_loop
from makemore.trained import (Trained, load, model_from, note_changed_data, predicts_numbers, resolve_device,
                              shown_labels)

__all__ = ["load", "train", "inspect", "mix", "lr_find", "read_items", "read_items_file", "Data", "Trained", "Samples",
           "resolve_device", "MakemoreError", "OptionError", "DataError", "VocabularyError", "NothingFound",
           "MAX_LABELS"]


def _given(values: dict | None) -> dict:
    return {k: v for k, v in (values or {}).items() if v is not None}


def model_config(model_name: str, given: dict):
    """The model's config with the given (non-None) options applied and checked; an option the model does not
    take is an OptionError naming the models that take it."""
    cls, given = get_model_class(model_name), _given(given)
    for name in given:
        if name not in options.declared(cls.Config):
            others = [m for m, c in trainable_classes().items() if name in options.declared(c.Config)]
            raise OptionError(f"{options.flag(name)} does not apply to --model {model_name}; it is an option of "
                              f"{', '.join(others) or 'no model'}")
    return cls.config_from(given)


def train_config(model_name: str, given: dict) -> TrainConfig:
    """The loop's settings: TrainConfig's defaults, then the model's train_defaults, then the given values."""
    cls, given = get_model_class(model_name), _given(given)
    if cls.counts and given:
        raise OptionError(f"{options.flag(next(iter(given)))} does not apply to --model {model_name}: it is "
                          "counted in one pass, not trained step by step")
    return options.make(TrainConfig, dict(cls.train_defaults, **given), what="training")


def apply_size_rules(cls, tconfig: TrainConfig, given: dict | None, n_examples: int) -> None:
    """Set the loop settings that the model's rules derive from the number of training examples
    (its train_defaults_for hook), wherever the user gave no value of their own."""
    given = given or {}
    for name, value in cls.train_defaults_for(n_examples, tconfig.batch_size).items():
        if given.get(name) is None:
            setattr(tconfig, name, value)


def build_run(cls, mconfig, tconfig: TrainConfig, vocab: Vocab, parts: dict, dev: torch.device,
              with_dev: bool = True, part_labels: dict | None = None, n_labels: int = 1):
    """A fresh model initialised from tconfig.seed, and the train and dev datasets on dev (dev None when empty,
    or when not with_dev: only the main process evaluates); first a check that the run fits in memory.
    part_labels: the label ids of the items of parts (None: unlabelled)."""
    if not cls.counts and tconfig.batch_size < cls.min_batch_size:
        raise OptionError(f"--batch-size {tconfig.batch_size}: a {cls.name} batch holds at least "
                          f"{cls.min_batch_size} examples (its BatchNorm normalises over the batch)")
    check_fits(cls, mconfig, tconfig, len(vocab), parts["train"] + (parts["dev"] if with_dev else []), dev,
               n_labels)
    torch.manual_seed(tconfig.seed)
    net = cls(mconfig, len(vocab), n_labels).to(dev)

    def dataset(split: str):
        labels = part_labels[split] if part_labels is not None else None
        return build_dataset(parts[split], vocab, mconfig.block_size, cls.whole_items, labels).to(dev)

    return net, dataset("train"), dataset("dev") if parts["dev"] and with_dev else None


def check_fits(cls, mconfig, tconfig: TrainConfig, vocab_size: int, items: list[str], dev: torch.device,
               n_labels: int = 1) -> None:
    """A one-line error, before anything is allocated, when the model, its training and the datasets of items
    cannot fit in the memory this process may still allocate on dev."""
    T, B = mconfig.block_size, tconfig.batch_size
    n_chars = sum(map(len, items))
    # tokens (one byte each for a small vocabulary, four for a large one) with block_size boundary tokens
    # before every item, and a position (up to 8 bytes) per example; building them takes about twice that
    token_bytes = 1 if vocab_size < 256 else 4
    data = 2 * (token_bytes * (n_chars + len(items) * (T + 1)) + 8 * (n_chars + len(items)))
    if n_labels > 1:  # a label id per example
        data += n_chars + len(items)
    # the items a checkpoint keeps: joined, as a tensor, and serialised (UTF-8, up to 4 bytes a character)
    kept = 3 * (4 if vocab_size >= 128 else 1) * (n_chars + len(items))
    steps = 0
    if not cls.counts:
        # a chunk of BATCH_CHUNK steps of indices (int64); the contexts and targets of up to GATHER examples
        # gathered at once (int64, with the indices that gather them); a step's activations and gradients
        gathered = max(B, min(GATHER, B * BATCH_CHUNK))
        positions = T if cls.whole_items else 1
        steps = (B * BATCH_CHUNK * 8 + gathered * (16 * T + 8 * positions)
                 + B * 4 * cls.example_numbers(mconfig, vocab_size))
    copies = 2 if cls.counts else memory.training_copies(tconfig.optimizer)
    weights = copies * memory.tensor_bytes(cls.expected_tensors(mconfig, vocab_size, n_labels))
    memory.check_fits({"weights and their copies": weights, "batches": steps, "datasets": data,
                       "items kept in the checkpoint": kept}, dev, _smaller(cls, n_labels))


def _smaller(cls, n_labels: int = 1) -> str:
    """How to make a run of cls need less memory: the size options it has, or less data (or, with labels, fewer
    of them: every label has tables of its own)."""
    declared = options.declared(cls.Config)
    sizes = [options.flag(name) for name in ("n_hidden", "n_embd", "block_size", "n_layer")
             if name in declared and declared[name][0].high != declared[name][0].low]  # bigram-nn's is fixed
    fewer = f", or use fewer than {n_labels} labels" if n_labels > 1 else ""
    if cls.counts:
        return "use less data" + (f" or a smaller {', '.join(sizes)}" if sizes else "") + fewer
    model = f"the model smaller ({', '.join(sizes)}) or " if sizes else ""
    return f"make {model}the batches smaller (--batch-size){fewer}"


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


@dataclass
class Run:
    """What a training run is set up from; prior: the checkpoint a resumed run continues."""

    cls: type
    mconfig: object
    tconfig: TrainConfig
    dataset: Data
    split: dict  # fractions and seed, as the checkpoint records them
    vocab: Vocab
    parts: dict
    part_labels: dict | None  # the label ids of parts' items, None when unlabelled
    prior: dict | None = None


def _new_run(model: str, data, model_options: dict | None, train_options: dict | None, splits, split_seed,
             labelling: dict | None = None) -> Run:
    cls = get_model_class(model)
    splits = options.check_splits(splits)
    mconfig = model_config(model, model_options)
    tconfig = train_config(model, train_options)
    dataset = Data.read(data, **(labelling or {}))
    parts, part_labels = dataset.labelled_split(splits, split_seed)
    vocab = Vocab.from_items(dataset.items)
    mconfig = cls.config_for_data(mconfig, _given(model_options), parts["train"], len(vocab))
    return Run(cls, mconfig, tconfig, dataset, dict(fractions=list(splits), seed=split_seed), vocab, parts,
               part_labels)


def _resumed_run(path: Path, model: str | None, data, model_options: dict | None, train_options: dict | None,
                 splits, split_seed, strict: bool, warn, labelling: dict | None = None) -> Run:
    """The run a checkpoint continues. Every option given must agree with the checkpoint (an OptionError
    names the first that does not), except --steps, which may lengthen the run."""
    prior = checkpoint.load(path)
    if prior["model"] not in MODELS:
        raise CheckpointError(f"{printable(path)}: a {prior['model']} is built by makemore mix from trained "
                              "checkpoints, not trained step by step, so it cannot be resumed")
    cls = get_model_class(prior["model"])
    recorded = dict(model=prior["model"], splits=tuple(prior["split"]["fractions"]), split_seed=prior["split"]["seed"])
    given = dict(model=model, splits=tuple(splits) if splits is not None else None, split_seed=split_seed)
    _refuse_changes(recorded, {**recorded, **_given(given)})
    mconfig = cls.config_from(prior["config"], complete=True)
    _refuse_changes(mconfig, cls.config_from({**dataclasses.asdict(mconfig), **_given(model_options)}, complete=True))
    given = _given(train_options)
    if cls.counts:
        tconfig = train_config(prior["model"], given)  # the OptionError a counting model gives for a setting
    else:
        tconfig = options.make(TrainConfig, prior["train"], what="the run to resume")
    wanted = options.make(TrainConfig, {**dataclasses.asdict(tconfig), **given}, what="training")
    _refuse_changes(tconfig, dataclasses.replace(wanted, steps=tconfig.steps))
    if wanted.steps < prior["step"]:
        raise OptionError(f"--steps {wanted.steps:,} is below the {prior['step']:,} steps the run being resumed has "
                          "trained already; give more steps, or leave --steps out to finish the run as it was set up")
    if not cls.counts and wanted.steps == prior["step"]:
        raise MakemoreError(f"{printable(path)}: has trained all {prior['step']:,} of its steps; give --steps above "
                            f"{prior['step']:,} to train it further")
    tconfig.steps = wanted.steps
    resumed = model_from(prior, path)  # a checkpoint whose weights do not fit is refused before any work
    if not cls.counts and (prior["step"] > 0 or "resume" in prior):  # the state the loop would load
        _check_resumable(prior, path, make_optimizer(resumed, tconfig))
    dataset = _resumed_data(prior, path, data, strict, warn, labelling)
    vocab = Vocab(prior["vocab"])
    vocab.check_items(dataset.items, printable(dataset.path))
    parts, part_labels = dataset.labelled_split(recorded["splits"], recorded["split_seed"])
    return Run(cls, mconfig, tconfig, dataset, prior["split"], vocab, parts, part_labels, prior)


def _refuse_changes(recorded, wanted) -> None:
    """OptionError for the first setting in which wanted (the recorded settings with the options given) differs
    from recorded; both are configs (dataclasses) or dicts of the same keys."""
    was, now = ((vars(c) if dataclasses.is_dataclass(c) else c) for c in (recorded, wanted))
    for name, value in was.items():
        if now[name] != value:
            raise OptionError(f"{options.flag(name)} {options.plain(now[name])} contradicts the run being resumed, "
                              f"which has {options.plain(value)}; leave it out to continue that run, or train a new "
                              "one without --resume")


def _curve_seconds() -> float:
    """Seconds to draw a training curve (0 without matplotlib), timed now: matplotlib's import and first drawing
    (a second or more) fall in the start-up a time budget measures, and the end of the run has its time reserved."""
    if not plots.available():
        return 0.0
    sample = [dict(step=step, train_loss=1.0, dev_loss=1.0) for step in range(1, 201)]
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        plots.training_curve(sample, Path(folder) / "curve.png", "")
        return time.perf_counter() - t0


def _check_time_budget(time_budget, train_options: dict | None, resume: Path | None) -> float:
    """The budget in seconds; OptionError where --time cannot apply: beside --steps, or to a resumed run."""
    seconds = options.check_time_budget(time_budget)
    if _given(train_options).get("steps") is not None:
        raise OptionError("--time and --steps both set how long the run is; give one of them")
    if resume is not None:
        raise OptionError("--time applies to a new run; a resumed run continues the schedule its checkpoint records "
                          "(leave --time out, or give --steps for a new total)")
    return seconds


def _check_resumable(prior: dict, path: Path, optimizer) -> None:
    """CheckpointError unless prior holds a training state for the optimizer the loop makes: the loader checks
    its settings' types, which depend on torch's version; here they must match this torch's."""
    if not isinstance(prior.get("resume"), dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    references, groups = optimizer.state_dict()["param_groups"], prior["resume"]["optimizer"]["param_groups"]
    if len(groups) != len(references):
        raise CheckpointError(f"{path}: its optimizer state holds {len(groups)} parameter group(s), where makemore "
                              f"now trains a {prior['model']} with {len(references)} (weight decay on some parameters "
                              "only); it cannot be resumed, but it loads for everything else")
    for reference, group in zip(references, groups):
        _check_group(path, prior, reference, group)


def _check_group(path: Path, prior: dict, reference: dict, group: dict) -> None:
    """CheckpointError unless the optimizer group of prior has the settings of reference, the loop's."""
    if set(group) != set(reference):
        raise CheckpointError(f"{path}: its optimizer state is not one of a {prior['train']['optimizer']} optimizer "
                              f"of this torch (its settings: {', '.join(sorted(map(str, group)))[:120]}); it cannot "
                              "be resumed")
    if group.get("fused") and group.get("foreach"):
        raise CheckpointError(f"{path}: the optimizer state asks for both fused and foreach steps")

    def kind(setting):  # a flag, so many numbers or a number
        return "flag" if setting is None or isinstance(setting, bool) else (
            len(setting) if isinstance(setting, tuple) else "number")

    for key, ref in reference.items():
        fixed = isinstance(ref, bool) and key not in ("foreach", "fused")  # those two may be None or a bool
        if kind(group[key]) != kind(ref) or (fixed and group[key] != ref):
            raise CheckpointError(f"{path}: the optimizer's {key} is {group[key]!r:.60}; makemore trains with "
                                  f"{ref!r:.60}; it cannot be resumed")


def _resumed_data(prior: dict, path: Path, data, strict: bool, warn, labelling: dict | None = None) -> Data:
    """The file given with --data, else the items the checkpoint keeps. The file the checkpoint records is never
    read (a received checkpoint may name any file): a changed fingerprint of it refuses the resume."""
    recorded_labels = prior.get("labels", {}).get("names")
    if data is not None:
        dataset = Data.read(data, **(labelling or {}))
        note_changed_data(prior, dataset, strict, warn)
        if dataset.labels != recorded_labels:
            raise DataError(f"{printable(dataset.path)} has the labels {shown_labels(dataset.labels)}, but the run "
                            f"being resumed was trained on {shown_labels(recorded_labels)}")
        return dataset
    recorded = prior["data"]["path"]
    kept = prior["items"].split("\n") if prior.get("items") else []
    if not kept:
        raise CheckpointError(f"{printable(path)}: keeps no training items; give the data to continue on with --data")
    if recorded_status(recorded, prior["data"]["fingerprint"]) == "changed":
        raise DataError(f"{printable(recorded)} has changed since {printable(path)} was trained on it; to continue "
                        "on the file as it is now, give it with --data (without --data the run continues on the items "
                        "the checkpoint keeps only while that file is unchanged or gone)")
    return Data(Path(recorded), kept, prior["data"]["fingerprint"], recorded_labels,
                prior.get("item_labels"))



def _output_path(out: Path, name: str | None, default: str, resumed: Path | None) -> Path:
    """out/NAME.safetensors; a continuation that would land on the checkpoint it resumes gets NAME-2, NAME-3..."""
    path = out / f"{name or default}{checkpoint.SUFFIX}"
    if resumed is None or not same_file(path, resumed):
        return path
    if name is not None:
        raise OptionError(f"--name {name} would write over the checkpoint being resumed, {printable(resumed)}; "
                          "choose another --name or --out")
    stem, _, number = default.rpartition("-")
    stem, n = (stem, int(number)) if stem and number.isdigit() else (default, 1)
    while True:
        n += 1
        path = out / f"{stem}-{n}{checkpoint.SUFFIX}"
        if not path.exists():
            return path


def _checkpoint_writer(run: Run, path: Path, out: Path, world_size: int):
    """save(state, net) for the loop: the checkpoint, the pointer to it in out, and the metrics beside it."""
    base = dict(model=run.cls.name, config=run.mconfig, vocab=run.vocab.chars, train=run.tconfig, split=run.split,
                data=dict(path=recordable(run.dataset.path), fingerprint=run.dataset.fingerprint,
                          n_items=len(run.dataset.items)),
                items="\n".join(run.dataset.items))
    if run.part_labels is not None:
        train_counts = [0] * run.dataset.n_labels
        for label in run.part_labels["train"]:
            train_counts[label] += 1
        base.update(labels=dict(names=run.dataset.labels, counts=train_counts), item_labels=run.dataset.item_labels)

    def write(state: LoopState, net) -> None:
        resume_state = None
        if state.optimizer is not None:
            resume_state = dict(state_dict=net.state_dict(), optimizer=state.optimizer, rng=state.rng,
                                elapsed=state.elapsed, world_size=world_size)
        checkpoint.save(checkpoint.build(**base, state_dict=state.best_state or net.state_dict(), step=state.step,
                                         best_dev_loss=state.best_dev_loss, metrics=list(state.metrics or []),
                                         resume=resume_state, time_budget=state.time_budget), path)
        checkpoint.write_latest(out, path)
        text = "".join(json.dumps(record) + "\n" for record in state.metrics or [])
        atomic_write(path.with_suffix(".metrics.jsonl"), lambda f: f.write(text.encode()))

    return write


def _loop_state(prior: dict | None, net, dev: torch.device, world, tconfig: TrainConfig, warn) -> LoopState:
    """Where the loop starts: afresh, or where the resumed checkpoint stopped (its weights loaded into net)."""
    if prior is None:
        return LoopState()
    if "resume" not in prior:  # saved before the first step: start afresh from it
        net.load_state_dict(prior["state_dict"])
        return LoopState()
    r = prior["resume"]
    if r["world_size"] != world.size:
        warn(f"warning: resuming with {world.size} process(es) a run trained with {r['world_size']}: "
             f"the batch of each step changes from {r['world_size'] * tconfig.batch_size} to "
             f"{world.size * tconfig.batch_size} examples")
    net.load_state_dict(r["state_dict"])
    record = prior.get("time_budget")
    if record is not None and tconfig.steps != prior["train"]["steps"]:  # --steps: the schedule's rest stretched
        record["revisions"].append(dict(step=prior["step"], old_steps=prior["train"]["steps"], new_steps=tconfig.steps))
    return LoopState(step=prior["step"], best_dev_loss=prior["best_dev_loss"],
                     best_state={k: v.to(dev) for k, v in prior["state_dict"].items()},
                     optimizer=r["optimizer"], rng=r["rng"], metrics=list(prior["metrics"]), elapsed=r["elapsed"],
                     time_budget=record)


@distributed.leaves_process_group
def train(model: str | None = None, data: str | Path | None = None, out: str | Path = "out", name: str | None = None,
          model_options: dict | None = None, train_options: dict | None = None,
          splits=None, split_seed: int | None = None, resume: str | Path | None = None,
          device: str = "auto", progress: bool = True, strict: bool = False, warn=None,
          n_threads: int | None = None, on_log=None, labels: bool = False, item_column: str | None = None,
          label_column: str | None = None, time_budget: float | str | None = None,
          started: float | None = None) -> TrainResult:
    """Train a model (default mlp, split 0.8,0.1,0.1 with seed 42), or continue the checkpoint resume names (every
    option given must match it, except steps), and write its checkpoint in out. on_log(record) at each log point:
    {step, train_loss, lr, elapsed} (+ dev_loss at evaluations). Under torchrun rank 0 alone writes. labels: data
    of LABEL<TAB>ITEM lines or a folder of LABEL.txt files; item_column (and label_column): a CSV file's columns.
    time_budget (seconds, or text such as "10m"): a new run's steps are chosen to end it within that time from
    started (a time.perf_counter() reading; default: now), and recorded in the checkpoint (time_budget)."""
    started = time.perf_counter() if started is None else started
    warn = warn or (lambda message: print(printable(message), file=sys.stderr))
    if not distributed.is_main():
        warn, progress = (lambda message: None), False
    if name is not None:
        check_name(name)
    requested = resolve_device(device)
    resume = Path(resume) if resume is not None else None
    if time_budget is not None:
        time_budget = _check_time_budget(time_budget, train_options, resume)
    # the options, the checkpoint and the data are checked before the processes meet: a refusal is one line
    labelling = dict(labels=labels, item_column=item_column, label_column=label_column)
    if resume is not None:
        run = _resumed_run(resume, model, data, model_options, train_options, splits, split_seed, strict, warn,
                           labelling)
    else:
        run = _new_run(model or "mlp", data, model_options, train_options, splits or DEFAULT_SPLITS,
                       DEFAULT_SPLIT_SEED if split_seed is None else split_seed, labelling)
    world, dev = distributed.setup(requested)
    cls, tconfig, out = run.cls, run.tconfig, Path(out)
    path = _output_path(out, name, resume.stem if resume is not None else cls.name, resume)
    check_not_inputs([path, path.with_suffix(".metrics.jsonl"), plots.curve_path(path)], [run.dataset.path, resume])
    net, train_set, dev_set = build_run(cls, run.mconfig, tconfig, run.vocab, run.parts, dev, world.is_main,
                                        run.part_labels, run.dataset.n_labels)
    if world.is_main:  # made only now: a run refused above leaves no empty folder behind
        check_writable(out)
    governor = threads.Governor(threads.setup(n_threads, dev, threads.work(net, tconfig.batch_size)))
    if run.prior is None:  # a resumed run keeps the settings it started with
        apply_size_rules(cls, tconfig, train_options, len(train_set))
    budget = None
    if time_budget is not None and cls.counts:
        warn(f"note: --time does not apply to --model {cls.name}, which is counted in one pass; ignored")
    elif time_budget is not None:
        budget = Budget(time_budget, started, train_set.n_targets + (dev_set.n_targets if dev_set is not None else 0),
                        _curve_seconds() if world.is_main else 0.0,
                        budget_steps(cls, len(train_set), tconfig.batch_size * world.size))
    replaced = path.exists()
    write = _checkpoint_writer(run, path, out, world.size) if world.is_main else None
    if cls.counts:
        state = LoopState(step=0, metrics=[])
        if world.is_main:  # counting is one quick pass: the other processes have nothing to do
            net.fit(train_set)
            if not predicts_numbers(net):  # no command could load it
                raise TrainingError(f"the {cls.name} model counted from {printable(run.dataset.path)} predicts no "
                                    "numbers (NaN), so it was not saved; an option value far out of the usual range "
                                    "is the likely cause")
            write(state, net)
    else:
        state = _loop_state(run.prior, net, dev, world, tconfig, warn)
        with stop_on_signals() as stop:
            if write is not None and tconfig.steps == state.step == 0:  # asked for no training: the model as built
                write(state, net)
            try:  # the loop writes the checkpoint at every evaluation, the last step included, and on an interrupt
                state = train_loop(net, train_set, dev_set, tconfig, state, save=write, on_log=on_log,
                                   progress=progress, stop=stop, world=world, governor=governor, budget=budget)
            except Interrupted as e:
                e.path, e.step = path, state.step
                raise
        if state.best_state is not None:  # None when no step ran (--steps 0)
            net.load_state_dict(state.best_state)
        reserved = budget.record["reserved_seconds"] if budget is not None else 0.0
        if budget is not None and reserved >= budget.seconds * budgets.TARGET:
            warn(f"warning: start-up and the work after the last step take about {reserved:.1f}s of the "
                 f"{budget.seconds:g}s budget, so it trained {state.step:,} step(s) only; give more --time")
        elif budget is not None and budget.capped():
            passes = state.step * tconfig.batch_size * world.size / len(train_set)
            warn(f"note: {state.step:,} steps ({passes:.3g} passes over the training data) are the most a time budget "
                 f"buys --model {cls.name} on this data, so it ended early: more would not lower its dev loss")
    if not world.is_main:
        return TrainResult(path, state.step, float("nan"), float("nan"), state.elapsed, replaced)
    dev_loss = evaluate(net, dev_set) if dev_set is not None else float("nan")
    curve = plots.write_curve_if_possible(state.metrics, plots.curve_path(path),
                                          plots.curve_title(cls.name, printable(run.dataset.path)))
    return TrainResult(path, state.step, evaluate(net, train_set), dev_loss, state.elapsed, replaced, curve)


def lr_find(model: str = "mlp", data=None, model_options: dict | None = None, train_options: dict | None = None,
            min_lr: float = 1e-3, max_lr: float = 1.0, steps: int = 1000, splits=DEFAULT_SPLITS,
            split_seed: int = DEFAULT_SPLIT_SEED, device: str = "auto", progress: bool = True,
            plot_path: str | Path | None = None, n_threads: int | None = None,
            labelling: dict | None = None) -> instruments.Sweep:
    """The lecture's sweep on a fresh model, set up from the data and options exactly as train would be;
    with plot_path, its plot too, when matplotlib is installed (sweep.plot: the file, or None). labelling: train's
    labels, item_column and label_column."""
    if get_model_class(model).counts:
        trainable = [m for m, c in trainable_classes().items() if not c.counts]
        raise OptionError(f"--model {model} is counted in one pass, it has no learning rate; lr-find "
                          f"applies to {', '.join(trainable)}")
    if not min_lr < max_lr:
        raise OptionError(f"--min-lr ({min_lr:g}) must be below --max-lr ({max_lr:g})")
    dev = resolve_device(device)
    run = _new_run(model, data, model_options, train_options, splits, split_seed, labelling)
    if plot_path is not None:
        check_not_inputs([plot_path], [run.dataset.path])
    cls, mconfig, tconfig = run.cls, run.mconfig, run.tconfig
    net, train_set, _ = build_run(cls, mconfig, tconfig, run.vocab, dict(run.parts, dev=[]), dev,
                                  part_labels=run.part_labels, n_labels=run.dataset.n_labels)
    apply_size_rules(cls, tconfig, train_options, len(train_set))  # the weight decay train would use
    lrs = instruments.exponential_lrs(min_lr, max_lr, steps)
    governor = threads.Governor(threads.setup(n_threads, dev, threads.work(net, tconfig.batch_size)))
    sweep = instruments.lr_sweep(net, train_set, make_optimizer(net, tconfig), lrs, tconfig.batch_size, tconfig.seed,
                                 tconfig.penalty, progress, governor)
    sweep.settings = dict(model=model, data=str(run.dataset.path), optimizer=tconfig.optimizer,
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
    """Refuse to mix checkpoints of different data, split, vocabulary or labels."""
    first = trained[0]
    for other in trained[1:]:
        if other.labels != first.labels:
            raise CheckpointError(f"{first.path} has the labels {shown_labels(first.labels)} and {other.path} "
                                  f"{shown_labels(other.labels)}; mix only checkpoints of the same labels")
        for what, key in (("data file", "data"), ("split", "split"), ("vocabulary", "vocab")):
            a, b = (t.ckpt[key]["fingerprint"] if key == "data" else t.ckpt[key] for t in (first, other))
            if a != b:
                raise CheckpointError(f"{first.path} and {other.path} were trained on a different {what}; "
                                      "mix only checkpoints of the same data file, split and vocabulary")


def mix(paths: list, out: str | Path = "out", name: str = "mixture", weights: list | None = None,
        device: str = "cpu", n_threads: int | None = None, kind: str = "log-linear",
        progress: bool = False) -> MixResult:
    """Load the checkpoints, fit the mixture weights on dev (or use the given ones), write the mixture.
    kind: "log-linear" (p proportional to prod_i p_i^w_i) or "linear" (p = sum_i w_i p_i); see makemore.mixing."""
    t0 = time.perf_counter()
    check_name(name)
    if len(paths) < 2:
        raise OptionError("give at least two checkpoints to mix")
    if kind not in mixing.KINDS:
        raise OptionError(f"--kind {kind!r}: choose one of {', '.join(mixing.KINDS)}")
    if weights is not None:
        weights = list(check_weights(weights, kind, len(paths), given=True))
    if len(paths) > MAX_MODELS:  # refused before a single checkpoint is read
        raise OptionError(f"{len(paths)} checkpoints: a mixture holds at most {MAX_MODELS} trained models")
    trained = [load(p, device=device, n_threads=n_threads) for p in paths]
    components = tuple(dict(model=t.ckpt["model"], config=t.ckpt["config"]) for t in trained)
    Mixture.check_size({"components": components})
    _check_same_data(trained)
    first = trained[0]
    parts, part_labels = first.labelled_splits()  # the items the checkpoint keeps: a recorded path is never read
    dev_items = parts["dev"]
    if not dev_items and weights is None:
        raise DataError("the checkpoints' dev split is empty, so there is nothing to fit the weights on; "
                        "give them with --weights")
    models = [t.model for t in trained]
    losses, iterations = [float("nan")] * len(models), 0
    dev, dev_loss = None, float("nan")
    if dev_items:
        dev = build_dataset(dev_items, first.vocab, max(m.block_size for m in models),
                            labels=part_labels["dev"] if part_labels else None).to(resolve_device(device))
        P = mixing.target_probs(models, dev, progress=progress)
        losses = (-P.log().mean(0)).tolist()
        if weights is None and kind == "linear":
            fitted, history = mixing.em(P)
            weights, iterations = fitted.tolist(), len(history) - 1
        elif weights is None:
            L, y = mixing.log_probs(models, dev, len(first.vocab), progress=progress)
            fitted, history = mixing.fit_log_linear(L, y)
            weights, iterations = fitted.tolist(), len(history) - 1
            if len(y) == len(dev):  # fitted on all of dev: its loss is known without reading dev again
                dev_loss = history[-1]
    if kind == "linear":  # scaled by the largest first: weights near the float limit must not sum to infinity
        scaled = [w / max(weights) for w in weights]
        weights = [w / sum(scaled) for w in scaled]
    config = MixtureConfig(components=components, weights=tuple(weights), kind=kind)
    # the components' own tensors, on their device: no initial weights drawn to be replaced
    net = Mixture.from_state(config, len(first.vocab),
                             {f"components.{k}": v for k, v in torch.nn.ModuleList(models).state_dict().items()},
                             n_labels=models[0].n_labels)
    if dev is not None and math.isnan(dev_loss):
        dev_loss = evaluate(net, dev, progress=progress)
    out = Path(out)
    path = out / f"{name}{checkpoint.SUFFIX}"
    check_not_inputs([path], paths)
    check_writable(out)
    checkpoint.save(checkpoint.build(
        model="mixture", config=config, vocab=first.vocab.chars, train={}, split=first.ckpt["split"],
        data=first.ckpt["data"], items=first.ckpt["items"], state_dict=net.state_dict(), step=0,
        best_dev_loss=dev_loss, metrics=[], mix=dict(components=[str(p) for p in paths], component_dev_losses=losses,
                                                     dev_loss=dev_loss, em_iterations=iterations),
        labels=first.ckpt.get("labels"), item_labels=first.ckpt.get("item_labels")), path)
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
    data["status"] = recorded_status(data["path"], data["fingerprint"])
    split = dict(ckpt["split"])
    if ckpt.get("items"):
        split["sizes"] = {name: len(part) for name, part in trained.splits().items()}
    return dict(
        checkpoint=str(trained.path), file_size=trained.path.stat().st_size,
        format_version=ckpt["format_version"], makemore_version=ckpt["makemore_version"],
        model=ckpt["model"], config=dict(ckpt["config"]),
        n_params=sum(p.numel() for p in trained.model.parameters()),
        # what the checkpoint stores (a counting model's counts), not tables derived from it on load
        n_buffers=sum(v.numel() for k, v in ckpt["state_dict"].items()
                      if k not in dict(trained.model.named_parameters())),
        vocab=vocab.chars, vocab_size=len(vocab), boundary=vocab.boundary,
        data=data, split=split, train=dict(ckpt["train"]), steps=ckpt["step"],
        # a labelled model's labels, in id order, and the training items of each
        labels=dict(zip(trained.labels, trained.label_counts)) if trained.labels is not None else None,
        best_dev_loss=ckpt["best_dev_loss"] if math.isfinite(ckpt["best_dev_loss"]) else None,
        resumable="resume" in ckpt,
        # how train --time chose the steps (makemore.budget.Budget.record), None for a run of set steps
        time_budget=ckpt.get("time_budget"),
    )
