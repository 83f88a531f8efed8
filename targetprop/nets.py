"""Layered networks held as R replicas in batched tensors, with feedback (approximate inverse) maps.

Notation of the DTP paper (Lee et al. 2015), with layers numbered ``i = 1..M`` (``layers[i - 1]`` in code):

    forward   h_i = f_i(h_{i−1}) = s_i(W_i u_{i−1} + b_i),   u_i = t_i(h_i),   h_0 = u_0 = x
    feedback  g_i(h_i) = s̄_i(V_i d_i(h_i) + c_i)  ≈  f_i^{-1}(h_i),   with s̄_i = s_{i−1}

``t_i`` is the identity for ordinary units; discrete units transmit ``sign(h_i)`` (sign) or ``1[h_i > 1/2]`` (step),
stochastic binary units a Bernoulli sample of ``h_i`` (see :mod:`targetprop.units`). ``d_i`` is the code of the
connection between layers ``i−1`` and ``i``, the same both ways: ``t_{i−1}`` where unit ``i−1`` is discrete (the
paper's discrete network: ``g_2(h_2) = tanh(V_2 sign(h_2))``), the identity otherwise. Layer ``M`` is the output
layer: ``h_M`` is the output unit applied to ``a_M`` and the cost is ``L(a_M, y)``.

Every parameter carries a leading replica dimension ``R``: ``W_i`` is ``(R, n_i, n_{i−1})`` and activity is
``(R, B, n)``, so R independently initialised networks train in one process through batched matrix products.

An auto-encoder ``n-H-n`` may have *tied* weights (``tied=True``, the DTP paper's auto-encoder): the decoder's
``W_2`` is ``W_1ᵀ``. Both are kept as parameters, ``W_2`` set to ``W_1ᵀ`` at initialisation, and every optimiser
of the forward weights hands both the same direction, ``G = G_{W_1} + G_{W_2}ᵀ`` (and ``Gᵀ``), the gradient with
respect to the one shared matrix (see :meth:`Network.tied_pairs`). Element-wise optimisers commute with the
transpose, so ``W_2 = W_1ᵀ`` holds exactly, step after step, with no code in the rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from targetprop.errors import ConfigError
from targetprop.replicas import generator
from targetprop.units import Noise, OutputUnit, Unit, hidden_unit, output_unit

INITS = ("orthogonal", "glorot", "default")


MAX_WIDTH, MAX_LAYERS = 100_000, 1_000
"""Bounds on an architecture string, checked before anything is allocated (memory is checked when building)."""


def parse_architecture(text: str) -> list[int]:
    """``"784-240x7-10"`` → ``[784, 240, 240, 240, 240, 240, 240, 240, 10]``.

    Sizes are separated by ``-``; ``NxK`` repeats size N K times. The first size is the input, the last the output.
    """
    sizes: list[int] = []
    for part in str(text).replace(" ", "").split("-"):
        m = re.fullmatch(r"(\d+)(?:[x*](\d+))?", part)
        if m is None or int(m[1]) == 0 or (m[2] is not None and int(m[2]) == 0):
            raise ConfigError(
                f"malformed architecture {text!r} at {part!r}; write sizes joined by '-', e.g. 784-240x7-10"
            )
        width, repeat = int(m[1]), int(m[2] or 1)
        if width > MAX_WIDTH or len(sizes) + repeat > MAX_LAYERS + 1:
            raise ConfigError(
                f"architecture {text!r} is too large: at most {MAX_LAYERS} layers of at most {MAX_WIDTH} units"
            )
        sizes.extend([width] * repeat)
    if len(sizes) < 2:
        raise ConfigError(f"architecture {text!r} needs at least an input and an output size, e.g. 64-10")
    return sizes


def init_weight(shape: tuple[int, int], scheme: str, gen: torch.Generator) -> Tensor:
    """One ``(n_out, n_in)`` weight matrix, drawn on the CPU in float64.

    - ``orthogonal`` (DTP authors' code): ``A ~ U(−r, r)``, ``r = sqrt(6 / (n_in + n_out))``, then the nearest
      (semi-)orthogonal matrix ``U I V^T`` from the SVD ``A = U S V^T``;
    - ``glorot``: ``U(−r, r)`` with the same ``r`` (Glorot & Bengio 2010);
    - ``default``: PyTorch's ``nn.Linear`` default, ``U(−1/sqrt(n_in), 1/sqrt(n_in))``.
    """
    n_out, n_in = shape
    bound = 1.0 / math.sqrt(n_in) if scheme == "default" else math.sqrt(6.0 / (n_in + n_out))
    a = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound
    if scheme == "orthogonal":
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        a = u @ vh
    return a


def init_bias(n_out: int, n_in: int, scheme: str, gen: torch.Generator) -> Tensor:
    """Zero biases (DTP code, Glorot); PyTorch's default draws them from ``U(−1/sqrt(n_in), 1/sqrt(n_in))``."""
    if scheme == "default":
        bound = 1.0 / math.sqrt(n_in)
        return (torch.rand(n_out, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound
    return torch.zeros(n_out, dtype=torch.float64)


def linear(u: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``a = W u + b`` for every replica: ``u`` ``(R, B, n_in)``, ``W`` ``(R, n_out, n_in)``, ``b`` ``(R, n_out)``.

    One replica takes ``addmm`` (measured faster than a batched product of one on the CPU)."""
    if weight.shape[0] == 1:
        return torch.addmm(bias[0], u[0], weight[0].t()).unsqueeze(0)
    return torch.baddbmm(bias.unsqueeze(1), u, weight.transpose(1, 2))


def linear_grads(grad_a: Tensor, u: Tensor, out: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Closed-form gradients of ``a = W u + b``: ``∂/∂W = δᵀ u`` (summed over the batch), ``∂/∂b = Σ_b δ``.

    With ``out`` (e.g. an optimiser's :meth:`~targetprop.optim.Optimizer.grad_buffers`) they are written there.
    """
    if grad_a.shape[0] == 1 and out is not None:
        torch.mm(grad_a[0].t(), u[0], out=out[0][0])
        torch.sum(grad_a[0], 0, out=out[1][0])
        return out[0], out[1]
    if out is None:
        return torch.bmm(grad_a.transpose(1, 2), u), grad_a.sum(1)
    if torch.compiler.is_compiling():  # dynamo cannot trace out= into strided views; inductor fuses the copy
        out[0].copy_(torch.bmm(grad_a.transpose(1, 2), u))
        out[1].copy_(grad_a.sum(1))
        return out[0], out[1]
    return torch.bmm(grad_a.transpose(1, 2), u, out=out[0]), torch.sum(grad_a, 1, out=out[1])


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for every replica (``(R, n, k) @ (R, k, m)``); one replica takes ``mm``."""
    if a.shape[0] == 1 and b.shape[0] == 1:
        return torch.mm(a[0], b[0]).unsqueeze(0)
    return torch.bmm(a, b)


def pair(flat: Sequence[Tensor] | None, k: int) -> Sequence[Tensor] | None:
    """The ``k``-th ``(weight, bias)`` pair, from 0, of a list ordered like :meth:`Network.forward_parameters`
    (``W_1, b_1, W_2, b_2, …``: layer ``i``'s pair is ``pair(flat, i − 1)``) or like the feedback parameters;
    None where ``flat`` is None (a rule that is not given buffers to write its gradients into)."""
    return None if flat is None else flat[2 * k : 2 * k + 2]


class Layer(nn.Module):
    """``f_i(u) = s_i(W_i u + b_i)``, and optionally its feedback map ``g_i(h) = s̄_i(V_i d_i(h) + c_i)``, where
    ``d_i`` is the code of the connection below (see :meth:`feedback_input`)."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        unit: Unit | OutputUnit,
        replicas: int,
        feedback_unit: Unit | None = None,
        unit_below: Unit | None = None,
    ):
        super().__init__()
        self.n_in, self.n_out, self.unit = n_in, n_out, unit
        self.code_below = unit_below if unit_below is not None and unit_below.discrete else None
        """The unit below when it transmits a discrete code (sign, step): the code ``g_i``'s input travels in."""
        self.weight = nn.Parameter(torch.empty(replicas, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(replicas, n_out))
        self.feedback_unit = feedback_unit
        if feedback_unit is not None:
            self.fb_weight = nn.Parameter(torch.empty(replicas, n_in, n_out))
            self.fb_bias = nn.Parameter(torch.empty(replicas, n_in))
        else:
            self.register_parameter("fb_weight", None)
            self.register_parameter("fb_bias", None)

    @property
    def has_feedback(self) -> bool:
        return self.fb_weight is not None

    @property
    def is_output(self) -> bool:
        return isinstance(self.unit, OutputUnit)

    def preactivation(self, u: Tensor) -> Tensor:
        return linear(u, self.weight, self.bias)

    def forward(self, u: Tensor) -> Tensor:
        """``h = s(W u + b)``."""
        return self.unit(self.preactivation(u))

    def input_grad(self, grad_a: Tensor) -> Tensor:
        """``∂L/∂u = δ W``: what ``δ = ∂L/∂a`` of this layer's pre-activation sends to its input."""
        return matmul(grad_a, self.weight)

    def weight_grads(self, grad_a: Tensor, u: Tensor, out: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``∂L/∂W = δᵀ u`` (summed over the batch) and ``∂L/∂b = Σ_b δ``, for ``δ = ∂L/∂a`` and the input ``u``
        that ``a = W u + b`` was computed from (written into ``out``, e.g. :func:`pair` of the optimiser's gradient
        buffers, if given)."""
        return linear_grads(grad_a, u, out)

    def feedback_grads(
        self, grad_z: Tensor, code: Tensor, out: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``∂L/∂V = δᵀ d`` and ``∂L/∂c = Σ_b δ`` of the feedback map's ``z = V d + c``, for ``δ = ∂L/∂z`` and its
        input ``d`` (see :meth:`feedback_input`)."""
        return linear_grads(grad_z, code, out)

    def transmit(self, h: Tensor, noise: Noise | None = None, straight_through: bool = False) -> Tensor:
        if self.is_output:
            return h
        return self.unit.transmit(h, noise, straight_through)

    def feedback_input(self, h: Tensor) -> Tensor:
        """What ``g_i`` reads of ``h_i``: ``h_i`` itself, or, where the connection to the layer below carries a
        discrete code (that unit transmits signs or steps), ``h_i`` in the same code, since a discrete connection
        is discrete both ways: the DTP paper's discrete network has ``g_2(h_2) = tanh(V_2 sign(h_2))`` with a tanh
        layer 2 above the sign layer 1. Stochastic units below leave it continuous: ``g_i`` reads the
        probabilities ``h_i^p`` (DTP paper, stochastic network)."""
        if self.is_output or self.code_below is None:
            return h
        return self.code_below.transmit(h)

    def feedback_preactivation(self, h: Tensor) -> Tensor:
        """``V d(h) + c``, with ``d`` the code of :meth:`feedback_input`."""
        return linear(self.feedback_input(h), self.fb_weight, self.fb_bias)

    def inverse(self, h: Tensor) -> Tensor:
        """``g(h) = s̄(V d(h) + c)``, the learned approximate inverse of this layer."""
        assert self.feedback_unit is not None, "this layer has no feedback map"
        return self.feedback_unit(self.feedback_preactivation(h))

    def extra_repr(self) -> str:
        fb = f", feedback={self.feedback_unit.name}" if self.feedback_unit is not None else ""
        return f"{self.n_in} -> {self.n_out}, {self.unit.name}, replicas={self.weight.shape[0]}{fb}"


@dataclass
class Activity:
    """The forward pass of a batch, kept for the rules: ``a_i``, ``h_i`` and the transmitted ``u_i``.

    ``u[0]`` is the input ``x``; ``a[i]``, ``h[i]``, ``u[i]`` (``i ≥ 1``) belong to layer i (paper numbering).
    """

    a: list[Tensor]
    h: list[Tensor]
    u: list[Tensor]

    @property
    def logits(self) -> Tensor:
        return self.a[-1]


class Network(nn.Module):
    """A stack of :class:`Layer` s held as ``replicas`` independent copies. An ordinary ``nn.Module``.

    Build one from an architecture string with :meth:`from_spec`. ``forward(x)`` returns the output
    pre-activation ``a_M`` of shape ``(R, B, n_out)``; ``x`` may be ``(B, n_in)`` (shared by all replicas) or
    ``(R, B, n_in)``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden: Sequence[str],
        output: str = "softmax",
        replicas: int = 1,
        feedback: str = "hidden",
        feedback_units: Sequence[str | None] | None = None,
        tied: bool = False,
        flat: bool = True,
    ):
        super().__init__()
        self.flat = flat
        """Whether the parameters are views of flat buffers (:meth:`_flatten`); each has storage of its own
        when not (what CUDA graphs of a whole step need: see ``compile`` in :mod:`targetprop.config`)."""
        sizes = list(sizes)
        n_layers = len(sizes) - 1
        if tied and (n_layers != 2 or sizes[0] != sizes[2]):
            arch = "-".join(map(str, sizes))
            raise ConfigError(
                f"tied weights need an auto-encoder n-H-n (the decoder's weights are the encoder's transposed), "
                f"got {arch}"
            )
        self.tied = tied
        if len(hidden) != n_layers - 1:
            raise ConfigError(
                f"{n_layers - 1} hidden layers but {len(hidden)} hidden unit names; give one name, or one per layer"
            )
        if replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {replicas}")
        if feedback not in ("none", "hidden", "all"):
            raise ConfigError(f"feedback must be 'none', 'hidden' or 'all', got {feedback!r}")
        hidden_units = [hidden_unit(n) for n in hidden]
        self.output_unit = output_unit(output)
        units: list[Unit | OutputUnit] = [*hidden_units, self.output_unit]
        self.sizes, self.hidden_names, self.output_name = sizes, list(hidden), output
        self.feedback_mode = feedback
        self.layers = nn.ModuleList()
        for i in range(1, n_layers + 1):
            # Layer 1 never has an inverse; the output layer only when targets start at the output.
            wants = (i >= 2 and i < n_layers and feedback != "none") or (i == n_layers >= 2 and feedback == "all")
            below = hidden_units[i - 2] if i >= 2 else None
            fb: Unit | None = None
            if wants:
                override = feedback_units[i - 1] if feedback_units is not None else None
                fb = hidden_unit(override) if override else hidden_unit(below.name)  # type: ignore[union-attr]
                if not fb.deterministic or fb.transmits != "state":  # g_i maps to the state below
                    # tanh below sign units; below stochastic units too, as the authors' g_2(h_2^p) =
                    # tanh(V_2 h_2^p + c_2) (sto_dtp.py), whose range holds the probabilities; σ below step units
                    fb = hidden_unit("sigmoid" if fb.transmits == "step" else "tanh")
            self.layers.append(Layer(sizes[i - 1], sizes[i], units[i - 1], replicas, fb, below))
        self._flatten()

    def _flatten(self) -> None:
        """Re-home the parameters as views of two contiguous ``(R, P)`` buffers, one for the forward parameters
        and one for the feedback parameters, in the order of :meth:`forward_parameters` and
        :meth:`feedback_parameters`. Each is still an ordinary ``nn.Parameter`` of its layer; an optimiser given a
        whole group updates it with one element-wise kernel per operation, however many layers there are.

        Not done for a network built with ``flat=False``: a compiled step that reads the parameters of layers
        and writes them in place cannot be captured as a CUDA graph when they share one storage. With R > 1
        replicas their views of an ``(R, P)`` buffer interleave (row r of every parameter lies in row r of the
        buffer), AOTAutograd takes them for overlapping inputs and merges them into one "synthetic base", whose
        address it does not hold fixed, and CUDA graph trees then skip the step ("mutated inputs")."""
        if not self.flat:
            return
        with torch.no_grad():
            for names in (self._forward_names(), self._feedback_names()):
                if not names:
                    continue
                old = [getattr(layer, name) for layer, name in names]
                sizes = [p[0].numel() for p in old]
                flat = torch.empty(old[0].shape[0], sum(sizes), dtype=old[0].dtype, device=old[0].device)
                for (layer, name), p, view in zip(names, old, flat.split(sizes, dim=1), strict=True):
                    view = view.view(p.shape)
                    view.copy_(p)
                    setattr(layer, name, nn.Parameter(view, requires_grad=p.requires_grad))

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # .to(), .double(), .cuda() ... give every parameter new storage; gather them into flat buffers again.
        super()._apply(fn, recurse)
        self._flatten()
        return self

    def _forward_names(self) -> list[tuple[Layer, str]]:
        return [(layer, name) for layer in self.layers for name in ("weight", "bias")]  # type: ignore[misc]

    def _feedback_names(self) -> list[tuple[Layer, str]]:
        return [
            (layer, name)
            for layer in self.layers
            if layer.has_feedback  # type: ignore[union-attr]
            for name in ("fb_weight", "fb_bias")
        ]

    @classmethod
    def from_spec(
        cls,
        architecture: str | Sequence[int],
        hidden: str | Sequence[str] = "tanh",
        output: str = "softmax",
        *,
        seeds: Sequence[int] = (0,),
        init: str = "orthogonal",
        feedback: str = "hidden",
        feedback_units: Sequence[str | None] | None = None,
        tied: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        flat: bool = True,
    ) -> Network:
        """Build and initialise a network: one replica per seed, each initialised from its own seed; ``flat``:
        its parameters tile flat buffers (see :meth:`_flatten`)."""
        sizes = parse_architecture(architecture) if isinstance(architecture, str) else list(architecture)
        n_hidden = len(sizes) - 2
        names = [hidden] * n_hidden if isinstance(hidden, str) else list(hidden)
        net = cls(sizes, names, output, len(seeds), feedback, feedback_units, tied, flat)
        net.initialize(seeds, init)
        return net.to(device=device, dtype=dtype)

    @property
    def replicas(self) -> int:
        return self.layers[0].weight.shape[0]

    @property
    def depth(self) -> int:
        """M, the number of layers with weights."""
        return len(self.layers)

    def layer(self, i: int) -> Layer:
        """Layer i in the paper's numbering (1..M)."""
        return self.layers[i - 1]  # type: ignore[return-value]

    @torch.no_grad()
    def initialize(self, seeds: Sequence[int], scheme: str = "orthogonal") -> None:
        """Initialise replica r from ``seeds[r]`` alone (forward weights first, then feedback weights)."""
        if scheme not in INITS:
            raise ConfigError(f"unknown initialisation {scheme!r}; choose one of: {', '.join(INITS)}")
        if len(seeds) != self.replicas:
            raise ValueError(f"{self.replicas} replicas but {len(seeds)} seeds")
        for r, seed in enumerate(seeds):
            gen = generator(seed, "init")
            for layer in self.layers:
                layer.weight[r] = init_weight((layer.n_out, layer.n_in), scheme, gen)
                layer.bias[r] = init_bias(layer.n_out, layer.n_in, scheme, gen)
            if self.tied:
                self.layers[1].weight[r] = self.layers[0].weight[r].t()
            for layer in self.layers:
                if layer.has_feedback:
                    layer.fb_weight[r] = init_weight((layer.n_in, layer.n_out), scheme, gen)
                    layer.fb_bias[r] = init_bias(layer.n_in, layer.n_out, scheme, gen)

    def _batched(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x.unsqueeze(0).expand(self.replicas, -1, -1)
        if x.dim() != 3 or x.shape[0] != self.replicas:
            raise ValueError(f"input must be (B, n_in) or ({self.replicas}, B, n_in), got {tuple(x.shape)}")
        return x

    def activity(
        self, x: Tensor, noise: Noise | None = None, straight_through: bool = False, depth: int | None = None
    ) -> Activity:
        """The forward pass, keeping every layer's pre-activation, state and transmitted value; with ``depth``,
        only through layer ``depth``."""
        u = self._batched(x)
        acts = Activity(a=[u], h=[u], u=[u])
        for layer in self.layers[:depth]:
            a = layer.preactivation(u)
            h = layer.unit(a)
            u = layer.transmit(h, noise, straight_through)
            acts.a.append(a)
            acts.h.append(h)
            acts.u.append(u)
        return acts

    def forward(self, x: Tensor, noise: Noise | None = None, straight_through: bool = False) -> Tensor:
        return self.forward_from(self.layers[0].preactivation(self._batched(x)), noise, straight_through)

    @torch.no_grad()
    def predict(self, x: Tensor, noise: Noise | None = None, samples: int = 1) -> Tensor:
        """The feed-forward prediction ``a_M``. With ``samples > 1`` and stochastic units, the outputs ``s(a_M)``
        of that many passes averaged, returned as the pre-activation that gives them (``s^{-1}(mean s(a_M))``);
        the first layer's pre-activation, which no sample changes, is computed once."""
        if samples == 1 or all(layer.unit.deterministic for layer in self.layers[:-1]):
            return self(x, noise)
        out = self.output_unit
        a_1 = self.layers[0].preactivation(self._batched(x))
        return out.inverse(sum(out(self.forward_from(a_1, noise)) for _ in range(samples)) / samples)

    def forward_from(self, a_1: Tensor, noise: Noise | None = None, straight_through: bool = False) -> Tensor:
        """The output pre-activation ``a_M`` from the first layer's pre-activation ``a_1 = W_1 x + b_1``: the rest
        of :meth:`forward`. ``a_1`` does not depend on the noise, so passes that differ only in their samples
        (averaged at evaluation) compute it once."""
        a = a_1
        for layer, above in zip(self.layers[:-1], self.layers[1:], strict=True):
            a = above.preactivation(layer.transmit(layer.unit(a), noise, straight_through))
        return a

    def tied_pairs(self) -> list[tuple[int, int]]:
        """Positions ``(i, j)`` in :meth:`forward_parameters` of matrices kept transposes of each other: ``W_1`` and
        ``W_2`` of a tied auto-encoder (none otherwise). Optimisers give both ``G_i + G_jᵀ``."""
        return [(0, 2)] if self.tied else []

    def forward_parameters(self) -> list[nn.Parameter]:
        """``W_1, b_1, …, W_M, b_M``: views, in this order, of one contiguous ``(R, P)`` buffer (if :attr:`flat`)."""
        return [getattr(layer, name) for layer, name in self._forward_names()]

    def feedback_parameters(self) -> list[nn.Parameter]:
        """``V_i, c_i`` of the layers with a feedback map: views, in this order, of one contiguous buffer (if
        :attr:`flat`)."""
        return [getattr(layer, name) for layer, name in self._feedback_names()]

    def select(self, index: int | Sequence[int]) -> Network:
        """A network holding only the given replicas (copies of their parameters)."""
        index = [index] if isinstance(index, int) else list(index)
        fb_units = [layer.feedback_unit.name if layer.feedback_unit else None for layer in self.layers]
        net = Network(
            self.sizes,
            self.hidden_names,
            self.output_name,
            len(index),
            self.feedback_mode,
            fb_units,
            self.tied,
            self.flat,
        )
        ref = self.layers[0].weight
        net.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(self.get_parameter(name)[index])
        return net

    def export(self, replica: int = 0) -> nn.Sequential:
        """Replica ``replica`` as a plain PyTorch network of ``nn.Linear`` and unit modules (forward maps only).

        The last module is the output layer's ``nn.Linear``: it returns ``a_M`` (logits), as ``forward`` does.
        """
        mods: list[nn.Module] = []
        for layer in self.layers:
            lin = nn.Linear(layer.n_in, layer.n_out)
            with torch.no_grad():
                lin.weight.copy_(layer.weight[replica])
                lin.bias.copy_(layer.bias[replica])
            mods.append(lin.to(layer.weight.device, layer.weight.dtype))
            if not layer.is_output:
                mods.append(UnitModule(layer.unit))  # type: ignore[arg-type]
        return nn.Sequential(*mods)

    def describe(self) -> str:
        hidden = ",".join(sorted(set(self.hidden_names))) or "-"
        tied = ", tied weights" if self.tied else ""
        return f"{'-'.join(map(str, self.sizes))} {hidden} -> {self.output_name}{tied}, {self.replicas} replica(s)"


class UnitModule(nn.Module):
    """A hidden unit (state and transmitted value) as a module, for exported networks."""

    def __init__(self, unit: Unit):
        super().__init__()
        self.unit = unit

    def forward(self, a: Tensor) -> Tensor:
        h = self.unit(a)
        return self.unit.transmit(h, torch.rand_like if not self.unit.deterministic else None)

    def extra_repr(self) -> str:
        return self.unit.name
