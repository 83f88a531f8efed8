"""Direct feedback alignment (Nøkland, NeurIPS 2016; arXiv 1609.01596).

The output error is sent to every hidden layer *directly*, each through its own fixed random matrix ``D_i`` of
shape ``(n_out, n_i)`` (row vectors; the convention of ``W_M``, so that ``D_{M−1} = W_M`` gives back-propagation in
a network with one hidden layer)::

    e    = ∂L/∂a_M                                     (the output unit's loss_grad)
    δ_M  = e
    δ_i  = s'_i(a_i) ⊙ (e D_i),                        i = 1..M−1
    ∂W_i = δ_iᵀ u_{i−1},   ∂b_i = Σ_b δ_i,             i = 1..M

No error travels through the layers above, so a layer learns past non-differentiable units above it: with sign, step or
Bernoulli units, ``δ_i`` uses the derivative of the layer's own state ``h_i = s(a_i)``, and the layers above only
contribute the transmitted ``u_i`` they really received. All the hidden layers' ``e D_i`` come from one batched
product with the ``D_i`` stored side by side, ``D = [D_1 | ... | D_{M−1}]`` of shape ``(R, n_out, Σ_i n_i)``.

The matrices are drawn, saved and restored as FA's are (see :mod:`targetprop.rules.fa`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targetprop.nets import Activity, Network, matmul
from targetprop.replicas import ReplicaRandom
from targetprop.rules.base import angle_deg
from targetprop.rules.fa import RandomFeedbackConfig, RandomFeedbackRule
from targetprop.tasks import Task


class DFA(RandomFeedbackRule):
    """Direct feedback alignment: the output error reaches each hidden layer through a fixed random ``D_i``."""

    name = "dfa"

    def __init__(self, net: Network, config: RandomFeedbackConfig, noise: ReplicaRandom, task: Task | None = None):
        super().__init__(net, config, noise, task)
        self.widths = [layer.n_out for layer in net.layers[:-1]]
        if self.feedback:  # D_1, ..., D_{M−1} drawn one by one, kept side by side
            self.feedback = self.carry_feedback([torch.cat(self.feedback, dim=-1)])

    def feedback_shapes(self) -> list[tuple[int, int]]:
        """``D_i`` is ``(n_out, n_i)`` for the hidden layers ``i = 1..M−1``."""
        n_out = self.net.sizes[-1]
        return [(n_out, layer.n_out) for layer in self.net.layers[:-1]]

    def matrices(self) -> list[Tensor]:
        """``[D_1, ..., D_{M−1}]``, each ``(R, n_out, n_i)``: views of the stored ``D`` (writing to them writes to it)."""
        starts = [sum(self.widths[:k]) for k in range(len(self.widths))]
        return [self.feedback[0].narrow(-1, s, n) for s, n in zip(starts, self.widths, strict=True)]

    def deltas(self, acts: Activity, y: Tensor) -> list[Tensor]:
        """``[δ_1, ..., δ_M]``: ``δ_M = e = ∂L/∂a_M``, ``δ_i = s'_i(a_i) ⊙ (e D_i)`` from one product ``e D``."""
        net = self.net
        e = net.output_unit.loss_grad(acts.a[-1], y)
        if not self.feedback:
            return [e]
        projected = matmul(e, self.feedback[0]).split(self.widths, dim=-1)
        deltas = [
            layer.unit.vjp(acts.a[i], acts.h[i], g)
            for i, (layer, g) in enumerate(zip(net.layers[:-1], projected, strict=True), start=1)
        ]
        return [*deltas, e]

    @torch.no_grad()
    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``−e D_i``, the feedback each hidden layer ``i = 1..M−1`` receives (in place of ``−∂L/∂h_i``)."""
        acts = self.net.activity(x, self.sample)
        e = self.net.output_unit.loss_grad(acts.a[-1], y)
        return [-matmul(e, d) for d in self.matrices()]

    @torch.no_grad()
    def diagnostics(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per hidden layer ``i``, the angle and norm ratio between ``D_i`` and the product of the forward weights
        above it, ``W_M ⋯ W_{i+1}`` ``(n_out, n_i)`` (the matrix back-propagation would use in a linear net):
        ``feedback_angle_deg``, ``feedback_norm_ratio`` (``||W_M ⋯ W_{i+1}|| / ||D_i||``); NaN for the output."""
        angles, ratios = [], []
        path = self.net.layer(self.net.depth).weight
        products = [path]
        for i in range(self.net.depth - 1, 1, -1):
            path = matmul(path, self.net.layer(i).weight)
            products.append(path)
        for d, w in zip(self.matrices(), products[::-1], strict=True):
            angles.append(angle_deg(w, d))
            ratios.append(w.flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1))
        gap = self.net.layers[0].weight.new_full((self.net.replicas,), math.nan)
        return {
            "feedback_angle_deg": torch.stack([*angles, gap], 1),
            "feedback_norm_ratio": torch.stack([*ratios, gap], 1),
        }
