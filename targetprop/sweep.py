"""Hyper-parameter sweeps with Optuna: ``targetprop sweep SPACE.toml``.

Target-propagation methods are sensitive to their hyper-parameters; the DTP authors drew about 20 random
configurations per experiment (log-uniform η̂ ∈ [1, 100], forward lr ∈ [1e-4, 1e-2], inverse lr ∈ [1e-5, 1e-3]).
A space file says what to search and how (the base run's keys come first: TOML puts the keys that follow a
``[table]`` header into that table)::

    # The base run: the keys of a `targetprop train --config` file, or `preset = "mnist-paper"` (a preset name
    # or a TOML file) whose keys the ones below override.
    rule = "dtp"
    data = "digits"
    epochs = 20
    seeds = 0                     # one seed: every trial starts from it, so trials differ only in what is searched

    [dtp]
    noise = 0.36

    [sweep]                       # every key has a default (shown where it is not the value)
    sampler = "random"            # "random", or "tpe" (Optuna's tree-structured Parzen estimator; default)
    trials = 20                   # in all (20); a resumed sweep runs only the missing ones
    replicas = 4                  # trials trained together as the replicas of one network, in one process (1)
    processes = 2                 # local worker processes, or groups in flight on a Ray cluster (1)
    metric = "best_valid_error"   # minimised; also "valid_error" (last epoch) or "train_error"
    seed = 0                      # the sampler's seed
    # threads = 1                 # torch threads per group (default: CPUs // processes)
    # startup_trials = 10         # TPE: random trials before the model takes over
    # name = "dtp-digits"         # sweep directory name (default: the space file's name)
    # out = "runs/sweeps"         # its parent folder (default: <out of the base run>/sweeps)

    # One entry per searched key, "RULE.KEY" (a key of the run's rule) or a run key such as "epochs":
    # {low, high} with optional log = true and step, or {choices = [...]}. Ints are drawn for int keys.
    [space]
    "dtp.lr" = {low = 1e-4, high = 1e-2, log = true}
    "dtp.lr_feedback" = {low = 1e-5, high = 1e-3, log = true}
    "dtp.eta_hat" = {low = 1, high = 100, log = true}
    # "dtp.noise" = {low = 0.1, high = 0.5}
    # "dtp.schedule" = {choices = ["alternating", "parallel"]}

**Replicas.** The trainer trains R replicas of a network in batched tensors, and the rule fields typed ``Scalar``
(``lr``, ``lr_feedback``, ``eta_hat``) take one value per replica. When every searched key is such a field, the
sweep asks Optuna for ``replicas`` trials at once and trains them as one run whose per-replica fields list the
trials' values; replica r of that run is trial r, exactly as if it ran alone (``tests/test_replicas.py``). Every
replica starts from the base seed. If any searched key is not per-replica (``noise``, ``epochs``, ``arch``, ...)
each trial runs alone. A trial whose replica diverges gets the value +inf (TPE learns to avoid the region).

**Where groups run.** ``processes`` groups at a time: in this process when it is 1, else in spawned worker
processes, each with ``torch.set_num_threads(CPUs // processes)`` (oversubscribed threads slow tiny runs
tenfold; CPUs: those this process may use, or OMP_NUM_THREADS if lower); or, with ``--ray-address HOST:PORT``, as
Ray tasks on a running cluster, each asking for ``threads`` CPUs (default: the cluster's CPUs // processes;
targetprop must be installed on every node, and the data where ``data_dir`` says). Optuna is only ever called from
this process; TPE runs with ``constant_liar`` so that trials asked while others run are spread apart. Before
anything is written, every value at the edges of the space is checked to make a valid run (locally, its network
is built on the loaded data).

**The sweep directory** (``<out>/sweeps/<name>`` by default)::

    space.toml      the space, resolved (a preset merged in): `targetprop sweep --resume DIR` reads it
    study.log       the Optuna study (a journal file: no database server)
    trials.csv      one row per trial, best first
    runs/t0004-0007 the run directory of trials 4 to 7 (replica r is trial 4 + r); runs/t0004 for a lone trial

**Resume.** Started again on the same directory (same space file, or ``--resume DIR``), a sweep keeps the trials
that finished, finishes the ones that were interrupted (their run continues from its last checkpoint, under the
same trial numbers) and asks for new ones only up to ``trials``; ``--trials N`` raises the total. Only the
execution keys (``trials``, ``replicas``, ``processes``, ``threads``, where it runs) may change: a space that
searches differently is refused. The sampler is reseeded with the number of trials already asked, so a resumed
random sweep does not replay its first draws. Interrupted trials are told their result when their run ends, rather
than failed and enqueued again (Optuna's usual retry), so they keep their number and their run directory. Diverged
and failed trials count towards ``trials``. One sweep process works on a directory at a time (it holds ``.lock``);
Ctrl-C, or a worker process that dies, stops the sweep with the command that resumes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import difflib
import io
import json
import logging
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import optuna
import tomli_w
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.markup import escape
from rich.table import Table

from targetprop.config import RunConfig, describe_validation_error, load_toml, make_config
from targetprop.errors import ConfigError, DivergedError, TargetpropError
from targetprop.experiments import load_config_source
from targetprop.lock import FolderLock
from targetprop.rules import RULES, get_rule
from targetprop.rules.base import PER_REPLICA
from targetprop.runs import RunDir, RunDirError, atomic_write

SPACE_FILE, STUDY_FILE, TRIALS_FILE, RUNS = "space.toml", "study.log", "trials.csv", "runs"
STUDY_NAME = "sweep"
METRICS = {  # metric → the test error reported beside it
    "best_valid_error": "test_error_at_best_valid",
    "valid_error": "test_error",
    "train_error": "test_error",
}
TEST_WHERE = {
    "best_valid_error": "test % at the epoch of the best validation error",
    "valid_error": "test % at the last epoch",
    "train_error": "test % at the last epoch",
}
NOT_SEARCHABLE = ("rule", "data", "data_dir", "download", "seeds", "device", "out", "name")
"""Run keys a space cannot search: they say what is studied and where, not how it is trained."""
EXECUTION_KEYS = ("trials", "replicas", "processes", "threads", "name", "out")
"""[sweep] keys a resumed sweep may change: how much runs and where, not what is searched."""
RUN_PLACE_KEYS = ("data_dir", "download", "device", "out", "name")
"""Base-run keys a resumed sweep may change."""
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


# ---- the space ------------------------------------------------------------------------------------------------


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
        from targetprop.train import build

        for cfg in self.probe_configs(**overrides):
            try:
                build(cfg, _dataset(cfg))
            except ConfigError as e:
                raise ConfigError(f"space file {self.source!r}: {e}") from None

    def definition(self) -> dict[str, Any]:
        """What a resumed sweep must search exactly as before (as JSON-ready data)."""
        settings = self.settings.model_dump(exclude=set(EXECUTION_KEYS))
        base = {k: v for k, v in self.base.items() if k not in RUN_PLACE_KEYS}
        return json.loads(json.dumps({"sweep": settings, "run": base, "space": self.raw_space}, default=str))

    def resolved_toml(self) -> str:
        """The space as a self-contained TOML file (the preset merged in)."""
        doc = {"sweep": self.settings.model_dump(exclude_none=True), **self.base, "space": self.raw_space}
        return f"# {self.source}, resolved by `targetprop sweep`\n" + tomli_w.dumps(doc)


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
    if not path.exists():
        bundled = bundled_space(str(source))
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
        settings.name = path.stem
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
    """The base run: a preset (a name or a TOML file, relative to the space file) updated with the file's keys."""
    preset = doc.pop("preset", None)
    base: dict[str, Any] = {}
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(f"{where}: preset must be a preset name or a TOML file, got {preset!r}")
        beside = path.parent / preset
        base = load_config_source(str(beside) if beside.is_file() else preset)
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


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


