"""Benchmark of labels (issue 31): makemore's labelled models against the naive-Bayes trigram baseline.

    python bench/bench_labels.py [--files FOLDER] [--tuning] [--models mlp,gru] [--baseline-only]

On the reporting files of scripts/make_label_data.py (made into a temporary folder unless --files names one;
--tuning takes the tuning files instead, the ones to tune defaults on), for each file:
1. the baseline (bench/naive_bayes.py): trained on train, k chosen on dev, accuracy on dev and test;
2. for each model (--models, default mlp): `makemore train` on the labelled file and on the same items without
   labels, split the same way (the unlabelled file is ordered so that makemore's shuffle cuts it into the
   labelled split's train, dev and test); dev loss of each, and the whole command's time of --repeat runs
   of each, alternating;
3. `makemore eval --classify --split test --json` of the default model (mlp) against the baseline's accuracy;
4. on a file of five or more labels, `makemore sample --label L -n N --json` for every label, the samples
   classified by the baseline;
5. `makemore classify` of 1,000 test items, timed against `python -c "import torch"` in the same run.
The bars are the issue's. --baseline-only measures step 1 alone (it needs no labelled makemore).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from statistics import median
from pathlib import Path

from common import REPO, fmt_time, log, table
from naive_bayes import evaluate, fit_on_dev, read_labelled, split_labelled

from makemore.data import split_items  # noqa: E402

TUNING_FILES = ("names-1990s-by-sex.tsv", "words-8langs.tsv", "words-8langs")
REPORTING_FILES = ("names-1950s-by-sex.tsv", "words-6langs.tsv")
DEFAULT_MODEL = "mlp"
CLASSIFY_ITEMS = 1000
MIN_LABELS_FOR_SAMPLES = 5
# the bars
ACCURACY_MARGIN = 0.03
SAMPLES_CLASSIFIED_AS_ASKED = 0.85
TRAIN_TIME_RATIO = 1.10
CLASSIFY_SECONDS_BEYOND_TORCH = 0.5
# what the labelled CLI must offer: (the help of which command, the text it must hold)
NEEDED = (("train", "--labels"), ("eval", "--classify"), ("sample", "--label"), ("classify", "--top"))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def makemore(*args: str) -> tuple[str, float]:
    """stdout and wall seconds of `python -m makemore ARGS`; a failure stops the bench with its stderr."""
    command = [sys.executable, "-m", "makemore", *args]
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"`makemore {' '.join(args[:4])} ...` failed (exit {done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")
    return done.stdout, seconds


def check_cli() -> None:
    """Stop with one clear line when makemore lacks the labelled commands this bench measures."""
    for command, option in NEEDED:
        done = subprocess.run([sys.executable, "-m", "makemore", command, "--help"], capture_output=True,
                              text=True, env=ENV, cwd=REPO)
        if done.returncode != 0 or option not in done.stdout:
            raise SystemExit(f"makemore has no `{command} {option}` (issue 31 not landed?): run with "
                             "--baseline-only to measure the baseline alone")


def make_files() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-labels-data-"))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_label_data.py"), str(folder)],
                          stdout=sys.stderr)
    if done.returncode != 0:
        raise SystemExit("scripts/make_label_data.py failed: pip install -e '.[bench]' first")
    return folder


def unlabelled_twin(split: dict, path: Path) -> str:
    """Write the split's items without labels, ordered so that makemore's shuffle (split_items, seed 42)
    puts exactly the labelled train, dev and test items in its three splits; return the --splits that cut
    them there (fractions a half item past each cut, so that int() lands on it)."""
    parts = [[item for _, item in split[name]] for name in ("train", "dev", "test")]
    wanted = parts[0] + parts[1] + parts[2]
    n = len(wanted)
    order = list(range(n))
    random.Random(42).shuffle(order)  # split_items shuffles position i to where order says
    lines = [""] * n
    for i, source in enumerate(order):
        lines[source] = wanted[i]
    n1, n2 = len(parts[0]), len(parts[0]) + len(parts[1])
    fractions = ((n1 + 0.5) / n, (n2 - n1) / n, 1 - (n2 + 0.5) / n)
    got = split_items(lines, fractions)
    if [got["train"], got["dev"], got["test"]] != parts:
        raise SystemExit("the unlabelled twin does not split like the labelled file: makemore's split_items changed")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ",".join(repr(f) for f in fractions)


def train(model: str, out: Path, data: Path, *extra: str) -> dict:
    """Train and evaluate on dev: dev loss, its character count and the command's wall seconds (as `time` gives
    them: what a user waits)."""
    _, wall = makemore("train", "--model", model, "--data", str(data), "--out", str(out), "--quiet", *extra)
    checkpoint = next(out.glob("*.safetensors"))
    dev = json.loads(makemore("eval", "--checkpoint", str(checkpoint), "--split", "dev", "--json")[0])
    return {"checkpoint": checkpoint, "dev_loss": dev["loss"], "dev_chars": dev["n_chars"], "wall": wall}


def train_pair(model: str, work: Path, path: Path, twin: Path, splits: str, repeat: int) -> tuple[dict, dict, list]:
    """Train the labelled file and its unlabelled twin repeat times, alternating (a noisy machine slows both
    alike); the last of each, and each pair's ratio of wall seconds, labelled over unlabelled."""
    ratios = []
    for i in range(repeat):
        with_labels = train(model, work / f"{path.stem}-{model}-labelled-{i}", path, "--labels")
        without = train(model, work / f"{path.stem}-{model}-unlabelled-{i}", twin, "--splits", splits)
        ratios.append((with_labels["wall"], without["wall"], with_labels["wall"] / without["wall"]))
    return with_labels, without, ratios


