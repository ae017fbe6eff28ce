"""Sampling under constraints, streamed: the prefix is met by conditioning (slid into the context as if drawn), the
minimum length by masking the end until the item is long enough, everything else by rejection. Items are drawn in
batches and kept in the order drawn until n are found, the budget of draws is spent or none has been found for
request.patience seconds; a report line says what was rejected and why.

Item k draws with its own random numbers (makemore.stream), so a seed's items do not depend on -n, the batch sizes
or the rejection constraints: --new prints the items the seed draws without it that are not in the data, and
stopping for time only ends that list earlier.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from makemore import memory, stream
from makemore.constraints import REASONS, NothingFound, Request, Samples, check
from makemore.dataset import build_dataset
from makemore.models.base import next_log_probs

FIRST_BATCH, MAX_BATCH = 256, 8192  # batch sizes: 256, 512, ... up to 8,192, then 8,192 each
# but a request for a few items starts at twice as many rows (at least this many): a sequence model reads every
# row at every step, and 256 rows for 20 items made the transformer's 20 samples take 0.75 s instead of 0.11 s
FEW_ROWS = 16
# at most this many (rows, vocabulary) probabilities in a batch: 8,192 rows of a 10,000 character vocabulary
# would be 655 MB in float64, for every copy the draw makes
BATCH_NUMBERS = 1 << 20
BATCH_TOKENS = 1 << 22  # at most this many rows x steps (16 MB of int32): a long length cap draws fewer rows

# --top-p: the likelier tokens "reach" top_p when their sum is within a billionth of it. A counting model's
# probabilities are fractions whose sums often equal top_p exactly (3 tokens of 93/155 = 0.6); there the
# last bit of rounding, which differs between torch and plain Python, must not decide.
NUCLEUS_SLACK = 1 - 1e-9


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, end_banned: torch.Tensor | None = None) -> torch.Tensor:
    """Sampling probabilities from logits (B, V): the end masked in the rows end_banned (B,), then temperature,
    top_k and top_p (the nucleus); a row in which no allowed token is possible (a dead end) comes out as NaN."""
    logits = logits.double()
    if end_banned is not None:
        logits[:, 0] = logits[:, 0].masked_fill(end_banned, float("-inf"))
    # minus the largest logit, no positive temperature overflows: a tiny one leaves 0 for the likeliest tokens and
    # -inf for the rest, which is drawing the argmax (a dead end's row: -inf - -inf = NaN)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)  # ties: the lower id first
        # drop a token when the likelier ones before it already reach top_p (the first is always kept)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p * NUCLEUS_SLACK
        probs = probs.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), 0.0)
    return probs


@torch.no_grad()
def draw_batch(model, prefix_ids: list[int], keys: torch.Tensor, steps: int, min_len: int = 0,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               give_up: Callable[[], bool] | None = None,
               labels: torch.Tensor | None = None) -> Iterator[list[tuple[list[int], bool, bool]]]:
    """Draw len(keys) items side by side, row k with the random numbers of keys[k] (stream.item_keys) under the label
    labels[k] (a labelled model; None: unlabelled): up to steps tokens after the prefix, the last of which must be
    the end. After each step, yields the rows decided by then, in order, as (ids after the prefix, ended, dead end);
    stops between steps when give_up() is true."""
    device = model.device
    if labels is not None:
        labels = labels.to(device)
    T, size = model.block_size, len(keys)
    ctx = torch.zeros(size, T, dtype=torch.long, device=device)
    for i in prefix_ids[-T:]:
        ctx = torch.cat([ctx[:, 1:], torch.full((size, 1), i, device=device)], dim=1)
    tokens = torch.zeros(size, steps, dtype=torch.int32)
    length = torch.zeros(size, dtype=torch.long)  # characters drawn, once a row is decided
    ended = torch.zeros(size, dtype=torch.bool)
    dead = torch.zeros(size, dtype=torch.bool)
    rows = torch.arange(size)  # the rows still going, in order
    told = 0  # rows yielded so far
    for t in range(steps):
        if give_up is not None and give_up():
            return
        banned = None
        if len(prefix_ids) + t < min_len:
            banned = torch.ones(rows.numel(), dtype=torch.bool, device=device)
        label = labels[rows.to(device)] if labels is not None else None
        probs = next_token_probs(model.next_logits(ctx, label), temperature, top_k, top_p, banned).cpu()
        nxt, stuck = _draw(probs, stream.uniforms(keys[rows], t))
        nxt = nxt.masked_fill(stuck, 0)  # a stuck row stops here
        tokens[rows, t] = nxt.int()
        stops = nxt == 0
        dead[rows[stuck]] = True
        ended[rows[stops & ~stuck]] = True
        length[rows[stops]] = t
        if t == steps - 1:
            length[rows[~stops]] = steps  # out of steps without the end
            stops[:] = True
        going = ~stops
        rows, ctx = rows[going], torch.cat([ctx[going.to(device)][:, 1:], nxt[going, None].to(device)], dim=1)
        upto = int(rows[0]) if rows.numel() else size  # every row before the first still going is decided
        lengths = length[told:upto].tolist()
        yield [(ids[:n], end, stop) for ids, n, end, stop in
               zip(tokens[told:upto, :max(lengths, default=0)].tolist(), lengths, ended[told:upto].tolist(),
                   dead[told:upto].tolist())]
        told = upto
        if rows.numel() == 0:
            return


# the step whose uniform number draws an item's label: one no token is drawn at, so the label's draw and the
# characters' are independent, and an unlabelled model's items stay as they were
LABEL_STEP = -1


def draw_labels(keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each item's label id (keys: stream.item_keys), drawn in proportion to weights (n_labels,) with the item's own
    random number, so that item k's label does not depend on -n or the batch."""
    cdf = weights.cumsum(0)
    # shrunk as in _draw, so that rounding never carries u up to the total
    threshold = stream.uniforms(keys, LABEL_STEP) * (cdf[-1] * (1 - 1e-12))
    return torch.searchsorted(cdf, threshold, right=True)


