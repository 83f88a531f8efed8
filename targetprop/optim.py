"""Optimisers for replica-batched parameters, with one learning rate per replica.

Every parameter has a leading replica dimension R and the learning rate is a tensor of shape ``(R,)``, so R
seeds or R hyper-parameter settings train side by side. Rules hand the optimiser their update directions
(gradients, or a rule's pseudo-gradients) explicitly: ``opt.step(grads)``; nothing reads ``param.grad``.

Every optimiser also takes a weight decay λ (per replica, like the learning rate; none by default): before its
update, each step shrinks the parameters as ``θ ← θ − lr · λ · θ``, decoupled from the update direction
(Loshchilov & Hutter 2019's AdamW; for plain SGD the same as adding ``λ θ`` to the gradient).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from targetprop.errors import ConfigError


def per_replica(value: float | Sequence[float] | Tensor, replicas: int, like: Tensor) -> Tensor:
    """A hyper-parameter as an ``(R,)`` tensor: a scalar is shared, a list gives one value per replica."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).flatten()
    if t.numel() == 1:
        return t.expand(replicas).clone()
    if t.numel() != replicas:
        raise ConfigError(f"{t.numel()} values given for {replicas} replicas; give one value or one per replica")
    return t


def _lr_view(lr: Tensor, p: Tensor) -> Tensor:
    return lr.view(-1, *([1] * (p.dim() - 1)))


BLOCK_ELEMENTS = 1 << 20
"""Elements per tensor in one block of an update (4 MiB of float32): the five or six tensors an update touches
then fit together in a server CPU's last-level cache (32 MiB on the 2-core EPYC we measured on). Interleaved runs
in one process there: BP on CIFAR-10's 3072-1000x3-10 (5.1 M parameters, one replica, five blocks) trained
1.03-1.13x faster per epoch than with the whole buffer at once; 10 replicas of 784-240x7-10 showed no difference
beyond noise. Half this budget split one replica of 784-240x7-10 (538 k parameters) in two and made BP ~5 %
slower, so a buffer that fits the budget stays whole."""


