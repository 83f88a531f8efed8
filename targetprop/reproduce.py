"""``targetprop reproduce NAME``: run one experiment (the DTP paper's, or Deep Learning ch. 6's xor) with all its
methods, then write the paper-style table and figure.

<out>/reproduce-<name>-<scale>-<time>/
  experiment.toml     what was asked: experiment, scale, seeds, epochs, methods, --set changes (``--resume DIR``
                      and ``--report DIR`` read it)
  <method>/           one run directory per method (all seeds as replicas), see :mod:`targetprop.runs`
  table.md, table.csv per method: final test error, test error at the best-validation epoch, final train error
                      (mean ± std over seeds), seconds per epoch, and the paper's figure; an experiment may add
                      columns and notes of its own (xor: the seeds that solved it, the book's weights checked)
  seeds.csv           per method and seed: final test, validation and train error, the best-validation epoch
  errors.png          train and test error against epochs, mean over seeds with a min-max band
  filters.png         auto-encoders: the first 100 hidden units' input weights of each method (seed of replica 0)
  <method>/probe.json auto-encoders: the linear classifier on the learned code (:mod:`targetprop.probe`), whose
                      test error is the table's "classifier test error %"; ``probe-finetune.json`` the encoder
                      fine-tuned with a softmax layer on top, and the same net trained from random weights (the
                      "fine-tuned test error %" and the notes); the paper's figure is set against both

Running again with ``--resume DIR`` continues each method from its checkpoint; finished methods are not retrained.
The table and figure are built by :mod:`targetprop.report`, which also builds them from what directories hold at
any time (``--report DIR``: a run still going, or seeds split over several runs).

An experiment that trains no methods (a measurement, such as ``early-inference``) runs itself: it is registered in
``targetprop.experiments.SELF_RUNNING`` and writes its own table and figures into the folder (see
:class:`~targetprop.experiments.paper.SelfRunning`).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NotRequired

import tomli_w
import torch
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here before Python 3.12

from targetprop.config import RunConfig, apply_assignments, make_config, parse_assignment
from targetprop.data import Dataset, load_dataset
from targetprop.errors import ConfigError, Interrupted
from targetprop.experiments import find_self_running, get_experiment
from targetprop.experiments.paper import Experiment, Method, SelfRunning
from targetprop.nets import Network
from targetprop.probe import ProbeSettings, run_probe
from targetprop.replicas import parse_seeds, refuse_repeated_seeds
from targetprop.report import MethodResult, read_probe, set_note, with_seed_stats, write_report
from targetprop.resume import ResumePlan, check_resumable, plan_resume
from targetprop.rules import get_rule
from targetprop.runs import RunDir, atomic_write

EXPERIMENT_FILE = "experiment.toml"
SCALES = ("full", "smoke")
DEFAULT_SEEDS = {"full": "0-9", "smoke": "0-1"}
RESUME = "targetprop reproduce --resume"
"""The command that continues a reproduce directory (named when a new run finds its name taken, and by inspect)."""


def method_config(
    experiment: Experiment, method: Method, *, scale: str = "full", assignments: Sequence[str] = (), **overrides: Any
) -> RunConfig:
    """The run configuration of one method: the experiment's base, its smoke keys at ``scale="smoke"``, the
    method's own run keys, its rule and hyper-parameters, the ``--set`` ``assignments`` that concern it (see
    :func:`method_assignments`), then ``overrides`` (seeds, epochs, device, ...)."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    data = {**experiment.base, **(experiment.smoke if scale == "smoke" else {}), **method.run}
    data["rule"] = method.rule
    data[method.rule] = dict(method.params)
    data = apply_assignments(data, method_assignments(experiment, method, assignments), [method.rule])
    return make_config(data, **overrides)


def method_assignments(experiment: Experiment, method: Method, assignments: Sequence[str]) -> list[str]:
    """The ``--set`` assignments of a reproduce command that concern ``method``, written as ``train --set`` takes
    them: ``KEY=VALUE`` of the run goes to every method, ``METHOD.KEY=VALUE`` (a method's name, see ``--list``) to
    that method's rule, and a bare rule key to every method whose rule has it."""
    names = [m.name for m in experiment.methods]
    mine = []
    for text in assignments:
        path, _ = parse_assignment(text)
        raw = text.split("=", 1)[1]
        if len(path) == 2:
            if path[0] not in names:
                raise ConfigError(
                    f"--set {text}: {experiment.name} has no method {path[0]!r}; write METHOD.KEY=VALUE with one of: "
                    f"{', '.join(names)}"
                )
            if path[0] == method.name:
                mine.append(f"{method.rule}.{path[1]}={raw}")
        elif len(path) == 1 and (
            path[0] in RunConfig.model_fields or path[0] in get_rule(method.rule).Config.model_fields
        ):
            mine.append(text)
        elif len(path) != 1:
            raise ConfigError(f"--set {text!r}: write KEY=VALUE or METHOD.KEY=VALUE")
    return mine


