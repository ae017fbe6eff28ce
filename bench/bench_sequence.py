"""Benchmark of the models that read whole items (rnn, gru, transformer) beside the MLP.

    python bench/bench_sequence.py [--extra FOLDER] > bench/results/sequence.md

Prints a markdown section on stdout (progress on stderr):
1. speed: optimizer steps per second and characters (targets) per second of each model's default training
   step, 2 threads and 1, measured in the same run, with the MLP's as the baseline;
2. quality: every model trained with its defaults (`makemore train --model M`, nothing else) on the lecture's
   names and on the files made by scripts/make_bench_data.py (made here, or given by --extra: files the
   defaults were not tuned on): dev loss, train loss, steps and training time; the GRU and RNN also on one
   thread, as the reference makemore.py's figure was measured; and the mixture of all of them and a
   Kneser-Ney 5-gram, fitted by `makemore mix`;
3. what the transformer samples on each file.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import data_file, log, main_with_extra_data, table

from makemore import api  # noqa: E402
from makemore.batches import BatchSampler  # noqa: E402
from makemore.data import Data, Vocab  # noqa: E402
from makemore.dataset import build_dataset  # noqa: E402
from makemore.models import get_model_class  # noqa: E402
from makemore.train import TrainStep, make_optimizer  # noqa: E402

MODELS = ("mlp", "rnn", "gru", "transformer")
SPEED_STEPS = 300


def speed(path: Path, model: str, threads: int) -> tuple[float, float]:
    """Steps/s and targets/s of the model's default training step on the file's default split."""
    torch.set_num_threads(threads)
    data = Data.read(path)
    parts = data.split((0.8, 0.1, 0.1), 42)
    vocab = Vocab.from_items(data.items)
    cls = get_model_class(model)
    mconfig = cls.config_for_data(api.model_config(model, {}), {}, parts["train"], len(vocab))
    tconfig = api.train_config(model, {})
    torch.manual_seed(0)
    net = cls(mconfig, len(vocab))
    dataset = build_dataset(parts["train"], vocab, mconfig.block_size, cls.whole_items)
    step = TrainStep(net, make_optimizer(net, tconfig), tconfig.penalty)
    batches = BatchSampler(dataset, tconfig.batch_size, 0)
    per_row = dataset.n_targets / len(dataset)
    for _ in range(30):  # warm up
        step(*batches.next(), tconfig.lr)
    step.take_loss().item()
    start = time.perf_counter()
    for _ in range(SPEED_STEPS):
        step(*batches.next(), tconfig.lr)
    step.take_loss().item()
    seconds = time.perf_counter() - start
    return SPEED_STEPS / seconds, SPEED_STEPS * tconfig.batch_size * per_row / seconds


def trained(path: Path, out: Path, model: str, threads: int | None = None, **model_options) -> api.TrainResult:
    log(f"{path.name}: {model}{' on 1 thread' if threads == 1 else ''}")
    name = model + ("-1thread" if threads == 1 else "")
    return api.train(model, path, out, name, model_options=model_options, progress=False, n_threads=threads,
                     warn=lambda message: None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="the lecture's names-2018.txt (default: ../shared/data/)")
    ap.add_argument("--extra", help="folder of further files (made by scripts/make_bench_data.py)")
    args = ap.parse_args()
    path, note = (Path(args.data), f"`{Path(args.data).name}`") if args.data else data_file()
    files = [path] + (sorted(Path(args.extra).glob("*.txt")) if args.extra else [])
    out = Path(tempfile.mkdtemp(prefix="bench-sequence-"))
    p = print
    p("## Sequence models: rnn, gru and transformer beside the MLP (bench_sequence)\n")
    p(f"Data: {note}; default split (80/10/10, seed 42). torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads available.\n")

    p(f"### Speed of a training step ({SPEED_STEPS} steps of each model's defaults, after 30 to warm up)\n")
    rows, base = [], {}
    for model in MODELS:
        cells = [f"`{model}`"]
        for threads in (2, 1):
            log(f"speed {model}, {threads} thread(s)")
            steps, chars = speed(path, model, threads)
            base.setdefault(threads, chars)
            cells += [f"{steps:,.0f}", f"{chars:,.0f} ({chars / base[threads]:.2f}x)"]
        rows.append(cells)
    p(table(["model", "steps/s, 2 threads", "characters/s, 2 threads", "steps/s, 1 thread",
             "characters/s, 1 thread"], rows))
    p("\nA step of the MLP is a batch of 128 windows, one character each; a step of the others a batch of 64 "
      "whole items, every character and the item's end predicted at once (rows trimmed to the batch's "
      "longest item). Characters/s are targets per second, the ratio the MLP's in the same run.\n")

    p("### Quality with the defaults (dev loss, nats per character)\n")
    rows, samples = [], {}
    for data in files:
        folder = out / data.stem
        results = {model: trained(data, folder, model) for model in MODELS}
        ones = {model: trained(data, folder, model, threads=1) for model in ("rnn", "gru")}
        ngram = trained(data, folder, "ngram", block_size=4)
        log(f"{data.name}: mix")
        mixed = api.mix([r.path for r in [*results.values(), ngram]], folder, "mixture")
        for model, r in results.items():
            rows.append([data.name, f"`{model}`", f"**{r.dev_loss:.4f}**", f"{r.train_loss:.4f}", f"{r.step:,}",
                         f"{r.seconds:.1f} s"])
        for model, r in ones.items():
            rows.append([data.name, f"`{model}` --threads 1", f"{r.dev_loss:.4f}", f"{r.train_loss:.4f}",
                         f"{r.step:,}", f"{r.seconds:.1f} s"])
        rows.append([data.name, "`ngram --block-size 4`", f"{ngram.dev_loss:.4f}", f"{ngram.train_loss:.4f}", "-",
                     f"{ngram.seconds:.1f} s"])
        weights = ", ".join(f"{Path(c).stem} {w:.2f}" for c, w in zip(mixed.components, mixed.weights))
        rows.append([data.name, f"`mix` of the five ({weights})", f"**{mixed.dev_loss:.4f}**", "-", "-",
                     f"{mixed.seconds:.1f} s"])
        samples[data.name] = api.load(results["transformer"].path).sample(n=12, seed=1)
    p(table(["file", "model", "dev loss", "train loss", "steps", "training time"], rows))
    p("\nEach run is `makemore train --model M` with its defaults (2 threads unless marked); the time is the "
      "loop's, evaluations included. The mixture's weights are fitted on dev, so its dev loss is not held out.\n")

    p("### What the transformer samples (`makemore sample -n 12 --seed 1`)\n")
    for name, items in samples.items():
        p(f"- {name}: {' '.join(items)}")
    p("")


def run(data=None) -> str:
    """The whole section, the extra data files made first by scripts/make_bench_data.py (skipped without
    the bench extra)."""
    return main_with_extra_data(main, data, "bench-sequence-data-")


if __name__ == "__main__":
    main()
