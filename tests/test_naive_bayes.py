"""bench/naive_bayes.py, issue 31's baseline classifier: counts, smoothing, posterior and the split it reads."""
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.naive_bayes import (NaiveBayes, accuracy, confusion, evaluate, fit_on_dev, read_labelled,
                               split_labelled, trigrams)

# label a: "x" twice; label b: "y" once. Characters: boundary, x, y (V = 3).
TINY = [("a", "x"), ("a", "x"), ("b", "y")]


def test_trigrams_pad_two_boundaries_in_front_and_one_behind():
    assert trigrams("ab") == [("\n\n", "a"), ("\na", "b"), ("ab", "\n")]


def test_counts_and_add_k_smoothing_by_hand():
    model = NaiveBayes.fit(TINY, k=1.0)
    assert model.counts["a"] == Counter({("\n\n", "x"): 2, ("\nx", "\n"): 2})
    assert model.context_counts["b"] == Counter({"\n\n": 1, "\ny": 1})
    # "x" under a: prior 2/3, (2+1)/(2+3) twice; under b: prior 1/3, (0+1)/(1+3), then an unseen context 1/3
    assert math.isclose(model.log_joint("x", "a"), math.log(2 / 3 * 3 / 5 * 3 / 5))
    assert math.isclose(model.log_joint("x", "b"), math.log(1 / 3 * 1 / 4 * 1 / 3))
    posterior = model.posterior("x")
    assert list(posterior) == ["a", "b"] and model.classify("x") == "a"
    assert math.isclose(posterior["a"], (6 / 25) / (6 / 25 + 1 / 36))


def test_smaller_k_trusts_the_counts_more():
    model = NaiveBayes.fit(TINY, k=1.0)
    loose = model.posterior("x")["a"]
    model.k = 0.01
    assert model.posterior("x")["a"] > loose


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="xyz", max_size=12), st.floats(1e-3, 10))
def test_posterior_sums_to_one(item, k):
    model = NaiveBayes.fit(TINY + [("c", "zz")], k=k)
    posterior = model.posterior(item)
    assert math.isclose(sum(posterior.values()), 1.0)
    assert list(posterior.values()) == sorted(posterior.values(), reverse=True)


def test_accuracy_and_confusion():
    gold, predicted = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    assert accuracy(gold, predicted) == 0.75
    assert confusion(gold, predicted, ["a", "b"]) == {"a": {"a": 1, "b": 1}, "b": {"a": 0, "b": 2}}


def test_fit_on_dev_picks_the_most_accurate_k():
    train = [("en", w) for w in ("the", "then", "there", "other")] + [("fi", w) for w in ("että", "mutta", "kun")]
    dev = [("en", "these"), ("fi", "kuin")]
    model, by_k = fit_on_dev(train, dev, grid=(0.01, 1.0))
    assert set(by_k) == {0.01, 1.0} and by_k[model.k] == max(by_k.values())
    assert evaluate(model, dev)[0] == by_k[model.k]


def test_split_is_stratified_by_label():
    pairs = [("M", f"m{i}") for i in range(30)] + [("F", f"f{i}") for i in range(50)]
    split = split_labelled(pairs)
    assert sorted(p for part in split.values() for p in part) == sorted(pairs)
    assert Counter(label for label, _ in split["train"]) == {"F": 40, "M": 24}
    assert Counter(label for label, _ in split["test"]) == {"F": 5, "M": 3}
    assert split_labelled(pairs, seed=7) != split


def test_read_labelled_file_and_folder_agree(tmp_path):
    (tmp_path / "pairs.tsv").write_text("en\tthe\nfi\tkun\nen\tand\nfi\tkan\n", encoding="utf-8")
    folder = tmp_path / "by-label"
    folder.mkdir()
    (folder / "en.txt").write_text("the\nand\n", encoding="utf-8")
    (folder / "fi.txt").write_text("kun\nkan\n", encoding="utf-8")
    assert sorted(read_labelled(tmp_path / "pairs.tsv")) == sorted(read_labelled(folder))
