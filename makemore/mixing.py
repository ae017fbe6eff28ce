"""Fitting a mixture's weights (makemore.models.mixture) on the dev split: linear ones by expectation-maximisation
(em), log-linear ones by Newton's method (fit_log_linear)."""
from __future__ import annotations

import torch

from makemore.models.base import next_log_probs
from makemore.train import chunk_rows, long_work

KINDS = ("log-linear", "linear")
MAX_ITERATIONS = 500
TOLERANCE = 1e-9  # stop once a step lowers the mean dev loss by less than this (nats)
# a log-probability below this counts as this: a component that gives a character probability 0 then
# makes it all but impossible in a log-linear mixture instead of turning the sum into -inf (or nan at w 0)
LOG_FLOOR = -745.0  # about log of the smallest positive float64
MAX_LOG_LINEAR_WEIGHT = 1000.0
FIT_NUMBERS = 1 << 24  # log-probabilities (float64) held for a log-linear fit: a random subset of a large dev split


def em(P: torch.Tensor, iterations: int = MAX_ITERATIONS, tol: float = TOLERANCE) -> tuple[torch.Tensor, list[float]]:
    """Linear weights maximising mean_t log sum_i w_i P[t, i], from uniform, and the loss after each step. P (N, M):
    each component's probability of each target; a target that none can produce (its loss infinite whatever the
    weights) is left out. Each step's weights are the mean responsibilities; no step raises the loss."""
    P = P.double()
    P = P[P.sum(1) > 0]
    M = P.shape[1]
    w = torch.full((M,), 1.0 / M, dtype=torch.float64)
    losses = [-(P @ w).log().mean().item()]
    for _ in range(iterations):
        mixed = P @ w  # (N,)
        w = (P * w / mixed[:, None]).mean(0)  # the mean responsibility of each component
        w = w / w.sum()  # exact in theory; keeps round-off from drifting
        losses.append(-(P @ w).log().mean().item())
        if losses[-2] - losses[-1] < tol:
            break
    return w, losses


def _scores(models: list, dataset, n: int, seed: int, rows: int, progress: bool, score) -> tuple:
    """score(x, y) (on the CPU) of n of the dataset's examples in order, all or a random subset, and their
    targets; in chunks of at most rows that every model's forward pass fits (the models take turns on one)."""
    if n < len(dataset):
        ix = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    else:
        ix = torch.arange(len(dataset))
    ix = ix.to(dataset.positions.device)
    rows = min([rows] + [chunk_rows(m, 16384, dataset.positions.device) for m in models])
    parts, targets = [], []
    with torch.no_grad(), long_work(-(-n // rows), progress, "scoring dev") as bar:
        for start in range(0, n, rows):
            x, y, label = dataset.batch(ix[start:start + rows])
            parts.append(score(x, y, label))
            targets.append(y.cpu())
            bar.update()
    return torch.cat(parts), torch.cat(targets)


def target_probs(models: list, dataset, limit: int = FIT_NUMBERS, seed: int = 0,
                 progress: bool = False) -> torch.Tensor:
    """(N, M): each model's probability of every target of the dataset, or of a random subset of them when all
    would hold more than limit numbers (EM then fits on those)."""
    def probs(x, y, label):
        return torch.stack([next_log_probs(m, x, label).gather(1, y[:, None]).squeeze(1).cpu() for m in models], 1).exp()

    return _scores(models, dataset, min(len(dataset), max(1, limit // len(models))), seed, 16384, progress, probs)[0]


def log_linear_loss(L: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Mean -log of the target's probability under the log-linear mixture with weights w; L (N, M, V) floored
    log-probabilities, y (N,) targets."""
    mixed = torch.einsum("nmv,m->nv", L, w)
    return (mixed.logsumexp(1) - mixed.gather(1, y[:, None]).squeeze(1)).mean().item()


def fit_log_linear(L: torch.Tensor, y: torch.Tensor, iterations: int = 100,
                   tol: float = TOLERANCE) -> tuple[torch.Tensor, list[float]]:
    """Weights w >= 0 minimising log_linear_loss (convex in w), from w_i = 1/M, and the loss after each step: Newton
    steps (gradient: mean of E_q[L_i] - L_i(target); Hessian: the covariance of the L_i under the mixture q) on the
    weights not held at 0 by their gradient, halved until the loss falls."""
    L, y = L.double(), y.long()
    N, M, V = L.shape
    w = torch.full((M,), 1.0 / M, dtype=torch.float64)
    losses = [log_linear_loss(L, y, w)]
    at_target = L.gather(2, y[:, None, None].expand(N, M, 1)).squeeze(2)  # (N, M)
    for _ in range(iterations):
        q = torch.einsum("nmv,m->nv", L, w).softmax(1)
        mean = torch.einsum("nv,nmv->nm", q, L)  # E_q[L_i] per target
        grad = (mean - at_target).mean(0)
        hess = torch.einsum("nv,nmv,nkv->mk", q, L, L) / N - mean.T @ mean / N
        free = (w > 0) | (grad < 0)
        f = free.nonzero().squeeze(1)
        if len(f) == 0:
            break
        H = hess[f][:, f] + 1e-9 * torch.eye(len(f), dtype=torch.float64)
        direction = torch.zeros_like(w)
        direction[f] = -torch.linalg.solve(H, grad[f])
        step, improved = 1.0, False
        for _ in range(40):
            candidate = (w + step * direction).clamp(0, MAX_LOG_LINEAR_WEIGHT)
            loss = log_linear_loss(L, y, candidate)
            if loss < losses[-1]:
                w, improved = candidate, True
                break
            step /= 2
        if not improved:
            break
        losses.append(loss)
        if losses[-2] - losses[-1] < tol:
            break
    return w, losses


def log_probs(models: list, dataset, vocab_size: int, limit: int = FIT_NUMBERS,
              seed: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, M, V) each model's log-probabilities (float64, floored at LOG_FLOOR) and (N,) the targets, for every
    example of the dataset, or for a random subset of them when all would hold more than limit numbers."""
    def floored(x, y, label):
        return torch.stack([next_log_probs(m, x, label) for m in models], 1).clamp_min_(LOG_FLOOR).cpu()

    # as many examples, at most, in a chunk: its (rows, M, V) log-probabilities are held at once
    most = max(1, limit // (len(models) * vocab_size))
    return _scores(models, dataset, min(len(dataset), most), seed, most, progress, floored)
