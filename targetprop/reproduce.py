"""``targetprop reproduce NAME``: run one experiment (the DTP paper's, or Deep Learning ch. 6's xor) with all its
methods, then write the paper-style table and figure.

<out>/reproduce-<name>-<time>/
  experiment.toml     what was asked: experiment, scale, seeds, epochs (``--resume DIR`` reads it)
  <method>/           one run directory per method (all seeds as replicas), see :mod:`targetprop.runs`
  table.md, table.csv per method: final test error, test error at the best-validation epoch, final train error
                      (mean ± std over seeds), seconds per epoch, and the paper's figure; an experiment may add
                      columns and notes of its own (xor: the seeds that solved it, the book's weights checked)
  errors.png          train and test error against epochs, mean over seeds with a min-max band
  filters.png         auto-encoders: the first 100 hidden units' input weights of each method (seed of replica 0)
  <method>/probe.json auto-encoders: the linear classifier on the learned code (:mod:`targetprop.probe`), whose
                      test error is the table's "classifier test error %" and the one the paper's figure is set
                      against

Running again with ``--resume DIR`` continues each method from its checkpoint; finished methods are not retrained.

An experiment that trains no methods (a measurement, such as ``early-inference``) runs itself: it is registered in
``targetprop.experiments.SELF_RUNNING`` and writes its own table and figures into the folder (see
:class:`~targetprop.experiments.paper.SelfRunning`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch

from targetprop.config import RunConfig, make_config
from targetprop.data import Dataset, load_dataset
from targetprop.errors import ConfigError
from targetprop.experiments import find_self_running, get_experiment
from targetprop.experiments.paper import Experiment, Method, SelfRunning
from targetprop.health import seeds_cell
from targetprop.nets import Network
from targetprop.probe import ProbeSettings, linear_probe
from targetprop.replicas import parse_seeds
from targetprop.runs import RunDir, atomic_write
from targetprop.tasks import get_task

EXPERIMENT_FILE = "experiment.toml"
SCALES = ("full", "smoke")
DEFAULT_SEEDS = {"full": "0-9", "smoke": "0-1"}


def method_config(experiment: Experiment, method: Method, *, scale: str = "full", **overrides: Any) -> RunConfig:
    """The run configuration of one method: the experiment's base, its smoke keys at ``scale="smoke"``, the
    method's own run keys, its rule and hyper-parameters, then ``overrides`` (seeds, epochs, device, ...)."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    data = {**experiment.base, **(experiment.smoke if scale == "smoke" else {}), **method.run}
    data["rule"] = method.rule
    data[method.rule] = dict(method.params)
    return make_config(data, **overrides)


@dataclass
class MethodResult:
    method: Method
    summary: dict[str, Any]
    run_dir: Path
    probe: dict[str, Any] | None = None
    """The linear classifier on an auto-encoder's code (``probe.json``), if the experiment has one."""


def chosen_methods(experiment: Experiment, methods: str | list[str]) -> list[str]:
    """The method names asked for (a list, or one comma-separated string), checked against the experiment's."""
    names = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods)
    known = [m.name for m in experiment.methods]
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ConfigError(
            f"{experiment.name} has no method {unknown[0]!r}; its methods: {', '.join(known)}"
            if unknown
            else f"--methods names none of {experiment.name}'s methods: {', '.join(known)}"
        )
    return [m for m in known if m in names]


def _read_request(folder: Path) -> dict[str, Any]:
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{str(folder)!r} is not a reproduce directory (no {EXPERIMENT_FILE})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


