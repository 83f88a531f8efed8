"""What a network learns: the targets it is trained towards and how it is scored.

The trainer, the rules and the evaluation know only "the target of a sample" and "the task's error"; a task says
what those are. Three tasks:

- ``classify``: the target of a sample is its class; the output unit's cost compares the output with its one-hot
  code; the error is the percentage of samples whose largest output is not their class.
- ``binary``: two classes through *one* output unit whose target is the class itself, ``t ∈ {0, 1}``: a linear
  unit on the squared error ``(a_M − t)²`` (Deep Learning, section 6.1: the XOR network) or a sigmoid unit on the
  binary cross-entropy (the Bernoulli output of section 6.2.2.2); the error is the percentage of samples whose
  output ``s(a_M)`` lies on the wrong side of 1/2.
- ``reconstruct``: the target of a sample is the sample itself (an auto-encoder, e.g. 784-1000-784); the cost
  compares the output with the input (sigmoid + binary cross-entropy for inputs in [0, 1], or linear + squared
  error); the error is the mean squared reconstruction error per sample, ``(1/N) Σ_n ||s(a_M) − x_n||²``.

Rules receive targets ``y`` as the output unit takes them: class indices ``(R, B)`` or dense targets
``(R, B, n_out)`` (:class:`targetprop.units.OutputUnit` accepts both), and report the task's batch metrics through
:meth:`Task.batch_metrics`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from targetprop.data import Dataset, Split
from targetprop.errors import ConfigError
from targetprop.units import OutputUnit

EVAL_CHUNK = 10_000


class Task(ABC):
    name: ClassVar[str]
    error_label: ClassVar[str]
    """How the error is shown in tables, e.g. "error %"."""

    @abstractmethod
    def targets(self, split: Split) -> Tensor:
        """One target per sample of ``split``, indexed like its inputs (the trainer gathers mini-batches of it)."""

    @abstractmethod
    def n_outputs(self, dataset: Dataset) -> int:
        """The width of the output layer this task needs on ``dataset``."""

    def check(self, sizes: list[int], output: str, dataset: Dataset, arch: str) -> None:
        """Refuse an architecture or output unit the task cannot train, in one line."""
        n_out = self.n_outputs(dataset)
        if sizes[0] != dataset.n_inputs or sizes[-1] != n_out:
            raise ConfigError(
                f"architecture {arch} does not fit {dataset.name}: it needs {dataset.n_inputs} inputs "
                f"and {n_out} outputs, e.g. {dataset.n_inputs}-240x2-{n_out}"
            )

    @abstractmethod
    def sample_errors(self, out: OutputUnit, a: Tensor, y: Tensor) -> Tensor:
        """Per-sample error, ``a.shape[:-1]``: what :meth:`evaluate` averages."""

    def batch_metrics(self, out: OutputUnit, a: Tensor, y: Tensor, loss: Tensor | None = None) -> dict[str, Tensor]:
        """Per-replica batch cost (batch mean) and summed per-sample error of a mini-batch, from its output
        pre-activation ``a`` ``(R, B, n_out)``; no host synchronisation."""
        a = a.detach()
        if loss is None:
            loss = out.loss(a, y)
        return {"loss": loss.detach(), "errors": self.sample_errors(out, a, y).sum(-1).to(a.dtype)}

    @abstractmethod
    def scale(self) -> float:
        """Factor from the mean per-sample error to the error reported (100 for percentages)."""

    def chance_error(self, split: Split) -> float | None:
        """The error of a net that has learned nothing of the inputs, or None where the task has no such level.
        The trainer flags a replica that falls back to it after learning (see :func:`targetprop.health.collapse_epoch`).
        """
        return None

    @torch.no_grad()
    def evaluate(
        self,
        forward: Callable[[Tensor], Tensor],
        out: OutputUnit,
        split: Split,
        replicas: int,
        dtype: torch.dtype,
    ) -> dict[str, Tensor]:
        """Per-replica error and mean cost on a split. ``forward(x)`` gives the output pre-activation (for
        stochastic units, the one of the outputs averaged over passes: see :func:`targetprop.trainer.evaluate`)."""
        errors = torch.zeros(replicas, dtype=torch.float32, device=split.x.device)
        losses = torch.zeros(replicas, dtype=torch.float32, device=split.x.device)
        targets = self.targets(split)
        for start in range(0, len(targets), EVAL_CHUNK):
            x = split.x[start : start + EVAL_CHUNK].to(dtype)
            y = self.expand(targets[start : start + EVAL_CHUNK], replicas, dtype)
            a = forward(x)
            losses += out.sample_loss(a, y).sum(-1).float()
            errors += self.sample_errors(out, a, y).sum(-1).float()
        n = len(targets)
        return {"error": self.scale() * errors / n, "loss": losses / n}

    @staticmethod
    def expand(y: Tensor, replicas: int, dtype: torch.dtype) -> Tensor:
        """Targets of some samples, broadcast over the replicas (dense targets in the network's dtype)."""
        if y.is_floating_point():
            return y.to(dtype).expand(replicas, *y.shape)
        return y.expand(replicas, -1)


class Classify(Task):
    name = "classify"
    error_label = "error %"

    def targets(self, split: Split) -> Tensor:
        return split.y

    def n_outputs(self, dataset: Dataset) -> int:
        return dataset.n_classes

    def sample_errors(self, out: OutputUnit, a: Tensor, y: Tensor) -> Tensor:
        """1 where the largest output is not the class, else 0."""
        return (a.argmax(-1) != y).to(a.dtype)

    def scale(self) -> float:
        return 100.0

    def chance_error(self, split: Split) -> float | None:
        return majority_error(split)


class Binary(Task):
    name = "binary"
    error_label = "error %"

    def targets(self, split: Split) -> Tensor:
        """The class as a number, ``t = y`` ``(N, 1)``: one dense target per sample for the one output unit."""
        return split.y.to(torch.float32).unsqueeze(-1)

    def n_outputs(self, dataset: Dataset) -> int:
        return 1

    def check(self, sizes: list[int], output: str, dataset: Dataset, arch: str) -> None:
        if dataset.n_classes != 2:
            raise ConfigError(f"task binary needs two classes, {dataset.name} has {dataset.n_classes}: use classify")
        super().check(sizes, output, dataset, arch)
        if output == "softmax":
            raise ConfigError(
                "task binary has one output unit, where a softmax is always 1: use --output linear (squared error) "
                "or sigmoid (binary cross-entropy)"
            )

    def sample_errors(self, out: OutputUnit, a: Tensor, y: Tensor) -> Tensor:
        """1 where ``s(a_M) > 1/2`` and ``t = 0``, or ``s(a_M) ≤ 1/2`` and ``t = 1``; else 0."""
        return ((out(a) > 0.5) != (y > 0.5)).squeeze(-1).to(a.dtype)

    def scale(self) -> float:
        return 100.0

    def chance_error(self, split: Split) -> float | None:
        return majority_error(split)


class Reconstruct(Task):
    name = "reconstruct"
    error_label = "reconstruction error"

    def targets(self, split: Split) -> Tensor:
        return split.x

    def n_outputs(self, dataset: Dataset) -> int:
        return dataset.n_inputs

    def check(self, sizes: list[int], output: str, dataset: Dataset, arch: str) -> None:
        super().check(sizes, output, dataset, arch)
        if output == "softmax":
            raise ConfigError(
                "reconstruct compares each output with a pixel: use --output sigmoid (inputs in [0, 1]) or linear"
            )

    def sample_errors(self, out: OutputUnit, a: Tensor, y: Tensor) -> Tensor:
        """``||s(a_M) − x||²`` per sample."""
        return (out(a) - y).square().sum(-1)

    def scale(self) -> float:
        return 1.0


def majority_error(split: Split) -> float:
    """Error % of always answering the most frequent class: ``100 (1 − max_k N_k / N)``."""
    counts = torch.bincount(split.y.long().flatten())
    return 100.0 * (1.0 - counts.max().item() / len(split.y))


TASKS: dict[str, type[Task]] = {"classify": Classify, "binary": Binary, "reconstruct": Reconstruct}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None
