"""Feedback alignment (Lillicrap, Cownden, Tweed & Akerman, Nature Communications 2016; arXiv 1411.0247).

Back-propagation sends the error down through the transposed forward weights, ``δ_{i−1} = s'(a_{i−1}) ⊙ (δ_i W_i)``
(row vectors, ``W_i`` of shape ``(n_i, n_{i−1})``). FA sends it through a *fixed random* matrix ``B_i`` of the
same shape instead, so no layer needs to know the weights above it (the "weight transport" problem)::

    δ_M     = ∂L/∂a_M                                  (the output unit's loss_grad)
    δ_{i−1} = s'_{i−1}(a_{i−1}) ⊙ (δ_i B_i),           i = M..2
    ∂W_i    = δ_iᵀ u_{i−1},   ∂b_i = Σ_b δ_i,          i = 1..M

The forward weights come to align with the feedback (``W_i`` turns towards ``B_i``), after which the updates point
within 90° of the gradient. Units that transmit a discrete value (sign, step, Bernoulli sample) are passed as the
identity on the way back, as the straight-through estimator does: ``δ_{i−1}`` uses the derivative of the state
``h_{i−1} = s(a_{i−1})``, and the weight update uses the transmitted ``u_{i−1}`` the layer above really received.

The feedback matrices of replica ``r`` are drawn from its seed's own ``"feedback"`` stream (see
:mod:`targetprop.replicas`): the forward initialisation of a seed is the same as under every other rule, a seed
gives the same ``B_i`` on every device and dtype, and R replicas follow the paths of R single runs. They belong
to the rule (not to the network): they are carried in its :class:`~targetprop.rules.base.RuleState`, so they are
saved and restored with it and a resumed run continues exactly.
Everything is closed form, batched over replicas, without autograd and without host synchronisation.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from targetprop.nets import Activity, Network, init_weight, matmul, pair
from targetprop.optim import per_replica
from targetprop.replicas import ReplicaRandom, generator
from targetprop.rules.base import Rule, RuleConfig, Scalar, angle_deg
from targetprop.tasks import Task


class RandomFeedbackConfig(RuleConfig):
    """Hyper-parameters of the rules with fixed random feedback matrices (FA, DFA)."""

    lr: Scalar = 1e-3
    """Learning rate of the forward weights (one value, or one per replica)."""
    optimizer: str = "adam"
    """sgd, momentum, rmsprop, adam or centered_rmsprop."""
    feedback_init: Literal["glorot", "orthogonal", "default"] = "glorot"
    """Distribution of the fixed feedback matrices, as init: glorot U(±sqrt(6/(n_in+n_out))), orthogonal, default."""
    feedback_scale: Scalar = 1.0
    """Factor applied to the drawn feedback matrices (one value, or one per replica)."""


def draw_feedback(
    seeds: Sequence[int],
    shapes: Sequence[tuple[int, int]],
    scheme: str,
    scale: Scalar,
    like: Tensor,
) -> list[Tensor]:
    """One ``(R, *shape)`` matrix per shape; replica r's are drawn in order from ``generator(seeds[r], "feedback")``
    on the CPU in float64 (as :func:`targetprop.nets.init_weight` draws), times ``scale`` (or ``scale[r]``), then
    moved to ``like``'s device and dtype."""
    scales = per_replica(scale, len(seeds), torch.empty(0, dtype=torch.float64))
    drawn = []
    for seed, s in zip(seeds, scales, strict=True):
        gen = generator(seed, "feedback")
        drawn.append([init_weight(shape, scheme, gen) * s for shape in shapes])
    return [
        torch.stack([mats[k] for mats in drawn]).to(device=like.device, dtype=like.dtype) for k in range(len(shapes))
    ]


