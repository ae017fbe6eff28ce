"""Mix trained checkpoints into one model: weights fitted on the dev split by expectation-maximisation.

With p_ti the probability component i gives to the t-th dev character, the mixture's dev loss is
-mean_t log sum_i w_i p_ti. EM alternates between how much each component explains each character
(responsibilities r_ti = w_i p_ti / sum_j w_j p_tj) and new weights w_i = mean_t r_ti; every step can
only lower the loss (Dempster, Laird and Rubin 1977), and on two or three components it settles in a
few dozen cheap steps.
"""
from __future__ import annotations

import torch

MAX_ITERATIONS = 500
TOLERANCE = 1e-9  # stop once an EM step lowers the mean dev loss by less than this (nats)


def em(P: torch.Tensor, iterations: int = MAX_ITERATIONS, tol: float = TOLERANCE) -> tuple[torch.Tensor, list[float]]:
    """Mixture weights maximising mean log sum_i w_i P[t, i], from uniform; and the loss after each step.

    P is (N, M): the probability each of M components gives to each of N targets. Targets that no
    component can produce (every P[t] zero) are left out: their loss is infinite whatever the weights.
    """
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


def target_probs(models: list, dataset) -> torch.Tensor:
    """(N, M): each model's probability of every target of the dataset, each reading its own block_size."""
    columns = [[] for _ in models]
    with torch.no_grad():
        for x, y in dataset.chunks(16384):
            for i, model in enumerate(models):
                logits = model(x[:, x.shape[1] - model.block_size:]).double()
                columns[i].append(torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1).exp().cpu())
    return torch.stack([torch.cat(c) for c in columns], dim=1)