def row_totals(matrix, labels: list[str]) -> list[int]:
    """Items per true label of a confusion matrix given as {true: {predicted: n}} or rows in label order."""
    if isinstance(matrix, dict):
        return [sum(matrix.get(label, {}).values()) for label in labels]
    return sorted(sum(row) for row in matrix)


def classify_accuracy(checkpoint: Path, split: dict, labels: list[str]) -> float:
    """makemore's test accuracy, after checking its confusion matrix counts the baseline's test items."""
    result = json.loads(makemore("eval", "--checkpoint", str(checkpoint), "--split", "test", "--classify",
                                 "--json")[0])
    ours = Counter(label for label, _ in split["test"])
    expected = [ours[label] for label in labels]
    got = row_totals(result["confusion"], labels)
    if got != (expected if isinstance(result["confusion"], dict) else sorted(expected)):
        raise SystemExit(f"makemore's test split per label {got} is not the baseline's {expected}: switch "
                         "bench/naive_bayes.py's split_labelled to makemore.data's stratified split")
    return result["accuracy"]


def samples_as_asked(checkpoint: Path, labels: list[str], baseline, n: int) -> dict[str, float]:
    """Per label: the fraction of `sample --label L` items the baseline classifies as L."""
    shares = {}
    for label in labels:
        stdout, _ = makemore("sample", "--checkpoint", str(checkpoint), "--label", label, "-n", str(n), "--json",
                             "--seed", "1")
        items = [json.loads(line)["item"] for line in stdout.splitlines() if line.strip()]
        shares[label] = sum(baseline.classify(item) == label for item in items) / len(items)
    return shares


