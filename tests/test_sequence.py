"""The models that read whole items (rnn, gru, transformer): rows of whole items hold exactly the targets of
the windows, every window is read from its item's start, one pass over a row is causal, and the models go
through every command like the others."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import invoke, ok
from makemore import checkpoint
from makemore.data import Vocab
from makemore.dataset import IGNORE, build_dataset
from makemore.models import get_model_class
from makemore.models.base import next_log_probs
from makemore.train import evaluate

SEQUENCE = ("rnn", "gru", "transformer")
SMALL = {"rnn": dict(n_embd=6, n_hidden=10), "gru": dict(n_embd=6, n_hidden=10, n_layer=2),
         "transformer": dict(n_embd=8, n_head=2, n_layer=2, dropout=0.1)}


def model(name: str, block_size: int, vocab_size: int, seed: int = 0, **given):
    cls = get_model_class(name)
    torch.manual_seed(seed)
    net = cls(cls.config_from(dict(SMALL[name], block_size=block_size, **given)), vocab_size).eval()
    with torch.no_grad():  # larger weights than the initialisation's, so that context matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net


def window_loss(net, ds) -> float:
    """The mean loss of a dataset of windows, each read on its own (next_logits)."""
    x, y, _ = ds.tensors()
    return -next_log_probs(net, x).gather(1, y[:, None]).mean().item()


def rows_targets(ds) -> list[int]:
    """The targets of a dataset of rows, in order, without the IGNOREd positions."""
    _, y, _ = ds.tensors()
    return y[y != IGNORE].tolist()


items_strategy = st.lists(st.text(alphabet="abcde", min_size=1, max_size=12), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(items=items_strategy, block_size=st.integers(1, 9))
def test_rows_hold_the_targets_of_the_windows_in_order(items, block_size):
    """Rows and windows of one item list predict the same characters and item ends, in the same order, and
    an item longer than block_size-1 characters gets a tail row per further target."""
    vocab = Vocab.from_items(items)
    windows = build_dataset(items, vocab, block_size)
    rows = build_dataset(items, vocab, block_size, whole_items=True)
    assert rows.n_targets == len(windows) == sum(len(i) + 1 for i in items)
    assert rows_targets(rows) == windows.tensors()[1].tolist()
    assert len(rows) == sum(1 + max(0, len(i) + 1 - block_size) for i in items)
    x, _, _ = rows.tensors()
    heads = x[:, 0] == 0  # a whole row starts at its item's boundary token ...
    assert int(heads.sum()) == len(items)
    assert not bool((x[~heads] == 0).any())  # ... and a tail row lies inside its item
    assert bool((rows.rows[heads] == 0).all()) and bool((rows.rows[~heads] == block_size - 1).all())


@pytest.mark.parametrize("name", SEQUENCE)
@pytest.mark.parametrize("block_size", [3, 16])
def test_rows_and_windows_give_the_same_loss(name, block_size):
    """Per-character accounting: one pass over rows (training, eval) and a pass per window (sampling,
    scoring, mixing) give the same loss, with items longer than the context too."""
    items = ["emma", "olivia", "ava", "x", "abcdefghijklmn", "bob"]
    vocab = Vocab.from_items(items)
    net = model(name, block_size, len(vocab))
    windows = build_dataset(items, vocab, block_size)
    rows = evaluate(net, build_dataset(items, vocab, block_size, whole_items=True))
    assert rows == pytest.approx(window_loss(net, windows), rel=1e-6)
    assert abs(rows - window_loss(model(name, block_size, len(vocab), seed=1), windows)) > 1e-3


@pytest.mark.parametrize("name", SEQUENCE)
def test_a_window_is_read_from_its_items_start(name):
    """Whatever lies before the last boundary token of a window (padding, another item) changes nothing;
    what lies after it does."""
    net = model(name, 8, 6)
    item = torch.tensor([[0, 3, 1, 4]])
    alone = net.next_logits(item)
    padded = net.next_logits(torch.tensor([[0, 0, 0, 0, 0, 3, 1, 4]]))
    after_other = net.next_logits(torch.tensor([[2, 5, 2, 0, 0, 3, 1, 4]]))
    torch.testing.assert_close(padded, alone)
    torch.testing.assert_close(after_other, alone)
    assert not torch.allclose(net.next_logits(torch.tensor([[0, 0, 0, 0, 0, 3, 2, 4]])), alone)
    torch.testing.assert_close(net(item)[:, -1], alone)


@pytest.mark.parametrize("name", SEQUENCE)
def test_one_pass_over_a_row_is_causal(name):
    """Position t of a row depends on the tokens up to t alone: later tokens change no earlier logits."""
    net = model(name, 10, 7)
    row = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 1, 2, 3]])
    changed = row.clone()
    changed[0, 6:] = torch.tensor([2, 2, 2, 2])
    a, b = net(row), net(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("alibi_scale", [None, 2.0, 0.5])
def test_alibi_lowers_each_heads_scores_by_its_slope_times_the_distance(alibi_scale):
    """Press et al.'s biases times alibi_scale (1 by default): head h of n looks back at slope
    scale x 2^(-8h/n); later positions are masked out."""
    cls = get_model_class("transformer")
    given = {} if alibi_scale is None else dict(alibi_scale=alibi_scale)
    net = cls(cls.config_from(dict(SMALL["transformer"], block_size=6, alibi=True, **given)), 7)
    n, scale = net.config.n_head, 1.0 if alibi_scale is None else alibi_scale
    bias = net.attention_bias(5, torch.device("cpu"))
    assert bias.shape == (n, 5, 5)
    for h in range(n):
        slope = scale * 2.0 ** (-8.0 * (h + 1) / n)
        for i in range(5):
            for j in range(5):
                expected = -slope * (i - j) if j <= i else float("-inf")
                assert bias[h, i, j].item() == pytest.approx(expected), (h, i, j)
    cls = get_model_class("transformer")
    plain = cls(cls.config_from(dict(SMALL["transformer"], block_size=6, alibi=False)), 7)
    assert plain.attention_bias(5, torch.device("cpu")) is None


def test_alibi_changes_what_attention_reads():
    """The same weights with and without the biases: the first position (nothing to weigh) agrees, later
    ones do not."""
    cls = get_model_class("transformer")
    on = cls(cls.config_from(dict(SMALL["transformer"], block_size=8, alibi=True)), 7).eval()
    off = cls(cls.config_from(dict(SMALL["transformer"], block_size=8, alibi=False)), 7).eval()
    off.load_state_dict(on.state_dict())
    row = torch.tensor([[0, 3, 1, 4, 1, 5]])
    a, b = on(row), off(row)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1:], b[:, 1:])


@pytest.mark.parametrize("learned_positions", [False, True])
def test_positions_come_only_from_alibi_unless_learned(learned_positions):
    """Without learned positions a one-block transformer with ALiBi off weighs the earlier characters as a
    set: their order does not change the last position's logits. Learned position embeddings (or ALiBi)
    make it change."""
    cls = get_model_class("transformer")
    values = dict(SMALL["transformer"], n_layer=1, block_size=6, learned_positions=learned_positions)
    torch.manual_seed(0)
    plain = cls(cls.config_from(dict(values, alibi=False)), 7).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    assert ("wpe.weight" in plain.state_dict()) == learned_positions
    row, swapped = torch.tensor([[0, 3, 1, 4, 2]]), torch.tensor([[0, 1, 4, 3, 2]])
    last = [plain(r)[0, -1] for r in (row, swapped)]
    assert torch.allclose(last[0], last[1], atol=1e-5) != learned_positions
    alibi = cls(cls.config_from(dict(values, alibi=True)), 7).eval()
    alibi.load_state_dict(plain.state_dict())
    last = [alibi(r)[0, -1] for r in (row, swapped)]
    assert not torch.allclose(last[0], last[1], atol=1e-5)


def test_tied_embeddings_give_the_logits_through_the_token_embeddings():
    """With tie_embeddings the output layer is the token embeddings' transpose plus a bias, one matrix
    trained for both; without, a separate output matrix."""
    cls = get_model_class("transformer")
    tied = model("transformer", 6, 7, tie_embeddings=True)
    assert "lm_head.weight" not in tied.state_dict() and "lm_bias" in tied.state_dict()
    row = torch.tensor([[0, 2, 4]])
    before = tied(row)
    with torch.no_grad():
        tied.wte.weight[5] += 1.0  # token 5 never read here: only its logit can change
    after = tied(row)
    assert not torch.allclose(before[..., 5], after[..., 5])
    torch.testing.assert_close(before[..., :5], after[..., :5])
    untied = cls(cls.config_from(dict(SMALL["transformer"], block_size=6, tie_embeddings=False)), 7)
    assert untied.state_dict()["lm_head.weight"].shape == (7, 8) and "lm_bias" not in untied.state_dict()


def test_block_size_defaults_to_the_longest_training_item(tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("ab\nabcdefghi\nabc\n" * 40, encoding="utf-8")
    ok("train", "--model", "transformer", "--data", data, "--n-embd", 8, "--n-head", 2, "--n-layer", 1,
       "--steps", 2, "--out", tmp_path, "-q")
    assert checkpoint.load(tmp_path / "transformer.safetensors")["config"]["block_size"] == 10
    ok("train", "--model", "gru", "--data", data, "--block-size", 4, "--steps", 2, "--out", tmp_path, "-q")
    assert checkpoint.load(tmp_path / "gru.safetensors")["config"]["block_size"] == 4


@pytest.mark.parametrize("name", SEQUENCE)
def test_trains_samples_evaluates_and_resumes(tmp_path, names, name):
    """Through the CLI: trained, sampled (items longer than its context too), evaluated with the loss the
    run reported, and resumed to the run it would have been."""
    args = ["--model", name, "--data", names, "--schedule", "constant", "--batch-size", 16, "-q"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in SMALL[name].items()]
    ok("train", *args, "--steps", 40, "--out", tmp_path / "whole")
    ok("train", *args, "--steps", 20, "--out", tmp_path / "halves")
    whole, halves = (tmp_path / part / f"{name}.safetensors" for part in ("whole", "halves"))
    ok("train", "--resume", "--checkpoint", halves, "--steps", 40, "--out", tmp_path / "resumed", "-q")
    a, b = (checkpoint.load(p)["resume"]["state_dict"] for p in (whole, tmp_path / "resumed" / f"{name}.safetensors"))
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    ckpt = checkpoint.load(whole)
    report = json.loads(ok("eval", "--checkpoint", whole, "--split", "dev", "--json").stdout)
    assert report["loss"] == pytest.approx(ckpt["metrics"][-1]["dev_loss"], rel=1e-6)
    samples = ok("sample", "--checkpoint", whole, "-n", 5, "--seed", 3).stdout.split()
    assert len(samples) == 5
    T = ckpt["config"]["block_size"]
    long = ok("sample", "--checkpoint", whole, "-n", 2, "--min-len", T + 3).stdout.split()
    assert len(long) == 2 and all(len(item) >= T + 3 for item in long)


def test_mixes_with_a_window_model(tmp_path, names):
    """A mixture of a transformer and an n-gram: dev loss no worse than the better of the two."""
    ok("train", "--model", "ngram", "--data", names, "--out", tmp_path, "-q")
    ok("train", "--model", "transformer", "--data", names, "--n-embd", 16, "--n-head", 2, "--n-layer", 1,
       "--steps", 150, "--out", tmp_path, "-q")
    losses = [json.loads(ok("eval", "--checkpoint", tmp_path / f"{m}.safetensors", "--json").stdout)["loss"]
              for m in ("ngram", "transformer")]
    ok("mix", tmp_path / "ngram.safetensors", tmp_path / "transformer.safetensors", "--out", tmp_path, "--name", "mix")
    mixed = json.loads(ok("eval", "--checkpoint", tmp_path / "mix.safetensors", "--json").stdout)["loss"]
    assert mixed <= min(losses) + 1e-9


def test_width_that_heads_cannot_split_is_a_usage_error(tmp_path, names):
    result = invoke("train", "--model", "transformer", "--data", names, "--n-embd", 10, "--n-head", 4,
                    "--out", tmp_path)
    assert result.exit_code == 2 and "--n-embd 10 is not a multiple of --n-head 4" in result.output
    assert not (tmp_path / "transformer.safetensors").exists()
