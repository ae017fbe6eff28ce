"""Sampling that delivers: batched generation under constraints, and a report of what was rejected and why.

How each constraint is met, as exactly as the model allows:
- the prefix by conditioning: it is slid into the context as if the model had drawn it;
- the minimum length by masking the boundary token until the item is long enough, then renormalising;
- everything else (maximum length, suffix, regex, new, exclude, unique) by rejection: items are drawn in
  batches and kept in the order drawn, until n are found or the budget of draws is spent.

Item k draws with its own random numbers (makemore.stream), so the items of a seed are the same whatever
-n, the batch sizes or the rejection constraints: -n 5 prints the first 5 of -n 8, --new prints the items
of the same seed without --new that are not in the data.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from makemore import stream
from makemore.constraints import NUCLEUS_SLACK, NothingFound, Request, Samples, Tally  # noqa: F401
from makemore.dataset import build_dataset
from makemore.errors import OptionError

FIRST_BATCH, MAX_BATCH = 256, 8192  # batch sizes: 256, 512, ... up to 8,192, then 8,192 each
# ... and at most this many numbers in a batch's (rows, vocabulary) probabilities: 8,192 rows of a 10,000
# character vocabulary would be 655 MB in float64, for every copy the draw makes
BATCH_NUMBERS = 1 << 20


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, end_banned: torch.Tensor | None = None) -> torch.Tensor:
    """Turn logits (B, V) into sampling probabilities; a row in which every allowed token is impossible
    (a dead end) comes out as NaN.

    The order: temperature; the boundary token masked in the rows end_banned (B,); top_k; then top_p,
    the nucleus: the likeliest tokens whose probabilities reach top_p together.
    """
    logits = logits.double() / temperature
    if end_banned is not None:
        logits[:, 0] = logits[:, 0].masked_fill(end_banned, float("-inf"))
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


@dataclass
class Batch:
    """One batch of draws: the token rows and, for each row, its length or why it has none."""

    tokens: torch.Tensor  # (B, steps) ids drawn after the prefix, 0-padded
    length: torch.Tensor  # (B,) characters drawn after the prefix
    ended: torch.Tensor  # (B,) drew the boundary token
    dead: torch.Tensor  # (B,) met a context in which no allowed token has any probability


@torch.no_grad()
def draw_batch(model, prefix_ids: list[int], keys: torch.Tensor, steps: int, min_len: int = 0,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Batch:
    """Draw len(keys) items side by side, each with the random numbers of its item key (an int64 tensor
    from stream.item_keys): up to steps tokens after the prefix, the last of which must be the boundary
    for the item to have ended. Only rows still going are passed through the model."""
    device = next(iter(model.state_dict().values())).device
    T, size = model.block_size, len(keys)
    ctx = torch.zeros(size, T, dtype=torch.long, device=device)
    for i in prefix_ids[-T:]:  # slide the prefix into the context, as if the model had drawn it
        ctx = torch.cat([ctx[:, 1:], torch.full((size, 1), i, device=device)], dim=1)
    tokens = torch.zeros(size, steps, dtype=torch.long)
    dead = torch.zeros(size, dtype=torch.bool)
    rows = torch.arange(size)  # the rows still going
    for t in range(steps):
        banned = None
        if len(prefix_ids) + t < min_len:
            banned = torch.ones(rows.numel(), dtype=torch.bool, device=device)
        probs = next_token_probs(model(ctx), temperature, top_k, top_p, banned).cpu()
        nxt, stuck = _draw(probs, stream.uniforms(keys[rows], t))
        if bool(stuck.any()):
            dead[rows[stuck]] = True
            nxt = nxt.masked_fill(stuck, 0)  # the row stops here
        tokens[rows, t] = nxt
        going = nxt != 0
        rows, ctx = rows[going], torch.cat([ctx[going.to(device)][:, 1:], nxt[going, None].to(device)], dim=1)
        if rows.numel() == 0:
            break
    is_end = tokens == 0
    ended = is_end.any(1) & ~dead
    length = torch.where(is_end.any(1), is_end.int().argmax(1), steps)
    return Batch(tokens, length, ended, dead)


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


def sample(model, vocab, request: Request, key: int, data_items=frozenset(), default_cap: int = 64,
           progress: bool = False) -> Samples:
    """Draw until request.n items meet every constraint or request.budget() draws are spent.

    key: the random stream (stream.key_of(seed)). data_items: the items of the training data, for
    request.new. default_cap: the longest item drawn when request.max_len is None (longer ones are
    rejected, never cut). Raises NothingFound when the budget is spent without finding any item.
    """
    r = request
    tally = Tally(r, vocab, data_items)
    prefix_ids = vocab.encode(r.prefix)
    steps = r.steps(default_cap)
    batches = first = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=r.n, delay=1.0, leave=False, file=sys.stderr, unit="item", desc="sampling")
    try:
        while tally.going():
            size = max(1, min(MAX_BATCH, FIRST_BATCH << min(batches, 10), BATCH_NUMBERS // len(vocab)))
            batches += 1
            keys = stream.item_keys(key, torch.arange(first, first + size))
            first += size
            batch = draw_batch(model, prefix_ids, keys, steps, r.min_len, r.temperature, r.top_k, r.top_p)
            flags = zip(batch.dead.tolist(), batch.ended.tolist())
            for item, (dead, ended) in zip(_decode(batch, vocab, r.prefix), flags):
                tally.add(item, dead, ended)
                if not tally.going():
                    break
            if bar is not None:
                bar.update(len(tally.found) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return tally.result(default_cap)


def _decode(batch: Batch, vocab, prefix: str) -> list[str]:
    chars = vocab.chars
    return [prefix + "".join(chars[i] for i in row[:n])
            for row, n in zip(batch.tokens.tolist(), batch.length.tolist())]


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
        logp = F.log_softmax(model(x).double(), dim=-1)
        per_token.append(logp.gather(1, y[:, None]).squeeze(1).cpu())
    lengths = torch.tensor([len(item) + 1 for item in items])
    owner = torch.repeat_interleave(torch.arange(len(items)), lengths)
    return torch.zeros(len(items), dtype=torch.float64).index_add_(0, owner, torch.cat(per_token))
