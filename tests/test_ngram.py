import json
import math
from collections import Counter, defaultdict

import pytest
import torch

from makemore import api, checkpoint
from makemore.data import Vocab, read_items
from makemore.dataset import build_dataset
from makemore.models import ngram
from makemore.models.ngram import NGram, NGramConfig, estimate_discounts
from tests.conftest import REPO_NAMES, SHARED_NAMES, needs_shared_names


def fitted(items, block_size, smoothing="kn", discount=None):
    vocab = Vocab.from_items(items)
    model = NGram(NGramConfig(block_size, smoothing, discount), len(vocab))
    model.fit(build_dataset(items, vocab, block_size))
    return model, vocab


def contexts(items, vocab, block_size, n_random=500):
    """Every training context (seen) and random ones over the vocabulary (mostly unseen)."""
    seen, _, _ = build_dataset(items, vocab, block_size).tensors()
    unseen = torch.randint(len(vocab), (n_random, block_size), generator=torch.Generator().manual_seed(0))
    return torch.cat([seen, unseen])


@pytest.mark.parametrize("block_size", [1, 3, 5])
@pytest.mark.parametrize("smoothing", ["kn", 0.0, 0.5])
def test_probabilities_sum_to_one_for_seen_and_unseen_contexts(small_names, block_size, smoothing):
    items = read_items(small_names)
    model, vocab = fitted(items, block_size, smoothing)
    logits = model(contexts(items, vocab, block_size))
    assert logits.dtype == torch.float64
    assert torch.allclose(logits.exp().sum(1), torch.ones(len(logits), dtype=torch.float64), rtol=0, atol=1e-9)
    if smoothing != 0.0:
        assert torch.isfinite(logits).all()  # smoothed: every character possible after every context


def reference_kn(items, vocab, K, discount=None):
    """Interpolated modified Kneser-Ney written directly from Chen & Goodman with dictionaries: p(w, h)."""
    V = len(vocab)
    raw = {K + 1: Counter()}
    for item in items:
        ids = [0] * K + vocab.encode(item) + [0]
        for t in range(K, len(ids)):
            raw[K + 1][tuple(ids[t - K:t + 1])] += 1
    adjusted = {K + 1: raw[K + 1]}
    for n in range(K, 0, -1):
        raw[n], continuations = Counter(), Counter()
        for gram, c in raw[n + 1].items():
            raw[n][gram[1:]] += c
            continuations[gram[1:]] += 1
        only_padding = lambda gram: n >= 2 and not any(gram[:-1])  # noqa: E731
        adjusted[n] = {g: (raw[n][g] if only_padding(g) else continuations[g]) for g in raw[n]}
    D = {}
    for n, table in adjusted.items():
        if discount is not None:
            D[n] = discount
            continue
        n1, n2, n3, n4 = (sum(1 for c in table.values() if c == r) for r in (1, 2, 3, 4))
        if n == 1 and n1 == 0:  # characters all follow many others: no unigram is rare; the documented 0.5
            D[n] = (0.5, 0.5, 0.5)
            continue
        Y = n1 / (n1 + 2 * n2)
        D[n] = (1 - 2 * Y * n2 / n1, 2 - 3 * Y * n3 / n2, 3 - 4 * Y * n4 / n3)
    rows = {n: defaultdict(dict) for n in adjusted}
    for n, table in adjusted.items():
        for gram, c in table.items():
            rows[n][gram[:-1]][gram[-1]] = c

    def d(n, c):
        return D[n][min(c, 3) - 1]

    def p(w, h):
        n = len(h) + 1
        lower = 1 / V if n == 1 else p(w, h[1:])
        row = rows[n].get(h)
        if not row:
            return lower
        total = sum(row.values())
        c = row.get(w, 0)
        gamma = sum(d(n, x) for x in row.values()) / total
        return (c - d(n, c) if c else 0) / total + gamma * lower

    return p, D


