"""The random numbers of sampling: SplitMix64's output function (Steele, Lea and Flood, 2014) on counters, a
hash of (seed, item, step). Item k draws its t-th token with uniforms(item_keys(key, k), t) whatever its batch,
so -n 5 prints the first 5 items of -n 8 and a rejected item never shifts the others' draws."""
from __future__ import annotations

import secrets

MASK = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio, odd
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # its two multipliers


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    return x - 2**64 if x >= 2**63 else x


def mix(z: int) -> int:
    """SplitMix64's output function on a 64-bit integer."""
    z = ((z ^ (z >> 30)) * _M1) & MASK
    z = ((z ^ (z >> 27)) * _M2) & MASK
    return z ^ (z >> 31)


def key_of(seed: int | None) -> int:
    """The stream of a seed (any integer); a random one without a seed."""
    return mix(secrets.randbits(64) if seed is None else seed & MASK)


# SplitMix64 on int64 tensors, which wrap around on overflow as the & MASK above does; >> on them shifts the
# sign in, so each shift is masked to the bits a logical shift keeps.
def _mix_tensor(z):
    z = (z ^ ((z >> 30) & (2**34 - 1))) * _signed(_M1)
    z = (z ^ ((z >> 27) & (2**37 - 1))) * _signed(_M2)
    return z ^ ((z >> 31) & (2**33 - 1))


def item_keys(key: int, indices):
    """The key of each item (an int64 tensor of item indices) of the stream key, as an int64 tensor."""
    return _mix_tensor((indices + 1) * _signed(GOLDEN) + _signed(key))


def uniforms(items, step: int):
    """The uniform number in [0, 1) with which each item (an int64 tensor of item keys) draws at step."""
    bits = (_mix_tensor(items + _signed(((step + 1) * GOLDEN) & MASK)) >> 11) & (2**53 - 1)
    return bits.double() * 2.0**-53
