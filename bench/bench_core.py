"""Core speed: the project against code written the way the lecture writes it, timed in the same run.

    python bench/bench_core.py            # prints the markdown section (progress on stderr)

Counting bigram fit, bigram-nn time to within 0.01 nats of the counts, sampling 1,000 items from an
MLP, the CLI's start-up, and the dataset builder's time and peak memory on the data repeated x1, x10, x100.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, best_of, data_file, fmt_time, log, median, table

import torch  # noqa: E402  (after common, which puts this checkout first on sys.path)
import torch.nn.functional as F  # noqa: E402

from makemore import api  # noqa: E402
from makemore.data import Vocab, read_items  # noqa: E402
from makemore.dataset import build_dataset  # noqa: E402
from makemore.models.bigram import Bigram, BigramConfig  # noqa: E402
from makemore.train import evaluate  # noqa: E402

SCALES = (1, 10, 100)
LECTURE_SCALES = (1, 10)  # the lecture's list-of-lists builder needs gigabytes beyond that
SCALE_BLOCK_SIZE = 3  # the lecture's MLP context


# ---- the lecture's way (part 1: counting; part 1: the one-layer net; part 2: dataset and sampling) ----

def lecture_stoi(words):
    chars = sorted(list(set("".join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    return stoi


def lecture_count_tensor(words):
    """N[ix1, ix2] += 1 for every bigram, one tensor element at a time."""
    stoi = lecture_stoi(words)
    N = torch.zeros((len(stoi), len(stoi)), dtype=torch.int32)
    for w in words:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            N[ix1, ix2] += 1
    return N


def lecture_count_dict(words):
    """The lecture's very first counter: a dict of bigram tuples."""
    b = {}
    for w in words:
        chs = ["<S>"] + list(w) + ["<E>"]
        for ch1, ch2 in zip(chs, chs[1:]):
            bigram = (ch1, ch2)
            b[bigram] = b.get(bigram, 0) + 1
    return b


def lecture_bigram_data(words):
    stoi = lecture_stoi(words)
    xs, ys = [], []
    for w in words:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            xs.append(stoi[ch1])
            ys.append(stoi[ch2])
    return torch.tensor(xs), torch.tensor(ys), len(stoi)


def lecture_gradient_descent(xs, ys, V, target, max_steps=2000, max_seconds=300.0):
    """Full-batch descent on one-hot inputs at lr 50 until the loss is at most target.

    The lecture adds 0.01 * (W**2).mean() to the loss; it is left out here, since it holds the loss
    above the counts' and the baseline should be given its best chance. Returns (steps, seconds, loss).
    """
    num = xs.nelement()
    g = torch.Generator().manual_seed(2147483647)
    W = torch.randn((V, V), generator=g, requires_grad=True)
    t0 = time.perf_counter()
    for k in range(max_steps + 1):
        xenc = F.one_hot(xs, num_classes=V).float()
        logits = xenc @ W
        counts = logits.exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[torch.arange(num), ys].log().mean()
        if loss.item() <= target or k == max_steps or time.perf_counter() - t0 > max_seconds:
            return k, time.perf_counter() - t0, loss.item()
        W.grad = None
        loss.backward()
        W.data += -50 * W.grad


@torch.no_grad()
def lecture_sample(model, n, block_size, g):
    """One item at a time, one character per forward pass (no_grad added: the lecture builds graphs)."""
    out = []
    for _ in range(n):
        item = []
        context = [0] * block_size
        while True:
            logits = model(torch.tensor([context]))
            probs = F.softmax(logits, dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            context = context[1:] + [ix]
            if ix == 0:
                break
            item.append(ix)
        out.append(item)
    return out


def lecture_build_dataset(words, block_size, stoi):
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X), torch.tensor(Y)


# ---- the measurements ----

def project_count(words):
    vocab = Vocab.from_items(words)
    model = Bigram(BigramConfig(smoothing=0.0), len(vocab))
    model.fit(build_dataset(words, vocab, 1))
    return model


def bench_counting(words):
    log("counting bigram: the lecture's loops, then makemore")
    t_tensor, N = best_of(lambda: lecture_count_tensor(words), 3)
    t_dict, _ = best_of(lambda: lecture_count_dict(words), 5)
    t_ours, model = best_of(lambda: project_count(words), 20)
    same = torch.equal(model.N.to(torch.int32), N)
    return dict(lecture_tensor=t_tensor, lecture_dict=t_dict, ours=t_ours, same=same)


