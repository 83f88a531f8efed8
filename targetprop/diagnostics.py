"""Diagnostics, computed only when asked: how a rule's updates compare with back-propagation's.

- :func:`update_angles`: per layer and replica, the angle between the rule's update of ``W_i`` and the BP
  gradient ``∂L/∂W_i`` on the same batch (0° = the same direction, 90° = orthogonal);
- :func:`inverse_errors`: per layer and replica, the reconstruction error of the learned inverse,
  ``(1/B) Σ_b ||g_i(f_i(h_{i−1})) − h_{i−1}||²`` (no corruption); an output layer's inverse reads the
  pre-activation ``a_M`` (``first_target = "output"``, see :mod:`targetprop.rules.tp`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targetprop.nets import Network
from targetprop.rules import Rule
from targetprop.rules.bp import BP


def angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in degrees between ``a[r]`` and ``b[r]`` for each replica r (flattened); NaN where one is zero."""
    a, b = a.flatten(1), b.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


@torch.no_grad()
def update_angles(rule: Rule, x: Tensor, y: Tensor) -> Tensor:
    """``(R, M)``: angle between the rule's update of each layer's weights and the BP gradient, in degrees.

    Uses the rule's current state; changes nothing. Stochastic units draw from the rule's training stream.
    """
    bp = BP(rule.net, BP.Config(), rule.noise)
    theirs, _ = rule.forward_updates(x, y)
    exact, _ = bp.forward_updates(x, y)
    return torch.stack([angle(theirs[2 * i], exact[2 * i]) for i in range(rule.net.depth)], dim=1)


@torch.no_grad()
def inverse_errors(net: Network, x: Tensor) -> Tensor:
    """``(R, M)``: reconstruction error of each layer's inverse on the clean activity; NaN where none."""
    acts = net.activity(x, torch.rand_like)
    cols = []
    for i, layer in enumerate(net.layers, start=1):
        if layer.has_feedback:
            state = acts.a[i] if layer.is_output else acts.h[i]
            cols.append((layer.inverse(state) - acts.h[i - 1]).pow(2).sum(-1).mean(-1))
        else:
            cols.append(torch.full((net.replicas,), math.nan, dtype=acts.h[0].dtype, device=acts.h[0].device))
    return torch.stack(cols, dim=1)
