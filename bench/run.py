"""Run every benchmark and write BENCHMARKS.md.

    python bench/run.py                  # every bench/bench_*.py; writes BENCHMARKS.md and bench/results/
    python bench/run.py core ngram       # only these modules; writes bench/results/ only (unless --out)
    python bench/run.py --data PATH      # the lecture's names-2018.txt elsewhere than ../shared/data/

A bench module is a file bench/bench_<name>.py with a function run() -> str that returns one markdown
section (a '## ' heading, then text and tables; progress goes to stderr). It may take one argument,
`data`: the path of names-2018.txt, or None when that file is absent. It ends with

    if __name__ == "__main__":
        print(run())

so that `python bench/bench_<name>.py` runs it alone. Each module runs in a fresh process, one after the
other, so that its timings and peak memory are its own; a module that fails or runs past --timeout gets
a section saying so, and the others still run.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

from common import DEFAULT_NAMES_2018  # noqa: E402  (bench/ is not a package)


def modules() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in BENCH.glob("bench_*.py"))


def child(name: str) -> None:
    """Run one module's run() in this process; its section goes to stdout, anything else to stderr."""
    module = importlib.import_module(f"bench_{name}")
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # a stray print must not land in the report
    try:
        data = os.environ.get("MAKEMORE_NAMES_2018")
        data = Path(data) if data and Path(data).is_file() else None
        params = inspect.signature(module.run).parameters
        required = [p for p in params.values() if p.default is p.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if "data" in params:
            section = module.run(data=data)
        elif required:  # one positional argument, whatever its name: the data file
            section = module.run(data)
        else:
            section = module.run()
    finally:
        sys.stdout = real_stdout
    if not isinstance(section, str):
        raise TypeError(f"bench_{name}.run() returned {type(section).__name__}, not a markdown str")
    sys.stdout.write(section.rstrip() + "\n")


def run_module(name: str, timeout: float, env: dict) -> tuple[str, str, float]:
    """(status, section, seconds) of one module run in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    print(f"== bench_{name}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        # its own session, so that a timeout also ends any process the module started
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        tail = collections.deque(maxlen=15)
        relay = threading.Thread(target=_relay, args=(proc.stderr, tail), daemon=True)
        relay.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        relay.join()
        seconds = time.perf_counter() - t
        out.seek(0)
        section = out.read()
    if seconds >= timeout:
        return "timed out", _failure(name, f"stopped after {timeout:.0f} s (--timeout)", tail), seconds
    if proc.returncode != 0:
        return "failed", _failure(name, f"exit status {proc.returncode}", tail), seconds
    if not section.strip():
        return "failed", _failure(name, "it returned an empty section", tail), seconds
    return "ok", section.rstrip() + "\n", seconds


def _relay(stream, tail) -> None:
    """Show a module's progress as it comes and keep its last lines for a failure report."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line.rstrip("\n"))


def _failure(name: str, why: str, tail) -> str:
    shown = "\n".join(tail) or "(nothing on stderr)"
    return (f"## bench_{name}: not measured\n\n`python bench/bench_{name}.py` did not finish: {why}.\n\n"
            f"```\n{shown}\n```\n")


def machine() -> list[tuple[str, str]]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    torch_info = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
        capture_output=True, text=True).stdout.split()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    rows = [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores" + (f", {memory} memory" if memory else "")),
        ("torch", f"{torch_info[0]} ({torch_info[1]} intra-op threads)" if len(torch_info) == 2 else "not importable"),
        ("Python", f"{platform.python_version()} on {platform.system()} {platform.release()}"),
        ("load average (1/5/15 min) at start", load),
    ]
    # settings that change torch's speed, when the caller set them
    tuning = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ]
    if tuning:
        rows.append(("environment", " ".join(tuning)))
    if commit:
        rows.append(("commit", commit + (" with uncommitted changes" if dirty else "")))
    return rows


def _git(*args) -> str:
    """git's output, or '' outside a checkout or without git."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def write(path: Path, text: str) -> None:
    """Replace path in one step (a temporary file, then a rename), so a stopped run leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"modules to run (default: all of {', '.join(modules())})")
    parser.add_argument("--data", type=Path, help=f"names-2018.txt [default: {DEFAULT_NAMES_2018}]")
    parser.add_argument("--out", type=Path, help="the report [default: BENCHMARKS.md when every module runs]")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per module [default: 600]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    names = args.names or modules()
    unknown = [n for n in names if n not in modules()]
    if unknown:
        parser.error(f"no bench/bench_{unknown[0]}.py (modules: {', '.join(modules())})")
    data = args.data or Path(os.environ.get("MAKEMORE_NAMES_2018") or DEFAULT_NAMES_2018)
    env = dict(os.environ, MAKEMORE_NAMES_2018=str(data.resolve()),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    started = datetime.now(timezone.utc)
    about = machine()
    t0 = time.perf_counter()
    results = []
    for name in names:
        status, section, seconds = run_module(name, args.timeout, env)
        write(RESULTS / f"{name}.md", section)
        results.append((name, status, seconds, section))
    total = time.perf_counter() - t0

    command = "python bench/run.py" + "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Benchmarks", "",
        "Measured by `python bench/run.py` (see bench/run.py for options; each section is also "
        "`python bench/bench_<name>.py`). Timings are wall clock on the machine below; each ratio compares "
        "the project with a baseline written the way the lecture writes it, measured in the same run.", "",
        "| | |", "|---|---|",
        f"| command | `{command}` |",
        f"| date | {started:%Y-%m-%d %H:%M} UTC |",
        *(f"| {k} | {v} |" for k, v in about),
        f"| data | `{data}`{'' if data.is_file() else ' (absent: modules fell back to what they could)'} |",
        f"| total time | {total:.0f} s |", "",
        "| module | status | seconds |", "|---|---|---|",
        *(f"| bench_{n} | {s} | {sec:.0f} |" for n, s, sec, _ in results), "",
    ]
    report = "\n".join(lines) + "\n" + "\n".join(section for *_, section in results)
    out = args.out or (REPO / "BENCHMARKS.md" if not args.names else None)
    if out is not None:
        write(out, report)
        print(f"wrote {out} ({total:.0f} s)", file=sys.stderr)
    else:
        print(f"wrote {', '.join(f'bench/results/{n}.md' for n in names)} ({total:.0f} s)", file=sys.stderr)
    return 0 if all(s == "ok" for _, s, *_ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
