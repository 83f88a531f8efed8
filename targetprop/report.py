"""The table and figure of a reproduce directory, built from what its method run directories hold.

``targetprop reproduce`` calls :func:`write_report` when every method has finished. ``targetprop reproduce
--report DIR`` builds the same table and figure from what a directory holds *now* (:func:`report`): a run still
going or stopped part-way (each method counted to its last finished epoch, the table saying how many of how many),
or several directories of one experiment whose seeds were split over runs (``--report A --report B``: the seeds of
each method pooled, as if one run had trained them all). Nothing is trained and no checkpoint is written; a
finished method's ``summary.json`` is used as it is, any other is summarised from its ``metrics.jsonl`` the way
the trainer summarises a finished run (:func:`targetprop.trainer.summarize`).

table.md, table.csv  per method: final test error, test error at the best-validation epoch, final train error
                     (mean ± std over seeds), seconds per epoch, and the paper's figure; an experiment may add
                     columns and notes of its own; table.md then gives each seed's final test error
seeds.csv            per method and seed: the final test, validation and train errors, the best-validation epoch
                     and the test error there, whether it diverged or collapsed, and each classifier's test error
errors.png           train and test error against epochs, mean over seeds with a min-max band
report.toml          (``--report`` into a new folder only) the directories the table was built from
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import textwrap
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from targetprop.config import RunConfig, make_config
from targetprop.errors import ConfigError, TargetpropError
from targetprop.experiments import find_self_running, get_experiment
from targetprop.experiments.paper import Experiment, Method
from targetprop.health import has_diverged, seeds_cell
from targetprop.probe import NEAR_CONSTANT_STD, ProbeSettings
from targetprop.runs import RunDir, atomic_write
from targetprop.tasks import get_task


@dataclass
class MethodResult:
    """One method of an experiment: its summary over seeds and the run directories its seeds were trained in
    (one, unless ``--report`` pooled several)."""

    method: Method
    summary: dict[str, Any]
    run_dirs: tuple[Path, ...]
    probes: list[dict[str, Any]] = field(default_factory=list)
    """The classifiers on an auto-encoder's code (``probe.json``, ``probe-finetune.json``), if the experiment has
    them (:mod:`targetprop.probe`)."""
    planned_epochs: int | None = None
    """The epochs the run was asked for, when it has not trained them all yet (``--report`` of a partial run)."""
    notes: list[str] = field(default_factory=list)
    """What the table leaves out and why (a classifier the run directories hold but cannot be tabled as one)."""

    @property
    def run_dir(self) -> Path:
        """The run directory of the first seeds: its config and checkpoint stand for the method's."""
        return self.run_dirs[0]

    def metrics_rows(self) -> list[dict[str, Any]]:
        """Every metrics row of every run directory, replica indexes numbered on across them."""
        rows: list[dict[str, Any]] = []
        offset = 0
        for folder in self.run_dirs:
            run = RunDir(folder)
            latest = {(r["epoch"], r["replica"]): r for r in run.read_metrics().rows}  # a rerun epoch: the last
            rows += [{**r, "replica": r["replica"] + offset} for _, r in sorted(latest.items())]
            offset += len(stored_config(run).seeds)
        return rows


# ------------------------------------------------------------------------------------------------------------
# Table


COLUMNS = (
    ("final test {error}", "test_error"),
    ("test {error} at best valid", "test_error_at_best_valid"),
    ("final train {error}", "train_error"),
)
"""Table columns: label (with the task's error, e.g. "error %" or "reconstruction error") and summary key."""


def probe_headings(results: list[MethodResult]) -> dict[str, tuple[str, str]]:
    """Every classifier column of these results, in order: csv key → (heading, note)."""
    return {key: (label, note) for r in results for p in r.probes for key, label, note, _ in probe_columns(p)}


def probe_columns(probe: dict[str, Any]) -> list[tuple[str, str, str, dict[str, float]]]:
    """The table columns of one classifier on the learned code (a probe file's contents): per column its csv key,
    its heading, a note saying what it measures, and its mean and std over seeds."""
    settings = ProbeSettings(**{"kind": "linear", **probe["settings"]})
    columns = [(f"{'classifier' if settings.kind == 'linear' else settings.kind}_test_error", settings.label)]
    notes = [settings.describe]
    stats = [probe["test_error"]]
    if "control" in probe:
        columns.append((f"{settings.kind}_control_test_error", settings.control_label))
        notes.append(settings.control_note)
        stats.append(probe["control"]["test_error"])
    if "near_constant_units" in probe:
        columns.append(("near_constant_units", "near-constant hidden units"))
        notes.append(
            f"of the {probe.get('units', '?')} hidden units, those whose activation has a standard deviation below "
            f"{NEAR_CONSTANT_STD:g} over the test images (dead, saturated or untrained: no classifier can use them)"
        )
        stats.append(probe["near_constant_units"])
    return [(key, label, note, st) for (key, label), note, st in zip(columns, notes, stats, strict=True)]


