"""makemore sample: every printed item meets every constraint, -n is exact, the report when the budget runs
out, and the distribution after a prefix is the model's; the Python API; makemore inspect."""
import ast
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from makemore import api, sampling, stream
from makemore.errors import CheckpointError, MakemoreError, OptionError, VocabularyError
from makemore.nearest import nearest

REPO_NAMES = Path(__file__).resolve().parent.parent / "names.txt"


@pytest.fixture(scope="module")
def bigram(names_file, tmp_path_factory) -> api.Trained:
    out = tmp_path_factory.mktemp("out")
    result = api.train("bigram", names_file, out, progress=False)
    return api.load(result.path)


@pytest.fixture
def ckpt_run(run, bigram):
    """The CLI on the module's bigram checkpoint."""
    return lambda *args, ok=True: run("sample", "--checkpoint", bigram.path, *args, ok=ok)


def levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme, one cell at a time: the reference for the vectorised one."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


REGEXES = [None, ".*a.*", "[^e]*", ".{2,5}", "(a|e).*|.*n", "[aeiou][a-z]*[aeiou]", "z.*"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 25), prefix=st.text("aejlmn", max_size=2), suffix=st.text("aeny", max_size=2),
       min_len=st.integers(0, 7), max_len=st.none() | st.integers(1, 9), regex=st.sampled_from(REGEXES),
       new=st.booleans(), unique=st.booleans(), exclude=st.lists(st.sampled_from(["ana", "eli", "mia", "lee"])),
       temperature=st.sampled_from([0.5, 1.0, 2.0]), top_k=st.sampled_from([None, 2, 8]),
       top_p=st.sampled_from([None, 0.3, 0.9]), seed=st.integers(0, 1000))
def test_every_item_meets_every_constraint(bigram, n, prefix, suffix, min_len, max_len, regex, new, unique,
                                           exclude, temperature, top_k, top_p, seed):
    if max_len is not None:
        assume(min_len <= max_len and len(prefix) <= max_len and len(suffix) <= max_len)
    budget = 1000
    try:
        items = bigram.sample(n, seed, temperature, top_k, prefix, max_len, top_p=top_p, suffix=suffix,
                              min_len=min_len, regex=regex, new=new, exclude=exclude, unique=unique,
                              max_tries=budget)
    except sampling.NothingFound as e:
        assert f"found 0 in {budget:,} draws" in str(e)
        return
    data = set(bigram.items())
    for item in items:
        assert item and not bigram.vocab.unknown(item)
        assert item.startswith(prefix) and item.endswith(suffix)
        assert len(item) >= min_len and (max_len is None or len(item) <= max_len)
        assert regex is None or re.fullmatch(regex, item)
        assert not (new and item in data)
        assert item not in exclude
    if unique:
        assert len(set(items)) == len(items)
    assert len(items) == n or (items.draws == budget and not items.complete)
    assert items.draws <= budget
    assert len(items) + sum(items.rejected.values()) == items.draws


def test_n_is_exact_and_new_unique(ckpt_run, bigram):
    lines = ckpt_run("-n", 300, "--new", "--unique", "--seed", 3).stdout.splitlines()
    assert len(lines) == 300 and len(set(lines)) == 300
    assert not set(lines) & set(bigram.items())


def test_same_seed_same_output_with_or_without_progress(ckpt_run, bigram):
    first = ckpt_run("-n", 40, "--seed", 11, "--unique", "--suffix", "a").stdout
    assert first == ckpt_run("-n", 40, "--seed", 11, "--unique", "--suffix", "a").stdout
    quiet = bigram.sample(40, 11, unique=True, suffix="a", progress=False)
    shown = bigram.sample(40, 11, unique=True, suffix="a", progress=True)
    assert list(quiet) == list(shown) == first.splitlines()
    assert list(bigram.sample(40, 12, unique=True, suffix="a")) != list(quiet)


def test_constraints_by_rejection_filter_one_stream_of_draws(bigram):
    """With one seed, -n 5 prints the first 5 of -n 9, and rejection constraints print the items of the
    unconstrained stream that meet them, in order: a constraint never changes what is drawn."""
    assert list(bigram.sample(5, 3)) == list(bigram.sample(9, 3))[:5]
    stream = bigram.sample(2000, 21)
    data = set(bigram.items())
    expected = []
    for item in stream:
        if len(item) <= 8 and item.endswith("a") and item not in data and item not in expected:
            expected.append(item)
    got = bigram.sample(40, 21, max_len=8, suffix="a", new=True, unique=True)
    assert len(expected) > 40 and list(got) == expected[:40]


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of counts against probs; cells expecting fewer than 5 pooled."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum(0, keepdim=True)])
    exp = torch.cat([expected[~small], expected[small].sum(0, keepdim=True)])
    keep = exp > 0
    assert bool((obs[~keep] == 0).all()), "a draw of probability zero"
    obs, exp = obs[keep], exp[keep]
    stat = ((obs - exp) ** 2 / exp).sum()
    df = obs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


