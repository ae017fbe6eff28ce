"""Benchmark of the counting n-gram model (--model ngram): quality by block size, a 3.2M-line fit, and NLTK.

    python bench/bench_ngram.py > bench/results/ngram.md

Prints a markdown section on stdout (progress on stderr):
1. dev loss of --smoothing kn (and add-1, to show what smoothing buys) for block sizes 1..7 on the lecture's
   names, default split, with fit time and the size of the stored tables;
2. names x100 (the file repeated, 3.2 million lines) at block size 4: the fit alone, in a child process that
   loads the prepared dataset (time and peak memory), and the whole `makemore train` command;
3. NLTK's KneserNeyInterpolated at order 4 (block size 3) on the same split in the same run: fit plus
   scoring the dev split, against ours. Needs the bench extra (pip install -e '.[bench]'), else skipped.

Timings use --threads torch threads (1 by default: NLTK uses one core, and on a shared machine more threads
only add noise).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from makemore.api import Data  # noqa: E402
from makemore.data import Vocab  # noqa: E402
from makemore.dataset import build_dataset  # noqa: E402
from makemore.models.ngram import NGram, NGramConfig  # noqa: E402
from makemore.train import evaluate  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "names-2018.txt"

# Peak resident memory of this process image in MB. Linux's VmHWM, not ru_maxrss: ru_maxrss survives exec,
# so a child would report the memory of the (large) benchmark process that forked it.
PEAK_MB = r"""
import resource
def peak_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

# The child that times the fit alone: it loads a prepared dataset, so its peak memory is the fit's.
FIT_CHILD = PEAK_MB + r"""
import json, sys, time, torch
from safetensors import safe_open
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[3]))
from makemore.dataset import Dataset
from makemore.models.ngram import NGram, NGramConfig
with safe_open(sys.argv[2], framework="pt") as f:
    sizes = json.loads(f.metadata()["sizes"])
    dataset = Dataset(f.get_tensor("tokens"), f.get_tensor("positions"), sizes["block_size"], sizes["n_items"])
before = peak_mb()
model = NGram(NGramConfig(sizes["block_size"], "kn"), sizes["vocab_size"])
t0 = time.perf_counter()
model.fit(dataset)
seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, before_mb=before, peak_mb=peak_mb(), examples=len(dataset))))
"""