# ---- running a group (in this process, a worker process or a Ray task) ---------------------------------------


@dataclass
class GroupJob:
    """One run: its config (replica r = the r-th trial) and its directory."""

    config: RunConfig
    run_dir: str
    threads: int


@dataclass
class GroupResult:
    """The summary's ``per_replica`` entries of a group's run, or why the run failed."""

    per_replica: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


_DATASETS: dict[tuple, Any] = {}


def _dataset(cfg: RunConfig):
    """The run's dataset, loaded once per process."""
    from targetprop.data import load_dataset

    key = (cfg.data, cfg.data_dir, cfg.n_valid, cfg.device, cfg.download)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(
            cfg.data, cfg.data_dir, device=cfg.device, download=cfg.download, n_valid=cfg.n_valid
        )
    return _DATASETS[key]


def run_group(job: GroupJob) -> GroupResult:
    """Train one group. A new run and an interrupted one are the same call: the trainer continues from the
    checkpoint if there is one. Training failures come back in the result; Ctrl-C is raised as KeyboardInterrupt."""
    import torch

    from targetprop.train import train

    torch.set_num_threads(job.threads)
    job.config = job.config.model_copy(update={"threads": job.threads})  # the sweep splits the cores itself
    start = time.perf_counter()
    run_dir = RunDir(job.run_dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(job.config.to_dict())
    try:
        result = train(job.config, dataset=_dataset(job.config), run_dir=run_dir, resume=True, progress=False)
        per_replica = result.summary["per_replica"]
    except DivergedError as e:
        per_replica = [{"diverged": True, "error": str(e)} for _ in job.config.seeds]
    except RunDirError as e:  # a full disk or a read-only folder fails every trial alike: stop the sweep
        sweep_dir = Path(job.run_dir).parent.parent
        raise RunDirError(
            f"{e.reason or e}; the sweep stops: continue it with `targetprop sweep --resume {sweep_dir}` once there "
            "is room"
        ) from None
    except TargetpropError as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # the trainer's Ctrl-C message names `train --resume`
            raise KeyboardInterrupt from None
        return GroupResult(error=str(e), seconds=time.perf_counter() - start)
    except Exception as e:
        return GroupResult(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - start)
    return GroupResult(per_replica, seconds=time.perf_counter() - start)


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the sweep process dies (a SIGKILL leaves no one to stop the workers), so a
    resumed sweep never trains a group next to an orphan still writing into it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def local_cpus() -> int:
    """The CPUs this process may use (fewer if OMP_NUM_THREADS says so): split between the worker processes."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, torch.get_num_threads())


class LocalExecutor:
    """Runs groups in this process (one at a time) or in spawned worker processes."""

    def __init__(self, processes: int):
        self.pool = None
        if processes > 1:
            ctx = multiprocessing.get_context("spawn")
            self.pool = cf.ProcessPoolExecutor(
                processes, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),)
            )

    def submit(self, job: GroupJob) -> cf.Future:
        if self.pool is not None:
            return self.pool.submit(run_group, job)
        future: cf.Future = cf.Future()
        future.set_result(run_group(job))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Runs each group as a Ray task on a running cluster, asking for as many CPUs as it uses threads."""

    def __init__(self, threads: int):
        import ray  # connected by connect_ray

        self.ray = ray
        self.task = ray.remote(num_cpus=threads, max_retries=0)(run_group)

    def submit(self, job: GroupJob) -> cf.Future:
        return self.task.remote(job).future()

    def close(self) -> None:
        self.ray.shutdown()


def connect_ray(address: str) -> int:
    """Connect to the Ray cluster at HOST:PORT; returns its number of CPUs. Fails fast when nothing answers."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: write HOST:PORT, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with `ray start --head --port {port}`"
        ) from None
    if host in ("127.0.0.1", "localhost", "::1"):
        # A head started on the loopback address (`ray start --head --node-ip-address=127.0.0.1`, with this variable
        # set) is reachable only by a driver that also keeps to the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'targetprop[ray]'") from None
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    return int(ray.cluster_resources().get("CPU", 1))


# ---- the sweep --------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """Trials trained as the replicas of one run (trial r is replica r)."""

    trials: list[optuna.Trial]
    values: list[dict[str, Any]]
    run_dir: Path
    told: set[int] = field(default_factory=set)
    """Trials already told (a sweep killed while telling a group's results): not told again."""

    @property
    def open_trials(self) -> int:
        return len(self.trials) - len(self.told)

    @property
    def label(self) -> str:
        numbers = [t.number for t in self.trials]
        return f"trial {numbers[0]}" if len(numbers) == 1 else f"trials {numbers[0]}-{numbers[-1]}"


def sweep_dir_for(space: Space, out: str | None = None, name: str | None = None) -> Path:
    parent = out or space.settings.out or str(Path(make_config(space.base).out) / "sweeps")
    return Path(parent) / (name or space.settings.name or "sweep")


def read_sweep_dir(path: str | Path) -> Space:
    """The space a sweep directory was made with, for ``--resume DIR``."""
    folder = Path(path)
    if not (folder / SPACE_FILE).is_file() or not (folder / STUDY_FILE).is_file():
        raise ConfigError(f"{str(path)!r} is not a sweep directory (no {SPACE_FILE} and {STUDY_FILE})")
    return load_space(folder / SPACE_FILE)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where}: {a!r} before, {b!r} now"


def _storage(folder: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = folder / STUDY_FILE
    try:  # the journal is JSON lines, replayed here: a damaged line surfaces now, not mid-sweep
        return JournalStorage(JournalFileBackend(str(path)))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{path} is damaged ({type(e).__name__}: {reason}); restore it from a copy, or start the sweep in another "
            "folder (--name)"
        ) from None


def check_sweep_dir(space: Space, folder: Path) -> None:
    """Refuse a folder that is not this space's sweep (before anything is written)."""
    if not folder.exists():
        return
    if not (folder / STUDY_FILE).is_file():
        if any(folder.iterdir()):
            raise ConfigError(f"{folder} exists and is not a sweep directory; give another --name or --out")
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(folder))
    except KeyError:
        raise ConfigError(f"{folder / STUDY_FILE} holds no sweep; delete the folder or give another --name") from None
    before = study.user_attrs.get("definition")
    if before != space.definition():
        raise ConfigError(
            f"{folder} holds a sweep of a different space ({_first_difference(before, space.definition())}); "
            "only trials, replicas, processes and threads may change: give another --name, or delete the folder"
        )


