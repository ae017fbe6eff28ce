"""Edges (issue 29): hostile-but-valid inputs through every command, each run checked against the promises.

    python bench/bench_edges.py [--seed N] [--fuzz N] [--jobs N] [--keep]   # writes bench/results/edges.md

Builds, in a temporary folder, small data files (names, 6,627 CJK characters, a 1 MB line, a 200 MB sparse
file, non-UTF-8 bytes, a file whose name is not UTF-8), tiny trained checkpoints of every model and a mixture,
and checkpoints crafted through makemore.checkpoint.build/save with valid but hostile values (a recorded data
path naming a secret file or holding a newline, an MLP of block size 4096, a transformer of 256 heads and
block size 1024, mixtures as deep and as wide as the loader takes, a kept item of 1,000 characters, a model
that never draws the end). Then runs a table of commands, each in its own process with RLIMIT_AS = 3 GB,
stdin closed, MAKEMORE_DEBUG unset and a 60 s wall-clock limit, and records for each: exit code, wall time,
seconds to the first byte of output, the longest silence, the child's own peak RSS (os.wait4), a traceback,
the last line of stderr, the secret marker, a forged output line and the hashes of the user's files.

A run violates when it shows a traceback or a crash (a signal, a Rust panic), stays silent for more than
20 s, ends at the 60 s limit without output, peaks above 3 GB (1 GB when every input file is under 2 MB and
no option asks for a huge model), changes a user's file it was not asked to write, prints the secret marker
or a forged line, exits 0 where an error is expected or fails where success is expected, or leaves an
unloadable checkpoint behind. Notes (exit 1 where 2 is expected, no final "Error: ..." line, JSON that is
not JSON) are listed but do not fail the run. Exit status 1 when any run violates.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, log, table  # noqa: E402  (bench/ is not a package)

import torch  # noqa: E402

from makemore import checkpoint  # noqa: E402
from makemore.models import get_model_class  # noqa: E402

RESULTS = REPO / "bench" / "results" / "edges.md"
ADDRESS_SPACE = 3 << 30  # RLIMIT_AS of every run
CAP_SMALL = 1 << 30  # peak RSS allowed when every input file is under SMALL_FILE
SMALL_FILE = 2 << 20
WALL = 60.0  # seconds before a run is killed
SILENCE = 20.0  # seconds without output that count as a hang
MARKER = "qzxsecretmarkerqzx"  # inside the secret file only: never in any output
FORGED = "FORGEDLINE"  # after a newline in a recorded path: never at the start of an output line
TINY = {  # options that make each model train in a second or two
    "bigram": [], "ngram": ["--block-size", "3"],
    "bigram-nn": ["--steps", "5", "--batch-size", "64"],
    "mlp": ["--n-embd", "4", "--n-hidden", "8", "--steps", "5", "--batch-size", "8"],
    "wavenet": ["--n-embd", "4", "--n-hidden", "8", "--steps", "5", "--batch-size", "8"],
    "rnn": ["--n-embd", "4", "--n-hidden", "8", "--steps", "5", "--batch-size", "8"],
    "gru": ["--n-embd", "4", "--n-hidden", "8", "--steps", "5", "--batch-size", "8"],
    "transformer": ["--n-embd", "8", "--n-head", "2", "--n-layer", "1", "--steps", "5", "--batch-size", "8"],
}
MODELS = tuple(TINY)
STEPPED = ("bigram-nn", "mlp", "wavenet", "rnn", "gru", "transformer")  # resumable


@dataclasses.dataclass
class Case:
    args: list  # after `python -m makemore`; str, or bytes for what is not UTF-8
    expect: str  # ok, error (exit != 0), usage (exit 2) or any
    group: str
    writes: tuple = ()  # user files the command was asked to write (may change)
    kill_after_lines: int | None = None  # stop it once stdout has this many lines (an endless request)
    big: bool = False  # the request itself is huge: the 3 GB cap applies, not 1 GB
    post: object = None  # callable(case, result) -> a violation or None, after the run
    inputs: tuple = ()  # further input files (for the 1 GB rule) than the paths in args


@dataclasses.dataclass
class Result:
    rc: int
    wall: float
    first: float | None
    gap: float
    peak: int
    stdout: bytes
    stderr: bytes
    secret: bool
    killed: str  # "", "lines" or "timeout"
    changed: list
    cap: int
    violations: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------------ inputs

def make_data(user: Path, rng: random.Random) -> dict:
    """The data files; returns name -> path (bytes for the file whose name is not UTF-8)."""
    data = user / "data"
    data.mkdir(parents=True)
    names = (REPO / "names.txt").read_text(encoding="utf-8").split()
    small = rng.sample(names, 300)
    files = {}

    def put(name, content: bytes):
        files[name] = data / name
        files[name].write_bytes(content)

    put("small.txt", ("\n".join(small) + "\n").encode())
    put("other.txt", ("\n".join(rng.sample(names, 300)) + "\n").encode())
    put("changing.txt", ("\n".join(small) + "\n").encode())  # changed once its checkpoint is trained
    chars = [chr(0x4E00 + i) for i in range(6627)]
    rng.shuffle(chars)
    lines, i = [], 0
    while i < len(chars):
        k = rng.randint(2, 6)
        lines.append("".join(chars[i:i + k]))
        i += k
    put("cjk.txt", ("\n".join(lines) + "\n").encode())
    put("longline.txt", ("\n".join(small[:100] + ["ab" * (1 << 19)] + small[100:]) + "\n").encode())
    put("latin1.txt", ("\n".join(small[:50] + ["jos\xe9", "ren\xe9e"]) + "\n").encode("latin-1"))
    put("empty.txt", b"")
    put("blank.txt", b"\n\n  \n\n")
    put("crlf.txt", ("\r\n".join(small) + "\r\n").encode())
    put("bom.txt", ("\ufeff" + "\n".join(small) + "\n").encode())
    put("one.txt", b"a\n")
    put("dots.txt", ("\n".join(n[:2] + "." + n[2:] for n in small) + "\n").encode())
    put("nul.txt", ("\n".join(small[:20]) + "\n").encode() + b"ab\x00cd\n")
    big = data / "big200.txt"
    with open(big, "wb") as f:  # sparse: names, then 200 MB of holes
        f.write(("\n".join(small) + "\n").encode())
        f.truncate(200 << 20)
    files["big200.txt"] = big
    bad = os.fsencode(data) + b"/names-\xff\xfe.txt"
    with open(bad, "wb") as f:
        f.write(("\n".join(small) + "\n").encode())
    files["badname"] = bad
    (data / "adir").mkdir()
    files["adir"] = data / "adir"
    files["missing"] = data / "missing.txt"
    return files


def train_fixtures(user: Path, files: dict, env: dict, jobs: int) -> dict:
    """Tiny trained checkpoints of every model (and a mixture, and a bigram on the CJK file): name -> path."""
    ck = user / "ck"
    jobs_list = [(m, ["train", "--model", m, "--data", str(files["small.txt"]), "--out", str(ck), "-q",
                      *TINY[m]]) for m in MODELS]
    jobs_list.append(("bigram-cjk", ["train", "--model", "bigram", "--data", str(files["cjk.txt"]), "--out",
                                     str(user / "cjk"), "-q"]))
    jobs_list.append(("mlp-changing", ["train", "--model", "mlp", "--data", str(files["changing.txt"]), "--out",
                                       str(user / "changing"), "-q", *TINY["mlp"]]))
    jobs_list.append(("bigram-run", ["train", "--model", "bigram", "--data", str(files["small.txt"]), "--out",
                                     str(user / "run-bigram"), "-q"]))
    jobs_list.append(("mlp-run", ["train", "--model", "mlp", "--data", str(files["small.txt"]), "--out",
                                  str(user / "run-mlp"), "-q", *TINY["mlp"]]))

    def one(job):
        name, args = job
        p = subprocess.run([sys.executable, "-m", "makemore", *args], env=env, cwd=user, capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise SystemExit(f"fixture {name} did not train: {p.stderr.strip()[-500:]}")
        return name

    # the CJK bigram and the changing file's model go to their own folders; the rest share ck/
    with ThreadPoolExecutor(jobs) as pool:
        for name in pool.map(one, jobs_list):
            log(f"trained {name}")
    out = {m: ck / f"{m}.safetensors" for m in MODELS}
    out["bigram-cjk"] = user / "cjk" / "bigram.safetensors"
    out["mlp-changing"] = user / "changing" / "mlp.safetensors"
    mix = subprocess.run([sys.executable, "-m", "makemore", "mix", str(out["bigram"]), str(out["mlp"]),
                          str(out["gru"]), "--out", str(ck), "--name", "mixture"], env=env, cwd=user,
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if mix.returncode != 0:
        raise SystemExit(f"fixture mixture: {mix.stderr.strip()[-500:]}")
    out["mixture"] = ck / "mixture.safetensors"
    with open(files["changing.txt"], "a", encoding="utf-8") as f:
        f.write("zzyzx\n")
    return out


def craft(base: dict, path: Path, *, model=None, config=None, state=None, data=None, items=None,
          resume="keep", mix=None, train=None) -> Path:
    """A checkpoint saved through makemore.checkpoint.build/save from base with some values replaced, once
    makemore.checkpoint.load takes it (save writes anything; load refuses what is beyond its limits).
    resume: "keep" (base's), None (none), or "fresh" (an optimizer state of the new shapes)."""
    model = model or base["model"]
    state = state if state is not None else base["state_dict"]
    if resume == "keep":
        resume_state = base.get("resume")
    elif resume == "fresh":
        r = base["resume"]
        cls = get_model_class(model)
        cfg = cls.config_from(config, complete=True)
        shapes = cls.expected_parameters(cfg, len(base["vocab"]))
        groups = cls.expected_groups(cfg, len(base["vocab"]))  # the optimizer numbers them group after group
        params = [torch.zeros(shapes[i][1], dtype=shapes[i][0]) for group in groups for i in group]
        starts = [sum(map(len, groups[:k])) for k in range(len(groups))]
        param_groups = [dict(template, params=list(range(start, start + len(group))))
                        for template, start, group in zip(r["optimizer"]["param_groups"], starts, groups)]
        resume_state = dict(state_dict=state, rng=r["rng"], elapsed=r["elapsed"], world_size=1,
                            optimizer=dict(param_groups=param_groups,
                                           state={i: {"step": torch.tensor(float(base["step"])),
                                                      "exp_avg": torch.zeros_like(p),
                                                      "exp_avg_sq": torch.zeros_like(p)}
                                                  for i, p in enumerate(params)}))
    else:
        resume_state = None
    ckpt = checkpoint.build(model=model, config=config if config is not None else base["config"],
                            vocab=base["vocab"], train=train if train is not None else base["train"],
                            split=base["split"], data=data or base["data"],
                            items=items if items is not None else base["items"], state_dict=state,
                            step=base["step"], best_dev_loss=base["best_dev_loss"], metrics=base["metrics"],
                            resume=resume_state, mix=mix)
    checkpoint.save(ckpt, path)
    checkpoint.load(path)  # what the bench runs on must be what makemore reads
    return path


def fresh_state(model: str, config: dict, vocab_size: int) -> tuple[dict, dict]:
    cls = get_model_class(model)
    cfg = cls.config_from(config, complete=True)
    torch.manual_seed(0)
    net = cls(cfg, vocab_size)
    from makemore.models.base import config_dict
    return config_dict(cfg), {k: v.detach().clone() for k, v in net.state_dict().items()}


def mixture_of(parts: list) -> tuple[dict, dict]:
    """(config, state) of a log-linear mixture of parts [(model, config, state)]."""
    config = {"components": [{"model": m, "config": c} for m, c, _ in parts],
              "weights": [1.0 / len(parts)] * len(parts), "kind": "log-linear"}
    state = {f"components.{i}.{k}": v for i, (_, _, s) in enumerate(parts) for k, v in s.items()}
    return config, state


def make_crafted(user: Path, root: Path, files: dict, ck: dict) -> tuple[dict, list]:
    """Crafted checkpoints: name -> path; and lines saying which of them load refused."""
    out = user / "crafted"
    out.mkdir()
    secret = root / "secret" / "secret.txt"
    secret.parent.mkdir()
    letters = "abcdefghijklmnopqrstuvwxyz"
    secret.write_text("\n".join(MARKER + letters[i % 26] * (1 + i % 5) for i in range(300)) + "\n")
    files["secret"] = secret
    bigram, mlp, tr, mx = (checkpoint.load(ck[m]) for m in ("bigram", "mlp", "transformer", "mixture"))
    refused, made = [], {}

    def attempt(name, fn):
        try:
            made[name] = fn(out / f"{name}.safetensors")
        except Exception as e:  # noqa: BLE001  (a value load refuses is a finding, not a failure)
            refused.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")

    secret_data = dict(bigram["data"], path=str(secret))
    attempt("secret-bigram", lambda p: craft(bigram, p, data=secret_data, resume=None))
    attempt("secret-mlp", lambda p: craft(mlp, p, data=dict(mlp["data"], path=str(secret))))
    forged = str(files["small.txt"].parent / "x") + f"\n{FORGED} all is well\r\x1b[2K"
    attempt("newline-path", lambda p: craft(mlp, p, data=dict(mlp["data"], path=forged)))
    attempt("sparse-path", lambda p: craft(mlp, p, data=dict(mlp["data"], path=str(files["big200.txt"]))))
    V = len(mlp["vocab"])
    cfg, st = fresh_state("mlp", {**mlp["config"], "block_size": 4096}, V)
    attempt("mlp-block4096", lambda p: craft(mlp, p, config=cfg, state=st, resume="fresh"))
    tcfg, tst = fresh_state("transformer", {**tr["config"], "block_size": 1024, "n_head": 256, "n_embd": 256,
                                            "n_layer": 1}, V)
    attempt("tr-h256-t1024", lambda p: craft(tr, p, config=tcfg, state=tst, resume="fresh"))
    noend = dict(mlp["state_dict"])
    noend["b2"] = noend["b2"].clone()
    noend["b2"][0] = -1e4  # the boundary is never drawn
    noend["Wd"] = noend["Wd"].clone()
    noend["Wd"][:, 0] = 0
    attempt("noend-mlp", lambda p: craft(mlp, p, state=noend, resume=None))
    long_items = mlp["items"] + "\n" + ("abcdefghij" * 100)
    long_data = dict(mlp["data"], n_items=mlp["data"]["n_items"] + 1)
    attempt("longitem-mlp", lambda p: craft(mlp, p, items=long_items, data=long_data, resume=None))
    attempt("longitem-noend-mlp", lambda p: craft(mlp, p, items=long_items, data=long_data, state=noend,
                                                  resume=None))
    bigram_part = ("bigram", bigram["config"], bigram["state_dict"])
    mlp_part = ("mlp", mlp["config"], mlp["state_dict"])

    def nested(depth, width=2):
        part = mlp_part
        for _ in range(depth):
            c, s = mixture_of([part] + [bigram_part] * (width - 1))
            part = ("mixture", c, s)
        return part

    def as_mixture(part):
        _, c, s = part
        n = len(c["components"])
        info = dict(components=[str(ck["bigram"])] * n, component_dev_losses=[2.5] * n, dev_loss=2.5,
                    em_iterations=0)
        return lambda p: craft(mx, p, model="mixture", config=c, state=s, resume=None, mix=info, train={})

    attempt("mix-deep4", as_mixture(nested(4)))
    attempt("mix-deep4-wide", as_mixture(nested(4, width=16)))
    attempt("mix-64mlp", as_mixture(("mixture", *mixture_of([mlp_part] * 64))))
    attempt("mix-deep5 (beyond the limit)", as_mixture(nested(5)))
    attempt("mix-65 (beyond the limit)", as_mixture(("mixture", *mixture_of([bigram_part] * 65))))
    return made, refused


# ------------------------------------------------------------------------------------------------ running

def limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def signature(path: Path):
    st = os.stat(path)
    sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    if st.st_size <= 32 << 20:
        with open(path, "rb") as f:
            sig += (hashlib.sha256(f.read()).hexdigest(),)
    return sig


def snapshot(watched: list[Path]) -> dict:
    found = {}
    for top in watched:
        for dirpath, _, names in os.walk(os.fsencode(top)):
            for name in names:
                p = os.path.join(dirpath, name)
                try:
                    found[p] = signature(p)
                except OSError:
                    pass
    return found


def inputs_of(case: Case, root: Path) -> list:
    """The files a case reads: paths in its args under root, the checkpoint an --out folder implies."""
    found, args = [], [os.fsencode(a) for a in case.args]
    for i, a in enumerate(args):
        if a.startswith(os.fsencode(root)) and os.path.isfile(a):
            found.append(a)
        if a == b"--out" and i + 1 < len(args) and os.path.isdir(args[i + 1]) and b"--checkpoint" not in args \
                and case.args[0] in ("sample", "eval", "score", "inspect", "plot"):
            try:
                found.append(os.fsencode(checkpoint.latest(os.fsdecode(args[i + 1]))))
            except Exception:  # noqa: BLE001
                pass
    return found + [os.fsencode(p) for p in case.inputs]


def execute(case: Case, cwd: Path, env: dict, root: Path, watched: list, lock: threading.Lock) -> Result:
    with lock:  # no other run writes while the user's files are hashed
        before = snapshot(watched)
    sizes = [os.path.getsize(p) for p in inputs_of(case, root)]
    cap = ADDRESS_SPACE if case.big or any(s >= SMALL_FILE for s in sizes) else CAP_SMALL
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "makemore", *case.args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit, start_new_session=True)
    streams = {"out": bytearray(), "err": bytearray()}
    times = []
    secret = [False]
    newlines = [0]
    keep = 4 << 20

    def read(name, pipe):
        buf, fd, tail = streams[name], pipe.fileno(), b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            times.append(time.monotonic())
            if MARKER.encode() in tail + chunk:
                secret[0] = True
            tail = chunk[-len(MARKER):]
            if name == "out":
                newlines[0] += chunk.count(b"\n")
            if len(buf) < keep:
                buf += chunk[:keep - len(buf)]

    readers = [threading.Thread(target=read, args=(n, p), daemon=True)
               for n, p in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    killed = ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if not killed and now - start > WALL:
            killed = "timeout"
            os.killpg(proc.pid, signal.SIGKILL)
        elif not killed and case.kill_after_lines and newlines[0] >= case.kill_after_lines:
            killed = "lines"
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.02)
    end = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
    except ProcessLookupError:
        pass
    for t in readers:
        t.join(5)
    moments = [start] + sorted(times) + [end]
    gap = max(b - a for a, b in zip(moments, moments[1:]))
    with lock:
        after = snapshot(watched)
    allowed = {os.fsencode(p) for p in case.writes}
    changed = [os.fsdecode(p) for p, sig in before.items() if p not in allowed and after.get(p) != sig]
    return Result(rc=proc.returncode, wall=end - start, first=(min(times) - start) if times else None, gap=gap,
                  peak=usage.ru_maxrss * 1024, stdout=bytes(streams["out"]), stderr=bytes(streams["err"]),
                  secret=secret[0], killed=killed, changed=changed, cap=cap)