def classify_time(checkpoint: Path, items: list[str], repeat: int = 5) -> tuple[float, float]:
    """Best wall seconds of `makemore classify` of the items, and of `python -c "import torch"`, the two
    alternating."""
    commands = ([sys.executable, "-m", "makemore", "classify", "--checkpoint", str(checkpoint), *items],
                [sys.executable, "-c", "import torch"])
    best = [math.inf, math.inf]
    for _ in range(repeat):
        for i, command in enumerate(commands):
            t = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=ENV, cwd=REPO)
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0], best[1]


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=Path, help="folder made by scripts/make_label_data.py (default: made now)")
    ap.add_argument("--tuning", action="store_true", help="the tuning files, not the reporting ones")
    ap.add_argument("--models", default=DEFAULT_MODEL, help=f"comma-separated [default: {DEFAULT_MODEL}]")
    ap.add_argument("--samples", type=int, default=200, help="samples per label [default: 200]")
    ap.add_argument("--baseline-only", action="store_true", help="only the naive-Bayes baseline")
    ap.add_argument("--repeat", type=int, default=3, help="trainings of each file, alternating [default: 3]")
    args = ap.parse_args()
    models = args.models.split(",")
    if not args.baseline_only:
        check_cli()
    folder = args.files or make_files()
    names = TUNING_FILES if args.tuning else REPORTING_FILES
    work = Path(tempfile.mkdtemp(prefix="bench-labels-"))
    p = print
    p("## Labels: labelled models against a naive-Bayes trigram baseline (bench_labels)\n")
    p(f"Files of `scripts/make_label_data.py`, the {'tuning' if args.tuning else 'reporting'} set (every default "
      f"was tuned on the other); default split 80/10/10 stratified by label (seed 42). Baseline: "
      "`bench/naive_bayes.py`, add-k character trigrams per label with the log prior of the label counts, k "
      "chosen on dev.\n")
    rows, loss_rows, sample_rows, speed_rows = [], [], [], []
    for name in names:
        path = folder / name
        pairs = read_labelled(path)
        labels = list(dict.fromkeys(label for label, _ in pairs))
        split = split_labelled(pairs)
        log(f"{name}: baseline")
        baseline, by_k = fit_on_dev(split["train"], split["dev"])
        nb_test = evaluate(baseline, split["test"])[0]
        counts = Counter(label for label, _ in pairs)
        row = [f"`{name}`", ", ".join(f"{label} {counts[label]:,}" for label in labels),
               "/".join(f"{len(split[s]):,}" for s in ("train", "dev", "test")), f"{baseline.k:g}",
               f"{by_k[baseline.k]:.2%}", f"{nb_test:.2%}"]
        if args.baseline_only:
            rows.append(row)
            continue
        twin = work / f"{path.stem}.unlabelled.txt"
        splits = unlabelled_twin(split, twin)
        trained = {}
        for model in models:
            log(f"{name}: {model} with and without labels")
            with_labels, without, pairs = train_pair(model, work, path, twin, splits, args.repeat)
            if with_labels["dev_chars"] != without["dev_chars"]:
                raise SystemExit(f"{name}: makemore's labelled dev split ({with_labels['dev_chars']} characters) "
                                 f"is not the baseline's ({without['dev_chars']}): switch split_labelled to "
                                 "makemore.data's stratified split")
            ratio = median([r for _, _, r in pairs])
            loss_rows.append([f"`{name}`", model, f"{without['dev_loss']:.4f}", f"{with_labels['dev_loss']:.4f}",
                              mark(with_labels["dev_loss"] < without["dev_loss"]),
                              fmt_time(median([u for _, u, _ in pairs])), fmt_time(median([w for w, _, _ in pairs])),
                              ", ".join(f"{r:.2f}" for _, _, r in pairs), f"{ratio:.2f}",
                              mark(ratio <= TRAIN_TIME_RATIO)])
            trained[model] = with_labels["checkpoint"]
        default = trained.get(DEFAULT_MODEL) or trained[models[0]]
        accuracy = classify_accuracy(default, split, labels)
        row += [f"{accuracy:.2%}", f"{(accuracy - nb_test) * 100:+.1f}", mark(accuracy - nb_test >= ACCURACY_MARGIN)]
        rows.append(row)
        if len(labels) >= MIN_LABELS_FOR_SAMPLES:
            log(f"{name}: samples per label")
            shares = samples_as_asked(default, labels, baseline, args.samples)
            overall = sum(shares.values()) / len(shares)
            sample_rows.append([f"`{name}`", ", ".join(f"{label} {s:.0%}" for label, s in shares.items()),
                                f"{overall:.1%}", mark(overall >= SAMPLES_CLASSIFIED_AS_ASKED)])
        log(f"{name}: classify {CLASSIFY_ITEMS} items")
        test_items = [item for _, item in split["test"]]
        items = (test_items * (CLASSIFY_ITEMS // len(test_items) + 1))[:CLASSIFY_ITEMS]
        seconds, torch_alone = classify_time(default, items)
        speed_rows.append([f"`{name}`", fmt_time(seconds), fmt_time(torch_alone), f"{seconds - torch_alone:+.2f} s",
                           mark(seconds - torch_alone <= CLASSIFY_SECONDS_BEYOND_TORCH)])

    header = ["file", "labels (items)", "train/dev/test", "k", "baseline dev", "baseline test"]
    if args.baseline_only:
        p(table(header, rows))
        p("\nmakemore's columns are not measured here (`--baseline-only`).")
        return
    default_name = DEFAULT_MODEL if DEFAULT_MODEL in models else models[0]
    p("### Classification accuracy on test\n")
    p(table(header + [f"{default_name} test", "points over baseline", "+3 points?"], rows))
    p("\n### Dev loss and training time, with labels and without (same items, same split)\n")
    p(table(["file", "model", "dev loss unlabelled", "dev loss labelled", "lower?", "train unlabelled",
             "train labelled", "ratio of each pair", "median ratio", "within 10%?"], loss_rows))
    p(f"\nTraining time: the wall time of the whole `makemore train` command (start to exit, as `time` gives it), "
      f"median of {args.repeat} runs each, the labelled and the unlabelled file alternating; the ratio is the "
      "median of each pair's labelled over unlabelled.")
    if sample_rows:
        p(f"\n### Samples drawn with `--label L` ({args.samples} per label), classified by the baseline\n")
        p(table(["file", "classified as L, per label", "overall", "at least 85%?"], sample_rows))
    p(f"\n### `makemore classify` of {CLASSIFY_ITEMS:,} test items, against `python -c \"import torch\"`\n")
    p(table(["file", "classify", "import torch", "beyond", "at most 0.5 s?"], speed_rows))
    p("\nEach time is the best of five runs, the two commands alternating.")


def run(data=None) -> str:
    """The whole section, on files made now by scripts/make_label_data.py (data, names-2018, is not used)."""
    from common import section_of

    return section_of(main, [])


if __name__ == "__main__":
    main()