@pytest.mark.parametrize("discount", [None, (0.5, 1.0, 1.5)])
def test_kneser_ney_equals_the_formula_written_with_dictionaries(discount):
    items = read_items(REPO_NAMES)[::10]
    K = 2
    model, vocab = fitted(items, K, "kn", discount)
    p, D = reference_kn(items, vocab, K, discount)
    for n in range(1, K + 2):
        assert all(0 < x <= r for r, x in zip((1, 2, 3), D[n]))  # the estimates needed no fallback
        assert model.discounts[n - 1].tolist() == pytest.approx(D[n], abs=1e-12)
    ctx = contexts(items, vocab, K, n_random=100)[::37]
    probs = model(ctx).exp()
    expected = torch.tensor([[p(w, tuple(h)) for w in range(len(vocab))] for h in ctx.tolist()], dtype=torch.float64)
    assert torch.allclose(probs, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", ["kn", 0.5])
def test_orders_kept_sparse_give_the_same_distributions(small_names, monkeypatch, smoothing):
    items = read_items(small_names)
    dense, vocab = fitted(items, 4, smoothing)
    monkeypatch.setattr(ngram, "DENSE_ROWS", 40 * len(vocab))  # room for the unigram and bigram rows only
    sparse, _ = fitted(items, 4, smoothing)
    assert sparse.dense_orders < 5 and dense.dense_orders == 5
    ctx = contexts(items, vocab, 4)
    assert torch.allclose(sparse(ctx), dense(ctx), rtol=0, atol=1e-12)


def test_estimated_discounts_follow_chen_and_goodman():
    counts = torch.tensor([1] * 10 + [2] * 4 + [3] * 2 + [4] * 1 + [9] * 3)
    Y = 10 / (10 + 2 * 4)
    assert estimate_discounts(counts) == pytest.approx([1 - 2 * Y * 4 / 10, 2 - 3 * Y * 2 / 4, 3 - 4 * Y * 1 / 2])


def test_bigram_nll_equals_the_closed_form(run, small_names):
    items = read_items(small_names)
    chars = sorted(set("".join(items)))
    V = len(chars) + 1
    k = 0.5
    N = Counter()
    for item in items:
        seq = ["."] + list(item) + ["."]
        N.update(zip(seq, seq[1:]))
    rowsum = Counter()
    for (a, _), c in N.items():
        rowsum[a] += c
    nll = -sum(c * math.log((c + k) / (rowsum[a] + k * V)) for (a, _), c in N.items()) / sum(N.values())
    run("train", "--model", "bigram", "--data", small_names, "--splits", "1,0,0", "--smoothing", k, "-q")
    result = json.loads(run("eval", "--split", "all", "--json").output)
    assert result["loss"] == pytest.approx(nll, rel=1e-12)


def test_kn_loss_is_finite_on_every_item_and_add_zero_gives_inf(run, small_names, tmp_path):
    strange = tmp_path / "strange.txt"
    strange.write_text("zzzzqx\nqqqq\naaaaaaaaaaaaaaaaaaaaaa\n", encoding="utf-8")
    run("train", "--model", "ngram", "--block-size", 4, "--data", small_names, "--name", "kn", "-q")
    trained = api.load("out/kn.safetensors")
    x, y, _ = build_dataset(read_items(strange), trained.vocab, 4).tensors()
    losses = -trained.model(x).gather(1, y[:, None])
    assert torch.isfinite(losses).all()
    run("train", "--model", "ngram", "--block-size", 2, "--smoothing", 0, "--data", small_names, "--name", "add0", "-q")
    result = json.loads(run("eval", "--checkpoint", "out/add0.safetensors", "--data", strange, "--split", "all", "--json").stdout)
    assert result["loss"] is None and result["perplexity"] is None  # infinite: JSON writes it as null


def test_checkpoint_round_trip_through_the_cli(run, small_names):
    out = run("train", "--model", "ngram", "--block-size", 3, "--discount", "0.6,1.1,1.5", "--data", small_names, "-q")
    assert "saved out/ngram.safetensors" in out.output
    trained = api.load("out/ngram.safetensors")
    assert trained.ckpt["config"] == dict(block_size=3, smoothing="kn", discount=[0.6, 1.1, 1.5])
    model = NGram(NGramConfig(3, "kn", (0.6, 1.1, 1.5)), len(trained.vocab))
    model.fit(build_dataset(trained.splits()["train"], trained.vocab, 3))
    ctx = contexts(read_items(small_names), trained.vocab, 3)
    assert torch.equal(trained.model(ctx), model(ctx))
    assert len(run("sample", "-n", 5, "--seed", 3, "--prefix", "ma").output.splitlines()) == 5


def test_block_4_checkpoint_is_small(run):
    run("train", "--model", "ngram", "--block-size", 4, "--data", REPO_NAMES, "-q")
    ckpt = checkpoint.load("out/ngram.safetensors")
    table_bytes = sum(t.numel() * t.element_size() for t in ckpt["state_dict"].values())
    assert table_bytes < 1.5e6  # sparse tables; a dense 27^5 table of float64 would be 115 MB


@pytest.mark.parametrize("args, message", [
    (["--smoothing", "-1"], "must be a finite number >= 0"),
    (["--smoothing", "kneser"], "neither a number"),
    (["--smoothing", "1", "--discount", "0.5"], "--discount applies only with --smoothing kn"),
    (["--smoothing", "kn", "--discount", "0.5,2.5,1"], "0 < D2 <= 2"),
    (["--model", "bigram", "--block-size", "2"], "--model ngram --block-size K"),
])
def test_bad_smoothing_options_are_usage_errors(run, small_names, args, message):
    model = [] if "--model" in args else ["--model", "ngram"]
    result = run("train", *model, "--data", small_names, *args, ok=False)
    assert result.exit_code == 2 and message in result.output


def test_a_block_size_too_long_for_this_vocabulary_is_what_the_data_cannot_do(run, small_names):
    result = run("train", "--model", "ngram", "--data", small_names, "--block-size", "13", ok=False)
    assert result.exit_code == 1 and "use at most 12" in result.output


@needs_shared_names()
@pytest.mark.parametrize("smoothing, loss", [(1, 2.4546), (0, 2.4540)])
def test_bigram_keeps_the_lecture_figures(run, smoothing, loss):
    run("train", "--model", "bigram", "--data", SHARED_NAMES, "--splits", "1,0,0", "--smoothing", smoothing, "-q")
    assert round(json.loads(run("eval", "--split", "all", "--json").output)["loss"], 4) == loss


@needs_shared_names()
@pytest.mark.parametrize("block_size, most", [(3, 2.06), (4, 1.99)])
def test_kneser_ney_reaches_the_issue_targets_on_dev(run, block_size, most):
    out = run("train", "--model", "ngram", "--block-size", block_size, "--data", SHARED_NAMES, "-q").output
    assert float(out.split("dev loss ")[1].split()[0].rstrip(";,")) <= most
