"""Bundled experiments: configurations (TOML files beside this module), used as ``--config NAME``, and the
experiments ``targetprop reproduce NAME`` runs, one module per source:

- :mod:`targetprop.experiments.paper`: the DTP paper's (Lee et al. 2015), and the types every experiment uses;
- :mod:`targetprop.experiments.deep_learning_book`: Deep Learning, chapter 6 (Goodfellow et al. 2016): xor;
- :mod:`targetprop.experiments.rules_mnist`: every rule on Bartunov et al. 2018's fully connected MNIST net;
- :mod:`targetprop.experiments.early_inference`: a measurement that trains no methods and runs itself (Bengio &
  Fischer 2015 on equilibrium propagation's energy net).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from targetprop.config import load_toml
from targetprop.errors import ConfigError
from targetprop.experiments import deep_learning_book, early_inference, paper, rules_mnist
from targetprop.experiments.paper import Experiment, SelfRunning

EXPERIMENTS: tuple[Experiment, ...] = paper.EXPERIMENTS + rules_mnist.EXPERIMENTS + deep_learning_book.EXPERIMENTS
"""Every experiment ``targetprop reproduce`` knows, in the order ``--list`` shows them."""
SELF_RUNNING: tuple[SelfRunning, ...] = (early_inference.EARLY_INFERENCE,)
"""Experiments that train no methods and run themselves (``--list`` shows them after the others)."""


def experiment_names() -> list[str]:
    return [e.name for e in EXPERIMENTS]


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` or one of its aliases (``mnist-paper`` is ``mnist-tanh``)."""
    key = name.strip().lower()
    for e in EXPERIMENTS:
        if key == e.name or key in e.aliases:
            return e
    names = [*experiment_names(), *(e.name for e in SELF_RUNNING)]
    raise ConfigError(f"no experiment named {name!r}; experiments: {', '.join(names)}")


def find_self_running(name: str) -> SelfRunning | None:
    """The experiment that runs itself called ``name`` (or one of its aliases), if there is one."""
    key = name.strip().lower()
    return next((e for e in SELF_RUNNING if key == e.name or key in e.aliases), None)


def preset_path(name: str) -> Path | None:
    """The TOML file of preset ``name`` (``mnist-paper`` → ``mnist_paper.toml``), if it exists."""
    candidate = resources.files(__name__) / f"{name.replace('-', '_')}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def preset_names() -> list[str]:
    folder = resources.files(__name__)
    return sorted(p.name[:-5].replace("_", "-") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config_source(source: str | None) -> dict[str, Any]:
    """The raw settings of a TOML file or of a preset name; ``{}`` for ``None``."""
    if source is None:
        return {}
    if Path(source).exists():
        return load_toml(source)
    preset = preset_path(source)
    if preset is not None:
        return load_toml(preset)
    if source.endswith(".toml"):
        return load_toml(source)  # reports the missing file
    raise ConfigError(f"no config file or preset named {source!r}; presets: {', '.join(preset_names())}")
