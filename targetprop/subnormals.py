"""Subnormal floats on the CPU: training flushes them to zero.

A float32 below 1.18e-38 in magnitude (``torch.finfo(torch.float32).tiny``) is *subnormal*, and x86 CPUs compute
with such numbers many times slower than with normal ones. Long runs make them: an optimiser's running averages
for a weight that no longer receives a gradient (a dead or saturated unit, a weight behind a sign) decay
geometrically, ``v ← ρ v``, and after some thousands of steps pass through the subnormal range on their way to
zero; a gradient that is a product of small factors can be subnormal itself. In the ``discrete`` experiment's DTP
run (3 seeds) about 10 % of the forward optimiser's state was subnormal by epoch 146, and its training epochs had
slowed from 10.3 s to 14.5 s; resumed with flushing, they took about 10 s again. ``benchmarks/subnormals.py``
times one optimiser update on a state built to match: about 10x faster flushed (PERFORMANCE.md).

While they train, :func:`targetprop.trainer.train` and :func:`targetprop.probe.run_probe` (the auto-encoder's
classifiers) set the CPU to flush subnormal results and inputs to zero (``torch.set_flush_denormal``: the FTZ and
DAZ bits on x86) and put the caller's setting back after. Only values below 1.18e-38 change, to 0; CUDA kernels
are not affected (they flush or not as they were compiled).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SUBNORMAL = 1e-40
"""A float32 subnormal (between 0 and ``torch.finfo(torch.float32).tiny``)."""


def flushing() -> bool:
    """Whether this process flushes subnormals to zero now (torch has a setter only: the answer is measured)."""
    return torch.tensor([SUBNORMAL], dtype=torch.float32).mul(1.0).item() == 0.0


@contextlib.contextmanager
def flushed() -> Iterator[bool]:
    """Flush subnormals to zero inside the block (yields whether the CPU supports it), then restore the setting
    the block found."""
    before = flushing()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)