def table_rows(experiment: Experiment, results: list[MethodResult]) -> list[dict[str, Any]]:
    """One row per method: mean and std over seeds of each figure, the paper's figure as a test error %."""
    rows = []
    for r in results:
        s = r.summary
        row: dict[str, Any] = {"method": r.method.name, "rule": r.method.rule}
        for _, key in COLUMNS:
            stats = s.get(key) or {}
            row[f"{key}_mean"] = stats.get("mean", math.nan)
            row[f"{key}_std"] = stats.get("std", math.nan)
        for probe in r.probes:
            for key, _, _, stats in probe_columns(probe):
                row[f"{key}_mean"], row[f"{key}_std"] = stats["mean"], stats["std"]
        if experiment.columns:
            config = stored_config(RunDir(r.run_dir))
            row.update({c.key: c.value(r.method, config, s) for c in experiment.columns})
        row["seconds_per_epoch"] = s.get("seconds_per_epoch", math.nan)
        row["epochs"] = s.get("epochs")
        row["planned_epochs"] = r.planned_epochs or s.get("epochs")
        row["seeds"] = s.get("replicas")
        row["diverged_seeds"] = len(s.get("diverged_seeds") or [])
        row["collapsed_seeds"] = len(s.get("collapsed_seeds") or [])
        paper = experiment.paper_error(r.method)
        row["paper_test_error"] = paper if paper is not None else ""
        row["paper_reported"] = f"{r.method.paper} ({experiment.paper_metric})" if r.method.paper is not None else ""
        row["note"] = r.method.note
        rows.append(row)
    return rows


def _pm(mean: float, std: float) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.2f} ± {std:.2f}"


