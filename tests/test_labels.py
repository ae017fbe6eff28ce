"""Labels (issue 31) end to end: labelled data in every format and its errors, then what users do with a labelled
model: sample --label, classify, eval per label and --classify, score --label, inspect, plot confusion, the API."""
import csv
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import invoke, ok
from makemore import api
from makemore import data as data_module
from makemore.data import MAX_LABELS, parse_csv, parse_labelled, split_items, split_labelled, split_sizes
from makemore.errors import DataError

# three labels that no character shares: an item's letters tell its label
LETTERS = {"a": "abcde", "m": "fghij", "z": "vwxyz"}
PER_LABEL = 60
SMALL = ("--model", "mlp", "--n-embd", "8", "--n-hidden", "32", "--threads", "1", "-q")


def labelled_pairs(seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [(label, "".join(rng.choice(letters) for _ in range(rng.randint(3, 7))))
             for label, letters in LETTERS.items() for _ in range(PER_LABEL)]
    rng.shuffle(pairs)
    return pairs


def write_tsv(path, pairs) -> str:
    path.write_text("".join(f"{label}\t{item}\n" for label, item in pairs), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MLP trained 200 steps on the three labels: (checkpoint path, its folder)."""
    folder = tmp_path_factory.mktemp("labels")
    data = write_tsv(folder / "kinds.tsv", labelled_pairs())
    ok("train", "--data", data, "--labels", "--steps", 200, "--out", folder / "out", *SMALL)
    return str(folder / "out" / "mlp.safetensors")


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """An unlabelled model of the same items (built, not trained)."""
    folder = tmp_path_factory.mktemp("plain")
    (folder / "items.txt").write_text("\n".join(item for _, item in labelled_pairs()) + "\n", encoding="utf-8")
    ok("train", "--data", folder / "items.txt", "--steps", 0, "--out", folder / "out", *SMALL)
    return str(folder / "out" / "mlp.safetensors")


def one_line_error(result, code: int = 1) -> str:
    """The output of a command that failed with code: one line for exit 1, click's usage error for exit 2."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1, result.output
    else:
        assert "Error:" in result.output
    return result.output


# ---- data: every format end to end, every stated error ----

def _as_folder(tmp_path, pairs):
    folder = tmp_path / "kinds"
    folder.mkdir()
    for label in LETTERS:
        (folder / f"{label}.txt").write_text("\n".join(i for l, i in pairs if l == label) + "\n", encoding="utf-8")
    return [folder, "--labels"]


def _as_csv(tmp_path, pairs):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "word", "kind"])
    writer.writerows([n, item, label] for n, (label, item) in enumerate(pairs))
    (tmp_path / "kinds.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return [tmp_path / "kinds.csv", "--item-column", "word", "--label-column", "kind"]


@pytest.mark.parametrize("layout", ["tsv", "folder", "csv"])
def test_each_format_trains_a_model_that_records_its_labels(tmp_path, layout):
    pairs = labelled_pairs()
    given = {"tsv": lambda: [write_tsv(tmp_path / "kinds.tsv", pairs), "--labels"],
             "folder": lambda: _as_folder(tmp_path, pairs), "csv": lambda: _as_csv(tmp_path, pairs)}[layout]()
    ok("train", "--data", *given, "--steps", 0, "--out", tmp_path / "out", *SMALL)
    info = json.loads(ok("inspect", tmp_path / "out" / "mlp.safetensors", "--json").output)
    train_share = split_sizes(PER_LABEL, (0.8, 0.1, 0.1))[0]
    assert info["labels"] == {label: train_share for label in sorted(LETTERS)}
    assert info["split"]["sizes"] == {"train": 3 * train_share, "dev": 3 * 6, "test": 3 * 6}


def test_inspect_tells_whether_a_labelled_folder_is_unchanged_changed_or_missing(tmp_path):
    folder, _ = _as_folder(tmp_path, labelled_pairs())
    ok("train", "--data", folder, "--labels", "--steps", 0, "--out", tmp_path / "out", *SMALL)
    checkpoint = tmp_path / "out" / "mlp.safetensors"

    def status():
        return json.loads(ok("inspect", checkpoint, "--json").output)["data"]["status"]

    assert status() == "unchanged"
    a = folder / "a.txt"
    kept = a.read_bytes()
    a.write_bytes(kept + b"abcde\n")
    assert status() == "changed"
    a.write_bytes(kept)
    (folder / "notes.md").write_text("not data", encoding="utf-8")  # not a LABEL.txt file: not data either
    assert status() == "unchanged"
    (folder / "b.txt").write_text("ab\nba\n", encoding="utf-8")  # a label more
    assert status() == "changed"
    (folder / "b.txt").unlink()
    (folder / "m.txt").rename(folder / "n.txt")  # a label renamed
    assert status() == "changed"
    (folder / "n.txt").unlink()
    os.mkfifo(folder / "m.txt")  # never opened for reading as data: a FIFO would block
    assert status() == "changed"
    shutil.rmtree(folder)
    assert status() == "missing"


def test_resuming_without_data_is_refused_when_the_labelled_folder_changed(tmp_path):
    folder, _ = _as_folder(tmp_path, labelled_pairs())
    ok("train", "--data", folder, "--labels", "--steps", 20, "--out", tmp_path / "out", *SMALL)
    with open(folder / "z.txt", "a", encoding="utf-8") as f:
        f.write("vwxyz\n")
    result = invoke("train", "--resume", "--checkpoint", tmp_path / "out" / "mlp.safetensors", "--steps", 40,
                    "--out", tmp_path / "more", "-q")
    assert "has changed since" in one_line_error(result)


def test_a_folder_of_too_many_entries_is_refused_before_it_is_listed_whole(tmp_path, monkeypatch):
    folder, _ = _as_folder(tmp_path, labelled_pairs())
    for n in range(5):
        (folder / f"extra{n}.md").write_text("", encoding="utf-8")
    monkeypatch.setattr(data_module, "MAX_FOLDER_ENTRIES", 6)
    result = invoke("train", "--data", folder, "--labels", "--steps", 0, "--out", tmp_path / "out", *SMALL)
    assert "holds more than 6 entries" in one_line_error(result)


def _many_labels(tmp_path):
    return write_tsv(tmp_path / "many.tsv", [(f"L{n}", item) for n in range(MAX_LABELS + 1) for item in ("ab", "ba")])


@pytest.mark.parametrize("make, options, message", [
    (lambda p: _write(p / "d.tsv", "a\tabc\nxyz\n"), ["--labels"], "line 2 has no tab"),
    (lambda p: _write(p / "d.tsv", "a\tabc\n\tbcd\n"), ["--labels"], "line 2 has an empty label"),
    (lambda p: _write(p / "d.tsv", "a\tabc\na\tbcd\nb\t \n"), ["--labels"], "line 3 has an empty item"),
    (lambda p: _write(p / "d.tsv", "a\tabc\na\tbcd\nb\tcde\n"), ["--labels"], "the label 'b' has only one item"),
    (_many_labels, ["--labels"], f"more than {MAX_LABELS} labels"),
    (lambda p: _write(p / "d.tsv", "".join(f"a\t{w}\n" for w in ("ab", "ba", "abb", "bab", "aab", "bba"))
                      + "b\tcd\nb\tdc\n"), ["--labels", "--splits", "0.3,0.3,0.4"], "label 'b' would have no training"),
    (lambda p: _write(p / "d.tsv", "".join(f"{k}\t{w}\n" for k in "abcde" for w in ("ab", "ba", "abb"))), ["--labels"],
     "the dev split would be empty: it is cut per label, and none of the 5 labels has the 6 items"),
    (lambda p: _write(p / "d.csv", "word,kind\nabc,a\n"), ["--label-column", "kind"],
     "--label-column needs --item-column"),
    (lambda p: _write(p / "d.csv", "word,kind\nabc,a\nbcd,a\n"), ["--item-column", "word", "--label-column", "sort"],
     "has no column 'sort' in its header (its columns: word, kind)"),
    (lambda p: _write(p / "d.csv", "word,kind\nabc,a\nbcd,\n"), ["--item-column", "word", "--label-column", "kind"],
     "row 2 has an empty 'kind'"),
])
def test_each_data_error_is_one_line(tmp_path, make, options, message):
    data = make(tmp_path)
    result = invoke("train", "--data", data, *options, "--steps", 0, "--out", tmp_path / "out", *SMALL)
    assert message in one_line_error(result)
    assert not (tmp_path / "out").exists()


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---- data: properties of the parsers and the split ----

PARSING = settings(max_examples=60, deadline=None)
TEXT = st.text(st.characters(categories=("L", "N", "P", "S"), exclude_characters='\t"'), min_size=1, max_size=8)


@PARSING
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=30))
def test_parse_labelled_reads_back_what_was_written(pairs):
    pairs = [(label.strip(), item.strip()) for label, item in pairs]
    pairs = [(label, item) for label, item in pairs if label and item]
    raw = "".join(f"{label}\t{item}\n" for label, item in pairs).encode()
    if not pairs:
        with pytest.raises(DataError, match="no LABEL<TAB>ITEM line"):
            parse_labelled(raw, "f")
        return
    labels, items = parse_labelled(raw, "f")
    assert list(zip(labels, items)) == [(unicodedata.normalize("NFC", a), unicodedata.normalize("NFC", b))
                                        for a, b in pairs]


