"""Sampling that delivers: batched generation under constraints, items streamed as they are found, and a
report of what was rejected and why.

How each constraint is met, as exactly as the model allows:
- the prefix by conditioning: it is slid into the context as if the model had drawn it;
- the minimum length by masking the boundary token until the item is long enough, then renormalising;
- everything else (maximum length, suffix, regex, new, exclude, unique) by rejection: items are drawn in
  batches and kept in the order drawn, until n are found, the budget of draws is spent or no item has been
  found for request.patience seconds.

Item k draws with its own random numbers (makemore.stream), so the items of a seed are the same whatever
-n, the batch sizes or the rejection constraints: -n 5 prints the first 5 of -n 8, --new prints the items
of the same seed without --new that are not in the data. Stopping for time only ends that list earlier.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterator

import torch

from makemore import memory, stream
from makemore.constraints import NUCLEUS_SLACK, NothingFound, Request, Samples, Tally  # noqa: F401 (re-exported)
from makemore.dataset import build_dataset
from makemore.errors import OptionError
from makemore.models.base import next_log_probs

FIRST_BATCH, MAX_BATCH = 256, 8192  # batch sizes: 256, 512, ... up to 8,192, then 8,192 each
# ... and at most this many numbers in a batch's (rows, vocabulary) probabilities: 8,192 rows of a 10,000
# character vocabulary would be 655 MB in float64, for every copy the draw makes
BATCH_NUMBERS = 1 << 20
# ... and at most this many tokens in a batch's rows x steps (16 MB of int32): a long length cap draws
# fewer rows at a time
BATCH_TOKENS = 1 << 22
FIRST_STEPS = 16  # the token buffer's first width; it doubles as the steps go


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, end_banned: torch.Tensor | None = None) -> torch.Tensor:
    """Turn logits (B, V) into sampling probabilities; a row in which every allowed token is impossible
    (a dead end) comes out as NaN.

    The order: the boundary token masked in the rows end_banned (B,); temperature; top_k; then top_p,
    the nucleus: the likeliest tokens whose probabilities reach top_p together. Each row's largest allowed
    logit is subtracted before dividing by the temperature, so that no positive temperature overflows:
    a tiny one leaves 0 for the likeliest tokens and -inf for the rest, which is drawing the argmax.
    """
    logits = logits.double()
    if end_banned is not None:
        logits[:, 0] = logits[:, 0].masked_fill(end_banned, float("-inf"))
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature  # a dead end's row: -inf - -inf = NaN
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


# One row's draw: its token ids after the prefix (without the end), whether it drew the end, and whether it
# met a context in which no allowed token has any probability
Draw = tuple[list[int], bool, bool]


@torch.no_grad()
def draw_batch(model, prefix_ids: list[int], keys: torch.Tensor, steps: int, min_len: int = 0,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               give_up: Callable[[], bool] | None = None) -> Iterator[list[Draw]]:
    """Draw len(keys) items side by side, each with the random numbers of its item key (an int64 tensor
    from stream.item_keys): up to steps tokens after the prefix, the last of which must be the boundary
    for the item to have ended. Only rows still going are passed through the model.

    After each step, yields the rows decided by then (often none), in row order: a row is yielded once it
    and every row before it have ended, hit a dead end or drawn steps tokens. Stops between steps, leaving
    the rest undecided, when give_up() is true. The token buffer grows with the steps taken, not the steps
    allowed.
    """
    device = next(iter(model.state_dict().values())).device
    T, size = model.block_size, len(keys)
    ctx = torch.zeros(size, T, dtype=torch.long, device=device)
    for i in prefix_ids[-T:]:  # slide the prefix into the context, as if the model had drawn it
        ctx = torch.cat([ctx[:, 1:], torch.full((size, 1), i, device=device)], dim=1)
    tokens = torch.zeros(size, min(steps, FIRST_STEPS), dtype=torch.int32)
    length = torch.zeros(size, dtype=torch.long)  # characters drawn, once a row is decided
    ended = torch.zeros(size, dtype=torch.bool)
    dead = torch.zeros(size, dtype=torch.bool)
    rows = torch.arange(size)  # the rows still going, in order
    told = 0  # rows yielded so far
    for t in range(steps):
        if give_up is not None and give_up():
            return
        if t == tokens.shape[1]:
            tokens = torch.cat([tokens, torch.zeros(size, min(t, steps - t), dtype=tokens.dtype)], dim=1)
        banned = None
        if len(prefix_ids) + t < min_len:
            banned = torch.ones(rows.numel(), dtype=torch.bool, device=device)
        probs = next_token_probs(model.next_logits(ctx), temperature, top_k, top_p, banned).cpu()
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


def _draw(probs: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of probs (B, V) given a uniform number per row u (B,), and which rows had no
    token to draw (all zero or NaN).

    By inverting the cumulative distribution: the first token whose cumulative probability exceeds u
    times the total, so a token of probability 0 is never drawn. Far quicker than torch.multinomial for
    many short rows.
    """
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    stuck = ~(total[:, 0] > 0)
    # shrunk by 1e-12 so that rounding can never carry u up to the total itself
    threshold = u[:, None] * (total * (1 - 1e-12))
    return (cdf <= threshold).sum(-1), stuck