def update_blocks(rows: int, cols: int, budget: int) -> list[tuple[slice, slice]]:
    """``(row slice, column slice)`` pairs that tile a ``(rows, cols)`` buffer in blocks of at most about
    ``budget`` elements: groups of whole rows when a row fits, else pieces of equal width of each row. A buffer
    of at most ``budget`` elements, or a single row that fits, is one block."""
    if cols <= budget:
        per = max(1, budget // max(cols, 1))
        return [(slice(r, min(rows, r + per)), slice(0, cols)) for r in range(0, rows, per)]
    pieces = -(-cols // budget)
    width = -(-cols // pieces)
    return [(slice(r, r + 1), slice(c, min(cols, c + width))) for r in range(rows) for c in range(0, cols, width)]


def flat_buffer(params: Sequence[Tensor]) -> Tensor | None:
    """The ``(R, P)`` tensor the parameters tile, in order and without gaps, if they do (a :class:`Network`'s
    forward and feedback parameters do); else ``None``."""
    first = params[0]
    replicas, total = first.shape[0], sum(p[0].numel() for p in params)
    offset = first.storage_offset()
    for p in params:
        if (
            p.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
            or p.storage_offset() != offset
            or (replicas > 1 and p.stride(0) != total)
            or not p[0].is_contiguous()
        ):
            return None
        offset += p[0].numel()
    # a tensor on the same storage without a view relation (._base), which torch.compile requires of aliases
    flat = torch.empty(0, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        flat.set_(first.untyped_storage(), first.storage_offset(), (replicas, total), (total, 1))
    return flat


class Optimizer:
    """Base class: holds the parameters, the per-replica learning rate and the state tensors.

    When the parameters tile one contiguous ``(R, P)`` buffer (see :func:`flat_buffer`), the update runs on that
    buffer: a fixed number of element-wise kernels per step, whatever the number of layers, with no temporaries.
    Otherwise it runs parameter by parameter. The state is kept per *slot* (the flat buffer, or each parameter).

    A large flat buffer is updated in blocks of about :data:`BLOCK_ELEMENTS` elements (whole replica rows, or
    pieces of one row), so that the several element-wise passes of an update find their operands in the cache
    instead of streaming the whole buffer from memory once per pass. The arithmetic of every element is unchanged.
    Subclasses name their state tensors in ``state_names`` and implement :meth:`_update` on one block.
    """

    state_names: tuple[str, ...] = ()
    uses_scratch = False
    block_elements = BLOCK_ELEMENTS

    def __init__(self, params: Sequence[Tensor], lr: Tensor):
        self.params = list(params)
        self.lr = lr
        self.weight_decay: Tensor | None = None
        """λ, ``(R,)``, of the decoupled weight decay ``θ ← θ − lr · λ · θ`` that precedes every update; ``None``:
        no decay (see :func:`make_optimizer`)."""
        self.tied: list[tuple[int, int]] = []
        """Pairs ``(i, j)`` of parameters that are transposes of each other (a tied auto-encoder's ``W_1`` and
        ``W_2``): :meth:`step` gives both the direction ``G = G_i + G_jᵀ`` (``Gᵀ`` for ``j``), so they stay tied."""
        self.state: dict[str, list[Tensor]] = {}
        flat = flat_buffer(self.params) if len(self.params) > 1 else None
        # without a flat buffer, the parameters themselves (not detached aliases: a compiled step given a parameter
        # and an alias of it, one of them written, cannot be captured as a CUDA graph; see Network._flatten)
        self.slots: list[Tensor] = [flat] if flat is not None else list(self.params)
        self._flat = flat is not None
        # where slots[0] starts in its storage: rules that view a flat buffer with as_strided read this plain int
        # rather than call storage_offset() inside compiled code (a graph break)
        self.flat_offset = flat.storage_offset() if flat is not None else 0
        self._work: list[Tensor] = []
        self._grad: Tensor | None = None
        self._grad_views: list[Tensor] = []

    @property
    def is_flat(self) -> bool:
        """Whether the parameters tile one ``(R, P)`` buffer, ``slots[0]``."""
        return self._flat

    @property
    def grad_buffer(self) -> Tensor:
        """The whole ``(R, P)`` gradient buffer behind :meth:`grad_buffers` (flat parameters only)."""
        self.grad_buffers()
        assert self._grad is not None and self._flat, "only flat parameters have one gradient buffer"
        return self._grad

    def grad_buffers(self) -> list[Tensor]:
        """Tensors shaped like the parameters that a rule may write its update directions into (e.g. with
        ``torch.bmm(..., out=...)``) and then hand to :meth:`step`: with flat parameters they are views of one
        ``(R, P)`` gradient buffer, so no copy is needed. Their content is overwritten by every step."""
        if self._grad is None:
            if self._flat:
                self._grad = torch.empty_like(self.slots[0])
                sizes = [p[0].numel() for p in self.params]
                self._grad_views = [
                    v.view(p.shape) for v, p in zip(self._grad.split(sizes, dim=1), self.params, strict=True)
                ]
            else:
                self._grad_views = [torch.empty_like(p) for p in self.slots]
        return self._grad_views

    def prepare(self) -> None:
        """Allocate every buffer a step uses (gradient buffers, state, work tensors) now rather than at the first
        step, so that a compiled step does not meet new attributes after its first call and compile again; and
        mark each of them, and the parameters, as living at a fixed address, so that a step that updates them in
        place can still be captured as a CUDA graph (``compile=reduce-overhead``: CUDA graphs replay only steps
        whose mutated inputs never move, as ``torch.optim`` marks its own state)."""
        self.grad_buffers()
        for name in self.state_names:
            self._buffer(name)
        if self.uses_scratch:
            self._scratch(0)
        grad = [self._grad] if self._grad is not None else []
        for t in [
            *self.params,
            *self.slots,
            *grad,
            *self._grad_views,
            *self._work,
            *itertools.chain(*self.state.values()),
        ]:
            torch._dynamo.mark_static_address(t)

    def _buffer(self, name: str) -> list[Tensor]:
        if name not in self.state:
            self.state[name] = [torch.zeros_like(p) for p in self.slots]
        return self.state[name]

    def _scratch(self, i: int) -> Tensor:
        """A reusable work tensor shaped like slot ``i`` (not part of the state)."""
        if not self._work:
            self._work = [torch.empty_like(p) for p in self.slots]
        return self._work[i]

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        if self.tied:
            grads = self._tie(grads)
        if self._flat:
            if grads is not self._grad_views:  # gradients computed elsewhere than the buffer: gather them
                for view, g in zip(self.grad_buffers(), grads, strict=True):
                    if g.data_ptr() != view.data_ptr() or g.stride() != view.stride():
                        view.copy_(g)
            assert self._grad is not None
            self._update_slot(0, self._grad)
            return
        for i, g in enumerate(grads):
            self._update_slot(i, g)

    def _tie(self, grads: Sequence[Tensor]) -> list[Tensor]:
        """``G = G_i + G_jᵀ`` for parameter ``i`` and ``Gᵀ`` for parameter ``j``, for every tied pair."""
        grads = list(grads)
        for i, j in self.tied:
            shared = grads[i] + grads[j].transpose(-1, -2)
            grads[i], grads[j] = shared, shared.transpose(-1, -2)
        return grads

    def _update_slot(self, i: int, g: Tensor) -> None:
        p, lr = self.slots[i], _lr_view(self.lr, self.slots[i])
        state = [self._buffer(name)[i] for name in self.state_names]
        scratch = self._scratch(i) if self.uses_scratch else None
        # θ ← θ − lr · λ · θ, with the factor lr · λ of each replica
        shrink = None if self.weight_decay is None else lr * _lr_view(self.weight_decay, p)
        if not self._flat or torch.compiler.is_compiling():  # inductor fuses the passes into one loop anyway
            if shrink is not None:
                p.addcmul_(p, shrink, value=-1.0)
            self._update(p, g, lr, *state, scratch=scratch)
            return
        for rows, cols in update_blocks(p.shape[0], p.shape[1], self.block_elements):
            if shrink is not None:
                p[rows, cols].addcmul_(p[rows, cols], shrink[rows], value=-1.0)
            self._update(
                p[rows, cols],
                g[rows, cols],
                lr[rows],
                *(s[rows, cols] for s in state),
                scratch=None if scratch is None else scratch[rows, cols],
            )

    def _update(self, p: Tensor, g: Tensor, lr: Tensor, *state: Tensor, scratch: Tensor | None) -> None:
        """Update parameters ``p`` (a block of a slot) in place from directions ``g``, with ``lr`` broadcastable
        to ``p``, the block's state tensors in the order of ``state_names`` and a work tensor of ``p``'s shape."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "state": self.state, **self._extra_state()}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the moments. The learning rate is not restored: it comes from the configuration, which a
        resumed run may change (``targetprop train --resume RUN --set dtp.lr=...``)."""
        device = self.slots[0].device
        self.state = {k: self._fit_slots(k, [t.to(device) for t in v]) for k, v in state["state"].items()}
        for k, v in state.items():
            if k not in ("lr", "state"):
                setattr(self, k, v)

    def _fit_slots(self, name: str, tensors: list[Tensor]) -> list[Tensor]:
        """State ``name`` laid out as this optimiser's slots: saved by an optimiser over the same parameters with
        the other layout (one flat ``(R, P)`` buffer, or one tensor per parameter: a network built with or
        without ``flat``), it is gathered or split, so a run resumes under either."""
        shapes = [p.shape for p in self.slots]
        if [t.shape for t in tensors] == shapes:
            return tensors
        replicas, sizes = self.slots[0].shape[0], [p[0].numel() for p in self.params]
        if self._flat and [t.shape for t in tensors] == [p.shape for p in self.params]:
            return [torch.cat([t.reshape(replicas, -1) for t in tensors], dim=1)]
        if not self._flat and len(tensors) == 1 and tensors[0].shape == (replicas, sum(sizes)):
            return [
                t.reshape(p.shape).clone() for t, p in zip(tensors[0].split(sizes, dim=1), self.params, strict=True)
            ]
        raise ValueError(f"optimizer state {name!r} does not fit these parameters")


class SGD(Optimizer):
    """``θ ← θ − lr · g``."""

    def _update(self, p, g, lr, *state, scratch):
        p.addcmul_(g, lr, value=-1.0)  # one pass; lr (R, 1) broadcasts over each replica's row


class Momentum(Optimizer):
    """Heavy ball (PyTorch's convention): ``v ← μ v + g``, ``θ ← θ − lr · v``."""

    def __init__(self, params, lr, momentum: float = 0.9):
        super().__init__(params, lr)
        self.momentum = momentum

    state_names = ("velocity",)

    def _update(self, p, g, lr, v, *, scratch):
        v.mul_(self.momentum).add_(g)
        p.addcmul_(v, lr, value=-1.0)


class RMSprop(Optimizer):
    """``E[g²] ← α E[g²] + (1 − α) g²``, ``θ ← θ − lr · g / (sqrt(E[g²]) + ε)``."""

    def __init__(self, params, lr, alpha: float = 0.99, eps: float = 1e-8):
        super().__init__(params, lr)
        self.alpha, self.eps = alpha, eps

    state_names, uses_scratch = ("square_avg",), True

    def _update(self, p, g, lr, sq, *, scratch):
        sq.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        step = torch.sqrt(sq, out=scratch).add_(self.eps)
        p.addcmul_(torch.div(g, step, out=step), lr, value=-1.0)


class CenteredRMSpropMomentum(Optimizer):
    """Centered RMSprop with momentum, as in the DTP authors' code (``util.rms_prop``)::

        E[g]  ← ρ E[g]  + (1 − ρ) g
        E[g²] ← ρ E[g²] + (1 − ρ) g²
        v     ← μ v − lr · g / sqrt(E[g²] − E[g]² + ε)
        θ     ← θ + v

    with ``ρ = 0.95``, ``μ = 0.9``, ``ε = 0.001`` by default (note ε sits inside the square root).
    """

    def __init__(self, params, lr, momentum: float = 0.9, decay: float = 0.95, eps: float = 1e-3):
        super().__init__(params, lr)
        self.momentum, self.decay, self.eps = momentum, decay, eps

    state_names, uses_scratch = ("grad_avg", "square_avg", "velocity"), True

    def _update(self, p, g, lr, mean, sq, v, *, scratch):
        mean.lerp_(g, 1 - self.decay)
        sq.mul_(self.decay).addcmul_(g, g, value=1 - self.decay)
        step = torch.addcmul(sq, mean, mean, value=-1.0, out=scratch)
        step.add_(self.eps).rsqrt_().mul_(g)  # g / sqrt(E[g²] − E[g]² + ε)
        v.mul_(self.momentum).addcmul_(step, lr, value=-1.0)
        p.add_(v)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    def __init__(self, params, lr, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.steps = 0
        """t, the steps taken, as a Python number: the eager step's bias corrections."""
        self.t: Tensor | None = None
        """t on the device once the step is compiled (:meth:`prepare`), and counted there instead: a Python number
        read inside compiled code is a constant of the graph, compiled again at every step. Shape (1,), not 0-d:
        inductor lost the in-place count of a 0-d CPU tensor (torch 2.13)."""

    def _extra_state(self):
        return {"steps": self.steps if self.t is None else int(self.t.item())}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.t is not None:
            self.t.fill_(self.steps)

    def prepare(self):
        super().prepare()
        self.t = torch.full((1,), float(self.steps), dtype=torch.float64, device=self.slots[0].device)
        torch._dynamo.mark_static_address(self.t)

    @torch.no_grad()
    def step(self, grads):
        if self.t is None:
            self.steps += 1
        else:
            self.t.add_(1)
        super().step(grads)

    state_names, uses_scratch = ("exp_avg", "exp_avg_sq"), True

    def _update(self, p, g, lr, m, s, *, scratch):
        m.lerp_(g, 1 - self.beta1)
        s.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        # lr · m̂ / (sqrt(ŝ) + ε) with m̂ = m / (1 − β1ᵗ), ŝ = s / (1 − β2ᵗ)
        if self.t is not None:
            step = torch.div(s, 1 - torch.pow(self.beta2, self.t), out=scratch).sqrt_().add_(self.eps)
            p.addcmul_(torch.div(m, step, out=step), lr / (1 - torch.pow(self.beta1, self.t)), value=-1.0)
            return
        step = torch.div(s, 1 - self.beta2**self.steps, out=scratch).sqrt_().add_(self.eps)
        p.addcmul_(torch.div(m, step, out=step), lr, value=-1.0 / (1 - self.beta1**self.steps))


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "rmsprop": RMSprop,
    "centered_rmsprop": CenteredRMSpropMomentum,
    "adam": Adam,
}


OPTION_RANGES: dict[str, tuple[float, float]] = {
    "momentum": (0.0, 1.0),
    "alpha": (0.0, 1.0),
    "decay": (0.0, 1.0),
    "beta1": (0.0, 1.0),
    "beta2": (0.0, 1.0),
    "eps": (0.0, math.inf),
}
"""Where each optimiser option makes sense: decay rates in [0, 1), ε above 0."""


def check_options(options: dict[str, float]) -> dict[str, float]:
    """Refuse option values outside :data:`OPTION_RANGES` (a decay of 1 or more, ε ≤ 0, NaN)."""
    for key, value in options.items():
        low, high = OPTION_RANGES.get(key, (-math.inf, math.inf))
        if not math.isfinite(value) or not (low <= value < high) or (key == "eps" and value <= 0):
            want = "a number above 0" if key == "eps" else f"a number in [{low:g}, {high:g})"
            raise ConfigError(f"optimizer option {key} = {value!r} is out of range; give {want}")
    return options


def make_optimizer(
    name: str,
    params: Sequence[Tensor],
    lr: float | Sequence[float],
    options: dict[str, float] | None = None,
    tied: Sequence[tuple[int, int]] = (),
    weight_decay: float | Sequence[float] = 0.0,
) -> Optimizer:
    """Build optimiser ``name`` over ``params`` (each ``(R, ...)``); ``lr`` and ``weight_decay`` (λ of
    :attr:`Optimizer.weight_decay`) are scalars or one value per replica; ``tied`` pairs parameters kept transposes
    of each other (:attr:`Optimizer.tied`)."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    options = dict(options or {})
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "params", "lr")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"optimizer {name!r} has no option {unknown[0]!r}; its options are: {', '.join(allowed) or 'none'}"
        )
    params = list(params)
    lr_t = per_replica(lr, params[0].shape[0], params[0])
    optimizer = cls(params, lr_t, **options)
    optimizer.tied = list(tied)
    decay = per_replica(weight_decay, params[0].shape[0], params[0])
    if bool((decay < 0).any()) or not bool(decay.isfinite().all()):
        raise ConfigError(f"weight decay {weight_decay!r} is out of range; give numbers of 0 or more")
    optimizer.weight_decay = decay if bool((decay > 0).any()) else None
    return optimizer
