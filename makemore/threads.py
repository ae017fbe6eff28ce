"""How many threads torch computes with: chosen for the machine at the start, kept right as its load changes.

A step of makemore's small models is hundreds of microsecond operations, each split over torch's threads, which
wait for each other at its end: one thread that loses its core holds up all of them (the default MLP ran 2.5 to
127 times slower beside one busy process; bench/results/contention.md). Results differ only by float rounding.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import memory
from makemore.errors import MakemoreError, OptionError

# multiply-adds of one forward pass worth another thread (BENCHMARKS.md, "Tuning notes")
WORK_PER_THREAD = 1_000_000
# a GPU run's CPU only gathers batches and launches kernels: more threads did not help
ACCELERATOR_THREADS = 2
# the longest a command's start waits for torch's threads to stop spinning before it reads the machine's load
# (they spun 7-10 ms after loading a model)
SETTLE_SECONDS = 0.03
# more threads per core only wait for each other (and 1,024 stacks took 8 GB of address space)
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
    for names in (("cpu.max",), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            quota, period = " ".join((root / name).read_text() for name in names).split()[:2]
            if quota == "max" or int(quota) <= 0:
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None


def _running() -> int | None:
    """Threads runnable on the machine right now (/proc/loadavg's fourth field), this process's included."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running() -> int:
    """This process's runnable threads: the one asking, and torch's, which spin a while after each operation."""
    count = 0
    with suppress(OSError):  # no /proc: the one asking
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError):  # the thread ended
                stat = Path(f"/proc/self/task/{task}/stat").read_text()
                count += stat[stat.rindex(")") + 2] == "R"  # the state follows the command name in parentheses
    return max(1, count)


def busy_cores(cores: int, running=_running, own=_own_running, sleep=time.sleep) -> int:
    """Cores other processes keep busy (at most cores; 0 when unknown): the fewest runnable threads not this
    process's in three readings 0.5 ms apart, so that a process waking for a moment is not counted."""
    counts = []
    for i in range(3):
        if i:
            sleep(0.0005)
        n = running()
        if n is None:
            return 0
        counts.append(n - own())
    return max(0, min(cores, min(counts)))


def settle(own=_own_running, sleep=time.sleep, clock=time.perf_counter, most: float = SETTLE_SECONDS) -> None:
    """Wait (at most `most` seconds) until this process's only runnable thread is the one asking: torch's threads
    spin a few milliseconds after each operation, and while they do the machine's count of runnable threads read
    one more than there were (a classify beside nothing chose 1 thread of 2 in 5 of 12 starts)."""
    end = clock() + most
    while own() > 1 and clock() < end:
        sleep(0.001)


def work(model, rows: int) -> int:
    """Multiply-adds of one forward pass of rows examples, roughly: every weight once per position."""
    positions = rows * (model.block_size if model.whole_items else 1)
    return positions * sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Choice:
    """The thread count to start with, and what the Governor may do with it."""

    threads: int
    most: int  # the count for this work on an idle machine: the Governor tries no more than this
    source: str  # "--threads", "OMP_NUM_THREADS", "device" (a GPU run), "caller" or "auto"

    @property
    def fixed(self) -> bool:
        """The Governor never changes it: the user's count, or a GPU run's (its speed is the GPU's)."""
        return self.source != "auto"


