"""makemore.threads: the starting thread count, and the Governor's decisions on a simulated machine.

The Governor reads its clocks through injected functions, so these tests run it against a fake machine
whose step times depend on the thread count and on a load that changes over (simulated) time: no test
here times anything real. The last test trains for real and checks that the thread count, and its
changes during a run, leave the weights the same up to float rounding.
"""
import random
import threading
from contextlib import contextmanager

import pytest
import torch

from makemore import api, threads
from makemore.data import Vocab, read_items
from makemore.dataset import build_dataset
from makemore.errors import OptionError
from makemore.models import get_model_class
from makemore.threads import Choice, Governor
from makemore.train import TrainConfig, train_loop

AUTO2 = Choice(2, 2, "auto")


# ---- choose(): the starting count ----

def test_a_count_given_is_taken_exactly_and_fixed():
    choice = threads.choose(3, env={"OMP_NUM_THREADS": "5"}, cores=2, busy=2)
    assert (choice.threads, choice.fixed) == (3, True)
    with pytest.raises(OptionError, match="at least 1"):
        threads.choose(0)


@pytest.mark.parametrize("value, expected", [("3", 3), ("4,2", 4), (" 1 ", 1)])
def test_omp_num_threads_is_respected_exactly(value, expected):
    choice = threads.choose(env={"OMP_NUM_THREADS": value}, cores=64, busy=0, work=10**12)
    assert (choice.threads, choice.most, choice.source) == (expected, expected, "OMP_NUM_THREADS")
    assert choice.fixed


@pytest.mark.parametrize("value", ["lots", "0", "-2", ",4"])
def test_omp_num_threads_that_is_no_count_leaves_torchs_reading(value):
    choice = threads.choose(env={"OMP_NUM_THREADS": value}, cores=64, busy=0)
    assert choice.fixed and choice.threads == torch.get_num_threads()


