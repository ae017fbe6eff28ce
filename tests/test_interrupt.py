"""Training stopped by a signal loses nothing: SIGINT and SIGTERM save and say how to resume; after SIGKILL
at any moment the checkpoint on disk is a complete earlier one, and resuming ends exactly where an
uninterrupted run ends."""
import os
import random
import re
import shutil
import signal
import subprocess

import pytest
import sys
import threading
import time
from pathlib import Path

import torch
from click.testing import CliRunner
from tqdm import tqdm

from makemore import api, checkpoint
from makemore.cli import cli

pytestmark = pytest.mark.slow  # subprocesses and torchrun: the full suite's tier

ROOT = Path(__file__).resolve().parents[1]
# Small enough that a step takes well under a millisecond; one thread, so that the processes compared
# here add up their floating-point sums in the same order.
TINY = ["--model", "mlp", "--n-embd", "4", "--n-hidden", "16", "--batch-size", "16", "-q"]


def ok(*args):
    result = CliRunner(env={"MAKEMORE_DEBUG": ""}).invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def same_run(a: Path, b: Path) -> None:
    """Two checkpoints hold the same weights, optimizer state, step and dev losses."""
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert ca["step"] == cb["step"] and ca["best_dev_loss"] == cb["best_dev_loss"]
    for key in ("state_dict", "resume"):
        assert_equal(ca[key] if key != "resume" else ca[key]["state_dict"],
                     cb[key] if key != "resume" else cb[key]["state_dict"])
    assert_equal(ca["resume"]["optimizer"]["state"], cb["resume"]["optimizer"]["state"])
    dev = [[m.get("dev_loss") for m in c["metrics"] if "dev_loss" in m] for c in (ca, cb)]
    assert dev[0] == dev[1] and dev[0]


def assert_equal(x, y) -> None:
    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y)
    elif isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            assert_equal(x[k], y[k])
    else:
        assert x == y


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MAKEMORE_DEBUG="")
    return subprocess.Popen([sys.executable, "-m", "makemore", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_sigint_and_sigterm_save_say_how_to_resume_and_resume_exactly(tmp_path, names):
    # A constant learning rate and a fixed evaluation interval make "the run stopped at step k and resumed
    # to step K" comparable with "a run of K steps" for any k and K, so the signal may land at any step.
    args = [*TINY, "--data", names, "--schedule", "constant", "--eval-interval", 50]
    procs = {sig: start(["train", *args, "--steps", 10**6, "--out", tmp_path / sig.name])
             for sig in (signal.SIGINT, signal.SIGTERM)}
    rng = random.Random()
    for sig, proc in procs.items():
        wait_for(tmp_path / sig.name / "mlp.safetensors", proc)  # written once the signal handlers are in place
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(sig)
    for sig, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err
        path = tmp_path / sig.name / "mlp.safetensors"
        stopped = checkpoint.load(path)["step"]
        assert stopped > 0
        assert err.strip().splitlines()[-1] == (
            f"{sig.name}: stopped at step {stopped:,} and saved {path}; continue with: "
            f"makemore train --resume --checkpoint {path}"), err
        assert "Traceback" not in err and not temporaries(tmp_path / sig.name)
        ok("train", "--resume", "--checkpoint", path, "--steps", stopped + 60, "--out", tmp_path / "resumed",
           "--name", sig.name, "-q")
        ok("train", *args, "--steps", stopped + 60, "--out", tmp_path / f"whole-{sig.name}")
        same_run(tmp_path / "resumed" / f"{sig.name}.safetensors", tmp_path / f"whole-{sig.name}" / "mlp.safetensors")


def fork_cli(args: list[str]) -> int:
    """Run the CLI in a forked child (no interpreter start-up, so it can be killed many times quickly)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            torch.set_num_threads(1)
            # tqdm's default lock includes a semaphore shared with the parent across fork(): a child
            # killed while holding it would leave the parent's next progress bar waiting forever
            tqdm.set_lock(threading.RLock())
            cli.main([str(a) for a in args], prog_name="makemore", standalone_mode=False)
            code = 0
        finally:
            os._exit(code)
    return pid


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path, names):
    steps = 300
    args = [*TINY, "--data", names, "--steps", steps, "--eval-interval", 10]  # a checkpoint write every 10 steps
    reference = ok("train", *args, "--out", tmp_path / "whole")
    seconds = float(re.search(r"steps, ([\d.]+)s\)", reference.stdout).group(1))  # the loop's own time
    out = tmp_path / "killed"  # every resumed run saves its continuation beside the run it resumed
    rng = random.Random()
    kills, last_step, tries = 0, -1, 0
    while kills < 12:
        tries += 1
        assert tries < 60, "the runs kept finishing before they were killed"
        resume = (out / "latest").exists()
        if resume and checkpoint.load(checkpoint.latest(out))["step"] == steps:
            shutil.rmtree(out)  # start over: the aim is to kill runs, not to finish them
            continue
        pid = fork_cli(["train", "--resume", "--out", out] if resume else ["train", *args, "--out", out])
        time.sleep(rng.uniform(0, seconds / 3))
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.waitstatus_to_exitcode(status) == 0
            continue
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        if (out / "latest").exists():  # absent only when killed before a fresh run's first write
            latest = checkpoint.latest(out)
            ckpt = checkpoint.load(latest)
            assert ckpt["step"] >= (last_step if resume else 0)
            last_step = ckpt["step"]
            api.load(latest)
    if not (out / "latest").exists():  # the last kill came before a fresh run's first write
        ok("train", *args, "--out", out, "-q")
    elif checkpoint.load(checkpoint.latest(out))["step"] < steps:
        ok("train", "--resume", "--out", out, "-q")
    assert not temporaries(tmp_path)
    same_run(checkpoint.latest(out), tmp_path / "whole" / "mlp.safetensors")
