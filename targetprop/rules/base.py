"""The interface every credit-assignment rule implements.

A rule is built on a network and owns everything it needs to train it: its optimisers (and their moments),
its hyper-parameters (one value per replica where that makes sense), and its random streams. The trainer
drives every rule the same way::

    rule = RULES["dtp"](net, DTP.Config(...), noise=ReplicaRandom(seeds, "train"))
    for phases in rule.schedule():           # e.g. [("feedback",), ("forward",)] for alternating DTP
        for metrics in rule.train_pass(batches, phases):  # one rule.step(x, y, phases) per mini-batch
            ...                                # (R,) tensors per mini-batch; parameters are updated

``step`` never synchronises with the host: metrics stay on the device until the trainer reads them.
``train_pass`` is ``step`` on each mini-batch in turn; a rule may override it to share work between the
mini-batches of a pass when the pass leaves that work's inputs unchanged (DTP's inverse pass, whose forward
weights are frozen), as long as every mini-batch gets the update ``step`` would give it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from targetprop.nets import Network
from targetprop.optim import Optimizer, make_optimizer, per_replica
from targetprop.replicas import ReplicaRandom
from targetprop.tasks import Classify, Task

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Scalar = PositiveFloat | Annotated[list[PositiveFloat], Field(min_length=1)]
"""A positive hyper-parameter (a learning rate, a scale) given once for all replicas, or once per replica."""
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeScalar = NonNegativeFloat | Annotated[list[NonNegativeFloat], Field(min_length=1)]
"""As :data:`Scalar`, where 0 means something (η̂ = 0: every target is the activity itself)."""
PER_REPLICA = (Scalar, NonNegativeScalar)
"""The field types that take one value per replica (what a sweep trains as replicas of one run)."""


class RuleConfig(BaseModel):
    """Hyper-parameters shared by every rule. Subclasses add their own fields."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lr: Scalar = 1e-3
    """Learning rate of the forward weights (one value, or one per replica)."""
    optimizer: str = "centered_rmsprop"
    """sgd, momentum, rmsprop, adam or centered_rmsprop (the DTP authors' centered RMSprop with momentum)."""
    optimizer_args: dict[str, float] = {}
    """Options of the optimizer, e.g. {momentum = 0.9}."""

    resumable: ClassVar[tuple[str, ...]] = ("lr",)
    """Keys a resumed run may change (``targetprop train --resume RUN --set RULE.KEY=...``): they steer the
    updates from the next epoch on without changing what the saved state means."""

    @field_validator("optimizer_args", "feedback_optimizer_args", mode="after", check_fields=False)
    @classmethod
    def _optimizer_args(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from targetprop.optim import check_options

        return None if v is None else check_options(v)


class Rule(ABC):
    """A credit-assignment rule. Subclasses set ``name`` and ``Config`` and implement :meth:`forward_updates`."""

    name: ClassVar[str]
    Config: ClassVar[type[RuleConfig]] = RuleConfig

    def __init__(self, net: Network, config: RuleConfig, noise: ReplicaRandom, task: Task | None = None):
        self.net, self.config, self.noise = net, config, noise
        self.task = task if task is not None else Classify()
        """What the network learns (its targets ``y`` and its error): see :mod:`targetprop.tasks`."""
        self.epoch = 0
        self.optimizer = make_optimizer(
            config.optimizer, net.forward_parameters(), config.lr, config.optimizer_args, tied=net.tied_pairs()
        )

    @classmethod
    def feedback_maps(cls, config: RuleConfig) -> str:
        """Which layers need a feedback map g_i: 'none', 'hidden' or 'all' (see :class:`Network`)."""
        return "none"

    def schedule(self) -> list[tuple[str, ...]]:
        """Passes over the training set in one epoch, each a tuple of phases run on every mini-batch."""
        return [("forward",)]

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based), e.g. for noise schedules."""
        self.epoch = epoch

    def sample(self, h: Tensor) -> Tensor:
        """Uniform noise for stochastic units, from each replica's training stream."""
        return self.noise.uniform_like(h)

    @abstractmethod
    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The update directions this rule would give the forward parameters on a batch (as gradients: the
        optimiser descends them), in the order of ``net.forward_parameters()``, and the batch metrics.
        Changes nothing. Used by :meth:`step` and by the diagnostics."""

    def metrics(self, a: Tensor, y: Tensor, loss: Tensor | None = None) -> dict[str, Tensor]:
        """The batch cost and the task's summed error from the output pre-activation ``a``."""
        return self.task.batch_metrics(self.net.output_unit, a, y, loss)

    def step(self, x: Tensor, y: Tensor, phases: Sequence[str] = ("forward",)) -> dict[str, Tensor]:
        """Train on one mini-batch ``x`` ``(R, B, n_in)``, targets ``y`` ``(R, B)`` (classes) or ``(R, B, n_out)``;
        returns ``(R,)`` metrics."""
        grads, metrics = self.forward_updates(x, y)
        self.optimizer.step(grads)
        return metrics

    def train_pass(
        self, batches: Iterable[tuple[Tensor, Tensor]], phases: Sequence[str]
    ) -> Iterator[dict[str, Tensor]]:
        """One pass of ``phases`` over ``batches``, in order: yields each mini-batch's metrics after its update."""
        for x, y in batches:
            yield self.step(x, y, phases)

    def compile(self, mode: str = "default") -> None:
        """Replace :meth:`step` by its ``torch.compile`` d version (inductor): the element-wise work of a step
        fuses into a few kernels. ``mode="reduce-overhead"`` also captures CUDA graphs on a GPU. Compilation
        happens on the first step of each phase; the numbers agree with the eager step to rounding."""
        # dynamo keeps at most `recompile_limit` compiled versions per function, shared by every rule instance of
        # a class: a process training several networks or phases (a benchmark, a sweep) needs more than the 8
        # allowed by default, or later ones silently run eagerly.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for optimizer in self.optimizers().values():
            optimizer.prepare()
        self.step = torch.compile(self.step, mode=mode, dynamic=False)  # type: ignore[method-assign]

    def optimizers(self) -> dict[str, Optimizer]:
        return {"forward": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])


def per_replica_view(value: Tensor, like: Tensor) -> Tensor:
    """An ``(R,)`` tensor viewed to broadcast against ``like`` ``(R, ...)``."""
    return value.view(-1, *([1] * (like.dim() - 1)))


def as_tensor(value: Scalar, net: Network) -> Tensor:
    """A hyper-parameter as an ``(R,)`` tensor on the network's device (one value, or one per replica)."""
    return per_replica(value, net.replicas, net.layers[0].weight)
