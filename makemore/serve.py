"""makemore serve: a local page to explore a trained model, and the JSON API under it (README.md documents it).
The standard library's threading HTTP server speaks the protocol; this module only routes and reads JSON. One
model is held at a time: each request uses the one loaded when it started, so a switch never changes it midway."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import torch

from makemore import api, checkpoint, instruments
from makemore.constraints import NothingFound, Request, check, length_cap
from makemore.errors import MakemoreError, printable
from makemore.jsontext import to_json
from makemore.sampling import next_token_probs

PAGE = Path(__file__).parent / "page"
ASSETS = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}
# the page may load and fetch from this server alone: nothing from elsewhere, even if a checkpoint held a URL
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

MAX_BODY = 64 * 1024  # bytes of a request's JSON: room for every field at its longest
MAX_DRAINED = 16 << 20  # a longer body is read (and dropped) before the refusal up to this size, else left unread
MAX_TEXT = 1000  # characters of a prefix, suffix, regex or item: data.MAX_ITEM_CHARS, the longest item of any data
MAX_SAMPLES = 1000  # items of one request: a page shows no more (`makemore sample` streams any number)
SAMPLE_SECONDS = 10.0  # a request's drawing stops after this long, with the items found by then
PATIENCE = 3.0  # seconds without a new item before a request gives up (the CLI's --patience, shorter for a page)
TOP_NEXT = 30  # the likeliest characters of the next-character distribution (then the end; the rest are summed)
TOP_CONTEXTS = 20  # contexts in the table of a counting model beyond a bigram, and characters after each
MAX_TABLE = 64  # the whole table of counts is drawn up to this vocabulary (the lecture's has 27)
MAX_CURVE_POINTS = 2000
MAX_ATTENTION_NUMBERS = 1 << 20  # weights of one attention picture (blocks x heads x T x T)
TIMEOUT = 30  # seconds a connection may sit idle or send its request slowly


class ApiError(Exception):
    """A request the API refuses: an HTTP status and the message of the JSON {"error": ...} answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def flag(name: str) -> str:
    """The CLI's flag of a request field, so that the API's messages name what the CLI's name."""
    return "-n" if name == "n" else "--" + name.replace("_", "-")