@PARSING
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=20), st.data())
def test_parse_labelled_names_the_first_line_without_a_tab(pairs, data):
    lines = [f"{label}\t{item}" for label, item in pairs]
    at = data.draw(st.integers(0, len(lines) - 1))
    lines[at] = "notab"
    with pytest.raises(DataError, match=f"line {at + 1} has no tab"):
        parse_labelled("\n".join(lines).encode(), "f")


@PARSING
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=20))
def test_parse_csv_reads_back_the_named_columns(pairs):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "other", "word"])
    writer.writerows([label, "x", item] for label, item in pairs)
    labels, items = parse_csv(buffer.getvalue().encode(), "f", "word", "kind")
    expected = [(unicodedata.normalize("NFC", a.strip()), unicodedata.normalize("NFC", b.strip())) for a, b in pairs]
    assert list(zip(labels, items)) == [(a, b) for a, b in expected if b]


PROPERTY = settings(max_examples=40, deadline=None)
SPLITS = st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.9, 0.1, 0.0), (0.6, 0.2, 0.2)])


def _labelled_items(sizes: list[int]) -> tuple[list[str], list[str], list[int]]:
    """Label names L0, L1, ..., sizes[i] items of label i (each named after its label), and the items' label ids."""
    names = [f"L{i}" for i in range(len(sizes))]
    item_labels = [label for label, n in enumerate(sizes) for _ in range(n)]
    return names, [f"{names[label]}-{k}" for k, label in enumerate(item_labels)], item_labels


