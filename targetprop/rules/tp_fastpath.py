"""The fast path of target propagation's inverse training: the same numbers as the plain path, computed faster.

:mod:`targetprop.rules.tp` reads as the algorithm, layer by layer and mini-batch by mini-batch. Two places there
hand over to this module, each under one ``if``:

- **stacking** (:meth:`InverseFastPath.stackable`): when layers ``2..T`` are square and of one width and one unit,
  their inverses ``g_i`` train as one batched product over layers instead of one product per layer. The feedback
  parameters ``[V_2, c_2, …, V_T, c_T]`` of each replica are one flat row of the feedback optimiser's buffer, so
  ``V`` is a strided ``(R·L, n, n)`` view of it and the gradients land in the optimiser's gradient buffer in place;
- **chunking** (:meth:`InverseFastPath.chunkable`): in the alternating schedule's pass of the inverses alone the
  forward weights are frozen, so the forward pass and the corrupted codes ``f_i(h_{i−1} + ε)`` are computed for
  chunks of about :attr:`InverseFastPath.chunk_rows` samples at once (large products), then the inverses train
  mini-batch by mini-batch, each with its own ``ε``, in order.

The equations are those of :meth:`TargetPropagation.inverse_gradients_at
<targetprop.rules.tp.TargetPropagation.inverse_gradients_at>`; ``tests/test_equations.py`` checks that both paths
give the same parameters, losses and random streams.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.profiler import record_function

from targetprop.nets import Activity

if TYPE_CHECKING:
    from targetprop.rules.tp import TargetPropagation


class InverseFastPath:
    """Stacked and chunked inverse training for one :class:`~targetprop.rules.tp.TargetPropagation` rule."""

    def __init__(self, rule: TargetPropagation):
        self.rule = rule
        self.stack = True
        """Train the inverses of equal-width layers as one batched product (same numbers to rounding)."""
        self.chunk_rows = 1000
        """A pass of the inverses alone shares its forward-weight work across mini-batches of about this many
        samples in all replicas together (0: off); measured best near 1000 on a 2-core CPU, for 1 and 10 replicas."""
        self.graphs = False
        """Whether the inverse pass is compiled into CUDA graphs (``compile=reduce-overhead``), whose outputs the
        next replay overwrites."""
        self._stack_key: tuple[int, ...] | None = None
        self._stack: tuple[Tensor, Tensor] | None = None

    # ---- stacking ------------------------------------------------------------------------------------------

    def stackable(self) -> bool:
        """Whether the inverses of layers 2..T can train as one batched product over layers: equal square widths,
        one deterministic unit throughout, and the feedback parameters in one flat buffer holding just them. Not
        with the output layer among them (``T = M``): its inverse reads the pre-activation ``a_M``."""
        rule = self.rule
        optimizer = rule.feedback_optimizer
        if not self.stack or optimizer is None or not optimizer.is_flat or rule.top == rule.net.depth:
            return False
        layers = [layer for _, layer in rule.inverse_layers()]
        n = layers[0].n_in
        return (
            len(layers) >= 2
            and all(layer.n_in == n and layer.n_out == n for layer in layers)
            and len({layer.unit.name for layer in rule.net.layers[: rule.top]}) == 1
            and len({layer.feedback_unit.name for layer in layers}) == 1  # type: ignore[union-attr]
            and rule.net.layers[0].unit.deterministic
            and len(optimizer.params) == 2 * len(layers)
        )

    def corrupt(self, acts: Activity, eps: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`~targetprop.rules.tp.TargetPropagation.corrupt` for every layer at once: ``h̃_{i−1}`` and
        ``d_i(f_i(h̃_{i−1}))`` as one ``(R·L, rows, n)`` tensor each (layer-major within a replica)."""
        rule = self.rule
        layers = rule.inverse_layers()
        first, n = layers[0][1], layers[0][1].n_in
        replicas, rows = rule.net.replicas, eps.shape[1]
        weight, bias = self._forward_weights()
        h_below = torch.stack([acts.h[i - 1] for i, _ in layers], 1)  # (R, L, rows, n)
        h_tilde = h_below.add_(eps.view(replicas, rows, len(layers), n).transpose(1, 2)).view(-1, rows, n)
        fh = first.unit(torch.baddbmm(bias, rule.net.layers[0].transmit(h_tilde), weight.transpose(1, 2)))
        return h_tilde, first.feedback_input(fh)

    def _forward_weights(self) -> tuple[Tensor, Tensor]:
        """``W_i, b_i`` of layers 2..T stacked as ``(R·L, n, n)`` and ``(R·L, 1, n)``; cached while they do not
        change (the whole inverse pass of the alternating schedule). Compiled code stacks them every call (the
        cache's key, the parameters' version counters, is not something a graph can hold)."""
        layers = [layer for _, layer in self.rule.inverse_layers()]
        n = layers[0].n_in

        def stack() -> tuple[Tensor, Tensor]:
            weight = torch.stack([layer.weight.detach() for layer in layers], 1).view(-1, n, n)
            bias = torch.stack([layer.bias.detach() for layer in layers], 1).view(-1, 1, n)
            return weight, bias

        if torch.compiler.is_compiling():
            return stack()
        key = tuple(p._version for layer in layers for p in (layer.weight, layer.bias))
        key += (self.rule.optimizer.slots[0]._version,)
        if self._stack_key != key or self._stack is None:
            self._stack_key, self._stack = key, stack()
        return self._stack

    def inverse_gradients_at(self, h_tilde: Tensor, fb_in: Tensor) -> tuple[list[Tensor], Tensor]:
        """:meth:`~targetprop.rules.tp.TargetPropagation.inverse_gradients_at` for all layers 2..T at once (same
        equations), from what :meth:`corrupt` gives, written into the feedback optimiser's gradient buffers."""
        rule = self.rule
        first = rule.inverse_layers()[0][1]
        replicas, batch, n = rule.net.replicas, fb_in.shape[1], first.n_in
        n_layers = rule.top - 1
        stride = n * n + n  # one layer's V and c in the flat row

        def views(flat: Tensor, start: int) -> tuple[Tensor, Tensor]:
            matrices = flat.as_strided((replicas * n_layers, n, n), (stride, n, 1), start)
            biases = flat.as_strided((replicas * n_layers, 1, n), (stride, n, 1), start + n * n)
            return matrices, biases

        optimizer = rule.feedback_optimizer
        assert optimizer is not None
        fb_weight, fb_bias = views(optimizer.slots[0], optimizer.flat_offset)
        buffers = optimizer.grad_buffers()
        grad_weight, grad_bias = views(optimizer.grad_buffer, 0)  # a tensor of its own (empty_like)
        z = torch.baddbmm(fb_bias, fb_in, fb_weight.transpose(1, 2))
        rec = first.feedback_unit(z)  # type: ignore[misc]
        diff = rec - h_tilde
        total = diff.square().view(replicas, -1).sum(1).div_(batch)
        delta = first.feedback_unit.vjp(z, rec, diff.mul_(2.0 / batch))  # type: ignore[union-attr]
        grad_weight.copy_(torch.bmm(delta.transpose(1, 2), fb_in))
        grad_bias.copy_(delta.sum(1, keepdim=True))
        return buffers, total

    # ---- chunking ------------------------------------------------------------------------------------------

    def chunkable(self, phases: Sequence[str]) -> bool:
        """Whether a pass can share the inverses' forward-weight work between mini-batches: a pass of the
        inverses alone (the forward weights stay frozen), with deterministic units below layer T (so the only
        random draw of a mini-batch is ε, and drawing it ahead keeps every number)."""
        rule = self.rule
        return (
            tuple(phases) == ("feedback",)
            and self.chunk_rows > 0
            and rule.feedback_optimizer is not None
            and rule.top >= 2
            and all(layer.unit.deterministic for layer in rule.net.layers[: rule.top - 1])
        )

    def inverse_pass(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[dict[str, Tensor]]:
        """A pass of the inverses alone in chunks of about :attr:`chunk_rows` samples: the forward pass and the
        corruption once per chunk (large matrix products, with the forward weights frozen), then the inverses'
        gradients and the feedback optimiser's step mini-batch by mini-batch. Each mini-batch gets the update of
        :meth:`~targetprop.rules.tp.TargetPropagation.step` (same ε, same order; rounding may differ)."""
        rule = self.rule
        stacked = self.stackable()
        batches = iter(batches)
        while first := next(batches, None):
            per_chunk = max(1, self.chunk_rows // (first[0].shape[1] * rule.net.replicas))
            chunk = [first, *itertools.islice(batches, per_chunk - 1)]
            sizes = [x.shape[1] for x, _ in chunk]
            eps = rule.corruption(sizes, chunk[0][0].dtype)
            h_tilde, fb_in = self._corrupt_chunk(torch.cat([x for x, _ in chunk], 1), eps, stacked)
            if self.graphs:  # a CUDA graph's outputs are overwritten by its next replay: keep this chunk's
                h_tilde, fb_in = [t.clone() for t in h_tilde], [t.clone() for t in fb_in]
            start = 0
            for size in sizes:
                rows = slice(start, start + size)
                start += size
                yield self._inverse_step([t[:, rows] for t in h_tilde], [t[:, rows] for t in fb_in], stacked)

    @torch.no_grad()
    def _corrupt_chunk(self, x: Tensor, eps: Tensor, stacked: bool) -> tuple[list[Tensor], list[Tensor]]:
        rule = self.rule
        with record_function("tp:forward pass"):
            acts = rule.net.activity(x, rule.sample, depth=rule.top - 1)
        with record_function("tp:inverse corruption"):
            if stacked:
                h_tilde, fb_in = self.corrupt(acts, eps)
                return [h_tilde], [fb_in]
            return rule.corrupt(acts, eps)

    @torch.no_grad()
    def _inverse_step(self, h_tilde: list[Tensor], fb_in: list[Tensor], stacked: bool) -> dict[str, Tensor]:
        optimizer = self.rule.feedback_optimizer
        assert optimizer is not None
        with record_function("tp:inverse gradients"):
            if stacked:
                grads, total = self.inverse_gradients_at(h_tilde[0], fb_in[0])
            else:
                grads, total = self.rule.inverse_gradients_at(h_tilde, fb_in, out=optimizer.grad_buffers())
        with record_function("tp:inverse optimizer step"):
            optimizer.step(grads)
        return {"inverse_loss": total}

    def compile(self, mode: str) -> None:
        """``torch.compile`` the two parts of a chunked inverse pass (see :meth:`Rule.compile
        <targetprop.rules.base.Rule.compile>`)."""
        self.graphs = mode == "reduce-overhead"
        self._corrupt_chunk = torch.compile(self._corrupt_chunk, mode=mode, dynamic=False)  # type: ignore[method-assign]
        self._inverse_step = torch.compile(self._inverse_step, mode=mode, dynamic=False)  # type: ignore[method-assign]
