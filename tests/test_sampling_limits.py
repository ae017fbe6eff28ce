"""makemore sample within bounds: items stream as they are found, a hopeless request ends with its report,
regexes match in linear time (RE2), item length is capped by what the model was trained on, and any positive
temperature is numerically sound."""
import json
import os
import re
import resource
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from makemore import api, memory, sampling, stream
from makemore.cli import sample as sample_command
from makemore.constraints import PATIENCE, Request, compile_regex
from makemore.errors import MakemoreError, OptionError

ROOT = Path(__file__).resolve().parent.parent
GENEROUS = 120  # seconds: an "it ends" bound for a subprocess, far above what any of them takes


@pytest.fixture(scope="module")
def bigram(names_file, tmp_path_factory) -> api.Trained:
    result = api.train("bigram", names_file, tmp_path_factory.mktemp("out"), progress=False)
    return api.load(result.path)


@pytest.fixture(scope="module")
def endless(tmp_path_factory) -> api.Trained:
    """A bigram whose likeliest path never ends: 'a' is followed by 'a' far more often than by the end, and
    its longest item (1,000 characters) makes the length cap 2,000."""
    folder = tmp_path_factory.mktemp("endless")
    (folder / "a.txt").write_text("a" * 1000 + "\nab\nba\n")
    return api.load(api.train("bigram", folder / "a.txt", folder, splits=(1, 0, 0), progress=False).path)


@pytest.fixture
def ckpt_run(run, bigram):
    return lambda *args, ok=True: run("sample", "--checkpoint", bigram.path, *args, ok=ok)


def cli(*args, limit_memory: int | None = None, **popen) -> subprocess.Popen:
    """makemore in a fresh process (the worktree's package), optionally under an address-space limit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAKEMORE_DEBUG="", OMP_NUM_THREADS="1")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    return subprocess.Popen([sys.executable, "-m", "makemore", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if limit_memory else None, **popen)


def greedy(trained) -> str:
    """The counting bigram's likeliest path, the end masked before the first character (--min-len 1)."""
    P, item, prev = trained.model.probs(), "", 0
    while True:
        row = P[prev].clone()
        if not item:
            row[0] = 0
        prev = int(row.argmax())
        if prev == 0:
            return item
        item += trained.vocab.chars[prev]


# ---------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("extra", [[], ["--json", "--nearest"]])
@pytest.mark.slow
def test_items_stream_as_they_are_found_and_a_closed_pipe_ends_quietly(bigram, extra):
    """A request that could not end for hours prints its first items at once, and stops (exit 0, no
    traceback) when its reader goes away, as `makemore sample -n 1000000000 | head` does."""
    proc = cli("sample", "--checkpoint", bigram.path, "-n", 10**9, "--max-tries", 10**12, "--seed", 1,
               "--threads", 1, *extra)
    watchdog = threading.Timer(GENEROUS, proc.kill)  # a process that printed nothing would block readline
    watchdog.start()
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert proc.poll() is None  # still drawing
        proc.stdout.close()
        assert proc.wait(timeout=GENEROUS) == 0
        assert proc.stderr.read() == ""
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert all(line.endswith("\n") for line in lines)
    items = [json.loads(line)["item"] if extra else line.rstrip("\n") for line in lines]
    assert items == list(bigram.sample(3, 1))


@pytest.mark.slow
def test_the_sampler_holds_no_kept_item(bigram):
    """Iterated, the sampler hands each item over and keeps none: 100,000 items (about 9 MB of Python
    objects when kept) pass through in a few MB, the objects of one batch."""
    drawing = bigram.draw(Request(n=100_000), seed=0)
    tracemalloc.start()
    try:
        count = sum(1 for _ in drawing)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100_000 and drawing.complete
    assert peak < 6 << 20, peak