@pytest.mark.parametrize("min_len", [0, 3])
def test_first_character_after_prefix_follows_the_model(bigram, min_len):
    """The counting bigram's next-character distribution after the prefix 'an' is row P['n'] (without the
    end when --min-len 3 masks it, renormalised); a sampler that ignored the prefix would follow P['.']."""
    prefix = "an"
    # a --max-len far above any name: rejecting the rare long draw must not bend the distribution
    items = bigram.sample(8000, 5, prefix=prefix, max_len=200, min_len=min_len)
    stoi = bigram.vocab.stoi
    nxt = torch.tensor([stoi[item[2]] if len(item) > 2 else 0 for item in items])
    counts = torch.bincount(nxt, minlength=len(bigram.vocab)).double()
    P = bigram.model.probs()
    row = P[stoi["n"]].clone()
    unconditional = P[0].clone()
    if min_len == 3:
        row[0] = unconditional[0] = 0
        assert counts[0] == 0
    assert chi_square_p(counts, row / row.sum()) > 1e-3
    assert chi_square_p(counts, unconditional / unconditional.sum()) < 1e-6  # the test can tell them apart


def test_top_p_near_zero_is_greedy(ckpt_run, bigram):
    """With a tiny nucleus only the likeliest character is ever drawn: the greedy path of the counts."""
    P = bigram.model.probs()
    greedy, prev = "", 0
    while True:
        row = P[prev].clone()
        if not greedy:
            row[0] = 0  # --min-len 1: the end is masked before the first character
        prev = int(row.argmax())
        if prev == 0:
            break
        greedy += bigram.vocab.chars[prev]
    assert ckpt_run("-n", 4, "--top-p", 0.01, "--seed", 2).stdout.splitlines() == [greedy] * 4


def test_budget_report_when_constraints_are_rare(ckpt_run):
    result = ckpt_run("-n", 1000, "--unique", "--max-len", 3, "--max-tries", 3000, "--seed", 1)
    lines = result.stdout.splitlines()
    m = re.fullmatch(r"asked for 1,000, found ([\d,]+) in 3,000 draws \(acceptance ([\d.]+)%; "
                     r"([\d,]+) were longer than --max-len, ([\d,]+) repeats\)\n", result.stderr)
    assert m, result.stderr
    found, pct, long, repeats = (float(g.replace(",", "")) for g in m.groups())
    assert 0 < found == len(lines) < 1000 and len(set(lines)) == len(lines)
    assert found + long + repeats == 3000
    assert abs(pct - 100 * found / 3000) < 0.06


