"""A counter-based random stream per replica (Philox4x32-10), written in tensor operations.

A ``torch.Generator`` cannot be traced by ``torch.compile``: a step that draws from one (stochastic units, DTP's
corruption noise) breaks into pieces around each draw, and a CUDA graph captures only the pieces. Philox
(Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"; the generator behind cuRAND and
PyTorch's CUDA streams) is a pure function of a 128-bit counter and a 64-bit key::

    (x_0, x_1, x_2, x_3) = bijection_key(c_0, c_1, c_2, c_3)     ten rounds of
    (c_0, c_1, c_2, c_3) ← (hi(M_1 c_2) ⊕ c_1 ⊕ k_0,  lo(M_1 c_2),  hi(M_0 c_0) ⊕ c_3 ⊕ k_1,  lo(M_0 c_0))
    (k_0, k_1)           ← (k_0 + W_0,  k_1 + W_1)  mod 2³²

so a draw is element-wise integer arithmetic that dynamo traces and inductor fuses into one kernel, and it gives
the same numbers on every device. Replica ``r`` has its own key (from its seed and stream) and its own position
``offset_r`` in its stream; a draw of ``n`` numbers per replica uses counters ``offset_r … offset_r + ⌈n/4⌉ − 1``
and then moves the position on by that much, in place, so the next draw continues the stream.

All arithmetic is on int64 tensors holding 32-bit values, and no product overflows: the 32 × 32-bit products are
taken in 16-bit halves (:func:`mulhilo`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

M0, M1 = 0xD2511F53, 0xCD9E8D57
"""The round multipliers of Philox4x32."""
W0, W1 = 0x9E3779B9, 0xBB67AE85
"""The key increments (the golden ratio and sqrt(3) − 1, as 32-bit fractions)."""
ROUNDS = 10
MASK = 0xFFFFFFFF


def mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The high and low 32-bit words of the 64-bit product ``a · m`` (``a``, ``m`` below 2³²), with every partial
    product below 2⁴⁹, so that int64 arithmetic never overflows."""
    low = a * (m & 0xFFFF)  # < 2^48
    high = a * (m >> 16)  # < 2^48
    lo = low + ((high & 0xFFFF) << 16)  # < 2^49
    hi = (high >> 16) + (lo >> 32)
    return hi & MASK, lo & MASK


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[Tensor, Tensor]) -> list[Tensor]:
    """Philox4x32-10 of a counter ``(c_0, c_1, c_2, c_3)`` under a key ``(k_0, k_1)``: four 32-bit words, as int64
    tensors (every argument an int64 tensor of 32-bit values; they broadcast)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(ROUNDS):
        hi0, lo0 = mulhilo(c0, M0)
        hi1, lo1 = mulhilo(c2, M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return [c0, c1, c2, c3]


def words(keys: Tensor, offsets: Tensor, n: int) -> Tensor:
    """``(R, n)`` 32-bit words: replica ``r``'s stream under ``keys[r]`` (``(R, 2)``) from counter ``offsets[r]``
    (``(R,)``, int64) on; ``offsets`` moves on by the ``⌈n/4⌉`` counters used, in place."""
    blocks = math.ceil(n / 4)
    index = offsets.unsqueeze(1) + torch.arange(blocks, device=offsets.device, dtype=torch.int64)  # (R, blocks)
    zero = torch.zeros_like(index)
    out = philox4x32((index & MASK, index >> 32, zero, zero), (keys[:, :1], keys[:, 1:]))
    offsets.add_(blocks)
    return torch.stack(out, dim=-1).view(len(keys), 4 * blocks)[:, :n]


def uniform(keys: Tensor, offsets: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``(R, *shape)`` uniform draws in [0, 1) with 24 random bits each (a float32's mantissa), a replica's from its
    own stream (see :func:`words`)."""
    n = math.prod(shape)
    return ((words(keys, offsets, n) >> 8).to(dtype) * 2.0**-24).view(len(keys), *shape)


def normal(keys: Tensor, offsets: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``(R, *shape)`` standard normal draws by Box and Muller's transform of two uniforms each,
    ``z = sqrt(−2 ln u_1) cos(2π u_2)`` with ``u_1`` in (0, 1]."""
    n = math.prod(shape)
    w = words(keys, offsets, 2 * n)
    u1 = ((w[:, :n] >> 8) + 1).to(torch.float64) * 2.0**-24
    u2 = (w[:, n:] >> 8).to(torch.float64) * 2.0**-24
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype).view(len(keys), *shape)
