"""The maths of the core, each checked against an independent computation written here the lecture's way."""
import copy
import math
import random
from collections import Counter

import pytest
import torch

from makemore import api, checkpoint, dataset
from makemore.data import Vocab, read_items, split_items
from makemore.dataset import build_dataset
from makemore.errors import OptionError
from makemore.models import MODEL_NAMES, get_model_class
from makemore.models.bigram import Bigram, BigramConfig
from makemore.train import TrainConfig, TrainStep, evaluate, make_optimizer, train_loop


def lecture_examples(words, block_size, stoi):
    """The lecture's dataset loop: a sliding window of block_size ids, '.'-padded, over each word + '.'."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return X, Y


def test_emma_gives_the_lecture_examples():
    vocab = Vocab.from_items(["emma"])
    assert vocab.chars == ".aem"
    x, y, _ = build_dataset(["emma"], vocab, block_size=3).tensors()
    shown = [(vocab.decode(row), vocab.decode([t])) for row, t in zip(x.tolist(), y.tolist())]
    assert shown == [("...", "e"), ("..e", "m"), (".em", "m"), ("emm", "a"), ("mma", ".")]


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_builder_matches_the_lecture_loop(small_names, block_size):
    words = read_items(small_names)
    vocab = Vocab.from_items(words)
    x, y, _ = build_dataset(words, vocab, block_size).tensors()
    X, Y = lecture_examples(words, block_size, {c: i for i, c in enumerate(vocab.chars)})
    assert x.tolist() == X and y.tolist() == Y


def test_builder_in_chunks_matches_the_lecture_loop(small_names, monkeypatch):
    monkeypatch.setattr(dataset, "BUILD_CHUNK", 7)  # many chunks, the last one short
    words = read_items(small_names)[:100]
    vocab = Vocab.from_items(words)
    x, y, _ = build_dataset(words, vocab, 3).tensors()
    X, Y = lecture_examples(words, 3, {c: i for i, c in enumerate(vocab.chars)})
    assert x.tolist() == X and y.tolist() == Y


@pytest.mark.parametrize("words", [["ёлка", "мир", "жук"], ["ann", "bo"]])
def test_builder_handles_non_ascii_vocabularies(words):
    # the second case: a split with only ASCII items, from data that also has other characters
    vocab = Vocab.from_items(["ёлка", "мир", "жук", "ann", "bo"])
    x, y, _ = build_dataset(words, vocab, 2).tensors()
    stoi = {c: i for i, c in enumerate(vocab.chars)}
    X, Y = lecture_examples(words, 2, stoi)
    assert x.tolist() == X and y.tolist() == Y


def test_split_is_the_lectures_shuffle_and_cut():
    words = [f"w{i}" for i in range(1013)]
    saved = random.getstate()
    try:
        expected = list(words)
        random.seed(42)
        random.shuffle(expected)
    finally:
        random.setstate(saved)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    parts = split_items(words)
    assert parts == {"train": expected[:n1], "dev": expected[n1:n2], "test": expected[n2:]}
    assert split_items(words) == parts  # deterministic
    assert split_items(words, seed=7)["train"] != parts["train"]


def closed_form_bigram_nll(words, smoothing):
    """Mean NLL of the add-k bigram over every bigram of the words, in plain Python floats."""
    chars = sorted(set("".join(words)))
    tokens = ["."] + chars
    bigrams = Counter()
    for w in words:
        chs = ["."] + list(w) + ["."]
        bigrams.update(zip(chs, chs[1:]))
    rows = Counter()
    for (a, _), n in bigrams.items():
        rows[a] += n
    total = sum(bigrams.values())
    nll = sum(-n * math.log((n + smoothing) / (rows[a] + smoothing * len(tokens))) for (a, b), n in bigrams.items())
    return nll / total


@pytest.mark.parametrize("smoothing", [0.0, 1.0, 0.3])
def test_counting_bigram_nll_is_the_closed_form(small_names, smoothing):
    words = read_items(small_names)
    vocab = Vocab.from_items(words)
    ds = build_dataset(words, vocab, 1)
    model = Bigram(BigramConfig(smoothing=smoothing), len(vocab))
    model.fit(ds)
    assert evaluate(model, ds) == pytest.approx(closed_form_bigram_nll(words, smoothing), rel=1e-12, abs=1e-12)


def test_counting_bigram_rows_are_distributions_even_for_unseen_contexts():
    # 'z' only ever ends an item, so with smoothing 0 its row has no counts at all
    words = ["abz", "ba", "zab"]
    vocab = Vocab.from_items(words)
    model = Bigram(BigramConfig(smoothing=0.0), len(vocab))
    model.fit(build_dataset(["ab", "ba", "ab"], vocab, 1))
    probs = model(torch.arange(len(vocab))[:, None]).exp()
    assert torch.allclose(probs.sum(1), torch.ones(len(vocab), dtype=probs.dtype), atol=1e-12)
    z = vocab.stoi["z"]
    assert torch.allclose(probs[z], torch.full((len(vocab),), 1 / len(vocab), dtype=probs.dtype))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_model_gives_distributions(model_name):
    cls = get_model_class(model_name)
    model = cls(cls.config_for_data(cls.Config(), {}, ["abcdefg"], 11), 11)
    x = torch.randint(11, (5, model.block_size))
    probs = torch.softmax(model.next_logits(x).double(), dim=-1)
    assert probs.shape == (5, 11)
    assert torch.allclose(probs.sum(1), torch.ones(5, dtype=torch.float64))


def test_bigram_nn_with_its_defaults_approaches_the_counting_model(small_names):
    words = read_items(small_names)
    vocab = Vocab.from_items(words)
    ds = build_dataset(words, vocab, 1)
    counted = Bigram(BigramConfig(smoothing=0.0), len(vocab))
    counted.fit(ds)
    cls = get_model_class("bigram-nn")
    torch.manual_seed(0)
    net = cls(cls.Config(), len(vocab))
    start = evaluate(net, ds)
    state = train_loop(net, ds, None, TrainConfig(**cls.train_defaults), progress=False)
    net.load_state_dict(state.best_state)
    gap = evaluate(net, ds) - evaluate(counted, ds)
    # a few hundred names leave many rare transitions, so a looser bound than on the full file
    assert -1e-9 <= gap < 0.01 < start - evaluate(counted, ds)


@pytest.mark.parametrize("decay", ["decoupled", "penalty"])
def test_the_weight_decay_acts_where_decay_says(decay):
    """penalty: one step descends the loss plus weight_decay * mean(w**2) over all the trained weights, the
    optimizer decaying nothing; decoupled: the optimizer's own decay. The loss recorded is the model's alone."""
    cls = get_model_class("mlp")
    torch.manual_seed(0)
    net = cls(cls.Config(block_size=3, n_embd=4, n_hidden=8), 7)
    reference = copy.deepcopy(net)
    params = list(reference.parameters())
    x, y = torch.randint(7, (16, 3)), torch.randint(7, (16,))
    loss = torch.nn.functional.cross_entropy(reference(x), y)
    objective = loss + 0.3 * torch.cat([p.flatten() for p in params]).pow(2).mean() if decay == "penalty" else loss
    grads = torch.autograd.grad(objective, params)
    config = TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.3, decay=decay)
    step = TrainStep(net, make_optimizer(net, config), config.penalty)
    step(x, y, None, 0.1)
    assert step.take_loss().item() == pytest.approx(loss.item(), rel=1e-6)
    for before, grad, after in zip(params, grads, net.parameters()):
        decayed = 0.3 * before if decay == "decoupled" else 0  # torch's SGD adds weight_decay * p to the gradient
        torch.testing.assert_close(after, (before - 0.1 * (grad + decayed)).detach())


def test_bigram_nn_decays_by_the_lectures_penalty_unless_told_otherwise(run, small_names):
    run("train", "--model", "bigram-nn", "--data", small_names, "--steps", 3, "--weight-decay", 0.01, "-q")
    assert api.load("out/bigram-nn.safetensors").ckpt["train"]["decay"] == "penalty"
    run("train", "--model", "bigram-nn", "--data", small_names, "--steps", 3, "--decay", "decoupled", "-q")
    assert api.load("out/bigram-nn.safetensors").ckpt["train"]["decay"] == "decoupled"
    refused = run("train", "--model", "bigram-nn", "--data", small_names, "--decay", "l1", ok=False)
    assert refused.exit_code == 2 and "--decay" in refused.output


def test_wavenet_fuses_pairs_and_keeps_batchnorm_statistics_for_eval_and_sampling(tmp_path, small_names):
    from makemore.models.wavenet import WaveNet, WaveNetConfig

    model = WaveNet(WaveNetConfig(block_size=4, n_embd=3, n_hidden=5), 7)
    assert len(model.levels) == 2 and model(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 7)
    with pytest.raises(OptionError, match="is not one of 2, 4, 8"):
        WaveNet.config_from(dict(block_size=6))
    result = api.train("wavenet", small_names, tmp_path / "out", train_options=dict(steps=40), device="cpu",
                       progress=False)
    trained = api.load(result.path)
    stats = {k: v for k, v in trained.model.state_dict().items() if "running" in k}
    assert stats and all(v.abs().sum() > 0 for k, v in stats.items() if "mean" in k)
    assert all(torch.equal(v, checkpoint.load(result.path)["state_dict"][k]) for k, v in stats.items())
    # in eval mode an example's logits do not depend on the batch around it: the running statistics are used
    x = torch.randint(len(trained.vocab), (16, trained.block_size))
    assert torch.allclose(trained.model(x)[:1], trained.model(x[:1]), atol=1e-6)
    assert trained.evaluate("dev")["loss"] == pytest.approx(result.dev_loss, rel=1e-12)


def test_the_step_schedule_drops_tenfold_after_decay_at():
    config = TrainConfig(steps=200, lr=0.1, schedule="step", decay_at=0.75)
    assert [config.lr_at(s) for s in (0, 149, 150, 199)] == [0.1, 0.1, pytest.approx(0.01), pytest.approx(0.01)]
    assert TrainConfig(steps=200, lr=0.1, schedule="step").lr_at(100) == pytest.approx(0.01)
