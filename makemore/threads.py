"""How many threads torch computes with: chosen for the machine at the start, kept right as its load changes.

torch splits each operation over one thread per core, and the threads wait for each other at its end. A
step of makemore's small models is hundreds of such operations of microseconds each, so a thread that
loses its core to another process holds up the others at every one: beside one busy process on 2 cores the
default MLP ran from 2.5 to 127 times slower with torch's 2 threads than with 1 (bench/results/contention.md).

- choose() picks the count to start with: the user's (a count given, or OMP_NUM_THREADS) exactly; else
  one thread for each WORK_PER_THREAD multiply-adds of the work, at most one per core that no other
  process keeps busy; a GPU run needs few on the CPU side, and keeps them.
- A Governor, told of every training step, watches their speed. When the steps become much slower than
  they were, or the process gets much less CPU than its threads ask for, it tries fewer threads for a
  moment and keeps whichever is faster; now and then it tries more again, to go back when the load goes.

The count changes only how the sums inside an operation are split, so whatever it is (and whenever it
changes) a run gives the same results up to float rounding.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import memory
from makemore.errors import MakemoreError, OptionError

# Multiply-adds of one forward pass (see work()) worth another thread. Measured on 16 cores (seconds for
# the same steps at 1 / 2 / 4 / 8 / 16 threads): the lecture's MLP at batch 32 (0.4M) 0.32 / 0.31 / 0.38;
# the default MLP at batch 128 (15M) 1.18 / 1.11 / 0.94 / 0.77 / 0.68; at batch 512 (61M) 1.30 / 0.82 /
# 0.55 / 0.48 / 0.47; its eval chunks of 4,096 (490M) 79 / 40 / 23 / 15 / 12 ms.
WORK_PER_THREAD = 1_000_000
# On a GPU run the CPU only gathers batches and launches kernels: the default MLP on an H200 took the
# same time with 1, 2, 4 or 16 threads (0.58 s for 2,000 steps).
ACCELERATOR_THREADS = 2
# the most threads a user's count may give per usable core: beyond a few per core they only wait for each other
# (and 1,024 threads reserve 8 GB of address space for their stacks, which ended in a MemoryError)
MAX_THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, within a container's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs a cgroup quota allows (v2 cpu.max, else v1 cfs_quota_us), rounded up; None without one."""
    for name, period_name in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (root / name).read_text().split()
            if period_name is not None:
                fields.append((root / period_name).read_text().strip())
            quota, period = fields[0], fields[1]
            if quota == "max" or int(quota) <= 0:
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, IndexError):
            continue
    return None


def _running() -> int | None:
    """Threads runnable on the machine right now (/proc/loadavg's fourth field), this process's included."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running() -> int:
    """This process's threads that are runnable now: the one asking, and torch's, which spin for some
    milliseconds after each parallel operation (up to 50 ms measured) before they sleep."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = Path(f"/proc/self/task/{task}/stat").read_text()
        except OSError:  # the thread ended
            continue
        count += stat[stat.rindex(")") + 2] == "R"  # the state follows the command name in parentheses
    return max(1, count)


def busy_cores(cores: int, readings: int = 3, gap: float = 0.0005, running=_running, own=_own_running,
               sleep=time.sleep) -> int:
    """Cores that other processes keep busy now: the runnable threads less this process's, the fewest of a
    few readings half a millisecond apart (a process that only wakes for a moment is not counted), at most
    cores.

    /proc/loadavg counts the whole machine (or, in a container, the host): where this process may use only
    some of its cores, work on the others is counted too, so the count errs towards fewer threads, which
    the Governor corrects once a run is under way. 0 where the count cannot be read.
    """
    counts = []
    for i in range(readings):
        if i:
            sleep(gap)
        n = running()
        if n is None:
            return 0
        counts.append(n - own())
    return max(0, min(cores, min(counts)))


def work(model, rows: int) -> int:
    """Multiply-adds of one forward pass of rows examples, roughly: every weight is used once per example,
    or once per position of a row of a model that reads whole items."""
    positions = rows * (model.block_size if model.whole_items else 1)
    return positions * sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Choice:
    """The thread count to start with, and what the Governor may do with it."""

    threads: int
    most: int  # the count for this work on an idle machine: the Governor tries no more than this
    # "--threads" or "OMP_NUM_THREADS" (the user's count), "device" (a GPU run's), or "auto"
    source: str
    reason: str  # why, in words, for a log line

    @property
    def fixed(self) -> bool:
        """The Governor never changes it: the user's count, or a GPU run's (its speed is the GPU's)."""
        return self.source != "auto"

    def describe(self) -> str:
        return f"{self.threads} thread{'s' * (self.threads != 1)} ({self.reason})"


