"""Timings of issue 32's targets for `makemore serve`, each beside a baseline measured in the same run: the page
ready within 0.5 s of the server's start beyond loading the model (baseline: `makemore inspect`, which loads it
too), 20 samples answered in at most 0.2 s (baseline: the same call to the library in this process), the
next-character distribution in at most 0.05 s per keystroke (baseline: one forward pass of the model).
Usage: python bench/bench_serve.py CHECKPOINT... [--threads N]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import REPO, best_of, fmt_time, log, median, table

import torch  # noqa: E402  (after common, which puts this checkout first on the path)

from makemore import api  # noqa: E402
from makemore.models.base import next_log_probs  # noqa: E402

# what the page asks for as it opens, in its order (index.html, its script and style, then app.js's first calls)
PAGE_GETS = ["/", "/style.css", "/app.js", "/api/model"]
PAGE_POSTS = [("/api/next", {"prefix": ""})]
TYPED = "jonathan"  # keystrokes of the next-character panel


def request(connection, path: str, body=None) -> dict | str:
    data = json.dumps(body).encode() if body is not None else None
    connection.request("POST" if data is not None else "GET", path, body=data,
                       headers={"Content-Type": "application/json"} if data is not None else {})
    response = connection.getresponse()
    text = response.read().decode()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {text}")
    return text


def in_thread(fn) -> None:
    worker = threading.Thread(target=fn)
    worker.start()
    worker.join()


def page_ready(checkpoint: Path, threads: int) -> tuple[float, float, float]:
    """A fresh `makemore serve` process: seconds to its address (imports and loading the model), then until the
    page's first requests are answered; and the baseline, a `makemore inspect` process (imports and loading)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "makemore", "serve", "--checkpoint", str(checkpoint),
                                "--threads", str(threads)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        listening = time.perf_counter()
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        for path in PAGE_GETS:
            request(connection, path)
        for path, body in PAGE_POSTS:
            request(connection, path, body)
        ready = time.perf_counter()
    finally:
        process.terminate()
        process.wait()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "makemore", "inspect", str(checkpoint)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return listening - started, ready - listening, time.perf_counter() - t


def measure(checkpoint: Path, threads: int) -> list:
    """One row of the table for a checkpoint."""
    from makemore import serve

    start_s, ready_s, inspect_s = min((page_ready(checkpoint, threads) for _ in range(3)), key=lambda r: r[1])
    server = serve.start(checkpoint, checkpoint.parent, n_threads=threads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    trained = server.explorer.view.trained
    seeds = iter(range(10**6))

    request(connection, "/api/sample", {"n": 20, "seed": 0})  # warm up
    sample_s, _ = best_of(lambda: request(connection, "/api/sample", {"n": 20, "seed": next(seeds)}))
    # in a thread of its own, as the server answers each request: torch's threads are set per thread
    library_s, _ = best_of(lambda: in_thread(lambda: trained.sample(20, next(seeds))))

    def keystrokes() -> list[float]:
        times = []
        for i in range(len(TYPED) + 1):
            t = time.perf_counter()
            request(connection, "/api/next", {"prefix": TYPED[:i]})
            times.append(time.perf_counter() - t)
        return times

    keystrokes()
    next_times = min((keystrokes() for _ in range(3)), key=max)
    window = torch.zeros(1, trained.block_size, dtype=torch.long)
    label = torch.zeros(1, dtype=torch.long) if trained.labels else None  # a labelled model: under its first label
    with torch.no_grad():
        forward_s, _ = best_of(lambda: in_thread(lambda: next_log_probs(trained.model, window, label)), repeat=20)

    # the same keystrokes while another request draws for seconds (a regex no item meets)
    def hopeless():
        other = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        other.request("POST", "/api/sample", body=json.dumps({"n": 5, "regex": "[0-9]+"}),
                      headers={"Content-Type": "application/json"})
        other.getresponse().read()

    busy = threading.Thread(target=hopeless)
    busy.start()
    time.sleep(0.3)
    during = keystrokes()
    busy.join()
    server.shutdown()
    server.server_close()
    return [trained.name, fmt_time(start_s), f"**{fmt_time(ready_s)}**", fmt_time(inspect_s),
            f"**{fmt_time(sample_s)}**", f"{fmt_time(library_s)} ({sample_s / library_s:.2f}x)",
            f"**{fmt_time(median(next_times))}** (max {fmt_time(max(next_times))})", fmt_time(forward_s),
            f"{fmt_time(median(during))} (max {fmt_time(max(during))})"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.checkpoints:
        log(f"serve: {path}")
        rows.append(measure(path, args.threads))
    print(f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}; best of 3 to 5 runs.\n")
    print(table(["model", "process start to address", "address to page ready", "baseline: `makemore inspect`",
                 "sample 20", "baseline: `Trained.sample(20)` in a thread", f"next character ({len(TYPED) + 1} keystrokes)",
                 "baseline: one forward in a thread", "next character while a sample draws"], rows))


def run(data=None) -> str:
    """Train the default MLP briefly and the default transformer for a few steps (serving speed does not depend
    on training length), then time the server on both; returned as a markdown section."""
    import tempfile

    from common import section_of

    out = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    api.train("mlp", data, out, train_options=dict(steps=3000), progress=False)
    api.train("transformer", data, out, train_options=dict(steps=300), progress=False)
    text = section_of(main, [str(out / "mlp.safetensors"), str(out / "transformer.safetensors")])
    return ("## Serve\n\n" + text + "\nTargets: page ready within 0.5 s of the server's start beyond loading the "
            "model; 20 samples in at most 0.2 s; the next character in at most 0.05 s per keystroke.\n")


if __name__ == "__main__":
    main()
