"""The lecture's instruments: the probability of every transition of an item, the learning-rate sweep, and the
numbers behind the plots (drawn by makemore.plots)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from makemore.batches import BatchSampler
from makemore.dataset import build_dataset
from makemore.errors import CheckpointError, DataError, TrainingError
from makemore.models.base import next_log_probs
from makemore.threads import Governor
from makemore.train import TrainStep, chunk_rows


@torch.no_grad()
def score(model, vocab, items: list[str], labels: list[int] | None = None) -> list[dict]:
    """For each item, every transition (context -> next character) with its probability and log-probability,
    then the item's total and mean negative log-likelihood (nats): inf where a transition has probability 0
    (an unsmoothed counting model), as the lecture's 'andrejq' does. labels: each item's label id (a labelled
    model)."""
    if not items:
        return []
    if "" in items:
        # the dataset builder has no example for an empty item, and no data file holds one
        raise DataError("cannot score an empty item; give items of at least one character")
    device = model.device
    ds = build_dataset(items, vocab, model.block_size, labels=labels).to(device)
    model.eval()
    shown = [vocab.show(c) for c in vocab.chars]
    # a chunk at a time, sized to fit (a wide context makes each row large), its contexts spelt out as it goes
    transitions = []
    for x, y, label in ds.chunks(chunk_rows(model, 16384, device)):
        logp = next_log_probs(model, x, label).gather(1, y[:, None]).squeeze(1).cpu().tolist()
        for row, target, lp in zip(x.cpu().tolist(), y.cpu().tolist(), logp):
            transitions.append(dict(context="".join(shown[t] for t in row), next=shown[target],
                                    prob=math.exp(lp), logprob=lp))
    results, start = [], 0
    for item in items:
        n = len(item) + 1  # every character, then the boundary that ends the item
        mine = transitions[start:start + n]
        nll = -sum(t["logprob"] for t in mine)
        results.append(dict(item=item, transitions=mine, nll=nll, mean_nll=nll / n, n=n))
        start += n
    return results


@dataclass
class Sweep:
    """The learning-rate sweep: the rate and the minibatch loss at each step, and the rate it suggests."""

    lrs: list[float]
    losses: list[float]  # nan where the loss stopped being finite
    smoothed: list[float]  # a centred moving average of losses (the raw ones are minibatch noise)
    suggested_lr: float
    suggested_step: int
    floor_step: int  # the lowest smoothed loss before the blow-up
    blowup_step: int | None  # first step whose smoothed loss left the valley, None if it never did
    planned_steps: int
    settings: dict = field(default_factory=dict)
    plot: Path | None = None  # the PNG file of the sweep, when one was drawn


def exponential_lrs(min_lr: float, max_lr: float, steps: int) -> torch.Tensor:
    """steps rates evenly spaced in log10 from min_lr to max_lr, the lecture's 10**linspace(-3, 0, 1000)."""
    return 10 ** torch.linspace(math.log10(min_lr), math.log10(max_lr), steps, dtype=torch.float64)


def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average over finite values (no lag, so the valley stays where it is); nan where none."""
    v = torch.tensor(values, dtype=torch.float64)
    ok = torch.isfinite(v)
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.where(ok, v, 0.0), 0)])
    ccount = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ok.double(), 0)])
    half = window // 2
    idx = torch.arange(len(values))
    lo, hi = (idx - half).clamp(min=0), (idx + half + 1).clamp(max=len(values))
    count = ccount[hi] - ccount[lo]
    return torch.where(count > 0, (csum[hi] - csum[lo]) / count.clamp(min=1), float("nan")).tolist()


# The loss has "blown up" once it is this many times the lowest smoothed loss so far (fastai stops at 4x).
BLOWUP_FACTOR = 4.0
# The suggestion is the valley's near edge (its floor is often a hair from blowing up): the first rate within this
# fraction of the descent above the floor; on names.txt, the lecture's 0.1 for SGD and our 3e-3 for AdamW.
VALLEY_TOLERANCE = 0.1


def suggest(losses: list[float]) -> tuple[int, int, int | None, list[float]]:
    """The valley before the loss blows up. Returns the suggested step, the step of the valley's floor,
    the blow-up step (the first whose smoothed loss exceeds BLOWUP_FACTOR times its lowest so far, or whose
    loss is not finite; None if no step does) and the smoothed losses."""
    smoothed = smooth(losses, max(1, len(losses) // 20))
    best, blowup = math.inf, None
    for i, (raw, s) in enumerate(zip(losses, smoothed)):
        if not math.isfinite(raw) or (best < math.inf and s > BLOWUP_FACTOR * best):
            blowup = i
            break
        best = min(best, s)
    if blowup == 0:
        raise TrainingError("the loss was not finite from the very first step: lower --min-lr")
    valley = smoothed[:blowup]
    floor_step = min(range(len(valley)), key=valley.__getitem__)
    floor, start = valley[floor_step], valley[0]
    near = floor + VALLEY_TOLERANCE * max(start - floor, 0.0)
    return next(i for i, s in enumerate(valley) if s <= near), floor_step, blowup, smoothed


def lr_sweep(net, train_set, optimizer, lrs: torch.Tensor, batch_size: int, seed: int, penalty: float,
             progress: bool, governor: Governor) -> Sweep:
    """Train net from its fresh state for len(lrs) steps, step i at rate lrs[i], with the training loop's steps
    and batches, recording the minibatch loss; stops once the loss is not finite or has blown up far above its
    minimum. penalty: the weight decay's term in the loss (TrainConfig.penalty)."""
    losses: list[float] = []
    best = ema = math.inf
    net.train()
    step = TrainStep(net, optimizer, penalty)
    batches = BatchSampler(train_set, batch_size, seed)
    for i in tqdm(range(len(lrs)), disable=not progress, leave=False, desc="lr-find", mininterval=0.5):
        step(*batches.next(), lrs[i].item())
        governor.tick(i + 1)
        value = step.take_loss().item()
        losses.append(value if math.isfinite(value) else math.nan)
        if not math.isfinite(value):
            break
        # an exponential average (online, unlike the centred one) decides when to stop early
        ema = value if ema == math.inf else 0.9 * ema + 0.1 * value
        best = min(best, ema)
        if i > 10 and ema > 2 * BLOWUP_FACTOR * best:
            break
    ran = [lr.item() for lr in lrs[:len(losses)]]
    at, floor_step, blowup, smoothed = suggest(losses)
    return Sweep(ran, losses, smoothed, ran[at], at, floor_step, blowup, len(lrs))


