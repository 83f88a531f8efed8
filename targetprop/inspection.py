"""``targetprop inspect RUN``: what a run, compare, reproduce, pooled-report or sweep directory (or a folder of them,
such as ``runs/``) holds, read without running anything from it.

Only plain-data files are read: ``config.toml`` (TOML), ``metrics.jsonl`` and ``summary.json`` (JSON), the JSON
header of ``checkpoint.safetensors`` (no tensor is loaded), a sweep's ``space.toml`` and ``trials.csv``. An old
``checkpoint.pt`` is not opened at all. Damage is reported, not raised, so a broken run can still be looked at. A
reproduce directory's ``experiment.toml``, a compare directory's ``compare.toml`` and a pooled report's
``report.toml`` are TOML too.
"""

from __future__ import annotations

import contextlib
import csv
import statistics
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.table import Table

from targetprop.comparison import asked_rules, is_comparison
from targetprop.console import print_line, print_table
from targetprop.errors import ConfigError, TargetpropError
from targetprop.lock import LOCK_FILE, holder
from targetprop.reproduce import EXPERIMENT_FILE, read_request
from targetprop.runs import CHECKPOINT, LEGACY_CHECKPOINT, SUMMARY, Metrics, RunDir, continue_command
from targetprop.sweep import load_space, read_trials_csv, trials_table
from targetprop.sweep.study import RUNS, SPACE_FILE, STUDY_FILE, TRIALS_FILE


def inspect_folder(folder: Path, out: Console, at_epochs: Sequence[int] = ()) -> None:
    kind = _kind(folder)
    if at_epochs and kind != "sweep":
        what = f"is a {kind} directory" if kind else "holds no sweep (space.toml with trials.csv or study.log)"
        raise ConfigError(f"--at-epoch is for a sweep directory; {folder} {what}")
    if kind == "sweep":
        inspect_sweep(folder, out, at_epochs)
    elif kind == "pooled report":
        inspect_pooled(folder, out)
    elif kind in ("reproduce", "compare"):
        inspect_group(folder, out)
    elif kind is None and (_runs_in(folder) or _folders_in(folder)):
        inspect_parent(folder, out)
    else:
        inspect_run(RunDir.open(folder), out)


def _kind(folder: Path) -> str | None:
    """What ``folder`` is, by the files it holds: a run, a reproduce, compare or sweep directory, a pooled report; or
    ``None`` (no such folder, or a plain folder such as ``runs/``)."""
    if not folder.is_dir():
        return None
    if (folder / SPACE_FILE).is_file() and any((folder / f).is_file() for f in (STUDY_FILE, TRIALS_FILE)):
        return "sweep"  # as the sweep left it, or as kept under results/ (no Optuna journal)
    if (folder / EXPERIMENT_FILE).is_file():
        return "reproduce"
    if (folder / "report.toml").is_file():
        return "pooled report"
    if (folder / "config.toml").is_file():
        return "run"
    if is_comparison(folder) or ((folder / LOCK_FILE).is_file() and _runs_in(folder)):  # older: its lock alone
        return "compare"
    return None


def _folders_in(folder: Path) -> list[tuple[Path, str]]:
    """The reproduce, compare and sweep directories and pooled reports one level below ``folder``, with their kind."""
    if not folder.is_dir():
        return []
    found = ((p, _kind(p)) for p in sorted(folder.iterdir()))
    return [(p, kind) for p, kind in found if kind not in (None, "run")]


def _runs_in(folder: Path) -> list[RunDir]:
    """The run directories one level below ``folder`` (a reproduce or compare directory's methods and rules)."""
    if not folder.is_dir():
        return []
    return [RunDir(p) for p in sorted(folder.iterdir()) if p.is_dir() and (p / "config.toml").is_file()]


def resume_command(run: RunDir) -> str:
    """The command that continues ``run``: a method of a reproduce directory is continued with its directory, so
    that the table and figure are written again; a rule of a comparison likewise, so that its table is printed."""
    return continue_command(run.path.parent) or f"targetprop train --resume {run.path}"


