"""Batched generation: all items are drawn side by side, one character position per model call."""
from __future__ import annotations

import torch


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Turn logits (B, V) into sampling probabilities, sharpened or flattened by temperature and cut to top_k."""
    logits = logits.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


@torch.no_grad()
def generate(model, vocab, n: int, generator: torch.Generator, temperature: float = 1.0,
             top_k: int | None = None, prefix: str = "", max_len: int = 64) -> list[str]:
    """Draw n items. Each starts from the boundary context followed by prefix and ends at the boundary
    token or at max_len characters (the prefix included)."""
    model.eval()
    device = next(iter(model.state_dict().values())).device
    T = model.block_size
    prefix_ids = vocab.encode(prefix)
    ctx = torch.zeros(n, T, dtype=torch.long, device=device)
    for i in prefix_ids:  # slide the prefix into the context, as if the model had drawn it
        ctx = torch.cat([ctx[:, 1:], torch.full((n, 1), i, device=device)], dim=1)
    out = torch.zeros(n, max(0, max_len - len(prefix_ids)), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(out.shape[1]):
        probs = next_token_probs(model(ctx), temperature, top_k)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        nxt = nxt.masked_fill(done, 0)
        out[:, t] = nxt
        done |= nxt == 0
        if bool(done.all()):
            break
        ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
    items = []
    for row in out.tolist():
        end = row.index(0) if 0 in row else len(row)
        items.append(prefix + vocab.decode(row[:end]))
    return items
