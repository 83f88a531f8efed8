"""targetprop: train neural networks with difference target propagation and other credit-assignment rules,
and compare them with back-propagation on equal terms.

The public names below load on first use (PEP 562), so that ``import targetprop`` and the command line's
``--help`` do not wait seconds for PyTorch; ``from targetprop import train`` loads what ``train`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the distribution's version too (pyproject.toml reads it from here)

_PUBLIC = {
    "RULES": "targetprop.rules",
    "Dataset": "targetprop.data",
    "Network": "targetprop.nets",
    "ReplicaRandom": "targetprop.replicas",
    "Rule": "targetprop.rules",
    "RuleConfig": "targetprop.rules",
    "RunConfig": "targetprop.config",
    "TrainResult": "targetprop.trainer",
    "evaluate": "targetprop.trainer",
    "get_rule": "targetprop.rules",
    "load_dataset": "targetprop.data",
    "make_config": "targetprop.config",
    "parse_architecture": "targetprop.nets",
    "parse_seeds": "targetprop.replicas",
    "train": "targetprop.trainer",
}
"""Each public name → the module that defines it."""

if TYPE_CHECKING:
    from targetprop.config import RunConfig, make_config
    from targetprop.data import Dataset, load_dataset
    from targetprop.nets import Network, parse_architecture
    from targetprop.replicas import ReplicaRandom, parse_seeds
    from targetprop.rules import RULES, Rule, RuleConfig, get_rule
    from targetprop.trainer import TrainResult, evaluate, train


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'targetprop' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "RULES",
    "Dataset",
    "Network",
    "ReplicaRandom",
    "Rule",
    "RuleConfig",
    "RunConfig",
    "TrainResult",
    "__version__",
    "evaluate",
    "get_rule",
    "load_dataset",
    "make_config",
    "parse_architecture",
    "parse_seeds",
    "train",
]
