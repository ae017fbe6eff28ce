"""Trust at the edges (issue 29): a user's files are never lost, nothing a checkpoint names is read unless the
user names it too, and exit codes and output mean one thing."""
import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import invoke, ok
from makemore import checkpoint
from makemore.errors import printable
from makemore.files import check_name

TINY = ["--model", "mlp", "--n-embd", "4", "--n-hidden", "8", "--batch-size", "16", "-q"]
SECRET = "swordfish-correct-horse"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


@pytest.fixture
def run_dir(tmp_path, names, monkeypatch):
    """A trained 40-step MLP in tmp_path/r, with the working directory at tmp_path."""
    monkeypatch.chdir(tmp_path)
    ok("train", *TINY, "--data", names, "--steps", 40, "--out", tmp_path / "r")
    return tmp_path


# ------------------------------------------------------------------------------------ a user's files are kept

def test_resume_writes_in_its_own_out_and_never_over_the_checkpoint_it_continues(run_dir):
    resumed = run_dir / "r" / "mlp.safetensors"
    kept = files(run_dir / "r")
    out = ok("train", "--resume", "--checkpoint", resumed, "--steps", 60, "--out", run_dir / "elsewhere").stdout
    assert "elsewhere/mlp.safetensors" in out and "(60 steps" in out
    assert files(run_dir / "r") == kept
    assert checkpoint.load(run_dir / "elsewhere" / "mlp.safetensors")["step"] == 60
    # in its own folder the continuation gets the next free name, and latest points at it
    out = ok("train", "--resume", "--checkpoint", resumed, "--steps", 60, "--out", run_dir / "r").stdout
    assert "r/mlp-2.safetensors" in out and resumed.read_bytes() == kept["mlp.safetensors"]
    assert (run_dir / "r" / "latest").read_text().strip() == "mlp-2.safetensors"
    out = ok("train", "--resume", "--out", run_dir / "r", "--steps", 70).stdout  # the latest: mlp-2
    assert "r/mlp-3.safetensors" in out
    message = one_line(invoke("train", "--resume", "--checkpoint", resumed, "--name", "mlp", "--out", run_dir / "r",
                              "--steps", 80), 2)
    assert "--name" in message and "resumed" in message


@pytest.mark.parametrize("args, flag", [
    (["--model", "gru"], "--model"),
    (["--splits", "0.5,0.25,0.25"], "--splits"),
    (["--split-seed", "7"], "--split-seed"),
    (["--n-hidden", "9"], "--n-hidden"),
    (["--lr", "0.5"], "--lr"),
    (["--batch-size", "17"], "--batch-size"),
    (["--steps", "10"], "--steps"),
])
def test_resume_refuses_an_option_that_contradicts_the_checkpoint(run_dir, args, flag):
    kept = files(run_dir / "r")
    message = one_line(invoke("train", "--resume", "--out", run_dir / "r", *args), 2)
    assert flag in message
    assert files(run_dir / "r") == kept


def test_resume_accepts_options_that_agree_with_the_checkpoint(run_dir):
    out = ok("train", "--resume", "--out", run_dir / "r", "--model", "mlp", "--n-hidden", 8, "--batch-size", 16,
             "--splits", "0.8,0.1,0.1", "--steps", 50, "-q").stdout
    assert "(50 steps" in out


def test_a_model_that_predicts_no_numbers_is_never_written(run_dir, names):
    """add-k with a k beyond float64's range is the uniform model, not NaN; and a counted model whose
    predictions are NaN would not be saved over the user's checkpoint."""
    ok("train", "--model", "bigram", "--data", names, "--out", run_dir / "b", "--smoothing", "1e308")
    result = ok("eval", "--out", run_dir / "b", "--json")
    assert math.isclose(json.loads(result.stdout)["loss"], math.log(len(checkpoint.load(
        run_dir / "b" / "bigram.safetensors")["vocab"])), rel_tol=1e-9)


def test_an_interrupted_or_diverged_first_evaluation_leaves_the_earlier_checkpoint(run_dir, names):
    kept = files(run_dir / "r")
    one_line(invoke("train", *TINY, "--data", names, "--steps", 100, "--lr", "1e6", "--out", run_dir / "r"), 1)
    assert files(run_dir / "r") == kept
    one_line(invoke("train", "--model", "wavenet", "--data", names, "--batch-size", 1, "--out", run_dir / "r"), 2)
    assert files(run_dir / "r") == kept