def _env_threads(value: str) -> int | None:
    """OMP_NUM_THREADS's count for the outer level ("4", or "4,2" for nested levels); None if not a count."""
    try:
        n = int(value.split(",")[0])
    except ValueError:
        return None
    return n if n >= 1 else None


def choose(threads: int | None = None, device="cpu", work: int | None = None, *, env=None,
           cores: int | None = None, busy: int | None = None) -> Choice:
    """The thread count to start with.

    threads: the user's count (--threads), None when not given; it wins over OMP_NUM_THREADS. device: where
    the model runs (a torch.device or its name, "auto" already resolved). work: the multiply-adds of one
    forward pass of the operations' usual size (work(model, batch)); None counts as plenty. env, cores and
    busy stand in for os.environ, usable_cores() and busy_cores() (for tests).
    """
    if threads is not None:
        if threads < 1:
            raise OptionError(f"--threads must be at least 1, not {threads}")
        cores = usable_cores() if cores is None else cores
        if threads > MAX_THREADS_PER_CORE * cores:
            raise MakemoreError(f"--threads {threads}: this machine lets the process use {cores} "
                                f"core{'s' * (cores != 1)}; give at most {MAX_THREADS_PER_CORE * cores} "
                                f"({MAX_THREADS_PER_CORE} per core), or leave --threads out to let makemore choose")
        return Choice(threads, threads, "--threads", "--threads")
    env = os.environ if env is None else env
    given = env.get("OMP_NUM_THREADS", "").strip()
    if given:  # torch has already read it; a value that is no count is left to torch's reading of it
        n = _env_threads(given) or torch.get_num_threads()
        return Choice(n, n, "OMP_NUM_THREADS", f"OMP_NUM_THREADS={given}")
    cores = usable_cores() if cores is None else cores
    if torch.device(device).type != "cpu":
        n = min(cores, ACCELERATOR_THREADS)
        return Choice(n, n, "device", f"{torch.device(device).type} run: the CPU only feeds it")
    most = cores if work is None else max(1, min(cores, work // WORK_PER_THREAD))
    busy = busy_cores(cores) if busy is None else busy
    n = max(1, min(most, cores - busy))
    reason = f"{cores} core{'s' * (cores != 1)}"
    if most < cores:
        reason += f", work for {most}"
    if n < most:
        reason += f", {busy} kept busy by other processes"
    return Choice(n, most, "auto", reason)


def apply(choice: Choice) -> None:
    """Set torch's intra-op thread count (OMP_NUM_THREADS needs nothing: torch read it at start)."""
    if choice.source != "OMP_NUM_THREADS" and torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


def setup(threads: int | None = None, device="cpu", work: int | None = None) -> Choice:
    """choose() and apply(): for a command's start (train, eval, lr-find, sample); first a check that the
    threads' stacks fit in the address space the process may still use."""
    choice = choose(threads, device, work)
    if choice.threads > torch.get_num_threads():
        memory.check_fits({"thread stacks": memory.thread_stacks(choice.threads - torch.get_num_threads())},
                          torch.device("cpu"), "give fewer --threads")
    apply(choice)
    return choice


class Governor:
    """Keeps the thread count fast while other processes come and go: call tick(step) after every step.

    It measures the steps' speed over windows of WINDOW seconds. At its count it remembers the fastest
    window since it settled there; when PATIENCE windows in a row run SLOWER times slower than that, or the
    process gets less than STARVED of the CPU time its threads ask for, it probes the next lower count (a
    window there) and keeps it if it is MARGIN faster than the last window at its own. While below the most
    threads worth using it probes the next higher count every so often: every REPROBE seconds it looks
    whether other processes have left enough cores free for it (busy_cores()), and if so probes, waiting
    twice as long after each probe that loses (up to MAX_REPROBE). A probe that runs SLOWER times slower
    than home ends at its next tick after PROBE_CHECK seconds, so a losing probe costs about one step.

    On an idle machine at its starting count nothing triggers a probe, and tick() costs one clock read and
    a comparison. With a fixed count (the user's) tick() does nothing.
    """

    WINDOW = 0.2
    PROBE_CHECK = 0.04
    SLOWER = 1.5
    STARVED = 0.75
    PATIENCE = 2
    MARGIN = 1.1
    REPROBE = 1.0
    MAX_REPROBE = 60.0

    def __init__(self, choice: Choice, clock=time.perf_counter, cpu_clock=time.process_time,
                 set_threads=torch.set_num_threads, busy=busy_cores, cores: int | None = None):
        self.choice = choice
        self._busy, self._cores = busy, usable_cores() if cores is None else cores
        self.threads = choice.threads
        self.switches: list[tuple[int, int, int]] = []  # (step, from, to): where the count changed
        self._clock, self._cpu_clock, self._set_threads = clock, cpu_clock, set_threads
        self._home = self.threads  # the count it keeps; threads differs from it during a probe
        self._home_rate = math.inf  # seconds per step of the last window at home
        self._best = math.inf  # the fastest window at home since it settled there
        self._strikes = 0
        self._backoff = self.REPROBE
        self._probe_at = -math.inf  # no probe before this time
        self._step = self._t0 = self._cpu0 = None
        self._due = math.inf if choice.fixed or choice.most <= 1 else -math.inf  # next clock check

    @classmethod
    def keeping(cls, threads: int) -> "Governor":
        """A governor that never changes the count (for a caller that chose it)."""
        return cls(Choice(threads, threads, "caller", "chosen by the caller"))

    def tick(self, step: int) -> None:
        """Tell the governor that step steps are done (call it after each step, or every few)."""
        now = self._clock()
        if now >= self._due:
            self._check(step, now)

    @contextmanager
    def paused(self):
        """Leave the time spent in the block (an evaluation, a checkpoint) out of the steps' speed."""
        if self._due == math.inf:
            yield
            return
        t, cpu = self._clock(), self._cpu_clock()
        try:
            yield
        finally:
            if self._t0 is not None:
                self._t0 += self._clock() - t
                self._cpu0 += self._cpu_clock() - cpu

    def _start(self, step: int, now: float) -> None:
        self._step, self._t0, self._cpu0 = step, now, self._cpu_clock()
        self._due = now + (self.PROBE_CHECK if self.threads != self._home else self.WINDOW)

    def _check(self, step: int, now: float) -> None:
        if self._t0 is None or step <= self._step:
            self._start(step, now)  # the first tick, or no step since the last window: nothing to measure
            return
        elapsed = now - self._t0
        rate = elapsed / (step - self._step)
        if self.threads != self._home:
            if rate > self.SLOWER * self._home_rate:
                self._end_probe(step, now, keep=False)  # clearly worse already: back at once
            elif elapsed >= self.WINDOW:
                self._end_probe(step, now, keep=rate * self.MARGIN < self._home_rate)
            else:
                self._due = now + self.PROBE_CHECK
            return
        share = (self._cpu_clock() - self._cpu0) / (elapsed * self.threads)
        self._home_rate = rate
        self._best = min(self._best, rate)
        struggling = rate > self.SLOWER * self._best or (self.threads > 1 and share < self.STARVED)
        self._strikes = self._strikes + 1 if struggling else 0
        lower, higher = self._neighbours()
        if now >= self._probe_at and self._strikes >= self.PATIENCE and lower is not None:
            self._probe(step, now, lower)
        elif now >= self._probe_at and higher is not None and self._strikes == 0:
            if self._cores - self._busy(self._cores) >= higher:
                self._probe(step, now, higher)
            else:  # other processes still hold the cores it would need: look again a little later
                self._probe_at = now + self.REPROBE
                self._start(step, now)
        else:
            self._start(step, now)

    def _neighbours(self) -> tuple[int | None, int | None]:
        """The next lower and next higher counts to try: halves and doubles, within 1 and choice.most."""
        home = self._home
        lower = max(1, home // 2) if home > 1 else None
        higher = min(self.choice.most, home * 2) if home < self.choice.most else None
        return lower, higher

    def _probe(self, step: int, now: float, threads: int) -> None:
        self._switch(step, threads)
        self._start(step, now)

    def _end_probe(self, step: int, now: float, keep: bool) -> None:
        if keep:
            self._home, self._best, self._strikes = self.threads, math.inf, 0
            self._backoff = self.REPROBE
        else:
            self._switch(step, self._home)
            self._backoff = min(self.MAX_REPROBE, self._backoff * 2)
        self._probe_at = now + self._backoff
        self._start(step, now)

    def _switch(self, step: int, threads: int) -> None:
        self.switches.append((step, self.threads, threads))
        self.threads = threads
        self._set_threads(threads)
