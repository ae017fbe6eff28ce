"""The counting models (ngram, bigram) with labels (issue 31): per-label counts that back off to the pooled counts,
and their checkpoints."""
import pytest
import torch

from makemore import api
from makemore.data import Data, Vocab
from makemore.dataset import build_dataset
from makemore.errors import CheckpointError
from makemore.models import ngram
from makemore.models.bigram import Bigram, BigramConfig
from makemore.models.ngram import NGram, NGramConfig
from tests.conftest import REPO_NAMES
from tests.test_checkpoint import retensor

NAMES = REPO_NAMES.read_text(encoding="utf-8").splitlines()


def config(model: str, smoothing="kn"):
    return BigramConfig() if model == "bigram" else NGramConfig(3, smoothing, None)


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory):
    """Names, and names written backwards: two labels whose characters follow each other differently."""
    path = tmp_path_factory.mktemp("labels") / "kinds.tsv"
    lines = [f"fwd\t{n}" for n in NAMES[::80]] + [f"bwd\t{n[::-1]}" for n in NAMES[7::80]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fitted(cls, cfg, items, vocab, labels=None, n_labels=1):
    model = cls(cfg, len(vocab), n_labels)
    model.fit(build_dataset(items, vocab, cfg.block_size, labels=labels))
    return model


def dev_loss(model, items, vocab, labels=None):
    x, y, label = build_dataset(items, vocab, model.block_size, labels=labels).tensors()
    return float(-model(x, label).gather(1, y[:, None]).mean())


@pytest.mark.parametrize("model", ["bigram", "ngram"])
def test_labels_lower_the_dev_loss_of_the_same_items(two_kinds, model):
    data = Data.read(two_kinds, labels=True)
    parts, labels = data.labelled_split()
    vocab = Vocab.from_items(data.items)
    cls, cfg = (Bigram if model == "bigram" else NGram), config(model)
    labelled = fitted(cls, cfg, parts["train"], vocab, labels["train"], data.n_labels)
    pooled = fitted(cls, cfg, parts["train"], vocab)
    with_labels = dev_loss(labelled, parts["dev"], vocab, labels["dev"])
    without = dev_loss(pooled, parts["dev"], vocab)
    assert with_labels < without - 0.02, (with_labels, without)


@pytest.mark.parametrize("model, smoothing", [("bigram", 1.0), ("ngram", "kn"), ("ngram", 0.5)])
def test_every_label_predicts_a_distribution_for_seen_and_unseen_contexts(two_kinds, model, smoothing):
    data = Data.read(two_kinds, labels=True)
    vocab = Vocab.from_items(data.items)
    cls, cfg = (Bigram if model == "bigram" else NGram), config(model, smoothing)
    net = fitted(cls, cfg, data.items, vocab, data.item_labels, data.n_labels)
    x = torch.randint(len(vocab), (300, cfg.block_size), generator=torch.Generator().manual_seed(0))
    for label in range(data.n_labels):
        logits = net(x, torch.full((len(x),), label))
        assert torch.isfinite(logits).all()
        assert torch.allclose(logits.exp().sum(1), torch.ones(len(x), dtype=torch.float64), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="label"):
        net(x)


@pytest.mark.parametrize("smoothing", ["kn", 0.5])
def test_the_dense_rows_predict_what_the_sparse_tables_do(two_kinds, monkeypatch, smoothing):
    """Each label's whole distributions kept per seen context (while they fit) are a cache, not another model."""
    data = Data.read(two_kinds, labels=True)
    vocab = Vocab.from_items(data.items)
    cfg = config("ngram", smoothing)
    dense = fitted(NGram, cfg, data.items, vocab, data.item_labels, data.n_labels)
    monkeypatch.setattr(ngram, "DENSE_ROWS", 0)
    sparse = fitted(NGram, cfg, data.items, vocab, data.item_labels, data.n_labels)
    assert dense.label_dense_orders == cfg.block_size + 1 and sparse.label_dense_orders == 0
    x, _, label = build_dataset(data.items, vocab, cfg.block_size, labels=data.item_labels).tensors()
    x = torch.cat([x, torch.randint(len(vocab), (300, cfg.block_size), generator=torch.Generator().manual_seed(0))])
    label = torch.cat([label, torch.arange(300) % 2])
    assert torch.allclose(dense(x, label), sparse(x, label), rtol=0, atol=1e-12)


def test_a_rare_label_keeps_the_pooled_structure():
    """A label of four items: after a context it never saw, each character it never used keeps the pooled model's
    probability times one factor (the pooled structure, whole), and its own characters gain on the whole."""
    common, rare = NAMES[::40], ["zyx", "qqv", "xzq", "vyz"]
    items, labels = common + rare, [0] * len(common) + [1] * len(rare)
    vocab = Vocab.from_items(items)
    cfg = config("ngram")
    labelled = fitted(NGram, cfg, items, vocab, labels, 2)
    pooled = fitted(NGram, cfg, items, vocab)
    x, _, _ = build_dataset(common[:200], vocab, cfg.block_size).tensors()
    own = torch.tensor([vocab.stoi[c] for c in "zyxqv"] + [0])  # its characters and the end
    unseen_context = ~torch.isin(x, own).any(1)  # no padding, none of its characters
    x = x[unseen_context]
    assert len(x) > 100
    as_rare = labelled(x, torch.ones(len(x), dtype=torch.long)).exp()
    others = torch.ones(len(vocab), dtype=torch.bool)
    others[own] = False
    ratio = as_rare[:, others] / pooled(x).exp()[:, others]
    assert 0.3 < float(ratio.min()) and float(ratio.max()) < 1
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), rtol=1e-9, atol=0)
    mass = as_rare[:, own[:-1]].sum(1).mean(), pooled(x).exp()[:, own[:-1]].sum(1).mean()
    assert mass[0] > 2 * mass[1], mass  # its own counts count


