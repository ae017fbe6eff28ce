"""The library behind the CLI: train, load, evaluate and sample. Raises exceptions, never exits."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import __version__, checkpoint, distributed
from makemore.data import (DEFAULT_SPLIT_SEED, DEFAULT_SPLITS, SPLIT_NAMES, Vocab, build_dataset,
                           default_data_path, fingerprint_bytes, parse_items, read_bytes, split_items)
from makemore.errors import CheckpointError, DataError, MakemoreError, VocabularyError
from makemore.models import get_model_class
from makemore.sampling import generate
from makemore.train import Interrupted, LoopState, TrainConfig, evaluate, stop_on_signals, train_loop


class OptionError(MakemoreError):
    """An option that does not fit the request (the CLI shows it as a usage error)."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"--device: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError("--device: MPS is not available on this machine")
    return device


@dataclass
class Data:
    """A data file read once: its items, fingerprint and split."""

    path: Path
    items: list[str]
    fingerprint: str

    @classmethod
    def read(cls, path: str | Path | None = None) -> "Data":
        path = Path(path) if path is not None else default_data_path()
        raw = read_bytes(path)
        return cls(path, parse_items(raw, str(path)), fingerprint_bytes(raw))

    def split(self, splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list[str]]:
        return split_items(self.items, splits, seed)


def model_config(model_name: str, options: dict):
    """The model's config with the given (non-None) options applied; options it lacks are an error."""
    cls = get_model_class(model_name)
    fields = cls.config_fields()
    for key, value in options.items():
        if value is not None and key not in fields:
            flag = "--" + key.replace("_", "-")
            raise OptionError(f"{flag} does not apply to --model {model_name} (its options: "
                              + ", ".join("--" + f.replace("_", "-") for f in fields) + ")")
    return cls.Config(**{k: v for k, v in options.items() if v is not None})


def train_config(model_name: str, options: dict) -> TrainConfig:
    cls = get_model_class(model_name)
    values = dict(cls.train_defaults)
    values.update({k: v for k, v in options.items() if v is not None})
    return TrainConfig(**values)


@dataclass
class TrainResult:
    path: Path
    step: int
    train_loss: float
    dev_loss: float  # nan without a dev split
    seconds: float
    replaced: bool  # an earlier checkpoint of the same name was replaced


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MakemoreError(f"cannot write to the output directory {out_dir}: {e.strerror}") from None


