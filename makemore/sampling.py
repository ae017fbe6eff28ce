"""Sampling that delivers: batched generation under constraints, and a report of what was rejected and why.

How each constraint is met, as exactly as the model allows:
- the prefix by conditioning: it is slid into the context as if the model had drawn it;
- the minimum length by masking the boundary token until the item is long enough, then renormalising;
- everything else (maximum length, suffix, regex, new, exclude, unique) by rejection: items are drawn in
  batches and kept in the order drawn, until n are found or the budget of draws is spent.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from makemore.data import build_dataset
from makemore.errors import MakemoreError, OptionError, VocabularyError

# Batch sizes: 256, 512, ... up to 8,192, then 8,192 each. They depend on nothing but the batch's place, and
# each batch draws from its own generator seeded from the master one, so the stream of draws is the
# same whatever -n or the rejection constraints: -n 5 prints the first 5 of -n 8, and --new prints the
# items of the same seed without --new that are not in the data.
FIRST_BATCH, MAX_BATCH = 256, 8192
# Why an item was rejected, in the order the checks run; an item is counted under the first it fails.
REASONS = {
    "dead_end": "hit a dead end (only the end was possible before --min-len)",
    "too_long": "were longer than --max-len",
    "no_end": "did not end within {cap} characters",
    "suffix": "failed --suffix",
    "regex": "failed --regex",
    "in_data": "were in the data",
    "excluded": "were in --exclude",
    "repeat": "repeats",
}


class NothingFound(MakemoreError):
    """The budget of draws ran out before a single item met every constraint."""


def default_max_tries(n: int) -> int:
    """100 draws per item asked, at least 200,000 and at most 500,000: an acceptance of 1 in 20,000 still
    finds 10 items, and a hopeless request ends within seconds (200,000 draws of the MLP took 2.6 s on
    one busy core)."""
    return min(max(100 * n, 200_000), 500_000)


@dataclass
class Request:
    """What to draw. Lengths count characters of the whole item, the prefix included."""

    n: int = 10
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    prefix: str = ""
    suffix: str = ""
    min_len: int = 1  # an item is never empty: no line of the data is
    max_len: int | None = None
    regex: str | None = None  # must match the whole item (re.fullmatch)
    new: bool = False  # reject items of the training data (any split)
    exclude: frozenset = frozenset()
    unique: bool = False
    max_tries: int | None = None  # None: default_max_tries(n)

    def budget(self) -> int:
        return self.max_tries if self.max_tries is not None else default_max_tries(self.n)


def check(request: Request, vocab) -> re.Pattern | None:
    """Refuse, before any drawing, a request that can never be met; return the compiled regex."""
    r = request
    if r.n < 0:
        raise OptionError(f"-n must be 0 or more, not {r.n}")
    if not r.temperature > 0 or math.isinf(r.temperature):
        raise OptionError(f"--temperature must be above 0, not {r.temperature}")
    if r.top_k is not None and not 1 <= r.top_k <= len(vocab):
        raise OptionError(f"--top-k must be between 1 and the vocabulary size {len(vocab)}, not {r.top_k}")
    if r.top_p is not None and not 0 < r.top_p <= 1:
        raise OptionError(f"--top-p must be above 0 and at most 1, not {r.top_p}")
    if r.max_tries is not None and r.max_tries < 1:
        raise OptionError(f"--max-tries must be at least 1, not {r.max_tries}")
    for flag, text in (("--prefix", r.prefix), ("--suffix", r.suffix)):
        bad = vocab.unknown(text)
        if bad:
            shown = "".join(vocab.show(c) for c in vocab.chars[1:])
            # exit 1 like every unseen-character error (issue 4), though it is refused before drawing too
            raise VocabularyError(f"{flag} has characters the model never saw: {''.join(map(vocab.show, bad))!r} "
                              f"(its vocabulary: {shown!r})")
    if r.min_len < 0:
        raise OptionError(f"--min-len must be 0 or more, not {r.min_len}")
    if r.max_len is not None:
        if r.max_len < 1:
            raise OptionError(f"--max-len must be at least 1, not {r.max_len}")
        if r.min_len > r.max_len:
            raise OptionError(f"--min-len {r.min_len} is above --max-len {r.max_len}")
        for flag, text in (("--prefix", r.prefix), ("--suffix", r.suffix)):
            if len(text) > r.max_len:
                raise OptionError(f"{flag} {text!r} is longer than --max-len {r.max_len}")
    if r.regex is None:
        return None
    try:
        return re.compile(r.regex)
    except re.error as e:
        raise OptionError(f"--regex {r.regex!r} is not a valid regular expression: {e}") from None


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
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # drop a token when the likelier ones before it already reach top_p (the first is always kept)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
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
def draw_batch(model, prefix_ids: list[int], size: int, generator: torch.Generator, steps: int,
               min_len: int = 0, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None) -> Batch:
    """Draw size items side by side: up to steps tokens after the prefix, the last of which must be the
    boundary for the item to have ended. Only rows still going are passed through the model."""
    device = next(iter(model.state_dict().values())).device
    T = model.block_size
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
        nxt, stuck = _draw(probs, generator)
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


def _draw(probs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of probs (B, V), and which rows had no token to draw (all zero or NaN).

    By inverting the cumulative distribution: the first token whose cumulative probability exceeds a
    uniform draw, so a token of probability 0 is never drawn. Far quicker than torch.multinomial for
    many short rows.
    """
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    stuck = ~(total[:, 0] > 0)
    # shrunk by 1e-12 so that rounding can never carry u up to the total itself
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype) * (total * (1 - 1e-12))
    return (cdf <= u).sum(-1), stuck