@dataclass
class RunState:
    """Where a run stands, read from its plain files and its checkpoint's header."""

    config: dict[str, Any]
    done: int
    """Epochs finished: the checkpoint's, or (with none) those ``metrics.jsonl`` holds for every replica."""
    total: int
    checkpoint: str
    resumable: bool
    """Whether a checkpoint holds the ``done`` epochs (an unfinished run kept without one trains again from epoch 1
    on resume; see :mod:`targetprop.resume`)."""
    busy: str | None
    summary: dict[str, Any] | None
    metrics: Metrics
    problems: list[str]

    @property
    def status(self) -> str:
        if self.busy is not None:
            return f"running: {self.busy}; {self.done} of {self.total} epochs done"
        if self.done >= self.total and self.summary is not None:
            return f"finished: {self.total} epoch{'' if self.total == 1 else 's'}"
        if self.done >= self.total:
            return f"trained all {self.total} epochs; its summary is missing or unreadable"
        if self.done == 0:
            return "no epoch finished"
        kept = "" if self.resumable else " (metrics only, no checkpoint)"
        return f"stopped after epoch {self.done} of {self.total}{kept}"

    @property
    def needs_resume(self) -> bool:
        return self.busy is None and (self.done < self.total or self.summary is None)


def run_state(run: RunDir) -> RunState:
    config = run.read_config()
    problems: list[str] = []
    header: dict[str, Any] | None = None
    try:
        header = run.checkpoint_header()
    except TargetpropError as e:
        problems.append(str(e))
    metrics = run.read_metrics()
    if metrics.damaged:
        problems.append(
            f"metrics.jsonl: line(s) {metrics.damaged[:10]} are damaged (resuming rewrites the file from the checkpoint)"
        )
    if metrics.torn:
        problems.append("metrics.jsonl: the last line was cut short (a kill or a full disk during an append)")
    summary = run.read_summary()
    if summary is None and (run.path / SUMMARY).exists():
        problems.append(f"{SUMMARY} cannot be read (`{resume_command(run)}` writes it again)")
    replicas = len(config.get("seeds", [])) or 1
    if header is not None:
        done, where = int(header.get("epoch", 0)), f"{CHECKPOINT}, after epoch {header.get('epoch')}"
    else:
        complete = [
            e for e in {r["epoch"] for r in metrics.rows} if sum(r["epoch"] == e for r in metrics.rows) >= replicas
        ]
        done = max(complete, default=0)
        if (run.path / LEGACY_CHECKPOINT).exists():
            where = f"{LEGACY_CHECKPOINT} (an older format: not opened here; resuming reads it safely and converts it)"
        else:
            where = "none yet" if not (run.path / CHECKPOINT).exists() else "damaged"
    total = int(config.get("epochs", 0))
    resumable = header is not None or (run.path / LEGACY_CHECKPOINT).exists()
    return RunState(config, done, total, where, resumable, holder(run.path), summary, metrics, problems)


def _with_command(state: RunState, run: RunDir) -> str:
    """The state's status, with the command that continues the run where one is needed."""
    if not state.needs_resume:
        return state.status
    if state.done >= state.total:
        return f"{state.status}: `{resume_command(run)}` writes it"
    if state.done == 0:
        return f"{state.status}; `{resume_command(run)}` starts it"
    if not state.resumable:
        return (
            f"{state.status}; `{resume_command(run)}` would train it again from epoch 1 (keeping a copy of its metrics)"
        )
    return f"{state.status}; continue with `{resume_command(run)}`"


