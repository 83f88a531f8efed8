"""targetprop: train neural networks with difference target propagation and other credit-assignment rules,
and compare them with back-propagation on equal terms.

The names below load on first use (PEP 562), so that the command line can set up its signal handling before
PyTorch is imported: Ctrl-C while it loads is a one-line message, not a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "targetprop.config",
    "make_config": "targetprop.config",
    "Dataset": "targetprop.data",
    "load_dataset": "targetprop.data",
    "Network": "targetprop.nets",
    "parse_architecture": "targetprop.nets",
    "ReplicaRandom": "targetprop.replicas",
    "parse_seeds": "targetprop.replicas",
    "RULES": "targetprop.rules",
    "Rule": "targetprop.rules",
    "RuleConfig": "targetprop.rules",
    "get_rule": "targetprop.rules",
    "TrainResult": "targetprop.train",
    "evaluate": "targetprop.train",
    "train": "targetprop.train",
}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'targetprop' has no attribute {name!r}")


if TYPE_CHECKING:
    from targetprop.config import RunConfig, make_config
    from targetprop.data import Dataset, load_dataset
    from targetprop.nets import Network, parse_architecture
    from targetprop.replicas import ReplicaRandom, parse_seeds
    from targetprop.rules import RULES, Rule, RuleConfig, get_rule
    from targetprop.train import TrainResult, evaluate, train
