"""Contention: the default MLP's training and eval on a quiet machine and beside busy processes, in one run.

    python bench/bench_contention.py [--steps 3000] [--rounds 2]   # prints it, writes bench/results/contention.md

Conditions: quiet; beside 1 and beside 2 busy processes (`python -c "while True: pass"`, started here
before the runs and always stopped here); and a busy process that starts a third of the way into each run
(a browser starting a video halfway). In each, three thread settings alternate, `--rounds` times each:

- torch's default (one thread per core, as makemore used until now),
- 1 thread,
- makemore's own: makemore.threads.choose() and apply() at the start, then the Governor that train_loop
  tells of every step and pauses around evaluations and checkpoints, as `makemore train` runs it.

Training: `--steps` steps of the default MLP with its default settings (batch 128, AdamW, 10 dev
evaluations), timed from just before the thread choice to the end of train_loop. A run still going after
CAP seconds is stopped and its time extrapolated from the steps it made. Eval: the dev split of the
trained model, as `makemore eval --split dev` computes it, best of 5 (makemore's setting includes its
thread choice). Then, on the quiet machine, runs with and without the Governor at the same starting
count, alternated, and the time of one tick().
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager

from common import REPO, data_file, fmt_time, log, table

import torch  # noqa: E402  (after common, which puts this checkout first on sys.path)

from makemore import threads  # noqa: E402
from makemore.api import Data  # noqa: E402
from makemore.data import Vocab  # noqa: E402
from makemore.dataset import build_dataset  # noqa: E402
from makemore.models import get_model_class  # noqa: E402
from makemore.train import TrainConfig, evaluate, train_loop  # noqa: E402

TORCH_DEFAULT = torch.get_num_threads()  # before anything here changes it
SETTINGS = ("default", "one", "auto")
LABELS = {"default": f"torch's default ({TORCH_DEFAULT} threads)", "one": "1 thread",
          "auto": "makemore's choice (choose + Governor)"}
# (busy processes from the start, busy processes from a third of the way in)
CONDITIONS = ((0, 0), (1, 0), (2, 0), (0, 1))
# A collapsed run (torch's default threads beside a busy process ran 175x slower than quiet on one
# machine) is stopped after CAP seconds and its time extrapolated from the steps it made.
CAP = 15.0
# Spins in Python; checks now and then that its parent still runs, so that it cannot outlive the bench.
SPIN = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(1000000): pass\n"


def heading(condition) -> str:
    start, later = condition
    if later:
        return f"{later} busy process{'es' * (later > 1)} from a third of the way in"
    return f"beside {start} busy process{'es' * (start > 1)}" if start else "quiet"


@contextmanager
def beside(n: int, settle: float = 0.5):
    """n busy processes running for the duration of the block, stopped whatever happens."""
    procs = []
    try:
        procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
        time.sleep(settle if n else 0.0)  # started and spinning before the timing begins
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


class Stopped(Exception):
    """Raised from on_log to stop a collapsed run."""


class Bench:
    def __init__(self, path, steps: int):
        data = Data.read(path)
        parts, self.vocab = data.split(), Vocab.from_items(data.items)
        self.cls = get_model_class("mlp")
        self.mconfig = self.cls.Config()
        self.config = TrainConfig(**dict(self.cls.train_defaults, steps=steps))
        self.train_set, self.dev_set = (build_dataset(parts[split], self.vocab, self.mconfig.block_size)
                                        for split in ("train", "dev"))

    def fresh(self):
        """The model as `makemore train` starts it (seeded from the training seed)."""
        torch.manual_seed(self.config.seed)
        return self.cls(self.mconfig, len(self.vocab))

    def train(self, setting: str, governor: bool = True, busy: int | None = None, later: int = 0) -> dict:
        """One timed training run with the given thread setting; its time, thread history and model.

        busy: for makemore's setting, the cores taken to be busy at the start (None: look, as setup()
        does). later: busy processes to start a third of the way in (stopped at the end of the run).
        """
        net = self.fresh()
        gov, done = None, [0]
        with ExitStack() as neighbours:
            t = time.perf_counter()
            if setting == "auto":
                choice = threads.choose(work=threads.work(net, self.config.batch_size), busy=busy)
                threads.apply(choice)
                gov = threads.Governor(choice) if governor else None
                start = choice.threads
            else:
                start = TORCH_DEFAULT if setting == "default" else 1
                torch.set_num_threads(start)

            def on_log(record):
                if later and done[0] < self.config.steps // 3 <= record["step"]:  # the first log point past a third
                    neighbours.enter_context(beside(later, settle=0.0))
                done[0] = record["step"]
                if time.perf_counter() - t > CAP:
                    raise Stopped

            try:
                state = train_loop(net, self.train_set, self.dev_set, self.config, progress=False, on_log=on_log,
                                   governor=gov)
                seconds, stopped = time.perf_counter() - t, False
                net.load_state_dict(state.best_state)
            except Stopped:
                seconds, stopped = (time.perf_counter() - t) * self.config.steps / done[0], True
        return dict(seconds=seconds, stopped=stopped, steps=done[0], start=start, end=torch.get_num_threads(),
                    net=net, switches=gov.switches if gov else [])

    def evaluate(self, setting: str, net) -> float:
        """Seconds for the dev split's loss, as `makemore eval` would compute it (its thread choice included)."""
        t = time.perf_counter()
        if setting == "auto":
            threads.setup(work=threads.work(net, 4096))
        else:
            torch.set_num_threads(TORCH_DEFAULT if setting == "default" else 1)
        evaluate(net, self.dev_set)
        return time.perf_counter() - t