def read_fields(body, fields: dict, where: str) -> dict:
    """The fields given (None or absent: left out) of a JSON object, each of the type fields names (int, float,
    str of at most MAX_TEXT characters, bool); ApiError 400 for anything else, naming the field as the CLI's flag."""
    if not isinstance(body, dict):
        raise ApiError(400, f"{where} takes a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, f"{where} has no field {printable(unknown[0])!r}; its fields: {', '.join(fields)}")
    values = {}
    for name, kind in fields.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < 2**1023 else math.copysign(math.inf, value)
        if type(value) is not kind:  # bool is an int to isinstance
            what = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[kind]
            raise ApiError(400, f"{flag(name)} must be {what}, not {printable(json.dumps(value))[:40]}")
        if kind is str and len(value) > MAX_TEXT:
            raise ApiError(400, f"{flag(name)} is {len(value):,} characters; the page takes at most {MAX_TEXT:,}")
        values[name] = value
    return values


def read_json(data: bytes):
    """A request body as JSON; NaN and Infinity, which JSON does not have, are refused (400)."""
    def refuse(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, f"the request is not JSON ({printable(str(e))[:100]})") from None


SAMPLE_FIELDS = dict(n=int, seed=int, temperature=float, top_k=int, top_p=float, prefix=str, suffix=str, min_len=int,
                     max_len=int, regex=str, new=bool, unique=bool, label=str)
NEXT_FIELDS = dict(prefix=str, temperature=float, top_k=int, top_p=float, label=str)
ITEM_FIELDS = dict(item=str, label=str)


class View:
    """One loaded checkpoint and what the page reads of it: the API's answers for this model."""

    def __init__(self, name: str, trained):
        self.name, self.trained, self.vocab, self.model = name, trained, trained.vocab, trained.model
        self.kept = bool(trained.ckpt.get("items"))  # the training items, for new/train/dev/test marks
        items = trained.items()
        self.longest = [max(items, key=len)] if items else []  # all length_cap reads of the items
        self.labels = trained.labels
        self.shown = [self.vocab.show(c) for c in self.vocab.chars]
        self.pictures = {}
        for picture, make in (("counts", self._counts), ("embeddings", self._embeddings), ("curve", self._curve)):
            with contextlib.suppress(MakemoreError):
                self.pictures[picture] = make()
        self._inspected = None
        self._inspect_lock = threading.Lock()

    def summary(self, names: list[str]) -> dict:
        """What the page needs to lay itself out for this model."""
        ckpt = self.trained.ckpt
        return dict(checkpoint=self.name, checkpoints=names, model=self.trained.name, vocab=self.shown[1:],
                    boundary=self.shown[0], block_size=self.model.block_size, steps=ckpt["step"],
                    best_dev_loss=ckpt["best_dev_loss"], items_kept=self.kept, labels=self.labels,
                    label_counts=self.trained.label_counts,
                    pictures=sorted(self.pictures) + (["attention"] if hasattr(self.model, "attention") else [])
                    + (["labels"] if self.labels is not None else []),
                    limits=dict(n=MAX_SAMPLES, text=MAX_TEXT, seconds=SAMPLE_SECONDS))

    def sample(self, body) -> dict:
        """Items drawn as `makemore sample` draws them (of one label, or of any in proportion to their training
        counts), each marked where it occurs in the data and, a labelled model's, with its label."""
        fields = read_fields(body, SAMPLE_FIELDS, "/api/sample")
        seed, label = fields.pop("seed", None), fields.pop("label", None)
        if fields.get("n", 0) > MAX_SAMPLES:
            raise ApiError(400, f"-n {fields['n']:,} is above the page's most, {MAX_SAMPLES:,}; makemore sample "
                                "draws any number")
        if seed is not None and not 0 <= seed < 2**63:
            raise ApiError(400, f"--seed must be from 0 to 2**63-1, not {seed}")
        request = Request(patience=PATIENCE, labels=() if label is None else (label,), **fields)
        started = time.monotonic()
        drawing = self.trained.draw(request, seed)  # an unknown label: the CLI's message
        drawn, stopped = [], False
        try:
            with contextlib.closing(drawing.labelled_groups()) as groups:
                for group in groups:
                    drawn += group
                    if time.monotonic() - started > SAMPLE_SECONDS and not drawing.complete:
                        stopped = True
                        break
        except NothingFound as e:
            raise ApiError(422, str(e)) from None
        report = None
        if not drawing.complete:
            report = drawing.report() + (f"; stopped after the page's {SAMPLE_SECONDS:g} s" if stopped else "")
        items = [item for item, _ in drawn]
        labels = [label for _, label in drawn] if self.labels is not None else None
        return dict(items=self._describe(items, labels), report=report, notes=drawing.notes,
                    seconds=round(time.monotonic() - started, 4))

    def _describe(self, items: list[str], labels: list[str] | None) -> list[dict]:
        """describe's records (a labelled model's with each item's label, its log_prob under it)."""
        if self.kept:
            return [dict(record, split="new" if record["split"] == "none" else record["split"])
                    for record in self.trained.describe(items, labels=labels)]
        return [dict(item=item, **({} if labels is None else dict(label=label)), log_prob=round(lp, 4),
                     log_prob_per_char=round(lp / (len(item) + 1), 4), split=None)
                for item, label, lp in zip(items, labels or [None] * len(items), self.trained.log_prob(items, labels))]

    def next_chars(self, body) -> dict:
        """The distribution of the character after a prefix (the end included), at the sampling settings given;
        a labelled model's under the label given, else its labels' averaged by their training counts, as `makemore
        sample --prefix` draws the character after the prefix when no label is given."""
        fields = read_fields(body, NEXT_FIELDS, "/api/next")
        label = fields.pop("label", None)
        request = Request(n=0, **fields)
        check(request, self.vocab, length_cap(self.longest, request.prefix))  # the messages sample gives
        if label is not None or self.labels is None:
            ids, weights = None if label is None else self.trained.label_ids([label]), [1.0]  # the CLI's message
        else:
            ids, weights = list(range(len(self.labels))), self.trained.label_counts
        T, device = self.model.block_size, self.model.device
        window = ([0] * T + self.vocab.encode(request.prefix))[-T:]  # as sampling slides the prefix in
        weights = torch.tensor(weights, dtype=torch.float64)
        with torch.no_grad():
            logits = self.model.next_logits(torch.tensor([window] * len(weights), device=device),
                                            None if ids is None else torch.tensor(ids, device=device))
            by_label = next_token_probs(logits, request.temperature, request.top_k, request.top_p).double().cpu()
            probs = (weights / weights.sum()) @ by_label
        top = probs.topk(min(TOP_NEXT, len(probs))).indices.tolist()
        top += [] if 0 in top else [0]  # the end, however unlikely: the page can always end the item
        shown = [dict(char=None if i == 0 else self.vocab.chars[i], shown="end" if i == 0 else self.shown[i],
                      prob=probs[i].item()) for i in top if probs[i] > 0]
        return dict(prefix=request.prefix, label=label, next=shown,
                    rest=max(0.0, 1.0 - sum(s["prob"] for s in shown)))

    def score(self, body) -> dict:
        """Each transition's probability, the item's loss per character and where it occurs, as `makemore score`
        gives them: a labelled model's under the label given, else the item's most likely (label_source says)."""
        fields = read_fields(body, ITEM_FIELDS, "/api/score")
        item = fields.get("item", "")
        result = self.trained.score([item], fields.get("label"))[0]
        transitions = [dict(next=t["next"], prob=t["prob"], logprob=t["logprob"]) for t in result["transitions"]]
        return dict(item=item, label=result.get("label"), label_source=result.get("label_source"),
                    transitions=transitions, nll=result["nll"], mean_nll=result["mean_nll"], n=result["n"],
                    split=self.trained.where([item])[0] if self.kept else None)

    def classify(self, body) -> dict:
        """A labelled model's posterior p(label | item), likeliest first, as `makemore classify --json` gives it."""
        item = read_fields(body, dict(item=str), "/api/classify").get("item", "")
        return self.trained.classify([item])[0]

    def attention(self, body) -> dict:
        """The transformer's attention weights for an item: per block and head, each position's row."""
        fields = read_fields(body, ITEM_FIELDS, "/api/attention")
        item = fields.get("item", "")
        if not hasattr(self.model, "attention"):
            raise ApiError(400, f"a {self.trained.name} model has no attention to draw; it is the transformer's")
        self.vocab.check_items([item], "the item")
        T = len(item) + 1
        if T > self.model.block_size:
            raise ApiError(400, f"the item is {len(item):,} characters; this transformer reads at most "
                                f"{self.model.block_size - 1:,} after the boundary")
        config = self.model.config
        if config.n_layer * config.n_head * T * T > MAX_ATTENTION_NUMBERS:
            raise ApiError(400, f"the attention of {len(item):,} characters over {config.n_layer} blocks of "
                                f"{config.n_head} heads is too large to draw; give a shorter item")
        label_ids, source = self.trained.scoring_labels([item], fields.get("label"))  # as score chooses
        device = self.model.device
        ids = torch.tensor([[0] + self.vocab.encode(item)], device=device)
        label = None if label_ids is None else torch.tensor(label_ids, device=device)
        weights = self.model.attention(ids, label)[:, 0].cpu()  # (n_layer, n_head, T, T)
        return dict(item=item, label=None if label_ids is None else self.labels[label_ids[0]], label_source=source,
                    tokens=[self.shown[0]] + [self.vocab.show(c) for c in item],
                    blocks=[[[[round(w, 4) for w in row[:i + 1]] for i, row in enumerate(head.tolist())]
                             for head in block] for block in weights])

    def inspect(self) -> dict:
        """What the checkpoint holds, as `makemore inspect --json` prints it (read once, on first asking)."""
        with self._inspect_lock:
            if self._inspected is None:
                self._inspected = api.inspect(self.trained.path)
            return self._inspected

    def picture(self, name: str) -> dict:
        if name not in self.pictures:
            raise ApiError(404, f"a {self.trained.name} model has no {name} picture")
        return self.pictures[name]

    def _counts(self) -> dict:
        V = len(self.vocab)
        if V <= MAX_TABLE and (self.model.block_size == 1 or self.model.bigram_counts() is not None):
            counts = self.trained.label_counts
            weights = torch.tensor(counts, dtype=torch.float64) if counts is not None else None
            table, counts = instruments.bigram_table(self.model, weights)
            rows = table.long().tolist() if counts else table.round(decimals=4).tolist()
            return dict(kind="table", counts=counts, labels=self.shown, table=rows,
                        averaged=self.labels is not None and not counts)
        contexts, table = instruments.top_contexts(self.model, TOP_CONTEXTS)
        rows = []
        for context, counts in zip(contexts, table):
            top = counts.topk(min(TOP_CONTEXTS, V))
            rows.append(dict(context="".join(self.shown[i] for i in context), total=int(counts.sum()),
                             next=[[self.shown[i], c] for c, i in zip(top.values.tolist(), top.indices.tolist())
                                   if c > 0]))
        return dict(kind="contexts", rows=rows)

    def _embeddings(self) -> dict:
        points, note, axes = instruments.embedding_2d(self.model)
        return dict(points=points.tolist(), labels=self.shown, note=note, axes=list(axes))

    def _curve(self) -> dict:
        metrics = self.trained.ckpt.get("metrics") or []
        if not metrics:
            raise MakemoreError("no training curve")
        every = math.ceil(len(metrics) / MAX_CURVE_POINTS)
        kept = [m for i, m in enumerate(metrics) if i % every == 0 or "dev_loss" in m]
        return dict(points=[{k: m[k] for k in ("step", "train_loss", "dev_loss") if k in m} for m in kept])


class Explorer:
    """The checkpoints the page may switch between (by name: the files of one folder) and the one loaded."""

    def __init__(self, path: Path | None, out: str | Path, device: str = "cpu", n_threads: int | None = None,
                 model: str | None = None):
        self.folder, self.device, self.n_threads, self.model = Path(out), device, n_threads, model
        path = Path(path) if path is not None else checkpoint.latest(out)
        self.first = (path.name, path)  # listed even when it lies outside the folder
        self.switching = threading.Lock()
        self.view = View(path.name, api.load(path, device=device, model=model, n_threads=n_threads))

    def checkpoints(self) -> dict[str, Path]:
        """Name -> path of every checkpoint the page may ask for, looked up afresh (training may add some)."""
        found = {}
        if self.folder.is_dir():
            found = {path.name: path for path in sorted(self.folder.glob(f"*{checkpoint.SUFFIX}"))
                     if path.is_file() and path.name.isprintable()}
        name, path = self.first  # the file the server started with keeps its name, wherever it lies
        return {**found, name: path} if name in found else {name: path, **found}

    def summary(self) -> dict:
        view = self.view
        return view.summary(list(self.checkpoints()))

    def switch(self, body) -> dict:
        """Load the checkpoint named (one of checkpoints(), never a path) in place of the one held."""
        name = read_fields(body, dict(checkpoint=str), "/api/switch").get("checkpoint")
        paths = self.checkpoints()
        if name not in paths:
            raise ApiError(404, f"no checkpoint named {printable(name)!r}; the page may load "
                                f"{', '.join(paths)}")
        with self.switching:  # one load at a time; requests meanwhile answer from the model held
            if self.view.name != name:
                self.view = View(name, api.load(paths[name], device=self.device, model=self.model,
                                                n_threads=self.n_threads))
        return self.summary()


GET = {"/api/model": lambda e: e.summary(), "/api/inspect": lambda e: e.view.inspect(),
       "/api/counts": lambda e: e.view.picture("counts"), "/api/embeddings": lambda e: e.view.picture("embeddings"),
       "/api/curve": lambda e: e.view.picture("curve")}
POST = {"/api/sample": lambda e, body: e.view.sample(body), "/api/next": lambda e, body: e.view.next_chars(body),
        "/api/score": lambda e, body: e.view.score(body), "/api/classify": lambda e, body: e.view.classify(body),
        "/api/attention": lambda e, body: e.view.attention(body),
        "/api/switch": lambda e, body: e.switch(body)}


class Handler(BaseHTTPRequestHandler):
    """Routes each request to the page's files or the API; every answer of the API is JSON."""

    server_version = "makemore"
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT
    # headers and body go in two writes: with Nagle's algorithm the body waited for the client's delayed ACK,
    # 40 ms on every answer (bench/bench_serve.py)
    disable_nagle_algorithm = True

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def _answer(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            self._check_host()
            if method == "GET" and path in ASSETS:
                return self._asset(*ASSETS[path])
            routes = GET if method == "GET" else POST
            if path not in routes:
                other = POST if method == "GET" else GET
                if path in other or (method == "POST" and path in ASSETS):
                    raise ApiError(405, f"{path} answers {'POST' if path in POST else 'GET'}, not {method}")
                raise ApiError(404, f"no such page or endpoint: {printable(path)[:100]}")
            explorer = self.server.explorer
            with torch.no_grad():  # grad mode is per thread: each request's thread sets its own
                value = routes[path](explorer) if method == "GET" else routes[path](explorer, self._body())
        except ApiError as e:
            return self._error(e.status, str(e))
        except MakemoreError as e:
            return self._error(400, printable(e))
        except (ConnectionError, TimeoutError):
            raise  # the client went away: nobody to answer (Server.handle_error keeps quiet)
        except Exception as e:  # noqa: BLE001 - a bug answers 500 and says so on the console, never a dead thread
            print(f"makemore serve: {method} {printable(path)[:100]}: {type(e).__name__}: {printable(e)[:200]}",
                  file=sys.stderr)
            return self._error(500, f"internal error ({type(e).__name__}); the server's console says more")
        self._send(200, to_json(value).encode("utf-8", "backslashreplace"), "application/json")

    def _check_host(self) -> None:
        """Bound to a loopback address, answer only requests addressed to one: a web page elsewhere that
        rebinds its own name to 127.0.0.1 cannot read the API."""
        if not self.server.loopback:
            return
        try:
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        except ValueError:  # a malformed address
            host = ""
        if not is_loopback(host):
            raise ApiError(403, "this server answers requests for localhost or 127.0.0.1 only")

    def _body(self):
        """The request's JSON, read after its length and type are checked (a body left unread closes the
        connection, so it is never taken for the next request)."""
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            self.close_connection = True
            raise ApiError(415, "send the request as JSON, with Content-Type: application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            raise ApiError(411, "give the request's Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            if length <= MAX_DRAINED:  # read and dropped: a socket closed on unread bytes may lose the answer
                while length > 0 and (chunk := self.rfile.read(min(length, 1 << 16))):
                    length -= len(chunk)
            raise ApiError(413, f"the request is {int(self.headers['Content-Length']):,} bytes; the server takes "
                                f"at most {MAX_BODY:,}")
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise ApiError(400, "the request ended before its Content-Length")
        return read_json(data)

    def _asset(self, name: str, kind: str) -> None:
        self._send(200, (PAGE / name).read_bytes(), kind)

    def _error(self, status: int, message: str) -> None:
        self._send(status, to_json(dict(error=message)).encode("utf-8", "backslashreplace"), "application/json")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        """Quiet: the console shows the address and any failure, not every request."""


def is_loopback(host: str) -> bool:
    """Whether host names this machine alone: localhost or a loopback address."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    """The threading HTTP server with the explorer it serves; each request in a thread of its own."""

    daemon_threads = True  # Ctrl-C does not wait for a sample still drawing
    block_on_close = False

    def __init__(self, explorer: Explorer, host: str, port: int):
        self.explorer = explorer
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise MakemoreError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
        self.loopback = is_loopback(host)

    def handle_error(self, request, client_address):
        """One line on the console, not socketserver's traceback; nothing for a client that went away."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"makemore serve: {type(error).__name__}: {printable(error)[:200]}", file=sys.stderr)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C: KeyboardInterrupt), then close the socket."""
        try:
            self.serve_forever()
        finally:
            self.server_close()


def start(checkpoint_path=None, out="out", host: str = "127.0.0.1", port: int = 0, device: str = "cpu",
          n_threads: int | None = None, model: str | None = None) -> Server:
    """Load the checkpoint (the one trained last in out when None) and bind the server (port 0: a free one);
    run() serves."""
    return Server(Explorer(checkpoint_path, out, device, n_threads, model), host, port)


def open_page(url: str) -> bool:
    """Open url in the user's browser (webbrowser's choice); whether one was found."""
    import webbrowser

    return webbrowser.open(url)
