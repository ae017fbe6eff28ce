"""The n-gram models' smoothing options (--smoothing, --discount), parsed here rather than in
makemore.models.ngram: this module does not import torch, so the CLI checks them before it imports torch."""
from __future__ import annotations

import math

from makemore import options


def parse_smoothing(value) -> float | str:
    """'kn' or a finite number k >= 0 (add-k)."""
    if isinstance(value, str) and value.strip().lower() == "kn":
        return "kn"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is neither a number (add-k) nor kn")
    try:
        k = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a number (add-k) nor kn") from None
    if not 0 <= k < math.inf:
        raise ValueError(f"{value!r} must be a finite number >= 0 (add-k), or kn")
    return k


def parse_discount(value) -> tuple[float, float, float] | None:
    """None, or D or D1,D2,D3 (a string, or a list from a checkpoint) as (D1, D2, D3+), with 0 < Dr <= r, so
    that every discounted count stays >= 0 and every seen context leaves some probability to the shorter ones."""
    if value is None:
        return None
    values = options.numbers([value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(0 < d <= r for r, d in zip((1, 2, 3), values)):
        raise ValueError(f"{value!r} must be D or D1,D2,D3 with 0 < D1 <= 1, 0 < D2 <= 2, 0 < D3 <= 3")
    return tuple(values)
