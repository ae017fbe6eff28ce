import dataclasses
import math

import pytest
import torch

from makemore.errors import OptionError
import torch.nn.functional as F

from makemore import api
from makemore.models.mlp import MLP, MLPConfig
from makemore.train import TrainConfig


def reference_logits(model, idx):
    """The MLP written out as the lecture writes it, with one-hot rows instead of a lookup."""
    x = (F.one_hot(idx, model.vocab_size).double() @ model.C.double()).flatten(1)
    pre = x @ model.W1.double() + model.b1.double()
    logits = torch.tanh(pre) @ model.W2.double() + model.b2.double()
    if model.config.direct:
        logits = logits + x @ model.Wd.double()
    return logits


@pytest.mark.parametrize("direct", [False, True])
def test_forward_matches_the_written_out_model(direct):
    torch.manual_seed(0)
    model = MLP(MLPConfig(block_size=4, n_embd=5, n_hidden=7, direct=direct), vocab_size=11)
    if direct:
        torch.nn.init.normal_(model.Wd)  # it starts at zero; make the path visible
    idx = torch.randint(11, (6, 4))
    logits = model(idx)
    assert logits.shape == (6, 11)
    torch.testing.assert_close(logits.double(), reference_logits(model, idx), rtol=1e-5, atol=1e-5)


def test_direct_connections_start_as_no_path():
    torch.manual_seed(3)
    plain = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8), 9)
    torch.manual_seed(3)
    direct = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8, direct=True), 9)
    idx = torch.randint(9, (5, 3))
    assert torch.equal(plain(idx), direct(idx))
    assert direct.Wd.shape == (12, 9)
    F.cross_entropy(direct(idx), torch.randint(9, (5,))).backward()
    assert direct.Wd.grad.abs().sum() > 0  # the path learns from the first step


def test_unknown_init_is_refused():
    with pytest.raises(OptionError, match="--init: 'xavier' is not one of scaled, randn"):
        MLP.config_from(dict(init="xavier"))


def test_default_steps_follow_the_data_size():
    def rule(n, batch_size):
        return MLP.train_defaults_for(n, batch_size)["steps"]

    B = MLP.train_defaults["batch_size"]
    small, mid, large = rule(20_000, B), rule(180_000, B), rule(10_000_000, B)
    assert small < mid <= large
    assert rule(10, B) == MLP.MIN_STEPS  # a tiny file still gets enough steps to learn
    assert large == MLP.MAX_STEPS  # a huge one does not train for hours
    n = 200_000
    assert rule(n, B) == round(MLP.EPOCHS * n / B)  # in between: a fixed number of passes over the data
    assert rule(n, 2 * B) == round(MLP.EPOCHS * n / (2 * B))


def test_train_without_steps_uses_the_rule(small_names, tmp_path, monkeypatch):
    monkeypatch.setattr(MLP, "EPOCHS", 0.25)  # a short run: the rule, not its constants, is under test
    monkeypatch.setattr(MLP, "MIN_STEPS", 3)
    result = api.train("mlp", small_names, tmp_path / "out", model_options={"n_hidden": 16},
                       train_options={"batch_size": 256}, progress=False)
    ckpt = api.load(result.path).ckpt
    from makemore.data import Vocab, read_items, split_items
    from makemore.dataset import build_dataset

    items = read_items(small_names)
    n = len(build_dataset(split_items(items)["train"], Vocab.from_items(items), ckpt["config"]["block_size"]))
    rule = MLP.train_defaults_for(n, 256)
    assert result.step == ckpt["train"]["steps"] == rule["steps"]
    assert ckpt["train"]["weight_decay"] == rule["weight_decay"] > MLP.train_defaults["weight_decay"]
    given = api.train("mlp", small_names, tmp_path / "out", "given", train_options={"steps": 7, "weight_decay": 0.01},
                      progress=False)
    ckpt = api.load(given.path).ckpt
    assert given.step == ckpt["train"]["steps"] == 7 and ckpt["train"]["weight_decay"] == 0.01


