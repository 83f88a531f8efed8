"""The space file of a sweep: what is searched, how each key is drawn, and the base run it modifies.

``load_space`` reads a space file (see ``targetprop.sweep``) into a ``Space``: the ``[sweep]`` settings, the base
run's keys (a preset merged in) and one ``Param`` per searched key. Every check that a space can make runs here,
before anything is written: unknown or unsearchable keys (with a close match suggested), malformed ranges, and the
values at the edges of the space, which must each make a valid run config.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import optuna
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from targetprop.config import RunConfig, describe_validation_error, load_toml, make_config
from targetprop.errors import ConfigError
from targetprop.experiments import load_config_source
from targetprop.rules import RULES, get_rule
from targetprop.rules.base import PER_REPLICA
from targetprop.sweep.groups import dataset_for

NOT_SEARCHABLE = ("rule", "data", "data_dir", "download", "seeds", "device", "out", "name")
"""Run keys a space cannot search: they say what is studied and where, not how it is trained."""
EXECUTION_KEYS = ("trials", "replicas", "processes", "threads", "name", "out")
"""[sweep] keys a resumed sweep may change: how much runs and where, not what is searched."""
RUN_PLACE_KEYS = ("data_dir", "download", "device", "out", "name")
"""Base-run keys a resumed sweep may change."""
PLACE_AND_THREADS = (*RUN_PLACE_KEYS, "threads")
"""Keys that say where and on how many threads a run goes: left out of what a resumed sweep compares."""
SPEC_KEYS = {"low", "high", "log", "step", "choices"}


class SweepSettings(BaseModel):
    """The [sweep] table."""

    model_config = ConfigDict(extra="forbid")

    sampler: Literal["tpe", "random"] = "tpe"
    trials: int = Field(20, ge=1)
    replicas: int = Field(1, ge=1)
    processes: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)
    metric: Literal["best_valid_error", "valid_error", "train_error"] = "best_valid_error"
    seed: int = 0
    startup_trials: int = Field(10, ge=0)
    name: str | None = None
    out: str | None = None


@dataclass(frozen=True)
class Param:
    """One searched key: ``name`` as written ("dtp.lr"), where it goes in the run config, how it is drawn."""

    name: str
    path: tuple[str, ...]
    spec: dict[str, Any]
    kind: Literal["float", "int", "choice"]
    per_replica: bool

    def suggest(self, trial: optuna.Trial) -> Any:
        s = self.spec
        if "choices" in s:
            return trial.suggest_categorical(self.name, s["choices"])
        if self.kind == "int":
            return trial.suggest_int(self.name, s["low"], s["high"], step=s.get("step", 1), log=s.get("log", False))
        return trial.suggest_float(self.name, s["low"], s["high"], step=s.get("step"), log=s.get("log", False))

    def probes(self) -> list[Any]:
        """The values that bound what can be drawn (checked against the run config before anything runs)."""
        return list(self.spec["choices"]) if "choices" in self.spec else [self.spec["low"], self.spec["high"]]


@dataclass
class Space:
    """A parsed, validated space file."""

    settings: SweepSettings
    base: dict[str, Any]
    """The base run's keys (a preset merged in)."""
    params: list[Param]
    raw_space: dict[str, Any]
    source: str

    @property
    def seed(self) -> int:
        return make_config(self.base).seeds[0]

    @property
    def per_replica(self) -> bool:
        return all(p.per_replica for p in self.params)

    @property
    def group_size(self) -> int:
        """Trials per run: ``replicas`` when every searched key takes one value per replica, else 1."""
        return self.settings.replicas if self.per_replica else 1

    def run_config(self, values: list[dict[str, Any]], run_dir: Path, **overrides: Any) -> RunConfig:
        """The config of one run whose replica r is the trial with ``values[r]``; every replica has the base seed."""
        data = copy.deepcopy(self.base)
        for p in self.params:
            column = [v[p.name] for v in values]
            target = data
            for key in p.path[:-1]:
                target = target.setdefault(key, {})
            target[p.path[-1]] = column if len(column) > 1 else column[0]
        seed = self.seed
        # the replicas are different trials that must start alike: one seed, repeated
        return make_config(data, out=str(run_dir.parent), name=run_dir.name, seeds=[seed] * len(values), **overrides)

    def probe_configs(self, **overrides: Any) -> Iterator[RunConfig]:
        """A run config for each value at the edges of the space (the others at their first); ConfigError names
        the value that makes an invalid run."""
        for p in self.params:
            for value in p.probes():
                values = {q.name: (value if q is p else q.probes()[0]) for q in self.params}
                try:
                    yield self.run_config([values], Path("probe"), **overrides)
                except ConfigError as e:
                    raise ConfigError(f"space file {self.source!r}: [space] {p.name} = {value!r}: {e}") from None

    def check_runs(self, **overrides: Any) -> None:
        """Load the data and build the network and rule of every probe config, so that a space whose runs cannot
        start (an architecture that does not fit the data, missing data files) fails before anything is written."""
        from targetprop.trainer import build

        for cfg in self.probe_configs(**overrides):
            try:
                build(cfg, dataset_for(cfg))
            except ConfigError as e:
                raise ConfigError(f"space file {self.source!r}: {e}") from None

    def resolved_run(self) -> dict[str, Any]:
        """The base run with every default filled in (every key a run reads, as ``config.toml`` records it), so
        that the sweep's record says what its trials ran even where the file relied on a default; the keys that
        say where it runs (data folder, device, threads, output) only where the file gave them."""
        run = make_config(self.base).to_dict()
        return {k: v for k, v in run.items() if k not in PLACE_AND_THREADS or k in self.base}

    def definition(self) -> dict[str, Any]:
        """What a resumed sweep must search exactly as before (as JSON-ready data): the [sweep] settings but
        those that only say how much runs, the resolved base run (:func:`comparable_run`) and the space."""
        settings = self.settings.model_dump(exclude=set(EXECUTION_KEYS))
        return as_json({"sweep": settings, "run": comparable_run(self.base), "space": self.raw_space})

    def resolved_toml(self) -> str:
        """The space as a self-contained TOML file: the base run resolved (:meth:`resolved_run`), the preset or
        experiment it started from merged in."""
        doc = {"sweep": self.settings.model_dump(exclude_none=True), **self.resolved_run(), "space": self.raw_space}
        return f"# {self.source}, resolved by `targetprop sweep`\n" + tomli_w.dumps(doc)


