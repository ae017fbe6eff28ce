import dataclasses
import functools
import math

import pytest
import torch

from makemore.errors import OptionError
import torch.nn.functional as F

from makemore import api
from makemore.models.mlp import MLP, MLPConfig
from makemore.train import TrainConfig, TrainStep, make_optimizer


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
    rule = MLP.default_steps
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
    assert result.step == ckpt["train"]["steps"] == MLP.default_steps(n, 256)
    assert ckpt["train"]["weight_decay"] == MLP.default_weight_decay(n) > MLP.train_defaults["weight_decay"]
    given = api.train("mlp", small_names, tmp_path / "out", "given", train_options={"steps": 7, "weight_decay": 0.01},
                      progress=False)
    ckpt = api.load(given.path).ckpt
    assert given.step == ckpt["train"]["steps"] == 7 and ckpt["train"]["weight_decay"] == 0.01


def test_default_weight_decay_grows_as_the_data_shrinks():
    rule, base = MLP.default_weight_decay, MLP.train_defaults["weight_decay"]
    ref = MLP.REFERENCE_EXAMPLES
    assert rule(ref) == rule(10 * ref) == base  # the tuning data's size and more: the tuned value
    assert rule(ref / 4) == pytest.approx(2 * base)  # a quarter of the data: twice the decay
    assert base < rule(ref // 2) < rule(ref // 4) < rule(ref // 100) == rule(1) == MLP.MAX_DECAY_FACTOR * base


@pytest.mark.parametrize("optimizer,wd", [("sgd", 0.0), ("sgd", 0.1), ("adamw", 0.0), ("adamw", 0.1)])
def test_train_step_equals_optimizer_step(optimizer, wd):
    """The loop's step (by hand for the MLP, with the optimizer or applying SGD itself) lands where
    autograd and optimizer.step() land, and leaves the optimizer the lr and state they leave."""
    torch.manual_seed(1)
    a = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8, direct=True), 9)
    b = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8, direct=True), 9)
    b.load_state_dict(a.state_dict())
    config = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=wd)
    opt_a, opt_b = make_optimizer(a, config), make_optimizer(b, config)
    batches = [(torch.randint(9, (16, 3)), torch.randint(9, (16,)), 0.05 / (i + 1)) for i in range(5)]
    losses = []
    for idx, y, lr in batches:
        for p in a.parameters():
            p.grad = None
        loss = F.cross_entropy(a(idx), y)
        loss.backward()
        for g in opt_a.param_groups:
            g["lr"] = lr
        opt_a.step()
        losses.append(loss.detach())
    with TrainStep(b, opt_b, wd) as step:
        assert step.flat and step.applies_update == (optimizer == "sgd")
        for (idx, y, lr), loss in zip(batches, losses):
            step(idx.view(-1), y.view(-1, 1), lr)
            torch.testing.assert_close(step.take_loss(), loss)
    assert torch.is_grad_enabled() and all(p.grad is None for p in b.parameters())
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert opt_b.state_dict()["param_groups"][0]["lr"] == opt_a.state_dict()["param_groups"][0]["lr"]
    if optimizer == "adamw":
        assert all(opt_b.state[p]["step"].item() == 5 for p in b.parameters())


