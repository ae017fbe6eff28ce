"""Data-parallel training under a real torchrun: 2 CPU processes on loopback (gloo), one thread each.

One run is stopped by SIGTERM and resumed; the tests below look at it from several sides. Each
process's stdout and stderr go to their own files (torchrun --redirects 3), so what rank 1 printed
can be checked to be nothing.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from makemore import api, checkpoint

pytestmark = pytest.mark.slow  # subprocesses and torchrun: the full suite's tier

ROOT = Path(__file__).resolve().parents[1]
NAMES = ROOT / "names.txt"
B = 32
# constant lr: the schedule must not depend on --steps, so that a run stopped at step k can be
# compared with one of k steps
TRAIN = ["--model", "mlp", "--batch-size", str(B), "--lr", "0.01", "--schedule", "constant", "--eval-interval", "20"]
TIMEOUT = 240  # generous: the machine running the suite may be busy


def torchrun(cwd: Path, log_dir: Path, *args, nproc: int = 2) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MAKEMORE_DEBUG="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "makemore", "train", *map(str, args)]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rank_output(log_dir: Path, rank: int) -> tuple[str, str]:
    """(stdout, stderr) of one process, from the files torchrun redirected them to."""
    (folder,) = log_dir.glob(f"*/attempt_0/{rank}")
    return (folder / "stdout.log").read_text(), (folder / "stderr.log").read_text()


def metrics(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """Start a long run with 2 processes, SIGTERM torchrun once it has passed step 40, then resume it."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "names.txt"
    data.write_text("\n".join(NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    ckpt = tmp / "out" / "mlp.safetensors"

    first = torchrun(tmp, tmp / "logs1", "--data", data, "--steps", 100_000, "-q", *TRAIN)
    deadline = time.monotonic() + TIMEOUT
    while not any(r["step"] >= 40 for r in metrics(ckpt.with_suffix(".metrics.jsonl"))):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the run did not reach step 40"
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    first_err = first.communicate(timeout=TIMEOUT)[1]
    stopped = checkpoint.load(ckpt)

    k = stopped["step"]
    second = torchrun(tmp, tmp / "logs2", "--resume", "--checkpoint", "out/mlp.safetensors", "--steps", k + 40)
    second_out, second_err = second.communicate(timeout=TIMEOUT)
    # the continuation is saved beside the checkpoint it resumed, never over it
    return SimpleNamespace(tmp=tmp, data=data, ckpt=ckpt, resumed=ckpt.with_name("mlp-2.safetensors"),
                           stopped=stopped, k=k,
                           first=first, first_err=first_err, second=second, second_err=second_err,
                           first_ranks=[rank_output(tmp / "logs1", r) for r in (0, 1)],
                           second_ranks=[rank_output(tmp / "logs2", r) for r in (0, 1)])


def test_sigterm_stops_every_process_and_rank0_saves(stopped_and_resumed):
    r = stopped_and_resumed
    (out0, err0), (out1, err1) = r.first_ranks
    assert out0 == "" and out1 == "" and err1 == ""
    assert f"SIGTERM: stopped at step {r.k:,} and saved out/mlp.safetensors" in err0
    assert "--resume --checkpoint out/mlp.safetensors" in err0
    assert 40 <= r.k < 100_000 and r.k % 20 == 0  # stopped at a log point
    assert r.stopped["resume"]["world_size"] == 2
    assert r.first.returncode != 0  # torchrun reports that its workers stopped


def test_two_processes_train_as_one_process_with_the_global_batch(stopped_and_resumed, tmp_path):
    r = stopped_and_resumed
    options = dict(steps=r.k, batch_size=2 * B, lr=0.01, schedule="constant", eval_interval=20)
    api.train("mlp", r.data, tmp_path, train_options=options, device="cpu", progress=False)
    one = checkpoint.load(tmp_path / "mlp.safetensors")
    two = r.stopped
    assert one["step"] == two["step"] == r.k
    for key, weights in one["resume"]["state_dict"].items():
        # the all-reduce sums in another order than one process's mean, and Adam's normalised steps let
        # such rounding grow here and there: the weights agree as a whole, the dev loss closely
        gap = (two["resume"]["state_dict"][key] - weights).norm() / weights.norm()
        assert gap < 1e-3, (key, gap.item())
    assert abs(one["best_dev_loss"] - two["best_dev_loss"]) < 5e-3


def test_resumed_run_finishes_and_only_rank0_prints(stopped_and_resumed):
    r = stopped_and_resumed
    assert r.second.returncode == 0, r.second_err
    (out0, err0), (out1, err1) = r.second_ranks
    assert out1 == "" and err1 == ""
    lines = out0.splitlines()
    assert len(lines) == 1 and lines[0].startswith("train loss ") and lines[0].endswith("saved out/mlp-2.safetensors")
    assert "training mlp" in err0  # the progress bar, from rank 0 only
    final = checkpoint.load(r.resumed)
    assert final["step"] == r.k + 40
    losses = [m["train_loss"] for m in final["metrics"]]
    assert losses[-1] < losses[0] - 0.3  # from about log(27) = 3.3 towards 2.5


def test_checkpoint_is_ordinary_and_samples_and_evaluates(stopped_and_resumed, run):
    r = stopped_and_resumed
    final = checkpoint.load(r.resumed)
    fresh = api.load(r.resumed).model.state_dict()
    assert sorted(final["state_dict"]) == sorted(fresh) and not any(k.startswith("module.") for k in final["state_dict"])
    samples = run("sample", "--checkpoint", r.resumed, "-n", 5, "--seed", 1, "--device", "cpu").output.splitlines()
    assert len(samples) == 5 and all(samples)
    result = json.loads(run("eval", "--checkpoint", r.resumed, "--json").output)
    assert 1.5 < result["loss"] < 3.0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_with_nccl(tmp_path):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    proc = torchrun(tmp_path, tmp_path / "logs", "--data", data, "--steps", 60, "--device", "cuda", "-q", *TRAIN)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    (out0, _), (out1, err1) = (rank_output(tmp_path / "logs", r) for r in (0, 1))
    assert "saved out/mlp.safetensors" in out0 and out1 == "" and err1 == ""
    assert checkpoint.load(tmp_path / "out" / "mlp.safetensors")["step"] == 60


def test_errors_of_other_ranks_say_whose(run, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run("train", "--model", "bigram-nn", "--block-size", 3, ok=False)
    assert result.exit_code == 2
    assert "rank 1: --block-size: 3 is too large" in result.output


# Large data: the dataset is encoded a chunk of items at a time; the chunks must not show.

def test_dataset_built_in_chunks_matches_a_plain_loop(monkeypatch):
    from makemore import dataset
    from makemore.data import Vocab

    items = ["emma", "olivia", "x", "ava", "é.ü", "li"]
    vocab = Vocab.from_items(items)
    monkeypatch.setattr(dataset, "BUILD_CHUNK", 2)
    for block_size in (1, 3):
        ds = dataset.build_dataset(items, vocab, block_size)
        tokens = [0] * block_size
        for item in items:
            tokens += [vocab.stoi[c] for c in item] + [0] * (block_size + 1)
        tokens = tokens[:len(tokens) - block_size]  # the last item is followed by one boundary only
        targets = [i for i, t in enumerate(tokens) if t or (i and tokens[i - 1])]
        assert ds.tokens.tolist() == tokens and ds.tokens.dtype == torch.uint8
        assert ds.positions.tolist() == targets
        x, y, _ = ds.tensors()
        assert len(y) == sum(len(item) + 1 for item in items)
        assert x[0].tolist() == [0] * block_size and y[0] == vocab.stoi["e"]


def test_a_stray_rank_without_world_size_still_prints(run, small_names, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert "saved out/bigram.safetensors" in run("train", "--model", "bigram", "--data", small_names, "-q").output


def test_a_model_that_reads_whole_items_trains_under_torchrun(tmp_path):
    """rows of whole items under DDP: each process trims its own batch to its longest item; the run ends
    near one process's run with the global batch (the processes' losses are averaged per process, one
    process's per character, so they are not equal to the last bit)."""
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    args = ["--model", "gru", "--data", data, "--n-embd", 8, "--n-hidden", 16, "--schedule", "constant",
            "--steps", 60, "-q"]
    two = torchrun(tmp_path, tmp_path / "logs", *args, "--batch-size", 16, "--out", tmp_path / "two")
    out, err = two.communicate(timeout=TIMEOUT)
    assert two.returncode == 0, err
    api.train("gru", data, tmp_path / "one", model_options=dict(n_embd=8, n_hidden=16),
              train_options=dict(steps=60, batch_size=32, schedule="constant"), device="cpu", progress=False)
    one, both = (checkpoint.load(tmp_path / d / "gru.safetensors") for d in ("one", "two"))
    assert both["step"] == 60 and abs(one["best_dev_loss"] - both["best_dev_loss"]) < 0.02
    assert len(api.load(tmp_path / "two" / "gru.safetensors").sample(n=3, seed=1)) == 3
