"""Timings of issue 12's targets: 1,000 new unique items from an MLP (< 1 s), --nearest for 1,000 items
against the ~26,000-32,000 training names (< 2 s), and how long the default budget lets a hopeless
request run. Usage: python bench/bench_sampling.py CHECKPOINT [--threads N]

Prints the best of a few runs in wall-clock seconds with the load average beside it: on a shared
machine the load says how much of the CPU the run really had.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from makemore import api
from makemore.nearest import nearest
from makemore.sampling import NothingFound


def best_of(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = api.load(args.checkpoint)
    trained.sample(10, 0, new=True, unique=True)  # warm up
    print(f"{trained.name} from {args.checkpoint}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")

    seconds = best_of(lambda: trained.sample(1000, 1, new=True, unique=True))
    s = trained.sample(1000, 1, new=True, unique=True)
    print(f"1,000 new unique items: {seconds:.3f} s ({s.draws:,} draws, acceptance {100 * s.acceptance:.0f}%)")

    items = list(s)
    train = trained.splits()["train"]
    seconds = best_of(lambda: nearest(items, train))
    print(f"nearest for 1,000 items against {len(train):,} training items: {seconds:.3f} s")
    everything = trained.items()
    seconds = best_of(lambda: nearest(items, everything))
    print(f"nearest for 1,000 items against all {len(everything):,} items: {seconds:.3f} s")

    def hopeless():
        try:
            trained.sample(10, 2, regex="[0-9]+")
        except NothingFound as e:
            return str(e)

    t = time.perf_counter()
    message = hopeless()
    print(f"a hopeless request with the default budget: {time.perf_counter() - t:.2f} s: {message}")


def run(data=None) -> str:
    """Train the default MLP architecture briefly (sampling speed does not depend on training length),
    then time sampling; returned as a markdown section."""
    import tempfile

    from common import section_of

    out = tempfile.mkdtemp(prefix="bench-sampling-")
    api.train("mlp", data, out, train_options=dict(steps=3000), progress=False)
    text = section_of(main, [str(Path(out) / "mlp.safetensors")])
    body = "\n".join(f"- {line}" for line in text.strip().splitlines())
    return "## Sampling\n\n" + body + "\n\nTargets: 1,000 new unique items under 1 s; --nearest for 1,000 items against 32,000 under 2 s.\n"


if __name__ == "__main__":
    main()
