"""Synthetic gradients / decoupled neural interfaces (Jaderberg et al., ICML 2017; arXiv 1608.05343).

A layer need not wait for the backward pass of the layers above: a small model ``M_i`` predicts the gradient
``∂L/∂h_i`` from the layer's own output (and, "cDNI", from the label), and the layer updates from the prediction
right after its forward step. With row vectors, a block of layers below a predictor at layer ``i`` receives::

    ĝ_i = M_i(h_i [, y])                      the synthetic gradient, ≈ ∂ℓ/∂h_i = B ∂L/∂h_i
    δ_i = s'_i(a_i) ⊙ ĝ_i / B                 and below it, inside the block, back-propagation as usual:
    δ_{j−1} = s'_{j−1}(a_{j−1}) ⊙ (δ_j W_j)   down to the layer above the next predictor

    ∂W_j = δ_jᵀ u_{j−1},  ∂b_j = Σ_b δ_j      for every layer j

Predictors work in per-sample units: ``ĝ_i`` predicts the gradient of the sample's own cost ``ℓ``, which is ``B``
times that of the batch-mean cost ``L = (1/B) Σ_b ℓ_b`` the layers descend, so what they learn does not depend on
the batch size and their targets are of order one rather than ``1/B``. Predictors sit on top of every ``block`` layers (``block = 1``: every hidden layer is decoupled; a ``block`` of
``M`` or more is back-propagation itself). The output layer is trained on the true gradient ``δ_M = ∂L/∂a_M``.

Each predictor learns by squared error, ``L_i^sg = (1/B) Σ_b ||ĝ_i − t_i||²``, towards

- ``target = "bootstrap"`` (the paper's): the gradient the block above sends down, ``t_i = B δ_{i+1} W_{i+1}``,
  itself computed from that block's own synthetic gradient (from the true gradient in the top block), as TD
  learning bootstraps from its own predictions;
- ``target = "true"``: the exact ``B ∂L/∂h_i`` of a full backward pass (an upper bound for comparisons; it needs
  the backward pass that decoupling avoids).

Predictors: linear by default, ``ĝ = φ A + c`` with ``φ = h_i`` or, conditioned on the label (``conditioned =
true``), ``φ = [h_i, onehot(y)]``; with ``hidden = H > 0`` a small MLP ``ĝ = relu(φ P + p) A + c``. ``A`` and ``c``
start at zero (the paper's initialisation: no synthetic gradient at first), ``P`` from the Glorot range. Their
gradients are closed form, ``d = 2(ĝ − t)/B``: ``∂A = zᵀ d``, ``∂c = Σ_b d``, and for the MLP
``d_z = (d Aᵀ) ⊙ 1[z > 0]``, ``∂P = φᵀ d_z``, ``∂p = Σ_b d_z``.

Every layer's update and every predictor's target come from one forward pass with the weights of before the step:
what layers updating each as soon as their own forward step is done would compute, run one after the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from targetprop.errors import ConfigError
from targetprop.nets import Activity, Network, pair
from targetprop.optim import Optimizer, make_optimizer
from targetprop.replicas import ReplicaRandom
from targetprop.rules.base import Rule, RuleConfig, Scalar
from targetprop.rules.bp import descent_directions
from targetprop.rules.fa import draw_feedback
from targetprop.tasks import Task


class SGConfig(RuleConfig):
    """Defaults measured on digits (64-64x3-10, Adam, 20 epochs: tests/test_sg.py); none published for MNIST."""

    lr: Scalar = 1e-3
    """Learning rate of the forward weights."""
    optimizer: str = "adam"
    lr_synthetic: Scalar = 1e-2
    """Learning rate of the gradient predictors."""
    synthetic_optimizer: str | None = None
    """Optimizer of the predictors (default: the same as ``optimizer``)."""
    block: int = Field(1, ge=1)
    """Layers per block trained by back-propagation inside, with a predictor on top of each block but the last."""
    conditioned: bool = False
    """Predictors also see the label, ``φ = [h, onehot(y)]`` (cDNI)."""
    hidden: int = Field(0, ge=0, le=100_000)
    """Width of the predictors' hidden ReLU layer (0: linear predictors)."""
    target: Literal["bootstrap", "true"] = "bootstrap"
    """What the predictors learn from: the gradient the block above sends down, or the exact gradient."""

    resumable: ClassVar[tuple[str, ...]] = (*RuleConfig.resumable, "lr_synthetic")


