"""Credit-assignment rules. Adding a rule: one new module with a :class:`Rule` subclass, one line below.

The registry names each rule's class by where it lives and imports it when first asked for, so that the command
line can list the names (``targetprop --help``) without loading PyTorch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from targetprop.errors import ConfigError

if TYPE_CHECKING:
    from targetprop.rules.base import Rule, RuleConfig


class Registry(Mapping[str, "type[Rule]"]):
    """Rule name → class, from ``"module:Class"`` entries imported on first use."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries
        self._loaded: dict[str, type[Rule]] = {}

    def __getitem__(self, name: str) -> type[Rule]:
        if name not in self._loaded:
            module, _, cls = self._entries[name].partition(":")  # KeyError for an unknown name, as a dict
            self._loaded[name] = getattr(importlib.import_module(module), cls)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._entries)})"


RULES = Registry(
    {
        "bp": "targetprop.rules.bp:BP",
        "tp": "targetprop.rules.tp:TP",
        "dtp": "targetprop.rules.dtp:DTP",
        "dtp-ae": "targetprop.rules.dtp_autoencoder:DTPAutoencoder",
        "fa": "targetprop.rules.fa:FA",
        "dfa": "targetprop.rules.dfa:DFA",
        "sg": "targetprop.rules.sg:SyntheticGradients",
        "ep": "targetprop.rules.ep:EquilibriumPropagation",
    }
)


def rule_name(name: str) -> str:
    """``name`` as the registry spells it (lower case), checked without importing the rule (or PyTorch)."""
    if name.lower() not in RULES:
        raise ConfigError(f"unknown rule {name!r}; choose one of: {', '.join(RULES)}")
    return name.lower()


def get_rule(name: str) -> type[Rule]:
    """The rule class registered under ``name``."""
    return RULES[rule_name(name)]


def __getattr__(name: str) -> Any:
    """``Rule`` and ``RuleConfig``, loaded (with PyTorch) when first used."""
    if name in ("Rule", "RuleConfig"):
        from targetprop.rules import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RULES", "Registry", "Rule", "RuleConfig", "get_rule", "rule_name"]
