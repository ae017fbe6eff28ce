"""Training to a time budget (train --time): the step count that fills the budget, chosen from measured speeds,
fixed and recorded, and revised only when the machine's speed changes so much that the run would end well off
its budget. The schedule of a revised run is stretched or shrunk from the revision on, so it still finishes.
A projection takes the run's average speed so far, or a slower speed that two windows in a row agree on: a
shared machine's speed wanders by 10-15% from one window to the next (a 3-minute GRU run on 2 cores that
followed each window spent its revisions chasing them and ended 15% over), while a busy process that arrives
slows every window after it. A budget buys at most most_steps steps (makemore.models.base.budget_steps): past them
a long budget would only overfit a small file, so such a run ends early. Imports no torch (the CLI reads the
process's start time from here)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

SLACK = 0.05  # a run ends within its budget plus this share of it
TARGET = 0.97  # the plan ends the run at this share of the budget: misestimates up to the slack are absorbed
LATE, EARLY = 1.0, 0.92  # a projected end above LATE or below EARLY times the budget is revised...
NEAR = 0.5  # ...when it is also this many seconds off (a short run's noise is not a slowdown)
WINDOW = 0.05  # the speed is measured over at least this share of the budget...
MIN_WINDOW = 1.0  # ...and at least this many seconds, and this many steps:
MIN_WINDOW_STEPS = 20
# a revision comes at most once a window (5% of the budget); four were too few where the probe misjudged the speed
# and the machine drifted after (a 1-minute bigram-nn run ended at 80% of its budget, a 3-minute wavenet run 8% over)
MAX_REVISIONS = 12
EXIT_SECONDS = 0.3  # after the last word: the interpreter's exit, torch's threads ending


def process_started() -> float | None:
    """When this process started, as a time.perf_counter() reading (None where /proc does not say): the budget of
    a command counts from there, as `time makemore train` does."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # starttime: field 22, clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.perf_counter() - age if 0 <= age < 3600 else None


def position(step: int, record: dict) -> float:
    """Where step lies on the schedule planned for record["planned_steps"] steps: step itself until the first
    revision; after a revision at step s to N steps, steps s..N-1 are laid over the rest of the schedule, so the
    last step always takes the schedule's last rate."""
    at, done = 0, 0.0  # the last revision's step and the schedule's position there
    steps = record["planned_steps"]
    for revision in record["revisions"]:
        if step < revision["step"]:
            break
        done = _laid_over(revision["step"], at, done, steps, record["planned_steps"] - 1)
        at, steps = revision["step"], revision["new_steps"]
    return _laid_over(step, at, done, steps, record["planned_steps"] - 1)


def _laid_over(step: int, at: int, done: float, steps: int, last: int) -> float:
    """The position of step when steps at..steps-1 are laid over the schedule from position done to last."""
    if done >= last:  # the schedule had ended (a finished run continued): it stays at its end
        return done
    if steps - 1 <= at:  # a single step left: the schedule's last
        return float(last)
    return done + (step - at) * (last - done) / (steps - 1 - at)