def as_json(data: Any) -> Any:
    """``data`` as JSON gives it back (tuples as lists, unknown types as strings): how a study stores it."""
    return json.loads(json.dumps(data, default=str))


def comparable_run(base: dict[str, Any]) -> dict[str, Any]:
    """A base run as a resumed sweep compares it: every default filled in, so that a space file that spells a
    default out and one that relies on it are the same sweep (and a sweep recorded before the defaults were
    written into its ``space.toml`` still resumes from it), without the keys a resumed sweep may change."""
    run = make_config(base).to_dict()
    return as_json({k: v for k, v in run.items() if k not in PLACE_AND_THREADS})


def bundled_space_names() -> list[str]:
    """The space files shipped with targetprop, by the names ``targetprop sweep NAME`` takes (``dtp-digits``)."""
    folder = resources.files("targetprop.experiments") / "sweeps"
    return sorted(p.name[:-5].replace("_", "-") for p in folder.iterdir() if p.name.endswith(".toml"))


def bundled_space(name: str) -> Path | None:
    """A space file shipped with targetprop (``dtp-digits`` → ``experiments/sweeps/dtp_digits.toml``)."""
    candidate = resources.files("targetprop.experiments") / "sweeps" / f"{name.replace('-', '_')}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def load_space(source: str | Path) -> Space:
    """Read and check a space file (a path, or the name of a bundled one); ConfigError says what is wrong."""
    path = Path(source)
    name = path.stem  # the sweep directory's default name: a file's stem, or a bundled space's name as given
    if not path.exists():
        name = str(source)
        bundled = bundled_space(name)
        if bundled is None:
            raise ConfigError(
                f"space file {str(source)!r} not found; bundled spaces: {', '.join(bundled_space_names())}"
            )
        path = bundled
    doc = load_toml(path)
    where = f"space file {str(source)!r}"
    sweep = doc.pop("sweep", {})
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where}: [sweep] must be a table")
    misplaced = [
        k for k in sweep if k not in SweepSettings.model_fields and (k in RunConfig.model_fields or k in RULES)
    ]
    if misplaced:
        raise ConfigError(
            f"{where}: {misplaced[0]!r} is a key of the base run, but it follows the [sweep] header, so it belongs "
            "to [sweep]; put the base run's keys before the first [table]"
        )
    try:
        settings = SweepSettings(**sweep)
    except ValidationError as e:
        raise ConfigError(f"{where}: [sweep] " + describe_validation_error(e, SweepSettings)) from None
    if settings.name is None:
        settings.name = name
    raw_space = doc.pop("space", None)
    if not isinstance(raw_space, dict) or not raw_space:
        raise ConfigError(
            f"{where} has no [space] table; add the keys to search, e.g. "
            '"dtp.lr" = {low = 1e-4, high = 1e-2, log = true}'
        )
    base = _base_run(doc, path, where)
    cfg = make_config(base)  # the base run alone must be valid
    if len(cfg.seeds) != 1:
        raise ConfigError(
            f"{where}: give one seed (seeds = {cfg.seeds[0]}); every trial starts from it, so trials differ "
            "only in the searched keys"
        )
    flat = _flatten(raw_space)
    params = [_param(name, spec, cfg.rule, where) for name, spec in flat.items()]
    space = Space(settings, base, params, flat, str(path))
    for _ in space.probe_configs():  # every value at the edges of the space makes a valid run config
        pass
    return space


