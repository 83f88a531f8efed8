"""``targetprop plot RUN``: every per-epoch metric of a run, or of a folder of runs, against epochs in one PNG.

One panel per metric m. For a column holding one number per row, the line is the mean over the replicas whose
value is finite and the band spans their range:

    m̄(e) = (1/|F_e|) Σ_{r ∈ F_e} m(e, r),   band [min_{r ∈ F_e} m(e, r), max_{r ∈ F_e} m(e, r)],
    F_e = {r : m(e, r) finite};

an epoch where no replica is finite is a gap (a diverged replica drops out of the mean, as in ``summary.json``).
A column holding a list, one number per layer i (``angle_deg``, ``inverse_error``, ...), gets that line and
band for each layer, from m(e, r, i). The columns are whatever the rows hold (:func:`targetprop.runs.metric_values`:
numbers and lists of numbers, bookkeeping such as epoch, replica, seed and seconds left out); nothing here knows
a rule or a metric by name.

RUN is a run directory, or a folder whose sub-folders are run directories (what ``compare`` and ``reproduce`` make,
or a sweep's ``runs/``): there every run is drawn in each panel in its own colour, labelled with its folder name
(with several runs, the layers of a list metric differ by line style).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targetprop.errors import ConfigError
from targetprop.runs import CONFIG, METRICS, RunDir, RunDirError, atomic_write, metric_values
from targetprop.tasks import get_task

DEFAULT_FILE = "metrics.png"
LINE_STYLES = ("-", "--", ":", "-.")
MEANINGS = {
    "batch_loss": "cost on the training mini-batches",
    "batch_error": "error on the training mini-batches",
    "train_loss": "cost on the training set, evaluated",
    "angle_deg": "the rule's update of W_i against BP's gradient",
    "signal_angle_deg": "the rule's signal against −∂L/∂h_i",
    "inverse_loss": "the feedback maps' training cost",
    "inverse_error": "||g_i(f_i(h_{i−1})) − h_{i−1}||², the inverses",
    "feedback_angle_deg": "forward W_i against the feedback B_i",
    "feedback_norm_ratio": "||W_i|| / ||B_i||",
    "sg_error": "||ĝ_i − ∂L/∂h_i||² / ||∂L/∂h_i||² (0: exact)",
    "synthetic_loss": "the gradient predictors' training cost",
}
"""A panel's second title line, for the metrics the trainer, the diagnostics (:mod:`targetprop.diagnostics`) and
the rules log; a metric not listed gets its name only."""


@dataclass
class Metric:
    """One column of one run: ``values[e, r, i]`` for the epochs ``epochs[e]``, replica r and layer i (one
    layer for a column of plain numbers); NaN where a row lacks it."""

    epochs: np.ndarray
    values: np.ndarray
    per_layer: bool

    def band(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, min and max over the finite replicas, shaped (epochs, layers); NaN where none is finite."""
        finite = np.isfinite(self.values)
        count = finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(finite, self.values, 0.0).sum(axis=1) / count
        low = np.where(finite, self.values, np.inf).min(axis=1)
        high = np.where(finite, self.values, -np.inf).max(axis=1)
        none = count == 0
        return np.where(none, np.nan, mean), np.where(none, np.nan, low), np.where(none, np.nan, high)


@dataclass
class Run:
    label: str
    path: Path
    replicas: int
    metrics: dict[str, Metric]
    error_label: str | None = None
    """What the run's task calls its error (:attr:`targetprop.tasks.Task.error_label`, e.g. "error %")."""


@dataclass
class Figure:
    """What :func:`plot_metrics` drew."""

    path: Path
    metrics: list[str]
    """The panels, in order: one metric name each."""
    runs: list[str]
    """The runs drawn (their folder names)."""
    log_scale: list[str]
    """The panels drawn on a log y axis (:func:`spans_decades`)."""