# ---------------------------------------------------------------------------------------------- time
def test_a_hopeless_request_ends_for_time_with_its_report(ckpt_run):
    (patience,) = [p for p in sample_command.params if p.name == "patience"]
    assert patience.default == PATIENCE == Request().patience  # the CLI's default is the library's
    result = ckpt_run("-n", 20, "--new", "--unique", "--regex", "[0-9]+", "--patience", 0.5,
                      "--max-tries", 10**12, ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    assert re.fullmatch(r"Error: asked for 20, found 0 in [\d,]+ draws, stopped after 0.5 s without a new item "
                        r"\(acceptance 0%; .*failed --regex\); loosen the constraints or raise --patience\n",
                        result.stderr), result.stderr


def test_items_found_before_time_runs_out_are_printed_with_the_report(ckpt_run, bigram):
    """Stopping for time ends the seed's list of items earlier: what was found is its beginning. Only 28
    items start with qu and have at most 3 characters."""
    result = ckpt_run("-n", 100, "--prefix", "qu", "--max-len", 3, "--unique", "--patience", 0.5,
                      "--max-tries", 10**12, "--seed", 4)
    lines = result.stdout.splitlines()
    assert 0 < len(lines) <= 28
    assert re.fullmatch(rf"asked for 100, found {len(lines)} in [\d,]+ draws, stopped after 0.5 s without a new "
                        r"item \(acceptance .*\)\n", result.stderr), result.stderr
    assert lines == list(bigram.sample(len(lines), 4, prefix="qu", unique=True, max_len=3))


def test_a_batch_stops_between_steps_when_time_is_up(endless):
    """Drawing the argmax of a model that never ends runs every row to the cap; giving up is checked at
    each step, so no batch runs on: nothing is decided and only a few steps are taken."""
    checks = []

    def give_up():
        checks.append(1)
        return len(checks) > 5

    keys = stream.item_keys(stream.key_of(0), torch.arange(64))
    drawn = list(sampling.draw_batch(endless.model, [], keys, 2001, 1, 1e-300, give_up=give_up))
    assert drawn == [[]] * 5 and len(checks) == 6  # five steps, no row decided


def test_a_model_that_never_ends_is_reported_for_time(run, endless):
    result = run("sample", "--checkpoint", endless.path, "--temperature", 1e-300, "--patience", 0.5,
                 "--max-tries", 10**12, ok=False)
    assert result.exit_code == 1
    # the draws judged did not end; when time ran out before any was, how far those cut short had gone
    m = re.fullmatch(r"Error: asked for 10, found 0 in ([\d,]+) draws, stopped after 0.5 s without a new item "
                     r"\(acceptance 0%; (?:[\d,]+ did not end within 2000 characters|20 cut short at ([\d,]+) "
                     r"characters)\); loosen the constraints or raise --patience\n", result.stderr)
    assert m, result.stderr
    assert (m[1] == "0") == (m[2] is not None) and (m[2] is None or 1 < int(m[2].replace(",", "")) <= 2000)


# ---------------------------------------------------------------------------------------------- regex
@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a.*", r"(?<!b)a.*"])
def test_patterns_outside_re2_are_a_one_line_usage_error(ckpt_run, bigram, pattern):
    result = ckpt_run("--regex", pattern, ok=False)
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "not a valid RE2 regular expression" in line and "no backreferences or lookaround" in line
    with pytest.raises(OptionError, match="RE2"):
        bigram.sample(2, regex=pattern)


@pytest.mark.slow
def test_nested_quantifiers_on_long_items_end(tmp_path):
    """(a+)+ against a run of a's and a b backtracks exponentially in Python's re (2^40 paths here); RE2
    answers in linear time, so every draw is rejected at once and the request ends with its report."""
    (tmp_path / "ab.txt").write_text(("a" * 40 + "b\n") * 20)
    api.train("bigram", tmp_path / "ab.txt", tmp_path, model_options={"smoothing": 0}, splits=(1, 0, 0),
              progress=False)
    proc = cli("sample", "--out", tmp_path, "-n", 2, "--regex", "(a+)+", "--max-tries", 2000, "--seed", 0)
    try:
        out, err = proc.communicate(timeout=GENEROUS)
    finally:
        proc.kill()
    assert proc.returncode == 1 and out == ""
    assert "found 0 in 2,000 draws" in err and "failed --regex" in err
    assert compile_regex("(a+)+").fullmatch("a" * 10_000 + "b") is None


# ---------------------------------------------------------------------------------------------- temperature
def test_a_tiny_temperature_draws_the_argmax(ckpt_run, bigram):
    assert ckpt_run("-n", 3, "--temperature", 1e-310, "--seed", 2).stdout.splitlines() == [greedy(bigram)] * 3


def test_next_token_probs_at_any_positive_temperature():
    logits = torch.tensor([[1.0, 3.0, 2.0, float("-inf")], [5.0, 1.0, 4.0, 4.5], [float("-inf")] * 4])
    for temperature in (1e-310, 5e-324, 1e-30):
        probs = sampling.next_token_probs(logits[:2], temperature)
        assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    # the end banned: the likeliest of the rest
    banned = sampling.next_token_probs(logits[1:2], 1e-310, end_banned=torch.tensor([True]))
    assert banned.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    wide = sampling.next_token_probs(logits[:1], 1e300)
    assert wide[0, :3].tolist() == pytest.approx([1 / 3] * 3) and wide[0, 3] == 0
    assert sampling.next_token_probs(logits[2:], 1.0).isnan().all()  # a dead end stays one


# ---------------------------------------------------------------------------------------------- length, memory
@pytest.mark.slow
def test_max_len_far_above_the_cap_is_lowered_with_a_note_in_bounded_memory(bigram):
    cap = 2 * max(map(len, bigram.items()))
    proc = cli("sample", "--checkpoint", bigram.path, "-n", 5, "--seed", 1, "--max-len", 10**9,
               limit_memory=3 << 30)
    out, err = proc.communicate(timeout=GENEROUS)
    assert proc.returncode == 0, err
    assert out.splitlines() == list(bigram.sample(5, 1))
    assert err == (f"note: --max-len 1,000,000,000 is above the longest item this model draws, {cap} characters "
                   f"(twice the longest training item); items are drawn up to {cap}\n")


@pytest.mark.parametrize("args", [["--min-len", 10**9], ["--min-len", 10**9, "--max-len", 10**9 + 1]])
def test_min_len_above_the_cap_is_refused_in_one_line(ckpt_run, bigram, args):
    cap = 2 * max(map(len, bigram.items()))
    result = ckpt_run(*args, ok=False)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: --min-len 1,000,000,000 is above the longest item this model draws, {cap} "
                             "characters (twice the longest training item)\n")


