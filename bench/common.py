"""Small helpers shared by the bench modules: where the data is, timing, markdown tables."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))  # measure this checkout's makemore, not another installed copy
# The lecture's file, taken by path and never copied: ../shared/data/names-2018.txt beside the checkout,
# or wherever MAKEMORE_NAMES_2018 (set by bench/run.py --data) points.
DEFAULT_NAMES_2018 = REPO.parent / "shared" / "data" / "names-2018.txt"


def names_2018() -> Path | None:
    """The lecture's names file, or None when it is not there."""
    path = Path(os.environ.get("MAKEMORE_NAMES_2018") or DEFAULT_NAMES_2018)
    return path if path.is_file() else None


def data_file() -> tuple[Path, str]:
    """The file to benchmark on and a note for the report: names-2018 if present, else the repo's names.txt."""
    path = names_2018()
    if path is not None:
        return path, f"`{path.name}` (the lecture's file)"
    return REPO / "names.txt", "`names.txt` (the repo's; the lecture's names-2018.txt was not found)"


def best_of(fn, repeat: int = 5) -> tuple[float, object]:
    """The fastest of repeat wall-clock timings of fn() and its last result. The minimum is the least
    disturbed by other work on the machine, for the project and the baselines alike."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def median(values) -> float:
    return statistics.median(values)


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# Spins in Python; checks now and then that its parent still runs, so that it cannot outlive the bench.
SPIN = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(1000000): pass\n"


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


_START = time.perf_counter()


def log(*args) -> None:
    """Progress for the person running the bench: stderr, so that stdout stays the markdown section."""
    print(f"[{time.perf_counter() - _START:6.1f}s]", *args, file=sys.stderr, flush=True)


def section_of(main, argv: list[str]) -> str:
    """Run a module's command-line main() with argv and return what it printed: its markdown section."""
    import contextlib
    import io

    buffer = io.StringIO()
    saved = sys.argv
    sys.argv = [saved[0]] + argv
    try:
        with contextlib.redirect_stdout(buffer):
            main()
    finally:
        sys.argv = saved
    return buffer.getvalue()


def main_with_extra_data(main, data, prefix: str) -> str:
    """A module's section from its main(), given --data (the lecture's file, when there) and --extra: a
    folder of the files scripts/make_bench_data.py makes (left out when it cannot: no bench extra)."""
    import tempfile

    extra = tempfile.mkdtemp(prefix=prefix)
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "make_bench_data.py"), extra],
                          stdout=sys.stderr).returncode == 0
    return section_of(main, (["--data", str(data)] if data else []) + (["--extra", extra] if made else []))