def markdown_table(
    experiment: Experiment,
    rows: list[dict[str, Any]],
    folder: Path,
    scale: str,
    config: RunConfig,
    extra_notes: list[str] | None = None,
    probed: dict[str, tuple[str, str]] | None = None,
    per_seed: list[dict[str, Any]] | None = None,
    evaluated: str = "",
) -> str:
    """The table as Markdown; ``probed`` (:func:`probe_headings`) the classifier columns, key: (heading, note);
    ``per_seed`` (:func:`seed_rows`) each seed's final test error, in a table of its own below; ``evaluated``
    (:func:`evaluated_epochs`) ends the settings line."""
    probed = probed or {}
    settings = (
        f"{config.data} {config.architecture}, "
        + (f"first {config.n_train} training examples, " if config.n_train else "")
        + f"{config.epochs} epochs, seeds {','.join(map(str, config.seeds))}{evaluated}"
    )
    error = get_task(config.task).error_label
    head = [
        "method",
        *(label.format(error=error) for label, _ in COLUMNS),
        *(label for label, _ in probed.values()),
        *(c.label for c in experiment.columns),
        "s / epoch",
        "seeds",
        "paper test error %",
    ]
    lines = [
        f"# {experiment.name}: {experiment.description}",
        "",
        f"Scale {scale}: {settings}. Run directory `{folder}`; every figure the mean ± std over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for row in rows:
        paper = row["paper_test_error"]
        cells = [
            row["method"],
            *(_pm(row[f"{key}_mean"], row[f"{key}_std"]) for _, key in COLUMNS),
            *(_pm(row.get(f"{key}_mean", math.nan), row.get(f"{key}_std", math.nan)) for key in probed),
            *(str(row[c.key]) for c in experiment.columns),
            f"{row['seconds_per_epoch']:.2f}",
            seeds_cell(row["seeds"], row["diverged_seeds"], row.get("collapsed_seeds", 0)),
            "-" if paper == "" else f"{paper:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if per_seed:
        lines += ["", *seeds_markdown(per_seed, error)]
    notes = [f"- {row['method']}: {row['note']}" for row in rows if row["note"]]
    if experiment.paper_metric == "test accuracy %":
        notes.insert(0, "- the paper reports test accuracy; its column here is 100 − accuracy")
    if probed:
        notes[:0] = [f"- {label}: {note}" for label, note in probed.values()] + [
            "- the paper's figure is set against the classifiers; the reconstruction error is the mean squared error "
            "per image, ||s(a) − x||²"
        ]
    if experiment.notes is not None:
        notes += [f"- {line}" for line in experiment.notes()]
    notes += [f"- {line}" for line in extra_notes or []]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


SEED_COLUMNS = (
    "test_error",
    "test_error_at_best_valid",
    "best_epoch",
    "valid_error",
    "train_error",
    "diverged",
    "collapsed_at",
)
"""What seeds.csv gives of each seed: the keys of a summary's ``per_replica`` rows (:func:`targetprop.trainer.summarize`)."""


def seed_rows(results: list[MethodResult]) -> list[dict[str, Any]]:
    """One row per method and seed: its figures at the last epoch (:data:`SEED_COLUMNS`) and, for each classifier on
    the learned code, that seed's test error under the classifier's column key (as in table.csv, without ``_mean``)."""
    rows = []
    for r in results:
        probes: dict[str, dict[int, float]] = {}  # classifier column key → seed → test error
        for probe in r.probes:
            key = probe_columns(probe)[0][0]
            probes[key] = {p["seed"]: p["test_error"] for p in probe["per_replica"]}
        for replica in r.summary.get("per_replica", []):
            row = {"method": r.method.name, "seed": replica["seed"]}
            row.update({key: replica.get(key) for key in SEED_COLUMNS})
            row.update({key: by_seed.get(replica["seed"]) for key, by_seed in probes.items()})
            rows.append(row)
    return rows


def seeds_markdown(rows: list[dict[str, Any]], error: str) -> list[str]:
    """Each seed's final test error, a column per seed and a row per method ("-" where a method lacks the seed)."""
    seeds = sorted({row["seed"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    value = {(row["method"], row["seed"]): row["test_error"] for row in rows}
    lines = [
        f"Final test {error} of each seed:",
        "",
        "| method | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for method in methods:
        cells = [value.get((method, seed)) for seed in seeds]
        lines.append(f"| {method} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    return lines


def csv_table(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, with every column any row has (a method without a classifier column leaves its cells empty)."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# Figure


def curves(result: MethodResult, key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """The epochs at which every replica has ``key`` and, per such epoch, its mean, min and max over the replicas
    that stayed finite. Seeds pooled from runs evaluated at different epochs (every 20th in one, every 50th in
    another) are drawn only where all were evaluated: a mean over some of the seeds here and others there would
    zigzag between them."""
    by_epoch: dict[int, list[float]] = {}
    present: dict[int, int] = {}  # epoch → replicas with a value, finite or not
    last = result.summary.get("epochs") or math.inf  # a pooled report stops where every seed has got to
    for row in (r for r in result.metrics_rows() if r["epoch"] <= last):
        value = row.get(key)
        if isinstance(value, int | float):
            present[row["epoch"]] = present.get(row["epoch"], 0) + 1
            if math.isfinite(value):
                by_epoch.setdefault(row["epoch"], []).append(float(value))
    everyone = max(present.values(), default=0)
    epochs = sorted(e for e in by_epoch if present[e] == everyone)
    return (
        epochs,
        [statistics.fmean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


ERROR_TICKS = ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
"""Where an error axis may be labelled within each decade, coarsest first: on symlog's decades alone (0, 1, 10,
100) a panel whose errors all lie between 1 and 10 %, as most do, has no labelled tick at all."""


def error_scale(ax) -> None:
    """An error-% axis for what ``ax`` holds: linear below 1 % (a train error of 0 stays on the plot), logarithmic
    above, labelled as plain numbers (2, 3, 5 rather than 2×10⁰) at the coarsest of ``ERROR_TICKS`` that puts three
    labels inside the data's range, else at evenly spaced round numbers (a range as narrow as 1.6-1.9 %). Call it
    after plotting."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, SymmetricalLogLocator

    ax.set_yscale("symlog", linthresh=1.0)
    low, high = ax.get_ylim()
    locators = [SymmetricalLogLocator(base=10, linthresh=1.0, subs=subs) for subs in ERROR_TICKS]
    locators.append(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    locator = next(
        (loc for loc in locators if sum(low <= t <= high for t in loc.tick_values(low, high)) >= 3), locators[-1]
    )
    ax.yaxis.set_major_locator(locator)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.grid(True, which="both", alpha=0.3)


def evaluated_epochs(results: list[MethodResult]) -> str:
    """The end of the settings line, ``, evaluated at 21 of 1000 epochs``, where the test error was not measured
    every epoch (``eval_every``; seeds pooled from runs evaluated at different epochs count where all were), else
    nothing. Read from the metrics, not the config: a run resumed with another ``eval_every`` changed it half-way."""
    trained = max((int(r.summary.get("epochs", 0)) for r in results), default=0)
    evaluated = max((len(curves(r, "test_error")[0]) for r in results), default=0)
    return f", evaluated at {evaluated} of {trained} epochs" if 0 < evaluated < trained else ""


def plot_errors(
    experiment: Experiment,
    results: list[MethodResult],
    path: Path,
    changes: Sequence[str] = (),
    evaluated: str = "",
) -> None:
    """Train and test error against epochs for every method: mean over seeds, band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    for ax, (key, title) in zip(axes, (("train_error", "train error"), ("test_error", "test error")), strict=True):
        for k, r in enumerate(results):
            epochs, mean, low, high = curves(r, key)
            if not epochs:
                continue
            color = f"C{k}"
            ax.plot(epochs, mean, color=color, label=r.method.name, marker="o" if len(epochs) < 10 else None)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
            paper = experiment.paper_error(r.method)
            if key == "test_error" and paper is not None and not experiment.probes:
                ax.axhline(paper, color=color, linestyle=":", linewidth=1, label=f"{r.method.name} (paper)")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        error_scale(ax)
    error = results[0].summary.get("error", "error %") if results else "error %"
    axes[0].set_ylabel(f"{error} (mean over seeds, band: min-max)")
    axes[1].legend(fontsize="small")
    seeds = {p["seed"] for r in results for p in r.summary.get("per_replica", [])}
    trained = max((int(r.summary.get("epochs", 0)) for r in results), default=0)
    ran = f" (ran: {len(seeds)} seed(s), {trained} epochs{evaluated})" if seeds else ""
    changed = f"; set on the command line: {', '.join(changes)}" if changes else ""
    title = textwrap.fill(f"{experiment.name}: {experiment.description}{ran}{changed}", 130)  # long: two lines
    fig.suptitle(title, fontsize="medium")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(
    experiment: Experiment,
    folder: Path,
    results: list[MethodResult],
    scale: str,
    config: RunConfig,
    extra_notes: list[str] | None = None,
    changes: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Write table.md, table.csv, seeds.csv and errors.png into ``folder``; ``config`` is one method's (for the
    settings line); ``extra_notes`` end the table's notes; ``changes``, the ``reproduce --set`` assignments the runs
    were made with, go into the figure's title (the notes say them already)."""
    rows = table_rows(experiment, results)
    per_seed = seed_rows(results)
    evaluated = evaluated_epochs(results)
    markdown = markdown_table(
        experiment, rows, folder, scale, config, extra_notes, probe_headings(results), per_seed, evaluated
    )
    atomic_write(folder / "table.md", lambda f: f.write(markdown.encode()))
    text = csv_table(rows)
    atomic_write(folder / "table.csv", lambda f: f.write(text.encode()))
    seeds_text = csv_table(per_seed)
    atomic_write(folder / "seeds.csv", lambda f: f.write(seeds_text.encode()))
    plot_errors(experiment, results, folder / "errors.png", changes, evaluated)
    return rows


# ------------------------------------------------------------------------------------------------------------
# --report: the table of what directories hold now


def report(
    folders: list[str | Path],
    *,
    out: str | Path | None = None,
    run_name: str | None = None,
    methods: str | list[str] | None = None,
    note: Callable[[str], None] = lambda line: None,
) -> tuple[Experiment, Path, list[MethodResult]]:
    """Write the table and figure of the reproduce directories ``folders`` as they stand, training nothing.

    One directory: the report goes into it, unless ``out`` or ``run_name`` asks for a new folder. Several: they
    must hold the same experiment at the same scale, each method's seeds must not repeat across them. A new folder
    is ``run_name`` (default ``report-NAME-SCALE-<time>``) under ``out`` (default ``runs``), with ``report.toml``
    naming the sources. A method still training, or stopped, counts to its last finished epoch, and the table says how
    many of its planned epochs that is. An auto-encoder's classifier columns are read from its probe files
    where they were trained on the epochs reported (``reproduce`` trains them; a report does not), pooled over
    the directories where each holds the same classifier (:func:`pooled_probe`).

    ``methods`` (names, or one comma-separated string) tables only those; a pooled report records them in its
    ``report.toml``, so that writing it again in place keeps them (unless ``methods`` names others).
    """
    from targetprop.reproduce import chosen_methods, read_request

    if not folders:
        raise ConfigError("--report needs at least one reproduce directory")
    in_place = len(folders) == 1 and run_name is None and out is None
    alone = Path(folders[0]) if len(folders) == 1 else None
    pooled = alone if alone is not None and (alone / "report.toml").is_file() else None
    if pooled is not None:  # a pooled report, written again (in place, or into a new folder)
        folders, recorded = pooled_sources(pooled)
        methods = recorded if methods is None else methods
    paths = [Path(f) for f in folders]
    requests = [read_request(p) for p in paths]
    itself = find_self_running(requests[0]["experiment"])
    if itself is not None:
        raise ConfigError(
            f"{paths[0]} holds {itself.name}, which trains no methods and writes its own table when it runs; "
            f"--report tables the experiments that train methods (run `targetprop reproduce {itself.name}` again "
            "for a new table)"
        )
    experiment = get_experiment(requests[0]["experiment"])
    scale = requests[0]["scale"]
    for path, request in zip(paths, requests, strict=True):
        if request["experiment"] != experiment.name or request["scale"] != scale:
            raise ConfigError(
                f"{path} holds {request['experiment']} at scale {request['scale']}, {paths[0]} holds "
                f"{experiment.name} at scale {scale}: a report pools runs of one experiment and scale"
            )
    tabled = chosen_methods(experiment, methods) if methods is not None else None
    results, extra, left_out = [], [], []
    for method in experiment.methods:
        sources = [p / method.name for p in paths if (p / method.name / "config.toml").is_file()]
        sources = [s for s in sources if RunDir(s).read_metrics().rows]  # one finished epoch at least
        if not sources:
            continue
        if tabled is not None and method.name not in tabled:
            left_out.append(method.name)
            continue
        probes = experiment.probes_smoke if scale == "smoke" else experiment.probes
        result = method_result(method, sources, probes)
        results.append(result)
        extra += settings_changed(experiment, method, sources, scale) + result.notes
        if result.planned_epochs is not None:
            extra.append(
                f"{method.name}: epoch {result.summary['epochs']} of {result.planned_epochs}, the last that every "
                "seed has finished (a run still going or stopped): its figures are every seed's at that epoch"
            )
    if not results:
        which = f" of {', '.join(tabled)}" if tabled is not None else ""
        if not any((p / m.name / "config.toml").is_file() for p in paths for m in experiment.methods):
            raise ConfigError(
                f"{', '.join(map(str, paths))}: no method's run directory here (kept as its table alone?); "
                "nothing to report"
            )
        raise ConfigError(
            f"{', '.join(map(str, paths))}: no method{which} has finished an epoch yet; nothing to report"
        )
    if left_out:
        extra.append(
            f"only {', '.join(r.method.name for r in results)} tabled (--methods); left out: {', '.join(left_out)}"
        )
    for path, request in zip(paths, requests, strict=True):
        if request.get("set"):
            extra.append(set_note(request["set"], path if len(paths) > 1 else None))
    if len(paths) > 1:
        extra.append(
            "seeds pooled from: "
            + "; ".join(f"{p} (seeds {','.join(map(str, r['seeds']))})" for p, r in zip(paths, requests, strict=True))
        )
    if in_place:
        folder = pooled if pooled is not None else paths[0]
    else:
        folder = RunDir.create(out or "runs", run_name or RunDir.default_name(f"report-{experiment.name}", scale)).path
    if folder not in paths:  # a pooled report names its sources
        sources = [os.path.relpath(os.path.abspath(p), os.path.abspath(folder)) for p in paths]  # moves with it
        listing: dict[str, Any] = {"experiment": experiment.name, "scale": scale, "sources": sources}
        if tabled is not None:
            listing["methods"] = tabled
        atomic_write(folder / "report.toml", lambda f: f.write(tomli_w.dumps(listing).encode()))
    config = stored_config(RunDir(results[0].run_dir))
    seeds = sorted({p["seed"] for r in results for p in r.summary["per_replica"]})
    changes = list(dict.fromkeys(a for request in requests for a in request.get("set", [])))
    write_report(experiment, folder, results, scale, config.model_copy(update={"seeds": seeds}), extra, changes)
    note(f"report of {len(results)} method(s) written into {folder}")
    return experiment, folder, results


def stored_config(run: RunDir) -> RunConfig:
    """The configuration ``run`` was trained with, read to table it: on the CPU whatever device it trained on, so
    that a run made on a GPU is tabled on a machine without one (a table trains nothing)."""
    return make_config(run.read_config(), device="cpu")


def set_note(assignments: list[str], where: Path | None = None) -> str:
    """The table's note of the ``reproduce --set`` changes a run was made with (``where``: its folder, when a
    report pools several)."""
    folder = f" ({where})" if where is not None else ""
    return f"set on the command line (over the experiment's settings of the time){folder}: {', '.join(assignments)}"


def settings_changed(experiment: Experiment, method: Method, run_dirs: list[Path], scale: str) -> list[str]:
    """A note for each hyper-parameter a run was trained with that the experiment no longer sets so (its defaults
    moved after a search, say): the table's other notes describe the experiment as it is now."""
    from targetprop.reproduce import method_config

    now = method_config(experiment, method, scale=scale).rule_config().model_dump()
    lines = []
    for run_dir in run_dirs:
        then = stored_config(RunDir(run_dir)).rule_config(method.rule).model_dump()
        changed = [f"{key} = {then[key]!r} (now {now[key]!r})" for key in now if then.get(key) != now[key]]
        if changed:
            lines.append(f"{method.name}: {run_dir} was trained with " + ", ".join(changed))
    return lines


def method_result(method: Method, run_dirs: list[Path], method_probes: tuple[ProbeSettings, ...] = ()) -> MethodResult:
    """One method's result from its run directories as they stand: a single finished run's own summary, or the
    seeds of every run summarised together to the last epoch each has finished."""
    from targetprop.trainer import summarize

    runs = [RunDir(d) for d in run_dirs]
    configs = [stored_config(run) for run in runs]
    planned = max(c.epochs for c in configs)
    seeds = [s for c in configs for s in c.seeds]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(
            f"{method.name}: seed(s) {repeated} were trained in more than one of {', '.join(map(str, run_dirs))}; "
            "a report pools different seeds"
        )
    result = MethodResult(method, {}, tuple(run_dirs))
    rows = result.metrics_rows()
    reached: dict[int, int] = {}  # replica → its last finished epoch
    for r in rows:
        reached[r["replica"]] = max(reached.get(r["replica"], 0), r["epoch"])
    done = min(reached.values())
    kept = runs[0].read_summary()
    if len(runs) == 1 and kept is not None and kept.get("epochs") == done and "lowest_test_error" in kept:
        result.summary = kept  # (a summary written before lowest_test_error existed is made again from the rows)
    else:
        rows = [r for r in rows if r["epoch"] <= done]  # every seed at the same epoch
        first_replicas = [sum(len(c.seeds) for c in configs[:k]) for k in range(len(configs))]
        diverged = {r["replica"] for r in rows if has_diverged(r)}
        config = configs[0].model_copy(update={"seeds": seeds, "epochs": planned})
        chance = _chance(runs, configs[0], lambda why: result.notes.append(f"{method.name}: {why}"))
        result.summary = summarize(config, rows, diverged, chance)
        result.summary["seconds_per_epoch"] = statistics.median(
            r["seconds"] for r in rows if r["replica"] in first_replicas
        )
    if done < planned:
        result.planned_epochs = planned
    for settings in method_probes:  # the classifiers trained on the runs' code at these epochs (reproduce trains them)
        damage: list[str] = []
        found = [read_probe(d / settings.file, damage.append) for d in run_dirs]
        probe = pooled_probe(found, result.summary.get("epochs"))
        if probe is not None:
            result.probes.append(probe)
        elif damage:
            result.notes.append(f"{method.name}: {settings.file} left out: {'; '.join(damage)}")
        elif any(p is not None for p in found):
            result.notes.append(
                f"{method.name}: {settings.file} left out: not every run directory holds it trained with the same "
                f"settings on the code of epoch {result.summary.get('epochs')}"
            )
    return result


def pooled_sources(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The reproduce directories a pooled report (``folder/report.toml``) was made of, each where it was recorded
    or, once copied into the report's folder (results kept without their run directories), there; and the methods
    it tables (None: every method they hold).

    A source is recorded relative to the report's folder; reports written before 2026-12-07 recorded it relative to
    the directory they were made in (the repository's root, for those kept under ``results/``), so such a path is
    also looked for from the current directory and from each folder above the report."""
    from targetprop.reproduce import EXPERIMENT_FILE

    try:
        listing = tomllib.loads((folder / "report.toml").read_text(encoding="utf-8"))
        sources, methods = listing["sources"], listing.get("methods")
        if methods is not None and not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
            raise TypeError("methods is not a list of names")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{folder}/report.toml cannot be read ({e}); give the directories with --report each"
        ) from None
    found = []
    for source in map(Path, sources):
        above = [parent / source for parent in Path(os.path.abspath(folder)).parents]
        for place in (Path(os.path.normpath(folder / source)), source, *above, folder / source.name):
            if (place / EXPERIMENT_FILE).is_file():
                found.append(place)
                break
        else:
            raise ConfigError(
                f"{folder}/report.toml pools {source}, which is neither there nor copied into {folder}; give the "
                "directories with --report each"
            )
    return found, methods


def read_probe(path: Path, damaged: Callable[[str], None] = lambda problem: None) -> dict[str, Any] | None:
    """A classifier's result file, or None where there is none or it cannot be read (``damaged`` is then told
    why: a report leaves its column out, ``reproduce`` trains it again)."""
    if not path.is_file():
        return None
    try:
        probe = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        damaged(f"{path} cannot be read ({e})")
        return None
    if not isinstance(probe, dict):
        damaged(f"{path} holds no classifier's result")
        return None
    return probe


def with_seed_stats(probe: dict[str, Any]) -> dict[str, Any]:
    """``probe`` (a classifier's result) with the mean and std over seeds of its per-seed figures beside its
    ``per_replica`` rows: the test error, and the linear classifier's near-constant units; its control's likewise."""
    for part in (p for p in (probe, probe.get("control")) if p is not None):
        for key in ("test_error", "near_constant_units"):
            if key in part["per_replica"][0]:
                values = [p[key] for p in part["per_replica"]]
                part[key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                }
    return probe


def pooled_probe(probes: Sequence[dict[str, Any] | None], epochs: int | None) -> dict[str, Any] | None:
    """One classifier's result over the seeds of several runs (each run's result file, in the runs' order), or None
    unless every run has it, trained on the code of the same ``epochs`` with the same settings: the seeds of
    different classifiers, or of auto-encoders at other epochs, are not pooled into one figure."""
    if not probes or any(p is None or p.get("autoencoder_epochs") != epochs for p in probes):
        return None
    first = probes[0]
    if len(probes) == 1:
        return first
    if any(p.get("settings") != first.get("settings") or ("control" in p) != ("control" in first) for p in probes):
        return None
    pooled = {**first, "per_replica": [row for p in probes for row in p["per_replica"]]}
    if "control" in first:
        rows = [row for p in probes for row in p["control"]["per_replica"]]
        pooled["control"] = {**first["control"], "per_replica": rows}
    return with_seed_stats(pooled)


def _chance(runs: list[RunDir], config: RunConfig, unknown: Callable[[str], None]) -> float | None:
    """The task's chance error on the training set, for flagging collapsed seeds: from a finished run's summary,
    else a checkpoint's header, else the data (None, with nothing flagged, where none of them can be read: then
    ``unknown`` is told why)."""
    for run in runs:
        summary = run.read_summary()
        if summary is not None and "chance_error" in summary:
            return summary["chance_error"]
    for run in runs:
        try:
            header = run.checkpoint_header()
        except TargetpropError:
            header = None
        if header is not None and "chance" in header:
            return header["chance"]
    from targetprop.data import load_dataset
    from targetprop.trainer import training_subset

    try:
        dataset = load_dataset(config.data, config.data_dir, download=False, n_valid=config.n_valid)
        if config.n_train is not None:
            dataset = training_subset(dataset, config.n_train)
    except TargetpropError as e:
        unknown(f"its chance error is unknown (no summary or checkpoint holds it, and the data cannot be read: {e}), so "
                "seeds that fell back to chance are not flagged")  # fmt: skip
        return None
    return get_task(config.task).chance_error(dataset.train)
