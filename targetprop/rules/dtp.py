"""Difference target propagation (Lee, Zhang, Fischer, Biard & Bengio, ECML-PKDD 2015, arXiv 1412.7525).

TP's targets go wrong when ``g_i`` is not an exact inverse. DTP corrects each target with the inverse's own
reconstruction error at the current activity::

    ĥ_{i−1} = h_{i−1} + g_i(ĥ_i) − g_i(h_i)

so ``ĥ_i = h_i ⇒ ĥ_{i−1} = h_{i−1}`` for any ``g_i`` (stability), and DTP equals TP when ``g_i = f_i^{-1}``.
Everything else (first target, inverse training, layer-local losses, schedules) is shared with TP:
see :mod:`targetprop.rules.tp`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from targetprop.nets import Layer
from targetprop.rules.tp import TargetPropagation


class DTP(TargetPropagation):
    """Difference target propagation: ``ĥ_{i−1} = h_{i−1} − g_i(h_i) + g_i(ĥ_i)``."""

    name = "dtp"

    def propagate(self, layer: Layer, h_below: Tensor, h: Tensor, target: Tensor) -> Tensor:
        """``ĥ_{i−1} = h_{i−1} − g_i(h_i) + g_i(ĥ_i)``; both inverse passes run as one batched product."""
        g_h, g_target = layer.inverse(torch.cat([h, target], dim=1)).chunk(2, dim=1)
        return h_below - g_h + g_target