def test_impossible_constraint_is_exit_1_with_the_figures(ckpt_run):
    result = ckpt_run("-n", 5, "--regex", "[0-9]+", "--max-tries", 500, ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    m = re.fullmatch(r"Error: asked for 5, found 0 in 500 draws \(acceptance 0%; (?:([\d,]+) did not end within "
                     r"\d+ characters, )?([\d,]+) failed --regex\); loosen the constraints or raise --max-tries\n",
                     result.stderr)
    assert m, result.stderr
    assert sum(int(g or 0) for g in m.groups()) == 500


@pytest.mark.parametrize("args, message, code", [
    # unseen characters are exit 1, as every vocabulary error; the rest are usage errors
    (["--prefix", "aB"], "--prefix has characters the model never saw: 'B'", 1),
    (["--suffix", "."], "--suffix has characters the model never saw: '.'", 1),
    (["--min-len", 6, "--max-len", 5], "--min-len 6 is above --max-len 5", 2),
    (["--prefix", "anna", "--max-len", 3], "--prefix 'anna' is longer than --max-len 3", 2),
    (["--suffix", "elle", "--max-len", 3], "--suffix 'elle' is longer than --max-len 3", 2),
    (["--top-k", 99], "--top-k 99 is above this model's vocabulary of 27 tokens", 1),
    (["--regex", "(a"], "is not a valid RE2 regular expression", 2),
    (["--top-p", 0], "0<x<=1", 2),
    (["--exclude", "no-such-file"], "no-such-file: no such file", 1),
])
def test_impossible_requests_fail_before_any_drawing(ckpt_run, monkeypatch, args, message, code):
    def no_drawing(*a, **k):
        raise AssertionError("drew before refusing")

    monkeypatch.setattr(sampling, "draw_batch", no_drawing)
    result = ckpt_run(*args, ok=False)
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_exclude_and_mark(ckpt_run, bigram, tmp_path):
    common = [item for item, _ in _counts(bigram.sample(400, 0)).most_common(5)]
    (tmp_path / "taken.txt").write_text("\n".join(common) + "\n")
    (tmp_path / "empty.txt").write_text("")
    lines = ckpt_run("-n", 200, "--seed", 0, "--exclude", tmp_path / "taken.txt", "--mark").stdout.splitlines()
    items = [line.split("\t")[0] for line in lines]
    assert len(items) == 200 and not set(items) & set(common)
    marks = [line.split("\t")[1] for line in lines]
    assert set(marks) <= {"train", "dev", "test", "new"}
    assert marks == ["new" if w == "new" else w for w in bigram.where(items)]
    assert len(ckpt_run("-n", 3, "--exclude", tmp_path / "empty.txt").stdout.splitlines()) == 3


def _counts(items):
    from collections import Counter

    return Counter(items)


def test_json_log_prob_split_and_nearest(ckpt_run, bigram):
    records = [json.loads(line) for line in ckpt_run("-n", 30, "--seed", 4, "--json", "--nearest").stdout.splitlines()]
    assert len(records) == 30
    P = bigram.model.probs()
    stoi = bigram.vocab.stoi
    train = bigram.splits()["train"]
    where = dict()
    for split in ("test", "dev", "train"):
        where.update(dict.fromkeys(bigram.splits()[split], split))
    for r in records:
        ids = [0] + [stoi[c] for c in r["item"]] + [0]
        logp = sum(math.log(P[a, b]) for a, b in zip(ids, ids[1:]))
        assert r["log_prob"] == pytest.approx(logp, abs=1e-4)
        assert r["log_prob_per_char"] == pytest.approx(logp / (len(r["item"]) + 1), abs=1e-4)
        assert r["split"] == where.get(r["item"], "none")
        distances = [levenshtein(r["item"], t) for t in train]
        assert r["distance"] == min(distances) and levenshtein(r["item"], r["nearest"]) == r["distance"]
    plain = ckpt_run("-n", 30, "--seed", 4, "--nearest").stdout.splitlines()
    assert plain == [f"{r['item']}\t{r['nearest']}\t{r['distance']}" for r in records]
    # a training item scores as one, at distance 0 from itself
    (rec,) = bigram.describe([train[0]], nearest=True)
    assert rec["split"] == "train" and rec["distance"] == 0 and rec["nearest"] == train[0]


def test_nearest_matches_the_textbook_distance_ties_to_the_first():
    rng = random.Random(0)
    items = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 7))) for _ in range(300)]
    queries = ["".join(rng.choice("abcd") for _ in range(rng.randint(0, 9))) for _ in range(60)] + items[:5]
    index, distance = nearest(queries, items)
    for q, i, d in zip(queries, index, distance):
        ds = [levenshtein(q, t) for t in items]
        assert d == min(ds) and i == ds.index(d)


def test_new_works_with_the_data_file_deleted(run, tmp_path):
    data = tmp_path / "gone.txt"
    lines = REPO_NAMES.read_text(encoding="utf-8").splitlines()[::40]
    data.write_text("\n".join(lines) + "\n")
    run("train", "--model", "bigram", "--data", data, "-q")
    data.unlink()
    out = run("sample", "-n", 50, "--new", "--unique", "--seed", 0, "--json").stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 50 and all(r["split"] == "none" for r in records)
    assert not {r["item"] for r in records} & set(lines)
    assert json.loads(run("inspect", "--json").stdout)["data"]["status"] == "missing"


def test_dead_end_before_min_len_is_reported_not_a_crash(run, tmp_path):
    """With no smoothing, 'x' is only ever followed by the end; masking the end there leaves nothing."""
    (tmp_path / "x.txt").write_text("ax\nbx\n")
    run("train", "--model", "bigram", "--data", tmp_path / "x.txt", "--smoothing", 0, "--splits", "1,0,0", "-q")
    result = run("sample", "--min-len", 3, "--max-tries", 100, ok=False)
    assert result.exit_code == 1
    assert "found 0 in 100 draws (acceptance 0%; 100 hit a dead end" in result.stderr
    assert set(run("sample", "-n", 20, "--seed", 0).stdout.split()) == {"ax", "bx"}