def find_runs(folder: Path) -> list[tuple[str, RunDir]]:
    """``folder`` itself if it is a run directory, else its sub-folders that are (by name)."""
    if not folder.exists():
        raise ConfigError(f"{str(folder)!r} does not exist; give a run directory or a folder of them")
    if not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is a file, not a run directory")
    if (folder / CONFIG).is_file():
        return [(folder.name, RunDir(folder))]
    runs = sorted((p.name, RunDir(p)) for p in folder.iterdir() if p.is_dir() and (p / CONFIG).is_file())
    if not runs:
        raise ConfigError(
            f"{str(folder)!r} is not a run directory (no {CONFIG}) and holds none; give the folder a run made "
            "(train), or the one compare or reproduce made"
        )
    return runs


def read_run(label: str, run: RunDir, note: Callable[[str], None]) -> Run:
    """Every metric column of ``run``'s ``metrics.jsonl`` as arrays (damaged lines skipped with a warning)."""
    found = run.read_metrics()
    if found.damaged:
        note(f"warning: {run.path / METRICS} line(s) {found.damaged[:10]} are damaged; drawn without them")
    epochs = sorted({row["epoch"] for row in found.rows})
    replicas = sorted({row["replica"] for row in found.rows})
    at_epoch = {e: k for k, e in enumerate(epochs)}
    at_replica = {r: k for k, r in enumerate(replicas)}
    kinds: dict[str, bool] = {}  # metric → holds a list; the kind its first value has
    cells: dict[str, list[tuple[int, int, list[float]]]] = {}
    for row in found.rows:
        for key, value in metric_values(row).items():
            per_layer = isinstance(value, list)
            if kinds.setdefault(key, per_layer) != per_layer:
                continue  # a value of the other kind counts as missing
            layers = value if isinstance(value, list) else [value]
            cells.setdefault(key, []).append((at_epoch[row["epoch"]], at_replica[row["replica"]], layers))
    metrics = {}
    for key, per_layer in kinds.items():
        width = max(len(layers) for _, _, layers in cells[key])
        values = np.full((len(epochs), len(replicas), width), np.nan)
        for e, r, layers in cells[key]:
            values[e, r, : len(layers)] = layers
        metrics[key] = Metric(np.array(epochs), values, per_layer)
    try:
        error_label = get_task(str(run.read_config().get("task", "classify"))).error_label
    except (RunDirError, ConfigError) as e:
        note(f"warning: {e}; the error panels are drawn without their unit")
        error_label = None
    return Run(label, run.path, len(replicas), metrics, error_label)


def available(runs: list[Run]) -> list[str]:
    """Every metric of the runs: columns of numbers first, then per-layer lists, each in the order first seen."""
    seen: dict[str, bool] = {}
    for run in runs:
        for key, metric in run.metrics.items():
            seen.setdefault(key, metric.per_layer)
    return [k for k, per_layer in seen.items() if not per_layer] + [k for k, per_layer in seen.items() if per_layer]


def _output(folder: Path, out: Path | None) -> Path:
    if out is None:
        return folder / DEFAULT_FILE
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder; give a file name such as {out / DEFAULT_FILE}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    return out


def plot_metrics(
    folder: Path,
    out: Path | None = None,
    metrics: list[str] | None = None,
    note: Callable[[str], None] = lambda line: None,
) -> Figure:
    """Draw ``metrics`` (default: every one the rows hold) of the run(s) in ``folder`` into ``out`` (default
    ``folder/metrics.png``). Every check is done before anything is written."""
    folder = Path(folder)
    runs = [read_run(label, run, note) for label, run in find_runs(folder)]
    empty = [r.label for r in runs if not r.metrics]
    runs = [r for r in runs if r.metrics]
    if not runs:
        what = str(folder) if (folder / CONFIG).is_file() else f"none of the runs in {folder} ({', '.join(empty)})"
        raise ConfigError(f"{what} has no metrics yet (no epoch has finished); plot it after the first epoch")
    names = available(runs)
    if metrics is not None:
        if not metrics:
            raise ConfigError(f"--metrics is empty; give one or more of: {', '.join(names)}")
        unknown = [m for m in metrics if m not in names]
        if unknown:
            raise ConfigError(f"unknown metric {unknown[0]!r} in --metrics; available: {', '.join(names)}")
        names = list(dict.fromkeys(metrics))
    path = _output(folder, out)
    log_scale = _draw(folder, runs, names, path)
    return Figure(path, names, [r.label for r in runs], log_scale)