def reproduce(
    name: str | None,
    *,
    seeds: str | list[int] | None = None,
    epochs: int | None = None,
    scale: str | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    threads: int | str | None = None,
    out: str | Path = "runs",
    run_name: str | None = None,
    resume: str | Path | None = None,
    tensorboard: bool | None = None,
    methods: str | list[str] | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    note: Callable[[str], None] = lambda line: None,
) -> tuple[Experiment | SelfRunning, Path, list[MethodResult]]:
    """Run every method of experiment ``name`` (or continue the directory ``resume``); write the table and
    figure into the parent directory. ``methods`` (names, or one comma-separated string) runs only those, in the
    experiment's order; on a resumed directory it replaces the list it was run with, so methods can be added to
    it later (a finished one is read, not retrained). ``tensorboard`` (the run key) also writes each method's metrics as TensorBoard
    scalars; None keeps what a resumed method was run with. ``dataset`` replaces loading the data (tests). An
    experiment that runs itself (``SELF_RUNNING``) is handed to :func:`reproduce_self_running`."""

    asked_for = _read_request(Path(resume))["experiment"] if resume is not None else name
    if asked_for is not None and (itself := find_self_running(asked_for)) is not None:
        if methods is not None:
            raise ConfigError(f"{itself.name} trains no methods: --methods does not apply")
        return reproduce_self_running(
            itself,
            name,
            seeds=seeds,
            epochs=epochs,
            scale=scale,
            device=device,
            data_dir=data_dir,
            threads=threads,
            out=out,
            run_name=run_name,
            resume=resume,
            tensorboard=tensorboard,
            note=note,
        )
    if methods is not None and asked_for is not None:
        methods = chosen_methods(get_experiment(asked_for), methods)
    if resume is not None:
        folder = Path(resume)
        asked = _read_request(folder)
        if name is not None and get_experiment(name).name != asked["experiment"]:
            raise ConfigError(f"{folder} holds experiment {asked['experiment']!r}, not {name!r}")
        for key, value in (("scale", scale), ("seeds", seeds)):
            if value is not None and (parse_seeds(value) if key == "seeds" else value) != asked[key]:
                raise ConfigError(f"{folder} was run with {key} {asked[key]!r}; a resumed run keeps its {key}")
        experiment = get_experiment(asked["experiment"])
        scale, seed_list = asked["scale"], list(asked["seeds"])
        epochs = epochs if epochs is not None else asked.get("epochs")
        methods = methods if methods is not None else asked.get("methods")
    else:
        if name is None:
            raise ConfigError("give an experiment name (see `targetprop reproduce --list`) or --resume DIR")
        experiment = get_experiment(name)
        scale = scale or "full"
        seed_list = parse_seeds(seeds if seeds is not None else DEFAULT_SEEDS.get(scale, "0-9"))
        folder = None
    overrides = {
        "seeds": seed_list,
        "epochs": epochs,
        "device": device,
        "data_dir": data_dir,
        "threads": threads,
        "tensorboard": tensorboard,
    }
    selected = [m for m in experiment.methods if methods is None or m.name in methods]
    configs = [(m, method_config(experiment, m, scale=scale, **overrides)) for m in selected]
    first = configs[0][1]
    if dataset is None:
        dataset = load_dataset(
            first.data, first.data_dir, device=first.device, download=first.download, n_valid=first.n_valid
        )
    if folder is None:
        parent = RunDir.create(out, run_name or RunDir.default_name(f"reproduce-{experiment.name}", scale))
        folder = parent.path
        request = {"experiment": experiment.name, "scale": scale, "seeds": seed_list}
        if epochs is not None:
            request["epochs"] = epochs
        if methods is not None:
            request["methods"] = list(methods)
        atomic_write(folder / EXPERIMENT_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))
    else:
        request = {**asked, **({"epochs": epochs} if epochs is not None else {})}
        if methods is not None:
            request["methods"] = list(methods)
        atomic_write(folder / EXPERIMENT_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))
    with RunDir(folder).lock():
        results = _run_methods(experiment, folder, configs, overrides, dataset, progress, note)
        probe = experiment.probe_smoke if scale == "smoke" else experiment.probe
        if probe is not None:
            for result in results:
                result.probe = _probe(experiment, result, dataset, probe, note)
            plot_filters(experiment, results, dataset, folder / "filters.png")
        settings = RunDir(folder / selected[0].name).read_config()
        write_report(experiment, folder, results, scale, make_config(settings))
    return experiment, folder, results