@PROPERTY
@given(st.lists(st.integers(10, 40), min_size=1, max_size=5), SPLITS, st.integers(0, 2**32))
def test_split_labelled_gives_each_label_its_share_of_each_split(sizes, splits, seed):
    names, items, item_labels = _labelled_items(sizes)
    random.Random(seed).shuffle(order := list(range(len(items))))
    items, item_labels = [items[i] for i in order], [item_labels[i] for i in order]
    parts, labels = split_labelled(items, item_labels, names, splits, seed)
    assert sorted(sum(parts.values(), [])) == sorted(items)
    for split in parts:
        assert [names[label] for label in labels[split]] == [item.split("-")[0] for item in parts[split]]
    for label, n in enumerate(sizes):
        assert [labels[split].count(label) for split in ("train", "dev", "test")] == list(split_sizes(n, splits))


@PROPERTY
@given(st.lists(st.integers(1, 8), min_size=1, max_size=4), SPLITS, st.integers(0, 2**32))
def test_split_labelled_of_small_labels_fills_every_split_or_says_which_is_empty(sizes, splits, seed):
    names, items, item_labels = _labelled_items(sizes)
    try:
        parts, _ = split_labelled(items, item_labels, names, splits, seed)
    except DataError as refused:
        empty = [split for split, frac in zip(("train", "dev", "test"), splits)
                 if frac > 0 and all(split_sizes(n, splits)[("train", "dev", "test").index(split)] == 0 for n in sizes)]
        no_train = [name for name, n in zip(names, sizes) if split_sizes(n, splits)[0] == 0]
        assert (f"label {no_train[0]!r} would have no training items" in str(refused) if no_train
                else f"the {empty[0]} split would be empty" in str(refused)
                and (len(sizes) == 1 or "cut per label" in str(refused))), str(refused)
    else:
        assert all(parts[split] for split, frac in zip(("train", "dev", "test"), splits) if frac > 0)