def bench_bigram_nn(words, path, tmp: Path):
    log("bigram-nn: the lecture's gradient descent, then makemore's defaults")
    vocab = Vocab.from_items(words)
    ds = build_dataset(words, vocab, 1)
    ref = evaluate(project_count(words), ds)  # smoothing 0: the best a bigram can do on these data
    target = ref + 0.01

    t_lprep, (xs, ys, V) = best_of(lambda: lecture_bigram_data(words), 1)
    l_steps, t_lloop, l_loss = lecture_gradient_descent(xs, ys, V, target)

    t_prep, _ = best_of(lambda: build_dataset(words, Vocab.from_items(words), 1), 5)

    def whole_data_loss(checkpoint) -> float:
        return api.load(checkpoint).evaluate("all")["loss"]

    # Where: the same run with a checkpoint at every step; at each log record the checkpoint of the step
    # before is on disk. Its checks are off any clock: the timed runs below are plain default runs.
    probe, losses = tmp / "probe", {}

    def check(record):
        if record["step"] > 1:
            losses[record["step"] - 1] = whole_data_loss(probe / "bigram-nn.safetensors")

    probed = api.train("bigram-nn", path, probe, splits=(1, 0, 0), train_options=dict(eval_interval=1),
                       device="cpu", progress=False, on_log=check)
    losses[probed.step] = whole_data_loss(probed.path)
    hit = next((step for step, loss in sorted(losses.items()) if loss <= target), None)
    runs = []
    for _ in range(3):
        elapsed = {}
        result = api.train("bigram-nn", path, tmp / "timed", splits=(1, 0, 0), device="cpu", progress=False,
                           on_log=lambda record: elapsed.setdefault(record["step"], record["elapsed"]))
        runs.append(dict(total=result.seconds, seconds=elapsed.get(hit), final=whole_data_loss(result.path)))
    best = min(runs, key=lambda r: r["seconds"] or float("inf"))
    config = api.load(result.path).ckpt["train"]
    return dict(n=len(ds), ref=ref, target=target, l_prep=t_lprep, l_steps=l_steps, l_loop=t_lloop, l_loss=l_loss,
                reached=l_loss <= target, prep=t_prep, steps=hit, loop=best["seconds"],
                full=min(r["total"] for r in runs), final=best["final"], config=config)


def bench_sampling_and_cli(path, tmp: Path):
    log("sampling: training a small MLP with the default configuration")
    out = tmp / "out"
    steps = 1000  # enough for items of realistic length; sampling time does not depend on quality
    api.train("mlp", path, out, train_options=dict(steps=steps), device="cpu", progress=False)
    trained = api.load(None, out, device="cpu")
    t_ours, items = best_of(lambda: trained.sample(1000, seed=1), 5)
    g = torch.Generator().manual_seed(2147483647)
    t_lecture, _ = best_of(lambda: lecture_sample(trained.model, 1000, trained.block_size, g), 1)
    sampling = dict(ours=t_ours, lecture=t_lecture, config=trained.ckpt["config"], steps=steps,
                    mean_len=sum(map(len, items)) / len(items))

    log("start-up: makemore --help and makemore sample -n 20 in fresh processes")
    # Python's bytecode cache on, as an installed package has it (pip compiles it at install; an editable
    # install writes it at the first import): a shell that sets PYTHONDONTWRITEBYTECODE would otherwise
    # recompile makemore's modules at every start (about 30 ms here). The first run of each writes it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(REPO)

    def wall(*args) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    cli = {}
    for label, args, n in [("python -c pass", ["-c", "pass"], 5),
                           ("python -c 'import torch' (the floor of any command that uses torch)",
                            ["-c", "import torch"], 5),
                           ("makemore --help", ["-m", "makemore", "--help"], 7),
                           ("makemore train --help", ["-m", "makemore", "train", "--help"], 5),
                           ("makemore sample -n 20", ["-m", "makemore", "sample", "-n", "20", "--out", str(out)], 5)]:
        times = [wall(*args) for _ in range(n)]
        cli[label] = (min(times), median(times))
    loads_torch = {}
    for command in (["--help"], ["sample", "-n", "20", "--out", str(out)]):
        probe = ("import sys; from click.testing import CliRunner; from makemore.cli import cli; "
                 f"CliRunner().invoke(cli, {command!r}); print('torch' in sys.modules)")
        loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp, env=env, capture_output=True, text=True)
        loads_torch[command[0]] = loaded.stdout.strip().splitlines()[-1] == "True"
    return sampling, cli, loads_torch


