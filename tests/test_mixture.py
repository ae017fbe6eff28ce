import json

import pytest
import torch

from makemore import api, checkpoint
from makemore.data import read_items
from makemore.dataset import build_dataset
from makemore.errors import OptionError
from makemore.mixing import LOG_FLOOR, em, fit_log_linear, log_linear_loss, log_probs
from makemore.models.mixture import Mixture


@pytest.fixture
def two_models(run, small_names):
    """A Kneser-Ney 4-gram and a briefly trained MLP of the same data, in out/."""
    run("train", "--model", "ngram", "--block-size", 4, "--data", small_names, "-q")
    run("train", "--model", "mlp", "--steps", 60, "--data", small_names, "-q")
    return small_names


def contexts(trained, path, n_random=300):
    seen, _, _ = build_dataset(read_items(path), trained.vocab, trained.block_size).tensors()
    unseen = torch.randint(len(trained.vocab), (n_random, trained.block_size), generator=torch.Generator().manual_seed(0))
    return torch.cat([seen, unseen])


def test_mixture_probabilities_sum_to_one(run, two_models):
    out = run("mix", "out/ngram.safetensors", "out/mlp.safetensors").output
    assert "mixture dev loss" in out and "saved out/mixture.safetensors" in out
    mixture = api.load("out/mixture.safetensors")
    probs = mixture.model(contexts(mixture, two_models)).exp()
    assert torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "log-linear"])
def test_weights_one_and_zero_give_the_first_component(run, two_models, kind):
    run("mix", "out/mlp.safetensors", "out/ngram.safetensors", "--weights", "1,0", "--kind", kind)
    mixture, mlp = api.load("out/mixture.safetensors"), api.load("out/mlp.safetensors")
    assert mixture.model.config.kind == kind
    ctx = contexts(mixture, two_models)
    expected = torch.log_softmax(mlp.model(ctx[:, -mlp.block_size:]).double(), -1)
    if kind == "linear":  # log 1 + log p: exact
        assert torch.equal(mixture.model(ctx), expected)
    else:  # log p normalised again: equal to rounding
        assert torch.allclose(mixture.model(ctx), expected, rtol=0, atol=1e-12)


def test_log_linear_weights_are_not_normalised_and_sharpen(run, two_models):
    """Weights 2,0 square the first component's probabilities and renormalise: a sharper distribution."""
    run("mix", "out/mlp.safetensors", "out/ngram.safetensors", "--weights", "2,0", "--name", "sharp")
    mixture, mlp = api.load("out/sharp.safetensors"), api.load("out/mlp.safetensors")
    assert mixture.model.config.weights == (2.0, 0.0)
    ctx = contexts(mixture, two_models)
    expected = torch.log_softmax(2 * torch.log_softmax(mlp.model(ctx[:, -mlp.block_size:]).double(), -1), -1)
    assert torch.allclose(mixture.model(ctx), expected, rtol=0, atol=1e-12)


def random_log_probs(n, m, v, seed):
    g = torch.Generator().manual_seed(seed)
    L = torch.log_softmax(3 * torch.randn(n, m, v, generator=g, dtype=torch.float64), -1)
    return L, torch.randint(v, (n,), generator=g)


@pytest.mark.parametrize("seed", range(4))
def test_log_linear_fit_reaches_the_optimum(seed):
    """The fitted weights satisfy the optimality conditions of the convex problem: no small move of any
    weight (kept >= 0) lowers the loss, and the loss is below the geometric mean's and every component's."""
    L, y = random_log_probs(400, 3 + seed, 7, seed)
    if seed == 3:  # a misleading component (the target least likely) must get weight 0
        L[:, 0] = torch.log_softmax(-5.0 * torch.nn.functional.one_hot(y, 7).double(), -1)
    w, losses = fit_log_linear(L, y)
    assert (w >= 0).all() and all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] == pytest.approx(log_linear_loss(L, y, w), abs=1e-12)
    for i in range(len(w)):
        for delta in (1e-3, -1e-3):
            moved = w.clone()
            moved[i] = (moved[i] + delta).clamp(min=0)
            assert log_linear_loss(L, y, moved) >= losses[-1] - 1e-10
        single = torch.zeros_like(w)
        single[i] = 1
        assert losses[-1] <= log_linear_loss(L, y, single)
    if seed == 3:
        assert w[0] == 0


def test_a_component_that_rules_out_a_character_does_not_make_nan():
    """A component giving probability 0 (log -inf) is floored, in the fit and in the mixture."""
    L, y = random_log_probs(200, 2, 5, 0)
    L[:, 1, 0] = float("-inf")
    w, losses = fit_log_linear(L.clamp_min(LOG_FLOOR), y)
    assert torch.isfinite(w).all() and all(map(lambda x: x == x, losses))


def test_components_worse_than_uniform_get_weight_zero():
    """Log-probabilities unrelated to the targets: the fit may choose the uniform distribution (all weights 0),
    which is a valid mixture."""
    L, y = random_log_probs(400, 5, 7, 2)
    w, losses = fit_log_linear(L, y)
    assert losses[-1] <= log_linear_loss(L, y, torch.zeros(5, dtype=torch.float64)) + 1e-12
    part = {"model": "bigram", "config": {}}
    config = Mixture.config_from({"components": [part, part], "weights": [0, 0], "kind": "log-linear"})
    probs = Mixture(config, 7)(torch.zeros(3, 1, dtype=torch.long)).exp()
    assert torch.allclose(probs, torch.full((3, 7), 1 / 7, dtype=torch.float64))