def choose(threads: int | None = None, device="cpu", work: int | None = None, *, env=None,
           cores: int | None = None, busy: int | None = None) -> Choice:
    """The thread count to start with: the user's (threads, else OMP_NUM_THREADS) exactly; else one per
    WORK_PER_THREAD of work (None: plenty), at most one per core no other process keeps busy.
    env, cores and busy stand in for os.environ, usable_cores() and busy_cores() (for tests)."""
    cores = usable_cores() if cores is None else cores
    if threads is not None:
        if threads < 1:
            raise OptionError(f"--threads must be at least 1, not {threads}")
        if threads > MAX_THREADS_PER_CORE * cores:
            raise MakemoreError(f"--threads {threads}: this machine lets the process use {cores} "
                                f"core{'s' * (cores != 1)}; give at most {MAX_THREADS_PER_CORE * cores} "
                                f"({MAX_THREADS_PER_CORE} per core), or leave --threads out to let makemore choose")
        return Choice(threads, threads, "--threads")
    given = (os.environ if env is None else env).get("OMP_NUM_THREADS", "")
    if given.strip():
        # torch has already read it; "4,2" sets nested levels (torch's is the first), and no count is torch's
        outer = given.split(",")[0].strip()
        n = int(outer) if outer.isdecimal() and int(outer) >= 1 else torch.get_num_threads()
        return Choice(n, n, "OMP_NUM_THREADS")
    if torch.device(device).type != "cpu":
        n = min(cores, ACCELERATOR_THREADS)
        return Choice(n, n, "device")
    most = cores if work is None else max(1, min(cores, work // WORK_PER_THREAD))
    if busy is None:
        settle()
        busy = busy_cores(cores)
    return Choice(max(1, min(most, cores - busy)), most, "auto")


def apply(choice: Choice) -> None:
    """Set torch's intra-op thread count (OMP_NUM_THREADS needs nothing: torch read it at start)."""
    if choice.source != "OMP_NUM_THREADS" and torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


def setup(threads: int | None = None, device="cpu", work: int | None = None) -> Choice:
    """choose() and apply(), for a command's start; first a check that the threads' stacks fit in memory."""
    choice = choose(threads, device, work)
    if choice.threads > torch.get_num_threads():
        memory.check_fits({"thread stacks": memory.thread_stacks(choice.threads - torch.get_num_threads())},
                          torch.device("cpu"), "give fewer --threads")
    apply(choice)
    return choice


class Governor:
    """Keeps the thread count fast while other processes come and go: call tick(step) after every step.

    It times the steps over windows. When they run much slower than its best window at this count, or the
    process gets much less CPU than its threads ask for, it probes half the threads for a window and keeps
    them if faster. Below choice.most it probes twice as many now and then, when enough cores look free,
    waiting twice as long after each probe that loses. Between windows tick() is one clock read.
    """

    WINDOW = 0.2  # seconds of steps measured at once
    PROBE_CHECK = 0.04  # how soon a probe is looked at, so that one clearly worse costs about a step
    SLOWER = 1.5  # this much slower than the best (or than home, for a probe) is struggling
    STARVED = 0.75  # less than this share of the CPU its threads ask for is struggling
    PATIENCE = 2  # windows struggling in a row before it probes fewer threads
    MARGIN = 1.1  # how much faster a probe must be to be kept
    REPROBE = 1.0  # seconds before it looks again for free cores, doubled after each losing probe...
    MAX_REPROBE = 60.0  # ...up to this

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
        return cls(Choice(threads, threads, "caller"))

    def tick(self, step: int) -> None:
        """Tell the governor that step steps are done (call it after each step, or every few)."""
        now = self._clock()
        if now >= self._due:
            self._check(step, now)

    @contextmanager
    def paused(self):
        """Leave the time spent in the block (an evaluation, a checkpoint) out of the steps' speed."""
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
        home, most = self._home, self.choice.most
        if self.threads != home:  # a probe: ended after a window, or at once when clearly worse
            if elapsed < self.WINDOW and rate <= self.SLOWER * self._home_rate:
                self._due = now + self.PROBE_CHECK
                return
            if rate * self.MARGIN < self._home_rate:
                self._home, self._best, self._strikes, self._backoff = self.threads, math.inf, 0, self.REPROBE
            else:
                self._switch(step, home)
                self._backoff = min(self.MAX_REPROBE, self._backoff * 2)
            self._probe_at = now + self._backoff
            self._start(step, now)
            return
        share = (self._cpu_clock() - self._cpu0) / (elapsed * self.threads)
        self._home_rate = rate
        self._best = min(self._best, rate)
        struggling = rate > self.SLOWER * self._best or (self.threads > 1 and share < self.STARVED)
        self._strikes = self._strikes + 1 if struggling else 0
        if now >= self._probe_at and self._strikes >= self.PATIENCE and home > 1:
            self._switch(step, max(1, home // 2))
        elif now >= self._probe_at and self._strikes == 0 and home < most:
            if self._cores - self._busy(self._cores) >= min(most, home * 2):
                self._switch(step, min(most, home * 2))
            else:  # other processes still hold the cores it would need: look again a little later
                self._probe_at = now + self.REPROBE
        self._start(step, now)

    def _switch(self, step: int, threads: int) -> None:
        self.switches.append((step, self.threads, threads))
        self.threads = threads
        self._set_threads(threads)