def test_api_never_exits(bigram, monkeypatch, tmp_path):
    def no_exit(*args):
        raise AssertionError("the API called sys.exit")

    monkeypatch.setattr(sys, "exit", no_exit)
    with pytest.raises(CheckpointError):
        api.load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError):
        api.inspect(tmp_path / "missing.safetensors")
    with pytest.raises(VocabularyError):
        bigram.sample(3, prefix="A")
    with pytest.raises(OptionError):
        bigram.sample(3, min_len=4, max_len=2)
    with pytest.raises(sampling.NothingFound):
        bigram.sample(3, regex="[0-9]", max_tries=50)
    with pytest.raises(MakemoreError):
        bigram.log_prob(["A"])
    partial = bigram.sample(50, 0, max_len=1, unique=True, max_tries=500)
    assert 0 < len(partial) < 50 and not partial.complete and partial.report().startswith("asked for 50")
    assert len(bigram.log_prob(["emma", "x"])) == 2
    assert bigram.evaluate("dev")["loss"] > 0


def test_library_modules_never_exit_the_interpreter():
    root = Path(api.__file__).parent
    for name in ("api.py", "sampling.py", "nearest.py"):
        tree = ast.parse((root / name).read_text())
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert not {"exit", "_exit"} & names and "click" not in imports, name


def test_inspect(run, bigram):
    result = run("inspect", bigram.path)
    text = result.stdout
    fp = bigram.ckpt["data"]["fingerprint"]
    assert "model         bigram: block_size 1, smoothing 1.0" in text
    assert f"fingerprint {fp}; unchanged" in text
    assert "vocabulary    27 tokens: the boundary '.' and 'abcdefghijklmnopqrstuvwxyz'" in text
    assert "split         0.8/0.1/0.1 with seed 42" in text and "format 3" in text
    info = json.loads(run("inspect", bigram.path, "--json").stdout)
    assert info["model"] == "bigram" and info["config"] == bigram.ckpt["config"]
    assert info["vocab_size"] == 27 and info["n_buffers"] == sum(v.numel() for v in bigram.ckpt["state_dict"].values()) > 0 and info["n_params"] == 0
    assert info["file_size"] == bigram.path.stat().st_size and info["format_version"] == 3
    assert sum(info["split"]["sizes"].values()) == info["data"]["n_items"] == len(bigram.items())
    assert info["steps"] == 0 and info["best_dev_loss"] is None
    missing = run("inspect", "nope.safetensors", ok=False)
    assert missing.exit_code == 1 and "no such checkpoint" in missing.stderr


def test_stream_is_seeded_uniform_and_the_same_on_integers_and_tensors():
    """SplitMix64 on int64 tensors wraps and shifts as the integer version does; its numbers are uniform."""
    rng = random.Random(0)
    values = [0, 1, 42, 2**63 - 1, -2**63, -1] + [rng.getrandbits(64) - 2**63 for _ in range(50)]
    as_tensor = stream._mix_tensor(torch.tensor(values, dtype=torch.int64)).tolist()
    assert [v & stream.MASK for v in as_tensor] == [stream.mix(v & stream.MASK) for v in values]
    u = stream.uniforms(stream.item_keys(stream.key_of(7), torch.arange(100_000)), 3)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert len(set(u.tolist())) == len(u)
    assert torch.equal(u, stream.uniforms(stream.item_keys(stream.key_of(7), torch.arange(100_000)), 3))
    assert stream.key_of(None) != stream.key_of(None)


def test_batches_of_a_large_vocabulary_stay_small_and_draw_the_same_items(bigram, monkeypatch, batch_sizes):
    """A batch holds at most BATCH_NUMBERS probabilities; which items come out does not depend on it."""
    expected = bigram.sample(300, seed=5)
    batch_sizes.clear()
    monkeypatch.setattr(sampling, "BATCH_NUMBERS", 40 * len(bigram.vocab))
    assert list(bigram.sample(300, seed=5)) == list(expected)
    assert batch_sizes and max(batch_sizes) == 40


def test_an_empty_item_drawn_with_min_len_0_is_scored_as_the_boundary_alone(bigram):
    """--min-len 0 --json may draw the empty item: its log-probability is the end right after the start."""
    P = bigram.model.probs()
    scores = sampling.log_probs(bigram.model, bigram.vocab, ["", "ab", ""])
    assert scores[0] == scores[2] == pytest.approx(math.log(P[0, 0]), abs=1e-9)
    ids = [0, bigram.vocab.stoi["a"], bigram.vocab.stoi["b"], 0]
    assert scores[1] == pytest.approx(sum(math.log(P[a, b]) for a, b in zip(ids, ids[1:])), abs=1e-9)
