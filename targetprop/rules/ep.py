"""Equilibrium propagation (Scellier & Bengio, Frontiers in Computational Neuroscience 2017; arXiv 1602.05179).

The network is a layered *energy-based* model: the forward weights ``W_i`` of :class:`~targetprop.nets.Network` are
the symmetric couplings between layers ``i−1`` and ``i``, ``b_i`` the biases, the input ``s_0 = x`` is clamped, and
every other layer ``i = 1..M`` (the output layer included) holds a state ``s_i`` with the hard sigmoid
``ρ(s) = clip(s, 0, 1)`` as its rate. The energy (BRIEF.md's, restricted to a layered net) and the cost::

    E(s) = ½ Σ_{i≥1} ||s_i||² − Σ_{i≥1} ρ(s_i)ᵀ W_i ρ(s_{i−1}) − Σ_{i≥1} b_iᵀ ρ(s_i)
    C(s) = ½ ||s_M − t||²                   (t: the one-hot code of the label)
    F(s) = E(s) + β C(s)

**Dynamics** (the authors' code: every layer moves at once, from the previous states, and is clipped)::

    R_i(s) = b_i + W_i ρ(s_{i−1}) + W_{i+1}ᵀ ρ(s_{i+1})          (no W_{M+1} term for the output layer)
    s_i   ← clip(s_i + ε (R_i(s) − s_i), 0, 1)                   i = 1..M−1
    s_M   ← clip(s_M + ε (R_M(s) − s_M + β (t − s_M)), 0, 1)

This is ``s ← clip(s − ε ∂F/∂s)`` as the code computes it: its energy has ``½||ρ(s_i)||²`` where we write
``½||s_i||²``, and Theano's ``clip`` passes the gradient on the closed interval, so on states that stay in
``[0, 1]`` both read ``ρ'(s) = 1`` and ``∂E/∂s_i = s_i − R_i(s)``. The states never leave ``[0, 1]``, where
``ρ(s) = s``: the code below uses ``s`` for ``ρ(s)``, and ``ρ(x)`` for the clamped input.

**One training step** on a mini-batch:

1. free phase (``β = 0``): ``free_steps`` iterations from ``s = 0`` (or from each example's persistent state,
   ``persistent = true``, as in the authors' code; the free fixed point is stored back), giving ``s⁰``;
2. nudged phase: ``nudged_steps`` iterations from ``s⁰`` with ``β`` (its sign drawn at random per mini-batch and
   replica with ``random_sign``, as in the authors' code), giving ``s^β``;
3. ``ΔW_i = α_i (ρ(s^β_i) ρ(s^β_{i−1})ᵀ − ρ(s⁰_i) ρ(s⁰_{i−1})ᵀ) / β``, ``Δb_i = α_i (ρ(s^β_i) − ρ(s⁰_i)) / β``
   (means over the mini-batch), with ``α_i = lr · layer_lr[i]``: the optimiser (``sgd`` by default, as the
   authors) descends ``−ΔW_i / lr``.

As ``β → 0`` (and with relaxed phases) ``ΔW_i / α_i → −∂C(s⁰)/∂W_i``, the gradient of the cost at the free fixed
point (:meth:`EquilibriumPropagation.exact_updates` computes it by implicit differentiation; tests/test_ep.py
checks both against finite differences).

**The authors' code against the paper** (``bscellier/Towards-a-Biologically-Plausible-Backprop``): its cost is
``||s_M − t||²`` without the ½, so its ``β = 0.5`` nudges as our ``β = 1`` (the paper's value), and its update
divides by its own ``β``: its learning rates ``[0.1, 0.05]`` are ``layer_lr = [0.2, 0.1]`` here. The defaults are
the code's 784-500-10 settings in our units: ``β = 1`` with a random sign, ``ε = 0.5``, 20 + 4 iterations,
batch 20 (the run's key), Glorot initialisation (the run's key); its persistent states are off by default (they
hold R × examples × units numbers) and on in the preset ``ep-mnist``.

**Prediction** is read at the free fixed point: :meth:`EquilibriumPropagation.predict` relaxes ``eval_steps``
iterations from ``s = 0`` and returns ``s_M``, which the trainer's evaluation scores (the network needs a
``linear`` output unit: its cost ``Σ(s_M − t)²`` is EP's ``2C``).

Everything is batched over replicas (``W_i`` is ``(R, n_i, n_{i−1})``, states ``(R, B, n_i)``), closed form
(no autograd in a step) and free of host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from targetprop.errors import ConfigError
from targetprop.nets import Network, linear, pair
from targetprop.optim import per_replica
from targetprop.replicas import ReplicaRandom
from targetprop.rules.base import PositiveFloat, Rule, RuleConfig, Scalar, as_tensor, per_replica_view
from targetprop.tasks import Task
from targetprop.units import Noise

PositiveInt = Annotated[int, Field(ge=1, le=100_000)]


class EPConfig(RuleConfig):
    """Defaults: the authors' 784-500-10 settings (``train_model.py``, ``net1``) in this module's units, but for the
    persistent states (off; the preset ``ep-mnist`` turns them on)."""

    lr: Scalar = 1.0
    """Factor of every layer's learning rate (one value, or one per replica); layer i learns at lr · layer_lr[i]."""
    optimizer: str = "sgd"
    """sgd (the authors'), momentum, rmsprop, adam or centered_rmsprop."""
    layer_lr: Annotated[list[PositiveFloat], Field(min_length=1)] = [0.2, 0.1]  # noqa: RUF012 (pydantic copies it)
    """Learning rate of each layer W_1..W_M (the authors' [0.1, 0.05] with their cost without ½); one value for all."""
    beta: Scalar = 1.0
    """β, the strength of the nudge towards the target in the second phase (one value, or one per replica)."""
    random_sign: bool = True
    """Draw the sign of β at random for each mini-batch (and replica), as the authors' code does."""
    epsilon: float = Field(0.5, gt=0, le=1, allow_inf_nan=False)
    """ε, the step of the leaky-integrator dynamics s ← clip(s + ε(R(s) − s))."""
    free_steps: PositiveInt = 20
    """Iterations of the free phase (β = 0)."""
    nudged_steps: PositiveInt = 4
    """Iterations of the nudged phase, from the free phase's states."""
    eval_steps: PositiveInt = 100
    """Iterations of the free phase from s = 0 when the trained network predicts (evaluation)."""
    persistent: bool = False
    """Keep each training example's free-phase states and start its next free phase from them (the authors'
    persistent particles); they are saved with the run (R x examples x units numbers)."""

    resumable: ClassVar[tuple[str, ...]] = (
        *RuleConfig.resumable,
        "layer_lr",
        "beta",
        "random_sign",
        "nudged_steps",
        "eval_steps",
    )

    @model_validator(mode="after")
    def _layer_rates(self) -> EPConfig:
        if len(set(self.layer_lr)) > 1 and self.optimizer not in ("sgd", "momentum"):
            raise ConfigError(
                f"ep.layer_lr scales each layer's update, and {self.optimizer} normalises that scale away: use "
                "optimizer sgd or momentum, or one layer_lr for every layer (and lr to set the rate)"
            )
        return self