def test_mixture_configs_are_checked():
    part = {"model": "bigram", "config": {}}
    old = Mixture.config_from({"components": [part, part], "weights": [0.5, 0.5]})
    assert old.kind == "linear"  # a checkpoint from before log-linear mixtures
    assert Mixture.config_from({"components": [part, part], "weights": [3, 0], "kind": "log-linear"}).weights == (3, 0)
    for bad in ({"weights": [0.5, 0.6], "kind": "linear"}, {"weights": [-1, 2], "kind": "log-linear"},
                {"weights": [float("nan"), 1], "kind": "log-linear"}, {"weights": [1e9, 1], "kind": "log-linear"},
                {"weights": [0.5, 0.5], "kind": "geometric"}, {"weights": [0.5, 0.5], "kind": None},
                {"weights": [0.5, 0.5], "kind": "linear", "extra": 1}):
        with pytest.raises(OptionError):
            Mixture.config_from({"components": [part, part], **bad})


def test_em_never_increases_the_dev_loss(run, two_models):
    ngram, mlp = api.load("out/ngram.safetensors"), api.load("out/mlp.safetensors")
    dev = build_dataset(ngram.splits()["dev"], ngram.vocab, max(ngram.block_size, mlp.block_size))
    from makemore.mixing import target_probs

    P = target_probs([ngram.model, mlp.model], dev)
    random_P = torch.rand(500, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for probs in (P, random_P):
        weights, losses = em(probs)
        assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
        assert losses[-1] <= min(-probs[:, i].log().mean().item() for i in range(probs.shape[1])) + 1e-9
        assert weights.sum().item() == pytest.approx(1, abs=1e-12) and (weights >= 0).all()


@pytest.mark.parametrize("kind", ["linear", "log-linear"])
def test_a_mixture_is_a_model_like_any_other(run, two_models, kind):
    out = run("mix", "out/ngram.safetensors", "out/mlp.safetensors", "--kind", kind).output
    assert f"({kind}, {'EM' if kind == 'linear' else 'Newton'}, " in out
    em_loss = float(out.split("mixture dev loss ")[1].split()[0])
    assert json.loads(run("eval", "--json").stdout)["loss"] == pytest.approx(em_loss, abs=1e-4)
    assert json.loads(run("eval", "--split", "test", "--json").stdout)["model"] == "mixture"
    assert len(run("sample", "-n", 4, "--seed", 2, "--top-k", 5, "--prefix", "a").output.splitlines()) == 4
    ckpt = checkpoint.load("out/mixture.safetensors")
    assert ckpt["model"] == "mixture" and any(k.startswith("components.1.") for k in ckpt["state_dict"])
    # a mixture of a mixture and a component
    run("mix", "out/mixture.safetensors", "out/ngram.safetensors", "--name", "twice")
    assert json.loads(run("eval", "--checkpoint", "out/twice.safetensors", "--json").stdout)["loss"] < 4


def test_mixing_checkpoints_of_different_data_is_refused(run, small_names, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(read_items(small_names)[::2]) + "\n", encoding="utf-8")
    run("train", "--model", "ngram", "--data", small_names, "-q")
    run("train", "--model", "ngram", "--data", other, "--name", "other", "-q")
    run("train", "--model", "ngram", "--data", small_names, "--splits", "0.7,0.2,0.1", "--name", "split", "-q")
    result = run("mix", "out/ngram.safetensors", "out/other.safetensors", ok=False)
    assert result.exit_code == 1 and "different data file" in result.output
    result = run("mix", "out/ngram.safetensors", "out/split.safetensors", ok=False)
    assert result.exit_code == 1 and "different split" in result.output


@pytest.mark.parametrize("args, message", [
    (["out/ngram.safetensors"], "at least two checkpoints"),
    (["out/ngram.safetensors", "out/ngram.safetensors", "--weights", "1,2,3"], "3 weights for 2 checkpoints"),
    (["out/ngram.safetensors", "out/ngram.safetensors", "--weights", "0,0"], "not all 0"),
    (["out/ngram.safetensors", "out/ngram.safetensors", "--weights", "1,2000"], "at most 1000"),
    (["out/ngram.safetensors", "out/ngram.safetensors", "--kind", "geometric"], "'geometric' is not one of"),
])
def test_bad_mix_requests_are_usage_errors(run, small_names, args, message):
    run("train", "--model", "ngram", "--data", small_names, "-q")
    result = run("mix", *args, ok=False)
    assert result.exit_code == 2 and message in result.output


def test_a_large_dev_split_is_fitted_on_a_bounded_subset(run, two_models):
    """log_probs holds at most limit numbers: a seeded subset of the examples, each exactly as in the whole."""
    ngram, mlp = api.load("out/ngram.safetensors"), api.load("out/mlp.safetensors")
    models, V = [ngram.model, mlp.model], len(ngram.vocab)
    dev = build_dataset(ngram.splits()["dev"], ngram.vocab, max(ngram.block_size, mlp.block_size))
    whole, y_whole = log_probs(models, dev, V)
    assert whole.shape == (len(dev), 2, V) and (whole >= LOG_FLOOR).all()
    part, y_part = log_probs(models, dev, V, limit=2 * V * 25)
    assert part.shape == (25, 2, V) and len(y_part) == 25
    again, _ = log_probs(models, dev, V, limit=2 * V * 25)
    assert torch.equal(part, again)  # the same subset every time
    for row, target in zip(part, y_part):
        same = (whole == row).flatten(1).all(1) & (y_whole == target)
        assert same.any()
