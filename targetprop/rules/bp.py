"""Back-propagation: the exact gradient of the cost (Goodfellow et al., Deep Learning, ch. 6).

With row vectors and ``W_i`` of shape ``(n_i, n_{i−1})``, the backward pass is::

    δ_M     = ∂L/∂a_M                                  (the output unit's loss_grad)
    δ_{i−1} = s'_{i−1}(a_{i−1}) ⊙ (δ_i W_i),           i = M..2
    ∂W_i    = δ_iᵀ u_{i−1},   ∂b_i = Σ_b δ_i,          i = 1..M

computed in closed form on the kept forward activity (no autograd graph: faster on small layers), or by
autograd with ``autograd = true``; the two agree to rounding (tests/test_equations.py).

Through discrete (sign, step) or stochastic (Bernoulli) units the gradient is zero (or undefined), so the layers
below them do not learn; with ``straight_through = true`` the step is treated as the identity on the way back
(the straight-through estimator, Bengio et al. 2013): ``δh_{i−1} ≈ s'_i(a_i) ⊙ W_iᵀ δh_i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from targetprop.nets import Activity, Network, pair
from targetprop.rules.base import Rule, RuleConfig, Scalar
from targetprop.units import Noise


@torch.no_grad()
def descent_directions(net: Network, x: Tensor, y: Tensor, noise: Noise | None = None) -> list[Tensor]:
    """``−∂L/∂u_i`` for the hidden layers ``i = 1..M−1``: back-propagation's direction for the activity each
    layer sends up (``= −∂L/∂h_i`` for units that transmit their state; through sign or Bernoulli units, the
    straight-through reading)."""
    acts = net.activity(x, noise)
    delta = net.output_unit.loss_grad(acts.logits, y)
    directions = []
    for i in range(net.depth, 1, -1):
        grad_u = net.layer(i).input_grad(delta)
        directions.append(-grad_u)
        below = net.layer(i - 1)
        delta = below.unit.vjp(acts.a[i - 1], acts.h[i - 1], grad_u)
    return directions[::-1]


class BPConfig(RuleConfig):
    lr: Scalar = 0.000804
    """The DTP authors' BP learning rate for MNIST 784-240x7-10 (with centered RMSprop)."""
    straight_through: bool = False
    """Treat sign / step / Bernoulli steps as the identity in the backward pass."""
    autograd: bool = False
    """Compute the gradient with torch.autograd instead of the closed-form backward pass (same numbers, slower)."""


class BP(Rule):
    """``θ ← θ − lr · ∂L/∂θ`` through the chosen optimiser, ``L`` the batch-mean cost of each replica."""

    name = "bp"
    Config = BPConfig
    config: BPConfig

    def gradients(self, acts: Activity, y: Tensor, out: Sequence[Tensor] | None = None) -> list[Tensor]:
        """``∂L/∂W_i, ∂L/∂b_i`` for ``i = 1..M`` by the backward pass above (written into ``out`` if given)."""
        net = self.net
        grads: list[Tensor | None] = [None] * (2 * net.depth)
        delta = net.output_unit.loss_grad(acts.logits, y)
        for i in range(net.depth, 0, -1):
            grads[2 * i - 2 : 2 * i] = net.layer(i).weight_grads(delta, acts.u[i - 1], out=pair(out, i - 1))
            if i == 1:
                break
            below = net.layer(i - 1)
            if below.unit.transmits != "state" and not self.config.straight_through:
                # sign / step / sampling pass no gradient: the layers below get none
                params = net.forward_parameters()
                for k in range(2 * i - 2):
                    grads[k] = out[k].zero_() if out is not None else torch.zeros_like(params[k])
                break
            delta = below.unit.vjp(acts.a[i - 1], acts.h[i - 1], net.layer(i).input_grad(delta))
        return grads  # type: ignore[return-value]

    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        if self.config.autograd:
            params = self.net.forward_parameters()
            with torch.enable_grad():
                logits = self.net(x, self.sample, straight_through=self.config.straight_through)
                loss = self.net.output_unit.loss(logits, y)
                grads = torch.autograd.grad(loss.sum(), params, allow_unused=True, materialize_grads=True)
            return list(grads), self.metrics(logits, y, loss)
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            loss = self.net.output_unit.loss(acts.logits, y)
            return self.gradients(acts, y), self.metrics(acts.logits, y, loss)

    def step(self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",)) -> dict[str, Tensor]:
        if self.config.autograd:
            return super().step(x, y, phases)
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            grads = self.gradients(acts, y, out=self.optimizer.grad_buffers())
            metrics = self.metrics(acts.logits, y)
            self.optimizer.step(grads)
        return metrics

    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``−∂L/∂h_i``, the hidden layers' descent directions (the reference the diagnostics compare against)."""
        return descent_directions(self.net, x, y, self.sample)