def _draw(probs: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of probs (B, V) for a uniform number per row u (B,), and which rows had no token to draw
    (all zero or NaN). Inverting the cumulative distribution never draws a token of probability 0 and is far
    quicker than torch.multinomial for many short rows."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    stuck = ~(total[:, 0] > 0)
    # shrunk by 1e-12 so that rounding can never carry u up to the total itself
    threshold = u[:, None] * (total * (1 - 1e-12))
    return (cdf <= threshold).sum(-1), stuck


class Sampler:
    """One request's drawing: iterate it (or its groups()) for the items as they are found, then read complete and
    report(); collect() gathers them into Samples. Counts every draw as kept or rejected and why, but holds no kept
    item (a stream of them may be endless), only --unique's seen set."""

    def __init__(self, model, vocab, request: Request, key: int, cap: int, data_items=frozenset(),
                 progress: bool = False, labels: list[str] | None = None, label_weights: list[float] | None = None):
        """Refuses a request that can never be met; notes: what to tell the user before drawing. key: the random
        stream (stream.key_of); cap: the model's length cap (constraints.length_cap); data_items: for request.new.
        A labelled model: labels, its label names, and label_weights, how often to draw each (0: never)."""
        self.pattern, self.notes = check(request, vocab, cap)
        self.model, self.vocab, self.request, self.key, self.progress = model, vocab, request, key, progress
        self.data_items = data_items
        self.labels = labels
        self.label_weights = torch.tensor(label_weights, dtype=torch.float64) if labels is not None else None
        self.cap = min(request.max_len, cap) if request.max_len is not None else cap
        self.steps = self.cap - len(request.prefix) + 1  # tokens after the prefix: the characters allowed, the end
        self.found = self.draws = 0
        self.seen: set[str] = set()
        self.rejected = dict.fromkeys(REASONS, 0)
        self.timed_out: tuple[int, int] | None = None  # when stopped for time: draws cut short, at what length
        device = model.device
        self.rows = min(memory.rows_that_fit(type(model), model.config, len(vocab), device, MAX_BATCH),
                        max(1, BATCH_NUMBERS // len(vocab)), max(1, BATCH_TOKENS // self.steps))

    @property
    def complete(self) -> bool:
        return self.found >= self.request.n

    def going(self) -> bool:
        """Whether to draw again: fewer than n found, draws left in the budget and time left."""
        return self.found < self.request.n and self.draws < self.request.budget() and self.timed_out is None

    def add(self, item: str, dead: bool, ended: bool) -> bool:
        """Judge one more draw; whether it is kept."""
        self.draws += 1
        reason = self._verdict(item, dead, ended)
        if reason is not None:
            self.rejected[reason] += 1
            return False
        self.found += 1
        if self.request.unique:
            self.seen.add(item)
        return True

    def _verdict(self, item: str, dead: bool, ended: bool) -> str | None:
        """None when item meets every constraint, else the first reason it fails (a key of REASONS)."""
        r = self.request
        if dead:
            return "dead_end"
        if not ended:
            # a --max-len above the cap: what the cap cut did not end within it, not longer than asked
            return "too_long" if r.max_len is not None and r.max_len <= self.cap else "no_end"
        if r.suffix and not item.endswith(r.suffix):
            return "suffix"
        if self.pattern is not None and self.pattern.fullmatch(item) is None:
            return "regex"
        if r.new and item in self.data_items:
            return "in_data"
        if item in r.exclude:
            return "excluded"
        if r.unique and item in self.seen:
            return "repeat"
        return None

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...),
        and when drawing stopped for time, after how long (and how far the draws cut short had gone)."""
        pct = 100 * self.found / self.draws if self.draws else 0.0
        shown = "0" if pct == 0 else f"{pct:.1f}" if pct >= 0.1 else f"{pct:.2g}"
        parts = [f"{n:,} {REASONS[reason].format(cap=self.cap)}" for reason, n in self.rejected.items() if n]
        stopped = ""
        if self.timed_out is not None:
            stopped = f", stopped after {self.request.patience:g} s without a new item"
            going, length = self.timed_out
            if going and not self.draws:  # nothing else says why: a batch of long draws took all the time
                parts.append(f"{going:,} cut short at {length:,} character{'s' * (length != 1)}")
        details = "; " + ", ".join(parts) if parts else ""
        return (f"asked for {self.request.n:,}, found {self.found:,} in {self.draws:,} draws{stopped} "
                f"(acceptance {shown}%{details})")

    def __iter__(self) -> Iterator[str]:
        for group in self.groups():
            yield from group

    def collect(self) -> Samples:
        """Every item, as a Samples list (with each item's label for a labelled model); NothingFound when none was
        found."""
        pairs = [pair for group in self.labelled_groups() for pair in group]
        return Samples([item for item, _ in pairs], self,
                       [label for _, label in pairs] if self.labels is not None else None)

    def groups(self) -> Iterator[list[str]]:
        """The items kept, in the order drawn, a list at a time as soon as each step of drawing finds them; then
        NothingFound if items were asked for and none was found."""
        for group in self.labelled_groups():
            yield [item for item, _ in group]

    def labelled_groups(self) -> Iterator[list[tuple[str, str | None]]]:
        """groups() with the label each item was drawn under: (item, label name), or (item, None) unlabelled."""
        r = self.request
        prefix_ids, chars = self.vocab.encode(r.prefix), self.vocab.chars
        last_found = time.monotonic()

        def out_of_patience() -> bool:
            return r.patience is not None and time.monotonic() - last_found > r.patience

        batches = first = 0
        start = min(FIRST_BATCH, max(FEW_ROWS, 2 * r.n))
        with tqdm(total=r.n, delay=1.0, leave=False, file=sys.stderr, unit="item", desc="sampling",
                  disable=not self.progress) as bar:
            while self.going():
                size = min(self.rows, start << min(batches, 10), r.budget() - self.draws)
                batches += 1
                keys = stream.item_keys(self.key, torch.arange(first, first + size))
                first += size
                labels = draw_labels(keys, self.label_weights) if self.labels is not None else None
                names = [self.labels[i] for i in labels.tolist()] if labels is not None else [None] * size
                taken = told = 0  # steps of the batch, rows of it judged
                for drawn in draw_batch(self.model, prefix_ids, keys, self.steps, r.min_len, r.temperature, r.top_k,
                                        r.top_p, give_up=out_of_patience, labels=labels):
                    kept = []
                    for (ids, ended, dead), label in zip(drawn, names[told:told + len(drawn)]):
                        item = r.prefix + "".join(chars[i] for i in ids)
                        if self.add(item, dead, ended):
                            kept.append((item, label))
                            if not self.going():
                                break
                    taken, told = taken + 1, told + len(drawn)
                    if kept:
                        bar.update(len(kept))
                        yield kept
                        last_found = time.monotonic()  # the time the caller spent on them is not drawing
                    if not self.going():
                        break
                if self.going() and out_of_patience():
                    self.timed_out = (size - told, len(r.prefix) + taken)
        if r.n and not self.found:
            more = "--patience" if self.timed_out is not None else "--max-tries"
            raise NothingFound(f"{self.report()}; loosen the constraints or raise {more}")


@torch.no_grad()
def log_probs(model, vocab, items: list[str], labels: list[int] | None = None, chunk: int = 65536) -> torch.Tensor:
    """Log-probability (nats, float64) of each whole item under the model: every character and the
    boundary token that ends it, at temperature 1 with nothing masked (an empty item: the boundary alone).
    labels: each item's label id, for a labelled model."""
    return _log_probs(model, vocab, items, labels, 1, chunk)[:, 0]


# rows of one forward pass of log_probs_by_label on the CPU: activations that stay in cache (1,000 words under 8
# labels: 1.1 s in chunks of 4,096 rows, 2.1 s in one of 65,536, on a loaded machine)
CPU_ROWS = 4096


@torch.no_grad()
def log_probs_by_label(model, vocab, items: list[str], chunk: int | None = None) -> torch.Tensor:
    """(items, n_labels) float64: log_probs of each item under each label of a labelled model, every label of a
    chunk of windows in one forward pass of chunk rows (default: what suits the device and fits its memory)."""
    if chunk is None:
        wanted = CPU_ROWS if model.device.type == "cpu" else 65536
        chunk = memory.rows_that_fit(type(model), model.config, len(vocab), model.device, wanted)
    return _log_probs(model, vocab, items, None, model.n_labels, chunk)


def _log_probs(model, vocab, items: list[str], labels: list[int] | None, every: int, chunk: int) -> torch.Tensor:
    """(items, every): log_probs under each item's label (every = 1), or under each of every labels."""
    scores = torch.zeros(len(items), every, dtype=torch.float64)
    device = model.device

    def label_rows(item_labels: list[int] | None, rows: int) -> torch.Tensor | None:
        """The labels of rows windows repeated every times (label-major), or of the items' own windows."""
        if every > 1:
            return torch.arange(every, device=device).repeat_interleave(rows)
        return torch.tensor(item_labels, device=device) if item_labels is not None else None

    empty = [i for i, item in enumerate(items) if not item]
    if empty:  # --min-len 0 may draw one; the dataset holds no example for it
        ends = next_log_probs(model, torch.zeros(len(empty) * every, model.block_size, dtype=torch.long, device=device),
                              label_rows([labels[i] for i in empty] if labels is not None else None, len(empty)))
        scores[empty] = ends[:, 0].view(every, len(empty)).T.cpu()
    kept = [i for i, item in enumerate(items) if item]
    if not kept:
        return scores
    ds = build_dataset([items[i] for i in kept], vocab, model.block_size,
                       labels=[labels[i] for i in kept] if labels is not None else None).to(device)
    per_token = []
    for x, y, label in ds.chunks(max(1, chunk // every)):
        if every > 1:
            label = label_rows(None, len(y))
            x, y = x.repeat(every, 1), y.repeat(every)
        logp = next_log_probs(model, x, label).gather(1, y[:, None]).squeeze(1)
        per_token.append(logp.view(every, -1).T.cpu())
    lengths = torch.tensor([len(items[i]) + 1 for i in kept])
    owner = torch.repeat_interleave(torch.tensor(kept), lengths)
    return scores.index_add_(0, owner, torch.cat(per_token))