def _run_methods(
    experiment: Experiment,
    folder: Path,
    configs: list[tuple[Method, RunConfig]],
    overrides: dict[str, Any],
    dataset: Dataset,
    progress: bool,
    note: Callable[[str], None],
) -> list[MethodResult]:
    """Train (or continue) each method in ``folder/<method>``; a finished method is read, not retrained."""
    from targetprop.resume import plan_resume
    from targetprop.train import train

    results = []
    for method, cfg in configs:
        run_dir = RunDir(folder / method.name)
        cfg = cfg.model_copy(update={"out": str(folder), "name": method.name})
        if not (run_dir.path / "config.toml").is_file():
            run_dir.path.mkdir(parents=True, exist_ok=True)
            run_dir.write_config(cfg.to_dict())
        plan = plan_resume(run_dir, **{k: v for k, v in overrides.items() if k != "seeds" and v is not None})
        summary = run_dir.read_summary()
        if plan.done >= plan.config.epochs and summary is not None and summary.get("epochs") == plan.done:
            note(f"{experiment.name} {method.name}: all {plan.done} epochs already done")
        else:
            if plan.done:
                note(f"{experiment.name} {method.name}: resuming after epoch {plan.done}")
            result = train(
                plan.config,
                dataset=dataset,
                run_dir=run_dir,
                resume=True,
                changes=plan.changes,
                progress=progress,
                continue_with=f"targetprop reproduce --resume {folder}",
            )
            summary = result.summary
        results.append(MethodResult(method, summary, run_dir.path))
    return results


def _trained_network(run_dir: Path, dataset: Dataset) -> Network:
    """The network of a finished run, as its last checkpoint holds it."""
    from targetprop.train import build

    folder = RunDir(run_dir)
    config = make_config(folder.read_config()).model_copy(update={"compile": "off"})
    state = folder.load_checkpoint(config.device)
    if state is None:
        raise ConfigError(f"{run_dir} has no checkpoint to read the trained network from")
    net, _ = build(config, dataset)
    net.load_state_dict(state["net"])
    return net


def _probe(
    experiment: Experiment, result: MethodResult, dataset: Dataset, settings: ProbeSettings, note: Callable[[str], None]
) -> dict[str, Any]:
    """The linear classifier on one method's learned code: read from ``probe.json`` when it was trained on the
    same epochs with the same settings, else trained now and written there."""
    path = result.run_dir / "probe.json"
    epochs = int(result.summary.get("epochs", 0))
    if path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            kept = None
        if kept and kept.get("autoencoder_epochs") == epochs and kept.get("settings") == settings.to_dict():
            return kept
    note(f"{experiment.name} {result.method.name}: linear classifier on the learned code ({settings.epochs} epochs)")
    net = _trained_network(result.run_dir, dataset)
    seeds = [p["seed"] for p in result.summary["per_replica"]]
    probe = {"autoencoder_epochs": epochs, **linear_probe(net, dataset, seeds, settings)}
    errors = [p["test_error"] for p in probe["per_replica"]]
    probe["test_error"] = {
        "mean": statistics.fmean(errors),
        "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
    }
    text = json.dumps(probe, indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))
    return probe


# ------------------------------------------------------------------------------------------------------------
# Table