def inspect_run(run: RunDir, out: Console) -> None:
    state = run_state(run)
    print_line(out, f"run directory: {run.path}")
    print_line(out, f"status: {_with_command(state, run)}")
    print_line(out, f"checkpoint: {state.checkpoint}")
    for problem in state.problems:
        print_line(out, f"problem: {problem}")
    print_line(out, "")
    print_line(out, "config.toml:")
    for text in tomli_w.dumps(state.config).splitlines():
        print_line(out, f"  {text}")

    done, metrics, summary = state.done, state.metrics, state.summary
    rows = [r for r in metrics.rows if r["epoch"] == done] if done else []
    if rows:
        table = Table(title=f"epoch {done}")
        for column in ("replica", "seed", "train error %", "valid error %", "test error %", "loss"):
            table.add_column(column, justify="right")
        for r in sorted(rows, key=lambda r: r["replica"]):
            table.add_row(
                str(r["replica"]),
                str(r.get("seed", "")),
                *(_number(r.get(k)) for k in ("train_error", "valid_error", "test_error", "train_loss")),
            )
        print_table(out, table)
    changes = [(r["epoch"], r["changed"]) for r in metrics.rows if r.get("changed") and r.get("replica") == 0]
    for epoch, changed in changes:
        print_line(out, f"changed from epoch {epoch}: " + ", ".join(f"{k} = {v!r}" for k, v in changed.items()))
    if summary is not None:
        print_line(out, "")
        print_line(out, "summary.json (mean ± std over the replicas that did not diverge):")
        for key in ("test_error", "test_error_at_best_valid", "train_error", "valid_error"):
            stats = summary.get(key)
            if isinstance(stats, dict) and "mean" in stats:
                print_line(out, f"  {key}: {_number(stats['mean'])} ± {_number(stats.get('std'))} %")
        if summary.get("diverged_seeds"):
            print_line(out, f"  diverged seeds: {summary['diverged_seeds']}")
        collapsed = [(p["seed"], p["collapsed_at"]) for p in summary.get("per_replica", []) if p.get("collapsed_at")]
        if collapsed:
            print_line(
                out,
                "  collapsed to chance (counted in the means): "
                + ", ".join(f"seed {seed} at epoch {epoch}" for seed, epoch in collapsed),
            )


def inspect_group(folder: Path, out: Console) -> None:
    """A reproduce directory (its request, then one row per method) or a compare directory (one row per rule)."""
    reproduced = (folder / EXPERIMENT_FILE).is_file()
    print_line(out, f"{'reproduce' if reproduced else 'compare'} directory: {folder}")
    if reproduced:
        _print_request(folder, out)
    elif is_comparison(folder):
        try:
            print_line(out, "asked: rules " + ", ".join(asked_rules(folder)))
        except TargetpropError as e:
            print_line(out, f"problem: {e}")
    busy = holder(folder)
    if busy is not None:
        print_line(out, f"status: running: {busy}")
    table, stopped = _runs_table(folder, "methods" if reproduced else "runs")
    kept = table.row_count > 0
    waiting = _not_started(folder) if reproduced and kept else []
    for method in waiting:
        table.add_row(method, "not started", "-", "-", "-")
    if kept:
        print_table(out, table)
    else:  # results kept as their table alone
        print_line(out, f"no {'method' if reproduced else 'rule'}'s run directory here (kept without its runs)")
    command = continue_command(folder)  # None for a comparison made before compare.toml: its rules one by one
    if busy is None and command is not None and (stopped or waiting):
        resumable = all(state.resumable or state.done == 0 for _, state in stopped)
        again = "continue with" if resumable else "no checkpoint to continue from (metrics only):"
        again_from = " would train again from epoch 1 (keeping a copy of the metrics)"
        print_line(out, f"{again} `{command}`{'' if resumable else again_from}")
    elif busy is None and stopped:
        _print_stopped(stopped, out)
    if reproduced and (folder / "table.md").is_file():
        again = (
            f"`targetprop reproduce --report {folder}` writes it from what the folder holds now"
            if kept
            else "its runs were not kept, so it cannot be written again"
        )
        print_line(out, f"table: {folder / 'table.md'} ({again})")


def inspect_parent(folder: Path, out: Console) -> None:
    """A plain folder such as ``runs/``: one row per run directory in it, then one per reproduce, compare or sweep
    directory or pooled report, each with where its runs stand (``targetprop inspect`` on it says more)."""
    print_line(out, f"run directories in: {folder}")
    if _runs_in(folder):
        table, stopped = _runs_table(folder, "runs")
        print_table(out, table)
        _print_stopped(stopped, out)
    folders = _folders_in(folder)
    if folders:
        table = Table(title="folders of runs")
        for column in ("folder", "kind", "where its runs stand"):
            table.add_column(column)
        for path, kind in folders:
            table.add_row(path.name, kind, _standing(path, kind))
        print_table(out, table)
        print_line(out, f"`targetprop inspect {folder / folders[0][0].name}` (say) shows one of them whole")