@PROPERTY
@given(st.lists(st.text(min_size=1, max_size=5), min_size=10, max_size=60), SPLITS, st.integers(0, 2**32))
def test_split_labelled_of_one_label_is_todays_split(items, splits, seed):
    parts, labels = split_labelled(items, [0] * len(items), ["only"], splits, seed)
    assert parts == split_items(items, splits, seed)
    assert all(set(labels[split]) <= {0} and len(labels[split]) == len(parts[split]) for split in parts)
    assert split_labelled(items, None, None, splits, seed) == (split_items(items, splits, seed), None)


# ---- sample --label ----

@pytest.mark.parametrize("label", ["a", "z"])
def test_sample_label_draws_items_of_that_label(trained, label):
    lines = ok("sample", "--checkpoint", trained, "--label", label, "-n", 30, "--seed", 1,
               "--json").output.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 30 and {r["label"] for r in records} == {label}
    letters = Counter(c for r in records for c in r["item"])
    # a third of the letters are the label's by chance; 200 steps of a tiny model learn more than half
    assert sum(letters[c] for c in LETTERS[label]) > 0.5 * sum(letters.values())


def test_sample_default_draws_every_label_reproducibly_whatever_n(trained):
    def drawn(n, *more):
        result = ok("sample", "--checkpoint", trained, "-n", n, "--seed", 3, "--json", *more)
        return [(r["item"], r["label"]) for r in map(json.loads, result.output.splitlines())]

    many = drawn(60)
    assert drawn(7) == many[:7]
    assert set(label for _, label in many) == set(LETTERS)
    two = drawn(40, "--label", "a", "--label", "m")
    assert {label for _, label in two} == {"a", "m"}


def test_plain_sample_lines_show_the_label_when_several_may_be_drawn(trained):
    """Without --label, or with several, each line is ITEM<TAB>LABEL (then --mark's column); with one label the
    lines are the items alone, as for an unlabelled model."""
    records = [json.loads(line) for line in ok("sample", "--checkpoint", trained, "-n", 12, "--seed", 4,
                                                "--json").output.splitlines()]
    plain = ok("sample", "--checkpoint", trained, "-n", 12, "--seed", 4).output.splitlines()
    assert plain == [f"{r['item']}\t{r['label']}" for r in records]
    marked = ok("sample", "--checkpoint", trained, "-n", 12, "--seed", 4, "--mark").output.splitlines()
    assert [line.split("\t")[:2] for line in marked] == [[r["item"], r["label"]] for r in records]
    assert all(len(line.split("\t")) == 3 for line in marked)
    two = ok("sample", "--checkpoint", trained, "--label", "a", "--label", "z", "-n", 6, "--seed", 4)
    assert all(line.split("\t")[1] in ("a", "z") for line in two.output.splitlines())
    one = ok("sample", "--checkpoint", trained, "--label", "z", "--label", "z", "-n", 6, "--seed", 4)
    assert all("\t" not in line for line in one.output.splitlines()) and len(one.output.splitlines()) == 6


def test_sample_constraints_hold_under_a_label(trained):
    result = ok("sample", "--checkpoint", trained, "--label", "m", "--prefix", "f", "--new", "--unique", "-n", 8,
                "--seed", 2, "--json")
    records = [json.loads(line) for line in result.output.splitlines()]
    items = [r["item"] for r in records]
    assert len(set(items)) == 8 and all(item.startswith("f") for item in items)
    assert {r["label"] for r in records} == {"m"} and {r["split"] for r in records} == {"none"}


def test_sample_unknown_label_lists_the_labels(trained):
    out = one_line_error(invoke("sample", "--checkpoint", trained, "--label", "q"))
    assert "'q' is not a label of this model; its labels: a, m, z" in out


def test_label_on_an_unlabelled_model_is_one_line(unlabelled):
    for args in (("sample", "--label", "a"), ("classify", "abc"), ("score", "abc", "--label", "a"),
                 ("eval", "--classify")):
        out = one_line_error(invoke(*args[:1], "--checkpoint", unlabelled, *args[1:]))
        assert "trained without labels" in out