def embedding_2d(model) -> tuple[torch.Tensor, str, tuple[str, str]]:
    """The model's character embeddings C as 2-D points: as they are with 2 dimensions, else projected on
    their first two principal components. Returns the points, a note for the title and the axis names."""
    C = model.embeddings()
    if C is None:
        raise CheckpointError(f"a {model.name} model has no embedding table C to plot; "
                              "train a model that has one, such as --model mlp")
    C = C.detach().double().cpu()
    E = C.shape[1]
    if E == 1:
        return torch.cat([C, torch.zeros_like(C)], 1), "1 dimension, drawn along x", ("C[:, 0]", "")
    if E == 2:
        return C, "2 dimensions, as learned", ("C[:, 0]", "C[:, 1]")
    # PCA by SVD of the centred table: exact and deterministic, where pca_lowrank is randomised
    centred = C - C.mean(0)
    U, S, Vh = torch.linalg.svd(centred, full_matrices=False)
    Vh = Vh * torch.sign(Vh[:, :1]).where(Vh[:, :1] != 0, torch.ones(1, dtype=Vh.dtype))  # fix the signs
    share = (S[:2] ** 2).sum() / (S**2).sum().clamp(min=1e-300)
    note = f"first 2 principal components of {E} dimensions ({100 * share:.0f}% of the variance)"
    return centred @ Vh[:2].T, note, ("PC 1", "PC 2")


@torch.no_grad()
def bigram_table(model, label_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """The (V, V) table of a one-character-context model: the counts N of a counting model, else the
    probabilities P[prev, next] it predicts; a labelled network's is its labels' tables averaged, weighted by
    label_weights (n_labels,: their training counts). Returns the table and whether it holds counts."""
    N = model.bigram_counts()
    V = model.vocab_size
    if N is not None:
        return N.detach().cpu(), True
    if model.block_size != 1:
        raise CheckpointError(f"a {model.name} model sees {model.block_size} characters of context, so it has "
                              "no bigram table; plot counts draws bigram and bigram-nn models")
    device = model.device
    model.eval()
    contexts = torch.arange(V, device=device)[:, None]
    if model.n_labels == 1:
        return torch.softmax(model.next_logits(contexts).double(), dim=-1).cpu(), False
    if label_weights is None:
        raise ValueError("a labelled model's bigram table needs the labels' weights")
    weights = label_weights.double() / label_weights.sum()
    table = torch.zeros(V, V, dtype=torch.float64)
    for label, weight in enumerate(weights.tolist()):  # a label at a time: 256 labels' tables at once could be GBs
        every = torch.full((V,), label, device=device)
        table += weight * torch.softmax(model.next_logits(contexts, every).double(), dim=-1).cpu()
    return table, False


@torch.no_grad()
def top_contexts(model, k: int) -> tuple[list[list[int]], torch.Tensor]:
    """Beyond a bigram, the lecture's table for a counting n-gram: its k most frequent contexts (each block_size
    token ids) and the counts N[context, next] of what followed each, a (k, vocab_size) table."""
    from makemore.models.ngram import NGram

    if not isinstance(model, NGram):
        raise CheckpointError(f"a {model.name} model is not counted, so it has no table of counts")
    K, V = model.block_size, model.vocab_size
    keys = getattr(model, f"ngrams_{K + 1}").long().cpu()  # the longest order keeps the raw counts
    counts = getattr(model, f"counts_{K + 1}").long().cpu()
    contexts, owner = torch.unique_consecutive(keys // V, return_inverse=True)  # the keys are sorted
    totals = torch.zeros(len(contexts), dtype=torch.long).index_add_(0, owner, counts)
    top = totals.topk(min(k, len(contexts))).indices
    row = torch.full((len(contexts),), -1, dtype=torch.long)
    row[top] = torch.arange(len(top))
    kept = row[owner] >= 0
    table = torch.zeros(len(top), V, dtype=torch.long)
    table[row[owner][kept], (keys % V)[kept]] = counts[kept]
    digits = V ** torch.arange(K - 1, -1, -1)  # the oldest character is the most significant digit
    return (contexts[top][:, None] // digits % V).tolist(), table
