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

**What a rule carries.** Everything a rule holds besides the network's own parameters lives in one place, its
:class:`RuleState` (``rule.state``): named tensors with a leading replica dimension, each either trained by one of
the rule's optimisers (synthetic-gradient predictors) or a buffer (FA's fixed feedback matrices, persistent
states), and the optimisers themselves (with their moments). Checkpoints, resume and :meth:`Rule.state_dict` with
a replica selection handle every rule through it, so a new rule that registers its tensors there needs no code
of its own to be saved, resumed or split by replica (the explicit state of optax's ``init``/``update``).

**How a trained network predicts** belongs to the rule too: :meth:`Rule.predict` is the feed-forward pass by
default; a rule whose network settles by relaxation (equilibrium propagation) overrides it, and the trainer's
evaluation calls it.

**What a rule keeps per training example** (EP's persistent states): a rule with ``indexed`` true is told the
size of the training set once, :meth:`Rule.bind_examples`, before training or restoring a checkpoint, and its
:meth:`Rule.train_pass` receives ``(x, y, index)`` triples, ``index`` ``(R, B)`` the positions of the mini-batch's
examples in the training set (each replica's own order). Other rules receive ``(x, y)`` pairs, as before.

**What a rule can show.** :meth:`Rule.signal` gives the direction in which the rule moves each hidden layer's
activity (a target minus the activity, a feedback signal, a synthetic gradient's negative), which the diagnostics
set against back-propagation's ``−∂L/∂h_i`` (:meth:`Rule.exact_signal`); its updates are set against BP's gradient
(:meth:`Rule.exact_updates`). Both references are those of the feed-forward network unless the rule's network
computes otherwise (EP's: the gradient of the cost at its free fixed point). :meth:`Rule.diagnostics` adds what
only that rule has (an inverse's error, the feedback matrices' angle with the forward weights, a predictor's
error). None of this is computed unless diagnostics are switched on.
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
from targetprop.units import Noise

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Scalar = PositiveFloat | Annotated[list[PositiveFloat], Field(min_length=1)]
"""A positive hyper-parameter (a learning rate, a scale) given once for all replicas, or once per replica."""
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeScalar = NonNegativeFloat | Annotated[list[NonNegativeFloat], Field(min_length=1)]
"""As :data:`Scalar`, where 0 means something (η̂ = 0: every target is the activity itself)."""
OptionalScalar = Scalar | None
"""As :data:`Scalar`, or unset (a schedule that is off by default)."""
PER_REPLICA = (Scalar, NonNegativeScalar, OptionalScalar)
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
    lr_decay: OptionalScalar = None
    """If set, the forward learning rate at epoch e (from 0) is ``lr / (1 + e / lr_decay)`` (one value, or one
    per replica); a rule's other learning rates (inverses, predictors) stay constant."""
    weight_decay: NonNegativeScalar = 0.0
    """Decoupled weight decay λ of the forward weights: each step first shrinks them as ``θ ← θ − lr · λ · θ``
    (AdamW's decay with Adam; one value, or one per replica; 0: none). A rule's other weights do not decay."""

    resumable: ClassVar[tuple[str, ...]] = ("lr", "lr_decay", "weight_decay")
    """Keys a resumed run may change (``targetprop train --resume RUN --set RULE.KEY=...``): they steer the
    updates from the next epoch on without changing what the saved state means."""

    @field_validator("optimizer_args", "feedback_optimizer_args", mode="after", check_fields=False)
    @classmethod
    def _optimizer_args(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from targetprop.optim import check_options

        return None if v is None else check_options(v)


class RuleState:
    """What a rule carries besides the network: named tensors, each ``(R, ...)`` (replica first), trained by one
    of the rule's optimisers or kept as buffers, and the optimisers.

    A name holds one tensor or a list of tensors (one per layer, say). :meth:`state_dict` gives every optimiser's
    state and every named tensor (or only some replicas of them); :meth:`load_state_dict` copies them back in
    place, refusing a tensor whose shape does not fit with one line naming it."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor | list[Tensor]] = {}
        self.optimizers: dict[str, Optimizer] = {}

    def add(self, name: str, value: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """Register ``value`` (a tensor or a list of tensors, replica first) under ``name``; returns it."""
        if name in self.tensors or name in ("epoch", "optimizers"):
            raise ValueError(f"the rule already carries {name!r}")
        self.tensors[name] = value
        return value

    def add_optimizer(self, name: str, optimizer: Optimizer) -> Optimizer:
        """Register the optimiser ``name`` (its moments are saved and restored with the rule)."""
        self.optimizers[name] = optimizer
        return optimizer

    def state_dict(self, replicas: Sequence[int] | None = None) -> dict[str, Any]:
        """``{"optimizers": {...}, name: tensor(s), ...}``, copies; with ``replicas``, only those replicas."""

        def pick(t: Tensor) -> Tensor:
            return t.detach().clone() if replicas is None else t.detach()[list(replicas)].clone()

        out: dict[str, Any] = {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}
        if replicas is not None:
            out["optimizers"] = {k: _select(v, replicas) for k, v in out["optimizers"].items()}
        for name, value in self.tensors.items():
            out[name] = [pick(t) for t in value] if isinstance(value, list) else pick(value)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, value in self.tensors.items():
            if name not in state:
                raise KeyError(f"the rule's {name!r} is missing")
            saved = state[name]
            mine = value if isinstance(value, list) else [value]
            theirs = saved if isinstance(saved, list) else [saved]
            if len(mine) != len(theirs) or any(m.shape != t.shape for m, t in zip(mine, theirs, strict=True)):
                shapes = [tuple(t.shape) for t in theirs]
                raise ValueError(f"the rule's {name!r} has shapes {[tuple(m.shape) for m in mine]}, saved {shapes}")
            with torch.no_grad():
                for m, t in zip(mine, theirs, strict=True):
                    m.copy_(t)


def _select(state: Any, replicas: Sequence[int]) -> Any:
    """The replicas ``replicas`` of every tensor in a nested state (an optimiser's: replica first)."""
    if isinstance(state, Tensor):
        return state[list(replicas)].clone() if state.dim() > 0 else state.clone()
    if isinstance(state, dict):
        return {k: _select(v, replicas) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_select(v, replicas) for v in state)
    return state


class Rule(ABC):
    """A credit-assignment rule. Subclasses set ``name`` and ``Config`` and implement :meth:`forward_updates`."""

    name: ClassVar[str]
    Config: ClassVar[type[RuleConfig]] = RuleConfig
    indexed: bool = False
    """Whether :meth:`train_pass` wants each mini-batch's example positions (see the module's docstring)."""
    run_defaults: ClassVar[dict[str, Any]] = {}
    """Run keys the rule needs a value of, e.g. EP's hard-sigmoid units: ``train`` and ``compare`` use them where the
    user (a flag, the config file or ``--set``) chose none (see :func:`targetprop.config.with_rule_defaults`)."""

    def __init__(self, net: Network, config: RuleConfig, noise: ReplicaRandom, task: Task | None = None):
        self.net, self.config, self.noise = net, config, noise
        self.task = task if task is not None else Classify()
        """What the network learns (its targets ``y`` and its error): see :mod:`targetprop.tasks`."""
        self.epoch = 0
        self.state = RuleState()
        """What the rule carries (tensors, optimisers): see :class:`RuleState`."""
        self.optimizer = self.state.add_optimizer(
            "forward",
            make_optimizer(
                config.optimizer,
                net.forward_parameters(),
                config.lr,
                config.optimizer_args,
                tied=net.tied_pairs(),
                weight_decay=config.weight_decay,
            ),
        )

    @classmethod
    def feedback_maps(cls, config: RuleConfig) -> str:
        """Which layers need a feedback map g_i: 'none', 'hidden' or 'all' (see :class:`Network`)."""
        return "none"

    def schedule(self) -> list[tuple[str, ...]]:
        """Passes over the training set in one epoch, each a tuple of phases run on every mini-batch."""
        return [("forward",)]

    def bind_examples(self, n: int) -> None:
        """Called by the trainer, for a rule that is ``indexed``, with the number ``n`` of training examples, before
        training or restoring a checkpoint: the rule allocates (and registers in its state) what it keeps per
        example."""
        raise NotImplementedError(f"rule {self.name!r} is indexed but keeps nothing per example")

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based), e.g. for noise schedules. Sets the forward learning
        rate of the epoch: ``lr / (1 + epoch / lr_decay)`` with ``lr_decay``, else ``lr``."""
        self.epoch = epoch
        if self.config.lr_decay is not None:
            like = self.optimizer.lr
            base = per_replica(self.config.lr, len(like), like)
            tau = per_replica(self.config.lr_decay, len(like), like)
            self.optimizer.lr.copy_(base / (1.0 + epoch / tau))

    def sample(self, h: Tensor) -> Tensor:
        """Uniform noise for stochastic units, from each replica's training stream."""
        return self.noise.uniform_like(h)

    @abstractmethod
    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The update directions this rule would give the forward parameters on a batch (as gradients: the
        optimiser descends them), in the order of ``net.forward_parameters()``, and the batch metrics.
        Changes nothing. Used by :meth:`step` and by the diagnostics."""

    def predict(self, x: Tensor, noise: Noise | None = None, samples: int = 1) -> Tensor:
        """The output pre-activation ``a_M`` ``(R, B, n_out)`` the trained network gives ``x``: by default the
        feed-forward pass, averaged over ``samples`` passes for stochastic units (:meth:`Network.predict`)."""
        return self.net.predict(x, noise, samples)

    def signal(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        """For diagnostics: per hidden layer ``i = 1..M−1``, the direction ``(R, B, n_i)`` in which this rule moves
        the activity ``h_i`` on this batch (to be set against ``−∂L/∂h_i``); None where the rule has none.
        Changes nothing."""
        return None

    def exact_updates(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """For diagnostics: back-propagation's gradient ``∂L/∂θ`` of the model this rule trains, in the order of
        ``net.forward_parameters()``, to set :meth:`forward_updates` against: by default the feed-forward network's
        (the ``bp`` rule's). Changes nothing."""
        from targetprop.rules.bp import BP

        return BP(self.net, BP.Config(), self.noise, self.task).forward_updates(x, y)[0]

    def exact_signal(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """For diagnostics: ``−∂L/∂h_i`` for the hidden layers, to set :meth:`signal` against: by default the
        feed-forward network's. Changes nothing."""
        from targetprop.rules.bp import descent_directions

        return descent_directions(self.net, x, y, self.sample)

    def diagnostics(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """For diagnostics: what only this rule has, each ``(R, L)`` per layer (NaN where a layer has none), e.g.
        an inverse's reconstruction error. Changes nothing."""
        return {}

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
        for value in self.state.tensors.values():  # buffers a step writes in place (EP's persistent states)
            for t in value if isinstance(value, list) else [value]:
                torch._dynamo.mark_static_address(t)
        if self.noise.offsets is not None:  # the Philox streams' positions, moved on in place by every draw
            torch._dynamo.mark_static_address(self.noise.offsets)
        self.step = torch.compile(self.step, mode=mode, dynamic=False)  # type: ignore[method-assign]

    def optimizers(self) -> dict[str, Optimizer]:
        return dict(self.state.optimizers)

    def state_dict(self, replicas: Sequence[int] | None = None) -> dict[str, Any]:
        """The epoch and everything the rule carries (:class:`RuleState`); with ``replicas``, only those."""
        return {"epoch": self.epoch, **self.state.state_dict(replicas)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.state.load_state_dict(state)


def per_replica_view(value: Tensor, like: Tensor) -> Tensor:
    """An ``(R,)`` tensor viewed to broadcast against ``like`` ``(R, ...)``."""
    return value.view(-1, *([1] * (like.dim() - 1)))


def as_tensor(value: Scalar, net: Network) -> Tensor:
    """A hyper-parameter as an ``(R,)`` tensor on the network's device (one value, or one per replica)."""
    return per_replica(value, net.replicas, net.layers[0].weight)


def angle_deg(a: Tensor, b: Tensor) -> Tensor:
    """Angle in degrees between ``a[r]`` and ``b[r]`` (each flattened) for every replica r; NaN where one is 0."""
    a, b = a.flatten(1), b.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
