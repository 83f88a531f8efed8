"""targetprop: train neural networks with difference target propagation and other credit-assignment rules,
and compare them with back-propagation on equal terms."""

from targetprop.nets import Network, parse_architecture
from targetprop.replicas import ReplicaRandom, parse_seeds
from targetprop.rules import RULES, Rule, RuleConfig, get_rule

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "Network",
    "ReplicaRandom",
    "Rule",
    "RuleConfig",
    "__version__",
    "get_rule",
    "parse_architecture",
    "parse_seeds",
]
