"""The sweep itself: its directory, its Optuna study, and the loop that asks for trials, runs them in groups and
tells Optuna their results; then the trials as ``trials.csv`` and as a table, best first."""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape
from rich.table import Table

from targetprop.config import make_config
from targetprop.errors import ConfigError, TargetpropError
from targetprop.lock import FolderLock
from targetprop.runs import RunDir, atomic_write
from targetprop.sweep.groups import GroupJob, GroupResult, LocalExecutor, RayExecutor, connect_ray, local_cpus
from targetprop.sweep.space import Param, Space, comparable_run, load_space

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
    before, now = _recorded_definition(study.user_attrs.get("definition")), space.definition()
    if before != now:
        raise ConfigError(
            f"{folder} holds a sweep of a different space ({_first_difference(before, now)}); "
            "only trials, replicas, processes and threads may change: give another --name, or delete the folder"
        )


def _recorded_definition(before: Any) -> Any:
    """A study's recorded definition with its base run resolved as :meth:`Space.definition` resolves it (sweeps
    started before the runs were resolved recorded only the keys their file gave); unchanged if it cannot be."""
    if not isinstance(before, dict) or not isinstance(before.get("run"), dict):
        return before
    try:
        return {**before, "run": comparable_run(before["run"])}
    except ConfigError:
        return before


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
        progress: bool = False,
    ):
        self.space, self.folder, self.note = space, folder.resolve(), note
        self.progress = progress
        """Show each epoch of a group trained in this process (``processes = 1``, no Ray): a trial can take an
        hour, and workers' lines would interleave."""
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
        alone = self.processes == 1 and self.ray_address is None
        return GroupJob(config, str(group.run_dir), self.threads, progress=self.progress and alone)

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
                    self.write_trials_csv()  # its trials as running, with their values and run: `inspect` shows them
                    pending[executor.submit(self._job(group))] = group  # (in this process: trains it here and now)
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

    def table(self, at_epochs: Sequence[int] = ()) -> Table:
        """Every trial, best first (:func:`trials_table`)."""
        return trials_table(
            self.space, self.folder, self.rows(), counted=self._counted(), total=self.trials, at_epochs=at_epochs
        )


# -- the trials as a table, from the study or from trials.csv ------------------------------------------------------


