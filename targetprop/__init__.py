"""targetprop: train neural networks with difference target propagation and other credit-assignment rules,
and compare them with back-propagation on equal terms."""

from targetprop.config import RunConfig, make_config
from targetprop.data import Dataset, load_dataset
from targetprop.nets import Network, parse_architecture
from targetprop.replicas import ReplicaRandom, parse_seeds
from targetprop.rules import RULES, Rule, RuleConfig, get_rule
from targetprop.train import TrainResult, evaluate, train

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