class RandomFeedbackRule(Rule):
    """A rule that owns fixed random feedback matrices ``self.feedback`` (not trained; saved with the rule)."""

    Config = RandomFeedbackConfig
    config: RandomFeedbackConfig

    def __init__(self, net: Network, config: RandomFeedbackConfig, noise: ReplicaRandom, task: Task | None = None):
        super().__init__(net, config, noise, task)
        if len(noise.seeds) != net.replicas:
            raise ValueError(f"{net.replicas} replicas but {len(noise.seeds)} seeds in the rule's random streams")
        ref = net.layers[0].weight
        self.feedback: list[Tensor] = self.carry_feedback(
            draw_feedback(
                noise.seeds, self.feedback_shapes(), config.feedback_init, config.feedback_scale, ref.detach()
            )
        )

    def carry_feedback(self, matrices: list[Tensor]) -> list[Tensor]:
        """Keep the matrices as the rule's ``"feedback"`` (saved and restored with it: :class:`RuleState`)."""
        self.state.tensors.pop("feedback", None)
        return self.state.add("feedback", matrices)  # type: ignore[return-value]

    @abstractmethod
    def feedback_shapes(self) -> list[tuple[int, int]]:
        """The shape of each feedback matrix of one replica, in the order they are drawn."""

    @abstractmethod
    def deltas(self, acts: Activity, y: Tensor) -> list[Tensor]:
        """``[δ_1, ..., δ_M]``, the error signal at each layer's pre-activation ``a_i``."""

    def forward_updates(
        self, x: Tensor, y: Tensor, out: Sequence[Tensor] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """One forward pass, then ``∂W_i = δ_iᵀ u_{i−1}``, ``∂b_i = Σ_b δ_i`` with the rule's :meth:`deltas`
        (written into ``out``, e.g. the optimiser's gradient buffers, if given)."""
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            grads: list[Tensor] = []
            for i, delta in enumerate(self.deltas(acts, y), start=1):
                grads.extend(self.net.layer(i).weight_grads(delta, acts.u[i - 1], out=pair(out, i - 1)))
            loss = self.net.output_unit.loss(acts.logits, y)
        return grads, self.metrics(acts.logits, y, loss)

    def step(self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",)) -> dict[str, Tensor]:
        grads, metrics = self.forward_updates(x, y, out=self.optimizer.grad_buffers())
        self.optimizer.step(grads)
        return metrics


class FA(RandomFeedbackRule):
    """Feedback alignment: the error travels down through fixed random ``B_i`` in place of ``W_i``."""

    name = "fa"

    def feedback_shapes(self) -> list[tuple[int, int]]:
        """``B_i`` has the shape of ``W_i``, ``(n_i, n_{i−1})``, for ``i = 2..M`` (layer 1 sends nothing down)."""
        return [(layer.n_out, layer.n_in) for layer in self.net.layers[1:]]

    def matrix(self, i: int) -> Tensor:
        """``B_i`` ``(R, n_i, n_{i−1})``, ``i = 2..M``."""
        return self.feedback[i - 2]

    def deltas(self, acts: Activity, y: Tensor) -> list[Tensor]:
        """``[δ_1, ..., δ_M]``: ``δ_M = ∂L/∂a_M``, ``δ_{i−1} = s'_{i−1}(a_{i−1}) ⊙ (δ_i B_i)``."""
        net = self.net
        delta = net.output_unit.loss_grad(acts.a[-1], y)
        deltas = [delta]
        for i in range(net.depth, 1, -1):
            below = net.layer(i - 1)
            delta = below.unit.vjp(acts.a[i - 1], acts.h[i - 1], matmul(delta, self.matrix(i)))
            deltas.append(delta)
        return deltas[::-1]

    @torch.no_grad()
    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``−δ_{i+1} B_{i+1}``, the feedback each hidden layer ``i = 1..M−1`` receives (in place of ``−∂L/∂h_i``)."""
        deltas = self.deltas(self.net.activity(x, self.sample), y)
        return [-matmul(deltas[i], self.matrix(i + 1)) for i in range(1, self.net.depth)]

    def diagnostics(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``feedback_angle_deg`` and ``feedback_norm_ratio`` of :meth:`alignment`, NaN for layer 1 (no ``B_1``)."""
        angles, ratios = self.alignment()
        gap = angles.new_full((angles.shape[0], 1), math.nan)
        return {"feedback_angle_deg": torch.cat([gap, angles], 1), "feedback_norm_ratio": torch.cat([gap, ratios], 1)}

    @torch.no_grad()
    def alignment(self) -> tuple[Tensor, Tensor]:
        """Angle (degrees) between ``W_i`` and ``B_i`` and the norm ratio ``||W_i|| / ||B_i||``, each ``(R, M − 1)``
        for ``i = 2..M``: FA's "learning to learn", the forward weights turning towards the feedback."""
        angles, ratios = [], []
        for i in range(2, self.net.depth + 1):
            w, b = self.net.layer(i).weight, self.matrix(i)
            angles.append(angle_deg(w, b))
            ratios.append(w.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1))
        if not angles:  # no layer above the first
            none = self.net.layers[0].weight.new_zeros(self.net.replicas, 0)
            return none, none.clone()
        return torch.stack(angles, dim=1), torch.stack(ratios, dim=1)
