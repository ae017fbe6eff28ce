"""A trained model loaded from its checkpoint: evaluate it, score items, sample, describe and plot."""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import checkpoint, instruments, options, plots, stream, threads
from makemore.constraints import Request, Samples, length_cap
from makemore.data import SPLIT_NAMES, Data, Vocab, split_labelled
from makemore.dataset import build_dataset
from makemore.errors import CheckpointError, DataError, MakemoreError, OptionError, printable
from makemore.files import check_not_inputs, same_file
from makemore.models import get_model_class
from makemore.nearest import nearest as closest
from makemore.sampling import Sampler, log_probs, log_probs_by_label
from makemore.train import evaluate


def resolve_device(name: str = "auto") -> torch.device:
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if options.check_device(name) == "auto":
        return torch.device(next((kind for kind, there in available.items() if there()), "cpu"))
    device = torch.device(name)
    if device.type in available and not available[device.type]():
        raise MakemoreError(f"--device: {device.type.upper()} is not available on this machine; use --device cpu "
                            "(or auto)")
    return device


def note_changed_data(ckpt: dict, data: Data, strict: bool, warn) -> None:
    """Warn (or with strict refuse) when the data file given is not the one a checkpoint was trained on."""
    recorded, trained_on = ckpt["data"]["path"], ckpt["data"]["fingerprint"]
    if data.fingerprint == trained_on:
        return
    if same_file(data.path, recorded):
        message = (f"{printable(data.path)} has changed since training (fingerprint {data.fingerprint} now, "
                   f"{printable(trained_on)} when the checkpoint was trained)")
    else:
        message = (f"{printable(data.path)} (fingerprint {data.fingerprint}) is not the data the checkpoint was "
                   f"trained on ({printable(recorded)}, fingerprint {printable(trained_on)})")
    if strict:
        raise DataError(message)
    warn("warning: " + message)