def scale_child(k: int, path: str, which: str) -> None:
    """In a fresh process: build the dataset of the data repeated k times; print time and peak memory."""
    import gc

    items = read_items(path) * k
    gc.collect()
    before = reset_peak_rss()
    times = []
    for i in range(3 if which == "ours" else 1):
        t = time.perf_counter()
        if which == "ours":
            ds = build_dataset(items, Vocab.from_items(items), SCALE_BLOCK_SIZE)
            n, held = len(ds), ds.tokens.nbytes + ds.positions.nbytes
        else:
            X, Y = lecture_build_dataset(items, SCALE_BLOCK_SIZE, lecture_stoi(items))
            n, held = len(Y), X.nbytes + Y.nbytes
        times.append(time.perf_counter() - t)
        if i == 0:
            peak = peak_rss()
        ds = X = Y = None
        gc.collect()
    print(json.dumps(dict(k=k, items=len(items), examples=n, seconds=min(times),
                          peak_mib=max(0, peak - before) / 2**20, held_mib=held / 2**20)))


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Restart the peak-RSS count from the current RSS, which is returned.

    getrusage's ru_maxrss is no use in a child process: Linux carries the parent's peak over fork and
    exec. Writing 5 to /proc/self/clear_refs resets the kernel's peak (VmHWM) instead.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return _status_bytes("VmRSS") or 0


