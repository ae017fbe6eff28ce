"""Benchmark of `makemore mix`: log-linear against linear mixtures of the same checkpoints, as more are added.

    python bench/bench_mix.py [--data names-2018.txt] [--extra FOLDER] [--keep FOLDER] > bench/results/mix.md

Trains every neural model with its defaults and three seeds (42, the default, then 7 and 8), two more GRUs
(seeds 9 and 10) and Kneser-Ney n-grams of block size 4 and 5 on the lecture's names (about 35 minutes on 2
cores; with --keep, checkpoints already in FOLDER are reused), then mixes growing sets of them both ways:
the weights fitted on dev, the mixture measured on dev (seen by the fit) and on test (held out). With --extra
(files made by scripts/make_bench_data.py, on which no default was tuned): the five of seed 42 and the block-4
n-gram, both ways.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import data_file, log, main_with_extra_data, table

from makemore import api  # noqa: E402
from makemore.checkpoint import SUFFIX  # noqa: E402

NEURAL = ("mlp", "rnn", "gru", "transformer")
SEEDS = (42, 7, 8)
MORE_GRU_SEEDS = (9, 10)  # the GRU takes the most weight per minute of training in the log-linear mixture


def component(path: Path, out: Path, model: str, seed: int | None = None, **model_options) -> Path:
    name = model + (f"-s{seed}" if seed is not None else "") + "".join(f"-{k}{v}" for k, v in model_options.items())
    ckpt = out / f"{name}{SUFFIX}"
    if not ckpt.exists():
        log(f"train {name}")
        api.train(model, path, out, name, model_options=model_options,
                  train_options={} if seed is None else {"seed": seed}, progress=False, warn=lambda message: None)
    return ckpt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="the lecture's names-2018.txt (default: ../shared/data/)")
    ap.add_argument("--extra", help="folder of further files (made by scripts/make_bench_data.py)")
    ap.add_argument("--keep", help="folder for the checkpoints, reused when already there")
    args = ap.parse_args()
    path, note = (Path(args.data), f"`{Path(args.data).name}`") if args.data else data_file()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-mix-"))
    ngrams = [component(path, out, "ngram", block_size=b) for b in (4, 5)]
    seeds = {seed: [component(path, out, m, None if seed == 42 else seed) for m in NEURAL] for seed in SEEDS}
    more_grus = [component(path, out, "gru", seed) for seed in MORE_GRU_SEEDS]
    sets = [
        ("mlp and block-5 n-gram", [seeds[42][0], ngrams[1]]),
        ("mlp, rnn, gru, transformer, block-4 n-gram", seeds[42] + ngrams[:1]),
        ("the same with seed 7 of the four networks", seeds[42] + seeds[7] + ngrams[:1]),
        ("three seeds of the four networks, block-4 and block-5 n-grams", seeds[42] + seeds[7] + seeds[8] + ngrams),
        ("the same and the GRU of seeds 9 and 10", seeds[42] + seeds[7] + seeds[8] + ngrams + more_grus),
        ("only those the 16 weigh most: five GRUs, three transformers, block-4 and block-5 n-grams",
         [seeds[s][NEURAL.index(m)] for m in ("gru", "transformer") for s in SEEDS] + more_grus + ngrams),
    ]
    p = print
    p("## Mixtures: log-linear against linear (bench_mix)\n")
    p(f"Data: {note}; default split (80/10/10, seed 42). torch {torch.__version__}. Every network trained with "
      "its defaults (`makemore train --model M [--seed S]`), the Kneser-Ney n-grams with `--block-size 4` and 5 "
      "(5- and 6-grams).\n")
    if args.extra:
        for extra in sorted(Path(args.extra).glob("*.txt")):
            folder = out / extra.stem
            sets.append((f"{extra.name}: mlp, rnn, gru, transformer, block-4 n-gram",
                         [component(extra, folder, m) for m in NEURAL] + [component(extra, folder, "ngram",
                                                                                    block_size=4)]))
    rows = []
    for what, paths in sets:
        cells = [what, str(len(paths))]
        for kind in ("linear", "log-linear"):
            log(f"mix {kind}: {what}")
            mixed = api.mix(paths, Path(paths[0]).parent, f"mix-{kind}-{len(paths)}", kind=kind)
            test = api.load(mixed.path).evaluate("test")["loss"]
            cells += [f"{mixed.dev_loss:.4f}", f"**{test:.4f}**", f"{mixed.seconds:.1f} s"]
        rows.append(cells)
    p(table(["components", "n", "linear dev", "linear test", "linear fit", "log-linear dev", "log-linear test",
             "log-linear fit"], rows))
    best = min(api.load(c).evaluate("dev")["loss"] for c in seeds[42])
    p(f"\nThe best single component's dev loss on {path.name}: {best:.4f}. Fit times include reading every "
      "component's predictions on dev.\n")


def run(data=None) -> str:
    """The whole section, the extra data files made first by scripts/make_bench_data.py (skipped without
    the bench extra)."""
    return main_with_extra_data(main, data, "bench-mix-data-")


if __name__ == "__main__":
    main()