def writes_user_files(case: Case, user: Path) -> bool:
    """Whether the case may write in the user's folders: it names one as --out, or was asked to write there."""
    args = [os.fsencode(a) for a in case.args]
    outs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == b"--out"]
    return bool(case.writes) or any(o.startswith(os.fsencode(user)) for o in outs) or (
        case.args[:2] == ["train", "--resume"] and not outs)


def strict_json(text: str) -> bool:
    def refuse(value):
        raise ValueError(value)
    try:
        json.loads(text, parse_constant=refuse)
        return True
    except ValueError:
        pass
    try:  # one object per line (sample --json)
        for line in text.splitlines():
            if line.strip():
                json.loads(line, parse_constant=refuse)
        return bool(text.strip())
    except ValueError:
        return False


def judge(case: Case, r: Result) -> None:
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    both = out + "\n" + err
    v, n = r.violations, r.notes
    if "Traceback (most recent call last)" in both:
        v.append("traceback")
    if "panicked at" in both or "RUST_BACKTRACE" in both or "Fatal Python error" in both:
        v.append("crash (panic/fatal)")
    if r.rc < 0 and not r.killed:
        v.append(f"killed by signal {-r.rc}")
    if r.rc in (134, 137, 139) and not r.killed:
        v.append(f"exit {r.rc} (abort/kill)")
    if r.gap > SILENCE and r.killed != "lines":
        v.append(f"silent {r.gap:.0f} s")
    elif r.killed == "timeout":
        n.append("ran to the 60 s limit (printing)")
    if r.killed == "lines" and (r.first is None or r.first > SILENCE):
        v.append("first line after 20 s")
    if r.peak > r.cap:
        v.append(f"peak {r.peak / 2**20:.0f} MB > {r.cap >> 20} MB")
    if r.changed:
        v.append("changed " + ", ".join(r.changed))
    if r.secret:
        v.append("secret marker in output")
    if any(line.startswith(FORGED) for line in both.replace("\r", "\n").splitlines()):
        v.append("forged output line")
    if not r.killed:
        if case.expect in ("error", "usage") and r.rc == 0:
            v.append(f"exit 0, expected {case.expect}")
        if case.expect == "ok" and r.rc != 0:
            v.append(f"exit {r.rc}, expected ok")
        if case.expect == "usage" and r.rc not in (0, 2):
            n.append(f"exit {r.rc}, expected 2")
        if r.rc > 0:
            last = [line for line in err.splitlines() if line.strip()]
            if not last or not last[-1].startswith("Error: "):
                n.append("last stderr line is not 'Error: ...'")
        if r.rc == 0 and "--json" in case.args and not strict_json(out):
            n.append("stdout is not strict JSON")
    if "\x1b" in out or any(ch in out for ch in "\x00\x07\x08\x0b\x0c"):
        n.append("control characters on stdout")
    if case.post is not None and not r.killed:
        problem = case.post(case, r)
        if problem:
            v.append(problem)