class EquilibriumPropagation(Rule):
    """Equilibrium propagation: relax freely, nudge the output towards the target, contrast the two equilibria."""

    name = "ep"
    Config = EPConfig
    config: EPConfig
    run_defaults: ClassVar[dict[str, Any]] = {"activation": "hardsigmoid", "output": "linear"}
    """ρ(s) = clip(s, 0, 1), and the output state read against the one-hot target by squared error."""

    def __init__(self, net: Network, config: EPConfig, noise: ReplicaRandom, task: Task | None = None):
        super().__init__(net, config, noise, task)
        wrong = [i for i, layer in enumerate(net.layers[:-1], start=1) if layer.unit.name != "hardsigmoid"]
        problems, fixes = [], []
        if wrong:  # ρ(s) = clip(s, 0, 1)
            problems.append(f"hidden layer(s) {wrong} are {net.layers[wrong[0] - 1].unit.name}")
            fixes.append("--activation hardsigmoid")
        if net.output_name != "linear":  # s_M is read against the one-hot target by squared error
            problems.append(f"the output is {net.output_name}")
            fixes.append("--output linear")
        if problems:
            raise ConfigError(
                "ep relaxes hard-sigmoid units ρ(s) = clip(s, 0, 1) and reads its output state against the one-hot "
                f"target by squared error; {' and '.join(problems)}: use {' '.join(fixes)}"
            )
        if len(config.layer_lr) not in (1, net.depth):
            one_hidden = f"{net.sizes[0]}-{net.sizes[1]}-{net.sizes[-1]}"
            raise ConfigError(
                f"ep.layer_lr has {len(config.layer_lr)} values for {net.depth} layers (the defaults are the authors' "
                f"for one hidden layer): train such a net, e.g. --arch {one_hidden}, or give one rate, or one per "
                f"layer, e.g. --set 'ep.layer_lr=[{', '.join(['0.1'] * net.depth)}]'"
            )
        ref = net.layers[0].weight
        rates = config.layer_lr * net.depth if len(config.layer_lr) == 1 else config.layer_lr
        self.layer_lr = [per_replica(rate, net.replicas, ref.detach()) for rate in rates]
        self.beta = as_tensor(config.beta, net)
        self.indexed = config.persistent
        self.particles: list[Tensor] | None = None

    # ---- the trainer's hook for persistent states ------------------------------------------------------------

    def bind_examples(self, n: int) -> None:
        """Allocate the persistent states, ``(R, n, n_i)`` per layer ``i = 1..M``, zero (the authors' start), and
        carry them in the rule's state (saved and restored with it)."""
        if not self.config.persistent:
            return
        ref = self.net.layers[0].weight.detach()
        sizes = [layer.n_out for layer in self.net.layers]
        self.particles = self.state.add(  # type: ignore[assignment]
            "particles", [ref.new_zeros(self.net.replicas, n, size) for size in sizes]
        )

    # ---- the dynamics --------------------------------------------------------------------------------------

    def _batched(self, x: Tensor) -> Tensor:
        return x.unsqueeze(0).expand(self.net.replicas, -1, -1) if x.dim() == 2 else x

    def zero_states(self, x: Tensor) -> list[Tensor]:
        """``s_i = 0`` for ``i = 1..M``, ``(R, B, n_i)`` each."""
        r, b = self.net.replicas, x.shape[-2]
        return [x.new_zeros(r, b, layer.n_out) for layer in self.net.layers]

    def input_drive(self, x: Tensor) -> Tensor:
        """``b_1 + W_1 ρ(x)``: what the clamped input gives layer 1, the same at every iteration."""
        layer = self.net.layers[0]
        return linear(self._batched(x).clamp(0.0, 1.0), layer.weight, layer.bias)

    def iterate(
        self,
        drive: Tensor,
        states: list[Tensor],
        steps: int,
        beta: Tensor | None = None,
        target: Tensor | None = None,
    ) -> list[Tensor]:
        """``steps`` iterations of ``s_i ← clip(s_i + ε (R_i(s) − s_i), 0, 1)`` for every layer at once (the
        nudge ``β (t − s_M)`` added to ``R_M`` when ``beta`` ``(R,)`` and ``target`` ``(R, B, n_M)`` are given).
        ``drive`` is :meth:`input_drive`. Returns new tensors; ``states`` is not changed."""
        eps, layers, m = self.config.epsilon, self.net.layers, len(states)
        beta_view = None if beta is None else per_replica_view(beta, states[-1])
        for _ in range(steps):
            new = []
            for i in range(m):  # layer i + 1 in the paper's numbering
                r = drive if i == 0 else linear(states[i - 1], layers[i].weight, layers[i].bias)
                if i + 1 < m:  # top-down: + W_{i+1}ᵀ ρ(s_{i+1}), as rows s_{i+1} W_{i+1}
                    r = _add_matmul(r, states[i + 1], layers[i + 1].weight)
                if i + 1 == m and beta_view is not None:
                    assert target is not None
                    r = r + beta_view * (target - states[i])
                new.append(torch.lerp(states[i], r, eps).clamp_(0.0, 1.0))
            states = new
        return states

    def free_phase(self, x: Tensor, steps: int, states: list[Tensor] | None = None) -> list[Tensor]:
        """``[s⁰_1, ..., s⁰_M]`` after ``steps`` free iterations from ``states`` (default ``0``)."""
        states = self.zero_states(x) if states is None else states
        return self.iterate(self.input_drive(x), states, steps)

    def target(self, y: Tensor, like: Tensor) -> Tensor:
        """``t``: the one-hot code of class indices (or dense targets as they are), shaped like ``s_M``."""
        return self.net.output_unit._one_hot(like, y)

    def energy(self, x: Tensor, states: Sequence[Tensor]) -> Tensor:
        """``E(s)`` per example, ``(R, B)``, with ``ρ = clip(·, 0, 1)`` applied as written (differentiable: the
        tests take ``∂E/∂s`` by autograd)."""
        rho = [self._batched(x).clamp(0.0, 1.0), *(s.clamp(0.0, 1.0) for s in states)]
        total = sum(0.5 * (s * s).sum(-1) for s in states)
        for i, layer in enumerate(self.net.layers, start=1):
            total = total - (linear(rho[i - 1], layer.weight, layer.bias) * rho[i]).sum(-1)
        return total  # type: ignore[return-value]

    # ---- the update ----------------------------------------------------------------------------------------

    def signed_beta(self) -> Tensor:
        """``β`` per replica, with a random sign from each replica's training stream when ``random_sign``."""
        if not self.config.random_sign:
            return self.beta
        flip = self.noise.uniform_like(self.beta) < 0.5
        return torch.where(flip, -self.beta, self.beta)

    def contrast(
        self, x: Tensor, free: list[Tensor], nudged: list[Tensor], beta: Tensor, out: Sequence[Tensor] | None = None
    ) -> list[Tensor]:
        """The descent directions ``−ΔW_i / lr``, ``−Δb_i / lr`` (see the module's step 3), in the order of
        ``net.forward_parameters()`` (written into ``out`` if given)::

            ∂W_i = layer_lr_i (ρ(s⁰_i)ᵀ ρ(s⁰_{i−1}) − ρ(s^β_i)ᵀ ρ(s^β_{i−1})) / (β B)
            ∂b_i = layer_lr_i Σ_b (ρ(s⁰_i) − ρ(s^β_i)) / (β B)

        as one product per layer: ``δ = [s⁰_i, −s^β_i] c``, ``u = [s⁰_{i−1}, s^β_{i−1}]`` stacked along the batch,
        ``∂W_i = δᵀ u``, ``∂b_i = Σ_b δ``; for layer 1 the input is the same in both phases, ``δ = (s⁰_1 − s^β_1) c``,
        ``u = ρ(x)``."""
        batch = x.shape[-2]
        grads: list[Tensor] = []
        for i in range(self.net.depth):
            c = per_replica_view(self.layer_lr[i] / (beta * batch), free[i])
            if i == 0:
                delta, u = (free[0] - nudged[0]).mul_(c), self._batched(x).clamp(0.0, 1.0)
            else:
                delta = torch.cat([free[i], -nudged[i]], dim=1).mul_(c)
                u = torch.cat([free[i - 1], nudged[i - 1]], dim=1)
            grads.extend(self.net.layers[i].weight_grads(delta, u, out=pair(out, i)))
        return grads

    def phases(
        self, x: Tensor, y: Tensor, beta: Tensor, start: list[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The free and the nudged states of a batch, and the target ``t``."""
        drive = self.input_drive(x)
        free = self.iterate(drive, self.zero_states(x) if start is None else start, self.config.free_steps)
        t = self.target(y, free[-1])
        nudged = self.iterate(drive, free, self.config.nudged_steps, beta, t)
        return free, nudged, t

    @torch.no_grad()
    def forward_updates(
        self, x: Tensor, y: Tensor, index: Tensor | None = None, out: Sequence[Tensor] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Both phases and the contrast (from the persistent states of the examples ``index`` ``(R, B)`` if given,
        else from ``s = 0``); metrics at the free fixed point. Changes nothing (draws β's sign)."""
        start = self._gather(index) if index is not None else None
        beta = self.signed_beta()
        free, nudged, _ = self.phases(x, y, beta, start)
        grads = self.contrast(x, free, nudged, beta, out)
        return grads, self.metrics(free[-1], y)

    @torch.no_grad()
    def step(
        self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",), index: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Train on one mini-batch; with persistent states, ``index`` ``(R, B)`` names its examples."""
        start = self._gather(index) if index is not None and self.particles is not None else None
        beta = self.signed_beta()
        free, nudged, _ = self.phases(x, y, beta, start)
        if index is not None and self.particles is not None:
            self._scatter(index, free)
        grads = self.contrast(x, free, nudged, beta, out=self.optimizer.grad_buffers())
        metrics = self.metrics(free[-1], y)
        self.optimizer.step(grads)
        return metrics

    def train_pass(self, batches: Iterable[tuple[Tensor, ...]], phases: Sequence[str]) -> Iterator[dict[str, Tensor]]:
        """``step`` on each mini-batch; the trainer hands ``(x, y, index)`` when ``indexed`` (persistent states)."""
        for x, y, *index in batches:
            yield self.step(x, y, phases, index[0] if index else None)

    def _gather(self, index: Tensor) -> list[Tensor]:
        assert self.particles is not None, "no persistent states: set ep.persistent = true and bind_examples(n)"
        return [p.gather(1, index.unsqueeze(-1).expand(-1, -1, p.shape[-1])) for p in self.particles]

    def _scatter(self, index: Tensor, states: list[Tensor]) -> None:
        assert self.particles is not None
        for p, s in zip(self.particles, states, strict=True):
            p.scatter_(1, index.unsqueeze(-1).expand(-1, -1, p.shape[-1]), s)

    # ---- prediction ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: Tensor, noise: Noise | None = None, samples: int = 1) -> Tensor:
        """``s⁰_M``, the output state at the free fixed point: ``eval_steps`` free iterations from ``s = 0``."""
        return self.free_phase(x, self.config.eval_steps)[-1]

    # ---- diagnostics: EP against the gradient of the cost at the free fixed point ----------------------------

    @torch.no_grad()
    def signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``(s^β_i − s⁰_i) / β`` for the hidden layers, with ``β > 0`` (no random sign) and the rule's own phases
        from ``s = 0``: where the nudge moves each layer (``→ −∂C/∂b_i`` as ``β → 0``, see :meth:`exact_signal`)."""
        free, nudged, _ = self.phases(x, y, self.beta)
        beta = per_replica_view(self.beta, free[0])
        return [(n - f) / beta for f, n in zip(free[:-1], nudged[:-1], strict=True)]

    @torch.no_grad()
    def relax(
        self,
        x: Tensor,
        tol: float = 1e-6,
        max_steps: int = 5000,
        states: list[Tensor] | None = None,
        beta: Tensor | None = None,
        target: Tensor | None = None,
    ) -> tuple[list[Tensor], int]:
        """Iterate the dynamics (free, or nudged with ``beta`` and ``target``) from ``states`` (default ``0``) in blocks
        of 50 iterations until no state moves by more than ``tol`` over a block's last iteration, or ``max_steps``;
        returns the states and the number of iterations. Synchronises with the host once per block: for diagnostics
        and experiments, not for training."""
        drive = self.input_drive(x)
        states = self.zero_states(x) if states is None else states
        done = 0
        while done < max_steps:
            before = self.iterate(drive, states, 49, beta, target)
            states = self.iterate(drive, before, 1, beta, target)
            done += 50
            if max(float((a - b).abs().max()) for a, b in zip(states, before, strict=True)) <= tol:
                break
        return states, done

    @torch.no_grad()
    def fixed_point(self, x: Tensor, tol: float = 1e-6, max_steps: int = 5000) -> list[Tensor]:
        """The free fixed point ``s⁰`` from ``s = 0`` (:meth:`relax` with ``β = 0``)."""
        return self.relax(x, tol, max_steps)[0]

    @torch.no_grad()
    def adjoint(self, free: list[Tensor], t: Tensor, tol: float = 1e-9, max_steps: int = 20000) -> list[Tensor]:
        """``λ = ∂C̄/∂b``, the gradient of the batch-mean cost ``C̄ = (1/B) Σ_b ½||s⁰_M − t||²`` at the free fixed
        point ``free`` with respect to a current injected into each unit (its bias), by the implicit-function
        theorem: with ``P`` the units that are not clipped (``0 < s < 1``) and ``A`` the couplings
        (``(A s)_i = W_i s_{i−1} + W_{i+1}ᵀ s_{i+1}``), ``s⁰ = P(b + A s⁰ + W_1 ρ(x))`` on the free units, so

            λ = P (I − P A P)^{-1} P ∂C̄/∂s,        ∂C̄/∂s_M = (s⁰_M − t)/B.

        ``I − PAP`` is symmetric, and positive definite on the free units where the fixed point is stable, so the
        system is solved by conjugate gradients (:func:`_conjugate_gradients`), one system per replica and example,
        until each residual is below ``tol`` times its right-hand side (at least a few float epsilons). Should a
        system turn out not to be positive definite, :meth:`adjoint_by_relaxation` solves them all instead."""
        mask = [((s > 0) & (s < 1)).to(s.dtype) for s in free]
        rhs = [torch.zeros_like(s) for s in free]
        rhs[-1] = (free[-1] - t) * mask[-1] / free[-1].shape[-2]

        def operator(v: list[Tensor]) -> list[Tensor]:  # (I − PAP) v, for v = P v
            return [vi - mi * ci for vi, mi, ci in zip(v, mask, self._couplings(v), strict=True)]

        tol = max(tol, 16 * torch.finfo(free[0].dtype).eps)
        lam = _conjugate_gradients(operator, rhs, tol, max_steps)
        return lam if lam is not None else self.adjoint_by_relaxation(free, t, tol, max_steps)

    def _couplings(self, v: list[Tensor]) -> list[Tensor]:
        """``(A v)_i = W_i v_{i−1} + W_{i+1}ᵀ v_{i+1}`` for the hidden and output layers (no input, no bias)."""
        layers, m = self.net.layers, len(v)
        out = []
        for i in range(m):  # layer i + 1 in the paper's numbering
            r = torch.zeros_like(v[i])
            if i > 0:
                r = _add_matmul(r, v[i - 1], layers[i].weight.transpose(1, 2))
            if i + 1 < m:
                r = _add_matmul(r, v[i + 1], layers[i + 1].weight)
            out.append(r)
        return out

    @torch.no_grad()
    def adjoint_by_relaxation(
        self, free: list[Tensor], t: Tensor, tol: float = 1e-9, max_steps: int = 20000
    ) -> list[Tensor]:
        """:meth:`adjoint`'s ``λ`` by the damped (Richardson) iteration ``λ ← λ + ε (P(∂C̄/∂s + A λ) − λ)``, the
        linearised free dynamics (it converges where they do, far more slowly than conjugate gradients), until no
        entry moves by more than ``tol · max |λ|`` in an iteration, or ``max_steps``."""
        eps = self.config.epsilon
        mask = [((s > 0) & (s < 1)).to(s.dtype) for s in free]
        g = [torch.zeros_like(s) for s in free]
        g[-1] = (free[-1] - t) / free[-1].shape[-2]
        lam = [gi * mi for gi, mi in zip(g, mask, strict=True)]
        for step in range(max_steps):
            new = [torch.lerp(lam[i], (g[i] + c) * mask[i], eps) for i, c in enumerate(self._couplings(lam))]
            if step % 50 == 49:
                scale = max(float(v.abs().max()) for v in new) or 1.0
                if max(float((a - b).abs().max()) for a, b in zip(new, lam, strict=True)) <= tol * scale:
                    return new
            lam = new
        return lam

    def weight_gradients(self, x: Tensor, free: list[Tensor], lam: list[Tensor]) -> list[Tensor]:
        """``∂C̄/∂W_i = λ_iᵀ ρ(s⁰_{i−1}) + ρ(s⁰_i)ᵀ λ_{i−1}`` (summed over the batch; ``λ_0 = 0`` at the clamped input:
        ``W_i`` carries current both ways, up into layer i and down into layer i − 1) and ``∂C̄/∂b_i = Σ_b λ_i``, in
        the order of ``net.forward_parameters()``. EP's ``−ΔW_i / α_i`` tends to ``∂C̄/∂W_i`` as ``β → 0``."""
        rates = [self._batched(x).clamp(0.0, 1.0), *free]
        grads: list[Tensor] = []
        for i in range(1, self.net.depth + 1):
            gw = torch.bmm(lam[i - 1].transpose(1, 2), rates[i - 1])
            if i > 1:
                gw = gw + torch.bmm(rates[i].transpose(1, 2), lam[i - 2])
            grads.extend([gw, lam[i - 1].sum(1)])
        return grads

    @torch.no_grad()
    def exact_gradients(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """At the free fixed point relaxed from ``s = 0``: :meth:`weight_gradients` and ``λ`` (:meth:`adjoint`).
        Kept for the same batch and weights, so :meth:`exact_updates` and :meth:`exact_signal` pay for one."""
        versions = (x._version, y._version, *(p._version for p in self.net.forward_parameters()))
        cached = getattr(self, "_exact", None)  # (x, y, versions, result): x and y held, so compared by identity
        if cached is not None and cached[0] is x and cached[1] is y and cached[2] == versions:
            return cached[3]
        free = self.fixed_point(x)
        lam = self.adjoint(free, self.target(y, free[-1]))
        result = self.weight_gradients(x, free, lam), lam
        self._exact = (x, y, versions, result)
        return result

    def exact_updates(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """BP's gradient for EP's model: that of the cost at the free fixed point (:meth:`exact_gradients`)."""
        return self.exact_gradients(x, y)[0]

    def exact_signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """``−λ_i`` for the hidden layers: the descent direction of the cost at the fixed point for each layer's
        input current (zero on clipped units), what :meth:`signal` approaches."""
        return [-lam for lam in self.exact_gradients(x, y)[1][:-1]]


def _conjugate_gradients(
    operator: Callable[[list[Tensor]], list[Tensor]], rhs: list[Tensor], tol: float, max_steps: int
) -> list[Tensor] | None:
    """Solve ``operator(λ) = rhs`` for a symmetric positive definite operator that acts on each ``(r, b)`` row
    separately (the tensors are ``(R, B, n_i)``, one block per layer): conjugate gradients, one system per row,
    each stopped (its step set to zero) once its residual is below ``tol`` times its right-hand side. None if some
    unfinished system meets a direction of non-positive curvature (the operator is not positive definite there)."""

    def dot(a: list[Tensor], b: list[Tensor]) -> Tensor:  # (R, B)
        return sum((ai * bi).sum(-1) for ai, bi in zip(a, b, strict=True))  # type: ignore[return-value]

    lam = [torch.zeros_like(b) for b in rhs]
    residual = [b.clone() for b in rhs]
    direction = [b.clone() for b in rhs]
    rs = dot(residual, residual)
    threshold = rs * tol**2
    for step in range(max_steps):
        active = rs > threshold
        if step % 10 == 0 and not bool(active.any()):
            break
        image = operator(direction)
        curvature = dot(direction, image)
        if bool((active & (curvature <= 0)).any()):
            return None
        alpha = torch.where(active, rs / torch.where(active, curvature, 1.0), 0.0).unsqueeze(-1)
        for x, r, d, a in zip(lam, residual, direction, image, strict=True):
            x.addcmul_(alpha, d)
            r.addcmul_(alpha, a, value=-1.0)
        rs_new = dot(residual, residual)
        beta = torch.where(active, rs_new / torch.where(active, rs, 1.0), 0.0).unsqueeze(-1)
        direction = [r + beta * d for r, d in zip(residual, direction, strict=True)]
        rs = rs_new
    return lam


def _add_matmul(r: Tensor, a: Tensor, w: Tensor) -> Tensor:
    """``r + a @ w`` for every replica (``(R, B, n) @ (R, n, m)``), a new tensor; one replica takes ``addmm``."""
    if r.shape[0] == 1:
        return torch.addmm(r[0], a[0], w[0]).unsqueeze(0)
    return torch.baddbmm(r, a, w)