def test_default_weight_decay_grows_as_the_data_shrinks():
    def rule(n):
        return MLP.train_defaults_for(n, 128)["weight_decay"]

    base = MLP.train_defaults["weight_decay"]
    ref = MLP.REFERENCE_EXAMPLES
    assert rule(ref) == rule(10 * ref) == base  # the tuning data's size and more: the tuned value
    assert rule(ref / 4) == pytest.approx(2 * base)  # a quarter of the data: twice the decay
    assert base < rule(ref // 2) < rule(ref // 4) < rule(ref // 100) == rule(1) == MLP.MAX_DECAY_FACTOR * base


def test_an_underflowed_target_probability_is_not_a_divergence(small_names):
    """Logits hundreds of nats apart (the lecture's randn init can start near that) make some target
    probabilities 0 in float32; the loss the loop logs stays finite and the run is not called diverged."""
    from makemore.data import Vocab, read_items
    from makemore.dataset import build_dataset
    from makemore.train import train_loop

    items = read_items(small_names)
    data = build_dataset(items, Vocab.from_items(items), 3)
    torch.manual_seed(0)
    model = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8, init="randn", direct=False), 27)
    x, y, _ = data.batch(torch.arange(64))
    with torch.no_grad():
        model.W2.mul_(300)
        assert (torch.softmax(model(x), 1).gather(1, y.view(-1, 1)) == 0).any()
    state = train_loop(model, data, None, TrainConfig(steps=3, batch_size=64, lr=0.0, optimizer="sgd"), progress=False)
    assert all(math.isfinite(r["train_loss"]) and r["train_loss"] > 50 for r in state.metrics)


def test_lecture_model_is_reachable_with_flags():
    config = api.model_config("mlp", dict(block_size=3, n_embd=10, n_hidden=200, init="randn", direct=False))
    assert dataclasses.asdict(config) == dict(block_size=3, n_embd=10, n_hidden=200, init="randn", direct=False)
    model = MLP(config, 27)
    assert sum(p.numel() for p in model.parameters()) == 11897  # the lecture's parameter count


def test_the_lecture_seed_gives_the_lectures_initial_weights(small_names):
    """With --seed 2147483647 train starts from the lecture's own weights: its generator, seeded so, draws
    C, W1, b1, W2, b2 in this order and these shapes."""
    from makemore.data import Vocab, read_items

    items = read_items(small_names)
    vocab = Vocab.from_items(items)
    config = api.model_config("mlp", dict(block_size=3, n_embd=10, n_hidden=200, init="randn", direct=False))
    model, _, _ = api.build_run(MLP, config, TrainConfig(seed=2147483647), vocab, dict(train=items, dev=[]),
                                torch.device("cpu"))
    g = torch.Generator().manual_seed(2147483647)
    lecture = [torch.randn(shape, generator=g) for shape in ((27, 10), (30, 200), (200,), (200, 27), (27,))]
    assert len(vocab) == 27
    for mine, theirs in zip((model.C, model.W1, model.b1, model.W2, model.b2), lecture):
        assert torch.equal(mine.detach(), theirs)


def test_lecture_flags_reach_the_checkpoint(run, small_names):
    run("train", "--model", "mlp", "--data", small_names, "-q", "--block-size", 3, "--n-embd", 10, "--n-hidden", 200,
        "--init", "randn", "--no-direct", "--optimizer", "sgd", "--batch-size", 32, "--lr", 0.1, "--schedule", "step",
        "--steps", 4)
    ckpt = api.load(out="out").ckpt
    assert ckpt["config"] == dict(block_size=3, n_embd=10, n_hidden=200, init="randn", direct=False)
    assert {k: ckpt["train"][k] for k in ("optimizer", "batch_size", "lr", "schedule", "steps")} == dict(
        optimizer="sgd", batch_size=32, lr=0.1, schedule="step", steps=4)
