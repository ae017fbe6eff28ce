"""The MLP's speed on the CPU, kept apart from its definition in mlp.py: tanh in its sigmoid form, and the
training step written out by hand (the forward and backward pass without autograd). Public torch
operations only.
"""
from __future__ import annotations

import torch


def tanh(z: torch.Tensor) -> torch.Tensor:
    """tanh, computed as 2 sigmoid(2z) - 1 on the CPU outside autograd (in place in z there).

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


def make_step(model, sgd: bool):
    """Return step(contexts, targets, lr, weight_decay): one training step of the MLP model, by hand.

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
    C, W1, b1, W2, b2 = (p.detach() for p in (model.C, model.W1, model.b1, model.W2, model.b2))
    Wd = model.Wd.detach() if model.config.direct else None
    E, (TE, H) = C.shape[1], W1.shape
    W1t, W2t, Wdt = W1.t(), W2.t(), (Wd.t() if Wd is not None else None)
    if not sgd:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        gC, gW1, gb1, gW2, gb2 = (p.grad for p in (model.C, model.W1, model.b1, model.W2, model.b2))
        gWd = model.Wd.grad if Wd is not None else None
    sigmoid_tanh = C.device.type == "cpu"
    buffers = {}

    def make_buffers(B: int) -> tuple:
        x_rows, h, hh, dpre, dx = (C.new_empty(B * TE // E, E), C.new_empty(B, H), C.new_empty(B, H),
                                   C.new_empty(B, H), C.new_empty(B, TE))
        x = x_rows.view(B, TE)  # the embeddings side by side
        return (x_rows, x, x.t(), h, h.t(), hh, dpre, dpre.t(), dx, dx.view(-1, E), C.new_full((B, 1), -1.0),
                C.new_ones(B))

    def step(contexts: torch.Tensor, targets: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
        B = targets.shape[0]
        bufs = buffers.get(B) or buffers.setdefault(B, make_buffers(B))
        x_rows, x, xt, h, ht, hh, dpre, dpret, dx, dx_rows, minus_ones, ones = bufs
        torch.index_select(C, 0, contexts, out=x_rows)
        if sigmoid_tanh:  # see tanh; the doubling rides on the product
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
        # through tanh: dpre = dh * (1 - h^2), as dh - dh * h^2 in place
        torch.mm(dlogits, W2t, out=dpre)  # W2 before its update
        dpre.addcmul_(dpre, torch.mul(h, h, out=hh), value=-1.0)
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
