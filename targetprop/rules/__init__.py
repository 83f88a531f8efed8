"""Credit-assignment rules. Adding a rule: one new module with a :class:`Rule` subclass, one line below."""

from __future__ import annotations

from targetprop.errors import ConfigError
from targetprop.rules.base import Rule, RuleConfig
from targetprop.rules.bp import BP
from targetprop.rules.dfa import DFA
from targetprop.rules.dtp import DTP
from targetprop.rules.dtp_autoencoder import DTPAutoencoder
from targetprop.rules.ep import EquilibriumPropagation
from targetprop.rules.fa import FA
from targetprop.rules.sg import SyntheticGradients
from targetprop.rules.tp import TP

RULES: dict[str, type[Rule]] = {
    "bp": BP,
    "tp": TP,
    "dtp": DTP,
    "dtp-ae": DTPAutoencoder,
    "fa": FA,
    "dfa": DFA,
    "sg": SyntheticGradients,
    "ep": EquilibriumPropagation,
}


def get_rule(name: str) -> type[Rule]:
    """The rule class registered under ``name``."""
    try:
        return RULES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown rule {name!r}; choose one of: {', '.join(RULES)}") from None


__all__ = ["RULES", "Rule", "RuleConfig", "get_rule"]