def tick_cost(n: int = 200_000) -> float:
    """Seconds per Governor.tick() at an idle machine's count (the call the loop makes every step)."""
    gov = threads.Governor(threads.Choice(2, 2, "auto"), set_threads=lambda n: None)
    t = time.perf_counter()
    for step in range(1, n + 1):
        gov.tick(step)
    return (time.perf_counter() - t) / n


def describe_switches(run: dict) -> str:
    moves = ", ".join(f"{a}->{b} at step {s:,}" for s, a, b in run["switches"])
    return f"started at {run['start']}" + (f"; {moves}" if moves else "; no change") + f"; ended at {run['end']}"


def run(data=None, steps: int = 3000, rounds: int = 2) -> str:
    path, note = data_file() if data is None else (data, f"`{os.path.basename(data)}`")
    bench = Bench(path, steps)
    load_start, cores = os.getloadavg(), threads.usable_cores()
    others = threads.busy_cores(os.cpu_count() or 1)
    runs = {(c, s): [] for c in CONDITIONS for s in SETTINGS}
    eval_times = {(c, s): [] for c in CONDITIONS for s in SETTINGS if not c[1]}
    overhead = {True: [], False: []}
    try:
        torch.set_num_threads(TORCH_DEFAULT)
        Bench(path, 300).train("default")  # warm-up: first-use costs (allocator, MKL) out of the first timing
        for condition in CONDITIONS:
            start, later = condition
            with beside(start):
                for r in range(rounds):
                    for setting in SETTINGS:
                        result = bench.train(setting, later=later)
                        runs[condition, setting].append(result)
                        log(f"{heading(condition)}: {setting:7s} {result['seconds']:6.2f} s"
                            + (f" (extrapolated from {result['steps']:,} steps)" if result["stopped"] else "")
                            + f"  {describe_switches(result)}")
                if later:
                    continue
                trained = next(r for r in runs[(0, 0), "default"] if not r["stopped"])["net"]
                for r in range(5):
                    for setting in SETTINGS:
                        if sum(eval_times[condition, setting]) < CAP / 3:  # a collapsed setting: fewer times
                            eval_times[condition, setting].append(bench.evaluate(setting, trained))
                log(f"{heading(condition)}: eval "
                    + ", ".join(f"{s} {fmt_time(min(eval_times[condition, s]))}" for s in SETTINGS))
        for r in range(3):
            for with_governor in (True, False):
                result = bench.train("auto", governor=with_governor, busy=0)
                overhead[with_governor].append(result["seconds"])
                overhead_start = result["start"]
        log("governor on/off: " + ", ".join(f"{k}: {min(v):.2f} s" for k, v in overhead.items()))
    finally:
        torch.set_num_threads(TORCH_DEFAULT)
    tick = tick_cost()
    load_end = os.getloadavg()

    # the same seed gives the same weights whatever the threads did: the dev losses of every finished run
    finished = [r for rs in runs.values() for r in rs if not r["stopped"]]
    torch.set_num_threads(1)
    dev = [evaluate(r["net"], bench.dev_set) for r in finished]
    torch.set_num_threads(TORCH_DEFAULT)
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
    gov_on, gov_off = min(overhead[True]), min(overhead[False])
    lines = [
        "## Contention: training and eval beside busy processes (bench_contention)",
        "",
        f"Data: {note}. The default MLP (block 6, embedding 32, hidden 512, direct connections), {steps:,} steps "
        f"of its default training (batch 128, AdamW, cosine, 10 dev evaluations), best of {rounds} runs per "
        f"cell (a run still going after {CAP:.0f} s is stopped and its time extrapolated); the settings "
        "alternate within each condition. Busy processes: `python -c \"while True: pass\"`, started and "
        f"stopped by the bench. {cores} usable cores ({os.cpu_count()} logical), torch {torch.__version__}; "
        f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end; {others} other "
        "runnable thread(s) at the start (0 on a quiet machine: otherwise the quiet column is not quiet). "
        "Ratios are to torch's default on the quiet machine.",
        "",
        "Training:",
        "",
        table(["threads"] + [heading(c) for c in CONDITIONS], rows),
        "",
        "Eval of the dev split (`evaluate`, chunks of 4,096; makemore's choice includes its thread choice), "
        "best of 5 (fewer for a collapsed setting):",
        "",
        table(["threads"] + [heading(c) for c in eval_conditions], eval_rows),
        "",
        "Targets (issue 22): " + "; ".join(targets) + ".",
        "",
        "What the Governor did in makemore's runs: "
        + "; ".join(f"{heading(c)}: " + " / ".join(describe_switches(r) for r in runs[c, "auto"]) for c in CONDITIONS)
        + f". Every run that finished ({len(finished)}, all settings and conditions) ends at the same dev "
        f"loss to {spread:.1e}: the count changes only float rounding.",
        "",
        f"The Governor's cost on the quiet machine: {gov_on:.2f} s with it, {gov_off:.2f} s without it (both "
        f"starting at {overhead_start} threads; best of 3 each, alternated): {gov_on / gov_off:.3f}x. One tick() "
        f"takes {tick * 1e9:.0f} ns, against {quiet / steps * 1e6:.0f} µs for a step.",
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
