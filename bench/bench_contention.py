"""Contention: the default MLP's training and eval on a quiet machine and beside busy processes, in one run.

    python bench/bench_contention.py [--steps 3000] [--rounds 2]   # prints it, writes bench/results/contention.md

Conditions: quiet; beside 1 and beside 2 busy processes (`python -c "while True: pass"`, started here
before the runs and always stopped here); and a busy process that starts a third of the way into each run
(a browser starting a video halfway). In each, three thread settings alternate, `--rounds` times each,
all through makemore's public API (what `makemore train --threads` and `makemore eval --threads` call):

- torch's default count (one thread per core, as makemore used before issue 22): api.train(n_threads=k),
- 1 thread: api.train(n_threads=1),
- makemore's own: api.train(n_threads=None), its choice at the start and its Governor during the run.

Training: `--steps` steps of the default MLP with its default settings (batch 128, AdamW, 10 dev evaluations,
a checkpoint at each), timed by the run's own log records (`elapsed` at the last step, the thread choice
before the loop left out). A run still going after CAP seconds is stopped from on_log and its time
extrapolated from the steps it made. What the Governor did is seen from outside: torch.get_num_threads() at
each log point. Eval: api.load(checkpoint, n_threads=...).evaluate("dev"), as `makemore eval --split dev`
computes it (the split and its dataset built in the call), best of 5; the thread choice is made by load,
untimed. Then, on the quiet machine, makemore's choice against a fixed count equal to the one it started
with (the Governor's cost), alternated. Dropped with the move off internals (issue 30): forcing the count of
busy cores the choice sees, the Governor's exact switch steps (log points give them to within a few steps)
and the timing of one tick().
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack

from common import REPO, beside, data_file, fmt_time, log, table

import torch  # noqa: E402  (after common, which puts this checkout first on sys.path)

from makemore import api  # noqa: E402

TORCH_DEFAULT = torch.get_num_threads()  # before anything here changes it
SETTINGS = ("default", "one", "auto")
THREADS = {"default": TORCH_DEFAULT, "one": 1, "auto": None}  # api's n_threads for each setting
LABELS = {"default": f"torch's default ({TORCH_DEFAULT} threads)", "one": "1 thread",
          "auto": "makemore's choice (its count + Governor)"}
# (busy processes from the start, busy processes from a third of the way in)
CONDITIONS = ((0, 0), (1, 0), (2, 0), (0, 1))
# A collapsed run (torch's default threads beside a busy process ran 175x slower than quiet on one
# machine) is stopped after CAP seconds and its time extrapolated from the steps it made.
CAP = 15.0


def heading(condition) -> str:
    start, later = condition
    if later:
        return f"{later} busy process{'es' * (later > 1)} from a third of the way in"
    return f"beside {start} busy process{'es' * (start > 1)}" if start else "quiet"


def runnable_others() -> int | None:
    """Other runnable threads on the machine now (Linux's /proc/loadavg; None elsewhere)."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0]) - 1  # less this process's reading thread
    except (OSError, IndexError, ValueError):
        return None


class Stopped(Exception):
    """Raised from on_log to stop a collapsed run."""


class Bench:
    def __init__(self, data, out, steps: int):
        self.data, self.out, self.steps, self.runs = data, out, steps, 0

    def train(self, n_threads: int | None, later: int = 0, steps: int | None = None) -> dict:
        """One timed training run: its seconds, torch's thread count at the log points where it changed, and
        (when it finished) its checkpoint and dev loss. later: busy processes to start a third of the way in."""
        steps = steps or self.steps
        self.runs += 1
        records, counts = [], []
        with ExitStack() as neighbours:
            def on_log(record):
                if later and (records[-1]["step"] if records else 0) < steps // 3 <= record["step"]:
                    neighbours.enter_context(beside(later, settle=0.0))
                records.append(record)
                if not counts or counts[-1][1] != torch.get_num_threads():
                    counts.append((record["step"], torch.get_num_threads()))
                if record["elapsed"] > CAP:
                    raise Stopped

            try:
                result = api.train("mlp", self.data, self.out, f"run-{self.runs}", train_options=dict(steps=steps),
                                   progress=False, n_threads=n_threads, on_log=on_log)
            except Stopped:
                result = None
        last = records[-1]
        return dict(seconds=last["elapsed"] * steps / last["step"], stopped=result is None, steps=last["step"],
                    counts=counts, path=result and result.path, dev_loss=result and result.dev_loss)

    @staticmethod
    def evaluate(path, n_threads: int | None) -> float:
        """Seconds for the dev split's loss, as `makemore eval --split dev` computes it."""
        trained = api.load(path, n_threads=n_threads)
        t = time.perf_counter()
        trained.evaluate("dev")
        return time.perf_counter() - t


def describe_counts(run: dict) -> str:
    (step, first), changes = run["counts"][0], run["counts"][1:]
    moves = ", ".join(f"{n} by step {s:,}" for s, n in changes)
    return f"{first} at step {step:,}" + (f", {moves}" if moves else ", no change")


def run(data=None, steps: int = 3000, rounds: int = 2) -> str:
    path, note = data_file() if data is None else (data, f"`{os.path.basename(data)}`")
    load_start, others = os.getloadavg(), runnable_others()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = {(c, s): [] for c in CONDITIONS for s in SETTINGS}
    eval_times = {(c, s): [] for c in CONDITIONS for s in SETTINGS if not c[1]}
    overhead = {"auto": [], "fixed": []}
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as out:
        bench = Bench(path, out, steps)
        try:
            bench.train(TORCH_DEFAULT, steps=min(300, steps))  # warm-up: first-use costs out of the first timing
            for condition in CONDITIONS:
                start, later = condition
                with beside(start):
                    for r in range(rounds):
                        for setting in SETTINGS:
                            result = bench.train(THREADS[setting], later=later)
                            runs[condition, setting].append(result)
                            log(f"{heading(condition)}: {setting:7s} {result['seconds']:6.2f} s"
                                + (f" (extrapolated from {result['steps']:,} steps)" if result["stopped"] else "")
                                + f"  threads {describe_counts(result)}")
                    if later:
                        continue
                    # the weights are the same whatever the threads: any quiet run that finished will do
                    trained = next((r["path"] for s in SETTINGS for r in runs[(0, 0), s] if not r["stopped"]), None)
                    if trained is None:
                        raise RuntimeError(f"no quiet run finished within {CAP:.0f} s: the machine is too busy")
                    for r in range(5):
                        for setting in SETTINGS:
                            if sum(eval_times[condition, setting]) < CAP / 3:  # a collapsed setting: fewer times
                                eval_times[condition, setting].append(bench.evaluate(trained, THREADS[setting]))
                    log(f"{heading(condition)}: eval "
                        + ", ".join(f"{s} {fmt_time(min(eval_times[condition, s]))}" for s in SETTINGS))
            for r in range(3):  # makemore's choice, then the count it started with, fixed
                chosen = bench.train(None)
                fixed = bench.train(chosen["counts"][0][1])
                overhead["auto"].append(chosen)
                overhead["fixed"].append(fixed)
            log("Governor on/off: " + ", ".join(f"{k}: {min(r['seconds'] for r in v):.2f} s"
                                                for k, v in overhead.items()))
        finally:
            torch.set_num_threads(TORCH_DEFAULT)
    load_end = os.getloadavg()

    # the same seed gives the same weights whatever the threads did: the dev losses of every finished run
    dev = [r["dev_loss"] for rs in (*runs.values(), *overhead.values()) for r in rs if not r["stopped"]]
    spread = max(dev) - min(dev)

    best = {key: min(rs, key=lambda r: r["seconds"]) for key, rs in runs.items()}
    quiet = best[(0, 0), "default"]["seconds"]

    def cell(condition, setting):
        r = best[condition, setting]
        text = f"{r['seconds']:.2f} s ({r['seconds'] / quiet:.2f}x)"
        return text + (f", extrapolated: {r['steps']:,} steps in {CAP:.0f} s" if r["stopped"] else "")

    rows = [[LABELS[s]] + [cell(c, s) for c in CONDITIONS] for s in SETTINGS]
    eval_conditions = [c for c in CONDITIONS if not c[1]]
    eval_quiet = min(eval_times[(0, 0), "default"])
    eval_rows = [[LABELS[s]] + [f"{fmt_time(min(eval_times[c, s]))} ({min(eval_times[c, s]) / eval_quiet:.2f}x)"
                                for c in eval_conditions] for s in SETTINGS]
    auto = {c: best[c, "auto"]["seconds"] / quiet for c in CONDITIONS}
    collapse = best[(2, 0), "default"]["seconds"] / quiet
    targets = [
        f"quiet, makemore's choice within 10% of torch's default: {auto[0, 0]:.2f}x, "
        f"**{'met' if auto[0, 0] <= 1.1 else 'not met'}**",
        f"beside 1 busy process at most 1.5x the quiet time: {auto[1, 0]:.2f}x, "
        f"**{'met' if auto[1, 0] <= 1.5 else 'not met'}** (1 thread alone: "
        f"{best[(1, 0), 'one']['seconds'] / quiet:.2f}x)",
        f"beside 2 busy processes, no collapse: {auto[2, 0]:.2f}x against {collapse:.2f}x with torch's default",
        f"a busy process arriving mid-run: {auto[0, 1]:.2f}x against "
        f"{best[(0, 1), 'default']['seconds'] / quiet:.2f}x with torch's default",
    ]
    gov_on, gov_off = (min(r["seconds"] for r in overhead[k]) for k in ("auto", "fixed"))
    starts = sorted({r["counts"][0][1] for r in overhead["auto"]})
    lines = [
        "## Contention: training and eval beside busy processes (bench_contention)",
        "",
        f"Data: {note}. The default MLP (block 6, embedding 32, hidden 512, direct connections), {steps:,} steps "
        f"of its default training (batch 128, AdamW, cosine, 10 dev evaluations and checkpoints) through "
        f"api.train, timed by its log records; best of {rounds} runs per cell (a run still going after "
        f"{CAP:.0f} s is stopped and its time extrapolated); the settings alternate within each condition. "
        "Busy processes: `python -c \"while True: pass\"`, started and stopped by the bench. "
        f"{cores} usable cores ({os.cpu_count()} logical), torch {torch.__version__}; load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end; {others} other runnable thread(s) at "
        "the start (0 on a quiet machine: otherwise the quiet column is not quiet). Ratios are to torch's "
        "default on the quiet machine.",
        "",
        "Training:",
        "",
        table(["threads"] + [heading(c) for c in CONDITIONS], rows),
        "",
        "Eval of the dev split (`api.load(...).evaluate(\"dev\")`, chunks of 4,096; the thread count is load's), "
        "best of 5 (fewer for a collapsed setting):",
        "",
        table(["threads"] + [heading(c) for c in eval_conditions], eval_rows),
        "",
        "Targets (issue 22): " + "; ".join(targets) + ".",
        "",
        "torch's thread count at the log points of makemore's runs: "
        + "; ".join(f"{heading(c)}: " + " / ".join(describe_counts(r) for r in runs[c, "auto"]) for c in CONDITIONS)
        + f". Every run that finished ({len(dev)}, all settings and conditions) ends at the same dev "
        f"loss to {spread:.1e}: the count changes only float rounding.",
        "",
        f"The Governor's cost on the quiet machine: {gov_on:.2f} s with makemore's choice, {gov_off:.2f} s with "
        f"the count it started with ({', '.join(map(str, starts))}) given as n_threads (best of 3 each, "
        f"alternated): {gov_on / gov_off:.3f}x.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="names file [default: ../shared/data/names-2018.txt, else names.txt]")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    section = run(args.data, args.steps, args.rounds)
    print(section, end="")
    (REPO / "bench" / "results" / "contention.md").write_text(section, encoding="utf-8")


if __name__ == "__main__":
    main()