# ---- classify ----

def test_classify_posteriors_sum_to_one_sorted_with_the_typical_label_first(trained):
    result = ok("classify", "--checkpoint", trained, "abcabdaecb", "vwxzyvzwyx", "hijffgjihg", "--json")
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["label"] for r in records] == ["a", "z", "m"]
    for r in records:
        probabilities = [g["probability"] for g in r["labels"]]
        assert math.isclose(sum(probabilities), 1.0, rel_tol=1e-9)
        assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 3
        assert r["labels"][0]["label"] == r["label"] and probabilities[0] > 0.5


def test_classify_top_and_text_lines(trained, tmp_path):
    (tmp_path / "items.txt").write_text("vvwx\naabd\n", encoding="utf-8")
    lines = ok("classify", "--checkpoint", trained, "abcab", "--data", tmp_path / "items.txt",
               "--top", 2).output.splitlines()
    assert len(lines) == 6
    assert [line.split("\t")[:2] for line in lines[::2]] == [["abcab", "a"], ["vvwx", "z"], ["aabd", "a"]]
    assert all(0 <= float(line.split("\t")[2]) <= 1 for line in lines)
    one = ok("classify", "--checkpoint", trained, "abcab", "--top", 1, "--json").output
    assert len(json.loads(one)["labels"]) == 1


def test_classify_errors(trained):
    assert "character 4, is not in the model's vocabulary" in one_line_error(
        invoke("classify", "--checkpoint", trained, "abcq"))
    assert "give the items" in invoke("classify", "--checkpoint", trained).output
    one_line_error(invoke("classify", "--checkpoint", trained, "abc", "--top", 0), code=2)


def test_classify_by_the_api_matches_the_prior_weighted_log_probs(trained):
    model = api.load(trained)
    (result,) = model.classify(["abcde"])
    joint = [lp + math.log(1 / 3) for lp in
             (model.log_prob(["abcde"], [label])[0] for label in ("a", "m", "z"))]
    expected = [math.exp(j - max(joint)) / sum(math.exp(k - max(joint)) for k in joint) for j in joint]
    got = {g["label"]: g["probability"] for g in result["labels"]}
    # float32 forward passes of differently shaped batches round differently: about 1e-7 apart
    assert [got[label] for label in ("a", "m", "z")] == pytest.approx(expected, rel=1e-5)
    samples = model.sample(6, seed=4, label="z")
    assert samples.labels == ["z"] * 6 and len(samples) == 6


# ---- eval, score, inspect, plot ----

def test_eval_reports_each_label_and_overall(trained):
    plain = json.loads(ok("eval", "--checkpoint", trained, "--split", "dev", "--json").output)
    assert set(plain) >= {"split", "loss", "perplexity", "n_chars", "n_items", "model", "checkpoint", "labels"}
    parts = plain["labels"]
    assert list(parts) == ["a", "m", "z"] and all(p["n_items"] == 6 for p in parts.values())
    assert sum(p["n_chars"] for p in parts.values()) == plain["n_chars"]
    assert plain["loss"] == pytest.approx(sum(p["loss"] * p["n_chars"] for p in parts.values()) / plain["n_chars"])
    text = ok("eval", "--checkpoint", trained).output.splitlines()
    assert text[0].startswith("dev loss ") and [line.split()[0] for line in text[1:]] == ["a", "m", "z"]


def test_eval_classify_reports_accuracy_and_a_confusion_matrix_of_the_split(trained):
    result = json.loads(ok("eval", "--checkpoint", trained, "--split", "test", "--classify", "--json").output)
    confusion = result["confusion"]
    assert list(confusion) == ["a", "m", "z"] and all(list(row) == ["a", "m", "z"] for row in confusion.values())
    assert sum(sum(row.values()) for row in confusion.values()) == result["n_items"] == 18
    assert result["accuracy"] == sum(confusion[l][l] for l in confusion) / 18
    assert result["accuracy"] > 0.9
    text = ok("eval", "--checkpoint", trained, "--split", "test", "--classify").output
    assert "classify: accuracy" in text and "confusion (rows: true label, columns: predicted label):" in text


