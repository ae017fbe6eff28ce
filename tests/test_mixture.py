import json

import pytest
import torch

from makemore import api, checkpoint
from makemore.data import read_items
from makemore.dataset import build_dataset
from makemore.mixing import em


@pytest.fixture
def two_models(run, small_names):
    """A Kneser-Ney 4-gram and a briefly trained MLP of the same data, in out/."""
    run("train", "--model", "ngram", "--block-size", 4, "--data", small_names, "-q")
    run("train", "--model", "mlp", "--steps", 60, "--data", small_names, "-q")
    return small_names


def contexts(trained, path, n_random=300):
    seen, _ = build_dataset(read_items(path), trained.vocab, trained.block_size).tensors()
    unseen = torch.randint(len(trained.vocab), (n_random, trained.block_size), generator=torch.Generator().manual_seed(0))
    return torch.cat([seen, unseen])


def test_mixture_probabilities_sum_to_one(run, two_models):
    out = run("mix", "out/ngram.safetensors", "out/mlp.safetensors").output
    assert "mixture dev loss" in out and "saved out/mixture.safetensors" in out
    mixture = api.load("out/mixture.safetensors")
    probs = mixture.model(contexts(mixture, two_models)).exp()
    assert torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=torch.float64), rtol=0, atol=1e-9)


def test_weights_one_and_zero_give_the_first_component_exactly(run, two_models):
    run("mix", "out/mlp.safetensors", "out/ngram.safetensors", "--weights", "1,0")
    mixture, mlp = api.load("out/mixture.safetensors"), api.load("out/mlp.safetensors")
    ctx = contexts(mixture, two_models)
    expected = torch.log_softmax(mlp.model(ctx[:, -mlp.block_size:]).double(), -1)
    assert torch.equal(mixture.model(ctx), expected)


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


def test_a_mixture_is_a_model_like_any_other(run, two_models):
    out = run("mix", "out/ngram.safetensors", "out/mlp.safetensors").output
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
])
def test_bad_mix_requests_are_usage_errors(run, small_names, args, message):
    run("train", "--model", "ngram", "--data", small_names, "-q")
    result = run("mix", *args, ok=False)
    assert result.exit_code == 2 and message in result.output
