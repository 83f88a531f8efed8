"""Back-propagation: the exact gradient of the cost, by autograd (Goodfellow et al., Deep Learning, ch. 6).

Through discrete (sign) or stochastic (Bernoulli) units the gradient is zero (or undefined), so the layers
below them do not learn; with ``straight_through = true`` the step is treated as the identity on the way back
(the straight-through estimator, Bengio et al. 2013): ``δh_{i−1} ≈ s'_i(a_i) ⊙ W_iᵀ δh_i``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from targetprop.rules.base import Rule, RuleConfig, Scalar, batch_metrics


class BPConfig(RuleConfig):
    lr: Scalar = 0.000804
    """The DTP authors' BP learning rate for MNIST 784-240x7-10 (with centered RMSprop)."""
    straight_through: bool = False
    """Treat sign / Bernoulli steps as the identity in the backward pass."""


class BP(Rule):
    """``θ ← θ − lr · ∂L/∂θ`` through the chosen optimiser, ``L`` the batch-mean cost of each replica."""

    name = "bp"
    Config = BPConfig
    config: BPConfig

    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        params = self.net.forward_parameters()
        with torch.enable_grad():
            logits = self.net(x, self.sample, straight_through=self.config.straight_through)
            loss = self.net.output_unit.loss(logits, y)
            grads = torch.autograd.grad(loss.sum(), params, allow_unused=True, materialize_grads=True)
        return list(grads), batch_metrics(logits.detach(), y, loss)
