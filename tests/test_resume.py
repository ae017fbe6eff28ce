"""Resuming is exact, a diverging run stops before it can spoil a checkpoint, and an output folder that
cannot be written stops the run before any training."""
import json
from pathlib import Path

import pytest
import torch

from conftest import invoke, ok
from makemore import checkpoint

TINY = ["--model", "mlp", "--n-embd", "4", "--n-hidden", "16", "--batch-size", "16", "-q"]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_n_steps_then_resumed_to_2n_equals_2n_steps(tmp_path, names, optimizer):
    """With a constant learning rate, a run of N steps continued to 2N is the run of 2N steps."""
    n = 60
    args = [*TINY, "--data", names, "--schedule", "constant", "--optimizer", optimizer, "--lr", "0.01"]
    ok("train", *args, "--steps", 2 * n, "--out", tmp_path / "whole")
    ok("train", *args, "--steps", n, "--out", tmp_path / "halves")
    halves = tmp_path / "halves" / "mlp.safetensors"
    assert checkpoint.load(halves)["step"] == n
    kept = halves.read_bytes()
    resumed = tmp_path / "resumed" / "mlp.safetensors"
    out = ok("train", "--resume", "--checkpoint", halves, "--steps", 2 * n, "--out", resumed.parent, "-q").stdout
    assert f"({2 * n} steps" in out and str(resumed) in out
    assert halves.read_bytes() == kept  # the checkpoint resumed from is never written
    a, b = (checkpoint.load(p) for p in (tmp_path / "whole" / "mlp.safetensors", resumed))
    assert a["step"] == b["step"] == 2 * n
    for k, v in a["resume"]["state_dict"].items():  # the weights after the last step
        assert torch.equal(v, b["resume"]["state_dict"][k]), k
    assert a["metrics"][-1]["dev_loss"] == b["metrics"][-1]["dev_loss"]  # evaluated at the last step
    whole_eval = ok("eval", "--checkpoint", tmp_path / "whole" / "mlp.safetensors", "--json").stdout
    halves_eval = ok("eval", "--checkpoint", resumed, "--json").stdout
    assert json.loads(whole_eval)["loss"] == json.loads(halves_eval)["loss"]


def test_resume_of_a_finished_run_changes_nothing(tmp_path, names):
    ok("train", *TINY, "--data", names, "--steps", 30, "--out", tmp_path)
    kept = files(tmp_path)
    message = one_line_error(invoke("train", "--resume", "--out", tmp_path, "-q"))
    assert "all 30 of its steps" in message and "--steps" in message
    assert files(tmp_path) == kept


@pytest.mark.parametrize("model", ["mlp", "bigram-nn"])
def test_diverging_run_stops_at_once_and_keeps_the_earlier_checkpoint(tmp_path, names, model):
    ok("train", "--model", model, "--data", names, "--steps", 20, "--out", tmp_path / "out", "-q")
    kept = files(tmp_path / "out")
    message = one_line_error(invoke("train", "--model", model, "--data", names, "--steps", 100, "--lr", "1e6",
                                    "--out", tmp_path / "out", "-q"))
    assert "diverged" in message and "lower --lr" in message
    assert int(message.split(" at step ")[1].split()[0]) <= 5  # caught within a few steps of 100
    assert files(tmp_path / "out") == kept  # checkpoint, metrics and the latest pointer: byte for byte


def test_diverging_first_run_leaves_nothing_behind(tmp_path, names):
    """A run that diverges before its first evaluation has no model worth loading: it writes nothing."""
    one_line_error(invoke("train", *TINY, "--data", names, "--steps", 100, "--lr", "1e6", "--out", tmp_path / "out"))
    assert files(tmp_path / "out") == {}


def test_output_folder_that_cannot_be_written(tmp_path, names):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    message = one_line_error(invoke("train", *TINY, "--data", names, "--out", blocker / "sub"))
    assert f"{blocker / 'sub'}" in message and "Not a directory" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.txt", "somefile"]
    result = invoke("train", *TINY, "--data", names, "--out", blocker)  # a file where a folder is wanted
    assert result.exit_code == 2 and "--out" in result.stderr


def test_checkpoint_name_must_be_a_plain_name(tmp_path, names):
    result = invoke("train", *TINY, "--data", names, "--out", tmp_path / "out", "--name", "a/b")
    assert result.exit_code == 2 and "--name" in result.stderr


def test_batches_resume_exactly_at_any_step(small_names):
    """A sampler started again from resume_state() at step k draws the batches the first one draws after k,
    within a chunk of indices, at its end and across it."""
    from makemore.batches import BATCH_CHUNK, BatchSampler
    from makemore.data import Vocab, read_items
    from makemore.dataset import build_dataset

    items = read_items(small_names)
    data = build_dataset(items, Vocab.from_items(items), 3)
    whole = BatchSampler(data, 8, seed=5)
    batches = [whole.next() for _ in range(2 * BATCH_CHUNK + 3)]
    for k in (0, 1, 100, BATCH_CHUNK - 1, BATCH_CHUNK, BATCH_CHUNK + 1, 2 * BATCH_CHUNK):
        first = BatchSampler(data, 8, seed=5)
        for _ in range(k):
            first.next()
        again = BatchSampler(data, 8, seed=0, rng=first.resume_state(), step=k)
        for got, want in zip(again.peek()[:2], batches[k]):  # peek: the same batch, in the model's shapes
            assert torch.equal(got.view(want.shape), want), k
        for step in range(k, k + 3):
            for got, want in zip(again.next()[:2], batches[step]):
                assert torch.equal(got, want), (k, step)


def test_wavenet_resumes_exactly_batchnorm_statistics_included(tmp_path, names):
    """BatchNorm's running averages are part of the state a resumed run continues from."""
    args = ["--model", "wavenet", "--data", names, "--block-size", 4, "--n-embd", 4, "--n-hidden", 8,
            "--schedule", "constant", "-q"]
    ok("train", *args, "--steps", 80, "--out", tmp_path / "whole")
    ok("train", *args, "--steps", 40, "--out", tmp_path / "halves")
    halves = tmp_path / "halves" / "wavenet.safetensors"
    ok("train", "--resume", "--checkpoint", halves, "--steps", 80, "--out", tmp_path / "halves", "-q")
    resumed = tmp_path / "halves" / "wavenet-2.safetensors"  # beside the checkpoint resumed, never over it
    a, b = (checkpoint.load(p)["resume"]["state_dict"] for p in (tmp_path / "whole" / "wavenet.safetensors", resumed))
    assert any("running_var" in k for k in a)
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