LOG_DECADES = 3
"""A panel whose values are all positive and span more than this many decades gets a log y axis (a metric that
grows by orders of magnitude, e.g. the inverse error of a run that breaks down, is otherwise a flat line and a
wall)."""


def metric_unit(name: str, runs: list[Run]) -> str | None:
    """The y axis label of a logged metric: the task's error (e.g. "error %") for the errors on the data, degrees
    for angles; None for the rest (losses, inverse and synthetic-gradient errors, in the cost's own units)."""
    if name.endswith("_deg"):
        return "degrees"
    if name in ("batch_error", "train_error", "valid_error", "test_error"):
        labels = sorted({r.error_label for r in runs if r.error_label})
        return " / ".join(labels) or None
    return None


def spans_decades(values: np.ndarray) -> bool:
    """True when the finite values are all positive and ``max / min > 10^LOG_DECADES``."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 10**LOG_DECADES


def panel_title(name: str, per_layer: bool, log: bool) -> str:
    """The metric's name, whether it has a line per layer and a log axis, and on a second line what it measures."""
    title = name + (" (per layer)" if per_layer else "") + (", log scale" if log else "")
    return f"{title}\n{MEANINGS[name]}" if name in MEANINGS else title


def _draw(folder: Path, runs: list[Run], names: list[str], path: Path) -> list[str]:
    """Draw the panels into ``path``; return the names of those drawn on a log y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.5 * rows), layout="constrained", squeeze=False)
    several = len(runs) > 1
    log_scale: list[str] = []
    for ax, name in zip(axes.flat, names, strict=False):
        drawn, lines = False, 0
        shown: list[np.ndarray] = []  # the values drawn in this panel, for the choice of a log axis
        for k, run in enumerate(runs):
            metric = run.metrics.get(name)
            if metric is None:
                continue
            mean, low, high = metric.band()
            for i in range(mean.shape[1]):
                if not np.isfinite(mean[:, i]).any():
                    continue  # a layer the metric does not apply to (NaN throughout): no line, no legend entry
                color = f"C{k}" if several or not metric.per_layer else f"C{i}"
                parts = ([run.label] if several else []) + ([f"layer {i + 1}"] if metric.per_layer else [])
                ax.plot(
                    metric.epochs,
                    mean[:, i],
                    color=color,
                    linestyle=LINE_STYLES[i % len(LINE_STYLES)] if several and metric.per_layer else "-",
                    marker="o" if len(metric.epochs) < 10 else None,
                    markersize=3,
                    label=" ".join(parts) or None,
                )
                ax.fill_between(metric.epochs, low[:, i], high[:, i], color=color, alpha=0.2, linewidth=0)
                drawn, lines = True, lines + 1
                shown += [low[:, i], high[:, i]]
        epochs = np.concatenate([r.metrics[name].epochs for r in runs if name in r.metrics])
        first, last = int(epochs.min()), int(epochs.max())
        if not drawn or last - first < 2:  # few epochs: whole-number ticks, not a zoom onto one point
            ax.set_xlim(first - 0.5, last + 0.5)
            ax.set_xticks(range(first, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not drawn:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")
        per_layer = any(name in r.metrics and r.metrics[name].per_layer for r in runs)
        log = drawn and spans_decades(np.concatenate(shown))
        if log:
            ax.set_yscale("log")
            log_scale.append(name)
        ax.set_title(panel_title(name, per_layer, log), fontsize="medium")
        ax.set_xlabel("epoch")
        if unit := metric_unit(name, runs):
            ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        if lines and (several or per_layer):
            ax.legend(fontsize="x-small")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    replicas = ", ".join(f"{r.label} {r.replicas}" for r in runs) if several else str(runs[0].replicas)
    fig.suptitle(f"{folder}: mean over replicas ({replicas}), band min-max", fontsize="medium")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return log_scale