def test_an_idle_machine_gets_a_thread_per_share_of_work_up_to_its_cores():
    big = threads.WORK_PER_THREAD * 100
    assert threads.choose(env={}, cores=2, busy=0, work=big).threads == 2
    assert threads.choose(env={}, cores=64, busy=0, work=big).threads == 64
    assert threads.choose(env={}, cores=64, busy=0, work=None).threads == 64  # unknown work: torch's default
    small = threads.choose(env={}, cores=64, busy=0, work=threads.WORK_PER_THREAD // 2)
    assert (small.threads, small.most) == (1, 1)


def test_the_default_mlp_gets_both_cores_of_two_but_not_sixty_four():
    cls = get_model_class("mlp")
    torch.manual_seed(0)
    net = cls(cls.Config(), 27)
    work = threads.work(net, cls.train_defaults["batch_size"])
    assert work == 128 * sum(p.numel() for p in net.parameters())
    assert threads.choose(env={}, cores=2, busy=0, work=work).threads == 2
    assert 8 <= threads.choose(env={}, cores=64, busy=0, work=work).threads <= 16
    # its eval chunks are big enough for every core
    assert threads.choose(env={}, cores=16, busy=0, work=threads.work(net, 4096)).threads == 16
    # the lecture's small MLP at batch 32 gains nothing from a second thread
    lecture = cls(cls.Config(block_size=3, n_embd=10, n_hidden=200, direct=False), 27)
    assert threads.choose(env={}, cores=64, busy=0, work=threads.work(lecture, 32)).threads == 1


def test_cores_kept_busy_by_others_are_left_to_them():
    choice = threads.choose(env={}, cores=2, busy=1, work=10**12)
    assert (choice.threads, choice.most, choice.fixed) == (1, 2, False)
    assert threads.choose(env={}, cores=2, busy=5, work=10**12).threads == 1  # never fewer than one
    assert threads.choose(env={}, cores=16, busy=1, work=10**12).threads == 15


def test_a_gpu_run_gets_few_threads_on_the_cpu_side():
    choice = threads.choose(env={}, device="cuda", cores=64, busy=0)
    assert choice.threads == choice.most == threads.ACCELERATOR_THREADS
    assert choice.fixed  # the Governor leaves it alone: the steps' speed is the GPU's
    assert threads.choose(env={}, device=torch.device("mps"), cores=1, busy=0).threads == 1


def test_busy_cores_takes_the_fewest_runnable_of_its_readings_less_this_process():
    def cores(n, running, own=lambda: 1):
        return threads.busy_cores(n, running=running, own=own, sleep=lambda s: None)

    readings = iter([4, 2, 3])
    assert cores(8, lambda: next(readings)) == 1
    assert cores(2, lambda: 9) == 2  # at most the cores
    assert cores(2, lambda: 1) == 0  # only this thread
    assert cores(2, lambda: None) == 0  # cannot tell
    assert cores(2, lambda: 3, own=lambda: 3) == 0  # this process's own threads still spinning


def test_settle_waits_until_torchs_threads_stop_spinning_but_not_for_ever():
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    spinning = iter([3, 2, 1, 1])
    threads.settle(own=lambda: next(spinning), sleep=sleep, clock=lambda: now[0])
    assert len(slept) == 2  # until only the thread asking runs

    slept.clear()
    threads.settle(own=lambda: 2, sleep=sleep, clock=lambda: now[0], most=0.01)
    assert 0.01 <= sum(slept) <= 0.012  # a thread of the caller's that never sleeps costs at most `most`


def test_a_commands_start_lets_torchs_threads_settle_before_it_reads_the_load(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "settle", lambda: calls.append("settle"))
    monkeypatch.setattr(threads, "busy_cores", lambda cores: calls.append("busy") or 0)
    assert threads.choose(env={}, cores=2, work=10**12).threads == 2
    assert calls == ["settle", "busy"]


def test_this_process_counts_at_least_the_thread_asking():
    assert 1 <= threads._own_running() <= threading.active_count() + torch.get_num_threads() + 8


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({}, None),
])
def test_a_containers_cpu_quota_is_read(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads._cgroup_quota(tmp_path) == expected


def test_usable_cores_is_within_the_machines_cpus():
    import os

    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


def test_apply_sets_torchs_count_except_under_omp_num_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    threads.apply(Choice(3, 3, "auto"))
    threads.apply(Choice(3, 3, "--threads"))
    threads.apply(Choice(3, 3, "OMP_NUM_THREADS"))
    assert calls == [3, 3]


# ---- the Governor on a simulated machine ----

class FakeMachine:
    """Steps whose time depends on the thread count and on the load at the moment, with the two clocks
    the Governor reads. profile(threads, load) -> (seconds per step, fraction of its threads' CPU time
    the process gets); load(now) -> the load at time now."""

    def __init__(self, profile, load=lambda now: 0, threads=2, jitter=0.0, seed=0):
        self.profile, self.load, self.threads, self.jitter = profile, load, threads, jitter
        self.now = self.cpu = 0.0
        self.time_at = {}  # seconds spent at each count
        self.rng = random.Random(seed)

    def clock(self):
        return self.now

    def cpu_clock(self):
        return self.cpu

    def set_threads(self, n):
        self.threads = n

    def governor(self, choice=AUTO2, sees_load=True):
        """A Governor on this machine; with sees_load False its busy_cores() reads 0 whatever the load (as
        where /proc/loadavg cannot be read), so only the steps' speed tells it of the load."""
        busy = (lambda cores: min(cores, self.load(self.now))) if sees_load else (lambda cores: 0)
        return Governor(choice, clock=self.clock, cpu_clock=self.cpu_clock, set_threads=self.set_threads,
                        busy=busy, cores=max(choice.most, 2))

    def run(self, governor, seconds, step=0):
        """Step (telling the governor of each) until `seconds` of simulated time have passed."""
        end = self.now + seconds
        while self.now < end:
            dt, share = self.profile(self.threads, self.load(self.now))
            dt *= 1 + self.jitter * (2 * self.rng.random() - 1)
            self.now += dt
            self.cpu += dt * share * self.threads
            self.time_at[self.threads] = self.time_at.get(self.threads, 0.0) + dt
            step += 1
            governor.tick(step)
        return step


def two_cores(threads, busy):
    """The default MLP on 2 cores as measured: 1 ms a step with 2 threads, 1.45 with 1; beside busy
    processes the second thread loses its core part of the time and both wait for it."""
    if busy == 0:
        return (1.0e-3, 1.0) if threads == 2 else (1.45e-3, 1.0)
    if busy == 1:
        return (2.6e-3, 0.6) if threads == 2 else (1.45e-3, 1.0)
    return (6.0e-3, 0.4) if threads == 2 else (2.2e-3, 0.67)


def test_on_an_idle_machine_it_never_changes_anything():
    machine = FakeMachine(two_cores, jitter=0.2)  # +-20% noise on every step
    gov = machine.governor()
    machine.run(gov, 120.0)
    assert gov.switches == [] and machine.threads == 2
    assert set(machine.time_at) == {2}


def test_a_fixed_count_is_never_changed_whatever_the_load():
    for choice in (Choice(2, 2, "--threads"), Choice(2, 2, "OMP_NUM_THREADS")):
        machine = FakeMachine(two_cores, load=lambda now: 1 if now > 5 else 0)
        gov = machine.governor(choice)
        machine.run(gov, 30.0)
        assert gov.switches == [] and machine.threads == 2


@pytest.mark.parametrize("sees_load", [True, False])
def test_a_busy_process_arriving_mid_run_sends_it_to_one_thread_within_a_second(sees_load):
    machine = FakeMachine(two_cores, load=lambda now: 1 if now >= 10 else 0)
    gov = machine.governor(sees_load=sees_load)
    machine.run(gov, 10.0)
    assert machine.threads == 2 and gov.switches == []
    machine.run(gov, 1.0)
    assert machine.threads == 1
    machine.run(gov, 60.0)
    assert machine.threads == 1
    # seeing the load, it probes 2 threads no more; blind to it, its probes end early and ever more rarely
    lost = machine.time_at[2] - 10.0
    if sees_load:
        assert lost < 1.0 and [s[1:] for s in gov.switches] == [(2, 1)]
    else:
        assert lost < 0.02 * 61 and len(gov.switches) <= 16


@pytest.mark.parametrize("sees_load", [True, False])
def test_when_the_load_goes_away_it_goes_back_to_two_threads(sees_load):
    machine = FakeMachine(two_cores, load=lambda now: 1 if now < 20 else 0, threads=1)
    gov = machine.governor(Choice(1, 2, "auto"), sees_load=sees_load)
    machine.run(gov, 20.0)
    assert machine.threads == 1
    if sees_load:
        assert gov.switches == []  # no probe while the other process holds the second core
    else:
        assert gov.switches  # blind to the load, it had to try
    machine.run(gov, 1.5 if sees_load else 20.0)  # seeing the core free, it tries at once
    assert machine.threads == 2


def test_a_run_started_beside_a_busy_process_finds_one_thread_by_itself():
    # the start count did not see the load (as where /proc/loadavg cannot be read)
    machine = FakeMachine(two_cores, load=lambda now: 1)
    gov = machine.governor(sees_load=False)
    machine.run(gov, 1.0)
    assert machine.threads == 1 and gov.switches[0][1:] == (2, 1)


@pytest.mark.parametrize("sees_load", [True, False])
def test_beside_two_busy_processes_it_stays_at_one_thread(sees_load):
    machine = FakeMachine(two_cores, load=lambda now: 2, jitter=0.1)
    gov = machine.governor(sees_load=sees_load)
    machine.run(gov, 60.0)
    assert machine.threads == 1
    assert machine.time_at[2] < 0.03 * 60


def test_a_slowdown_that_fewer_threads_do_not_cure_keeps_the_count():
    # everything 3x slower (memory bandwidth taken, say): one thread is still the slower
    def slowed(threads, load):
        step, share = two_cores(threads, 0)
        return (step * (3 if load else 1), share)

    machine = FakeMachine(slowed, load=lambda now: 1 if now >= 5 else 0)
    gov = machine.governor()
    machine.run(gov, 65.0)
    assert machine.threads == 2
    probes = [s for s in gov.switches if s[1:] == (2, 1)]
    assert 1 <= len(probes) <= 8  # it tried, then ever more rarely
    # one window each (checked every few steps), never kept
    assert machine.time_at[1] <= len(probes) * (Governor.WINDOW + 0.05)


def test_many_cores_settle_on_the_count_that_is_fastest_under_load():
    def sixteen(threads, busy):
        if not busy:
            return {8: 0.5e-3, 4: 0.7e-3, 2: 1.1e-3, 1: 2.0e-3}[threads], 1.0
        return {8: 3.0e-3, 4: 0.8e-3, 2: 1.2e-3, 1: 2.0e-3}[threads], {8: 0.5}.get(threads, 1.0)

    machine = FakeMachine(sixteen, load=lambda now: 1 if 5 <= now < 35 else 0, threads=8)
    gov = machine.governor(Choice(8, 8, "auto"))
    machine.run(gov, 30.0)
    assert machine.threads == 4 and gov.switches[0][1:] == (8, 4)  # down a step at a time
    machine.run(gov, 30.0)
    assert machine.threads == 8


def test_it_climbs_back_a_doubling_at_a_time():
    def eight(threads, busy):  # 8 cores; 6 of them busy at first, then none
        quiet = {8: 0.5e-3, 4: 0.7e-3, 2: 1.1e-3, 1: 2.0e-3}[threads]
        return (quiet if threads <= 8 - busy else 4 * quiet), 1.0

    machine = FakeMachine(eight, load=lambda now: 6 if now < 10 else 0, threads=2)
    gov = machine.governor(Choice(2, 8, "auto"))
    machine.run(gov, 10.0)
    assert gov.switches == []
    machine.run(gov, 5.0)
    assert [s[1:] for s in gov.switches] == [(2, 4), (4, 8)]


def test_a_count_only_a_little_faster_is_not_worth_a_switch():
    def close(threads, busy):  # under the load 1 thread is 5% faster: within the noise of a window
        if not busy:
            return two_cores(threads, 0)
        return (2.0e-3, 1.0) if threads == 2 else (1.9e-3, 1.0)

    machine = FakeMachine(close, load=lambda now: 1 if now >= 5 else 0)
    gov = machine.governor(sees_load=False)
    machine.run(gov, 30.0)
    assert machine.threads == 2 and gov.switches  # it tried, and stayed


def test_time_in_paused_blocks_is_not_taken_for_slow_steps():
    for pause in (True, False):
        machine = FakeMachine(two_cores)
        gov = machine.governor()
        step = machine.run(gov, 5.0)
        for _ in range(20):  # an evaluation of 0.5 s every 100 steps
            if pause:
                with gov.paused():
                    machine.now += 0.5
            else:
                machine.now += 0.5
            for _ in range(100):
                step += 1
                machine.now += 1e-3
                machine.cpu += 2e-3
                gov.tick(step)
        assert (gov.switches == []) == pause


def test_ticks_every_few_steps_work_as_well():
    machine = FakeMachine(two_cores, load=lambda now: 1 if now >= 5 else 0)
    gov = machine.governor()

    class EveryFifteen:
        def tick(self, step):
            if step % 15 == 0:
                gov.tick(step)

    machine.run(EveryFifteen(), 10.0)
    assert machine.threads == 1


# ---- the results do not depend on the thread count ----

def test_the_same_seed_gives_the_same_weights_whatever_the_threads_do(small_names):
    items = read_items(small_names)
    vocab = Vocab.from_items(items)
    cls = get_model_class("mlp")
    mconfig = cls.Config(block_size=3, n_embd=8, n_hidden=64)
    data = build_dataset(items, vocab, mconfig.block_size)
    config = TrainConfig(**dict(cls.train_defaults, steps=60, batch_size=64))

    def train(count_at):
        torch.manual_seed(config.seed)
        net = cls(mconfig, len(vocab))
        torch.set_num_threads(count_at(0))
        train_loop(net, data, None, config, progress=False,
                   on_log=lambda record: torch.set_num_threads(count_at(record["step"])))
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    torch.manual_seed(config.seed)
    start = torch.cat([p.detach().flatten() for p in cls(mconfig, len(vocab)).parameters()])
    one = train(lambda step: 1)
    two = train(lambda step: 2)
    changing = train(lambda step: 1 + (step // 7) % 2)  # as a governor might: 1, 2, 1, ... every 7 steps
    assert (one - start).abs().max() > 1e-2  # it trained
    assert (one - two).abs().max() < 1e-5
    assert (one - changing).abs().max() < 1e-5


class _Recording(threads.Governor):
    """A governor that records what the loop tells it."""

    def __init__(self):
        super().__init__(threads.Choice(1, 1, "caller"))
        self.ticks, self.paused_at = [], []

    def tick(self, step):
        self.ticks.append(step)

    @contextmanager
    def paused(self):
        self.paused_at.append(self.ticks[-1] if self.ticks else None)
        yield


def test_the_loop_ticks_every_step_and_pauses_for_evaluations_and_saves(small_names):
    data = api.Data.read(small_names)
    vocab = api.Vocab.from_items(data.items)
    parts = data.split()
    cls = api.get_model_class("mlp")
    config = TrainConfig(steps=40, batch_size=16, lr=0.01, optimizer="adamw", eval_interval=20)
    net, train_set, dev_set = api.build_run(cls, cls.Config(n_hidden=16), config, vocab, parts, torch.device("cpu"))
    governor = _Recording()
    train_loop(net, train_set, dev_set, config, save=lambda state, model: None, progress=False, governor=governor)
    assert governor.ticks == list(range(1, 41))
    assert governor.paused_at == [20, 20, 40, 40]  # the evaluation, then the save, at each of the two


def test_threads_option_sets_torchs_count_for_the_command(run, small_names):
    run("train", "--model", "bigram", "--data", small_names, "-q")
    for n in (2, 1):
        run("eval", "--threads", n)
        assert torch.get_num_threads() == n
    bad = run("eval", "--threads", 0, ok=False)
    assert bad.exit_code == 2 and "--threads" in bad.output