COLUMNS = (
    ("final test {error}", "test_error"),
    ("test {error} at best valid", "test_error_at_best_valid"),
    ("final train {error}", "train_error"),
)
"""Table columns: label (with the task's error, e.g. "error %" or "reconstruction error") and summary key."""
PROBE_COLUMN = "classifier test error %"


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
        if r.probe is not None:
            row["classifier_test_error_mean"] = r.probe["test_error"]["mean"]
            row["classifier_test_error_std"] = r.probe["test_error"]["std"]
        if experiment.columns:
            config = make_config(RunDir(r.run_dir).read_config())
            row.update({c.key: c.value(r.method, config, s) for c in experiment.columns})
        row["seconds_per_epoch"] = s.get("seconds_per_epoch", math.nan)
        row["epochs"] = s.get("epochs")
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
    experiment: Experiment, rows: list[dict[str, Any]], folder: Path, scale: str, config: RunConfig
) -> str:
    settings = (
        f"{config.data} {config.architecture}, "
        + (f"first {config.n_train} training examples, " if config.n_train else "")
        + f"{config.epochs} epochs, seeds {','.join(map(str, config.seeds))}"
    )
    error = get_task(config.task).error_label
    probed = any("classifier_test_error_mean" in row for row in rows)
    head = [
        "method",
        *(label.format(error=error) for label, _ in COLUMNS),
        *([PROBE_COLUMN] if probed else []),
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
            *(
                [_pm(row.get("classifier_test_error_mean", math.nan), row.get("classifier_test_error_std", math.nan))]
                if probed
                else []
            ),
            *(str(row[c.key]) for c in experiment.columns),
            f"{row['seconds_per_epoch']:.2f}",
            seeds_cell(row["seeds"], row["diverged_seeds"], row.get("collapsed_seeds", 0)),
            "-" if paper == "" else f"{paper:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {row['method']}: {row['note']}" for row in rows if row["note"]]
    if experiment.paper_metric == "test accuracy %":
        notes.insert(0, "- the paper reports test accuracy; its column here is 100 − accuracy")
    if probed:
        notes.insert(
            0,
            f"- {PROBE_COLUMN}: a softmax regression on each seed's frozen code h = f(x) after the last epoch, at its "
            "best validation epoch (targetprop/probe.py); the paper's figure is set against it; the reconstruction "
            "error is the mean squared error per image, ||s(a) − x||²",
        )
    if experiment.notes is not None:
        notes += [f"- {line}" for line in experiment.notes()]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# Figure