def _print_stopped(stopped: list[tuple[RunDir, RunState]], out: Console) -> None:
    for run, state in stopped:
        print_line(out, f"{run.path.name}: {_with_command(state, run)}")


def _standing(folder: Path, kind: str) -> str:
    """One line on where a folder's runs stand: each run's status, or a sweep's trials, or a report's sources."""
    busy = holder(folder)
    return (f"running: {busy}; " if busy else "") + _contents(folder, kind)


def _contents(folder: Path, kind: str) -> str:
    if kind == "sweep":
        trials = folder / "trials.csv"
        try:
            rows = max(len(trials.read_text(encoding="utf-8").splitlines()) - 1, 0) if trials.is_file() else 0
        except (OSError, UnicodeDecodeError):
            return "trials.csv cannot be read"
        return f"{rows} trial{'' if rows == 1 else 's'} in trials.csv"
    if kind == "pooled report":
        from targetprop.report import pooled_sources

        try:
            sources, _ = pooled_sources(folder)
        except TargetpropError as e:
            return f"problem: {e}"
        return "pooled from " + ", ".join(source.name for source in sources)
    parts = []
    for run in _runs_in(folder):
        try:
            parts.append(f"{run.path.name} {run_state(run).status}")
        except TargetpropError as e:
            parts.append(f"{run.path.name} cannot be read: {e}")
    if parts:
        return "; ".join(parts)
    return "tables only (no run directory kept)" if (folder / "table.md").is_file() else "no run yet"


def inspect_pooled(folder: Path, out: Console) -> None:
    """A table pooled by ``reproduce --report A --report B``: the folders it was made of, each as above."""
    from targetprop.report import pooled_sources

    print_line(out, f"pooled report: {folder}")
    try:
        sources, methods = pooled_sources(folder)
    except TargetpropError as e:
        print_line(out, f"problem: {e}")
        return
    if methods is not None:
        print_line(out, f"methods tabled: {', '.join(methods)}")
    for source in sources:
        print_line(out, "")
        print_line(out, f"from {source}")
        _print_request(source, out)
        print_table(out, _runs_table(source, "methods")[0])
    if (folder / "table.md").is_file():
        print_line(out, f"table: {folder / 'table.md'} (`targetprop reproduce --report {folder}` writes it again)")


def _not_started(folder: Path) -> list[str]:
    """The methods a reproduce directory was asked to run that have no run directory in it yet (a run stopped
    before it reached them), in the experiment's order."""
    from targetprop.experiments import find_self_running, get_experiment

    try:
        request = read_request(folder)
        if find_self_running(request["experiment"]) is not None:
            return []
        asked = request.get("methods") or [m.name for m in get_experiment(request["experiment"]).methods]
    except TargetpropError:  # the request line above says what is wrong with it
        return []
    return [m for m in asked if not (folder / m / "config.toml").is_file()]


def _print_request(folder: Path, out: Console) -> None:
    try:
        request = read_request(folder)
    except TargetpropError as e:
        print_line(out, f"problem: {e}")
        return
    asked = [f"experiment {request['experiment']}", f"scale {request['scale']}"]
    asked.append("seeds " + ",".join(map(str, request["seeds"])))
    if "epochs" in request:
        asked.append(f"epochs {request['epochs']}")
    if "methods" in request:
        asked.append("methods " + ",".join(request["methods"]))
    if "set" in request:
        asked.append("set " + " ".join(request["set"]))
    print_line(out, "asked: " + "; ".join(asked))