def read_trials_csv(space: Space, folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder/trials.csv``, typed as :meth:`Sweep.rows` gives them: what ``targetprop inspect`` tables
    without opening the study, taking the folder's lock or reading any data, so while the sweep runs too.
    ``ConfigError`` names the file and the cell that cannot be read."""
    path = folder / TRIALS_FILE
    params = {p.name: p for p in space.params}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read ({e})") from None
    metric = space.settings.metric
    rows = []
    for line, cells in enumerate(raw, start=2):
        if None in cells or None in cells.values():  # csv.DictReader's marks of a row longer or shorter
            raise ConfigError(f"{path}, line {line}: not as many cells as the header has columns")
        row: dict[str, Any] = {}
        for key, cell in cells.items():
            try:
                row[key] = _typed(key, cell, params.get(key))
            except ValueError:
                raise ConfigError(
                    f"{path}, line {line}: {key} = {cell!r} is not a {'whole number' if key in _INTS else 'number'}"
                ) from None
        for key in (*_OPTIONAL, metric, METRICS[metric], *params):  # a column this sweep's version did not write
            row.setdefault(key, None)
        rows.append(row)
    return rows


_OPTIONAL = ("best_epoch", "collapsed_at", "run_dir", "replica", "error")
_INTS = ("trial", "best_epoch", "collapsed_at", "replica")
_TEXT = ("state", "run_dir", "error")


def _typed(key: str, cell: str, param: Param | None) -> Any:
    """One cell of trials.csv as :meth:`Sweep.rows` held it (an empty cell was ``None``)."""
    if cell == "":
        return None
    if key in _TEXT:
        return cell
    if key in _INTS:
        return int(cell)
    if param is not None and "choices" in param.spec:
        return next((c for c in param.spec["choices"] if str(c) == cell), cell)
    if param is not None and param.kind == "int":
        return int(cell)
    return float(cell)  # the metric, the test error, a float key


class EpochErrors(NamedTuple):
    """A trial's validation and test error % at one epoch (test ``None`` where the run did not evaluate it)."""

    valid: float
    test: float | None


def _error_curves(folder: Path, rows: list[dict[str, Any]], *, running_only: bool) -> list[dict[int, EpochErrors]]:
    """Each row's validation and test error by epoch, from its replica's rows of its run's ``metrics.jsonl`` under
    ``folder`` (empty where the trial has no run yet, or is finished and ``running_only``); each run's file is read
    once."""
    by_run: dict[str, dict[int, dict[int, EpochErrors]]] = {}
    out = []
    for row in rows:
        run, replica = row["run_dir"], row["replica"]
        if run is None or replica is None or (running_only and row["state"] != "running"):
            out.append({})
            continue
        if run not in by_run:
            by_run[run] = {}
            for r in RunDir(folder / run).read_metrics().rows:
                if r.get("valid_error") is not None:
                    errors = EpochErrors(r["valid_error"], r.get("test_error"))
                    by_run[run].setdefault(r["replica"], {})[r["epoch"]] = errors
        out.append(by_run[run].get(replica, {}))
    return out


def _state(row: dict[str, Any], curve: dict[int, EpochErrors], epochs: int) -> str:
    """A trial's state as the table shows it: a running trial with how far its run has got (the last epoch
    evaluated, and its validation error there), a collapsed one with the epoch it fell back to chance."""
    if row["state"] == "running" and curve:
        last = max(curve)
        return f"running: valid {_percent(curve[last].valid)} at epoch {last} of {epochs}"
    return row["state"] + (f", collapsed at epoch {row['collapsed_at']}" if row["collapsed_at"] else "")


def trials_table(
    space: Space, folder: Path, rows: list[dict[str, Any]], *, counted: int, total: int, at_epochs: Sequence[int] = ()
) -> Table:
    """Every trial of ``rows`` (best first): its value, the test error beside it, the drawn values, its run and
    replica; and, for each of ``at_epochs``, its validation and test error at that epoch. ``counted`` of ``total``
    trials are finished."""
    metric = space.settings.metric
    cfg = make_config(space.base)
    table = Table(
        title=f"{cfg.rule} on {cfg.data} {cfg.architecture}: {counted} trials of {total} "
        f"({space.settings.sampler} sampler), best first",
        caption=f"{TEST_WHERE[metric]}; runs in {folder}",
    )
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(metric.removesuffix("_error").replace("_", " ") + " %", justify="right")
    table.add_column("test %", justify="right")
    for p in space.params:  # "dtp.lr" → "lr": the title names the rule
        table.add_column(p.name.removeprefix(f"{cfg.rule}."), justify="right")
    for epoch in at_epochs:
        table.add_column(f"valid / test % at {epoch}", justify="right")
    table.add_column(escape("run [replica]"))
    for row, curve in zip(rows, _error_curves(folder, rows, running_only=not at_epochs), strict=True):
        run = "-" if row["run_dir"] is None else f"{row['run_dir']} [{row['replica']}]"
        table.add_row(
            str(row["trial"]),
            _state(row, curve, cfg.epochs),
            _percent(row[metric]),
            _percent(row[METRICS[metric]]),
            *(_value(row[p.name]) for p in space.params),
            *(_at_epoch(curve.get(e)) for e in at_epochs),
            run,
        )
    return table


def _at_epoch(errors: EpochErrors | None) -> str:
    """``2.38 / 2.41``: validation / test error % at an epoch; ``-`` where the run has not reached it."""
    if errors is None:
        return "-"
    return f"{_percent(errors.valid)} / {_percent(errors.test)}"


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def _value(value: Any) -> str:
    """A drawn value: floats with 3 significant digits (learning rates span decades)."""
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