def test_score_uses_the_label_given_or_the_likeliest(trained):
    given = json.loads(ok("score", "--checkpoint", trained, "abcab", "--label", "z", "--json").output)["items"][0]
    chosen = json.loads(ok("score", "--checkpoint", trained, "abcab", "--json").output)["items"][0]
    assert (given["label"], given["label_source"]) == ("z", "given")
    assert (chosen["label"], chosen["label_source"]) == ("a", "most likely")
    assert given["nll"] > chosen["nll"]
    assert "abcab (label a, the most likely): total nll" in ok("score", "--checkpoint", trained, "abcab",
                                                                "--totals").output
    assert "is not a label" in one_line_error(invoke("score", "--checkpoint", trained, "abc", "--label", "q"))


def test_inspect_shows_the_labels_and_their_training_counts(trained):
    text = ok("inspect", trained).output
    assert "labels        3 with their training items: a 48, m 48, z 48" in text


def test_loading_a_labelled_mlp_imports_neither_sympy_nor_the_compiler(trained):
    """Building the labelled MLP on the meta device (the checkpoint's checks) copies each label's tables with ops
    that have meta kernels: repeat or cat there imported sympy, 0.3 s of every command."""
    script = ("import sys; from makemore import api; api.load(sys.argv[1])\n"
              "print(sorted({'sympy', 'torch._dynamo'} & set(sys.modules)))")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", script, trained], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_plot_embeddings_of_a_labelled_mlp_draws_its_labels_average(trained, tmp_path):
    pytest.importorskip("matplotlib")
    net = api.load(trained).model
    assert torch.equal(net.embeddings(), net.C.view(3, net.vocab_size, -1).mean(0))
    path = tmp_path / "embeddings.png"
    assert ok("plot", "embeddings", "--checkpoint", trained, "-o", path).output.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_confusion_writes_a_png(trained, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "confusion.png"
    assert ok("plot", "confusion", "--checkpoint", trained, "-o", path).output.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_labelled_mlp_starts_as_its_unlabelled_twin_under_every_label():
    from makemore.models.mlp import MLP, MLPConfig

    config = MLPConfig(block_size=4, n_embd=4, n_hidden=8)
    torch.manual_seed(0)
    plain = MLP(config, 7)
    torch.manual_seed(0)
    labelled = MLP(config, 7, n_labels=3)
    x = torch.randint(7, (10, 4))
    for label in range(3):
        assert torch.allclose(labelled(x, torch.full((10,), label)), plain(x), rtol=1e-6, atol=1e-7)


def test_each_label_reads_and_trains_its_own_rows_of_the_mlp():
    from makemore.models.mlp import MLP, MLPConfig

    torch.manual_seed(0)
    net = MLP(MLPConfig(block_size=4, n_embd=4, n_hidden=8), 7, n_labels=3)
    x = torch.randint(7, (10, 4))
    net(x, torch.full((10,), 1)).square().sum().backward()
    per_label = {"C": net.C.grad.view(3, 7, 4), "b1": net.b1.grad, "b2": net.b2.grad, "gain": net.label_gain.grad}
    for name, grad in per_label.items():
        assert grad[1].abs().sum() > 0 and not grad[0].any() and not grad[2].any(), name
    assert net.W1.grad.abs().sum() > 0 and net.W2.grad.abs().sum() > 0  # the shared weights learn from every label


def test_bigram_table_of_a_labelled_network_is_its_labels_weighted_by_their_counts():
    from makemore.instruments import bigram_table
    from makemore.models.mlp import MLP, MLPConfig

    torch.manual_seed(0)
    net = MLP(MLPConfig(block_size=1, n_embd=4, n_hidden=8), 5, n_labels=3).eval()
    with torch.no_grad():
        net.b2.normal_()
    weights = torch.tensor([1.0, 2.0, 5.0])
    table, counts = bigram_table(net, weights)
    contexts = torch.arange(5)[:, None]
    each = [torch.softmax(net.next_logits(contexts, torch.full((5,), i)).double(), -1) for i in range(3)]
    assert not counts
    assert torch.allclose(table, sum(w * p for w, p in zip(weights / 8, each)).detach())
    assert torch.allclose(table.sum(1), torch.ones(5, dtype=torch.float64))