def check_assignments(experiment: Experiment, methods: Sequence[Method], assignments: Sequence[str]) -> None:
    """Refuse an assignment that no method being run takes (a method left out by ``--methods``, a key no rule
    has), rather than run without it."""
    for text in assignments:
        if not any(method_assignments(experiment, m, [text]) for m in methods):
            path, _ = parse_assignment(text)
            what = f"method {path[0]!r} is not run" if len(path) == 2 else f"no key {path[0]!r} in the run or its rules"
            raise ConfigError(
                f"--set {text}: {what} (methods run: {', '.join(m.name for m in methods)}); see `targetprop rules` "
                "for each rule's keys"
            )


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


def read_request(folder: Path) -> dict[str, Any]:
    """What a reproduce directory was asked to run (its ``experiment.toml``)."""
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{str(folder)!r} is not a reproduce directory (no {EXPERIMENT_FILE})")
    try:
        request = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    try:
        return dict(_REQUEST.validate_python(request))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path} is not a reproduce request ({problems})") from None


class _Request(TypedDict):
    """``experiment.toml``: what ``targetprop reproduce`` was asked to run in a folder."""

    experiment: str
    scale: str
    seeds: list[int]
    epochs: NotRequired[int]
    methods: NotRequired[list[str]]
    set: NotRequired[list[str]]


_REQUEST = TypeAdapter(_Request)


def reproduce(
    name: str | None,
    *,
    seeds: str | list[int] | None = None,
    epochs: int | None = None,
    scale: str | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool | None = None,
    threads: int | str | None = None,
    out: str | Path = "runs",
    run_name: str | None = None,
    resume: str | Path | None = None,
    tensorboard: bool | None = None,
    methods: str | list[str] | None = None,
    assignments: Sequence[str] = (),
    dataset: Dataset | None = None,
    progress: bool = True,
    note: Callable[[str], None] = lambda line: None,
) -> tuple[Experiment | SelfRunning, Path, list[MethodResult]]:
    """Run every method of experiment ``name`` (or continue the directory ``resume``); write the table and
    figure into the parent directory.

    ``methods`` (names, or one comma-separated string) runs only those, in the experiment's order; on a resumed
    directory it replaces the list it was run with, so methods can be added to it later (a finished one is read,
    not retrained). ``assignments`` are ``--set`` changes to the experiment's settings (see
    :func:`method_assignments`), recorded in ``experiment.toml`` and the table's notes; on a resumed directory, only
    the changes a resumed run allows (learning rates, η̂, noise). ``tensorboard`` (the run key) also writes each
    method's metrics as TensorBoard scalars; None keeps what a resumed method was run with. ``dataset`` replaces
    loading the data (tests). An experiment that runs itself (``SELF_RUNNING``) is handed to
    :func:`reproduce_self_running`."""

    asked_for = read_request(Path(resume))["experiment"] if resume is not None else name
    if asked_for is not None and (itself := find_self_running(asked_for)) is not None:
        for option, value in (("--methods", methods), ("--set", assignments or None)):
            if value is not None:
                raise ConfigError(f"{itself.name} trains no methods: {option} does not apply")
        return reproduce_self_running(
            itself,
            name,
            seeds=seeds,
            epochs=epochs,
            scale=scale,
            device=device,
            data_dir=data_dir,
            download=bool(download),
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
        asked = read_request(folder)
        if name is not None and (
            find_self_running(name) is not None or get_experiment(name).name != asked["experiment"]
        ):
            raise ConfigError(f"{folder} holds experiment {asked['experiment']!r}, not {name!r}")
        for key, value in (("scale", scale), ("seeds", seeds)):
            if value is not None and (parse_seeds(value) if key == "seeds" else value) != asked[key]:
                raise ConfigError(f"{folder} was run with {key} {asked[key]!r}; a resumed run keeps its {key}")
        experiment = get_experiment(asked["experiment"])
        scale, seed_list = asked["scale"], list(asked["seeds"])
        epochs = epochs if epochs is not None else asked.get("epochs")
        methods = methods if methods is not None else asked.get("methods")
        data_dir = data_dir if data_dir is not None else recorded_data_dir(folder, experiment)
        given = [*asked.get("set", []), *assignments]  # a method added to the directory gets the earlier ones too
    else:
        if name is None:
            raise ConfigError("give an experiment name (see `targetprop reproduce --list`) or --resume DIR")
        experiment = get_experiment(name)
        scale = scale or "full"
        seed_list = parse_seeds(seeds if seeds is not None else DEFAULT_SEEDS.get(scale, "0-9"))
        refuse_repeated_seeds(seed_list, "a reproduce table")
        folder = None
        given = list(assignments)
    overrides = {
        "seeds": seed_list,
        "epochs": epochs,
        "device": device,
        "data_dir": data_dir,
        "download": download,
        "threads": threads,
        "tensorboard": tensorboard,
    }
    selected = [m for m in experiment.methods if methods is None or m.name in methods]
    check_assignments(experiment, selected, assignments)
    if folder is not None:  # what a started method may not take is refused before its value is checked
        for method in selected:
            if (folder / method.name / "config.toml").is_file():
                check_resumable(method_assignments(experiment, method, assignments), method.rule)
    configs = [(m, method_config(experiment, m, scale=scale, assignments=given, **overrides)) for m in selected]
    changes = {m.name: method_assignments(experiment, m, assignments) for m in selected}
    if folder is not None:  # what the files alone refuse (a method kept without its checkpoint asked for more
        _plan_resumes(folder, selected, changes, overrides)  # epochs, ...) before the data loads and networks build
    first = configs[0][1]
    if dataset is None:
        dataset = load_dataset(
            first.data, first.data_dir, device=first.device, download=first.download, n_valid=first.n_valid
        )
    from targetprop.trainer import check_builds

    check_builds((cfg for _, cfg in configs), dataset)  # a rule that refuses the run stops it before any trains
    if folder is None:
        folder = RunDir.create(out, run_name or RunDir.default_name(f"reproduce-{experiment.name}", scale)).path
        request: dict[str, Any] = {"experiment": experiment.name, "scale": scale, "seeds": seed_list}
    else:
        request = dict(asked)
    if epochs is not None:
        request["epochs"] = epochs
    if methods is not None:
        request["methods"] = list(methods)
    if given:
        request["set"] = given
    with RunDir(folder).lock():  # recorded only once nothing will refuse it: the lock is ours, every resume checks
        plans = _plan_resumes(folder, selected, changes, overrides)
        atomic_write(folder / EXPERIMENT_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))
        results = _run_methods(experiment, folder, configs, overrides, plans, dataset, progress, note)
        probes = experiment.probes_smoke if scale == "smoke" else experiment.probes
        if probes:
            controls = _kept_controls(results, probes)
            try:
                for result in results:
                    result.probes = [
                        _probe(experiment, result, dataset, settings, note, progress, first.threads, controls)
                        for settings in probes
                    ]
            except KeyboardInterrupt as stop:  # training says how to continue by itself; the classifiers say it here
                raise Interrupted.by(
                    stop,
                    " while fitting a classifier on the learned code; the trained methods and the finished classifiers "
                    f"are kept: continue with `targetprop reproduce --resume {folder}`",
                ) from None
            plot_filters(experiment, results, dataset, folder / "filters.png")
        settings = RunDir(folder / selected[0].name).read_config()
        notes = [set_note(given)] if given else None
        write_report(experiment, folder, results, scale, make_config(settings), notes, given or ())
    return experiment, folder, results