def curves(run_dir: Path, key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs and, per epoch, the mean, min and max of ``key`` over the replicas that stayed finite."""
    by_epoch: dict[int, list[float]] = {}
    for row in RunDir(run_dir).read_metrics().rows:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            by_epoch.setdefault(row["epoch"], []).append(float(value))
    epochs = sorted(by_epoch)
    return (
        epochs,
        [statistics.fmean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def plot_errors(experiment: Experiment, results: list[MethodResult], path: Path) -> None:
    """Train and test error against epochs for every method: mean over seeds, band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    for ax, (key, title) in zip(axes, (("train_error", "train error"), ("test_error", "test error")), strict=True):
        for k, r in enumerate(results):
            epochs, mean, low, high = curves(r.run_dir, key)
            if not epochs:
                continue
            color = f"C{k}"
            ax.plot(epochs, mean, color=color, label=r.method.name, marker="o" if len(epochs) < 10 else None)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
            paper = experiment.paper_error(r.method)
            if key == "test_error" and paper is not None and experiment.probe is None:
                ax.axhline(paper, color=color, linestyle=":", linewidth=1, label=f"{r.method.name} (paper)")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("symlog", linthresh=1.0)  # linear below 1 %: a train error of 0 stays on the plot
        ax.grid(True, which="both", alpha=0.3)
    error = results[0].summary.get("error", "error %") if results else "error %"
    axes[0].set_ylabel(f"{error} (mean over seeds, band: min-max)")
    axes[1].legend(fontsize="small")
    seeds = {p["seed"] for r in results for p in r.summary.get("per_replica", [])}
    trained = max((int(r.summary.get("epochs", 0)) for r in results), default=0)
    ran = f" (ran: {len(seeds)} seed(s), {trained} epochs)" if seeds else ""
    title = textwrap.fill(f"{experiment.name}: {experiment.description}{ran}", 130)  # long ones on two lines
    fig.suptitle(title, fontsize="medium")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_filters(experiment: Experiment, results: list[MethodResult], dataset: Dataset, path: Path) -> None:
    """The input weights of the first 100 hidden units of each method's first replica, as images (each scaled
    to its own range): the paper's figure of the auto-encoder's filters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = dataset.input_shape[-2:] if len(dataset.input_shape) >= 2 else (1, dataset.n_inputs)
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5.3), layout="constrained", squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        weight = _trained_network(r.run_dir, dataset).layers[0].weight[0].detach().float().cpu()
        units = weight[:100]
        low = units.amin(1, keepdim=True)
        span = (units.amax(1, keepdim=True) - low).clamp_min(1e-12)
        images = ((units - low) / span).view(-1, *shape)
        side = math.ceil(math.sqrt(len(images)))
        grid = torch.ones(side * (shape[0] + 1), side * (shape[1] + 1))
        for k, image in enumerate(images):
            row, col = divmod(k, side)
            grid[
                row * (shape[0] + 1) : row * (shape[0] + 1) + shape[0],
                col * (shape[1] + 1) : col * (shape[1] + 1) + shape[1],
            ] = image
        ax.imshow(grid.numpy(), cmap="gray", interpolation="nearest")
        seed = r.summary["per_replica"][0]["seed"]
        ax.set_title(f"{r.method.name} ({r.method.rule}), seed {seed}, {r.summary.get('epochs')} epochs")
        ax.axis("off")
    fig.suptitle(f"{experiment.name}: input weights of the first {len(images)} hidden units", fontsize="medium")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(
    experiment: Experiment, folder: Path, results: list[MethodResult], scale: str, config: RunConfig
) -> list[dict[str, Any]]:
    """Write table.md, table.csv and errors.png into ``folder``; ``config`` is one method's (for the settings line)."""
    rows = table_rows(experiment, results)
    markdown = markdown_table(experiment, rows, folder, scale, config)
    atomic_write(folder / "table.md", lambda f: f.write(markdown.encode()))
    text = csv_table(rows)
    atomic_write(folder / "table.csv", lambda f: f.write(text.encode()))
    plot_errors(experiment, results, folder / "errors.png")
    return rows


# ------------------------------------------------------------------------------------------------------------
# Experiments that run themselves


def reproduce_self_running(
    experiment: SelfRunning,
    name: str | None,
    *,
    seeds: str | list[int] | None,
    epochs: int | None,
    scale: str | None,
    device: str | None,
    data_dir: str | None,
    threads: int | str | None,
    out: str | Path,
    run_name: str | None,
    resume: str | Path | None,
    tensorboard: bool | None,
    note: Callable[[str], None],
) -> tuple[SelfRunning, Path, list[MethodResult]]:
    """Run ``experiment`` in a new folder under ``out`` (or again in ``resume``, with its recorded scale and seeds)."""
    if device not in (None, "cpu"):
        raise ConfigError(f"{experiment.name} runs on the CPU; drop --device {device}")
    if tensorboard:
        raise ConfigError(f"{experiment.name} trains no methods: --tensorboard does not apply")
    if resume is not None:
        folder: Path | None = Path(resume)
        asked = _read_request(folder)
        if name is not None and find_self_running(name) is not experiment:
            raise ConfigError(f"{folder} holds experiment {asked['experiment']!r}, not {name!r}")
        for key, value in (("scale", scale), ("seeds", seeds)):
            if value is not None and (parse_seeds(value) if key == "seeds" else value) != asked[key]:
                raise ConfigError(f"{folder} was run with {key} {asked[key]!r}; a resumed run keeps its {key}")
        scale, seed_list = asked["scale"], list(asked["seeds"])
        epochs = epochs if epochs is not None else asked.get("epochs")
    else:
        folder = None
        scale = scale or "full"
        defaults = dict(experiment.default_seeds)
        if scale not in defaults:
            raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(defaults)}")
        seed_list = parse_seeds(seeds if seeds is not None else defaults[scale])
    if folder is None:
        folder = RunDir.create(out, run_name or RunDir.default_name(f"reproduce-{experiment.name}", scale)).path
    request: dict[str, Any] = {"experiment": experiment.name, "scale": scale, "seeds": seed_list}
    if epochs is not None:
        request["epochs"] = epochs
    atomic_write(folder / EXPERIMENT_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))
    previous = torch.get_num_threads()
    try:
        if isinstance(threads, int):
            torch.set_num_threads(threads)
        with RunDir(folder).lock():
            experiment.run(folder, scale=scale, seeds=seed_list, data_dir=data_dir, epochs=epochs, note=note)
    finally:
        torch.set_num_threads(previous)
    return experiment, folder, []
