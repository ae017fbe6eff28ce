"""Every picture makemore draws, as PNG files: all its matplotlib code, an optional extra imported only here, on
the Agg canvas (no pyplot state, no display). Without it the plot commands fail with PlotUnavailable."""
from __future__ import annotations

import io
import math
from pathlib import Path

from makemore.files import atomic_write
from makemore.errors import MakemoreError

INSTALL_HINT = 'plotting needs matplotlib; install the extra with: pip install "makemore[plot]"'


class PlotUnavailable(MakemoreError):
    """matplotlib is not installed."""


def _axes(width: float, height: float):
    """The axes of a new figure of width x height inches."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def require() -> None:
    """Fail early, before any slow work, when a plot cannot be drawn."""
    _axes(1, 1)


def available() -> bool:
    try:
        require()
    except PlotUnavailable:
        return False
    return True


def _save(ax, path: Path, dpi: int) -> Path:
    """Write ax's figure as a PNG of at most 128 colours: a quarter of the bytes, no visible change on these plots."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB").quantize(colors=128)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: image.save(f, format="png", optimize=True))
    except OSError as e:
        raise MakemoreError(f"cannot write the plot {path}: {e.strerror}") from None
    return path


def curve_path(checkpoint_path: Path) -> Path:
    """Where the loss curve of a checkpoint goes: out/mlp.safetensors -> out/mlp.loss.png."""
    return Path(checkpoint_path).with_suffix(".loss.png")


def curve_title(model: str, data_path) -> str:
    return f"{model} on {Path(data_path).name}"


def training_curve(metrics: list[dict], path: Path, title: str) -> Path:
    """Train loss at every log point (the mean since the previous one) and dev loss at every evaluation."""
    ax = _axes(7, 4.2)
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["train_loss"] for m in metrics], lw=1, color="tab:blue", label="train (minibatches)")
    dev = [m for m in metrics if "dev_loss" in m]
    if dev:
        ax.plot([m["step"] for m in dev], [m["dev_loss"] for m in dev], "o-", ms=4, color="tab:orange",
                label="dev (whole split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean NLL per character, nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(ax, path, 90)


def write_curve_if_possible(metrics: list[dict] | None, path: Path, title: str) -> Path | None:
    """The end-of-training curve: drawn when matplotlib is installed and there are steps to draw."""
    if not metrics or not available():
        return None
    return training_curve(metrics, path, title)


def embeddings(points, labels: list[str], path: Path, title: str, axis_names=("dim 0", "dim 1")) -> Path:
    """The lecture's scatter: each character a big dot at its 2-D position, labelled in white."""
    ax = _axes(6.5, 6.5)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.scatter(xs, ys, s=260, color="tab:blue")
    for x, y, label in zip(xs, ys, labels):
        ax.text(x, y, label, ha="center", va="center", color="white", fontsize=9, fontweight="bold")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(ax, path, 80)


# the most characters whose bigram table is drawn: beyond it a cell of the 14-inch figure is less than a pixel
MAX_TABLE_VOCAB = 1000
MAX_CELL_TEXT = 40  # characters up to which each cell is labelled with its bigram and value
MAX_TICK_LABELS = 100  # characters up to which the rows and columns are labelled


def bigram_table(table, labels: list[str], path: Path, title: str, counts: bool) -> Path:
    """The lecture's table as a heatmap: row = previous character, column = next, each cell labelled with its
    bigram and count (or probability) while they are readable; more than MAX_TABLE_VOCAB characters are refused."""
    V = len(labels)
    if V > MAX_TABLE_VOCAB:
        raise MakemoreError(f"the bigram table of {V:,} characters is too large to draw (at most "
                            f"{MAX_TABLE_VOCAB:,}: a cell would be less than a pixel)")
    size = min(14.0, 2 + 0.42 * V)
    ax = _axes(size, size)
    ax.imshow(table.numpy(), cmap="Blues")
    if V <= MAX_CELL_TEXT:
        rows = table.tolist()
        dark = 0.55 * max(max(row) for row in rows)
        for i in range(V):
            for j in range(V):
                value = rows[i][j]
                shown = f"{value:.0f}" if counts else f"{value:.2f}".removeprefix("0")
                # one text per cell, not two: drawing ~1,500 texts is most of the time this takes
                ax.text(j, i, f"{labels[i]}{labels[j]}\n{shown}", ha="center", va="center", fontsize=6.5,
                        linespacing=1.1, color="white" if value > dark else "#555555")
    if V <= MAX_TICK_LABELS:
        ax.set_xticks(range(V), labels, fontsize=8)
        ax.set_yticks(range(V), labels, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xlabel("next character")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("previous character")
    ax.set_title(title, fontsize=11)
    return _save(ax, path, 72)


MAX_CONFUSION_TEXT = 30  # labels up to which each cell of the confusion matrix is labelled with its count


def confusion(matrix: dict, path: Path, title: str) -> Path:
    """A confusion matrix ({true label: {predicted label: items}}) as a heatmap: row = true label, column = the
    label classify predicted, each row coloured by its share of the row's items (a rare label stays readable)."""
    names = list(matrix)
    counts = [[matrix[true][guess] for guess in names] for true in names]
    shares = [[n / max(1, sum(row)) for n in row] for row in counts]
    L = len(names)
    size = min(14.0, 3 + 0.45 * L)
    ax = _axes(size, size)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if L <= MAX_CONFUSION_TEXT:
        for i in range(L):
            for j in range(L):
                ax.text(j, i, f"{counts[i][j]:,}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i][j] > 0.55 else "#333333")
    if L <= MAX_TICK_LABELS:
        ax.set_xticks(range(L), names, fontsize=8, rotation=90 if L > 12 else 0)
        ax.set_yticks(range(L), names, fontsize=8)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    return _save(ax, path, 80)


def lr_sweep(sweep, path: Path) -> Path:
    """Loss against the exponent of the learning rate, raw and smoothed, with the suggested rate marked."""
    ax = _axes(7, 4.2)
    exps = [math.log10(lr) for lr in sweep.lrs]
    ax.plot(exps, sweep.losses, lw=0.6, alpha=0.5, color="tab:blue", label="minibatch loss")
    ax.plot(exps, sweep.smoothed, lw=1.8, color="tab:blue", label="smoothed")
    suggested = math.log10(sweep.suggested_lr)
    ax.axvline(suggested, color="tab:red", ls="--",
               label=f"suggested lr {sweep.suggested_lr:.3g} (10^{suggested:.2f})")
    floor = math.log10(sweep.lrs[sweep.floor_step])
    ax.axvline(floor, color="gray", ls=":", label=f"valley floor {sweep.lrs[sweep.floor_step]:.3g}")
    finite = [s for s in sweep.smoothed if math.isfinite(s)]
    if finite:
        # keep the valley readable: the loss far past the blow-up would flatten it
        low, start = min(finite), finite[0]
        ax.set_ylim(low - 0.25 * (start - low) - 0.05, max(start, low) + 0.6 * max(start - low, 0.2))
    s = sweep.settings
    ax.set_title(f"lr-find: {s.get('model', '')}, {s.get('optimizer', '')}, batch {s.get('batch_size', '')}")
    ax.set_xlabel("log10(learning rate)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(ax, path, 90)