class Samples(list):
    """The items drawn (a list of str), with the figures of how the drawing went."""

    def __init__(self, items=(), asked: int = 0, draws: int = 0, rejected: dict | None = None, cap: int = 0):
        super().__init__(items)
        self.asked = asked
        self.draws = draws
        self.rejected = dict(rejected or {})  # reason (a key of REASONS) -> count
        self.cap = cap  # the longest item that could be drawn

    @property
    def complete(self) -> bool:
        return len(self) >= self.asked

    @property
    def acceptance(self) -> float:
        return len(self) / self.draws if self.draws else 0.0

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...)."""
        pct = 100 * self.acceptance
        shown = "0" if pct == 0 else f"{pct:.1f}" if pct >= 0.1 else f"{pct:.2g}"
        parts = [f"{count:,} {REASONS[reason].format(cap=self.cap)}"
                 for reason, count in self.rejected.items() if count]
        details = "; " + ", ".join(parts) if parts else ""
        return (f"asked for {self.asked:,}, found {len(self):,} in {self.draws:,} draws "
                f"(acceptance {shown}%{details})")


def sample(model, vocab, request: Request, generator: torch.Generator, data_items=frozenset(),
           default_cap: int = 64, progress: bool = False) -> Samples:
    """Draw until request.n items meet every constraint or request.budget() draws are spent.

    data_items: the items of the training data, for request.new. default_cap: the longest item drawn
    when request.max_len is None (longer ones are rejected, never cut). Raises NothingFound when the
    budget is spent without finding any item.
    """
    pattern = check(request, vocab)
    r = request
    prefix_ids = vocab.encode(r.prefix)
    cap = r.max_len if r.max_len is not None else max(default_cap, r.min_len, len(r.prefix))
    steps = cap - len(r.prefix) + 1  # one more than the characters allowed: the boundary must be drawn
    budget = r.budget()
    found: list[str] = []
    seen: set[str] = set()
    rejected = dict.fromkeys(REASONS, 0)
    draws = batches = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=r.n, delay=1.0, leave=False, file=sys.stderr, unit="item", desc="sampling")
    try:
        while len(found) < r.n and draws < budget:
            size = min(MAX_BATCH, FIRST_BATCH << min(batches, 10))
            batches += 1
            seed = int(torch.randint(2**62, (1,), generator=generator))
            batch = draw_batch(model, prefix_ids, size, torch.Generator().manual_seed(seed), steps, r.min_len,
                               r.temperature, r.top_k, r.top_p)
            flags = zip(batch.dead.tolist(), batch.ended.tolist())
            for item, (dead, ended) in zip(_decode(batch, vocab, r.prefix), flags):
                draws += 1
                reason = _verdict(item, dead, ended, r, pattern, data_items, seen)
                if reason is None:
                    found.append(item)
                    if r.unique:
                        seen.add(item)
                else:
                    rejected[reason] += 1
                if len(found) == r.n or draws == budget:
                    break
            if bar is not None:
                bar.update(len(found) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    result = Samples(found, r.n, draws, rejected, cap)
    if r.n and not found:
        raise NothingFound(result.report() + "; loosen the constraints or raise --max-tries")
    return result


def _decode(batch: Batch, vocab, prefix: str) -> list[str]:
    chars = vocab.chars
    return [prefix + "".join(chars[i] for i in row[:n])
            for row, n in zip(batch.tokens.tolist(), batch.length.tolist())]


def _verdict(item: str, dead: bool, ended: bool, r: Request, pattern, data_items, seen) -> str | None:
    """None when item meets every constraint, else the first reason (a key of REASONS) it fails."""
    if dead:
        return "dead_end"
    if not ended:
        return "too_long" if r.max_len is not None else "no_end"
    if r.suffix and not item.endswith(r.suffix):
        return "suffix"
    if pattern is not None and pattern.fullmatch(item) is None:
        return "regex"
    if r.new and item in data_items:
        return "in_data"
    if item in r.exclude:
        return "excluded"
    if r.unique and item in seen:
        return "repeat"
    return None


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
