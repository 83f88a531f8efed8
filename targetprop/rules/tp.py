r"""Target propagation (Bengio 2014) with learned approximate inverses, and the machinery DTP shares.

Each layer receives a *target* ``ĥ_i`` instead of a gradient and trains on its layer-local loss; targets travel
down through learned inverses ``g_i ≈ f_i^{-1}``; the inverses are trained as noisy decoders. Per mini-batch:

1. forward ``h_i = f_i(h_{i−1})``;
2. first target ``ĥ_T = h_T − η̂ ∂L/∂h_T`` (see :meth:`TargetPropagation.first_target`; on the output layer,
   ``T = M``, the target, the inverse and the local loss use the pre-activation ``a_M`` in place of ``h_M``);
3. for ``i = T..2``: ``ĥ_{i−1}`` from ``ĥ_i`` (:meth:`TargetPropagation.propagate`: TP ``g_i(ĥ_i)``; DTP adds a correction);
4. inverses: SGD on ``L_i^inv = ||g_i(f_i(h_{i−1} + ε)) − (h_{i−1} + ε)||²``, ``ε ~ N(0, σ²)``, ``i = T..2``;
5. forward layers: SGD on ``L_i = ||ĥ_i − f_i(h_{i−1})||²`` with ``h_{i−1}`` held fixed, ``i = 1..T``.

Losses are sums over units and means over the batch. All gradients are computed in closed form per layer
(``δ = s'(a) ⊙ 2(h − ĥ)/B``, ``∂L_i/∂W_i = δᵀ u_{i−1}``), so no gradient can cross layers.

Where the first target sits (``first_target``):

- ``"last_hidden"`` (the DTP authors' code, "LeeDTP"): the output layer is trained directly on the cost, and
  ``T = M − 1``: ``ĥ_{M−1} = h_{M−1} − η̂ ∂L/∂h_{M−1}``, a gradient through the output layer only;
- ``"output"`` (the algorithm of the paper, with the top target on the output *pre-activation* as Meulemans et
  al. 2020 place it): ``T = M`` and the output layer is one more layer with a target, an inverse and a
  layer-local loss, all on ``a_M = W_M u_{M−1} + b_M``:

  - top target ``â_M = a_M − η̂ ∂L/∂a_M`` (softmax + cross-entropy and sigmoid + binary cross-entropy:
    ``∂L/∂a_M = (s(a_M) − t)/B``; linear + squared error: ``2(a_M − t)/B``);
  - layer-local loss ``L_M = ||â_M − a_M||²`` (sum over units, mean over the batch), ``δ_M = 2(a_M − â_M)/B``;
  - inverse ``g_M(a_M) = s̄_M(V_M a_M + c_M) ≈ h_{M−1}``, trained like the others on the corrupted
    ``h̃_{M−1} = h_{M−1} + ε``: ``||g_M(W_M t(h̃_{M−1}) + b_M) − h̃_{M−1}||²``;
  - next target (DTP) ``ĥ_{M−1} = h_{M−1} − g_M(a_M) + g_M(â_M)`` (TP: ``g_M(â_M)``).

  Why the pre-activation: with a softmax, ``∂L/∂h_M = −t/(B h_M)`` is unbounded as ``h_y → 0``, a target
  ``h_M − η̂ ∂L/∂h_M`` leaves the simplex (the layer cannot reach it, and its loss through the softmax Jacobian
  pulls mostly along directions the softmax flattens), and an inverse from the probabilities back to ``h_{M−1}``
  must undo the softmax's squashing and its loss of the shift; with a sigmoid, ``∂L/∂h_M = (h − t)/(B h(1 − h))``
  blows up where the unit saturates and the target leaves ``(0, 1)``. On ``a_M`` the step ``(s(a_M) − t)/B`` is
  bounded for both, every target is reachable, and the inverse sees the unsquashed values. For a linear output
  ``h_M = a_M``: the target, the loss and the inverse are exactly those of the paper's ``ĥ_M = h_M − η̂ ∂L/∂h_M``.

``∂L/∂h`` is the gradient of the *batch-mean* cost (as in the authors' code), so η̂ absorbs the 1/B factor.
With sign or step units the first target's gradient is taken with respect to the transmitted ``u_{M−1}``.

Schedules (``schedule``): ``"alternating"`` (authors' code) trains the inverses on every mini-batch of the epoch,
then the forward weights on every mini-batch; ``"parallel"`` does steps 1–5 on each mini-batch, reusing the one
forward pass, with the targets computed before the inverses change. This module is the algorithm, layer by layer and
mini-batch by mini-batch; :mod:`targetprop.rules.tp_fastpath` computes the inverses' training faster (stacked over
layers, chunked over the mini-batches of the alternating schedule's inverse pass), with the same numbers, and takes
over under the two ``if`` statements marked "fast path" below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import model_validator
from torch import Tensor
from torch.profiler import record_function

from targetprop.errors import ConfigError
from targetprop.nets import Activity, Layer, Network, linear, pair
from targetprop.optim import Optimizer, make_optimizer, per_replica
from targetprop.replicas import ReplicaRandom
from targetprop.rules.base import (
    NonNegativeScalar,
    OptionalScalar,
    Rule,
    RuleConfig,
    Scalar,
    as_tensor,
    per_replica_view,
)
from targetprop.rules.tp_fastpath import InverseFastPath
from targetprop.tasks import Task


class TargetPropConfig(RuleConfig):
    """Defaults: the DTP authors' settings for MNIST 784-240x7-10 tanh (``conti_dtp.py``)."""

    lr: Scalar = 0.01489
    """Learning rate of the forward weights."""
    lr_feedback: Scalar = 0.00501
    """Learning rate of the feedback (inverse) weights."""
    eta_hat: NonNegativeScalar = 0.3277
    """η̂, the step of the first target along −∂L/∂h."""
    noise: NonNegativeScalar = 0.36
    """σ of the Gaussian corruption used to train the inverses (one value, or one per replica)."""
    noise_decay: OptionalScalar = None
    """If set, σ at epoch e is ``noise / (1 + e / noise_decay)`` (the authors' discrete and stochastic runs; one
    value, or one per replica)."""
    schedule: Literal["alternating", "parallel"] = "alternating"
    """"alternating" (the authors' code: every inverse step of the epoch, then every forward step) or "parallel"
    (both on each mini-batch)."""
    first_target: Literal["last_hidden", "output"] = "last_hidden"
    """Where the first target sits: "last_hidden" (the authors' code) or "output" (the paper's algorithm, on the
    output pre-activation). "output" needs its own η̂ and learning rates: on the MNIST tanh net see the method
    dtp-output-target of `targetprop reproduce mnist-tanh`."""
    feedback_optimizer: str | None = None
    """Optimizer of the feedback weights (default: the same as ``optimizer``)."""
    feedback_optimizer_args: dict[str, float] | None = None
    """Options of the feedback optimizer (default: the same as ``optimizer_args``)."""

    resumable: ClassVar[tuple[str, ...]] = (*RuleConfig.resumable, "lr_feedback", "eta_hat", "noise", "noise_decay")

    @model_validator(mode="after")
    def _feedback_defaults(self) -> TargetPropConfig:
        if self.feedback_optimizer is None:
            self.feedback_optimizer = self.optimizer
        if self.feedback_optimizer_args is None:
            self.feedback_optimizer_args = dict(self.optimizer_args)
        return self