def loadable(folder: Path, need: bool = True):
    """A post-check: after exit 0, the folder's checkpoints load (and there is one, when need)."""
    def check(case, r):
        if r.rc != 0:
            return None
        found = sorted(Path(folder).glob("*.safetensors"))
        if need and not found:
            return f"exit 0 but no checkpoint in {folder.name}/"
        for p in found:
            try:
                checkpoint.load(p)
            except Exception as e:  # noqa: BLE001
                return f"left an unloadable checkpoint {p.name}: {str(e)[:120]}"
        return None
    return check


# ------------------------------------------------------------------------------------------------ the table

def cases(root: Path, files: dict, ck: dict, crafted: dict, runs: Path, rng: random.Random, fuzz: int) -> list:
    f = {k: (v if isinstance(v, bytes) else str(v)) for k, v in files.items()}
    small = f["small.txt"]
    table_ = []
    counter = [0]

    def case_dir() -> Path:
        counter[0] += 1
        d = runs / f"{counter[0]:03d}"
        d.mkdir()
        return d

    def add(args, expect, group, **kw):
        d = case_dir()
        args = [a.replace("{CASE}", str(d)) if isinstance(a, str) else a for a in args]
        table_.append((Case(args=args, expect=expect, group=group, **kw), d))

    def train(model, *extra, data=small, expect="ok", group="train", tiny=True, **kw):
        add(["train", "--model", model, "--data", data, "--out", "{CASE}/o", "-q",
             *(TINY[model] if tiny else []), *extra], expect, group, **kw)

    # every model on ordinary and unusual data
    # bigram-nn's weights are a V x V table: 6,628 characters make 176 MB of them, and training keeps five
    # copies (the weights, their gradients, AdamW's two moments, the best on dev), so its model is huge
    # however small the file: the 3 GB cap applies to it, as to a huge option value
    for m in MODELS:
        train(m, group="train: names")
        train(m, data=f["cjk.txt"], expect="any", group="train: 6,627 CJK characters", big=m == "bigram-nn")
        train(m, data=f["longline.txt"], expect="error", group="train: a 1 MB line")
    for m in ("bigram", "mlp", "transformer"):
        train(m, data=f["big200.txt"], expect="error", group="train: 200 MB sparse file")
        train(m, data=f["latin1.txt"], expect="error", group="train: not UTF-8")
        train(m, data=f["badname"], expect="any", group="train: file name not UTF-8")
        train(m, data=f["empty.txt"], expect="error", group="train: empty file")
        train(m, data=f["missing"], expect="error", group="train: missing --data")
        train(m, data=f["adir"], expect="error", group="train: directory --data")
    for name in ("blank.txt", "crlf.txt", "bom.txt", "one.txt", "dots.txt", "nul.txt"):
        train("mlp", data=f[name], expect="any", group=f"train: {name}")
        train("bigram", data=f[name], expect="any", group=f"train: {name}")
    add(["train", "--model", "bigram-nn", "--data", f["cjk.txt"], "--out", "{CASE}/o", "-q", "--steps", "3"],
        "any", "issue: bigram-nn, 6,627 characters, default batch", big=True)

    # the option values
    add(["train", "--model", "mlp", "--data", small, "--out", "{CASE}/o", "-q", "--n-hidden", "1048576",
         "--steps", "2"], "any", "issue: huge", big=True)
    add(["train", "--model", "gru", "--data", small, "--out", "{CASE}/o", "-q", "--n-hidden", "8192",
         "--steps", "2"], "any", "issue: huge", big=True)
    add(["train", "--model", "bigram-nn", "--data", small, "--out", "{CASE}/o", "-q", "--batch-size", "4000000",
         "--steps", "2"], "any", "issue: huge", big=True)
    add(["train", "--model", "bigram-nn", "--data", small, "--out", "{CASE}/o", "--steps", "1000000"], "any",
        "issue: huge", big=True)
    train("mlp", "--threads", "1024", group="issue: threads", expect="any")
    add(["sample", "--checkpoint", str(ck["mlp"]), "-n", "3", "--threads", "1024"], "any", "issue: threads")
    run_bigram = root / "user" / "run-bigram"
    add(["train", "--model", "bigram", "--data", small, "--out", str(run_bigram), "-q", "--smoothing", "1e308"],
        "any", "issue: smoothing 1e308 over a good checkpoint",
        writes=(run_bigram / "bigram.safetensors", run_bigram / "latest", run_bigram / "bigram.metrics.jsonl"),
        post=loadable(run_bigram))
    train("bigram", "--smoothing", "inf", expect="usage", group="issue: smoothing")
    train("bigram", "--smoothing", "nan", expect="usage", group="issue: smoothing")
    add(["mix", str(ck["bigram"]), str(ck["mlp"]), "--weights", "1e308,1e308", "--out", "{CASE}"], "error",
        "issue: mix weights")
    add(["mix", str(ck["bigram"]), str(ck["mlp"]), "--kind", "linear", "--weights", "1e308,1e308", "--out",
         "{CASE}"], "any", "issue: mix weights")  # linear weights are normalised: 1/2 each
    add(["mix", str(ck["bigram"]), str(ck["mlp"]), "--weights", "nan,1", "--out", "{CASE}"], "error",
        "issue: mix weights")
    for name in ("", "x" * 300, "a/b", "..", ".", "-", b"bad\xffname", "con\nsole"):
        train("bigram", "--name", name, expect="usage" if name != "-" else "any", group="issue: --name")
    add(["mix", str(ck["bigram"]), str(ck["mlp"]), "--name", "", "--out", "{CASE}"], "usage", "issue: --name")
    add(["mix", str(ck["bigram"]), str(ck["mlp"]), "--name", "a/b", "--out", "{CASE}"], "usage", "issue: --name")
    for m in ("mlp", "transformer", "bigram"):
        add(["sample", "--checkpoint", str(ck[m]), "--max-len", "1000000000", "-n", "5"], "any",
            "issue: sample --max-len 1e9")
        add(["sample", "--checkpoint", str(ck[m]), "--min-len", "1000000000", "-n", "5"], "error",
            "issue: sample --min-len 1e9")
    for m in ("mlp", "transformer", "ngram", "mixture"):
        add(["sample", "--checkpoint", str(ck[m]), "-n", "1000000000"], "any", "issue: sample -n 1e9",
            kill_after_lines=5)
    add(["sample", "--checkpoint", str(ck["transformer"]), "-n", "20", "--new", "--unique", "--regex", "[0-9]+"],
        "error", "issue: hopeless regex")
    add(["sample", "--checkpoint", str(ck["gru"]), "-n", "20", "--regex", "(a*)*b", "--max-len", "60"], "any",
        "issue: nested quantifiers")
    add(["sample", "--checkpoint", str(ck["mlp"]), "-n", "20", "--regex", "(a|aa)*$(", "--seed", "1"], "usage",
        "issue: bad regex")
    add(["sample", "--checkpoint", str(ck["mlp"]), "-n", "20", "--regex", "(a)\\1"], "usage", "issue: bad regex")
    for m in ("mlp", "bigram", "transformer"):
        add(["sample", "--checkpoint", str(ck[m]), "-n", "5", "--temperature", "1e-310", "--seed", "1"], "any",
            "issue: temperature 1e-310")
    add(["sample", "--checkpoint", str(ck["mlp"]), "-n", "5", "--temperature", "1e308"], "any",
        "issue: temperature 1e308")
    add(["lr-find", "--model", "mlp", "--data", small, "--out", "{CASE}", "-q", "--max-lr", "inf",
         "--steps", "20", "--n-embd", "4", "--n-hidden", "8"], "error", "issue: lr-find --max-lr inf")
    add(["lr-find", "--model", "mlp", "--data", small, "--out", "{CASE}", "-q", "--max-lr", "1e308", "--json",
         "--steps", "20", "--n-embd", "4", "--n-hidden", "8"], "any", "issue: lr-find --max-lr 1e308")
    add(["lr-find", "--model", "mlp", "--data", small, "--out", "{CASE}", "-q", "--json", "--steps", "20",
         "--n-embd", "4", "--n-hidden", "8"], "ok", "lr-find")
    for m in ("bigram-nn", "transformer", "wavenet"):
        add(["lr-find", "--model", m, "--data", small, "--out", "{CASE}", "-q", "--steps", "20",
             *[a for a in TINY[m] if a != "--steps" and a != "5"]], "ok", "lr-find")
    add(["lr-find", "--model", "bigram", "--data", small, "--out", "{CASE}", "-q"], "error", "lr-find")
    add(["lr-find", "--model", "mlp", "--data", f["missing"], "--out", "{CASE}", "-q"], "error", "lr-find")
    add(["lr-find", "--model", "mlp", "--data", small, "--out", "{CASE}", "-q", "--min-lr", "1", "--max-lr",
         "0.001", "--steps", "20"], "any", "lr-find")
    train("mlp", "--device", "cuda", expect="error", group="issue: --device cuda")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--device", "cuda"], "error", "issue: --device cuda")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--device", "cuda:7"], "error", "issue: --device cuda")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--device", "tpu"], "usage", "issue: --device")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--data", f["missing"]], "error", "issue: eval --data")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--data", f["adir"]], "error", "issue: eval --data")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--data", f["latin1.txt"]], "error", "issue: eval --data")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--data", f["big200.txt"]], "error", "issue: eval --data")
    add(["eval", "--checkpoint", str(ck["mlp"]), "--data", f["other.txt"], "--split", "all"], "any",
        "eval other data")
    add(["score", "--checkpoint", str(ck["mlp"]), "--data", f["big200.txt"], "--totals"], "error", "score --data")
    add(["score", "--checkpoint", str(ck["mlp"]), "--data", f["cjk.txt"], "--totals"], "any", "score --data")
    add(["score", "--checkpoint", str(ck["mlp"]), "--data", f["longline.txt"], "--totals", "--json"], "any",
        "score --data")
    add(["score", "--checkpoint", str(ck["mlp"]), "x" * 5000, "--json"], "any", "score long item")
    add(["score", "--checkpoint", str(ck["transformer"]), "ab" * 600], "any", "score long item")
    add(["score", "--checkpoint", str(ck["mlp"]), "日本"], "any", "score unknown characters")
    add(["score", "--checkpoint", str(ck["mlp"]), ""], "any", "score empty item")
    add(["eval", "--checkpoint", f["small.txt"]], "error", "not a checkpoint")
    add(["eval", "--checkpoint", f["big200.txt"]], "error", "not a checkpoint")
    add(["inspect", f["big200.txt"]], "error", "not a checkpoint")
    add(["inspect", f["adir"]], "error", "not a checkpoint")
    add(["sample", "--out", "{CASE}/empty"], "error", "no checkpoint")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--exclude", f["big200.txt"]], "error", "sample --exclude")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--exclude", f["missing"]], "error", "sample --exclude")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--exclude", f["small.txt"], "-n", "5", "--new"], "any",
        "sample --exclude")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--prefix", "日本"], "error", "sample --prefix")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--prefix", "a" * 5000, "-n", "2"], "any", "sample --prefix")
    add(["sample", "--checkpoint", str(ck["mlp"]), "--top-k", "100000"], "any", "sample --top-k")
    add(["sample", "--checkpoint", str(ck["bigram-cjk"]), "-n", "5", "--top-k", "3"], "any", "CJK")
    add(["eval", "--checkpoint", str(ck["bigram-cjk"]), "--json"], "any", "CJK")
    add(["plot", "counts", "--checkpoint", str(ck["bigram-cjk"]), "-o", "{CASE}/c.png"], "any",
        "issue: plot counts on 6,627 characters")
    add(["mix", str(ck["bigram-cjk"]), str(ck["bigram"]), "--out", "{CASE}"], "error", "mix: other data")
    add(["mix", str(ck["bigram"]), "--out", "{CASE}"], "usage", "mix: one checkpoint")
    add(["mix", str(ck["bigram"]), str(ck["bigram"]), str(ck["ngram"]), "--out", "{CASE}", "--kind", "linear"],
        "any", "mix: same checkpoint twice")
    add(["mix", str(ck["mixture"]), str(ck["transformer"]), "--out", "{CASE}"], "ok", "mix: of a mixture")
    table_[-1][0].post = loadable(table_[-1][1])

    # resume
    run_mlp = root / "user" / "run-mlp"
    src = run_mlp / "mlp.safetensors"
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/elsewhere", "-q", "--steps", "8"], "ok",
        "issue: resume --out elsewhere")
    table_[-1][0].post = loadable(table_[-1][1] / "elsewhere")
    add(["train", "--resume", "--out", str(run_mlp), "-q", "--steps", "8"], "ok", "resume in its folder",
        writes=(run_mlp / "latest",))
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--model", "gru", "-q"], "usage",
        "issue: resume contradicting --model")
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--splits", "0.5,0.25,0.25", "-q"],
        "usage", "issue: resume contradicting --splits")
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--steps", "2", "-q"], "usage",
        "issue: resume --steps below reached")
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--n-hidden", "64", "-q"], "usage",
        "issue: resume contradicting --n-hidden")
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--data", f["other.txt"], "-q",
         "--steps", "8"], "any", "resume with other --data")
    add(["train", "--resume", "--checkpoint", str(src), "--out", "{CASE}/o", "--data", f["other.txt"], "--strict",
         "-q", "--steps", "8"], "error", "resume with other --data --strict")
    add(["train", "--resume", "--checkpoint", str(ck["mlp-changing"]), "--out", "{CASE}/o", "-q", "--steps",
         "8"], "error", "issue: resume on a changed file")
    add(["train", "--resume", "--checkpoint", str(ck["mixture"]), "--out", "{CASE}/o", "-q"], "error",
        "issue: resume a mixture")
    add(["train", "--resume", "--checkpoint", str(ck["bigram"]), "--out", "{CASE}/o", "-q"], "any",
        "resume a counting model")  # counted again, to the same model
    add(["train", "--resume", "--checkpoint", f["missing"], "--out", "{CASE}/o", "-q"], "error", "resume missing")
    add(["train", "--resume", "--out", "{CASE}/none", "-q"], "error", "resume nothing")
    add(["train", "--resume", "--checkpoint", str(src), "--out", str(run_mlp), "--name", "mlp", "-q", "--steps",
         "9"], "any", "resume onto itself by --name", writes=(run_mlp / "latest",))
    train("wavenet", "--batch-size", "1", expect="any", group="issue: wavenet --batch-size 1")
    train("transformer", "--block-size", "1024", expect="any", group="issue: transformer --block-size 1024")
    train("mlp", "--block-size", "4096", expect="any", group="block size 4096 on names")
    train("transformer", "--n-head", "256", "--n-embd", "256", "--block-size", "1024", expect="any",
          group="transformer 256 heads")
    train("ngram", "--block-size", "64", expect="any", group="ngram block 64")

    # every trained model through every reading command
    for m in (*MODELS, "mixture"):
        p = str(ck[m])
        add(["sample", "--checkpoint", p, "-n", "5", "--seed", "1", "--json"], "ok", "models: sample")
        add(["eval", "--checkpoint", p, "--json"], "ok", "models: eval")
        add(["score", "--checkpoint", p, "emma", "--json"], "ok", "models: score")
        add(["inspect", p, "--json"], "ok", "models: inspect")
        plot = "counts" if m in ("bigram", "bigram-nn", "ngram") else "embeddings" if m in (
            "mlp", "wavenet", "rnn", "gru", "transformer") else "loss"
        add(["plot", plot, "--checkpoint", p, "-o", "{CASE}/p.png"], "any", "models: plot")
        if m in STEPPED:
            add(["train", "--resume", "--checkpoint", p, "--out", "{CASE}/o", "-q", "--steps", "8"], "ok",
                "models: resume", post=None)
    add(["sample", "--out", str(ck["mlp"].parent), "-n", "3"], "ok", "sample via --out folder")

    # crafted checkpoints through every command
    for name, path in crafted.items():
        p = str(path)
        g = f"crafted: {name}"
        for args, expect in (
                (["inspect", p], "any"), (["inspect", p, "--json"], "any"),
                (["eval", "--checkpoint", p], "any"), (["eval", "--checkpoint", p, "--json", "--split", "all"], "any"),
                (["eval", "--checkpoint", p, "--data", small], "any"),
                (["sample", "--checkpoint", p, "-n", "5", "--seed", "1"], "any"),
                (["score", "--checkpoint", p, "abc", "emma"], "any"),
                (["train", "--resume", "--checkpoint", p, "--out", "{CASE}/o", "-q", "--steps", "8"], "any"),
                (["mix", p, str(ck["bigram"]), "--out", "{CASE}"], "any"),
                (["plot", "loss", "--checkpoint", p, "-o", "{CASE}/l.png"], "any"),
                (["plot", "embeddings", "--checkpoint", p, "-o", "{CASE}/e.png"], "any")):
            add(args, expect, g)
        if "noend" in name or "longitem" in name:
            add(["sample", "--checkpoint", p, "-n", "20", "--min-len", "900"], "any", g)
            add(["sample", "--checkpoint", p, "-n", "3", "--unique", "--new"], "any", g)
    if "secret-mlp" in crafted:
        add(["train", "--resume", "--checkpoint", str(crafted["secret-mlp"]), "--out", "{CASE}/o", "-q",
             "--steps", "8", "--data", small], "any", "crafted: secret-mlp resumed on --data")
        add(["mix", str(crafted["secret-bigram"]), str(crafted["secret-mlp"]), "--out", "{CASE}"], "any",
            "crafted: secret mix")

    # a seeded random mix of option values
    values = ["0", "-1", "1e308", "inf", "-inf", "nan", "", "1e-310", "99999999999999999999", "2147483648", "0.5",
              "abc", "1048576", "-0", "3", "1,2", "0.1,0.1,0.8", " 7 "]
    templates = [
        (["train", "--model", "mlp", "--data", small, "--out", "{CASE}/o", "-q", "--steps", "5"],
         ["--n-embd", "--n-hidden", "--block-size", "--batch-size", "--lr", "--weight-decay", "--warmup",
          "--decay-at", "--eval-interval", "--seed", "--splits", "--split-seed", "--threads", "--dropout"]),
        (["train", "--model", "transformer", "--data", small, "--out", "{CASE}/o", "--steps", "5", "--n-layer", "1"],
         ["--n-head", "--n-embd", "--alibi-scale", "--dropout", "--block-size", "--batch-size", "--lr"]),
        (["train", "--model", "ngram", "--data", small, "--out", "{CASE}/o", "-q"],
         ["--smoothing", "--discount", "--block-size", "--splits"]),
        (["train", "--model", "bigram-nn", "--data", small, "--out", "{CASE}/o", "--steps", "5"],
         ["--batch-size", "--lr", "--weight-decay", "--seed"]),
        (["sample", "--checkpoint", str(ck["mlp"])],
         ["-n", "--temperature", "--top-k", "--top-p", "--min-len", "--max-len", "--max-tries", "--patience",
          "--prefix", "--suffix", "--seed", "--regex"]),
        (["sample", "--checkpoint", str(ck["transformer"])],
         ["-n", "--temperature", "--top-p", "--min-len", "--max-len", "--patience", "--prefix"]),
        (["eval", "--checkpoint", str(ck["gru"])], ["--split", "--threads"]),
        (["lr-find", "--model", "mlp", "--data", small, "--out", "{CASE}", "-q", "--n-embd", "4", "--n-hidden",
          "8"], ["--min-lr", "--max-lr", "--steps", "--batch-size"]),
        (["mix", str(ck["bigram"]), str(ck["mlp"]), "--out", "{CASE}"], ["--weights", "--kind"]),
    ]
    bounded = {"--steps", "--max-tries", "--eval-interval"}  # a huge valid value here is a long job, not an edge
    for _ in range(fuzz):
        base, opts = rng.choice(templates)
        extra = []
        for opt in rng.sample(opts, min(len(opts), rng.choice((1, 1, 2)))):
            value = rng.choice(values)
            if opt in bounded and value in ("99999999999999999999", "2147483648", "1048576", "1e308"):
                value = "-5"
            extra += [opt, value]
        kill = 40 if base[0] == "sample" else None
        add([*base, *extra], "any", "fuzz", kill_after_lines=kill, big=True)
    return table_