class Budget:
    """The clock of a run with a budget of seconds, started at started (a perf_counter reading): plan() chooses
    the step count, revise() may change it as the run goes; record is what the checkpoint keeps (time_budget)."""

    def __init__(self, seconds: float, started: float, final_targets: int = 0, after_seconds: float = 0.0,
                 most_steps: int | None = None, clock=time.perf_counter):
        self.seconds, self.started, self.clock, self.most_steps = seconds, started, clock, most_steps
        # what the caller does after the loop: evaluate final_targets predictions, and work of after_seconds
        self.final_targets, self.after_seconds = final_targets, after_seconds
        self.record: dict | None = None
        self.evaluation_seconds = self.finish_seconds = 0.0
        self.eval_interval = 1
        self._window = None  # (clock, step, seconds spent evaluating) where the speed's window began
        self._begun = None  # the same where the loop began
        self._last_rate = 0.0  # seconds per step over the window before
        self._evaluating = 0.0  # seconds spent in evaluations and saves so far

    def left(self, step: int | None = None) -> float:
        """Seconds of the budget left now; after step steps of a run that most_steps ends early, the seconds it
        is expected to take still."""
        left = self.started + self.seconds - self.clock()
        if step is None or not self.capped():
            return left
        return min(left, self._end(step, self.steps(), self._average(step)) - self.clock())

    def left_text(self, step: int | None = None) -> str:
        """The time left (left()), as the progress bar shows it: 4:05."""
        left = max(0, round(self.left(step)))
        return f"{left // 60}:{left % 60:02d}"

    def capped(self) -> bool:
        """Whether the run's steps are most_steps, not what its time would allow."""
        return self.most_steps is not None and self.steps() == self.most_steps

    def plan(self, step_seconds: float, evaluation_seconds: float, finish_seconds: float, eval_interval: int,
             evaluations: int | None = None) -> int:
        """The step count that ends the run at TARGET of the budget: every step_seconds, an evaluation (with its
        save) of evaluation_seconds every eval_interval steps (or evaluations in all), then finish_seconds."""
        self.evaluation_seconds, self.finish_seconds = evaluation_seconds, finish_seconds
        now = self.clock()
        available = self.seconds * TARGET - (now - self.started) - finish_seconds - EXIT_SECONDS
        if evaluations is not None:
            steps = (available - evaluations * evaluation_seconds) / step_seconds
        else:
            steps = available / (step_seconds + evaluation_seconds / eval_interval)
        steps = max(1, int(steps)) if math.isfinite(steps) else 1
        if self.most_steps is not None:
            steps = min(steps, self.most_steps)
        self.eval_interval = eval_interval if evaluations is None else max(1, steps // evaluations)
        self.record = dict(seconds=self.seconds, planned_steps=steps, step_seconds=step_seconds,
                           evaluation_seconds=evaluation_seconds,
                           reserved_seconds=round(now - self.started + finish_seconds + EXIT_SECONDS, 6),
                           revisions=[])
        if self.most_steps is not None:
            self.record["most_steps"] = self.most_steps
        self._window = self._begun = (now, 0, 0.0)
        self._last_rate = step_seconds
        return steps

    def evaluated(self, seconds: float) -> None:
        """An evaluation (and its save) took seconds: the next ones are expected to take as long."""
        self._evaluating += seconds
        self.evaluation_seconds = seconds

    def steps(self) -> int:
        """The step count now (planned, or revised)."""
        revisions = self.record["revisions"]
        return revisions[-1]["new_steps"] if revisions else self.record["planned_steps"]

    def proposal(self, step: int) -> int:
        """The step count the run should have, seen after step steps: steps() unless the speed measured since the
        last window makes the run end too late or too early, and revisions are left."""
        now, steps = self.clock(), self.steps()
        clock0, step0, evaluating0 = self._window
        span = now - clock0 - (self._evaluating - evaluating0)
        if (step - step0 < MIN_WINDOW_STEPS or span < max(MIN_WINDOW, WINDOW * self.seconds)
                or len(self.record["revisions"]) >= MAX_REVISIONS or step >= steps):
            return steps
        self._window = (now, step, self._evaluating)
        window_rate, before = span / (step - step0), self._last_rate
        self._last_rate = window_rate
        rate = max(self._average(step), min(window_rate, before))
        deadline = self.started + self.seconds
        off = self._end(step, steps, rate) - deadline
        if abs(off) < NEAR or (self.seconds * (EARLY - 1) <= off <= self.seconds * (LATE - 1)):
            return steps
        target = self.started + self.seconds * TARGET
        room = target - self._end(step, step + 1, rate)
        per_step = rate + self.evaluation_seconds / self.eval_interval
        wanted = step + 1 + max(0, int(room / per_step))
        return wanted if self.most_steps is None else min(wanted, self.most_steps)

    def _average(self, step: int) -> float:
        """Seconds per step since the loop began, evaluations left out."""
        began, first_step, evaluated = self._begun
        return (self.clock() - began - (self._evaluating - evaluated)) / max(1, step - first_step)

    def _end(self, step: int, n: int, rate: float) -> float:
        """When a run after step steps would end with n steps in all, at rate seconds per step."""
        evaluations = n // self.eval_interval - step // self.eval_interval + (n % self.eval_interval != 0)
        return (self.clock() + (n - step) * rate + evaluations * self.evaluation_seconds + self.finish_seconds
                + EXIT_SECONDS)

    def revise(self, step: int, steps: int) -> None:
        """Record that from step on the run has steps in all."""
        self.record["revisions"].append(dict(step=step, old_steps=self.steps(), new_steps=steps))
