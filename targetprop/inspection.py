"""``targetprop inspect RUN``: what a run or sweep directory holds, read without running anything from it.

Only plain-data files are read: ``config.toml`` (TOML), ``metrics.jsonl`` and ``summary.json`` (JSON), the JSON
header of ``checkpoint.safetensors`` (no tensor is loaded), a sweep's ``space.toml`` and ``trials.csv``. An old
``checkpoint.pt`` is not opened at all. Damage is reported, not raised, so a broken run can still be looked at.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.table import Table

from targetprop.errors import TargetpropError
from targetprop.lock import holder
from targetprop.runs import CHECKPOINT, LEGACY_CHECKPOINT, SUMMARY, RunDir

SWEEP_FILES = ("space.toml", "study.log")


def inspect_folder(folder: Path, out: Console) -> None:
    if all((folder / name).is_file() for name in SWEEP_FILES):
        inspect_sweep(folder, out)
    else:
        inspect_run(RunDir.open(folder), out)


def _line(out: Console, text: str) -> None:
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def inspect_run(run: RunDir, out: Console) -> None:
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
        problems.append(f"{SUMMARY} cannot be read (`targetprop train --resume {run.path}` writes it again)")
    total = int(config.get("epochs", 0))
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
    busy = holder(run.path)
    if busy is not None:
        status = f"running: {busy}; {done} of {total} epochs done"
    elif done >= total and summary is not None:
        status = f"finished: {total} epochs"
    elif done >= total:
        status = f"trained all {total} epochs; its summary is missing or unreadable: `targetprop train --resume {run.path}` writes it"
    elif done == 0:
        status = f"no epoch finished; `targetprop train --resume {run.path}` starts it again"
    else:
        status = f"stopped after epoch {done} of {total}; continue with `targetprop train --resume {run.path}`"

    _line(out, f"run directory: {run.path}")
    _line(out, f"status: {status}")
    _line(out, f"checkpoint: {where}")
    for problem in problems:
        _line(out, f"problem: {problem}")
    _line(out, "")
    _line(out, "config.toml:")
    for text in tomli_w.dumps(config).splitlines():
        _line(out, f"  {text}")

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
        out.print(table)
    changes = [(r["epoch"], r["changed"]) for r in metrics.rows if r.get("changed") and r.get("replica") == 0]
    for epoch, changed in changes:
        _line(out, f"changed from epoch {epoch}: " + ", ".join(f"{k} = {v!r}" for k, v in changed.items()))
    if summary is not None:
        _line(out, "")
        _line(out, "summary.json (mean ± std over the replicas that did not diverge):")
        for key in ("test_error", "test_error_at_best_valid", "train_error", "valid_error"):
            stats = summary.get(key)
            if isinstance(stats, dict) and "mean" in stats:
                _line(out, f"  {key}: {_number(stats['mean'])} ± {_number(stats.get('std'))} %")
        if summary.get("diverged_seeds"):
            _line(out, f"  diverged seeds: {summary['diverged_seeds']}")
        collapsed = [(p["seed"], p["collapsed_at"]) for p in summary.get("per_replica", []) if p.get("collapsed_at")]
        if collapsed:
            _line(
                out,
                "  collapsed to chance (counted in the means): "
                + ", ".join(f"seed {seed} at epoch {epoch}" for seed, epoch in collapsed),
            )


def inspect_sweep(folder: Path, out: Console) -> None:
    import tomllib

    _line(out, f"sweep directory: {folder}")
    busy = holder(folder)
    _line(out, f"status: {'running: ' + busy if busy else 'not running'}")
    try:
        space = tomllib.loads((folder / "space.toml").read_text(encoding="utf-8"))
        _line(out, "space.toml:")
        for text in tomli_w.dumps(space).splitlines():
            _line(out, f"  {text}")
    except (ValueError, OSError) as e:
        _line(out, f"problem: space.toml cannot be read ({str(e).splitlines()[0]})")
    trials = folder / "trials.csv"
    if trials.is_file():
        try:
            with open(trials, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            _line(out, f"problem: trials.csv cannot be read ({e})")
            return
        if rows:
            table = Table(title="trials, best first")
            for column in rows[0]:
                table.add_column(column)
            for row in rows[1:]:
                table.add_row(*row[: len(rows[0])])
            out.print(table)


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"