def test_a_long_cap_draws_few_rows_at_a_time(endless, monkeypatch):
    """rows x steps stay within BATCH_TOKENS: the longer the cap, the fewer rows a batch holds."""
    monkeypatch.setattr(sampling, "BATCH_TOKENS", 100 * 2001)
    sizes = []
    draw = sampling.draw_batch

    def recording(model, prefix_ids, keys, steps, *args, **kwargs):
        sizes.append((len(keys), steps))
        return draw(model, prefix_ids, keys, steps, *args, **kwargs)

    monkeypatch.setattr(sampling, "draw_batch", recording)
    assert len(endless.sample(150, 0)) == 150
    assert sizes and {rows for rows, _ in sizes} == {100} and {steps for _, steps in sizes} == {2001}


def test_batches_fit_the_rows_memory_allows(bigram, run, monkeypatch, batch_sizes):
    """The rows of a batch are those memory.rows_that_fit allows (the items the same); none fitting is one line."""
    expected = list(bigram.sample(300, 5))
    batch_sizes.clear()
    monkeypatch.setattr(memory, "rows_that_fit", lambda cls, config, vocab_size, device, wanted: 7)
    assert list(bigram.sample(300, 5)) == expected and max(batch_sizes) == 7

    message = "one example of this bigram model needs about 9 GB of memory but cpu has 1 GB available"

    def none_fit(*args):
        raise MakemoreError(message)

    monkeypatch.setattr(memory, "rows_that_fit", none_fit)
    result = run("sample", "--checkpoint", bigram.path, ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


# ---------------------------------------------------------------------------------------------- any request
REGEXES = [None, ".*a.*", "[^e]*", ".{2,5}", "(a|e).*|.*n", "(a+)+.*"]
NOT_RE2 = [r"(a)\1", "(?=a).*", "(a"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.text("aejlmnB", max_size=3), suffix=st.text("aeny", max_size=3),
       min_len=st.integers(0, 8) | st.integers(0, 10**12),
       max_len=st.none() | st.integers(-2, 12) | st.integers(0, 10**12),
       regex=st.sampled_from(REGEXES + NOT_RE2), seed=st.integers(0, 1000))
def test_any_length_request_is_refused_in_one_line_or_met(bigram, prefix, suffix, min_len, max_len, regex, seed):
    """Refused in one line exactly when it can never be met by this model; otherwise every item meets it."""
    cap = 2 * max(map(len, bigram.items())) + len(prefix)
    never = ("B" in prefix or regex in NOT_RE2 or min_len > cap
             or max_len is not None and (max_len < 1 or min_len > max_len or len(prefix) > max_len
                                         or len(suffix) > max_len))
    notes = []
    try:
        items = bigram.sample(5, seed, prefix=prefix, max_len=max_len, suffix=suffix, min_len=min_len, regex=regex,
                              max_tries=500, warn=notes.append)
    except sampling.NothingFound as e:
        assert not never and "found 0 in 500 draws" in str(e)
        return
    except MakemoreError as e:
        assert never and str(e) and "\n" not in str(e)
        return
    assert not never
    assert items.cap == min(cap, max_len if max_len is not None else cap)
    assert len(notes) == (max_len is not None and max_len > cap)
    for item in items:
        assert item.startswith(prefix) and item.endswith(suffix)
        assert min_len <= len(item) <= items.cap
        assert regex is None or re.fullmatch(regex, item)