@dataclass
class Trained:
    """A loaded checkpoint: the model, its vocabulary and everything recorded about its training."""

    path: Path
    ckpt: dict
    model: torch.nn.Module
    vocab: Vocab

    @property
    def name(self) -> str:
        return self.ckpt["model"]

    @property
    def block_size(self) -> int:
        return self.model.block_size

    @property
    def labels(self) -> list[str] | None:
        """The label names of a labelled model (sorted; a label's id is its place), else None."""
        return self.ckpt["labels"]["names"] if "labels" in self.ckpt else None

    @property
    def label_counts(self) -> list[int] | None:
        """The training items of each label (in the order of labels), or None."""
        return self.ckpt["labels"]["counts"] if "labels" in self.ckpt else None

    def label_ids(self, names, what: str = "--label") -> list[int]:
        """The ids of the label names given; a one-line MakemoreError for an unlabelled model or an unknown label."""
        names = [names] if isinstance(names, str) else list(names)
        labels = self.require_labels(what)
        ids = {label: i for i, label in enumerate(labels)}
        for name in names:
            if name not in ids:
                raise MakemoreError(f"{what} {name!r} is not a label of this model; its labels: {', '.join(labels)}")
        return [ids[name] for name in names]

    def require_labels(self, what: str) -> list[str]:
        """The label names; a MakemoreError naming what needs them when the model was trained without labels."""
        if self.labels is None:
            raise MakemoreError(f"{printable(self.path)}: the model was trained without labels, so {what} does not "
                                "apply; train it on labelled data (--labels) for that")
        return self.labels

    def items(self) -> list[str]:
        return self.ckpt["items"].split("\n") if self.ckpt.get("items") else []

    def splits(self, data: Data | None = None) -> dict[str, list[str]]:
        """The items of each split (of data, else of the items the checkpoint keeps)."""
        return self.labelled_splits(data)[0]

    def check_labels(self, data: Data) -> None:
        """A DataError unless data has the labels the model was trained on (or both have none)."""
        if data.labels != self.labels:
            raise DataError(f"{printable(data.path)} has the labels {shown_labels(data.labels)}; the model was "
                            f"trained on {shown_labels(self.labels)}" + (" (give --labels)" if data.labels is None else ""))

    def labelled_splits(self, data: Data | None = None) -> tuple[dict[str, list[str]], dict[str, list[int]] | None]:
        """The items of each split and their label ids (None for an unlabelled model), as training split them."""
        if data is not None:
            self.check_labels(data)
            items, item_labels, name = data.items, data.item_labels, printable(data.path)
        else:
            items, item_labels, name = self.items(), self.ckpt.get("item_labels"), printable(self.ckpt["data"]["path"])
        return split_labelled(items, item_labels, self.labels, tuple(self.ckpt["split"]["fractions"]),
                              self.ckpt["split"]["seed"], name)

    def evaluate(self, split: str = "dev", data: str | Path | None = None, strict: bool = False, warn=None,
                 progress: bool = False, classify: bool = False, **labelling) -> dict:
        """Mean NLL per character (nats) and perplexity of one split (or 'all') of the items the checkpoint keeps,
        or of data (a warning, or with strict a DataError, when that is the training file, changed). A labelled
        model's also per label ("labels": {label: {loss, n_chars, n_items}}); with classify, the accuracy of
        classify on the split and its confusion ({true label: {predicted label: items}})."""
        if classify:
            self.require_labels("--classify")
        if data is None and not self.ckpt.get("items"):
            raise CheckpointError(f"{printable(self.path)}: keeps no items of the data it was trained on; give the "
                                  "data file with --data")
        # the file the checkpoint records is never read
        loaded = Data.read(data, **labelling) if data is not None else None
        if loaded is not None and same_file(loaded.path, self.ckpt["data"]["path"]):
            note_changed_data(self.ckpt, loaded, strict, warn or (lambda message: print(message, file=sys.stderr)))
        if split == "all":  # in the file's order, unsplit
            if loaded is not None:
                self.check_labels(loaded)
            items = loaded.items if loaded is not None else self.items()
            labels = loaded.item_labels if loaded is not None else self.ckpt.get("item_labels")
        else:
            parts, part_labels = self.labelled_splits(loaded)
            items, labels = parts[split], part_labels[split] if part_labels else None
        if not items:
            raise DataError(f"the {split} split is empty (trained with --splits "
                            f"{','.join(f'{f:g}' for f in self.ckpt['split']['fractions'])})")
        self.vocab.check_items(items, f"the {split} split of {printable(loaded.path if loaded else self.path)}")
        result = dict(split=split, **self._losses(items, labels, progress), model=self.name, checkpoint=str(self.path))
        if classify:
            predicted = self.posteriors(items).argmax(1).tolist()
            names = self.labels
            confusion = {true: dict.fromkeys(names, 0) for true in names}
            for true, guess in zip(labels, predicted):
                confusion[names[true]][names[guess]] += 1
            result.update(accuracy=sum(t == g for t, g in zip(labels, predicted)) / len(items), confusion=confusion)
        return result

    def _losses(self, items: list[str], labels: list[int] | None, progress: bool) -> dict:
        """loss, perplexity, n_chars and n_items of the items, and a labelled model's per label ("labels"): each
        label's items evaluated apart, the overall loss their mean weighted by characters."""
        def dataset(part, part_labels):
            return build_dataset(part, self.vocab, self.block_size, self.model.whole_items,
                                 part_labels).to(self.model.device)

        if labels is None:
            ds = dataset(items, None)
            loss, n_chars, per_label = evaluate(self.model, ds, progress=progress), ds.n_targets, None
        else:
            per_label, total = {}, 0.0
            for label, name in enumerate(self.labels):
                mine = [item for item, owner in zip(items, labels) if owner == label]
                per_label[name] = dict(loss=float("nan"), n_chars=0, n_items=len(mine))  # nan: no item to judge by
                if mine:
                    ds = dataset(mine, [label] * len(mine))
                    per_label[name].update(loss=evaluate(self.model, ds, progress=progress), n_chars=ds.n_targets)
                    total += per_label[name]["loss"] * ds.n_targets
            n_chars = sum(part["n_chars"] for part in per_label.values())
            loss = total / n_chars
        result = dict(loss=loss, perplexity=math.exp(loss) if loss < 700 else float("inf"), n_chars=n_chars,
                      n_items=len(items))
        if per_label is not None:
            result["labels"] = per_label
        return result

    def posteriors(self, items: list[str]) -> torch.Tensor:
        """(items, labels) float64: p(label | item), proportional to p(item | label) p(label), the prior p(label)
        being the labels' share of the training items; an item impossible under every label gets the prior."""
        self.require_labels("classifying")
        counts = torch.tensor(self.label_counts, dtype=torch.float64)
        log_prior = (counts / counts.sum()).log()
        joint = log_probs_by_label(self.model, self.vocab, list(items)) + log_prior
        impossible = torch.isneginf(joint).all(1, keepdim=True)
        return torch.softmax(torch.where(impossible, log_prior, joint), dim=1)

    def classify(self, items: list[str], top: int | None = None) -> list[dict]:
        """For each item: {item, label (the most likely), labels: [{label, probability}] most likely first (the
        top ones)}, the posterior p(label | item) of posteriors()."""
        names = self.require_labels("classify")
        if top is not None and top < 1:
            raise OptionError(f"--top must be at least 1, not {top}")
        items = list(items)
        self.vocab.check_items(items, "the items to classify")
        if not items:
            return []
        posterior = self.posteriors(items)
        # most likely first; ties in label order
        probs, order = posterior.sort(dim=1, descending=True, stable=True)
        k = min(top or len(names), len(names))
        return [dict(item=item, label=names[ids[0]],
                     labels=[dict(label=names[i], probability=p) for i, p in zip(ids[:k], ps[:k])])
                for item, ids, ps in zip(items, order.tolist(), probs.tolist())]

    def score(self, items: list[str], label: str | None = None) -> list[dict]:
        """Every transition of each item with its probability, and the item's total and mean NLL (nats). A labelled
        model scores each item under label, else under its most likely label (classify); each result says which
        ("label") and how it was chosen ("label_source": "given" or "most likely")."""
        if label is not None:
            self.label_ids([label])
        self.vocab.check_items(items, "the items to score")
        if self.labels is None:
            return instruments.score(self.model, self.vocab, items)
        ids, source = self.scoring_labels(items, label)
        results = instruments.score(self.model, self.vocab, items, ids)
        for result, i in zip(results, ids):
            result.update(label=self.labels[i], label_source=source)
        return results

    def scoring_labels(self, items: list[str], label: str | None = None) -> tuple[list[int] | None, str | None]:
        """The label id each item is judged under (label's, else the item's most likely) and which of the two
        ("given" or "most likely"); (None, None) for an unlabelled model given no label."""
        if label is not None:
            return self.label_ids([label]) * len(items), "given"
        if self.labels is None:
            return None, None
        return self.posteriors(items).argmax(1).tolist() if items else [], "most likely"

    def sample(self, n: int = 10, seed: int | None = None, temperature: float = 1.0, top_k: int | None = None,
               prefix: str = "", max_len: int | None = None, *, exclude=(), label=None, progress: bool = False,
               warn=None, **constraints) -> Samples:
        """Draw n items that meet every constraint (constraints: the other fields of constraints.Request, named as
        the options of `makemore sample`): a Samples list, shorter only when max_tries or patience ran out
        (samples.report() says why); NothingFound when no draw met them. warn: called with each note. label: a
        labelled model's label, or several to draw among (default: all), each item's in proportion to their
        training counts; samples.labels says each item's."""
        labels = () if label is None else (label,) if isinstance(label, str) else tuple(label)
        request = Request(n=n, temperature=temperature, top_k=top_k, prefix=prefix, max_len=max_len,
                          exclude=frozenset(exclude), labels=labels, **constraints)
        drawing = self.draw(request, seed, progress)
        for note in drawing.notes:
            (warn or (lambda message: print(message, file=sys.stderr)))(note)
        return drawing.collect()

    def draw(self, request: Request, seed: int | None = None, progress: bool = False) -> Sampler:
        """The streaming form of sample: a Sampler to iterate for the items as they are found (nothing is
        drawn before). Its notes are for the user; the same errors as sample, NothingFound at the end."""
        asked = set(self.label_ids(request.labels)) if request.labels else None
        if request.new and not self.ckpt.get("items"):
            raise CheckpointError(f"{self.path}: keeps no training items, so --new cannot tell new items apart")
        weights = None
        if self.labels is not None:  # in proportion to the training counts, among the labels asked for
            weights = [count if asked is None or i in asked else 0 for i, count in enumerate(self.label_counts)]
        return Sampler(self.model, self.vocab, request, stream.key_of(seed), length_cap(self.items(), request.prefix),
                       frozenset(self.items() if request.new else ()), progress, self.labels, weights)

    def plot_loss(self, output: str | Path | None = None) -> Path:
        """The training curve as a PNG (default: beside the checkpoint); needs matplotlib."""
        if not self.ckpt.get("metrics"):
            raise CheckpointError(f"{self.path}: a {self.name} model is counted, not trained step by step, so it "
                                  "has no training curve")
        return plots.training_curve(self.ckpt["metrics"], self._output(output, plots.curve_path(self.path)),
                                    plots.curve_title(self.name, printable(self.ckpt["data"]["path"])))

    def plot_embeddings(self, output: str | Path | None = None) -> Path:
        """The lecture's scatter of the characters in the embedding table C, as a PNG; needs matplotlib."""
        plots.require()
        points, note, axes = instruments.embedding_2d(self.model)
        labels = [self.vocab.show(c) for c in self.vocab.chars]
        return plots.embeddings(points.tolist(), labels, self._output(output, self.path.with_suffix(".embeddings.png")),
                                f"{self.name} character embeddings C\n{note}", axes)

    def plot_counts(self, output: str | Path | None = None) -> Path:
        """The lecture's bigram table (counts, or a bigram-nn's probabilities) as a PNG; needs matplotlib."""
        plots.require()
        if len(self.vocab) > plots.MAX_TABLE_VOCAB:  # refused before the table is computed
            raise MakemoreError(f"{self.path}: the bigram table of {len(self.vocab):,} characters is too large to "
                                f"draw (plot counts draws at most {plots.MAX_TABLE_VOCAB:,}: beyond that a cell is "
                                "less than a pixel)")
        weights = torch.tensor(self.label_counts, dtype=torch.float64) if self.labels is not None else None
        table, counts = instruments.bigram_table(self.model, weights)
        labels = [self.vocab.show(c) for c in self.vocab.chars]
        what = "bigram counts N[prev, next]" if counts else "bigram probabilities P[prev, next]"
        if self.labels is not None and not counts:
            what += ", the labels' averaged by their training counts"
        return plots.bigram_table(table, labels, self._output(output, self.path.with_suffix(".counts.png")),
                                  f"{self.name}: {what}", counts)

    def plot_confusion(self, output: str | Path | None = None, split: str = "dev") -> Path:
        """The confusion matrix of classify on a split (eval --classify) as a PNG; needs matplotlib."""
        plots.require()
        path = self._output(output, self.path.with_suffix(".confusion.png"))
        result = self.evaluate(split, classify=True)
        return plots.confusion(result["confusion"], path, f"{self.name}: classify on {split}, accuracy "
                               f"{100 * result['accuracy']:.1f}% of {result['n_items']:,} items")

    def _output(self, given, default: Path) -> Path:
        """Where a plot goes: the path given, or default beside the checkpoint; never the checkpoint itself."""
        path = Path(given) if given is not None else default
        check_not_inputs([path], [self.path])
        return path

    def log_prob(self, items: list[str], labels: list[str] | None = None) -> list[float]:
        """Log-probability (nats) of each item under the model, its end included; a labelled model's under each
        item's label (labels)."""
        ids = self.label_ids(labels, "a label") if labels is not None else None
        if self.labels is not None and ids is None:
            raise MakemoreError("a labelled model gives each item's probability under a label: give their labels")
        self.vocab.check_items(items, "the items")
        return log_probs(self.model, self.vocab, list(items), ids).tolist()

    def describe(self, items: list[str], nearest: bool = False, labels: list[str] | None = None) -> list[dict]:
        """One record per item: item, (a labelled model's) label, log_prob (total, under that label),
        log_prob_per_char (per predicted token: the characters and the end, the unit of eval's loss), split (train,
        dev, test or none), and with nearest the closest item of the train split and its edit distance."""
        total = self.log_prob(items, labels)
        where = self.where(items)
        records = [dict(item=item, log_prob=round(lp, 4), log_prob_per_char=round(lp / (len(item) + 1), 4),
                        split="none" if w == "new" else w) for item, lp, w in zip(items, total, where)]
        if labels is not None:
            records = [dict(item=record.pop("item"), label=label, **record) for record, label in zip(records, labels)]
        if nearest and items:
            train_items = self.splits()["train"]
            if not train_items:
                raise CheckpointError(f"{self.path}: keeps no training items to compare with")
            index, distance = closest(list(items), train_items)
            for record, i, d in zip(records, index, distance):
                record.update(nearest=train_items[i], distance=d)
        return records

    def where(self, items: list[str]) -> list[str]:
        """For each item: the split of the training data holding it ('train', 'dev', 'test') or 'new'."""
        return [self.split_of.get(item, "new") for item in items]

    @functools.cached_property
    def split_of(self) -> dict[str, str]:
        parts = self.splits()  # an item in several splits is reported by the first
        return {item: split for split in reversed(SPLIT_NAMES) for item in parts[split]}


