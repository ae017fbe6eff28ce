"""Mix trained checkpoints into one model: weights fitted on the dev split by expectation-maximisation.

With p_ti the probability component i gives to the t-th dev character, the mixture's dev loss is
-mean_t log sum_i w_i p_ti. EM alternates between how much each component explains each character
(responsibilities r_ti = w_i p_ti / sum_j w_j p_tj) and new weights w_i = mean_t r_ti; every step can
only lower the loss (Dempster, Laird and Rubin 1977), and on two or three components it settles in a
few dozen cheap steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import api, checkpoint
from makemore.dataset import build_dataset
from makemore.errors import CheckpointError, DataError
from makemore.models.mixture import Mixture, MixtureConfig

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


@dataclass
class MixResult:
    path: Path
    components: list[str]
    weights: list[float]
    component_dev_losses: list[float]
    dev_loss: float
    iterations: int  # EM steps; 0 when the weights were given
    seconds: float


def _check_same_data(trained: list) -> None:
    first = trained[0]
    for other in trained[1:]:
        for what, key in (("data file", "data"), ("split", "split"), ("vocabulary", "vocab")):
            a, b = first.ckpt[key], other.ckpt[key]
            if key == "data":
                a, b = a["fingerprint"], b["fingerprint"]
            if a != b:
                raise CheckpointError(f"{first.path} and {other.path} were trained on a different {what}; "
                                      "mix only checkpoints of the same data file, split and vocabulary")


def mix(paths: list, out: str | Path = "out", name: str = "mixture", weights: list | None = None,
        device: str = "cpu") -> MixResult:
    """Load the checkpoints, fit the mixture weights on dev (or use the given ones), write the mixture."""
    t0 = time.perf_counter()
    trained = [api.load(p, device=device) for p in paths]
    _check_same_data(trained)
    if weights is not None:
        if len(weights) != len(trained):
            raise api.OptionError(f"--weights: {len(weights)} weights for {len(trained)} checkpoints")
        if not all(w >= 0 for w in weights) or sum(weights) <= 0:
            raise api.OptionError("--weights must be numbers >= 0, not all 0")
    first = trained[0]
    dev_items = first.splits(first.read_data())["dev"]
    if not dev_items and weights is None:
        raise DataError("the checkpoints' dev split is empty, so there is nothing to fit the weights on; "
                        "give them with --weights")
    models = [t.model for t in trained]
    losses, iterations = [float("nan")] * len(models), 0
    if dev_items:
        dev = build_dataset(dev_items, first.vocab, max(m.block_size for m in models)).to(api.resolve_device(device))
        P = target_probs(models, dev)
        losses = (-P.log().mean(0)).tolist()
        if weights is None:
            fitted, history = em(P)
            weights, iterations = fitted.tolist(), len(history) - 1
    total = sum(weights)
    weights = [w / total for w in weights]
    config = MixtureConfig(
        components=tuple(dict(model=t.ckpt["model"], config=t.ckpt["config"]) for t in trained),
        weights=tuple(weights),
    )
    net = Mixture(config, len(first.vocab))
    net.components.load_state_dict(torch.nn.ModuleList(models).state_dict())
    dev_loss = float("nan")
    if dev_items:
        dev_loss = -(P @ torch.tensor(weights, dtype=torch.float64)).log().mean().item()
    out = Path(out)
    api.check_writable(out)
    path = out / f"{name}{checkpoint.SUFFIX}"
    ckpt = checkpoint.build(
        model="mixture", config=config, vocab=first.vocab.chars, train={}, split=first.ckpt["split"],
        data=first.ckpt["data"], items=first.ckpt.get("items", ""), state_dict=net.state_dict(), step=0,
        best_dev_loss=dev_loss, metrics=[],
        mix=dict(components=[str(p) for p in paths], component_dev_losses=losses, dev_loss=dev_loss,
                 em_iterations=iterations),
    )
    checkpoint.save(ckpt, path)
    checkpoint.write_latest(out, path)
    return MixResult(path, [str(p) for p in paths], weights, losses, dev_loss, iterations, time.perf_counter() - t0)
