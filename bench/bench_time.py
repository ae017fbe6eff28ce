"""Training to a time budget: each model trained by gradient descent run as `makemore train --time T`, and how
close to T the whole command ends, with its schedule complete.

    python bench/bench_time.py                       # budgets 1m, 3m, 10m: every model, about 31 minutes
    python bench/bench_time.py --quick               # 25 s budgets (what bench/run.py runs)
    python bench/bench_time.py --budgets 30s,2m --models mlp,transformer --data FILE --cores 2
    python bench/bench_time.py --busy 1              # the same beside a busy process (a Python loop spinning)

Each run is a fresh `python -m makemore train ... --time T -q` process, timed from its start to its exit, as
`time makemore train --time T` measures it (the README's example). Prints a markdown section on stdout (progress
on stderr): budget, wall time, overrun (wall time over budget, in % of the budget; the aim is at most 5%), the
steps the budget set (and the revisions made when the machine's speed changed), the dev loss of the kept
(best-on-dev) weights, and whether the schedule was complete (every step of it taken, the last at the rate the
schedule, as revised, gives the last step: a cosine's end).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, beside, data_file, log, table

from makemore import checkpoint, options  # noqa: E402
from makemore.models import trainable_classes  # noqa: E402
from makemore.train import TrainConfig, lr_at  # noqa: E402

MODELS = tuple(name for name, cls in trainable_classes().items() if not cls.counts)
BUDGETS = (60.0, 180.0, 600.0)
QUICK = (25.0,)
SLACK = 0.05  # the aim: every run ends within its budget plus 5%


def timed_run(model: str, data: Path, seconds: float, out: Path, cores: int | None) -> tuple[float, dict, str]:
    """(wall time, checkpoint, what it printed) of one `makemore train --time` process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MAKEMORE_DEBUG="")
    command = [sys.executable, "-m", "makemore", "train", "--model", model, "--data", str(data), "--time",
               f"{seconds:g}", "--out", str(out), "--name", f"{model}-{seconds:g}", "-q"]
    pin = (lambda: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])) if cores else None
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, preexec_fn=pin)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, checkpoint.load(out / f"{model}-{seconds:g}{checkpoint.SUFFIX}"), done.stdout + done.stderr


def complete(ckpt: dict) -> bool:
    """Every step of the schedule taken, the last at the rate its schedule (as revised) gives the last step."""
    config, last = TrainConfig(**ckpt["train"]), ckpt["metrics"][-1]
    steps = config.steps
    return ckpt["step"] == last["step"] == steps and math.isclose(
        last["lr"], lr_at(config, ckpt.get("time_budget"), steps - 1), rel_tol=1e-9)


def row(model: str, seconds: float, wall: float, ckpt: dict) -> list:
    record = ckpt.get("time_budget") or {}
    revisions = record.get("revisions", [])
    steps = f"{ckpt['step']:,}" + (f" (planned {record['planned_steps']:,}, {len(revisions)} revision"
                                    f"{'s' * (len(revisions) != 1)})" if revisions else "")
    if ckpt["step"] == record.get("most_steps"):
        steps += " (the most it buys: ended early)"
    over = (wall - seconds) / seconds
    return [model, f"{seconds:g} s", f"{wall:.1f} s", f"{100 * over:+.1f}%" + (" **over**" if over > SLACK else ""),
            steps, f"{ckpt['best_dev_loss']:.4f}", "yes" if complete(ckpt) else "**no**"]


def section(data: Path, note: str, budgets, models, cores: int | None, busy: int = 0) -> str:
    rows, worst = [], -1.0
    with tempfile.TemporaryDirectory(prefix="bench-time-") as folder, beside(busy):
        for seconds in budgets:
            for model in models:
                log(f"{model} --time {seconds:g}")
                wall, ckpt, _ = timed_run(model, data, seconds, Path(folder), cores)
                rows.append(row(model, seconds, wall, ckpt))
                worst = max(worst, (wall - seconds) / seconds)
    where = f"{cores} cores" if cores else f"{len(os.sched_getaffinity(0))} cores"
    if busy:
        where += (f", beside {busy} busy process{'es' * (busy > 1)} (`python -c` spinning a loop, started before "
                  "the runs)")
    return (f"## Training to a time budget (bench_time)\n\n`makemore train --model M --time T -q` on {note}, {where}, "
            "each a fresh process timed from its start to its exit (as `time` measures the command). Overrun: "
            "wall time over the budget, in % of it (the aim: at most +5%). Steps: \"the most it buys\" where the "
            "budget would have bought more passes over the data than the model gains from (Model.BUDGET_EPOCHS), "
            "so the run ended early. Dev loss: the kept (best-on-dev) "
            "weights. Complete: every step of the schedule taken, the last at the schedule's last rate.\n\n"
            + table(["model", "budget", "wall time", "overrun", "steps", "dev loss", "complete"], rows)
            + f"\n\nWorst overrun: {100 * worst:+.1f}%.\n")


def run(data: Path | None = None) -> str:
    """The quick check (25 s budgets), as bench/run.py runs it."""
    path, note = (data, f"`{data.name}`") if data else data_file()
    return section(path, note, QUICK, MODELS, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="file of items (default: the lecture's names-2018.txt)")
    ap.add_argument("--budgets", help="durations separated by commas (default 1m,3m,10m)")
    ap.add_argument("--models", help=f"models separated by commas (default: {','.join(MODELS)})")
    ap.add_argument("--quick", action="store_true", help="25 s budgets: a check that takes a few minutes")
    ap.add_argument("--cores", type=int, help="run each process on this many cores (default: all it may use)")
    ap.add_argument("--busy", type=int, default=0, help="run beside this many busy processes (default 0)")
    args = ap.parse_args()
    path, note = (Path(args.data), f"`{Path(args.data).name}`") if args.data else data_file()
    budgets = QUICK if args.quick else BUDGETS
    if args.budgets:
        budgets = tuple(options.time_budget(text) for text in args.budgets.split(","))
    models = tuple(args.models.split(",")) if args.models else MODELS
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"not a model trained by gradient descent: {', '.join(unknown)} (those are: {', '.join(MODELS)})")
    print(section(path, note, budgets, models, args.cores, args.busy))


if __name__ == "__main__":
    main()