class Sampler:
    """One request's drawing, streamed: iterate it (or its groups()) for the items as they are found, then
    read complete and report(); collect() gathers them into a Samples list instead.

    key: the random stream (stream.key_of(seed)). cap: the model's length cap for the request
    (constraints.length_cap): longer items are never drawn. data_items: the items of the training data, for
    request.new. Refuses, when made, a request that can never be met; notes holds what to tell the user
    before drawing (a --max-len above the cap). The batches' rows fit the memory this process may use
    (memory.rows_that_fit), or a MakemoreError says that not one row fits.
    """

    def __init__(self, model, vocab, request: Request, key: int, cap: int, data_items=frozenset(),
                 progress: bool = False):
        self.tally = Tally(request, vocab, cap, data_items)
        self.notes = self.tally.notes
        self.model, self.vocab, self.request, self.key, self.progress = model, vocab, request, key, progress
        device = next(iter(model.state_dict().values())).device
        self.rows = min(memory.rows_that_fit(type(model), model.config, len(vocab), device, MAX_BATCH),
                        max(1, BATCH_NUMBERS // len(vocab)), max(1, BATCH_TOKENS // self.tally.steps()))

    @property
    def complete(self) -> bool:
        return self.tally.complete

    def report(self) -> str:
        """One line: how the drawing went (constraints.report_line)."""
        return self.tally.report()

    def __iter__(self) -> Iterator[str]:
        for group in self.groups():
            yield from group

    def collect(self) -> Samples:
        """Every item, as a Samples list; NothingFound when none was found."""
        items = list(self)
        return self.tally.samples(items)

    def groups(self) -> Iterator[list[str]]:
        """The items kept, in the order drawn, a list at a time as soon as each step of drawing finds them.
        Ends when request.n are found, the budget of draws is spent or no item has been found for
        request.patience seconds; then raises NothingFound if items were asked for and none was found."""
        r, tally = self.request, self.tally
        prefix_ids = self.vocab.encode(r.prefix)
        chars, steps = self.vocab.chars, tally.steps()
        last_found = time.monotonic()

        def out_of_patience() -> bool:
            return r.patience is not None and time.monotonic() - last_found > r.patience

        batches = first = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=r.n, delay=1.0, leave=False, file=sys.stderr, unit="item", desc="sampling")
        try:
            while tally.going():
                size = min(self.rows, FIRST_BATCH << min(batches, 10), r.budget() - tally.draws)
                batches += 1
                keys = stream.item_keys(self.key, torch.arange(first, first + size))
                first += size
                taken = told = 0  # steps of the batch, rows of it judged
                for drawn in draw_batch(self.model, prefix_ids, keys, steps, r.min_len, r.temperature, r.top_k,
                                        r.top_p, give_up=out_of_patience):
                    taken, told = taken + 1, told + len(drawn)
                    kept = []
                    for ids, ended, dead in drawn:
                        item = r.prefix + "".join(chars[i] for i in ids)
                        if tally.add(item, dead, ended):
                            kept.append(item)
                            if not tally.going():
                                break
                    if kept:
                        if bar is not None:
                            bar.update(len(kept))
                        yield kept
                        last_found = time.monotonic()  # the time the caller spent on them is not drawing
                    if not tally.going():
                        break
                if tally.going() and out_of_patience():
                    tally.stop_for_time(size - told, len(r.prefix) + taken)
        finally:
            if bar is not None:
                bar.close()
        tally.check_found()


@torch.no_grad()
def log_probs(model, vocab, items: list[str], chunk: int = 65536) -> torch.Tensor:
    """Log-probability (nats, float64) of each whole item under the model: every character and the
    boundary token that ends it, at temperature 1 with nothing masked."""
    if not items:
        return torch.zeros(0, dtype=torch.float64)
    if any(not item for item in items):
        raise OptionError("an empty item cannot be scored: every item has at least one character")
    ds = build_dataset(items, vocab, model.block_size).to(next(iter(model.state_dict().values())).device)
    per_token = []
    for x, y in ds.chunks(chunk):
        per_token.append(next_log_probs(model, x).gather(1, y[:, None]).squeeze(1).cpu())
    lengths = torch.tensor([len(item) + 1 for item in items])
    owner = torch.repeat_interleave(torch.arange(len(items)), lengths)
    return torch.zeros(len(items), dtype=torch.float64).index_add_(0, owner, torch.cat(per_token))