def _runs_table(folder: Path, title: str) -> tuple[Table, list[tuple[RunDir, RunState]]]:
    """One row per run below ``folder``: its status and its last evaluated errors; and the runs that need resuming."""
    table = Table(title=title)
    for column in ("run", "status", "last evaluated", "test error %", "train error %"):
        table.add_column(column)
    stopped = []
    runs = _runs_in(folder)
    if is_comparison(folder):  # in the order the rules were asked (and trained)
        with contextlib.suppress(TargetpropError):  # a damaged compare.toml: said by inspect_group's request line
            order = {rule: k for k, rule in enumerate(asked_rules(folder))}
            runs.sort(key=lambda run: order.get(run.path.name, len(order)))
    for run in runs:
        try:
            state = run_state(run)
        except TargetpropError as e:
            table.add_row(run.path.name, f"cannot be read: {e}", "", "", "")
            continue
        if state.needs_resume:
            stopped.append((run, state))
        status = state.status if state.busy is None else f"running; {state.done} of {state.total} epochs done"
        epoch, rows = _last_evaluated(state)
        table.add_row(
            run.path.name,
            status,
            f"epoch {epoch}" if epoch else "-",
            *(_mean_std(rows, k) for k in ("test_error", "train_error")),
        )
        for problem in state.problems:
            table.add_row("", f"problem: {problem}", "", "", "")
    return table, stopped


def _last_evaluated(state: RunState) -> tuple[int, list[dict[str, Any]]]:
    """The last finished epoch whose rows hold a test error for every replica (see ``eval_every``), and its rows."""
    replicas = len(state.config.get("seeds", [])) or 1
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for r in state.metrics.rows:
        if r["epoch"] <= state.done and isinstance(r.get("test_error"), int | float):
            by_epoch.setdefault(r["epoch"], []).append(r)
    full = [e for e, rows in by_epoch.items() if len(rows) >= replicas]
    return (max(full), by_epoch[max(full)]) if full else (0, [])


def _mean_std(rows: list[dict[str, Any]], key: str) -> str:
    """Mean ± std over the replicas of one epoch's rows, as the tables give it (the sample std)."""
    values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
    if not values:
        return "-"
    if len(values) == 1:
        return _number(values[0])
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def inspect_sweep(folder: Path, out: Console, at_epochs: Sequence[int] = ()) -> None:
    """The sweep's space and its trials, best first, as ``targetprop sweep`` tables them, from ``space.toml``,
    ``trials.csv`` and the trials' ``metrics.jsonl`` (how far a running trial has got, and each trial's validation
    error at ``at_epochs``): no lock is taken and no data read, so a sweep can be looked at while it runs."""
    print_line(out, f"sweep directory: {folder}")
    busy = holder(folder)
    print_line(out, f"status: {'running: ' + busy if busy else 'not running'}")
    space = None
    try:
        text = (folder / SPACE_FILE).read_text(encoding="utf-8")
        print_line(out, "space.toml:")
        for line in tomli_w.dumps(tomllib.loads(text)).splitlines():
            print_line(out, f"  {line}")
        space = load_space(folder / SPACE_FILE)
    except (ValueError, OSError, TargetpropError) as e:
        print_line(out, f"problem: space.toml cannot be read ({str(e).splitlines()[0]})")
    trials = folder / TRIALS_FILE
    if not trials.is_file():
        print_line(out, "no trial has started yet (no trials.csv)")
        return
    try:
        if space is None:  # the cells as written, untyped: still worth seeing
            print_table(out, _raw_csv_table(trials))
            return
        rows = read_trials_csv(space, folder)
    except (TargetpropError, OSError, csv.Error, UnicodeDecodeError) as e:
        print_line(out, f"problem: {e}")
        return
    finished = sum(1 for r in rows if r["state"] != "running" and r["run_dir"] is not None)
    try:
        table = trials_table(space, folder, rows, counted=finished, total=space.settings.trials, at_epochs=at_epochs)
    except TargetpropError as e:  # a trial's metrics.jsonl that cannot be read
        print_line(out, f"problem: {e}")
        return
    print_table(out, table)
    if at_epochs and not (folder / RUNS).is_dir():
        print_line(out, f"no {RUNS}/ here (kept without the trials' runs): nothing to show at --at-epoch")
    stopped = sum(1 for r in rows if r["state"] == "running")
    if stopped and not busy:
        print_line(
            out,
            f"{stopped} trial(s) were running when the sweep stopped; "
            f"`targetprop sweep --resume {folder}` continues them",
        )


def _raw_csv_table(path: Path) -> Table:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    table = Table(title=f"{path.name}, as written")
    for column in rows[0] if rows else []:
        table.add_column(column)
    for row in rows[1:]:
        table.add_row(*row[: len(rows[0])])
    return table


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"