def recorded_data_dir(folder: Path, experiment: Experiment) -> str | None:
    """The data folder the methods of a reproduce directory were run with (what ``--resume`` uses unless given
    another), or None where none is recorded."""
    for method in experiment.methods:
        path = folder / method.name / "config.toml"
        if path.is_file():
            recorded = RunDir(path.parent).read_config().get("data_dir")
            if recorded is not None:
                return str(recorded)
    return None


def _plan_resumes(
    folder: Path, selected: Sequence[Method], changes: dict[str, list[str]], overrides: dict[str, Any]
) -> dict[str, ResumePlan]:
    """How each method already started in ``folder`` continues, with its ``--set`` ``changes`` (in ``train --set``
    form) and the command line's ``overrides``; by method name. Made before ``experiment.toml`` records the
    request, so that a change a started method cannot take (what :func:`targetprop.resume.plan_resume` refuses: a
    batch size, an architecture, ...) stops the command with nothing written."""
    return {
        method.name: plan_resume(RunDir(folder / method.name), changes[method.name], **_resume_overrides(overrides))
        for method in selected
        if (folder / method.name / "config.toml").is_file()
    }


def _resume_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """What a resumed method takes of the command line's overrides: all that were given but its seeds."""
    return {k: v for k, v in overrides.items() if k != "seeds" and v is not None}