class TargetPropagation(Rule):
    """Shared machinery of TP and DTP; subclasses define :meth:`propagate`."""

    Config = TargetPropConfig
    config: TargetPropConfig

    def __init__(self, net: Network, config: TargetPropConfig, noise: ReplicaRandom, task: Task | None = None):
        super().__init__(net, config, noise, task)
        self.top = net.depth if config.first_target == "output" else net.depth - 1
        if self.top < 1:
            raise ConfigError(f"{self.name} needs at least one hidden layer; give an architecture such as 64-100-10")
        missing = [i for i in range(2, self.top + 1) if not net.layer(i).has_feedback]
        if missing:
            raise ValueError(
                f"layers {missing} have no feedback map; build the network with feedback={self.feedback_maps(config)!r}"
            )
        self.eta_hat = as_tensor(config.eta_hat, net)
        fb_params = net.feedback_parameters()
        self.feedback_optimizer: Optimizer | None = None
        if fb_params:
            self.feedback_optimizer = self.state.add_optimizer(
                "feedback",
                make_optimizer(
                    config.feedback_optimizer or config.optimizer,
                    fb_params,
                    config.lr_feedback,
                    config.feedback_optimizer_args,
                ),
            )
        self._sigma: tuple[int, float | Tensor] | None = None
        self.fast = InverseFastPath(self)
        """Where the inverses' training is stacked over layers and chunked over mini-batches (:mod:`.tp_fastpath`)."""

    @classmethod
    def feedback_maps(cls, config: RuleConfig) -> str:
        return "all" if getattr(config, "first_target", "last_hidden") == "output" else "hidden"

    def schedule(self) -> list[tuple[str, ...]]:
        if self.top < 2:  # no inverse to train
            return [("forward",)]
        if self.config.schedule == "alternating":
            return [("feedback",), ("forward",)]
        return [("feedback", "forward")]

    @property
    def sigma(self) -> float | Tensor:
        """The corruption σ of the current epoch (:meth:`sigma_at`), computed at its first mini-batch and kept with
        the epoch it belongs to (a restored state moves the epoch, and σ with it)."""
        if self._sigma is None or self._sigma[0] != self.epoch:
            self._sigma = (self.epoch, self.sigma_at(self.epoch))
        return self._sigma[1]

    def sigma_at(self, epoch: int) -> float | Tensor:
        """``noise``, or ``noise / (1 + epoch / noise_decay)``: a float when every replica has the same (nothing to
        copy to the device), else an ``(R,)`` tensor on the network's device (worked in float64, then rounded to
        the network's dtype once)."""
        c = self.config
        if not isinstance(c.noise, list) and not isinstance(c.noise_decay, list):
            return c.noise if c.noise_decay is None else c.noise / (1.0 + epoch / c.noise_decay)
        weight = self.net.layers[0].weight
        wide = weight.new_empty(0, dtype=torch.float64)
        sigma = per_replica(c.noise, self.net.replicas, wide)
        if c.noise_decay is not None:
            sigma = sigma / (1.0 + epoch / per_replica(c.noise_decay, self.net.replicas, wide))
        return sigma.to(weight.dtype)

    # ---- targets -------------------------------------------------------------------------------------------

    def target_site(self, acts: Activity, i: int) -> Tensor:
        """What layer i's target sits on and its inverse reads: ``h_i`` for a hidden layer, the pre-activation
        ``a_M`` for the output layer (``first_target = "output"``)."""
        return acts.a[i] if i == self.net.depth else acts.h[i]

    def first_target(self, acts: Activity, y: Tensor) -> Tensor:
        """The first target, with ``L`` the batch-mean cost:

        - ``"last_hidden"``: ``ĥ_{M−1} = h_{M−1} − η̂ ∂L/∂u_{M−1}``, ``∂L/∂u_{M−1} = (∂L/∂a_M) W_M``;
        - ``"output"``: ``â_M = a_M − η̂ ∂L/∂a_M``, on the output pre-activation (``∂L/∂a_M``:
          :meth:`~targetprop.units.OutputUnit.loss_grad`, e.g. ``(softmax(a_M) − onehot(y))/B``).
        """
        out = self.net.output_unit
        a_m = acts.a[-1]
        if self.top == self.net.depth:
            grad = out.loss_grad(a_m, y)
        else:  # gradient through the output layer only: ∂L/∂u_{M−1} = (∂L/∂a_M) W_M
            grad = self.net.layer(self.net.depth).input_grad(out.loss_grad(a_m, y))
        h = self.target_site(acts, self.top)
        return h - per_replica_view(self.eta_hat, h) * grad

    def propagate(self, layer: Layer, h_below: Tensor, h: Tensor, target: Tensor) -> Tensor:
        """Target of layer i−1 from the target ``ĥ_i`` of layer i (``layer`` is layer i; ``h`` and ``target``
        are the output pre-activation ``a_M`` and ``â_M`` when layer i is the output layer)."""
        raise NotImplementedError

    def targets(self, acts: Activity, y: Tensor) -> dict[int, Tensor]:
        """``{i: ĥ_i}`` for the layers ``i = 1..T`` that train on a layer-local loss; with
        ``first_target = "output"``, ``{M: â_M}`` is the target of the output pre-activation (see :meth:`target_site`)."""
        targets = {self.top: self.first_target(acts, y)}
        for i in range(self.top, 1, -1):
            targets[i - 1] = self.propagate(self.net.layer(i), acts.h[i - 1], self.target_site(acts, i), targets[i])
        return targets

    # ---- diagnostics ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``ĥ_i − h_i`` for the hidden layers ``i = 1..M−1``: where the targets move the activity."""
        acts = self.net.activity(x, self.sample)
        targets = self.targets(acts, y)
        return [targets[i] - acts.h[i] for i in range(1, self.net.depth)]

    def diagnostics(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``inverse_error``: each inverse's reconstruction error on the clean activity (:func:`inverse_errors`)."""
        return {"inverse_error": inverse_errors(self.net, x)}

    # ---- forward weights -----------------------------------------------------------------------------------

    def local_gradients(
        self, acts: Activity, y: Tensor, targets: dict[int, Tensor], out: Sequence[Tensor] | None = None
    ) -> list[Tensor]:
        """Gradients of each layer's own loss with respect to its own ``W_i, b_i`` only.

        Layers ``i ≤ T``: ``L_i = (1/B) Σ_b ||ĥ_i − s_i(W_i u_{i−1} + b_i)||²``, ``u_{i−1}`` held fixed, so
        ``δ_i = s_i'(a_i) ⊙ 2(h_i − ĥ_i)/B``, ``∂L_i/∂W_i = δ_iᵀ u_{i−1}``, ``∂L_i/∂b_i = Σ_b δ_i``.
        The output layer when ``T = M − 1``: ``δ_M = ∂L/∂a_M`` of the cost itself; when ``T = M``:
        ``L_M = (1/B) Σ_b ||â_M − (W_M u_{M−1} + b_M)||²`` on the pre-activation, ``δ_M = 2(a_M − â_M)/B``.
        With ``out`` (the optimiser's gradient buffers) the gradients are written there.
        """
        grads: list[Tensor] = []
        for i, layer in enumerate(self.net.layers, start=1):
            a, h = acts.a[i], acts.h[i]
            if i == self.top == self.net.depth:
                delta = torch.sub(a, targets[i]).mul_(2.0 / a.shape[1])
            elif i <= self.top:
                delta = layer.unit.vjp(a, h, torch.sub(h, targets[i]).mul_(2.0 / h.shape[1]))
            else:
                delta = self.net.output_unit.loss_grad(a, y)
            grads.extend(layer.weight_grads(delta, acts.u[i - 1], out=pair(out, i - 1)))
        return grads

    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        with torch.no_grad():
            acts = self.net.activity(x, self.sample)
            targets = self.targets(acts, y)
            grads = self.local_gradients(acts, y, targets)
            loss = self.net.output_unit.loss(acts.logits, y)
        return grads, self.metrics(acts.logits, y, loss)

    # ---- inverses ------------------------------------------------------------------------------------------
    #
    # L_i^inv splits in two: the corrupted input h̃_{i−1} = h_{i−1} + ε and the code d_i(f_i(h̃_{i−1})) depend on
    # the forward weights only (:meth:`corrupt`); the reconstruction and the gradients depend on V_i, c_i
    # (:meth:`inverse_gradients_at`). The alternating schedule freezes the forward weights for its whole inverse
    # pass, so its fast path computes the first part for many mini-batches at once, and square layers of one width
    # train their inverses as one batched product (:mod:`targetprop.rules.tp_fastpath`; the two `if`s below).

    def inverse_layers(self) -> list[tuple[int, Layer]]:
        """``(i, layer i)`` for the layers whose inverse ``g_i`` trains: ``i = 2..T``."""
        return [(i, self.net.layer(i)) for i in range(2, self.top + 1)]

    def corruption(self, rows: Sequence[int], dtype: torch.dtype) -> Tensor:
        """``ε ~ N(0, σ²)`` of shape ``(R, Σ rows, Σ_i n_{i−1})``, drawn mini-batch by mini-batch (``rows`` are
        their sizes) from each replica's training stream: the numbers one draw per mini-batch gives."""
        width = sum(layer.n_in for _, layer in self.inverse_layers())
        eps, sigma = self.noise.normal_rows(rows, width, dtype=dtype), self.sigma
        return eps.mul_(sigma if isinstance(sigma, float) else per_replica_view(sigma.to(dtype), eps))

    def corrupt(self, acts: Activity, eps: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``h̃_{i−1} = h_{i−1} + ε`` and the feedback input ``d_i(f_i(h̃_{i−1}))``, ``i = 2..T``, both computed with
        the forward weights only; for the output layer (``T = M``) the feedback input is the pre-activation
        ``W_M t(h̃_{M−1}) + b_M``, what :meth:`target_site` gives ``g_M``. One tensor per layer."""
        layers = self.inverse_layers()
        h_tildes, fb_ins = [], []
        for (i, layer), e in zip(layers, eps.split([layer.n_in for _, layer in layers], dim=-1), strict=True):
            h_tilde = acts.h[i - 1] + e
            u_tilde = self.net.layer(i - 1).transmit(h_tilde, self.sample)
            h_tildes.append(h_tilde)
            if layer.is_output:  # g_M reads the pre-activation a_M
                fb_ins.append(layer.preactivation(u_tilde))
                continue
            fh = layer(u_tilde)
            fb_ins.append(layer.feedback_input(fh))
        return h_tildes, fb_ins

    def inverse_gradients_at(
        self, h_tilde: list[Tensor], fb_in: list[Tensor], out: Sequence[Tensor] | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Gradients of ``L_i^inv = (1/B) Σ_b ||g_i(f_i(h_{i−1} + ε)) − (h_{i−1} + ε)||²`` for ``V_i, c_i``,
        ``i = 2..T``, with ``f_i`` and the corrupted input held fixed; also ``Σ_i L_i^inv`` per replica. Takes what
        :meth:`corrupt` gives (the rows of one mini-batch). With ``out`` the gradients are written there.

        ``z = V_i d_i(f_i(h̃)) + c_i``, ``δ = s̄'(z) ⊙ 2(s̄(z) − h̃)/B``, ``∂/∂V_i = δᵀ d_i(f_i(h̃))``, ``∂/∂c_i = Σ_b δ``.
        """
        batch = fb_in[0].shape[1]
        grads: list[Tensor] = []
        total = torch.zeros(self.net.replicas, dtype=fb_in[0].dtype, device=fb_in[0].device)
        for k, ((_, layer), h_t, code) in enumerate(zip(self.inverse_layers(), h_tilde, fb_in, strict=True)):
            z = linear(code, layer.fb_weight, layer.fb_bias)
            rec = layer.feedback_unit(z)  # type: ignore[misc]
            diff = rec - h_t
            total += diff.pow(2).sum(-1).mean(-1)
            delta = layer.feedback_unit.vjp(z, rec, diff * (2.0 / batch))  # type: ignore[union-attr]
            grads.extend(layer.feedback_grads(delta, code, out=pair(out, k)))
        return grads, total

    def inverse_gradients(self, acts: Activity, out: Sequence[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """:meth:`inverse_gradients_at` on a fresh corruption of the mini-batch ``acts``."""
        eps = self.corruption([acts.h[0].shape[1]], acts.h[0].dtype)
        if out is not None and self.fast.stackable():  # fast path: every layer in one batched product
            return self.fast.inverse_gradients_at(*self.fast.corrupt(acts, eps))
        return self.inverse_gradients_at(*self.corrupt(acts, eps), out=out)

    def train_pass(
        self, batches: Iterable[tuple[Tensor, Tensor]], phases: Sequence[str]
    ) -> Iterator[dict[str, Tensor]]:
        """As :meth:`Rule.train_pass`: :meth:`step` on each mini-batch."""
        if self.fast.chunkable(phases):  # fast path: the inverses alone, their frozen forward work chunked
            yield from self.fast.inverse_pass(batches)
        else:
            yield from super().train_pass(batches, phases)

    def compile(self, mode: str = "default") -> None:
        """As :meth:`Rule.compile`, and the two parts of a chunked inverse pass too."""
        super().compile(mode)
        self.fast.compile(mode)

    # ---- one step ------------------------------------------------------------------------------------------

    def step(self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",)) -> dict[str, Tensor]:
        # record_function labels name the parts of a step in a profile (benchmarks/profile_dtp.py)
        with torch.no_grad():
            with record_function("tp:forward pass"):
                # the inverses alone need activity only up to layer T − 1
                depth = None if "forward" in phases else self.top - 1
                acts = self.net.activity(x, self.sample, depth=depth)
            metrics: dict[str, Tensor] = {}
            grads = None
            if "forward" in phases:  # targets first, with the inverses as they were before this batch
                with record_function("tp:targets"):
                    targets = self.targets(acts, y)
                with record_function("tp:layer-local gradients"):
                    grads = self.local_gradients(acts, y, targets, out=self.optimizer.grad_buffers())
                    metrics = self.metrics(acts.logits, y)
            if "feedback" in phases and self.feedback_optimizer is not None:
                with record_function("tp:inverse gradients"):
                    fb_out = self.feedback_optimizer.grad_buffers()
                    fb_grads, metrics["inverse_loss"] = self.inverse_gradients(acts, out=fb_out)
                with record_function("tp:inverse optimizer step"):
                    self.feedback_optimizer.step(fb_grads)
            if grads is not None:
                with record_function("tp:forward optimizer step"):
                    self.optimizer.step(grads)
        return metrics


class TP(TargetPropagation):
    """Target propagation: ``ĥ_{i−1} = g_i(ĥ_i)``."""

    name = "tp"

    def propagate(self, layer: Layer, h_below: Tensor, h: Tensor, target: Tensor) -> Tensor:
        """``ĥ_{i−1} = g_i(ĥ_i)``."""
        return layer.inverse(target)


@torch.no_grad()
def inverse_errors(net: Network, x: Tensor) -> Tensor:
    """``(R, M)``: reconstruction error ``(1/B) Σ_b ||g_i(f_i(h_{i−1})) − h_{i−1}||²`` of each layer's inverse on
    the clean activity (an output layer's inverse reads the pre-activation ``a_M``); NaN where none."""
    acts = net.activity(x, torch.rand_like)
    cols = []
    for i, layer in enumerate(net.layers, start=1):
        if layer.has_feedback:
            state = acts.a[i] if layer.is_output else acts.h[i]
            cols.append((layer.inverse(state) - acts.h[i - 1]).pow(2).sum(-1).mean(-1))
        else:
            cols.append(torch.full((net.replicas,), math.nan, dtype=acts.h[0].dtype, device=acts.h[0].device))
    return torch.stack(cols, dim=1)