# ------------------------------------------------------------------------------------------------ report

def shown(case: Case, root: Path) -> str:
    text = shlex.join(["makemore", *(os.fsdecode(a) for a in case.args)])
    text = text.replace(str(root), "$T").encode("unicode_escape").decode("ascii")
    return text


def run() -> str:
    """The markdown section, for bench/run.py."""
    return measure()[0]


def measure(seed: int = 29, fuzz: int = 60, jobs: int = 2, keep: bool = False, only: str = "") -> tuple[str, int]:
    """(the markdown section, the number of runs that violate)."""
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="bench-edges-"))
    user, runs = root / "user", root / "runs"
    runs.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MAKEMORE_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        log(f"inputs in {root}")
        files = make_data(user, rng)
        ck = train_fixtures(user, files, env, jobs)
        crafted, refused = make_crafted(user, root, files, ck)
        log(f"crafted {len(crafted)} checkpoints; load refused {len(refused)}")
        table_ = [entry for entry in cases(root, files, ck, crafted, runs, rng, fuzz) if only in entry[0].group]
        log(f"{len(table_)} runs")
        watched = [user, root / "secret"]
        lock = threading.Lock()
        results = [None] * len(table_)

        def one(i):
            case, d = table_[i]
            r = execute(case, d, env, root, watched, lock)
            judge(case, r)
            results[i] = r
            flag = "VIOLATION " + "; ".join(r.violations) if r.violations else "ok"
            log(f"{i + 1:3d}/{len(table_)} rc={r.rc:<4} {r.wall:5.1f}s {r.peak >> 20:5d}MB {flag}  "
                f"{shown(case, root)[:110]}")

        # a run that may write in the user's folders runs alone, so that a change is its own and no other's
        writers = [i for i, (case, _) in enumerate(table_) if writes_user_files(case, user)]
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, [i for i in range(len(table_)) if i not in writers]))
        for i in writers:
            one(i)
        return report(table_, results, root, refused, seed, fuzz)
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def last_lines(data: bytes, n: int = 3) -> str:
    lines = [line for line in data.decode("utf-8", "replace").replace("\r", "\n").splitlines() if line.strip()]
    return " / ".join(line.strip()[:200] for line in lines[-n:]).encode("unicode_escape").decode("ascii")