def shown_labels(labels: list[str] | None) -> str:
    return "none" if labels is None else ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")


EVAL_ROWS = 4096  # the examples of one evaluation chunk (train.evaluate) or a large sampling batch


def load(path: str | Path | None = None, out: str | Path = "out", device: str = "cpu",
         model: str | None = None, n_threads: int | None = None) -> Trained:
    """Load a checkpoint (the one trained last in out when path is None); torch's threads: n_threads, or
    makemore.threads' choice for the model's size and the machine's load."""
    dev = resolve_device(device)
    path = Path(path) if path is not None else checkpoint.latest(out)
    ckpt = checkpoint.load(path)
    if model is not None and ckpt["model"] != model:
        raise CheckpointError(f"{path}: holds a {ckpt['model']} model, not {model}")
    net = model_from(ckpt, path)
    net.to(dev).eval()
    threads.setup(n_threads, dev, threads.work(net, EVAL_ROWS))
    return Trained(path, ckpt, net, Vocab(ckpt["vocab"]))


def predicts_numbers(net) -> bool:
    """Whether a model predicts numbers (no NaN or +inf logits) for a context of boundary tokens, under each label:
    finite weights can still predict NaN (a BatchNorm variance below 0, an add-k overflowing float64)."""
    label = torch.arange(net.n_labels, device=net.device) if net.n_labels > 1 else None
    with torch.no_grad():
        windows = torch.zeros(net.n_labels, net.block_size, dtype=torch.long, device=net.device)
        logits = net.eval().next_logits(windows, label)
    return not (logits.isnan().any() or (logits == math.inf).any())


def model_from(ckpt: dict, path) -> torch.nn.Module:
    """The model of a checkpoint that checkpoint.load has checked, taking its tensors as its own (the weights
    kept for --resume too, so that they are checked); what only the model can judge is a CheckpointError."""
    try:
        cls = get_model_class(ckpt["model"])
        resume = ckpt.get("resume")
        states = ([resume["state_dict"]] if isinstance(resume, dict) else []) + [ckpt["state_dict"]]
        n_labels = len(ckpt["labels"]["names"]) if "labels" in ckpt else 1
        net = cls.from_state(cls.config_from(ckpt["config"], complete=True), len(ckpt["vocab"]), *states,
                             n_labels=n_labels)
    except (MakemoreError, KeyError, TypeError, RuntimeError, ValueError, IndexError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path}: does not fit its model ({type(e).__name__}: {first})") from None
    if not predicts_numbers(net):
        raise CheckpointError(f"{path}: does not fit its model (its predictions are not numbers); train again or "
                              "restore a copy")
    return net
