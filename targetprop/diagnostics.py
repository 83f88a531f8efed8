"""Diagnostics, computed only when asked (``diagnostics = true``): how a rule's learning compares with
back-propagation's on the same batch, and what each rule has of its own. Nothing here knows a rule by name.

Every measurement is ``(R, L)``: one value per replica and per layer (NaN where a layer has none).

- ``angle_deg`` (:func:`update_angles`): the angle between the rule's update of ``W_i`` and the BP gradient
  ``∂L/∂W_i`` (0° = the same direction, 90° = orthogonal), layers ``1..M``;
- ``signal_angle_deg`` (:func:`signal_angles`): the same in activity space, between the direction in which the
  rule moves ``h_i`` (:meth:`~targetprop.rules.base.Rule.signal`: a target minus the activity, a feedback signal,
  a synthetic gradient's negative) and ``−∂L/∂h_i``, the hidden layers ``1..M−1``, for rules that expose one;
- the BP references are those the rule names (:meth:`~targetprop.rules.base.Rule.exact_updates`,
  :meth:`~targetprop.rules.base.Rule.exact_signal`): the feed-forward network's, or for a network that settles by
  relaxation (EP) the gradient of the cost at its fixed point;
- whatever the rule reports itself (:meth:`~targetprop.rules.base.Rule.diagnostics`), e.g. ``inverse_error``
  for the target-propagation family (:func:`targetprop.rules.tp.inverse_errors`), ``feedback_angle_deg`` and
  ``feedback_norm_ratio`` for FA and DFA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targetprop.rules import Rule
from targetprop.rules.base import angle_deg


@torch.no_grad()
def update_angles(rule: Rule, x: Tensor, y: Tensor) -> Tensor:
    """``(R, M)``: angle between the rule's update of each layer's weights and the BP gradient, in degrees.

    Uses the rule's current state; changes nothing. Stochastic units draw from the rule's training stream. BP
    learns the rule's task (its targets ``y`` and its batch metrics).
    """
    theirs, _ = rule.forward_updates(x, y)
    exact = rule.exact_updates(x, y)
    return torch.stack([angle_deg(theirs[2 * i], exact[2 * i]) for i in range(rule.net.depth)], dim=1)


@torch.no_grad()
def signal_angles(rule: Rule, x: Tensor, y: Tensor) -> Tensor | None:
    """``(R, M)``: angle between the rule's :meth:`~targetprop.rules.base.Rule.signal` at each hidden layer and
    ``−∂L/∂h_i`` (NaN for the output layer); None for a rule without a signal."""
    signals = rule.signal(x, y)
    if signals is None:
        return None
    exact = rule.exact_signal(x, y)
    cols = [angle_deg(s, e) for s, e in zip(signals, exact, strict=True)]
    cols.append(torch.full_like(cols[0], math.nan) if cols else x.new_full((rule.net.replicas,), math.nan))
    return torch.stack(cols, dim=1)


def measure(rule: Rule, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Every diagnostic of ``rule`` on the batch ``(x, y)``, each ``(R, M)``: the metrics a run logs per epoch."""
    out = {"angle_deg": update_angles(rule, x, y)}
    signal = signal_angles(rule, x, y)
    if signal is not None:
        out["signal_angle_deg"] = signal
    out.update(rule.diagnostics(x, y))
    return out
