"""The baseline classifier of issue 31: naive Bayes over character trigrams, in plain Python.

p(label | item) is proportional to p(label) * prod_t p(c_t | c_{t-2} c_{t-1}, label): the prior from the
training counts of the labels, each label's trigram counts add-k smoothed, the item padded with two
boundaries in front and one behind (so its start and its end count). k is chosen on dev.
"""
from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as bench/naive_bayes.py or imported from a bench module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from makemore.data import DEFAULT_SPLIT_SEED, DEFAULT_SPLITS, Data  # noqa: E402
from makemore.data import split_labelled as makemore_split  # noqa: E402

BOUNDARY = "\n"  # items are lines: a newline is never part of one
K_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def trigrams(item: str) -> list[tuple[str, str]]:
    """(context of two characters, next character) for each character of the item and its end."""
    padded = BOUNDARY * 2 + item + BOUNDARY
    return [(padded[i - 2:i], padded[i]) for i in range(2, len(padded))]


@dataclass
class NaiveBayes:
    k: float = 1.0
    label_counts: Counter = field(default_factory=Counter)
    counts: dict = field(default_factory=lambda: defaultdict(Counter))  # label -> (context, char) -> n
    context_counts: dict = field(default_factory=lambda: defaultdict(Counter))  # label -> context -> n
    chars: set = field(default_factory=lambda: {BOUNDARY})

    @classmethod
    def fit(cls, pairs, k: float = 1.0) -> "NaiveBayes":
        """Count the trigrams of (label, item) pairs."""
        model = cls(k)
        for label, item in pairs:
            model.label_counts[label] += 1
            model.chars.update(item)
            for context, char in trigrams(item):
                model.counts[label][context, char] += 1
                model.context_counts[label][context] += 1
        return model

    @property
    def labels(self) -> list[str]:
        return list(self.label_counts)

    def log_joint(self, item: str, label: str) -> float:
        """log p(label) + log p(item | label). A character never seen in training gets the smoothed
        share k / (n + kV) of an unseen one, the same under every label's counts."""
        k, v = self.k, len(self.chars)
        counts, contexts = self.counts[label], self.context_counts[label]
        total = math.log(self.label_counts[label] / sum(self.label_counts.values()))
        for context, char in trigrams(item):
            total += math.log((counts[context, char] + k) / (contexts[context] + k * v))
        return total

    def posterior(self, item: str) -> dict[str, float]:
        """p(label | item) for every label, most likely first."""
        joint = {label: self.log_joint(item, label) for label in self.labels}
        top = max(joint.values())
        weights = {label: math.exp(lj - top) for label, lj in joint.items()}
        norm = sum(weights.values())
        return dict(sorted(((label, w / norm) for label, w in weights.items()), key=lambda lw: -lw[1]))

    def classify(self, item: str) -> str:
        joint = {label: self.log_joint(item, label) for label in self.labels}
        return max(joint, key=joint.get)


def accuracy(gold: list[str], predicted: list[str]) -> float:
    if not gold or len(gold) != len(predicted):
        raise ValueError(f"accuracy of {len(predicted)} predictions against {len(gold)} labels")
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def confusion(gold: list[str], predicted: list[str], labels: list[str]) -> dict[str, dict[str, int]]:
    """confusion[true label][predicted label] = how many items."""
    matrix = {g: {p: 0 for p in labels} for g in labels}
    for g, p in zip(gold, predicted):
        matrix[g][p] += 1
    return matrix


def evaluate(model: NaiveBayes, pairs) -> tuple[float, dict[str, dict[str, int]]]:
    """(accuracy, confusion matrix) of the model on (label, item) pairs."""
    gold = [label for label, _ in pairs]
    predicted = [model.classify(item) for _, item in pairs]
    return accuracy(gold, predicted), confusion(gold, predicted, model.labels)


def fit_on_dev(train, dev, grid=K_GRID) -> tuple[NaiveBayes, dict[float, float]]:
    """Fit on train with the k of the grid most accurate on dev (the smallest of a tie); also the dev
    accuracy of every k."""
    model = NaiveBayes.fit(train)
    by_k = {}
    for k in grid:
        model.k = k
        by_k[k] = evaluate(model, dev)[0]
    model.k = max(grid, key=lambda k: (by_k[k], -k))
    return model, by_k


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(label, item) pairs of a `label<TAB>item` file or a folder of <label>.txt files, read as makemore reads them."""
    data = Data.read(path, labels=True)
    return [(data.labels[label], item) for label, item in zip(data.item_labels, data.items)]


def split_labelled(pairs, splits=DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list]:
    """makemore's train/dev/test split of (label, item) pairs, stratified by label, so that the baseline and
    makemore score the same test items."""
    names = sorted({label for label, _ in pairs})
    ids = {label: i for i, label in enumerate(names)}
    items, item_labels = [item for _, item in pairs], [ids[label] for label, _ in pairs]
    parts, labels = makemore_split(items, item_labels, names, splits, seed)
    return {split: [(names[label], item) for label, item in zip(labels[split], parts[split])] for split in parts}


def main(argv: list[str]) -> int:
    """Print the baseline's dev and test accuracy on each labelled file or folder given."""
    if not argv:
        print("usage: python bench/naive_bayes.py FILE_OR_FOLDER...", file=sys.stderr)
        return 2
    for path in argv:
        split = split_labelled(read_labelled(path))
        model, by_k = fit_on_dev(split["train"], split["dev"])
        test = evaluate(model, split["test"])[0]
        print(f"{path}: k={model.k:g} dev {by_k[model.k]:.2%} test {test:.2%} "
              f"(train/dev/test {len(split['train'])}/{len(split['dev'])}/{len(split['test'])}; dev by k: "
              + ", ".join(f"{k:g} {a:.2%}" for k, a in by_k.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
