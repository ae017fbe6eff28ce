"""Labelled networks (issue 31): bigram-nn, wavenet, rnn, gru and the transformer condition every position on the
label; an unlabelled model has no label weights; labelled checkpoints resume and mix."""
import random

import pytest
import torch

from conftest import invoke, ok
from makemore import api, checkpoint
from makemore.data import Data
from makemore.models import get_model_class

# tiny configs that learn the file below in a few hundred steps
NETWORKS = {  # --steps last
    "bigram-nn": ["--steps", 60],
    "wavenet": ["--block-size", 2, "--n-embd", 8, "--n-hidden", 16, "--lr", 0.3, "--steps", 200],
    "rnn": ["--n-embd", 8, "--n-hidden", 16, "--lr", 0.01, "--warmup", 0, "--steps", 200],
    "gru": ["--n-embd", 8, "--n-hidden", 16, "--lr", 0.01, "--warmup", 0, "--steps", 150],
    "transformer": ["--n-layer", 1, "--n-head", 2, "--n-embd", 16, "--dropout", 0, "--lr", 0.01, "--warmup", 0,
                    "--steps", 150],
}
ENDS = {"ex": "x", "why": "y"}  # each label's last character


def labelled_lines(n: int = 400, seed: int = 0) -> list[tuple[str, str]]:
    """(label, item): 2 to 10 random m's and n's, then the label's own last character. Only the label tells that
    character, and a window of a few characters no longer sees the item's start."""
    rng = random.Random(seed)
    labels = list(ENDS)
    return [(labels[i % 2], "".join(rng.choice("mn") for _ in range(rng.randint(2, 10))) + ENDS[labels[i % 2]])
            for i in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The labelled file, its items alone, and the labelled split's dev items (with labels, and alone)."""
    folder = tmp_path_factory.mktemp("labelled")
    lines = labelled_lines()
    paths = dict(labelled=folder / "ends.tsv", plain=folder / "ends.txt", dev_labelled=folder / "dev.tsv",
                 dev_plain=folder / "dev.txt")
    paths["labelled"].write_text("".join(f"{label}\t{item}\n" for label, item in lines), encoding="utf-8")
    paths["plain"].write_text("".join(f"{item}\n" for _, item in lines), encoding="utf-8")
    data = Data.read(paths["labelled"], labels=True)
    parts, part_labels = data.labelled_split()
    dev = list(zip(parts["dev"], part_labels["dev"]))
    paths["dev_labelled"].write_text("".join(f"{data.labels[label]}\t{item}\n" for item, label in dev), encoding="utf-8")
    paths["dev_plain"].write_text("".join(f"{item}\n" for item, _ in dev), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """Each network trained on the labelled file and on its items alone: model -> (labelled, unlabelled)."""
    out = tmp_path_factory.mktemp("out")
    models = {}
    for model, flags in NETWORKS.items():
        ok("train", "--model", model, *flags, "--data", files["labelled"], "--labels", "--out", out / "labelled",
           "--name", model, "-q", "--threads", 1)
        ok("train", "--model", model, *flags, "--data", files["plain"], "--out", out / "plain", "--name", model,
           "-q", "--threads", 1)
        models[model] = tuple(api.load(out / kind / f"{model}.safetensors") for kind in ("labelled", "plain"))
    return models


@pytest.mark.parametrize("model", NETWORKS)
def test_labelled_dev_loss_below_unlabelled_on_the_same_items(model, trained, files):
    labelled, plain = trained[model]
    with_labels = labelled.evaluate("all", data=files["dev_labelled"], labels=True)["loss"]
    without = plain.evaluate("all", data=files["dev_plain"])["loss"]
    # only the label tells the last character: about ln 2 nats an item of 8 characters on average
    assert with_labels < without - 0.03, (with_labels, without)


@pytest.mark.parametrize("model", NETWORKS)
def test_the_label_decides_the_end_of_a_long_item(model, trained):
    """Far beyond the item's start (and beyond a window model's context), the label still reaches the prediction."""
    net = trained[model][0]
    names = net.labels
    window = torch.tensor([net.vocab.encode("m" * 40)[-net.block_size:]] * len(names))
    with torch.no_grad():
        probs = torch.softmax(net.model.next_logits(window, torch.arange(len(names))), dim=-1)
    x, y = net.vocab.encode("xy")
    ex, why = names.index("ex"), names.index("why")
    assert probs[ex, x] > 2 * probs[why, x] and probs[why, y] > 2 * probs[ex, y], probs


@pytest.mark.parametrize("model", NETWORKS)
def test_unlabelled_model_has_no_label_weights_and_draws_as_before(model):
    cls = get_model_class(model)
    config = cls.config_from({"block_size": 4} if model != "bigram-nn" else {})
    torch.manual_seed(0)
    plain = cls(config, 7).state_dict()
    torch.manual_seed(0)
    labelled = cls(config, 7, n_labels=3).state_dict()
    assert not [k for k in plain if "label" in k]
    added = set(labelled) - set(plain)
    assert added and all("label" in k for k in added) and set(plain) <= set(labelled)
    # the label tables start at zero and draw nothing: every other weight is drawn as without labels
    assert all(torch.equal(plain[k], labelled[k]) for k in plain)
    assert all(not labelled[k].any() for k in added)


@pytest.mark.parametrize("model", NETWORKS)
def test_gradients_reach_every_label_table(model):
    cls = get_model_class(model)
    config = cls.config_from({"block_size": 4} if model != "bigram-nn" else {})
    torch.manual_seed(0)
    net = cls(config, 7, n_labels=3)
    x = torch.randint(7, (6, 4 if model != "bigram-nn" else 1))
    net(x, torch.tensor([0, 1, 2, 0, 1, 2])).square().sum().backward()
    tables = {name: p for name, p in net.named_parameters() if "label" in name}
    assert tables and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tables.values()), tables


def test_labelled_run_resumed_equals_the_run_uninterrupted(files, tmp_path):
    model = "gru"  # dropout's random draws and the labels of every batch continue where they stopped
    common = ["--model", model, *NETWORKS[model][:-2], "--schedule", "constant", "--data", files["labelled"],
              "--labels", "-q", "--threads", 1]
    ok("train", *common, "--steps", 60, "--out", tmp_path / "whole")
    ok("train", *common, "--steps", 30, "--out", tmp_path / "halves")
    halves = tmp_path / "halves" / f"{model}.safetensors"
    ok("train", "--resume", "--checkpoint", halves, "--steps", 60, "--out", tmp_path / "halves", "-q")
    a, b = (checkpoint.load(p) for p in (tmp_path / "whole" / f"{model}.safetensors",
                                         tmp_path / "halves" / f"{model}-2.safetensors"))
    assert b["step"] == 60 and b["labels"] == a["labels"]
    for k, v in a["resume"]["state_dict"].items():
        assert torch.equal(v, b["resume"]["state_dict"][k]), k


@pytest.fixture(scope="module")
def csv_models(tmp_path_factory):
    """bigram-nn and wavenet of one CSV file, labelled by its column 'end', and bigram-nn of it unlabelled and
    labelled by its column 'parity' (same file, split and vocabulary: only the labels differ)."""
    folder = tmp_path_factory.mktemp("csv")
    data = folder / "ends.csv"
    data.write_text("item,end,parity\n" + "".join(f"{item},{label},{len(item) % 2}\n"
                                                  for label, item in labelled_lines(200)), encoding="utf-8")
    common = ["--data", data, "--item-column", "item", "-q", "--threads", 1]
    for name, flags in dict(end=["--label-column", "end"], plain=[], parity=["--label-column", "parity"]).items():
        ok("train", "--model", "bigram-nn", *common, *flags, "--steps", 30, "--out", folder, "--name", name)
    ok("train", "--model", "wavenet", *common, "--label-column", "end", *NETWORKS["wavenet"][:-2], "--steps", 60,
       "--out", folder, "--name", "end-wavenet")
    return folder


def test_mixture_of_labelled_models_conditions_on_the_label(csv_models):
    ok("mix", csv_models / "end.safetensors", csv_models / "end-wavenet.safetensors", "--out", csv_models,
       "--name", "mixed")
    mixed = api.load(csv_models / "mixed.safetensors")
    assert mixed.labels == ["ex", "why"]
    # fitted on dev with each component's own labels: at least as good there as the better component
    components = [api.load(csv_models / f"{name}.safetensors").evaluate("dev")["loss"] for name in ("end", "end-wavenet")]
    assert mixed.evaluate("dev")["loss"] <= min(components) + 1e-4, components


@pytest.mark.parametrize("other", ["plain", "parity"])
def test_mixing_checkpoints_of_other_labels_is_refused(csv_models, other):
    result = invoke("mix", csv_models / "end.safetensors", csv_models / f"{other}.safetensors", "--out", csv_models,
                    "--name", f"refused-{other}")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "same labels" in lines[0], result.output
    assert not (csv_models / f"refused-{other}.safetensors").exists()


def test_bigram_nn_of_a_large_vocabulary_and_many_labels_is_refused_before_allocating(tmp_path):
    """256 labels of a 10,000-character vocabulary: a (V, V) table per label, 100 GB, is refused in one line."""
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 9999)]
    data = tmp_path / "many.tsv"
    data.write_text("".join(f"L{i // 10}\t" + "".join(chars[(i * 20 + j) % 9999] for j in range(20)) + "\n"
                            for i in range(2560)), encoding="utf-8")
    result = invoke("train", "--model", "bigram-nn", "--data", data, "--labels", "--out", tmp_path / "out", "-q")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "memory" in lines[0], result.output
    assert "use fewer than 256 labels" in lines[0]  # the table per label is what does not fit
    assert not (tmp_path / "out").exists()