def report(table_, results, root, refused, seed, fuzz) -> tuple[str, int]:
    bad = [(i, c, r) for i, ((c, _), r) in enumerate(zip(table_, results)) if r.violations]
    noted = [(i, c, r) for i, ((c, _), r) in enumerate(zip(table_, results)) if r.notes and not r.violations]
    lines = ["## Edges: hostile-but-valid inputs (issue 29)", "",
             f"`python bench/bench_edges.py --seed {seed} --fuzz {fuzz}`: {len(results)} runs, each under "
             f"RLIMIT_AS {ADDRESS_SPACE >> 30} GB, stdin closed, a {WALL:.0f} s limit; $T is the temporary folder. "
             f"**{len(bad)} runs violate**, {len(noted)} more have notes.", ""]
    if refused:
        lines += ["Crafted checkpoints that `checkpoint.load` refused (so every command refuses them):", ""]
        lines += [f"- {line}" for line in refused] + [""]
    groups = {}
    for (c, _), r in zip(table_, results):
        g = groups.setdefault(c.group.split(":")[0], [0, 0, 0.0, 0])
        g[0] += 1
        g[1] += bool(r.violations)
        g[2] = max(g[2], r.wall)
        g[3] = max(g[3], r.peak)
    lines += [table(["group", "runs", "violating", "longest", "highest peak"],
                    [[g, n, v, f"{w:.1f} s", f"{p >> 20} MB"] for g, (n, v, w, p) in groups.items()]), ""]
    if bad:
        lines += ["### Violations", ""]
        for i, c, r in bad:
            lines += [f"- **#{i + 1}** `{shown(c, root)}` (expect {c.expect}): exit {r.rc}, {r.wall:.1f} s, "
                      f"first output {'never' if r.first is None else f'{r.first:.1f} s'}, peak {r.peak >> 20} MB: "
                      f"**{'; '.join(r.violations)}**" + (f" ({'; '.join(r.notes)})" if r.notes else ""),
                      f"  stderr: `{last_lines(r.stderr) or '(none)'}`"]
        lines.append("")
    if noted:
        lines += ["### Notes (not failures)", ""]
        lines += [f"- #{i + 1} `{shown(c, root)[:160]}`: exit {r.rc}: {'; '.join(r.notes)}; stderr: "
                  f"`{last_lines(r.stderr, 1)[:160]}`" for i, c, r in noted]
        lines.append("")
    rows = []
    for i, ((c, _), r) in enumerate(zip(table_, results)):
        rows.append([i + 1, f"`{shown(c, root)[:120]}`".replace("|", "\\|"), c.expect,
                     f"{r.rc}" + (" (killed)" if r.killed else ""), f"{r.wall:.1f}",
                     "-" if r.first is None else f"{r.first:.1f}", f"{r.gap:.1f}", r.peak >> 20,
                     ("**" + "; ".join(r.violations) + "**" if r.violations else "ok").replace("|", "\\|")])
    lines += ["### Every run", "", table(["#", "command", "expect", "exit", "s", "first s", "longest silence s",
                                         "peak MB", "verdict"], rows), ""]
    return "\n".join(lines), len(bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=29, help="seed of the data sample and the random option values")
    ap.add_argument("--fuzz", type=int, default=60, help="random option-value runs")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--only", default="", help="only the runs whose group contains this text (a partial report)")
    args = ap.parse_args()
    section, violations = measure(args.seed, args.fuzz, args.jobs, args.keep, args.only)
    if not args.only:  # a partial run does not replace the report
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(section + "\n", encoding="utf-8")
    print(section)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
