"""score, lr-find and the plots, through the real CLI on tiny data."""
import json
import math
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from makemore import api, instruments
from makemore.plots import INSTALL_HINT

TINY_MLP = ["--n-embd", "3", "--n-hidden", "16", "--batch-size", "32"]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    raw = Path(path).read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def assert_picture(path: Path) -> None:
    width, height = png_size(path)
    assert 200 <= width <= 2000 and 200 <= height <= 2000, (width, height)
    assert Path(path).stat().st_size < 400_000


def write_items(tmp_path, items, name="items.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(items) + "\n", encoding="utf-8")
    return path


def bigram_probs(items: list[str], k: float):
    """P(next | prev) of the add-k counting bigram, counted here with plain Python."""
    pairs = Counter()
    for item in items:
        chars = ["."] + list(item) + ["."]
        pairs.update(zip(chars, chars[1:]))
    vocab = ["."] + sorted(set("".join(items)))
    row = {a: sum(pairs[a, b] for b in vocab) for a in vocab}
    return lambda a, b: (pairs[a, b] + k) / (row[a] + k * len(vocab))


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_score_equals_counted_bigram_probabilities(run, small_names, k):
    items = small_names.read_text().split()
    run("train", "--model", "bigram", "--data", small_names, "--splits", "1,0,0", "--smoothing", k, "-q")
    result = json.loads(run("score", "emma", "xavier", "--json").stdout)
    P = bigram_probs(items, k)
    total = 0.0
    for scored, word in zip(result["items"], ["emma", "xavier"]):
        chars = "." + word + "."
        assert [t["context"] + t["next"] for t in scored["transitions"]] == [chars[i:i + 2] for i in range(len(word) + 1)]
        for t in scored["transitions"]:
            assert t["prob"] == pytest.approx(P(t["context"], t["next"]), rel=1e-9)
            assert t["logprob"] == pytest.approx(math.log(P(t["context"], t["next"])), rel=1e-9)
        nll = -sum(math.log(P(a, b)) for a, b in zip(chars, chars[1:]))
        assert scored["nll"] == pytest.approx(nll, rel=1e-9)
        assert scored["mean_nll"] == pytest.approx(nll / len(chars[1:]), rel=1e-9)
        total += nll
    assert result["nll"] == pytest.approx(total, rel=1e-9) and result["n"] == 12


def test_score_prints_the_lecture_lines(run, small_names):
    run("train", "--model", "bigram", "--data", small_names, "--splits", "1,0,0", "--smoothing", "1", "-q")
    P = bigram_probs(small_names.read_text().split(), 1.0)
    lines = run("score", "emma").stdout.splitlines()
    assert lines[0] == "emma"
    assert lines[1] == f".e: {P('.', 'e'):.4f} {math.log(P('.', 'e')):.4f}"
    assert lines[5].startswith("a.: ") and lines[6].startswith("emma: total nll ")
    assert len(lines) == 7


def test_zero_probability_transition_is_inf_not_a_crash(run, tmp_path):
    data = write_items(tmp_path, ["abc", "bca", "cab", "abba"])
    run("train", "--model", "bigram", "--data", data, "--splits", "1,0,0", "--smoothing", "0", "-q")
    out = run("score", "cab", "acca").stdout
    assert "cc: 0.0000 -inf" in out  # c is never followed by c
    assert "acca: total nll inf, mean nll inf (5 transitions)" in out
    assert "cab: total nll inf" not in out
    assert "all 2 items: total nll inf" in out
    result = json.loads(run("score", "acca", "--json").stdout)
    cc = result["items"][0]["transitions"][2]
    assert cc["prob"] == 0.0 and cc["logprob"] is None
    assert result["items"][0]["nll"] is None and result["nll"] is None


def test_score_totals_and_data_file_agree_with_eval(run, small_names, tmp_path):
    run("train", "--model", "mlp", "--data", small_names, "--steps", "10", *TINY_MLP, "-q")
    trained = api.load("out/mlp.safetensors")
    dev = trained.splits()["dev"]
    dev_file = write_items(tmp_path, dev, "dev.txt")
    result = json.loads(run("score", "--data", dev_file, "--totals", "--json").stdout)
    assert len(result["items"]) == len(dev) and "transitions" not in result["items"][0]
    evaluated = json.loads(run("eval", "--split", "dev", "--json").stdout)
    assert result["mean_nll"] == pytest.approx(evaluated["loss"], rel=1e-9)
    assert result["n"] == evaluated["n_chars"]
    text = run("score", "--data", dev_file, "--totals").stdout.splitlines()
    assert len(text) == len(dev) + 1 and text[-1].startswith(f"all {len(dev)} items: ")


def test_score_mlp_transitions_are_the_model_softmax(run, small_names):
    run("train", "--model", "mlp", "--data", small_names, "--steps", "30", *TINY_MLP, "-q")
    trained = api.load("out/mlp.safetensors")
    result = json.loads(run("score", "anna", "--json").stdout)["items"][0]
    stoi = trained.vocab.stoi
    context = [0] * trained.block_size
    with torch.no_grad():
        for t, ch in zip(result["transitions"], list("anna") + [None]):
            probs = torch.softmax(trained.model(torch.tensor([context])).double(), -1)[0]
            target = stoi[ch] if ch else 0
            assert t["context"] == "".join(trained.vocab.chars[i] for i in context)
            assert t["prob"] == pytest.approx(probs[target].item(), rel=1e-6)
            context = context[1:] + [target]


def test_score_unknown_characters_and_no_items(run, small_names):
    run("train", "--model", "bigram", "--data", small_names, "-q")
    bad = run("score", "emma", "zoë!", ok=False)
    assert bad.exit_code == 1
    message = bad.output.strip()
    assert len(message.splitlines()) == 1
    assert "item 2, character 3" in message  # where: the items may come from a file (--data), never quoted
    assert run("score", ok=False).exit_code == 2
    empty = run("score", "emma", "", ok=False)
    assert empty.exit_code == 1 and "empty item" in empty.output


def test_lr_find_suggests_a_rate_inside_the_sweep(run, small_names):
    result = run("lr-find", "--data", small_names, "--steps", "100", *TINY_MLP, "--optimizer", "sgd",
                 "--min-lr", "1e-3", "--max-lr", "10", "--json", "-q", "--plot", "sweep.png")
    sweep = json.loads(result.stdout)
    assert 1e-3 <= sweep["suggested_lr"] <= 10
    assert sweep["suggested_lr"] <= sweep["floor_lr"]
    if sweep["blowup_lr"] is not None:
        assert sweep["floor_lr"] < sweep["blowup_lr"]
    lrs = sweep["lrs"]
    assert lrs[0] == pytest.approx(1e-3) and all(b > a for a, b in zip(lrs, lrs[1:]))
    # exponentially spaced: a constant ratio between neighbours, 10**(4/99)
    assert lrs[1] / lrs[0] == pytest.approx(10 ** (4 / 99))
    assert len(sweep["losses"]) == len(lrs) <= 100
    assert sweep["settings"]["optimizer"] == "sgd"
    # the weight decay train would use on this small file: the MLP's data-size rule, not the bare default
    from makemore.models.mlp import MLP

    assert sweep["settings"]["weight_decay"] > MLP.train_defaults["weight_decay"]
    assert sweep["plot"] == "sweep.png"
    assert_picture(Path("sweep.png"))


def test_suggest_finds_the_valley_before_the_blowup():
    exps = torch.linspace(-3, 0, 300)
    # a valley with its floor at 10**-1, then a blow-up from 10**-0.5 on
    losses = (2 + (exps + 1) ** 2).tolist()
    losses = [v if e < -0.5 else v * 50 for v, e in zip(losses, exps.tolist())]
    step, floor, blowup, smoothed = instruments.suggest(losses)
    assert exps[floor].item() == pytest.approx(-1, abs=0.05)
    # the centred average sees the blow-up half a window (15 of 300 steps) early, never late
    assert -0.5 - 0.1 <= exps[blowup].item() <= -0.5
    # the near edge: down to within 10% of the descent from 6 to 2, i.e. (e+1)**2 <= 0.4
    assert exps[step].item() == pytest.approx(-1 - 0.4**0.5, abs=0.05)
    with pytest.raises(Exception, match="lower --min-lr"):
        instruments.suggest([math.nan] * 5)


def test_lr_find_refuses_counted_models_and_reversed_ranges(run, small_names):
    counted = run("lr-find", "--model", "bigram", "--data", small_names, ok=False)
    assert counted.exit_code == 2 and "no learning rate" in counted.output
    reversed_ = run("lr-find", "--data", small_names, "--min-lr", "1", "--max-lr", "0.1", ok=False)
    assert reversed_.exit_code == 2 and "--min-lr" in reversed_.output


def test_training_writes_metrics_and_curve(run, small_names):
    out = run("train", "--model", "mlp", "--data", small_names, "--steps", "40", "--eval-interval", "10", *TINY_MLP, "-q")
    assert "loss curve: out/mlp.loss.png" in out.stderr
    assert_picture(Path("out/mlp.loss.png"))
    records = [json.loads(line) for line in Path("out/mlp.metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 41))
    assert all({"step", "train_loss", "lr", "elapsed"} <= set(r) for r in records)
    assert [r["step"] for r in records if "dev_loss" in r] == [10, 20, 30, 40]
    Path("out/mlp.loss.png").unlink()
    assert run("plot", "loss").stdout.strip() == "out/mlp.loss.png"
    assert_picture(Path("out/mlp.loss.png"))


def test_plot_embeddings(run, small_names):
    run("train", "--model", "mlp", "--data", small_names, "--steps", "20", *TINY_MLP, "-q")
    assert run("plot", "embeddings", "-o", "emb.png").stdout.strip() == "emb.png"
    assert_picture(Path("emb.png"))
    run("train", "--model", "bigram", "--data", small_names, "-q")
    refused = run("plot", "embeddings", ok=False)
    assert refused.exit_code == 1 and "no embedding table C" in refused.output


def test_embedding_projection_is_the_principal_components():
    torch.manual_seed(0)
    model = type("M", (), {"embeddings": lambda self: self.C})()  # a stand-in with the model hook
    model.name = "mlp"
    model.C = torch.randn(27, 10) @ torch.randn(10, 10)
    points, note, _ = instruments.embedding_2d(model)
    assert points.shape == (27, 2) and "principal components of 10" in note
    # the projections' variances are the two largest eigenvalues of C's covariance, and uncorrelated
    cov = torch.cov(model.C.double().T)
    top = torch.linalg.eigvalsh(cov).flip(0)[:2]
    pcov = torch.cov(points.T)
    assert torch.allclose(pcov.diagonal(), top, rtol=1e-9)
    assert abs(pcov[0, 1].item()) < 1e-9 * top[0].item()
    model.C = torch.randn(27, 2)
    points, note, _ = instruments.embedding_2d(model)
    assert torch.equal(points, model.C.double()) and "as learned" in note


def test_plot_counts(run, small_names):
    run("train", "--model", "bigram", "--data", small_names, "-q")
    assert run("plot", "counts").stdout.strip() == "out/bigram.counts.png"
    assert_picture(Path("out/bigram.counts.png"))
    table, counts = instruments.bigram_table(api.load("out/bigram.safetensors").model)
    items = api.load("out/bigram.safetensors").splits()["train"]
    assert counts and table[0].sum().item() == len(items)  # every train item starts once
    no_curve = run("plot", "loss", ok=False)
    assert no_curve.exit_code == 1 and "no training curve" in no_curve.output
    run("train", "--model", "bigram-nn", "--data", small_names, "--steps", "20", "--batch-size", "64", "-q")
    table, counts = instruments.bigram_table(api.load("out/bigram-nn.safetensors").model)
    assert not counts and torch.allclose(table.sum(1), torch.ones(len(table), dtype=table.dtype))
    run("train", "--model", "mlp", "--data", small_names, "--steps", "10", *TINY_MLP, "-q")
    refused = run("plot", "counts", ok=False)
    assert refused.exit_code == 1 and "no bigram table" in refused.output


def test_without_matplotlib_training_works_and_plots_explain(run, small_names, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now fails
    out = run("train", "--model", "mlp", "--data", small_names, "--steps", "20", *TINY_MLP, "-q")
    assert "saved out/mlp.safetensors" in out.stdout and "loss curve" not in out.output
    assert not Path("out/mlp.loss.png").exists()
    for command in (["plot", "loss"], ["plot", "embeddings"], ["plot", "counts"]):
        refused = run(*command, ok=False)
        assert refused.exit_code == 1 and INSTALL_HINT in refused.output
    swept = run("lr-find", "--data", small_names, "--steps", "30", *TINY_MLP, "-q")
    lines = swept.stdout.splitlines()
    assert lines[0].startswith("suggested lr ") and lines[1].startswith("the valley's floor: lr ")
    assert "plot:" not in swept.stdout and INSTALL_HINT in swept.stderr


def test_no_matplotlib_or_torch_at_cli_import():
    import subprocess

    code = ("import sys, makemore.cli; bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
            "print(','.join(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], check=True)
    assert done.stdout.strip() == ""