def _moved_mlp(direct, init, seed=2):
    torch.manual_seed(seed)
    model = MLP(MLPConfig(block_size=5, n_embd=3, n_hidden=13, init=init, direct=direct), vocab_size=9)
    with torch.no_grad():  # move every parameter off its initial value, Wd's zeros included
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    idx, y = torch.randint(9, (17, 5)), torch.randint(9, (17,))
    idx[0] = idx[1]  # a repeated context: its embedding gradients must add up
    return model, idx, y


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("init", ["scaled", "randn"])
def test_gradients_by_hand_equal_autograd(direct, init):
    model, idx, y = _moved_mlp(direct, init)
    loss = F.cross_entropy(model(idx), y)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step = model.step_by_hand(sgd=False)
    for _ in range(2):  # the second call reuses the buffers the first one made
        with torch.no_grad():
            probs = step(idx.view(-1), y.view(-1, 1), 0.5, 0.1)  # lr and weight decay are the optimizer's business here
        assert probs.shape == (17, 1)
        torch.testing.assert_close(-probs.log().mean(), loss.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, expected[name], msg=name)
            assert torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_sgd_by_hand_equals_torch_sgd(direct, weight_decay):
    a, idx, y = _moved_mlp(direct, "scaled")
    b, _, _ = _moved_mlp(direct, "scaled")
    opt = torch.optim.SGD(a.parameters(), lr=0.2, weight_decay=weight_decay)
    step = b.step_by_hand(sgd=True)
    for lr in (0.2, 0.05):  # two steps: the second sees the first one's updated weights
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = F.cross_entropy(a(idx), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            probs = step(idx.view(-1), y.view(-1, 1), lr, weight_decay)
        torch.testing.assert_close(-probs.log().mean(), loss.detach())
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=name)
            assert pb.grad is None, name


@pytest.mark.parametrize("optimizer,weight_decay", [("adamw", 0.1), ("sgd", 0.0), ("sgd", 0.1)])
def test_training_by_hand_follows_the_autograd_path(small_names, optimizer, weight_decay):
    """Ten steps of the loop with steps by hand land where ten steps through autograd do."""
    from makemore.data import Vocab, read_items
    from makemore.dataset import build_dataset
    from makemore.train import train_loop

    items = read_items(small_names)
    data = build_dataset(items, Vocab.from_items(items), 3)
    config = TrainConfig(steps=10, batch_size=8, lr=0.05, optimizer=optimizer, weight_decay=weight_decay)
    models, states, made, steps = [], [], [], []

    def counted(make, sgd):
        made.append(sgd)
        step = make(sgd)
        return lambda *args: steps.append(1) or step(*args)

    for by_hand in (True, False):
        torch.manual_seed(0)
        model = MLP(MLPConfig(block_size=3, n_embd=4, n_hidden=8), 27)
        if by_hand:
            model.step_by_hand = functools.partial(counted, model.step_by_hand)
        else:
            model.step_by_hand = lambda sgd: None  # the hook's default: the loop then takes the autograd path
        states.append(train_loop(model, data, None, config, progress=False))
        models.append(model)
    assert made == [optimizer == "sgd"] and len(steps) == 10  # plain SGD is applied by the step itself
    assert all(p.grad is None for p in models[0].parameters())  # the buffers made for the loop are dropped
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    train_losses = [[r["train_loss"] for r in s.metrics] for s in states]
    assert len(train_losses[0]) == 10
    torch.testing.assert_close(train_losses[0], train_losses[1], rtol=1e-5, atol=1e-5)
    assert states[0].optimizer["param_groups"][0]["lr"] == states[1].optimizer["param_groups"][0]["lr"]
    assert torch.is_grad_enabled()


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
    x, y = data.batch(torch.arange(64))
    with torch.no_grad():
        model.W2.mul_(300)
        assert (torch.softmax(model(x), 1).gather(1, y.view(-1, 1)) == 0).any()
    state = train_loop(model, data, None, TrainConfig(steps=3, batch_size=64, lr=0.0, optimizer="sgd"), progress=False)
    assert all(math.isfinite(r["train_loss"]) and r["train_loss"] > 50 for r in state.metrics)


def test_the_sigmoid_form_of_tanh_matches_tanh():
    from makemore.models.mlp_step import tanh as _tanh

    z = torch.cat([torch.linspace(-30, 30, 10001), torch.tensor([0.0, 1e-30, -1e-30, 100.0, -100.0])])
    with torch.no_grad():
        torch.testing.assert_close(_tanh(z.clone()), torch.tanh(z), rtol=0, atol=3e-7)
    w = z.clone().requires_grad_()
    assert _tanh(w * 1).grad_fn.name() == "TanhBackward0"  # autograd keeps torch.tanh


def test_momentum_is_left_to_the_optimizer():
    model = MLP(MLPConfig(), 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with TrainStep(model, opt, 0.0) as step:
        assert step.flat and not step.applies_update  # the step by hand writes gradients; SGD applies them


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
