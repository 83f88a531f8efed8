"""targetprop: train neural networks with difference target propagation and other credit-assignment rules,
and compare them with back-propagation on equal terms."""

from targetprop import signals

_previous = signals.guard()  # only when loading as the command line (see targetprop/signals.py)

from targetprop.config import RunConfig, make_config  # noqa: E402
from targetprop.data import Dataset, load_dataset  # noqa: E402
from targetprop.nets import Network, parse_architecture  # noqa: E402
from targetprop.replicas import ReplicaRandom, parse_seeds  # noqa: E402
from targetprop.rules import RULES, Rule, RuleConfig, get_rule  # noqa: E402
from targetprop.train import TrainResult, evaluate, train  # noqa: E402

signals.release(_previous)

__version__ = "0.1.0"

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