def test_resume_of_a_mixture_is_refused_in_one_line(run_dir, names):
    ok("train", "--model", "bigram", "--data", names, "--out", run_dir / "r")
    ok("mix", run_dir / "r" / "mlp.safetensors", run_dir / "r" / "bigram.safetensors", "--out", run_dir / "m")
    message = one_line(invoke("train", "--resume", "--out", run_dir / "m"), 1)
    assert "mixture" in message and "makemore mix" in message


# ------------------------------------------------------------------------------ what a checkpoint names

def forged(source: Path, target: Path, recorded: str) -> Path:
    """A copy of the checkpoint at source whose recorded data path is recorded (as a received file may be):
    save writes it whatever it records, load is what checks it."""
    ckpt = checkpoint.load(source)
    ckpt["data"] = dict(ckpt["data"], path=recorded)
    checkpoint.save(ckpt, target)
    return target


@pytest.mark.parametrize("status", ["secret", "newline"])
def test_a_file_named_only_inside_a_checkpoint_is_never_read(run_dir, status):
    """A checkpoint that names another file (here one of secrets, as long as the data, or a path with a
    newline that would forge a line of output): no command reads it for items, and no byte of it appears."""
    secret = run_dir / ("secret\nforged line" if status == "newline" else "secret.txt")
    secret.write_text((SECRET + "\n") * 700, encoding="utf-8")
    path = forged(run_dir / "r" / "mlp.safetensors", run_dir / "received.safetensors", str(secret))
    outputs = []
    for args in (["eval", "--checkpoint", path], ["eval", "--checkpoint", path, "--split", "all", "--json"],
                 ["sample", "--checkpoint", path, "-n", 3, "--seed", 1, "--new", "--mark"],
                 ["inspect", path], ["inspect", path, "--json"], ["score", "anna", "--checkpoint", path]):
        outputs.append(ok(*args).output)
    resumed = invoke("train", "--resume", "--checkpoint", path, "--steps", 50, "--out", run_dir / "cont")
    outputs.append(resumed.output)
    if resumed.exit_code == 0:  # the file is not the data it was trained on: trained on the items it keeps
        assert SECRET not in checkpoint.load(run_dir / "cont" / "received.safetensors")["items"]
    else:
        assert "changed" in one_line(resumed, 1)
    for output in outputs:
        assert SECRET not in output and "\nforged line" not in output
    if status == "newline":
        assert "secret\\nforged line" in ok("inspect", path).stdout


def test_resume_on_a_changed_data_file_needs_data_named(run_dir, names):
    names.write_text(names.read_text(encoding="utf-8") + "zelda\n", encoding="utf-8")
    kept = files(run_dir / "r")
    message = one_line(invoke("train", "--resume", "--out", run_dir / "r", "--steps", 60), 1)
    assert "changed" in message and "--data" in message
    assert files(run_dir / "r") == kept
    assert "(60 steps" in ok("train", "--resume", "--out", run_dir / "r", "--steps", 60, "--data", names).stdout