def peak_rss() -> int:
    peak = _status_bytes("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def bench_scaling(path):
    rows = {}
    for which, scales in (("ours", SCALES), ("lecture", LECTURE_SCALES)):
        for k in scales:
            log(f"dataset builder ({which}): data x{k} in a fresh process")
            done = subprocess.run([sys.executable, __file__, "--scale-child", str(k), str(path), which],
                                  capture_output=True, text=True, check=True)
            rows[which, k] = json.loads(done.stdout)
    return rows


# ---- the report ----

def ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 10 else f"{x:.1f}x"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def run(data: Path | None = None) -> str:
    path, about = (data, "`names-2018.txt` (the lecture's file)") if data is not None else data_file()
    load_before = os.getloadavg()[0]
    words = read_items(path)
    counting = bench_counting(words)
    with tempfile.TemporaryDirectory() as tmp:
        nn = bench_bigram_nn(words, path, Path(tmp))
        sampling, cli, loads_torch = bench_sampling_and_cli(path, Path(tmp))
    scaling = bench_scaling(path)

    load_after = os.getloadavg()[0]
    conditions = (f"torch {torch.__version__} with {torch.get_num_threads()} intra-op threads, "
                  f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}; load average (1 min) "
                  f"{load_before:.1f} at the start and {load_after:.1f} at the end on {os.cpu_count()} cores")
    count_ratio = counting["lecture_tensor"] / counting["ours"]
    nn_ratio = nn["l_loop"] / nn["loop"] if nn["loop"] else float("nan")
    nn_total_ratio = (nn["l_prep"] + nn["l_loop"]) / (nn["prep"] + nn["loop"]) if nn["loop"] else float("nan")
    nn_sure = "" if nn["reached"] else " (at least: the lecture's loop stopped short)"
    sample_ratio = sampling["lecture"] / sampling["ours"]
    ours = {k: scaling["ours", k] for k in SCALES}
    time_linear = all(ours[b]["seconds"] <= 1.25 * (b / a) * ours[a]["seconds"] for a, b in zip(SCALES, SCALES[1:]))
    mem_linear = ours[100]["peak_mib"] <= 1.25 * 10 * max(ours[10]["peak_mib"], 1.0)
    help_min, sample_min = cli["makemore --help"][0], cli["makemore sample -n 20"][0]
    train_help_min = cli["makemore train --help"][0]
    torch_min = cli["python -c 'import torch' (the floor of any command that uses torch)"][0]

    summary = table(
        ["measure", "makemore", "the lecture's way", "ratio", "target", "met"],
        [
            ["counting bigram fit (items to count table)", fmt_time(counting["ours"]),
             fmt_time(counting["lecture_tensor"]), ratio(count_ratio), ">= 100x", verdict(count_ratio >= 100)],
            ["bigram-nn: time to within 0.01 nats of the counts", fmt_time(nn["loop"]) if nn["loop"] else "not reached",
             fmt_time(nn["l_loop"]), ratio(nn_ratio) + nn_sure, ">= 20x", verdict(nn_ratio >= 20)],
            ["bigram-nn: default run ends within 0.002 of the counts", f"{nn['final'] - nn['ref']:+.4f}", "",
             "", "<= 0.002", verdict(nn["final"] - nn["ref"] <= 0.002)],
            ["sampling 1,000 items from an MLP", fmt_time(sampling["ours"]), fmt_time(sampling["lecture"]),
             ratio(sample_ratio), "< 0.5 s", verdict(sampling["ours"] < 0.5)],
            ["`makemore --help` (fresh process)", fmt_time(help_min), "", "", "< 0.3 s", verdict(help_min < 0.3)],
            ["`makemore train --help` (fresh process) beyond a bare `import torch`",
             f"{fmt_time(train_help_min)} against {fmt_time(torch_min)}: {train_help_min - torch_min:+.2f} s", "", "",
             "<= 0.3 s", verdict(train_help_min - torch_min <= 0.3)],
            ["`makemore sample -n 20` (fresh process) beyond a bare `import torch`",
             f"{fmt_time(sample_min)} against {fmt_time(torch_min)}: {sample_min - torch_min:+.2f} s", "", "",
             "<= 0.5 s", verdict(sample_min - torch_min <= 0.5)],
            ["dataset builder x1 -> x100: time", f"{ours[1]['seconds']:.3f} s -> {ours[100]['seconds']:.2f} s", "",
             f"{ours[100]['seconds'] / ours[1]['seconds']:.0f}x for 100x the data", "linear", verdict(time_linear)],
            ["dataset builder x10 -> x100: peak memory", f"{ours[10]['peak_mib']:.0f} -> {ours[100]['peak_mib']:.0f} MiB",
             "", f"{ours[100]['peak_mib'] / max(ours[10]['peak_mib'], 1.0):.1f}x for 10x the data", "linear",
             verdict(mem_linear)],
        ],
    )

    c = nn["config"]
    scale_rows = []
    for k in SCALES:
        r = ours[k]
        lec = scaling.get(("lecture", k))
        scale_rows.append([f"x{k}", f"{r['items']:,}", f"{r['examples']:,}", fmt_time(r["seconds"]),
                           f"{r['seconds'] / r['examples'] * 1e9:.0f} ns", f"{r['peak_mib']:.1f} MiB",
                           f"{r['held_mib']:.1f} MiB",
                           fmt_time(lec["seconds"]) if lec else "not run",
                           f"{lec['peak_mib']:.0f} MiB" if lec else "not run"])
    config = ", ".join(f"{k} {v}" for k, v in sampling["config"].items())
    cli_rows = [[label, fmt_time(lo), fmt_time(med)] for label, (lo, med) in cli.items()]

    return f"""## Core: counting, bigram-nn, sampling, start-up, dataset builder (bench_core)

Data: {about}, {len(words):,} items. Each time is the best of several runs (the least disturbed by other
work on the machine) for makemore and the baselines alike, except the lecture's gradient descent, its
sampling loop and its list builder, timed once. Every baseline is the lecture's code, run in the same process
just before makemore's. Conditions: {conditions}.

{summary}

**Counting bigram.** The lecture fills `N[ix1, ix2] += 1` one bigram at a time ({fmt_time(counting['lecture_tensor'])});
its first version, a dict of bigram tuples, takes {fmt_time(counting['lecture_dict'])}
({ratio(counting['lecture_dict'] / counting['ours'])} makemore's time). makemore goes from the list of items to the
fitted table (vocabulary, dataset, one `bincount`) in {fmt_time(counting['ours'])}; the tables are
{'identical' if counting['same'] else '**different**'}.

**bigram-nn.** Target: the counting model's loss with smoothing 0 ({nn['ref']:.5f}) + 0.01. The lecture's
full-batch descent at lr 50 on one-hot inputs (its `0.01 * (W**2).mean()` term left out, which only helps
it) {'reaches' if nn['reached'] else 'stops short of'} it after {nn['l_steps']} steps of all {nn['n']:,} examples
(loss {nn['l_loss']:.4f}) in {fmt_time(nn['l_loop'])}, after {fmt_time(nn['l_prep'])} building its `xs, ys` in Python.
`api.train` with bigram-nn's defaults ({c['steps']} steps of {c['batch_size']}, {c['optimizer']} lr {c['lr']:g},
{c['schedule']}) gets there at step {nn['steps']} in {fmt_time(nn['loop']) if nn['loop'] else '-'} (its log records' time,
checkpoints included; the step found in a run that keeps a checkpoint of every step; dataset {fmt_time(nn['prep'])});
counting preparation too, {ratio(nn_total_ratio)}. The whole default run takes {fmt_time(nn['full'])} and ends at
{nn['final']:.5f}, {nn['final'] - nn['ref']:+.5f} from the counts.

**Sampling.** An MLP with the default configuration ({config}), trained {sampling['steps']:,} steps; 1,000 items
(mean length {sampling['mean_len']:.1f}) drawn side by side by `Trained.sample` in {fmt_time(sampling['ours'])};
the lecture's loop, one item and one character per forward pass, takes {fmt_time(sampling['lecture'])}.

**Start-up** (wall clock of a fresh `python` process, bytecode cache on; imports torch: `makemore --help`
{'**yes**' if loads_torch['--help'] else 'no'}, `makemore sample -n 20` {'yes' if loads_torch['sample'] else 'no'}):

{table(['command', 'best', 'median'], cli_rows)}

**Dataset builder** (block_size {SCALE_BLOCK_SIZE}; the data's lines repeated; each size in a fresh process; peak memory is
the growth of the process's peak RSS during the first build, so tensors count too):

{table(['data', 'items', 'examples', 'makemore', 'per example', 'peak memory', 'dataset held', "lecture's lists", "lecture's peak"], scale_rows)}
"""


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--scale-child":
        scale_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        print(run())