# The whole command, reporting its own peak memory when it exits.
CLI_CHILD = PEAK_MB + r"""
import runpy, sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["makemore"] + sys.argv[2:]
try:
    runpy.run_module("makemore", run_name="__main__")
finally:
    print("peak_mb", peak_mb(), file=sys.stderr)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def by_block_size(parts, vocab, sizes) -> list[dict]:
    rows = []
    for K in sizes:
        train = build_dataset(parts["train"], vocab, K)
        dev = build_dataset(parts["dev"], vocab, K)
        row = dict(block_size=K)
        for smoothing in ("kn", 1.0):
            model = NGram(NGramConfig(K, smoothing), len(vocab))
            t0 = time.perf_counter()
            model.fit(train)
            seconds = time.perf_counter() - t0
            row[smoothing] = evaluate(model, dev)
            if smoothing == "kn":
                row.update(seconds=seconds, bytes=table_bytes(model))
        log(f"block {K}: kn {row['kn']:.4f}, add-1 {row[1.0]:.4f}")
        rows.append(row)
    return rows


def large_fit(data: Data, copies: int, block_size: int, threads: int, workdir: Path) -> dict:
    """Fit on the file repeated copies times: the fit alone, then the whole train command."""
    big = workdir / f"names-x{copies}.txt"
    text = "\n".join(data.items) + "\n"
    big.write_text(text * copies, encoding="utf-8")
    repeated = Data.read(big)
    parts = repeated.split()
    vocab = Vocab.from_items(sorted(set(data.items)))  # the same characters as the file repeated
    train = build_dataset(parts["train"], vocab, block_size)
    saved = workdir / "train.safetensors"
    sizes = dict(block_size=block_size, n_items=train.n_items, vocab_size=len(vocab))
    save_file(dict(tokens=train.tokens, positions=train.positions), saved, metadata=dict(sizes=json.dumps(sizes)))
    del train, parts, repeated
    log(f"fitting names x{copies} at block size {block_size} in a child process")
    out = subprocess.run([sys.executable, "-c", FIT_CHILD, str(REPO), str(saved), str(threads)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["lines"] = len(data.items) * copies
    log(f"running makemore train on names x{copies}")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-c", CLI_CHILD, str(REPO), "train", "--model", "ngram",
                          "--block-size", str(block_size), "--data", str(big), "--out", str(workdir / "out"), "-q"],
                         capture_output=True, text=True, env=env)
    result["cli_seconds"] = time.perf_counter() - t0
    peak = [line for line in cli.stderr.splitlines() if line.startswith("peak_mb")]
    result["cli_peak_mb"] = float(peak[-1].split()[1]) if peak else float("nan")
    result["cli_output"] = cli.stdout.strip() or cli.stderr.strip().splitlines()[-1]
    return result


def ours_at_order(parts, vocab, order: int) -> dict:
    t0 = time.perf_counter()
    train = build_dataset(parts["train"], vocab, order - 1)
    dev = build_dataset(parts["dev"], vocab, order - 1)
    model = NGram(NGramConfig(order - 1, "kn"), len(vocab))
    model.fit(train)
    loss = evaluate(model, dev)
    return dict(loss=loss, seconds=time.perf_counter() - t0)


def nltk_at_order(parts, order: int) -> dict | None:
    """NLTK's interpolated Kneser-Ney, padded as our data builder pads: order-1 starts and one end."""
    try:
        from nltk.lm import KneserNeyInterpolated
        from nltk.util import everygrams
    except ImportError:
        return None

    def padded(item):
        return ["<s>"] * (order - 1) + list(item) + ["</s>"]

    t0 = time.perf_counter()
    sentences = [padded(item) for item in parts["train"]]
    lm = KneserNeyInterpolated(order)
    lm.fit((everygrams(s, max_len=order) for s in sentences), (token for s in sentences for token in s))
    fitted = time.perf_counter()
    nll, count = 0.0, 0
    for item in parts["dev"]:
        s = padded(item)
        for i in range(order - 1, len(s)):
            nll -= lm.logscore(s[i], s[i - order + 1:i]) * math.log(2)  # logscore is in bits
            count += 1
    end = time.perf_counter()
    import nltk

    return dict(loss=nll / count, seconds=end - t0, fit_seconds=fitted - t0, version=nltk.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--max-block-size", type=int, default=7)
    parser.add_argument("--skip-nltk", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = Data.read(args.data)
    parts = data.split()
    vocab = Vocab.from_items(data.items)
    rows = by_block_size(parts, vocab, range(1, args.max_block_size + 1))
    with tempfile.TemporaryDirectory() as tmp:
        big = large_fit(data, args.copies, 4, args.threads, Path(tmp))
    log("order 4: ours")
    ours = ours_at_order(parts, vocab, 4)
    log("order 4: NLTK (about a minute)")
    theirs = None if args.skip_nltk else nltk_at_order(parts, 4)

    print("## Counting n-gram (`--model ngram`)\n")
    print(f"Data: `{args.data.name}` ({len(data.items):,} items), default split 0.8/0.1/0.1 (seed 42); "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"`python bench/bench_ngram.py`.\n")
    print("### Dev loss by block size\n")
    print("| block size | n-gram order | kn dev loss | add-1 dev loss | kn fit (s) | stored tables |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['block_size']} | {r['block_size'] + 1} | {r['kn']:.4f} | {r[1.0]:.4f} | {r['seconds']:.3f} | "
              f"{r['bytes'] / 1e6:.2f} MB |")
    best = min(rows, key=lambda r: r["kn"])
    print(f"\nBest on dev: block size {best['block_size']} ({best['kn']:.4f}). Add-k is the lecture's smoothing: "
          "it spreads the same mass over every unseen continuation, so longer contexts only get worse; "
          "Kneser-Ney backs off to shorter contexts instead.\n")
    print(f"### Names x{args.copies} ({big['lines']:,} lines), block size 4\n")
    print("| what | time (s) | peak memory (MB) |")
    print("|---|---:|---:|")
    print(f"| fit alone ({big['examples']:,} training examples; the child process held {big['before_mb']:.0f} MB "
          f"before fitting) | {big['seconds']:.2f} | {big['peak_mb']:.0f} |")
    print(f"| `makemore train --model ngram --block-size 4` (read, split, build, fit, train and dev loss) | "
          f"{big['cli_seconds']:.1f} | {big['cli_peak_mb']:.0f} |")
    print(f"\nIts output: `{big['cli_output']}`. The fit is the model's part; the rest of the command is the "
          "shared data pipeline (reading, vocabulary, split, building the examples) and scoring every training "
          "and dev example.\n")
    print("### Against NLTK at order 4 (block size 3), same split, same run\n")
    print("| implementation | dev loss | fit + scoring dev (s) |")
    print("|---|---:|---:|")
    print(f"| makemore ngram, modified Kneser-Ney | {ours['loss']:.4f} | {ours['seconds']:.3f} |")
    if theirs is None:
        why = "skipped (--skip-nltk)" if args.skip_nltk else "nltk not installed: pip install -e '.[bench]'"
        print(f"| NLTK KneserNeyInterpolated | ({why}) | |")
    else:
        print(f"| NLTK {theirs['version']} KneserNeyInterpolated | {theirs['loss']:.4f} | {theirs['seconds']:.1f} "
              f"(fit {theirs['fit_seconds']:.1f}) |")
        print(f"\nmakemore is {theirs['seconds'] / ours['seconds']:.0f}x faster here (both on {args.threads} "
              "thread(s); ours includes building its datasets). NLTK's model is Kneser-Ney with a single "
              "discount (0.1) per order; ours estimates three per order (Chen & Goodman).")


def run(data=None) -> str:
    from common import section_of

    return section_of(main, ["--data", str(data)] if data else [])


if __name__ == "__main__":
    main()