def test_errors_about_data_name_where_never_what(run_dir, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("anna\nbob\nzoë\n" * 20, encoding="utf-8")
    message = one_line(invoke("eval", "--out", run_dir / "r", "--data", other, "--split", "all"), 1)
    assert "item 3, character 3" in message and "ë" not in message
    message = one_line(invoke("train", "--resume", "--out", run_dir / "r", "--steps", 60, "--data", other), 1)
    assert "item 3, character 3" in message and "ë" not in message


# ------------------------------------------------------------------------------ exit codes, output, names

def test_no_cuda_is_what_this_machine_cannot_do(run_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "CUDA" in one_line(invoke("eval", "--out", run_dir / "r", "--device", "cuda"), 1)
    assert "--device" in one_line(invoke("eval", "--out", run_dir / "r", "--device", "tpu"), 2)


@pytest.mark.parametrize("args", [
    ["lr-find", "--max-lr", "inf"], ["lr-find", "--min-lr", "nan"], ["sample", "--temperature", "inf"],
    ["train", "--lr", "inf"], ["train", "--lr", "nan"],
])
def test_numbers_that_are_not_finite_are_refused_as_typed(run_dir, args):
    result = invoke(*args, "--out", run_dir / "r")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_json_output_is_json_even_for_an_impossible_item(run_dir, names):
    ok("train", "--model", "bigram", "--smoothing", "0", "--data", names, "--out", run_dir / "b")
    text = ok("score", "qqqq", "--out", run_dir / "b", "--json").stdout
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert record["nll"] is None  # infinite: a transition of probability 0


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".hidden", "a\nb", "x" * 201, "bad\udcffname"])
def test_a_name_that_cannot_be_a_plain_file_name_is_refused(run_dir, names, name):
    result = invoke("train", *TINY, "--data", names, "--steps", 5, "--out", run_dir / "n", "--name", name)
    assert result.exit_code == 2 and "--name" in result.stderr and "Traceback" not in result.output
    result = invoke("mix", run_dir / "r" / "mlp.safetensors", run_dir / "r" / "mlp.safetensors",
                    "--out", run_dir / "n", "--name", name)
    assert result.exit_code == 2 and "--name" in result.stderr
    assert not (run_dir / "n").exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_check_name_accepts_exactly_the_plain_visible_names(name):
    plain = (name not in ("", ".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name
             and name.isprintable() and len(name.encode("utf-8", "surrogatepass")) <= 200
             and not any(0xD800 <= ord(c) <= 0xDFFF for c in name))
    try:
        check_name(name)
        accepted = True
    except Exception as e:
        assert type(e).__name__ == "OptionError" and "\n" not in str(e)
        accepted = False
    assert accepted == plain


@given(st.text())
def test_printable_leaves_no_control_character(text):
    shown = printable(text)
    assert all(c.isprintable() for c in shown)
    if text.isprintable():
        assert shown == text


def test_a_data_path_that_is_not_utf8_is_recorded_escaped(tmp_path, names, monkeypatch):
    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "na\udcffmes.txt"
    odd.write_bytes(names.read_bytes())
    ok("train", *TINY, "--data", odd, "--steps", 5, "--out", tmp_path / "o")
    assert checkpoint.load(tmp_path / "o" / "mlp.safetensors")["data"]["path"].endswith("na\\xffmes.txt")
    assert set(string.printable) >= set(ok("inspect", tmp_path / "o" / "mlp.safetensors").stdout.replace(" ", ""))


def test_a_stop_before_the_first_step_saves_nothing(names):
    """SIGINT or SIGTERM that arrives before the loop's first step: the run ends without writing (an earlier
    checkpoint of the same name is kept), and says so."""
    import signal
    from types import SimpleNamespace

    import torch

    from makemore import api
    from makemore.data import Data, Vocab
    from makemore.dataset import build_dataset
    from makemore.errors import Interrupted
    from makemore.models import get_model_class
    from makemore.train import train_loop

    data = Data.read(names)
    cls = get_model_class("mlp")
    mconfig, tconfig = api.model_config("mlp", {"n_embd": 4, "n_hidden": 8}), api.train_config("mlp", {"steps": 5})
    vocab = Vocab.from_items(data.items)
    torch.manual_seed(0)
    net = cls(mconfig, len(vocab))
    saved = []
    with pytest.raises(Interrupted) as stopped:
        train_loop(net, build_dataset(data.items, vocab, mconfig.block_size), None, tconfig,
                   save=lambda state, model: saved.append(state.step), progress=False,
                   stop=SimpleNamespace(signum=signal.SIGINT))
    assert not stopped.value.saved and saved == []


def test_rows_are_as_wide_as_the_longest_item_whatever_the_block_size(names):
    """A sequence model with --block-size far above every item reads rows no wider than the longest item and
    its boundary token: the same rows as a block size that fits exactly, so evaluation costs the same."""
    import torch

    from makemore.data import Data, Vocab
    from makemore.dataset import build_dataset

    items = Data.read(names).items
    vocab = Vocab.from_items(items)
    longest = max(map(len, items))
    wide, exact = (build_dataset(items, vocab, size, whole_items=True) for size in (1000, longest + 1))
    assert wide.width == exact.width == longest + 1
    for a, b in zip(wide.tensors()[:2], exact.tensors()[:2]):
        assert a.shape == b.shape and torch.equal(a, b)


HUGE_CONFIGS = r'''
import sys, tempfile
from hypothesis import given, settings, strategies as st
from makemore import api
from makemore.errors import MakemoreError

data = sys.argv[1]
sizes = st.one_of(st.integers(1, 64), st.integers(1, 1 << 20))


@settings(max_examples=int(sys.argv[2]), deadline=None, database=None)
@given(st.sampled_from(["mlp", "bigram-nn", "wavenet", "rnn", "gru", "transformer"]), sizes, sizes, sizes,
       st.integers(0, 2))
def huge(model, a, b, batch, blocks):
    options = dict(mlp=dict(n_hidden=a, n_embd=min(b, 65536), block_size=min(a, 4096)),
                   wavenet=dict(n_hidden=min(a, 1 << 16), n_embd=min(b, 65536), block_size=[2, 4, 8][blocks]),
                   rnn=dict(n_hidden=min(a, 8192), n_embd=min(b, 8192), n_layer=blocks + 1),
                   gru=dict(n_hidden=min(a, 8192), n_embd=min(b, 8192), n_layer=blocks + 1),
                   transformer=dict(n_embd=min(a, 8192) // 4 * 4 or 4, n_layer=blocks + 1),
                   ).get(model, {})
    try:  # under the address-space limit: trained (one step), or refused as what this machine cannot do
        api.train(model, data, tempfile.mkdtemp(), model_options=options,
                  train_options=dict(steps=1, batch_size=min(batch, 1 << 24), eval_interval=1),
                  device="cpu", progress=False, n_threads=1, warn=lambda message: None)
    except MakemoreError as e:
        assert "\n" not in str(e), str(e)


huge()
'''


@pytest.mark.slow
def test_valid_but_huge_configs_train_or_are_refused_under_an_address_space_limit(names):
    """Any sizes the options allow, under RLIMIT_AS 3 GB: the run trains, or is refused in one line before it
    allocates; never an allocator error, a panic or an abort."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    done = subprocess.run([sys.executable, "-c", HUGE_CONFIGS, str(names), "25"], capture_output=True, text=True,
                          timeout=600, preexec_fn=limit, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def test_no_command_writes_over_a_file_it_reads(run_dir, names):
    """An output named like an input (the mixture over one of its components, a plot over its checkpoint, the
    sweep's plot over its data) is refused before anything is written."""
    mlp = run_dir / "r" / "mlp.safetensors"
    ok("train", "--model", "bigram", "--data", names, "--out", run_dir / "r")
    kept = files(run_dir / "r")
    data = names.read_bytes()
    for args in (["mix", mlp, run_dir / "r" / "bigram.safetensors", "--out", run_dir / "r", "--name", "mlp"],
                 ["plot", "loss", "--checkpoint", mlp, "-o", mlp],
                 ["lr-find", "--data", names, "--plot", names, "--steps", 20, *TINY]):
        assert "written over" in one_line(invoke(*args), 2)
    assert files(run_dir / "r") == kept and names.read_bytes() == data


def test_a_checkpoint_is_written_whole_with_a_normal_files_mode_and_nothing_beside_it(run_dir):
    """Written straight to a temporary in a private folder (safetensors' save_file makes a temporary of its
    own), then renamed: the folder holds only the run's files, each with the mode the umask gives."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    folder = run_dir / "r"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "mlp.loss.png", "mlp.metrics.jsonl",
                                                        "mlp.safetensors"]
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~mask for p in folder.iterdir())


@pytest.mark.slow
def test_long_work_speaks_after_a_second_and_quick_work_stays_silent(capsys):
    """Evaluations and a mixture's passes over dev show a bar on stderr once they take more than a second
    (a mixture of 64 bigrams over 10,000 characters evaluates for about a minute), and nothing before."""
    import time

    from makemore.train import long_work

    with long_work(3, True, "evaluating") as bar:
        bar.update()
    assert capsys.readouterr().err == ""
    with long_work(3, True, "evaluating") as bar:
        time.sleep(1.5)
        bar.update()
    assert "evaluating" in capsys.readouterr().err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60))
@example(recorded="r")  # a folder (relative to the working directory): it was opened, then read
@example(recorded="/dev/zero")
@example(recorded="/tmp/a\x00b")
@example(recorded="/tmp/" + "a" * 256)
@pytest.mark.slow
def test_any_recorded_path_is_shown_escaped_on_one_line_and_never_read(run_dir, tmp_path_factory, recorded):
    """Whatever path a checkpoint records (control characters, a newline, a path to any file), inspect shows it
    on its own line, escaped, and eval and sample work from the items the checkpoint keeps; a path no file
    can have (a NUL, a name over 255 bytes) is refused by load in one line."""
    folder = tmp_path_factory.mktemp("forged")
    path = forged(run_dir / "r" / "mlp.safetensors", folder / "f.safetensors", recorded)
    if "\x00" in recorded or any(len(part.encode()) > 255 for part in recorded.split("/")):
        for args in (["inspect", path], ["eval", "--checkpoint", path]):
            assert "the data path is empty, holds a NUL" in one_line(invoke(*args), 1)
        return
    shown = ok("inspect", path).stdout
    assert len(shown.splitlines()) == 7 and all(line.isprintable() for line in shown.splitlines())
    assert json.loads(ok("inspect", path, "--json").stdout)["data"]["path"] == recorded
    assert json.loads(ok("eval", "--checkpoint", path, "--json").stdout)["loss"] > 0
