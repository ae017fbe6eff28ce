"""Data-parallel benchmark: `makemore train` with 1 and 2 CPU processes (torchrun, gloo), one thread each.

    python bench/bench_ddp.py [--data PATH] [--steps 300] [--batch-size 2048 4096] [--repeat 3] > bench/results/ddp.md

Prints a markdown section:
1. training throughput (examples per second) of 1 process and of 2 processes at the same batch per
   process, for each batch size given, and the scaling (the issue's target: 2 processes >= 1.6x one,
   i.e. 80% efficiency). DDP costs each process a few ms of CPU a step (the all-reduce and its
   threads) whatever the batch, so the default MLP, whose step is short, needs a large batch;
2. the dev loss of 2 processes at the first batch size against 1 process trained with the same global
   batch (target: within 0.01);
3. peak memory of `makemore train --steps 5` on the names repeated x100 (3 million lines), 1 and 2 processes.
Dataset build time and peak memory for x1, x10 and x100 are in the core section (bench/bench_core.py).

Every run is the real CLI in a fresh process. Throughput is read from the run's metrics file (elapsed
time at each log point), from step 20 to the last step before the final evaluation, so start-up,
warm-up and evaluation are left out. Runs alternate between 1 and 2 processes, and the best of
--repeat is kept: on a shared machine the best is the least disturbed. Scaling needs 2 idle cores: the
load average is printed with the results; rerun on a quiet machine before trusting the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_NAMES = ROOT.parent / "shared" / "data" / "names-2018.txt"
WARM = 20  # steps left out of the throughput as warm-up


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def data_file(data: str | Path | None) -> Path:
    if data is not None:
        return Path(data)
    path = Path(os.environ.get("MAKEMORE_NAMES_2018") or SHARED_NAMES)
    return path if path.is_file() else ROOT / "names.txt"


def launch(nproc: int, cwd: Path, *args) -> tuple[str, float, float]:
    """Run makemore train with nproc processes (torchrun when more than 1), one thread each.

    Returns its stdout, the wall seconds, and the peak RSS in MiB of the largest process: wait4 reports
    the maximum over the child and the children it waited for (torchrun's workers).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                if nproc > 1 else [sys.executable])
    cmd = launcher + ["-m", "makemore", "train", "-q", *map(str, args)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        seconds = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    return stdout, seconds, usage.ru_maxrss / 1024


def dev_loss(stdout: str) -> float:
    return float(re.search(r"dev loss ([0-9.]+)", stdout).group(1))


def throughput(metrics_path: Path, examples_per_step: int) -> float:
    """Examples per second between step WARM and the last log point before the final evaluation."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    records = [r for r in records if "dev_loss" not in r]
    first = next(r for r in records if r["step"] >= WARM)
    last = records[-1]
    return (last["step"] - first["step"]) * examples_per_step / (last["elapsed"] - first["elapsed"])


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def run(data: str | Path | None = None, steps: int = 300, batch_sizes=(2048, 4096), repeat: int = 3,
        memory: bool = True) -> str:
    import torch

    path = data_file(data)
    load_before = os.getloadavg()
    common = ["--model", "mlp", "--data", path.resolve(), "--steps", steps, "--eval-interval", steps]
    batch_size = batch_sizes[0]  # the one whose dev loss is compared
    rates = {(nproc, b): [] for b in batch_sizes for nproc in (1, 2)}
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(repeat):
            for b in batch_sizes:
                for nproc in (1, 2):
                    out = tmp / f"p{nproc}-{b}-{i}"
                    stdout, seconds, _ = launch(nproc, tmp, *common, "--batch-size", b, "--out", out)
                    rates[nproc, b].append(throughput(out / "mlp.metrics.jsonl", nproc * b))
                    losses[nproc, b] = dev_loss(stdout)
                    log(f"{nproc} process(es) x {b}: {rates[nproc, b][-1]:,.0f} examples/s ({seconds:.1f} s)")
        out = tmp / "global"
        stdout, _, _ = launch(1, tmp, *common, "--batch-size", 2 * batch_size, "--out", out)
        losses[1, 2 * batch_size] = dev_loss(stdout)
        log(f"1 process x {2 * batch_size}: dev loss {losses[1, 2 * batch_size]:.4f}")

        rows = []
        if memory:
            big = tmp / "names_x100.txt"
            lines = path.read_text(encoding="utf-8").splitlines()
            big.write_text("\n".join(lines * 100) + "\n", encoding="utf-8")
            for nproc in (1, 2):
                _, seconds, peak = launch(nproc, tmp, "--model", "mlp", "--data", big, "--steps", 5,
                                               "--eval-interval", 5, "--batch-size", batch_size,
                                               "--out", tmp / f"big{nproc}")
                rows.append([nproc, f"{len(lines) * 100:,}", f"{big.stat().st_size / 2**20:.0f} MiB",
                             f"{peak:,.0f} MiB", f"{seconds:.0f} s"])
                log(f"x100, {nproc} process(es): peak {peak:.0f} MiB, {seconds:.0f} s")
    load_after = os.getloadavg()

    throughput_rows, scalings = [], {}
    for b in batch_sizes:
        best1, best2 = max(rates[1, b]), max(rates[2, b])
        scalings[b] = best2 / best1
        throughput_rows += [[1, f"{b:,}", f"{b:,}", f"{best1:,.0f}", f"{statistics.median(rates[1, b]):,.0f}", "1.00x"],
                            [2, f"{b:,}", f"{2 * b:,}", f"{best2:,.0f}", f"{statistics.median(rates[2, b]):,.0f}",
                             f"{scalings[b]:.2f}x ({scalings[b] / 2:.0%} efficiency)"]]
    gap = abs(losses[2, batch_size] - losses[1, 2 * batch_size])
    n = f"{batch_size:,}"
    text = [
        "## Data-parallel training (DDP under torchrun, CPU, gloo)",
        "",
        f"`makemore train --model mlp` on {path.name}, {steps} steps, one thread per process "
        f"(OMP_NUM_THREADS=1); {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        f"(on {os.cpu_count()} CPUs: above ~0.5 the ratio below is not trustworthy). "
        f"Examples per second from step {WARM} to the last step before the final evaluation; "
        f"best (and median) of {repeat} alternating runs.",
        "",
        table(["processes", "batch per process", "global batch", "examples/s best", "median", "scaling"],
              throughput_rows),
        "",
        "Target: 2 processes >= 1.6x one at the same batch per process: "
        + "; ".join(f"batch {b:,} **{'met' if x >= 1.6 else 'not met'}** ({x:.2f}x)" for b, x in scalings.items())
        + ".",
        "",
        table(["run", "dev loss"],
              [[f"1 process, batch {2 * batch_size:,}", f"{losses[1, 2 * batch_size]:.4f}"],
               [f"2 processes, batch {n} each", f"{losses[2, batch_size]:.4f}"]]),
        "",
        f"Same global batch, dev losses {gap:.4f} apart (target: within 0.01): "
        f"**{'met' if gap <= 0.01 else 'not met'}**. The processes split one random draw, so they train "
        "on the same batches as the single process; only float round-off differs.",
    ]
    if memory:
        text += [
            "",
            f"Large data: `makemore train --steps 5 --eval-interval 5` on {path.name} repeated x100 (the "
            "whole run: reading, splitting, building the dataset, training, evaluating the train and dev "
            "splits, writing the checkpoint); peak RSS of the largest process (with 2, each builds its own dataset).",
            "",
            table(["processes", "lines", "file", "peak RSS", "wall"], rows),
        ]
    return "\n".join(text) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="names file [default: ../shared/data/names-2018.txt, else names.txt]")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2048, 4096],
                        help="per process; the first is also the one whose dev loss is compared")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the x100 memory runs")
    args = parser.parse_args()
    print(run(args.data, args.steps, args.batch_size, args.repeat, not args.no_memory), end="")


if __name__ == "__main__":
    main()