def _run_methods(
    experiment: Experiment,
    folder: Path,
    configs: list[tuple[Method, RunConfig]],
    overrides: dict[str, Any],
    plans: dict[str, ResumePlan],
    dataset: Dataset,
    progress: bool,
    note: Callable[[str], None],
) -> list[MethodResult]:
    """Train (or continue) each method in ``folder/<method>``; a finished method is read, not retrained. A method
    started before continues as its plan in ``plans`` says (from :func:`_plan_resumes`: its ``--set`` changes
    taken as a resumed run takes them); a new one is configured by ``configs``, its changes in it already."""
    from targetprop.trainer import continue_run

    results = []
    for method, cfg in configs:
        run_dir = RunDir(folder / method.name)
        plan = plans.get(method.name)
        if plan is None:  # not started: its configuration holds the --set changes already
            run_dir.path.mkdir(parents=True, exist_ok=True)
            run_dir.write_config(cfg.model_copy(update={"out": str(folder), "name": method.name}).to_dict())
            plan = plan_resume(run_dir, [], **_resume_overrides(overrides))
        summary = continue_run(
            run_dir,
            plan,
            dataset=dataset,
            progress=progress,
            continue_with=f"targetprop reproduce --resume {folder}",
            label=method.name,
            said_as=f"{experiment.name} {method.name}",
            note=note,
        )
        results.append(MethodResult(method, summary, (run_dir.path,)))
    return results


def trained_network(run_dir: Path, dataset: Dataset) -> Network:
    """The network of a finished run, as its last checkpoint holds it."""
    from targetprop.trainer import build

    folder = RunDir(run_dir)
    config = make_config(folder.read_config()).model_copy(update={"compile": "off"})
    state = folder.load_checkpoint(config.device)
    if state is None:
        raise ConfigError(f"{run_dir} has no checkpoint to read the trained network from")
    net, _ = build(config, dataset)
    net.load_state_dict(state["net"])
    return net


def _probe(
    experiment: Experiment,
    result: MethodResult,
    dataset: Dataset,
    settings: ProbeSettings,
    note: Callable[[str], None],
    progress: bool = True,
    threads: int | str = "auto",
    controls: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A classifier on one method's learned code: read from its file (``probe.json``, ``probe-finetune.json``) when
    it was trained on the same epochs with the same settings, else trained now and written there. ``controls`` (by
    probe file) holds the control part (the SVM on the raw pixels, the net from random weights) once a method has
    trained it; the next method takes it over (:func:`~targetprop.probe.run_probe`)."""
    path = result.run_dir / settings.file
    epochs = int(result.summary.get("epochs", 0))
    kept = read_probe(path, lambda problem: note(f"warning: {problem}; the classifier is trained again"))
    if kept and kept.get("autoencoder_epochs") == epochs and kept.get("settings") == settings.to_dict():
        return kept
    note(f"{experiment.name} {result.method.name}: {settings.short}")
    net = trained_network(result.run_dir, dataset)
    seeds = [p["seed"] for p in result.summary["per_replica"]]
    control = None if controls is None else controls.get(settings.file)
    probe = {"autoencoder_epochs": epochs, **run_probe(net, dataset, seeds, settings, progress, threads, control)}
    if "control" in probe and controls is not None:
        controls[settings.file] = probe["control"]
    text = json.dumps(with_seed_stats(probe), indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))
    return probe


def _kept_controls(results: list[MethodResult], probes: Sequence[ProbeSettings]) -> dict[str, dict[str, Any]]:
    """The controls (classifiers without the auto-encoder) that a method of this run directory already trained, by
    probe file: they depend on the data, the settings and the seeds, not on the method, so a method fit later (or
    again) takes them over."""
    kept: dict[str, dict[str, Any]] = {}
    for settings in probes:
        for result in results:
            probe = read_probe(result.run_dir / settings.file)
            if probe and probe.get("settings") == settings.to_dict() and "control" in probe:
                kept[settings.file] = probe["control"]
                break
    return kept


# ------------------------------------------------------------------------------------------------------------
# The auto-encoder's filters


def plot_filters(experiment: Experiment, results: list[MethodResult], dataset: Dataset, path: Path) -> None:
    """The input weights of the first 100 hidden units of each method's first replica, as images (each scaled
    to its own range): the paper's figure of the auto-encoder's filters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = dataset.input_shape[-2:] if len(dataset.input_shape) >= 2 else (1, dataset.n_inputs)
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5.3), layout="constrained", squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        weight = trained_network(r.run_dir, dataset).layers[0].weight[0].detach().float().cpu()
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
    download: bool,
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
        asked = read_request(folder)
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
    previous = torch.get_num_threads()
    try:
        if isinstance(threads, int):
            torch.set_num_threads(threads)
        with RunDir(folder).lock():  # recorded once the folder is ours (not over another process's run)
            atomic_write(folder / EXPERIMENT_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))
            experiment.run(
                folder, scale=scale, seeds=seed_list, data_dir=data_dir, download=download, epochs=epochs, note=note
            )
    finally:
        torch.set_num_threads(previous)
    return experiment, folder, []