class SyntheticGradients(Rule):
    """Decoupled layers: each block learns from a predicted gradient at its top, the predictors from the block above."""

    name = "sg"
    Config = SGConfig
    config: SGConfig

    def __init__(self, net: Network, config: SGConfig, noise: ReplicaRandom, task: Task | None = None):
        super().__init__(net, config, noise, task)
        self.sites = [i for i in range(config.block, net.depth, config.block)]
        """The layers ``i`` whose output ``h_i`` has a gradient predictor (paper numbering)."""
        if not self.sites:
            raise ConfigError(
                f"sg with block = {config.block} on {net.depth} layers has no predictor (it is back-propagation); "
                f"give a block below {net.depth}"
            )
        self.n_labels = net.sizes[-1] if config.conditioned else 0
        widths = [net.layer(i).n_out for i in self.sites]
        fan_in = [n + self.n_labels for n in widths]
        ref = net.layers[0].weight.detach()
        shapes = [(f, config.hidden) for f in fan_in]
        hidden = iter(draw_feedback(noise.seeds, shapes, "glorot", 1.0, ref)) if config.hidden else None
        params: list[Tensor] = []
        for n, f in zip(widths, fan_in, strict=True):
            if hidden is not None:  # P from the Glorot range (each seed's "feedback" stream), p = 0
                params += [next(hidden), ref.new_zeros(net.replicas, config.hidden)]
                f = config.hidden
            params += [ref.new_zeros(net.replicas, f, n), ref.new_zeros(net.replicas, n)]  # A = 0, c = 0
        self.predictors: list[Tensor] = self.state.add("predictors", params)  # type: ignore[assignment]
        self.synthetic_optimizer: Optimizer = self.state.add_optimizer(
            "synthetic",
            make_optimizer(config.synthetic_optimizer or config.optimizer, params, config.lr_synthetic),
        )

    # ---- predictors ---------------------------------------------------------------------------------------------

    def _params(self, k: int) -> list[Tensor]:
        """The parameters of the k-th predictor: ``[P, p,] A, c``."""
        n = 4 if self.config.hidden else 2
        return self.predictors[n * k : n * k + n]

    def _features(self, h: Tensor, y: Tensor) -> Tensor:
        """``φ = h``, or ``[h, onehot(y)]`` for a predictor conditioned on the label."""
        if not self.n_labels:
            return h
        return torch.cat([h, self.net.output_unit._one_hot(h.new_empty(*h.shape[:-1], self.n_labels), y)], -1)

    def predict_gradient(self, k: int, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``ĝ`` of the k-th predictor from ``h``, with its input ``φ`` (or the hidden ``z``) and ``z``."""
        phi = self._features(h, y)
        if self.config.hidden:
            p_w, p_b, a_w, a_b = self._params(k)
            z = torch.relu(torch.baddbmm(p_b.unsqueeze(1), phi, p_w))
            return torch.baddbmm(a_b.unsqueeze(1), z, a_w), phi, z
        a_w, a_b = self._params(k)
        return torch.baddbmm(a_b.unsqueeze(1), phi, a_w), phi, None

    def predictor_gradients(self, k: int, g_hat: Tensor, target: Tensor, phi: Tensor, z: Tensor | None) -> list[Tensor]:
        """``∂L^sg/∂`` of the k-th predictor's parameters, ``L^sg = (1/B) Σ_b ||ĝ − t||²`` (see the module)."""
        d = (g_hat - target).mul_(2.0 / g_hat.shape[1])
        if z is None:
            return [torch.bmm(phi.transpose(1, 2), d), d.sum(1)]
        _, _, a_w, _ = self._params(k)
        d_z = torch.bmm(d, a_w.transpose(1, 2)).mul_(z > 0)
        return [torch.bmm(phi.transpose(1, 2), d_z), d_z.sum(1), torch.bmm(z.transpose(1, 2), d), d.sum(1)]

    # ---- the backward pass with synthetic gradients -------------------------------------------------------------

    def backward(
        self, acts: Activity, y: Tensor
    ) -> tuple[list[Tensor], dict[int, tuple[Tensor, Tensor, Tensor, Tensor | None]]]:
        """``[δ_1, ..., δ_M]`` and, per predictor site ``i``, ``(ĝ_i, what the block above sends down, φ, z)``:
        the prediction with the predictor's input and hidden activity, which its own gradients reuse."""
        net = self.net
        deltas: list[Tensor] = [net.output_unit.loss_grad(acts.logits, y)]
        at_sites: dict[int, tuple[Tensor, Tensor, Tensor, Tensor | None]] = {}
        for i in range(net.depth, 1, -1):
            from_above = net.layer(i).input_grad(deltas[-1])  # ∂L/∂u_{i−1} as the block above sees it
            below = net.layer(i - 1)
            if i - 1 in self.sites:  # predictors work per sample: ĝ ≈ B ∂L/∂h of the batch-mean cost L
                batch = from_above.shape[1]
                g_hat, phi, z = self.predict_gradient(self.sites.index(i - 1), acts.h[i - 1], y)
                at_sites[i - 1] = (g_hat, from_above * batch, phi, z)
                from_above = g_hat / batch
            deltas.append(below.unit.vjp(acts.a[i - 1], acts.h[i - 1], from_above))
        return deltas[::-1], at_sites

    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            deltas, _ = self.backward(acts, y)
            grads: list[Tensor] = []
            for i, delta in enumerate(deltas, start=1):
                grads.extend(self.net.layer(i).weight_grads(delta, acts.u[i - 1]))
        return grads, self.metrics(acts.logits, y)

    def step(self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",)) -> dict[str, Tensor]:
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            deltas, at_sites = self.backward(acts, y)
            exact = descent_directions(self.net, x, y, self.sample) if self.config.target == "true" else None
            grads = self.optimizer.grad_buffers()
            for i, delta in enumerate(deltas, start=1):
                self.net.layer(i).weight_grads(delta, acts.u[i - 1], out=pair(grads, i - 1))
            synthetic: list[Tensor] = []
            loss = acts.h[0].new_zeros(self.net.replicas)
            for k, i in enumerate(self.sites):
                g_hat, target, phi, z = at_sites[i]
                if exact is not None:
                    target = -exact[i - 1] * acts.h[i].shape[1]
                loss += (g_hat - target).square().sum(-1).mean(-1)
                synthetic += self.predictor_gradients(k, g_hat, target, phi, z)
            metrics = self.metrics(acts.logits, y)
            metrics["synthetic_loss"] = loss
            self.optimizer.step(grads)
            self.synthetic_optimizer.step(synthetic)
        return metrics

    # ---- diagnostics --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """Minus the gradient each hidden layer learns from: ``−ĝ_i`` at a predictor, inside a block the
        back-propagated ``−δ_{i+1} W_{i+1}``."""
        acts = self.net.activity(x, self.sample)
        deltas, at_sites = self.backward(acts, y)
        return [
            -at_sites[i][0] if i in at_sites else -self.net.layer(i + 1).input_grad(deltas[i])
            for i in range(1, self.net.depth)
        ]

    @torch.no_grad()
    def diagnostics(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``sg_error``: per predictor, its error against the exact gradient relative to that gradient,
        ``Σ||ĝ_i − B ∂L/∂h_i||² / Σ||B ∂L/∂h_i||²`` over the batch (0: perfect, 1: no better than predicting 0);
        NaN for layers without a predictor."""
        acts = self.net.activity(x, self.sample)
        exact = descent_directions(self.net, x, y, self.sample)
        cols = []
        for i in range(1, self.net.depth + 1):
            if i in self.sites:
                g_hat = self.predict_gradient(self.sites.index(i), acts.h[i], y)[0]
                true = -exact[i - 1] * acts.h[i].shape[1]
                cols.append((g_hat - true).square().sum((1, 2)) / true.square().sum((1, 2)))
            else:
                cols.append(x.new_full((self.net.replicas,), math.nan))
        return {"sg_error": torch.stack(cols, 1)}
