"""The MLP of Bengio et al. 2003, "A Neural Probabilistic Language Model", as built in the lecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import register
from makemore.models.base import Model


@dataclass
class MLPConfig:
    # The defaults were tuned on the dev split of the lecture's names (see bench/results/mlp.md); the
    # lecture's own model is block_size 3, n_embd 10, n_hidden 200, init randn, direct False.
    # characters of context. On the lecture's names 6, 8 and 12 tie (dev 1.9680, 1.9687, 1.9677) and 6 is
    # the cheapest; on files not tuned on, 6 is clearly better (12,000 Russian words 1.7317 against
    # 1.7567 at 12; 8,000 German words 1.8122 against 1.8453): fewer weights to fit from little data
    block_size: int = 6
    n_embd: int = 32  # dimensions of each character's embedding
    n_hidden: int = 512  # tanh units
    # "scaled": weights scaled for tanh (lecture part 3); "randn": plain N(0,1) as in lecture part 2
    init: str = "scaled"
    # Bengio et al.'s direct connections from the concatenated embeddings to the logits
    # (without them, dev 2.055 against 2.049 at 25,000 steps, no weight decay)
    direct: bool = True


def _tanh(z: torch.Tensor) -> torch.Tensor:
    """tanh, computed as 2 sigmoid(2z) - 1 on the CPU outside autograd.

    torch's tanh is slow on the CPU: for the default MLP's 128 x 512 activations it takes 160 us against
    59 us for the sigmoid form (32 x 200: 19 against 16), which agrees with it to 2e-7. Under autograd
    torch.tanh stays: one node in the graph instead of three.
    """
    if z.device.type != "cpu" or (z.requires_grad and torch.is_grad_enabled()):
        return torch.tanh(z)
    return _tanh_of_doubled_(z.mul_(2))


def _tanh_of_doubled_(z2: torch.Tensor) -> torch.Tensor:
    """tanh(z) from z2 = 2z, in place in z2: 2 sigmoid(2z) - 1."""
    s = torch.sigmoid_(z2)
    return torch.add(-1.0, s, alpha=2, out=s)  # in place: a new tensor of this size costs more than the sum


@register("mlp")
class MLP(Model):
    """Embedding table C, block_size embeddings concatenated, a tanh hidden layer, linear to logits.

    With direct=True the concatenated embeddings also feed the logits through Wd (Bengio et al.'s
    "direct connections"): logits = tanh(x W1 + b1) W2 + b2 + x Wd.
    """

    Config = MLPConfig
    # Weight decay is what keeps this wide model from overfitting. Dev loss on the lecture's names after
    # 25,682 steps (block_size 12, direct connections on): decay 0 2.049 (train 1.63), 0.03 1.981, 0.04 1.972,
    # 0.05 1.969 (train 1.75), 0.07 1.972, 0.1 1.991, 0.2 2.080 (train 2.05: underfits)
    train_defaults = dict(steps=25000, batch_size=128, lr=3e-3, optimizer="adamw", schedule="cosine",
                          weight_decay=0.05)
    # Without --steps, training makes EPOCHS passes over the training examples, within these bounds;
    # 18 passes are about 25,700 steps of 128 on the lecture's names
    EPOCHS = 18
    MIN_STEPS = 2000
    MAX_STEPS = 60000

    # Without --weight-decay, the decay grows as the data shrinks below the tuning data's size, as
    # sqrt(REFERENCE_EXAMPLES / n_examples), up to MAX_DECAY_FACTOR times the default
    REFERENCE_EXAMPLES = 182625  # training examples of the lecture's names under the default split
    MAX_DECAY_FACTOR = 4.0

    @classmethod
    def default_weight_decay(cls, n_examples: int) -> float:
        """The weight decay to train with when the user gives no --weight-decay: it follows the data size.

        The default decay (train_defaults) was tuned on the lecture's names. A smaller file has fewer
        examples to pin each weight down and trains for fewer steps (so the decay acts fewer times);
        there a stronger decay keeps the dev loss lower. Measured (at block_size 12) on two files not used
        for tuning (bench/bench_mlp.py): 3,951 names of the 1880s, dev 1.9529 at 0.05, 1.9464 at 0.1, 1.9376 at 0.2,
        2.0022 at 0.4; 12,000 Russian words, 1.7604 at 0.05, 1.7583 at 0.1, 1.8590 at 0.2. The square
        root keeps the growth gentle: 0.15 for the names, 0.08 for the words.
        """
        factor = (cls.REFERENCE_EXAMPLES / max(1, n_examples)) ** 0.5
        return cls.train_defaults["weight_decay"] * min(cls.MAX_DECAY_FACTOR, max(1.0, factor))

    @classmethod
    def default_steps(cls, n_examples: int, batch_size: int) -> int:
        """How many steps to train when the user gives no --steps: it follows the size of the data.

        EPOCHS passes over the n_examples training examples (one example per character, boundary
        included), but at least MIN_STEPS, so that a small file still trains long enough to learn, and
        at most MAX_STEPS, so that a large one does not train for hours. On a small file the
        best-on-dev weights kept by the loop then guard against overfitting.
        """
        return int(min(cls.MAX_STEPS, max(cls.MIN_STEPS, round(cls.EPOCHS * n_examples / batch_size))))

    def __init__(self, config: MLPConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        V, E, H, T = vocab_size, config.n_embd, config.n_hidden, config.block_size
        if config.init not in ("scaled", "randn"):
            raise ValueError(f"init must be 'scaled' or 'randn', not {config.init!r}")
        self.C = nn.Parameter(torch.randn(V, E))
        self.W1 = nn.Parameter(torch.randn(T * E, H))
        self.b1 = nn.Parameter(torch.randn(H))
        self.W2 = nn.Parameter(torch.randn(H, V))
        self.b2 = nn.Parameter(torch.randn(V))
        if config.init == "scaled":
            with torch.no_grad():
                self.W1 *= (5 / 3) / (T * E) ** 0.5  # tanh gain / sqrt(fan_in) keeps pre-activations ~N(0,1)
                self.b1 *= 0.01
                self.W2 *= 0.01  # near-uniform first predictions: initial loss ~ log(V), not in the tens
                self.b2.zero_()
        if config.direct:
            self.Wd = nn.Parameter(torch.zeros(T * E, V))  # starts as no path at all; learns what tanh misses

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = F.embedding(idx, self.C).view(idx.shape[0], -1)  # (B, T*E): the embeddings side by side
        h = _tanh(torch.addmm(self.b1, x, self.W1))  # (B, H); addmm: x @ W1 + b1 in one op
        logits = torch.addmm(self.b2, h, self.W2)  # (B, V)
        if self.config.direct:
            logits = torch.addmm(logits, x, self.Wd)
        return logits

    def step_by_hand(self, sgd: bool):
        """Return step(contexts, targets, lr, weight_decay): one training step written out by hand.

        step takes a batch of B contexts flattened, (B * block_size,), and its targets as a column,
        (B, 1): the shapes its index ops use. It does the forward and backward pass by hand, without
        autograd (tests check its gradients and updates against autograd and torch.optim), and returns the
        probability the model gave each target, (B, 1), from which the loop reads the loss when it logs.
        With sgd=True it also applies plain SGD in place, p -= lr * (grad + weight_decay * p), folding
        each update into the product that makes its gradient, and writes no .grad; with sgd=False it
        writes each parameter's .grad (the batch mean) for an optimizer and ignores lr and weight_decay.

        At the lecture's sizes each torch call costs more than its arithmetic, so this keeps the calls
        few: no graph, no separate update for SGD, activations written into buffers made once per batch
        size (with their transposes), the loss left for later. Call step under torch.no_grad() or
        torch.inference_mode(). It keeps views of the parameters: make a new one if they are replaced
        (load_state_dict copies into them, which is fine).
        """
        C, W1, b1, W2, b2 = (p.detach() for p in (self.C, self.W1, self.b1, self.W2, self.b2))
        Wd = self.Wd.detach() if self.config.direct else None
        E, (TE, H) = C.shape[1], W1.shape
        W1t, W2t, Wdt = W1.t(), W2.t(), (Wd.t() if Wd is not None else None)
        if not sgd:
            for p in self.parameters():
                p.grad = torch.zeros_like(p)
            gC, gW1, gb1, gW2, gb2 = (p.grad for p in (self.C, self.W1, self.b1, self.W2, self.b2))
            gWd = self.Wd.grad if Wd is not None else None
        tanh_backward = torch.ops.aten.tanh_backward.grad_input  # grad * (1 - tanh^2) in one call
        sigmoid_tanh = C.device.type == "cpu"
        buffers = {}

        def make_buffers(B: int) -> tuple:
            x_rows, h, dpre, dx = C.new_empty(B * TE // E, E), C.new_empty(B, H), C.new_empty(B, H), C.new_empty(B, TE)
            x = x_rows.view(B, TE)  # the embeddings side by side
            return x_rows, x, x.t(), h, h.t(), dpre, dpre.t(), dx, dx.view(-1, E), C.new_full((B, 1), -1.0), C.new_ones(B)

        def step(contexts: torch.Tensor, targets: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
            B = targets.shape[0]
            bufs = buffers.get(B) or buffers.setdefault(B, make_buffers(B))
            x_rows, x, xt, h, ht, dpre, dpret, dx, dx_rows, minus_ones, ones = bufs
            torch.index_select(C, 0, contexts, out=x_rows)
            if sigmoid_tanh:  # see _tanh; the doubling rides on the product
                _tanh_of_doubled_(torch.addmm(b1, x, W1, beta=2, alpha=2, out=h))
            else:
                torch.addmm(b1, x, W1, out=h).tanh_()
            logits = torch.addmm(b2, h, W2)
            if Wd is not None:
                logits.addmm_(x, Wd)
            p = torch.softmax(logits, 1)
            probs = p.gather(1, targets)
            # B x (d loss / d logits) = softmax - one_hot(targets); the 1/B goes into each product below
            dlogits = p.scatter_add_(1, targets, minus_ones)
            tanh_backward(torch.mm(dlogits, W2t), h, grad_input=dpre)  # W2 before its update
            torch.mm(dpre, W1t, out=dx)
            if Wd is not None:
                dx.addmm_(dlogits, Wdt)
            if sgd:
                # p <- p * (1 - lr * weight_decay) - (lr / B) * (B x grad): torch.optim.SGD's update
                a, keep = -lr / B, 1.0 - lr * weight_decay
                W2.addmm_(ht, dlogits, beta=keep, alpha=a)
                b2.addmv_(dlogits.t(), ones, beta=keep, alpha=a)
                W1.addmm_(xt, dpre, beta=keep, alpha=a)
                b1.addmv_(dpret, ones, beta=keep, alpha=a)
                if Wd is not None:
                    Wd.addmm_(xt, dlogits, beta=keep, alpha=a)
                if keep != 1.0:
                    C.mul_(keep)
                C.index_add_(0, contexts, dx_rows, alpha=a)
            else:
                a = 1.0 / B
                gW2.addmm_(ht, dlogits, beta=0, alpha=a)
                gb2.addmv_(dlogits.t(), ones, beta=0, alpha=a)
                gW1.addmm_(xt, dpre, beta=0, alpha=a)
                gb1.addmv_(dpret, ones, beta=0, alpha=a)
                if Wd is not None:
                    gWd.addmm_(xt, dlogits, beta=0, alpha=a)
                gC.zero_().index_add_(0, contexts, dx_rows, alpha=a)
            return probs

        return step
