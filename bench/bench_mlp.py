"""MLP benchmark: the project's loop against the lecture's hand-written loop, in the same run.

    python bench/bench_mlp.py [--data ../shared/data/names-2018.txt] [--extra bench/out/data] > bench/results/mlp.md

Prints a markdown section:
1. steps per second at the lecture's configuration (block 3, n_embd 10, n_hidden 200, SGD, batch 32):
   the lecture's bare loop, written as in the lecture, against makemore's loop (api.train, with its
   dev evaluations, progress and checkpoints), alternated so that both see the same machine load;
2. wall time until dev loss 2.17, and until the lecture's best dev loss: the lecture's loop against
   `makemore train --model mlp` with its defaults (the checks of both left off their clocks; makemore's
   own ten evaluations stay on its clock);
3. the default MLP's dev loss, training time and examples per second;
4. with --extra FOLDER (made by scripts/make_bench_data.py): on each file there, the default MLP against
   makemore's counting bigram and its Kneser-Ney 4-gram and 5-gram.
Timings are wall clock (time.perf_counter) and process CPU time; on a shared machine CPU time is the
steadier figure. Tune nothing on these numbers' test split: only dev losses are printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from makemore import api  # noqa: E402
from makemore.data import Vocab, read_items, split_items  # noqa: E402
from makemore.dataset import build_dataset  # noqa: E402
from makemore.models import get_model_class  # noqa: E402
from makemore.train import evaluate, train_loop  # noqa: E402

LECTURE = dict(block_size=3, n_embd=10, n_hidden=200, init="randn", direct=False)
LECTURE_TRAIN = dict(optimizer="sgd", batch_size=32, lr=0.1, schedule="step", weight_decay=0.0)
TARGET = 2.17


def lecture_arrays(items: list[str], all_items: list[str], block_size: int = 3):
    """The lecture's build_dataset (Python loops, int64 tensors), its stoi made from every item."""
    from bench_core import lecture_build_dataset

    chars = sorted(set("".join(all_items)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    X, Y = lecture_build_dataset(items, block_size, stoi)
    return X, Y, len(stoi)


def lecture_loop(Xtr, Ytr, vocab_size, steps, Xdev=None, Ydev=None, eval_every=0):
    """The lecture's MLP training loop as written there (part 2), with its plain randn init.

    With Xdev it also measures dev loss every eval_every steps, off the clock. Returns the seconds of
    training, the history [(seconds, step, dev loss)] of those checks and the last dev loss.
    """
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, vocab_size), generator=g)
    b2 = torch.randn(vocab_size, generator=g)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    clock, history = 0.0, []
    t0 = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        emb = C[Xtr[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Ytr[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < steps // 2 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.log10().item())
        if Xdev is not None and (i + 1) % eval_every == 0:
            clock += time.perf_counter() - t0
            with torch.no_grad():
                h = torch.tanh(C[Xdev].view(-1, 30) @ W1 + b1)
                dev = F.cross_entropy(h @ W2 + b2, Ydev).item()
            history.append((clock, i + 1, dev))
            t0 = time.perf_counter()
    clock += time.perf_counter() - t0
    return clock, history, dev if Xdev is not None else None


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def ours(data, out, steps, model_options=None, train_options=None, name="mlp"):
    return api.train("mlp", data, out, name, dict(model_options or {}),
                     dict(train_options or {}, **({"steps": steps} if steps else {})), progress=False)


def lecture_config_loop(data):
    """A function running makemore's train_loop for n steps on the lecture's model and settings, with
    its dev evaluations, best-on-dev copies and progress bar (on stderr); the data is prepared here,
    off the clock."""
    items = read_items(data)
    parts = split_items(items)
    vocab = Vocab.from_items(items)
    train_set, dev_set = (build_dataset(parts[s], vocab, LECTURE["block_size"]) for s in ("train", "dev"))
    cls = get_model_class("mlp")

    def run(steps):
        torch.manual_seed(42)
        model = cls(api.model_config("mlp", LECTURE), len(vocab))
        config = api.train_config("mlp", dict(LECTURE_TRAIN, steps=steps))
        return train_loop(model, train_set, dev_set, config, progress=True)

    return run


def default_run(data, every):
    """Train the MLP with its defaults as api.train sets them up, checking dev loss every `every` steps
    off the clock. Returns the history [(seconds, step, dev loss)] of those checks, the dev loss at the
    end, the training seconds, the steps and the configs."""
    cls = get_model_class("mlp")
    items = read_items(data)
    parts = split_items(items)
    vocab = Vocab.from_items(items)
    mconfig, tconfig = api.model_config("mlp", {}), api.train_config("mlp", {})
    torch.manual_seed(tconfig.seed)
    model = cls(mconfig, len(vocab))
    train_set = build_dataset(parts["train"], vocab, mconfig.block_size)
    dev_set = build_dataset(parts["dev"], vocab, mconfig.block_size)
    tconfig.steps = cls.train_defaults_for(len(train_set), tconfig.batch_size)["steps"]
    tconfig.eval_interval = tconfig.steps  # the loop's own evaluation only at the end
    off_clock, history, dev, due = [0.0], [], [None], [every]

    def on_log(record):  # called at the loop's log points, about 200 a run
        if record["step"] < due[0] and record["step"] != tconfig.steps:
            return
        due[0] = record["step"] + every
        t = time.perf_counter()
        dev[0] = evaluate(model, dev_set)
        history.append((record["elapsed"] - off_clock[0], record["step"], dev[0]))
        off_clock[0] += time.perf_counter() - t

    state = train_loop(model, train_set, None, tconfig, progress=False, on_log=on_log)
    return dict(history=history, dev=dev[0], seconds=state.elapsed - off_clock[0], steps=state.step,
                train=evaluate(model, train_set), mconfig=mconfig, tconfig=tconfig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "names-2018.txt"))
    ap.add_argument("--extra", help="folder made by scripts/make_bench_data.py")
    ap.add_argument("--speed-steps", type=int, default=10000, help="steps per speed measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternated speed measurements of each loop")
    ap.add_argument("--parts", default="speed,time,extra", help="which sections to run")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    items = read_items(args.data)
    parts = split_items(items)
    Xtr, Ytr, V = lecture_arrays(parts["train"], items)
    Xdev, Ydev, _ = lecture_arrays(parts["dev"], items)
    out = tempfile.mkdtemp(prefix="bench-mlp-")
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    p = print
    p("## MLP: the project's loop against the lecture's\n")
    p(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
      f"{torch.get_num_threads()} torch threads; load average at start {os.getloadavg()[0]:.1f}. "
      f"Data: {Path(args.data).name} ({len(items):,} items), 80/10/10 split, seed 42. "
      f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")
    p(f"Command: `python bench/bench_mlp.py {' '.join(sys.argv[1:])}`\n")

    if "speed" in args.parts:
        speed(args, Xtr, Ytr, V, out, log)
    if "time" in args.parts:
        to_target(args, Xtr, Ytr, V, Xdev, Ydev, log)
    if args.extra and "extra" in args.parts:
        extra(args, out, log)


def speed(args, Xtr, Ytr, V, out, log):
    """Steps per second at the lecture's configuration, the two loops alternated."""
    p = print
    lec, our = [], []
    loop = lecture_config_loop(args.data)
    for r in range(args.rounds):
        log(f"speed round {r + 1}: lecture loop")
        (clock, _, _), wall, cpu = timed(lambda: lecture_loop(Xtr, Ytr, V, args.speed_steps))
        lec.append((args.speed_steps / wall, args.speed_steps / cpu))
        log(f"speed round {r + 1}: makemore loop")
        _, wall, cpu = timed(lambda: loop(args.speed_steps))
        our.append((args.speed_steps / wall, args.speed_steps / cpu))
    best = lambda xs, i: max(x[i] for x in xs)  # noqa: E731
    p(f"### Steps per second at the lecture's configuration ({args.speed_steps:,} steps, best of {args.rounds})\n")
    p("| loop | steps/s (wall) | steps/s (CPU time) | µs/step (wall) |")
    p("|---|---:|---:|---:|")
    p(f"| lecture's bare loop | {best(lec, 0):,.0f} | {best(lec, 1):,.0f} | {1e6 / best(lec, 0):.0f} |")
    p(f"| makemore's train_loop (10 dev evaluations, best-on-dev copies, progress bar) | {best(our, 0):,.0f} | {best(our, 1):,.0f} | "
      f"{1e6 / best(our, 0):.0f} |")
    p(f"| **ratio** | **{best(our, 0) / best(lec, 0):.2f}x** | **{best(our, 1) / best(lec, 1):.2f}x** | |\n")
    p("All rounds (steps/s wall, CPU): lecture " + ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in lec)
      + "; makemore " + ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in our) + ".\n")


def first_at(history, loss):
    """(seconds, step) of the first check in history at or below loss, or None."""
    return next(((t, step) for t, step, dev in history if dev <= loss), None)


def to_target(args, Xtr, Ytr, V, Xdev, Ydev, log):
    """Time to dev loss TARGET (and to the lecture's best), lecture loop against the defaults; and the
    defaults' figures."""
    p = print
    log("lecture loop, 200,000 steps with dev checks every 1,000")
    lec_clock, lec_history, lec_dev = lecture_loop(Xtr, Ytr, V, 200000, Xdev, Ydev, 1000)
    log("makemore defaults with dev checks every 250 steps")
    d = default_run(args.data, 250)
    lec_best = min(dev for _, _, dev in lec_history)
    p("### Wall time to a dev loss (dev checks off the clock in both)\n")
    p("| run | to dev 2.17: step | seconds | to the lecture's best dev "
      f"({lec_best:.4f}): step | seconds | dev loss at the end |")
    p("|---|---:|---:|---:|---:|---:|")
    cells = lambda hit: f"{hit[1]:,} | {hit[0]:.1f}" if hit else "never | -"  # noqa: E731
    lec_hits = first_at(lec_history, TARGET), first_at(lec_history, lec_best)
    our_hits = first_at(d["history"], TARGET), first_at(d["history"], lec_best)
    p(f"| lecture's loop (200,000 steps, {lec_clock:.0f} s, checks every 1,000) | {cells(lec_hits[0])} | "
      f"{cells(lec_hits[1])} | {lec_dev:.4f} |")
    p(f"| makemore defaults ({d['steps']:,} steps, checks every 250) | {cells(our_hits[0])} | {cells(our_hits[1])} | "
      f"{d['dev']:.4f} |")
    def ratio(lec_hit, our_hit):
        if lec_hit and our_hit:
            return f"{lec_hit[0] / our_hit[0]:.1f}x sooner"
        if our_hit:  # the lecture's loop never got there: its whole run is a lower bound
            return f"more than {lec_clock / our_hit[0]:.1f}x sooner (the lecture's loop never, in {lec_clock:.0f} s)"
        return "-"

    ratios = [ratio(a, b) for a, b in zip(lec_hits, our_hits)]
    p(f"| **ratio** | | **{ratios[0]}** | | **{ratios[1]}** | |")
    p("")

    # 3. the defaults (the same run: dev checks do not change the training)
    tc = d["tconfig"]
    p("### `makemore train --model mlp` with its defaults\n")
    p(f"dev loss **{d['dev']:.4f}** (train {d['train']:.4f}) after {d['steps']:,} steps of {tc.batch_size}: "
      f"**{d['seconds']:.1f} s** of training, {d['steps'] * tc.batch_size / d['seconds']:,.0f} examples/s. "
      f"Model: {dataclasses.asdict(d['mconfig'])}; training: "
      + ", ".join(f"{k} {getattr(tc, k)}" for k in ("steps", "batch_size", "lr", "optimizer", "schedule",
                                                    "weight_decay")) + ".\n")


def extra(args, out, log):
    """The defaults against counting models on the files made by scripts/make_bench_data.py."""
    p = print
    p("### The defaults on data they were not tuned on (dev loss, nats per character)\n")
    p("| file | items | counting bigram | Kneser-Ney 4-gram (`--block-size 3`) | Kneser-Ney 5-gram (`--block-size 4`) "
      "| MLP defaults | MLP steps | MLP train loss | MLP weight decay |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in sorted(Path(args.extra).glob("*.txt")):
        log(f"extra data {path.name}")
        its = read_items(path)
        bigram = api.train("bigram", path, out, "bigram-" + path.stem, progress=False).dev_loss
        kn = [api.train("ngram", path, out, f"ngram-{path.stem}", dict(block_size=b), progress=False).dev_loss
              for b in (3, 4)]
        res = ours(path, out, None, name="mlp-" + path.stem)
        wd = api.load(res.path).ckpt["train"]["weight_decay"]
        p(f"| {path.name} | {len(its):,} | {bigram:.4f} | {kn[0]:.4f} | {kn[1]:.4f} | **{res.dev_loss:.4f}** | "
          f"{res.step:,} | {res.train_loss:.4f} | {wd:.3g} |")
    p("\nThe counting models are makemore's own (`--model bigram`, `--model ngram` with modified Kneser-Ney "
      "smoothing, its discounts estimated from the counts).\n")


def run(data=None) -> str:
    """The three sections, the extra data files made first by scripts/make_bench_data.py."""
    from common import main_with_extra_data

    return main_with_extra_data(main, data, "bench-mlp-data-")


if __name__ == "__main__":
    main()
