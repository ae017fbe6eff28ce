"""Sampling a few items in plain Python, without importing torch.

Importing torch takes about 2 s on a small machine: far longer than drawing the handful of items that
`makemore sample` is mostly asked for. For a model with a forward pass here (every model makemore has) and
a request small enough, this module reads the checkpoint
without torch, runs the model on one context at a time and draws each item with the same random numbers
as the batched sampler (makemore.stream). Both give the same items: their logits differ only by rounding
(torch computes in float32, this in float64), which changes a draw only when its uniform number falls
within about 1e-6 of the boundary between two tokens' cumulative probabilities.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate
from operator import add, mul
from pathlib import Path

from makemore import checkpoint, stream
from makemore.constraints import NUCLEUS_SLACK, Request, Samples, Tally, default_cap
from makemore.data import Vocab

# Cost model, in multiply-adds of plain Python (40 to 60 ns each here): a request is drawn here when its
# expected cost fits QUICK_OPS (0.4 to 0.6 s; importing torch takes 2 s or more), and handed to torch once
# its draws have cost MAX_OPS (about 1 s, when rejections need many more draws than expected).
QUICK_OPS = 10_000_000
MAX_OPS = 20_000_000
EXPECTED_FORWARDS = 8  # forward passes per item: names average 6 characters and the end


class MLPForward:
    """makemore.models.mlp.MLP on one context: tanh(x W1 + b1) W2 + b2 (+ x Wd), x the embeddings side
    by side. x W1 is the sum over context positions t of C[token] W1[rows of t], so each (t, token)
    product is computed once, when first needed, and summed after that; so are the logits of each context."""

    def __init__(self, state: dict, config: dict, vocab_size: int):
        self.block_size = config["block_size"]
        self.C = state["C"].rows()
        V, E = state["C"].shape
        TE, H = state["W1"].shape
        shapes = [state["W2"].shape, state["b1"].shape, state["b2"].shape]
        if config.get("direct"):
            shapes.append(state["Wd"].shape)
        if V != vocab_size or TE != self.block_size * E or shapes != [(H, V), (H,), (V,), (TE, V)][:len(shapes)]:
            raise ValueError("the weights do not fit the config")
        self.E, self.b1, self.b2 = E, state["b1"].values, state["b2"].values
        self.W2_columns = [list(c) for c in zip(*state["W2"].rows())]
        self.W1_columns = list(zip(*state["W1"].rows()))
        self.Wd_columns = list(zip(*state["Wd"].rows())) if config.get("direct") else None
        self.products = {}  # (t, token) -> (C[token] W1[rows of t], C[token] Wd[rows of t])
        self.columns_at = {}
        self.seen = {}  # context -> logits
        self.setup_ops = TE * H + self.block_size * V * E * (H + V)  # the transposes, and at most every product
        self.ops_per_forward = H * (V + self.block_size) + self.block_size * V

    def _product(self, t: int, token: int) -> tuple:
        found = self.products.get((t, token))
        if found is None:
            if t not in self.columns_at:  # the columns' entries for position t: E rows of W1 and of Wd
                rows = slice(t * self.E, (t + 1) * self.E)
                self.columns_at[t] = ([c[rows] for c in self.W1_columns],
                                      [c[rows] for c in self.Wd_columns] if self.Wd_columns else None)
            W1_t, Wd_t = self.columns_at[t]
            e = self.C[token]
            found = self.products[(t, token)] = ([sum(map(mul, e, c)) for c in W1_t],
                                                 [sum(map(mul, e, c)) for c in Wd_t] if Wd_t else None)
        return found

    def __call__(self, context: list[int]) -> list[float]:
        key = tuple(context)  # every item starts from the same context, and many share their first few
        found = self.seen.get(key)
        if found is None:
            found = self.seen[key] = self._logits(context)
        return found

    def _logits(self, context: list[int]) -> list[float]:
        pre, logits = self.b1, self.b2
        for t, token in enumerate(context):
            hidden, direct = self._product(t, token)
            pre = list(map(add, pre, hidden))
            if direct is not None:
                logits = list(map(add, logits, direct))
        h = [math.tanh(z) for z in pre]
        return [b + sum(map(mul, h, column)) for b, column in zip(logits, self.W2_columns)]


class BigramNNForward:
    """makemore.models.bigram_nn.BigramNN: the row of W of the previous token."""

    def __init__(self, state: dict, config: dict, vocab_size: int):
        if state["W"].shape != (vocab_size, vocab_size):
            raise ValueError("the weights do not fit the vocabulary")
        self.block_size = 1
        self.W = state["W"].rows()
        self.setup_ops = self.ops_per_forward = vocab_size

    def __call__(self, context: list[int]) -> list[float]:
        return self.W[context[-1]]


class NGramForward:
    """makemore.models.ngram.NGram (bigram too), add-k or Kneser-Ney, with its tables made the same way.

    Per order n >= 2, each context h seen in training has gamma(h) and alpha(h, w) for its seen next
    tokens w; P starts as the order-1 distribution (uniform for add-k) and, order by order, becomes
    gamma(h) P + alpha(h, .) where the context's last n-1 tokens were seen. The logits are log P.
    """

    def __init__(self, state: dict, config: dict, vocab_size: int):
        K, V = config["block_size"], vocab_size
        kn = config["smoothing"] == "kn"
        k = None if kn else config["smoothing"]
        if not kn and (isinstance(k, bool) or not isinstance(k, (int, float))):
            raise ValueError(f"unknown smoothing {k!r}")
        discounts = state["discounts"].rows()
        tables = [(state[f"ngrams_{n}"].values, state[f"counts_{n}"].values) for n in range(1, K + 2)]
        if any(len(keys) != len(counts) or any(not 0 <= key < V ** n for key in keys)
               for n, (keys, counts) in enumerate(tables, start=1)):
            raise ValueError("the counts do not fit the vocabulary")

        def discount(n: int, c: int) -> float:
            D1, D2, D3 = discounts[n - 1]
            return D3 if c >= 3 else D2 if c == 2 else D1

        self.block_size, self.V = K, V
        self.unigram = [1.0 / V] * V
        words, counts = tables[0]
        if kn and counts:
            d = [discount(1, c) for c in counts]
            total = float(sum(counts))
            alpha = [0.0] * V
            for w, c, dw in zip(words, counts, d):
                alpha[w] += (c - dw) / total
            spread = sum(d) / total / V  # the discounted mass, shared by every token
            self.unigram = [a + spread for a in alpha]
        self.orders = []  # per order n = 2.., {context key: (gamma, [(next token, alpha)])}
        for n, (keys, counts) in enumerate(tables[1:], start=2):
            rows = {}
            for key, c in zip(keys, counts):
                rows.setdefault(key // V, []).append((key % V, c))
            for h, row in rows.items():
                total = float(sum(c for _, c in row))
                if kn:
                    d = [discount(n, c) for _, c in row]
                    rows[h] = (sum(d) / total, [(w, (c - dw) / total) for (w, c), dw in zip(row, d)])
                else:
                    denom = total + k * V
                    rows[h] = (k * V / denom, [(w, c / denom) for w, c in row])
            self.orders.append(rows)
        self.setup_ops = 10 * sum(len(keys) for keys, _ in tables)
        self.ops_per_forward = 10 * V * (K + 1)

    def __call__(self, context: list[int]) -> list[float]:
        P, key, scale = self.unigram, 0, 1
        for rows, token in zip(self.orders, reversed(context)):  # one more (older) token of context per order
            key += token * scale
            scale *= self.V
            found = rows.get(key)
            if found is not None:
                gamma, alphas = found
                P = [p * gamma for p in P]
                for w, a in alphas:
                    P[w] += a
        return [math.log(p) if p > 0 else -math.inf for p in P]


class MixtureForward:
    """makemore.models.mixture.Mixture: log sum_i w_i p_i, each component reading its own block_size."""

    def __init__(self, state: dict, config: dict, vocab_size: int):
        if len(config["weights"]) != len(config["components"]):
            raise ValueError("a mixture needs one weight per component")
        self.parts = []
        for i, part in enumerate(config["components"]):
            prefix = f"components.{i}."
            own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            self.parts.append(_build(part["model"], own, part["config"], vocab_size))
        self.log_weights = [math.log(w) if w > 0 else -math.inf for w in config["weights"]]
        self.block_size = max(part.block_size for part in self.parts)
        self.setup_ops = sum(part.setup_ops for part in self.parts)
        self.ops_per_forward = sum(part.ops_per_forward for part in self.parts) + 10 * vocab_size * len(self.parts)

    def __call__(self, context: list[int]) -> list[float]:
        terms = [[lw + lp for lp in _log_softmax(part(context[len(context) - part.block_size:]))]
                 for part, lw in zip(self.parts, self.log_weights)]
        return [_logsumexp(column) for column in zip(*terms)]


def _logsumexp(values) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _log_softmax(logits: list[float]) -> list[float]:
    total = _logsumexp(logits)
    return [v - total for v in logits]


_FORWARDS = {"mlp": MLPForward, "bigram-nn": BigramNNForward, "bigram": NGramForward, "ngram": NGramForward,
             "mixture": MixtureForward}


def _build(name: str, state: dict, config: dict, vocab_size: int):
    if name not in _FORWARDS:
        raise KeyError(name)
    return _FORWARDS[name](state, config, vocab_size)


def forward_of(ckpt: dict):
    """The checkpoint's model as a function of one context (a list of block_size token ids) to its
    logits (a list), or None when its model has no forward pass here."""
    try:
        return _build(ckpt["model"], ckpt["state_dict"], ckpt["config"], len(ckpt["vocab"]))
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        return None  # a model, config or weights this reader does not know: torch's model says what is wrong


def next_token_probs(logits: list[float], temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, end_banned: bool = False) -> list[float] | None:
    """makemore.sampling.next_token_probs on one row: the sampling probabilities, or None for a dead end
    (every allowed token impossible)."""
    z = [v / temperature for v in logits]
    if end_banned:
        z[0] = -math.inf
    if top_k is not None and top_k < len(z):
        kth = sorted(z, reverse=True)[top_k - 1]
        z = [-math.inf if v < kth else v for v in z]
    top = max(z)
    if top == -math.inf:
        return None
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    probs = [v / total for v in e]
    if top_p is not None and top_p < 1:
        reached = 0.0
        for i in sorted(range(len(probs)), key=probs.__getitem__, reverse=True):
            reached += probs[i]
            if reached - probs[i] >= top_p * NUCLEUS_SLACK:  # the likelier tokens before it already reach top_p
                probs[i] = 0.0
    return probs


def draw(probs: list[float], u: float) -> int | None:
    """makemore.sampling._draw on one row: the token whose cumulative probability first exceeds u times
    the total, or None when no token has any probability."""
    cdf = list(accumulate(probs))
    total = cdf[-1]
    if not total > 0:
        return None
    return bisect_right(cdf, u * (total * (1 - 1e-12)))


def draw_item(forward, prefix_ids: list[int], item_key: int, steps: int, request: Request):
    """One item: the tokens drawn after the prefix, whether it drew the end, whether it hit a dead end."""
    T = forward.block_size
    context = ([0] * T + prefix_ids)[-T:]
    drawn = []
    for t in range(steps):
        probs = next_token_probs(forward(context), request.temperature, request.top_k, request.top_p,
                                 len(prefix_ids) + t < request.min_len)
        token = draw(probs, stream.uniform(item_key, t)) if probs is not None else None
        if token is None:
            return drawn, False, True
        if token == 0:
            return drawn, True, False
        drawn.append(token)
        context = context[1:] + [token]
    return drawn, False, False


def sample(checkpoint_path=None, out: str | Path = "out", device: str = "auto", model: str | None = None,
           seed: int | None = None, exclude=(), **options) -> Samples | None:
    """What makemore.api's Trained.sample returns (options: the same keywords), drawn without torch; None
    when this request is better left to it: a model with no forward pass here, a device other than the
    CPU, or more draws than plain Python makes quickly.

    Raises what Trained.sample raises for a request that can never be met or finds nothing.
    """
    if device not in ("auto", "cpu"):
        return None
    path = Path(checkpoint_path) if checkpoint_path is not None else checkpoint.latest(out)
    ckpt = checkpoint.read_without_torch(path)
    if ckpt is None or (model is not None and ckpt["model"] != model):
        return None
    forward = forward_of(ckpt)
    r = Request(exclude=frozenset(exclude), **options)
    data_items = ckpt["items"].split("\n") if ckpt.get("items") else []
    if forward is None or (r.new and not data_items):
        return None
    if forward.setup_ops + r.n * EXPECTED_FORWARDS * forward.ops_per_forward > QUICK_OPS:
        return None
    vocab = Vocab(ckpt["vocab"])
    tally = Tally(r, vocab, frozenset(data_items) if r.new else frozenset())
    cap = default_cap(data_items, r.prefix)
    prefix_ids, steps, key = vocab.encode(r.prefix), r.steps(cap), stream.key_of(seed)
    most_draws = max(r.n, (MAX_OPS - forward.setup_ops) // (EXPECTED_FORWARDS * forward.ops_per_forward))
    while tally.going():
        if tally.draws == most_draws:
            return None  # rejections need more draws than expected: the batched sampler is quicker
        tokens, ended, dead = draw_item(forward, prefix_ids, stream.item_key(key, tally.draws), steps, r)
        tally.add(r.prefix + vocab.decode(tokens), dead, ended)
    return tally.result(cap)