class Sweep:
    """The driver: asks Optuna for trials, runs them in groups, tells Optuna their results."""

    def __init__(
        self,
        space: Space,
        folder: Path,
        *,
        trials: int | None = None,
        processes: int | None = None,
        threads: int | None = None,
        ray_address: str | None = None,
        overrides: dict[str, Any] | None = None,
        note: Callable[[str], None] = lambda line: None,
    ):
        self.space, self.folder, self.note = space, folder.resolve(), note
        self.settings = space.settings
        self.trials = trials or self.settings.trials
        self.processes = processes or self.settings.processes
        self.ray_address = ray_address
        self.overrides = overrides or {}
        cpus = connect_ray(ray_address) if ray_address else local_cpus()
        self.threads = threads or self.settings.threads or max(1, cpus // self.processes)
        self.study: optuna.Study | None = None
        self.lock: FolderLock | None = None

    # -- set-up ----------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create or load the sweep directory and its study; hold its lock while this process runs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.folder, "sweep directory")
        self.lock.acquire()
        self.space.settings.trials = self.trials  # `--resume DIR` aims for the latest total
        atomic_write(self.folder / SPACE_FILE, lambda f: f.write(self.space.resolved_toml().encode()))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = _storage(self.folder)
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="minimize", load_if_exists=True)
        if "definition" not in study.user_attrs:
            study.set_user_attr("definition", self.space.definition())
        asked = len(study.trials)
        seed = self.settings.seed if asked == 0 else (self.settings.seed * 1_000_003 + asked) % 2**32
        if self.settings.sampler == "random":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            with warnings.catch_warnings():  # constant_liar is "experimental" in Optuna 4
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # constant_liar: trials asked while others run (a group, other processes) are spread apart
                sampler = optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=self.settings.startup_trials, constant_liar=True
                )
        self.study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler)

    def close(self) -> None:
        """Release the sweep directory's lock."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- groups ----------------------------------------------------------------------------------------------

    def _ask(self, size: int) -> Group:
        trials = [self.study.ask() for _ in range(size)]
        values = [{p.name: p.suggest(t) for p in self.space.params} for t in trials]
        first, last = trials[0].number, trials[-1].number
        name = f"t{first:04d}" if size == 1 else f"t{first:04d}-{last:04d}"
        run_dir = self.folder / RUNS / name
        for r, t in enumerate(trials):
            t.set_user_attr("run_dir", f"{RUNS}/{name}")
            t.set_user_attr("replica", r)
        return Group(trials, values, run_dir)

    def _interrupted(self) -> list[Group]:
        """Groups a killed sweep left running (trials asked, never told): they run again as they were, from their
        checkpoint, under the same trial numbers."""
        members: dict[str, list[FrozenTrial]] = {}
        for t in self.study.get_trials(deepcopy=False):
            if "run_dir" in t.user_attrs:
                members.setdefault(t.user_attrs["run_dir"], []).append(t)
            elif t.state == TrialState.RUNNING:  # killed between asking for it and starting its run: nothing ran
                self.study.tell(t.number, state=TrialState.FAIL)
        groups = []
        for run_dir, frozen in sorted(members.items()):
            if all(t.state != TrialState.RUNNING for t in frozen):
                continue
            frozen.sort(key=lambda t: t.user_attrs["replica"])
            trials = [optuna.Trial(self.study, t._trial_id) for t in frozen]  # (Optuna's handle on a stored trial)
            told = {t.number for t in frozen if t.state != TrialState.RUNNING}
            groups.append(Group(trials, [dict(t.params) for t in frozen], self.folder / run_dir, told))
        return groups

    def _job(self, group: Group) -> GroupJob:
        config = self.space.run_config(group.values, group.run_dir, **self.overrides)
        return GroupJob(config, str(group.run_dir), self.threads)

    def _tell(self, group: Group, result: GroupResult) -> list[str]:
        """Tell Optuna each trial's value (+inf for a diverged replica; failed if its run failed); returns them as
        text for the progress line."""
        metric, test_key = self.settings.metric, METRICS[self.settings.metric]
        shown = []
        for trial, rep in zip(group.trials, result.per_replica or [{}] * len(group.trials), strict=True):
            if trial.number in group.told:
                continue
            if result.error is not None:
                trial.set_user_attr("error", result.error)
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            value = rep.get(metric, math.inf)
            if rep.get("diverged") or not math.isfinite(value):
                trial.set_user_attr("diverged", True)
                value = math.inf
            else:
                trial.set_user_attr("test_error", rep[test_key])
                trial.set_user_attr("best_epoch", rep["best_epoch"])
                if rep.get("collapsed_at"):  # learned, then fell back to chance (targetprop.health)
                    trial.set_user_attr("collapsed_at", rep["collapsed_at"])
            self.study.tell(trial, value)
            shown.append(f"{value:.2f}" if math.isfinite(value) else "diverged")
        return shown

    def _counted(self) -> int:
        """Trials that count towards ``trials``: finished ones, diverged and failed included (a trial lost before
        its run started is not)."""
        finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=finished) if "run_dir" in t.user_attrs)

    # -- the loop --------------------------------------------------------------------------------------------

    def run(self) -> None:
        assert self.study is not None, "call open() first"
        queue = self._interrupted()
        if queue:
            self.note(f"{self.folder}: continuing {sum(g.open_trials for g in queue)} interrupted trial(s)")
        left = self.trials - self._counted() - sum(g.open_trials for g in queue)
        size = self.space.group_size
        if self.settings.replicas > 1 and size == 1:
            lone = next(p.name for p in self.space.params if not p.per_replica)
            self.note(f"each trial runs alone: {lone} cannot take one value per replica")
        if not queue and left <= 0:
            self.note(f"{self.folder}: {self._counted()} trials done; nothing to run (raise --trials for more)")
            return
        in_flight = self.processes if self.ray_address else min(self.processes, len(queue) + math.ceil(left / size))
        executor = RayExecutor(self.threads) if self.ray_address else LocalExecutor(in_flight)
        pending: dict[cf.Future, Group] = {}
        try:
            while queue or left > 0 or pending:
                while len(pending) < in_flight and (queue or left > 0):
                    if queue:
                        group = queue.pop(0)
                    else:
                        group = self._ask(min(size, left))
                        left -= len(group.trials)
                    pending[executor.submit(self._job(group))] = group
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f].trials[0].number):
                    group = pending.pop(future)
                    try:
                        result = future.result()
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # the worker itself failed: its trials stay running, to be resumed
                        raise TargetpropError(
                            f"a worker failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            f"continue with `targetprop sweep --resume {self.folder}`"
                        ) from None
                    self.note(self._progress_line(group, result, self._tell(group, result)))
                    self.write_trials_csv()
        except KeyboardInterrupt:
            raise TargetpropError(f"interrupted; continue with `targetprop sweep --resume {self.folder}`") from None
        finally:
            executor.close()
            self.write_trials_csv()

    def _progress_line(self, group: Group, result: GroupResult, values: list[str]) -> str:
        where = group.run_dir.relative_to(self.folder)
        if result.error is not None:
            return f"{group.label} failed ({where}): {result.error}"
        best = self.best()
        best_text = f"; best {best.value:.2f} (trial {best.number})" if best is not None else ""
        return (
            f"{group.label} done in {result.seconds:.1f} s ({where}): {self.settings.metric} "
            f"{', '.join(values)}; {self._counted()}/{self.trials} trials{best_text}"
        )

    # -- results ---------------------------------------------------------------------------------------------

    def best(self) -> FrozenTrial | None:
        done = [t for t in self.ranked() if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
        return done[0] if done else None

    def ranked(self) -> list[FrozenTrial]:
        """Every trial, best first: finished ones by their value, then running, then failed."""
        order = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 1}

        def key(t: FrozenTrial) -> tuple:
            value = t.value if t.state == TrialState.COMPLETE else math.inf
            return (order.get(t.state, 2), value, t.number)

        return sorted(self.study.get_trials(deepcopy=False), key=key)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per trial, best first: what trials.csv and the table show."""
        state = {TrialState.COMPLETE: "done", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
        rows = []
        for t in self.ranked():
            row = {
                "trial": t.number,
                "state": "diverged" if t.user_attrs.get("diverged") else state.get(t.state, t.state.name.lower()),
                self.settings.metric: t.value if t.state == TrialState.COMPLETE else None,
                METRICS[self.settings.metric]: t.user_attrs.get("test_error"),
                "best_epoch": t.user_attrs.get("best_epoch"),
                "collapsed_at": t.user_attrs.get("collapsed_at"),
                **{p.name: t.params.get(p.name) for p in self.space.params},
                "run_dir": t.user_attrs.get("run_dir"),
                "replica": t.user_attrs.get("replica"),
                "error": t.user_attrs.get("error"),
            }
            rows.append(row)
        return rows

    def write_trials_csv(self) -> None:
        rows = self.rows()
        text = io.StringIO()
        fields = list(rows[0]) if rows else ["trial"]
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.folder / TRIALS_FILE, lambda f: f.write(text.getvalue().encode()))

    def table(self) -> Table:
        """Every trial, best first: its value, the test error beside it, the drawn values, its run and replica."""
        metric, test_key = self.settings.metric, METRICS[self.settings.metric]
        cfg = make_config(self.space.base)
        table = Table(
            title=f"{cfg.rule} on {cfg.data} {cfg.architecture}: {self._counted()} trials of {self.trials} "
            f"({self.settings.sampler} sampler), best first",
            caption=f"{TEST_WHERE[metric]}; runs in {self.folder}",
        )
        table.add_column("trial", justify="right")
        table.add_column("state")
        table.add_column(metric.removesuffix("_error").replace("_", " ") + " %", justify="right")
        table.add_column("test %", justify="right")
        for p in self.space.params:  # "dtp.lr" → "lr": the title names the rule
            table.add_column(p.name.removeprefix(f"{cfg.rule}."), justify="right")
        table.add_column(escape("run [replica]"))
        for row in self.rows():
            run = "-" if row["run_dir"] is None else f"{row['run_dir']} [{row['replica']}]"
            table.add_row(
                str(row["trial"]),
                row["state"] + (f", collapsed at epoch {row['collapsed_at']}" if row["collapsed_at"] else ""),
                _percent(row[metric]),
                _percent(row[test_key]),
                *(_value(row[p.name]) for p in self.space.params),
                run,
            )
        return table


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def _value(value: Any) -> str:
    """A drawn value: floats with 3 significant digits (learning rates span decades)."""
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