@distributed.leaves_process_group
def train(model: str = "mlp", data: str | Path | None = None, out: str | Path = "out", name: str | None = None,
          model_options: dict | None = None, train_options: dict | None = None,
          splits=DEFAULT_SPLITS, split_seed: int = DEFAULT_SPLIT_SEED, resume: str | Path | None = None,
          device: str = "auto", progress: bool = True, strict: bool = False, warn=None) -> TrainResult:
    """Train a model (or resume the checkpoint named by resume) and write its checkpoint under out.

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
        if not get_model_class(model).counts and "resume" not in prior:
            raise CheckpointError(f"{resume}: holds no training state to resume from")
    out = Path(out)
    if world.is_main:
        check_writable(out)
    dataset = Data.read(data)
    if prior is not None and dataset.fingerprint != prior["data"]["fingerprint"]:
        _changed_data(prior, dataset, strict, warn)
    parts = dataset.split(splits, split_seed)

    cls = get_model_class(model)
    if prior is not None:
        mconfig = cls.Config(**prior["config"])
        tconfig = TrainConfig(**dict(prior["train"], **{k: v for k, v in (train_options or {}).items() if v is not None}))
    else:
        mconfig = model_config(model, model_options or {})
        tconfig = train_config(model, train_options or {})
    vocab = Vocab(prior["vocab"]) if prior is not None else Vocab.from_items(dataset.items)
    if prior is not None and vocab.unknown("".join(dataset.items)):
        raise DataError(f"{dataset.path}: has characters the checkpoint's vocabulary lacks: "
                        f"{''.join(vocab.unknown(''.join(dataset.items)))!r}")
    torch.manual_seed(tconfig.seed)
    net = cls(mconfig, len(vocab)).to(dev)
    train_set = build_dataset(parts["train"], vocab, mconfig.block_size).to(dev)
    dev_set = (build_dataset(parts["dev"], vocab, mconfig.block_size).to(dev)
               if parts["dev"] and world.is_main else None)

    path = out / f"{name or model}.pt"
    replaced = path.exists() and prior is None
    base = dict(
        makemore_version=__version__, model=model, config=dataclasses.asdict(mconfig), vocab=vocab.chars,
        train=dataclasses.asdict(tconfig), split=dict(fractions=list(splits), seed=split_seed),
        data=dict(path=str(dataset.path.resolve()), fingerprint=dataset.fingerprint, n_items=len(dataset.items)),
        items="\n".join(dataset.items),
    )
    metrics_path = path.with_suffix(".metrics.jsonl")

    def write(state: LoopState, net) -> None:
        ckpt = dict(base, state_dict=_cpu(state.best_state or net.state_dict()), step=state.step,
                    best_dev_loss=state.best_dev_loss, metrics=list(state.metrics or []))
        if state.optimizer is not None:
            ckpt["resume"] = dict(state_dict=_cpu(net.state_dict()), optimizer=_cpu(state.optimizer),
                                  rng=state.rng, elapsed=state.elapsed, world_size=world.size)
        checkpoint.save(ckpt, path)
        checkpoint.write_latest(out, path)
        atomic_metrics(metrics_path, state.metrics or [])

    if cls.counts:
        state = LoopState(step=0, metrics=[], best_state=net.state_dict())
        if world.is_main:  # counting is one quick pass: the other processes have nothing to do
            net.fit(train_set)
            write(state, net)
    else:
        state = LoopState()
        if prior is not None:
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
        elif world.is_main:
            write(state, net)  # a complete checkpoint exists from the very start
        with stop_on_signals() as stop:
            # the loop writes the checkpoint at every evaluation, the last step included
            try:
                state = train_loop(net, train_set, dev_set, tconfig, state, save=write if world.is_main else None,
                                   progress=progress, stop=stop, world=world)
            except Interrupted as e:
                e.path, e.step = path, state.step
                raise
        net.load_state_dict(state.best_state)
    seconds = state.elapsed
    if not world.is_main:
        return TrainResult(path, state.step, float("nan"), float("nan"), seconds, replaced)
    train_loss = evaluate(net, train_set)
    dev_loss = evaluate(net, dev_set) if dev_set is not None else float("nan")
    return TrainResult(path, state.step, train_loss, dev_loss, seconds, replaced)


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def atomic_metrics(path: Path, metrics: list[dict]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in metrics)
    checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


def _changed_data(ckpt: dict, data: Data, strict: bool, warn) -> None:
    message = (f"{data.path} has changed since training (fingerprint {data.fingerprint}, "
               f"the checkpoint was trained on {ckpt['data']['fingerprint']})")
    if strict:
        raise DataError(message)
    warn("warning: " + message)


@dataclass
class Trained:
    """A loaded checkpoint: the model, its vocabulary and everything recorded about its training."""

    path: Path
    ckpt: dict
    model: torch.nn.Module
    vocab: Vocab

    @property
    def name(self) -> str:
        return self.ckpt["model"]

    @property
    def block_size(self) -> int:
        return self.model.block_size

    def items(self) -> list[str]:
        return self.ckpt["items"].split("\n") if self.ckpt.get("items") else []

    def splits(self, data: Data | None = None) -> dict[str, list[str]]:
        items = data.items if data is not None else self.items()
        return split_items(items, tuple(self.ckpt["split"]["fractions"]), self.ckpt["split"]["seed"])

    def read_data(self, data: str | Path | None = None, strict: bool = False, warn=None) -> Data | None:
        """The training data file (or another given one), checked against the fingerprint; None when the
        recorded file is gone (the items kept in the checkpoint are used instead)."""
        warn = warn or (lambda message: print(message, file=sys.stderr))
        if data is None:
            recorded = Path(self.ckpt["data"]["path"])
            if not recorded.exists() and self.ckpt.get("items"):
                return None
            data = recorded
        loaded = Data.read(data)
        if loaded.fingerprint != self.ckpt["data"]["fingerprint"]:
            _changed_data(self.ckpt, loaded, strict, warn)
        return loaded

    def check_text(self, text: str, what: str) -> None:
        bad = self.vocab.unknown(text)
        if bad:
            shown = "".join(self.vocab.show(c) for c in self.vocab.chars[1:])
            raise VocabularyError(f"{what} has characters the model never saw: {''.join(map(self.vocab.show, bad))!r} "
                                  f"(its vocabulary: {shown!r})")

    def evaluate(self, split: str = "dev", data: str | Path | None = None, strict: bool = False, warn=None) -> dict:
        """Mean NLL per character (nats) and perplexity of one split (or 'all')."""
        loaded = self.read_data(data, strict, warn)
        if split == "all":
            items = loaded.items if loaded is not None else self.items()
        else:
            items = self.splits(loaded)[split]
        if not items:
            raise DataError(f"the {split} split is empty (trained with --splits "
                            f"{','.join(f'{f:g}' for f in self.ckpt['split']['fractions'])})")
        self.check_text("".join(items), f"the {split} split")
        ds = build_dataset(items, self.vocab, self.block_size).to(self.device)
        loss = evaluate(self.model, ds)
        return dict(split=split, loss=loss, perplexity=math.exp(loss) if loss < 700 else float("inf"),
                    n_chars=len(ds), n_items=len(items), model=self.name, checkpoint=str(self.path))

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.state_dict().values())).device

    def sample(self, n: int = 10, seed: int | None = None, temperature: float = 1.0, top_k: int | None = None,
               prefix: str = "", max_len: int | None = None) -> list[str]:
        self.check_text(prefix, "--prefix")
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        longest = max((len(item) for item in self.items()), default=32)
        cap = max_len if max_len is not None else 2 * longest + len(prefix)
        return generate(self.model, self.vocab, n, generator, temperature, top_k, prefix, cap)

    def where(self, items: list[str]) -> list[str]:
        """For each item: the split of the training data holding it ('train', 'dev', 'test') or 'new'."""
        found = {}
        for split in reversed(SPLIT_NAMES):
            found.update(dict.fromkeys(self.splits()[split], split))
        return [found.get(item, "new") for item in items]


def load(path: str | Path | None = None, out: str | Path = "out", device: str = "cpu",
         model: str | None = None) -> Trained:
    """Load a checkpoint (the one trained last in out when path is None)."""
    path = Path(path) if path is not None else checkpoint.latest(out)
    ckpt = checkpoint.load(path)
    if model is not None and ckpt["model"] != model:
        raise CheckpointError(f"{path}: holds a {ckpt['model']} model, not {model}")
    try:
        cls = get_model_class(ckpt["model"])
        net = cls(cls.Config(**ckpt["config"]), len(ckpt["vocab"]))
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: does not fit its model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    net.to(resolve_device(device)).eval()
    return Trained(path, ckpt, net, Vocab(ckpt["vocab"]))