def _base_run(doc: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    """The base run, updated with the file's keys: a preset (``preset = NAME``, or a TOML file relative to the space
    file), or one method of a ``targetprop reproduce`` experiment (``experiment = "stochastic"``, ``method = "dtp"``:
    the settings that method runs with at full scale, so a search cannot drift from the experiment it serves)."""
    preset = doc.pop("preset", None)
    experiment, method = doc.pop("experiment", None), doc.pop("method", None)
    base: dict[str, Any] = {}
    if preset is not None and experiment is not None:
        raise ConfigError(f"{where}: give preset or experiment, not both")
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(f"{where}: preset must be a preset name or a TOML file, got {preset!r}")
        beside = path.parent / preset
        base = load_config_source(str(beside) if beside.is_file() else preset)
    elif experiment is not None or method is not None:
        base = _experiment_method_run(experiment, method, where)
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def _experiment_method_run(experiment: Any, method: Any, where: str) -> dict[str, Any]:
    """The run keys of ``method`` of the ``reproduce`` experiment ``experiment`` at full scale, without the keys
    that say where and on what it ran (device, threads, seeds, output folder)."""
    from targetprop.experiments import find_self_running, get_experiment
    from targetprop.reproduce import method_config

    if not isinstance(experiment, str) or not isinstance(method, str):
        raise ConfigError(
            f'{where}: give experiment and method together, e.g. experiment = "stochastic", method = "dtp"'
        )
    if find_self_running(experiment) is not None:
        raise ConfigError(f"{where}: experiment {experiment!r} runs itself and has no methods to search")
    try:
        found = get_experiment(experiment)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    chosen = next((m for m in found.methods if m.name == method), None)
    if chosen is None:
        names = ", ".join(m.name for m in found.methods)
        raise ConfigError(f"{where}: experiment {found.name!r} has no method {method!r}; its methods: {names}")
    run = method_config(found, chosen, scale="full").to_dict()
    return {k: v for k, v in run.items() if k not in (*PLACE_AND_THREADS, "seeds")}


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dtp": {"lr": {...}}}`` (dotted keys without quotes) → ``{"dtp.lr": {...}}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & SPEC_KEYS:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _param(name: str, spec: Any, rule: str, where: str) -> Param:
    head = f"{where}: [space] {name}"
    path = tuple(name.split("."))
    rule_fields = get_rule(rule).Config.model_fields
    if len(path) == 1 and path[0] in RunConfig.model_fields:
        if path[0] in NOT_SEARCHABLE:
            raise ConfigError(f"{head}: {path[0]} cannot be searched; set it in the base run")
        annotation = RunConfig.model_fields[path[0]].annotation
    elif len(path) == 2 and path[0] == rule and path[1] in rule_fields:
        annotation = rule_fields[path[1]].annotation
    elif len(path) == 2 and path[0] in RULES:
        if path[0] != rule:
            raise ConfigError(f"{head}: the base run trains rule {rule!r}; search {rule}.KEY keys (one rule per sweep)")
        hint = difflib.get_close_matches(path[1], list(rule_fields), n=1)
        did = f" (did you mean {rule}.{hint[0]}?)" if hint else ""
        raise ConfigError(f"{head}: {rule} has no key {path[1]!r}{did}; its keys: {', '.join(rule_fields)}")
    else:
        known = [f"{rule}.{k}" for k in rule_fields] + [k for k in RunConfig.model_fields if k not in NOT_SEARCHABLE]
        hint = difflib.get_close_matches(name, known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{head} is not a key of the run or of rule {rule}{did}; searchable: {', '.join(known)}")

    if not isinstance(spec, dict):
        raise ConfigError(
            f"{head} must be a table, {{low = ..., high = ...}} or {{choices = [...]}}; "
            f"to fix a value, set it in the base run"
        )
    kind = _kind(annotation)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{head}: unknown key(s) {', '.join(sorted(unknown))}; use low, high, log, step or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"}:
            raise ConfigError(f"{head}: give either choices or low/high, not both")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{head}: choices must be a non-empty list")
        if not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise ConfigError(f"{head}: choices must be numbers, strings or booleans")
    else:
        if kind == "choice":
            raise ConfigError(f"{head}: {path[-1]} is not a number; search it with choices = [...]")
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"{head}: give low and high (and optionally log = true or step), or choices = [...]")
        numbers = [spec[k] for k in ("low", "high", "step") if k in spec]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            raise ConfigError(f"{head}: low, high and step must be numbers")
        if kind == "int" and not all(isinstance(v, int) for v in numbers):
            raise ConfigError(f"{head}: {path[-1]} is an integer; give integer low, high and step")
        if not spec["low"] < spec["high"]:
            raise ConfigError(f"{head}: low must be below high (got {spec['low']} and {spec['high']})")
        if not isinstance(spec.get("log", False), bool):
            raise ConfigError(f"{head}: log must be true or false")
        if spec.get("log") and spec["low"] <= 0:
            raise ConfigError(f"{head}: a log scale needs low > 0 (got {spec['low']})")
        if "step" in spec and (spec["step"] <= 0 or (spec.get("log") and kind == "float")):
            raise ConfigError(f"{head}: step must be positive, and a float key takes step or log, not both")
    return Param(name, path, dict(spec), kind, per_replica=len(path) == 2 and annotation in PER_REPLICA)


def _kind(annotation: Any) -> Literal["float", "int", "choice"]:
    """How a field's values are drawn: ints for int fields, floats for float (and per-replica) fields."""
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    args = {get_args(a)[0] if get_origin(a) is Annotated else a for a in args}  # constrained floats are floats
    args.discard(NoneType)
    if args == {int}:
        return "int"
    if float in args:
        return "float"
    return "choice"