def test_an_unlabelled_model_has_no_label_tables(small_names):
    items = small_names.read_text().split()
    vocab = Vocab.from_items(items)
    net = fitted(NGram, config("ngram"), items, vocab)
    assert not [name for name in net.state_dict() if name.startswith("label")]


@pytest.fixture(scope="module")
def labelled_checkpoint(two_kinds, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return api.train(data=two_kinds, labels=True, model="ngram", model_options=dict(block_size=3), out=out,
                     progress=False).path


def test_a_labelled_checkpoint_round_trips(labelled_checkpoint, two_kinds):
    trained = api.load(labelled_checkpoint)
    parts, labels = trained.labelled_splits()
    net = fitted(NGram, trained.model.config, parts["train"], trained.vocab, labels["train"], 2)
    x, _, label = build_dataset(parts["dev"], trained.vocab, 3, labels=labels["dev"]).tensors()
    assert torch.equal(trained.model(x, label), net(x, label))
    assert trained.model(x, label).ne(trained.model(x, 1 - label)).any()  # the label matters


def _swap_first_two(t):
    t[[0, 1]] = t[[1, 0]]


TAMPERED = {
    "keys-not-increasing": lambda t: _swap_first_two(t["state_dict.label_ngrams_3"]),
    "key-out-of-range": lambda t: t["state_dict.label_ngrams_2"].__setitem__(-1, 10**6),
    "count-zero": lambda t: t["state_dict.label_counts_1"].__setitem__(0, 0),
    "ends-past-the-table": lambda t: t["state_dict.label_ends_2"].__setitem__(-1, 10**9),
    "ends-decreasing": lambda t: t["state_dict.label_ends_4"].__setitem__(0, -1),
    "lengths-differ": lambda t: t.update({"state_dict.label_counts_2": t["state_dict.label_counts_2"][:-1].clone()}),
    "table-missing": lambda t: t.pop("state_dict.label_ngrams_1"),
    "ends-of-other-labels": lambda t: t.update({"state_dict.label_ends_1": t["state_dict.label_ends_1"][:1].clone()}),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_label_table_is_refused_in_one_line(labelled_checkpoint, tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(retensor(labelled_checkpoint, TAMPERED[name]))
    with pytest.raises(CheckpointError) as refused:
        api.load(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and "does not fit" in message, message
