"""The ``targetprop`` command line: ``train``, ``compare``, ``reproduce``, ``sweep``, ``inspect``, ``plot``, ``rules``,
``presets``.

Bad input is reported as one line (``error: ...``) with exit status 2, never a traceback, and before anything is
written.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from targetprop.console import print_line, print_table
from targetprop.errors import ConfigError, TargetpropError, Terminated, warn
from targetprop.health import seeds_cell
from targetprop.rules import RULES, get_rule, rule_name

if TYPE_CHECKING:
    from targetprop.config import RunConfig

# PyTorch loads inside the commands that need it (the imports in their bodies), not with this module: `--help`,
# `--version` and a mistyped option answer in half a second.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train networks with difference target propagation and other credit-assignment rules; "
    "compare them with back-propagation.",
)
out = Console()


def _version(value: bool) -> None:
    if value:
        from targetprop import __version__

        out.print(f"targetprop {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options_of_all(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """The options before the command (the command line's help is the app's, above)."""


ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="TOML config file, or a preset name (see `targetprop presets`)."),
]
DataOpt = Annotated[str | None, typer.Option(help="digits, mnist, fashion-mnist, cifar10 or xor.")]
DataDirOpt = Annotated[
    str | None,
    typer.Option(help="Folder holding the datasets (default: $TARGETPROP_DATA or ~/.cache/targetprop/data)."),
]
DownloadOpt = Annotated[bool | None, typer.Option("--download", help="Download missing dataset files.")]
ArchOpt = Annotated[str | None, typer.Option(help="Layer sizes, e.g. 784-240x7-10.")]
ActOpt = Annotated[str | None, typer.Option(help="Hidden unit: tanh, relu, sigmoid, sign, bernoulli, ...")]
OutputOpt = Annotated[str | None, typer.Option(help="Output unit: softmax, sigmoid or linear.")]
InitOpt = Annotated[str | None, typer.Option(help="orthogonal, glorot or default.")]
EpochsOpt = Annotated[int | None, typer.Option(help="Number of epochs.")]
BatchOpt = Annotated[int | None, typer.Option(help="Mini-batch size.")]
SeedsOpt = Annotated[str | None, typer.Option(help="Seeds, one replica each, trained in one process: 0-9 or 1,3,5.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N.")]
ThreadsOpt = Annotated[
    str | None,
    typer.Option(help="CPU threads: auto (the cores other processes leave free, checked every second) or a number."),
]
OutOpt = Annotated[str | None, typer.Option("--out", help="Parent folder of run directories (default: runs).")]
NameOpt = Annotated[str | None, typer.Option(help="Run directory name.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a key: KEY=VALUE (run) or RULE.KEY=VALUE, e.g. dtp.eta_hat=0.5."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
AtEpochOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--at-epoch",
        min=1,
        help="Of a sweep: add a column of each trial's validation / test error at this epoch (repeat it: "
        "--at-epoch 10 --at-epoch 50).",
    ),
]
TensorBoardOpt = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        help="Also write every metric of every epoch as TensorBoard scalars under RUN/tensorboard/ "
        "(pip install 'targetprop[tensorboard]').",
    ),
]
DiagnosticsOpt = Annotated[
    bool,
    typer.Option(
        "--diagnostics",
        help="Log each epoch, per layer, the angle between the rule's update (and its learning signal) and BP's "
        "gradient, and what the rule reports itself (inverse errors, feedback alignment, ...): the run key "
        "diagnostics = true; `targetprop plot RUN` draws them.",
    ),
]


def _options(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@app.command()
def train(
    rule: Annotated[str | None, typer.Option(help=f"Rule: {', '.join(RULES)}.")] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = None,
    arch: ArchOpt = None,
    activation: ActOpt = None,
    output: OutputOpt = None,
    init: InitOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    out_dir: OutOpt = None,
    name: NameOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue the run in this directory from its last checkpoint.")
    ] = None,
    tensorboard: TensorBoardOpt = False,
    diagnostics: DiagnosticsOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train one rule on one dataset; all seeds run as replicas in one process."""
    if rule is not None and resume is None:
        rule = rule_name(rule)  # a misspelt rule is answered before PyTorch loads
    from targetprop.resume import plan_resume
    from targetprop.runs import RunDir
    from targetprop.trainer import continue_run
    from targetprop.trainer import train as run_training

    if resume is not None:
        run_dir = RunDir.open(resume)
        _refuse_new_settings(
            ("rule", rule), config, data, arch, activation, output, init, batch_size, seeds, out_dir, name, diagnostics
        )
        with run_dir.lock():
            overrides = _resume_overrides(epochs, device, data_dir, download, threads, tensorboard)
            plan = plan_resume(run_dir, set_ or [], **overrides)
            for line in plan.notes:
                _note(line)
            cfg = plan.config
            summary = continue_run(run_dir, plan, progress=not quiet, note=_note)
    else:
        common = _common(
            data, data_dir, download, arch, activation, output, init, epochs, batch_size, seeds, device, threads
        )
        [cfg] = new_run_configs(
            [rule] if rule else None,
            config,
            set_,
            common,
            out=out_dir,
            name=name,
            tensorboard=tensorboard or None,
            diagnostics=diagnostics or None,
        )
        result = run_training(cfg, progress=not quiet)
        run_dir, summary = result.run_dir, result.summary
    _print_table([(cfg.rule, summary, str(run_dir.path))])
    _note(f"run directory: {run_dir.path}")


def _resume_overrides(
    epochs: int | None,
    device: str | None,
    data_dir: str | None,
    download: bool | None,
    threads: str | None,
    tensorboard: bool,
) -> dict[str, Any]:
    """What a resumed run takes from the command line (:func:`targetprop.resume.plan_resume`'s overrides)."""
    return _options(
        epochs=epochs,
        device=device,
        data_dir=data_dir,
        download=download,
        threads=_threads(threads),
        tensorboard=tensorboard or None,
    )


def _refuse_new_settings(
    rule: tuple[str, str | None],
    config: str | None,
    data: str | None,
    arch: str | None,
    activation: str | None,
    output: str | None,
    init: str | None,
    batch_size: int | None,
    seeds: str | None,
    out: str | None,
    name: str | None,
    diagnostics: bool,
) -> None:
    """``--resume`` continues a run (or a comparison) as it was configured: refuse the first given option that would
    configure it anew. ``rule`` is the command's rule option, ``("rule", "dtp")`` or ``("rules", "dtp,bp")``."""
    from targetprop.resume import resumable_summary

    what = "a comparison" if rule[0] == "rules" else "a run"
    given = dict(
        [rule],
        config=config,
        data=data,
        arch=arch,
        activation=activation,
        output=output,
        init=init,
        batch_size=batch_size,
        seeds=seeds,
        out=out,
        name=name,
        diagnostics=diagnostics or None,
    )
    ignored = _options(**given)
    if ignored:
        raise ConfigError(
            f"--resume continues {what} as it was configured; drop --{next(iter(ignored)).replace('_', '-')} "
            f"(only {resumable_summary()} may change)"
        )


def new_run_configs(
    rules: list[str] | None,
    config: str | None,
    assignments: list[str] | None,
    common: dict[str, Any],
    **flags: Any,
) -> list[RunConfig]:
    """The checked configurations of new runs of ``rules`` (None: the rule of the ``config`` preset or file, else
    the default), as ``train`` and ``compare`` build them: the config source, the ``--set`` ``assignments``, the
    run keys the rules need, then the ``common`` flags and ``flags``. Nothing is loaded or trained."""
    from targetprop.config import RunConfig, apply_assignments, make_config
    from targetprop.experiments import load_config_source

    base = load_config_source(config)
    names = [get_rule(r).name for r in (rules or [base.get("rule") or RunConfig.model_fields["rule"].default])]
    base = apply_assignments(base, assignments or [], names)
    base = _rule_defaults(base, common, names)
    return [make_config(base, rule=r, **flags, **common) for r in names]


def _common(data, data_dir, download, arch, activation, output, init, epochs, batch_size, seeds, device, threads):
    """The run options ``train`` and ``compare`` share, as ``make_config`` overrides."""
    return dict(
        data=data,
        data_dir=data_dir,
        download=download,
        arch=arch,
        activation=activation,
        output=output,
        init=init,
        epochs=epochs,
        batch_size=batch_size,
        seeds=seeds,
        device=device,
        threads=_threads(threads),
    )


def _rule_defaults(base: dict[str, Any], common: dict[str, Any], rules: list[str]) -> dict[str, Any]:
    """``base`` with the run keys the rules need that the user left unset (e.g. EP's units), said on stderr."""
    from targetprop.config import with_rule_defaults

    base, added = with_rule_defaults(base, common, rules)
    if added:
        needs = ", ".join(r for r in rules if get_rule(r).run_defaults)
        flags = " ".join(
            f"--{key} {value}" if key in common else f"--set {key}={str(value).lower()}" for key, value in added.items()
        )
        _note(f"{needs}: running with {flags}, which {needs} needs (give the flags to choose otherwise)")
    return base


def _threads(text: str | None) -> int | str | None:
    """``--threads``: auto, or a whole number (0 is left for the config to refuse, with its reason)."""
    if text is None:
        return None
    if text.strip() == "auto":
        return "auto"
    if not text.strip().isdigit():
        raise ConfigError(f"--threads {text}: give auto or a whole number of threads")
    return int(text)


_note = warn  # a plain line on stderr (no markup, no wrapping: paths stay whole)


COMPARED_RULES = "dtp,bp"
"""What ``compare`` trains without ``--rules``."""


@app.command()
def compare(
    rules: Annotated[
        str | None, typer.Option(help=f"Comma-separated rules to compare (default: {COMPARED_RULES}).")
    ] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = None,
    arch: ArchOpt = None,
    activation: ActOpt = None,
    output: OutputOpt = None,
    init: InitOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    out_dir: OutOpt = None,
    name: NameOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue the comparison in this directory: each rule from its checkpoint (a rule not started from "
            "its first epoch), then print the table."
        ),
    ] = None,
    tensorboard: TensorBoardOpt = False,
    diagnostics: DiagnosticsOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train several rules on the same data, architecture and seeds; print one table."""
    if resume is not None:
        _refuse_new_settings(
            ("rules", rules),
            config,
            data,
            arch,
            activation,
            output,
            init,
            batch_size,
            seeds,
            out_dir,
            name,
            diagnostics,
        )
        overrides = _resume_overrides(epochs, device, data_dir, download, threads, tensorboard)
        _continue_comparison(resume, overrides, set_, quiet)
        return
    names = [rule_name(r.strip()) for r in (rules or COMPARED_RULES).split(",") if r.strip()]  # before PyTorch loads
    if not names:
        raise ConfigError("--rules is empty; give e.g. --rules dtp,bp")
    twice = sorted({r for r in names if names.count(r) > 1})
    if twice:
        raise ConfigError(f"--rules names {', '.join(twice)} more than once; list each rule once")
    from targetprop.comparison import train_rules, write_request
    from targetprop.data import load_dataset
    from targetprop.replicas import refuse_repeated_seeds
    from targetprop.runs import RunDir
    from targetprop.trainer import check_builds

    common = _common(
        data, data_dir, download, arch, activation, output, init, epochs, batch_size, seeds, device, threads
    )
    flags = dict(tensorboard=tensorboard or None, diagnostics=diagnostics or None)
    configs = new_run_configs(names, config, set_, common, **flags)  # all checked first
    _one_network(configs, common)
    if seeds is not None:  # a config file may repeat a seed on purpose (replicas with settings of their own)
        refuse_repeated_seeds(configs[0].seeds, "the comparison")
    first = configs[0]
    dataset = load_dataset(
        first.data, first.data_dir, device=first.device, download=first.download, n_valid=first.n_valid
    )
    check_builds(configs, dataset)
    parent = RunDir.create(out_dir or first.out, name or RunDir.default_name("compare", first.data))
    try:
        with parent.lock():
            write_request(parent.path, configs)
            rows = train_rules(parent.path, names, [], {}, dataset=dataset, progress=not quiet, note=_note)
    except BaseException:
        if not any(RunDir(parent.path / cfg.rule).has_checkpoint() for cfg in configs):
            parent.remove()  # nothing in it to resume (a rule that finished has its checkpoint)
        raise
    _compare_table(rows, configs[0])
    _note(f"run directories: {parent.path}")


def _continue_comparison(folder: str, overrides: dict[str, Any], assignments: list[str] | None, quiet: bool) -> None:
    """``compare --resume DIR``: every rule of the comparison continued (or started), then its table."""
    from targetprop.comparison import open_comparison, train_rules
    from targetprop.config import make_config
    from targetprop.runs import RunDir

    path, rules = open_comparison(folder)
    with RunDir(path).lock():
        rows = train_rules(path, rules, assignments or [], overrides, progress=not quiet, note=_note)
    _compare_table(rows, make_config(RunDir(path / rules[0]).read_config()))
    _note(f"run directories: {path}")


def _compare_table(rows: list[tuple[str, dict[str, Any], str]], cfg: RunConfig) -> None:
    title = f"{cfg.data} {cfg.architecture}, seeds {_seed_text(cfg.seeds)}, {cfg.epochs} epochs"
    _print_table(rows, title=title)


def _one_network(configs: list[RunConfig], common: dict[str, Any]) -> None:
    """Compared rules train one network: refuse where their run defaults (``Rule.run_defaults``) pulled it apart."""
    for key in sorted({key for cfg in configs for key in get_rule(cfg.rule).run_defaults}):
        values = [getattr(cfg, key) for cfg in configs]
        if any(value != values[0] for value in values):
            said = ", ".join(f"{cfg.rule} {value!r}" for cfg, value in zip(configs, values, strict=True))
            flag = f"--{key}" if key in common else f"--set {key}=..."
            raise ConfigError(f"the compared rules need different {key}s ({said}); they share one network: give {flag}")


def _seed_text(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 1:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _pm(stats: dict[str, float] | None) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def _print_table(rows: list[tuple[str, dict[str, Any], str]], title: str | None = None) -> None:
    table = Table(title=title)
    error = next((s["error"] for _, s, _ in rows if "error" in s), "error %")  # the task's: % for classification
    table.add_column("rule")
    table.add_column(f"test {error}", justify="right")
    table.add_column(f"train {error}", justify="right")
    table.add_column(f"valid {error}", justify="right")
    table.add_column("s / epoch", justify="right")
    table.add_column("seeds", justify="right")
    for rule, s, _ in rows:
        table.add_row(
            rule,
            _pm(s.get("test_error")),
            _pm(s.get("train_error")),
            _pm(s.get("valid_error")),
            f"{s['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in s else "-",
            seeds_cell(s.get("replicas", 0), len(s.get("diverged_seeds") or []), len(s.get("collapsed_seeds") or [])),
        )
    print_table(out, table)


@app.command()
def reproduce(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME", help="Experiment (see --list): the DTP paper's, e.g. mnist-tanh, xor, or early-inference."
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the experiments, their methods and the papers' figures.")
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option(help="Seeds, one replica each (default: 0-9, 0-1 at --scale smoke; early-inference: 0-2, 0-1)."),
    ] = None,
    epochs: EpochsOpt = None,
    scale: Annotated[
        str | None,
        typer.Option(help="full (the authors' settings) or smoke (small subset, net and epochs: about a minute)."),
    ] = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = None,
    threads: ThreadsOpt = None,
    out_dir: OutOpt = None,
    name_: Annotated[
        str | None, typer.Option("--name", help="Parent run directory name (default: reproduce-NAME-SCALE-<time>).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue the reproduce directory DIR (each method from its checkpoint).")
    ] = None,
    tensorboard: TensorBoardOpt = False,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Only these methods, e.g. dtp,bp (see --list); with --resume, the methods the directory holds "
            "from now on (add one to it later); with --report, the methods tabled."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Change a setting of the experiment: KEY=VALUE (a run key, or a rule key, for every method that "
            "has it) or METHOD.KEY=VALUE (one method, see --list), e.g. dtp.lr_decay=30. Recorded in the run and "
            "the table's notes; with --resume, only what a resumed run may change (learning rates, η̂, noise).",
        ),
    ] = None,
    report: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DIR",
            help="Train nothing: write the table and figure of what the reproduce directory DIR holds now (a run "
            "still going or stopped counts to its last finished epoch), into DIR itself unless --out or --name asks for "
            "a new folder. Repeat it to pool the seeds of several directories of one experiment into a new folder "
            "(--out, --name).",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run one experiment (the DTP paper's, or Deep Learning ch. 6's xor) with all its methods; write table.md,
    table.csv, seeds.csv and errors.png (and, for the auto-encoder, filters.png and the classifier on its features). A
    measurement that trains no methods (early-inference) writes its own table and figure."""
    from targetprop.experiments import EXPERIMENTS, SELF_RUNNING
    from targetprop.reproduce import reproduce as run_reproduce

    if list_:
        for e in EXPERIMENTS:
            aliases = f" (alias: {', '.join(e.aliases)})" if e.aliases else ""
            print_line(out, f"{e.name}{aliases}: {e.description}")
            for m in e.methods:
                paper = f"paper {e.paper_metric} {m.paper}" if m.paper is not None else "paper: no figure"
                params = ", ".join(f"{k}={v}" for k, v in m.params.items() if k not in ("optimizer", "schedule"))
                extra = f"; {m.note}" if m.note else ""
                print_line(out, f"    {m.name}: {m.rule} ({params}); {paper}{extra}")
            figures = "table.md, errors.png (train and test error against epochs, every method)"
            if e.probes:
                figures += ", filters.png (the learned filters), classifier test error on the learned code"
            print_line(out, f"    figures: {figures}")
        for other in SELF_RUNNING:
            print_line(out, f"{other.name}: {other.description}")
            print_line(out, f"    figures: {other.figures}")
        return
    if resume is not None and (out_dir is not None or name_ is not None):
        raise ConfigError("--resume names the reproduce directory; drop --out and --name")
    if report:
        from targetprop.report import report as write_report

        given = {
            "NAME": name,
            "--seeds": seeds,
            "--epochs": epochs,
            "--scale": scale,
            "--device": device,
            "--resume": resume,
            "--threads": threads,
            "--data-dir": data_dir,
            "--download": download,
            "--tensorboard": tensorboard or None,
            "--set": set_ or None,
        }
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ConfigError(f"--report trains nothing: drop {', '.join(extra)}")
        _, folder, _ = write_report(report, out=out_dir, run_name=name_, methods=methods, note=_note)
    else:
        _, folder, _ = run_reproduce(
            name,
            seeds=seeds,
            epochs=epochs,
            scale=scale,
            device=device,
            data_dir=data_dir,
            download=download,
            threads=_threads(threads),
            out=out_dir or "runs",
            run_name=name_,
            resume=resume,
            tensorboard=tensorboard or None,
            methods=methods,
            assignments=set_ or (),
            progress=not quiet,
            note=_note,
        )
    text = (folder / "table.md").read_text(encoding="utf-8")
    print_line(out, text)
    _note(f"table, figure and run directories: {folder}")


@app.command()
def sweep(
    space: Annotated[
        str | None,
        typer.Argument(
            metavar="SPACE",
            help="Space file (TOML): the base run, [sweep], [space]; or a bundled one, e.g. dtp-digits.",
        ),
    ] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the sweep in this directory.")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Total number of trials (default: [sweep] trials); raise it to extend.")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes, or groups in flight on Ray (default: [sweep] processes)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads per group (default: cores // processes).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Run the groups on the Ray cluster at HOST:PORT.")
    ] = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = None,
    device: DeviceOpt = None,
    out_dir: Annotated[
        str | None, typer.Option("--out", help="Parent folder of the sweep directory (default: runs/sweeps).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Sweep directory name (default: [sweep] name, else SPACE as given: a bundled name, or the file's name without .toml)."
        ),
    ] = None,
    at_epoch: AtEpochOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Search hyper-parameters with Optuna (random or TPE); trials share a process as replicas; one table. On a
    finished sweep, --resume DIR prints the table again without training (with --at-epoch, its columns too)."""
    from targetprop.sweep import Sweep, check_sweep_dir, load_space, read_sweep_dir, sweep_dir_for

    if space is None and resume is None:
        raise ConfigError("give a space file (e.g. `targetprop sweep dtp-digits`) or --resume DIR")
    if resume is not None:
        if out_dir is not None or name is not None:
            raise ConfigError("--resume names the sweep directory; drop --out and --name")
        folder = Path(resume)
        kept = read_sweep_dir(folder)
        spec = load_space(space) if space is not None else kept
    else:
        spec = load_space(space)
        folder = sweep_dir_for(spec, out_dir, name)
    check_sweep_dir(spec, folder)
    overrides = _options(data_dir=data_dir, download=download, device=device)
    if ray_address is None:
        spec.check_runs(**overrides)  # the data is here: every run can start
    runner = Sweep(
        spec,
        folder,
        trials=trials,
        processes=processes,
        threads=threads,
        ray_address=ray_address,
        overrides=overrides,
        note=(lambda line: None) if quiet else _note,
        progress=not quiet,
    )
    runner.open()
    try:
        runner.run()
        table = runner.table(at_epochs=at_epoch or ())
    finally:
        runner.close()
    print_table(out, table)
    _note(f"sweep directory: {runner.folder}")


@app.command()
def inspect(
    folder: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory, or a compare, reproduce, pooled-report or sweep directory."
        ),
    ],
    at_epoch: AtEpochOpt = None,
) -> None:
    """Show a run's configuration, progress and results, reading only TOML, JSON and a checkpoint's header:
    nothing in the folder is executed, and a run in progress is not disturbed."""
    from targetprop.inspection import inspect_folder

    inspect_folder(Path(folder), out, at_epochs=at_epoch or ())


@app.command()
def plot(
    folder: Annotated[
        str,
        typer.Argument(metavar="RUN", help="A run directory, or a folder of them (what compare or reproduce made)."),
    ],
    out_file: Annotated[str | None, typer.Option("--out", help="PNG file to write (default: RUN/metrics.png).")] = None,
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics to draw, e.g. test_error,angle_deg (default: all).")
    ] = None,
) -> None:
    """Draw every per-epoch metric of a run against epochs, one panel each (mean over replicas, min-max band;
    per-layer metrics one line per layer; several runs side by side), into one PNG."""
    from targetprop.plots import plot_metrics

    names = None if metrics is None else [m.strip() for m in metrics.split(",") if m.strip()]
    figure = plot_metrics(Path(folder), Path(out_file) if out_file is not None else None, names, note=_note)
    out.print(
        f"wrote {figure.path} ({len(figure.metrics)} panels: {', '.join(figure.metrics)})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@app.command("rules")
def list_rules() -> None:
    """List the rules and their hyper-parameters (defaults: the DTP authors' MNIST settings)."""
    for name, cls in RULES.items():
        out.print(
            f"[bold]{name}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}", highlight=False, soft_wrap=True
        )
        for key, f in cls.Config.model_fields.items():
            print_line(out, f"    {key} = {f.default!r}")
            if f.description:
                text = " ".join(f.description.split())  # a docstring's lines, as one paragraph
                print_line(out, textwrap.indent(textwrap.fill(text, 100), " " * 8))
        resumable = ", ".join(cls.Config.resumable)
        print_line(out, f"    (--resume may change: {resumable})")
        if cls.run_defaults:
            needs = ", ".join(f"{key} {value!r}" for key, value in cls.run_defaults.items())
            print_line(out, f"    (where unset, train and compare use: {needs})")


@app.command("presets")
def list_presets() -> None:
    """List the bundled experiment configurations (use with --config NAME)."""
    from targetprop.experiments import preset_names, preset_path

    for p in preset_names():
        path = preset_path(p)
        first = Path(str(path)).read_text().splitlines()[0].lstrip("# ") if path else ""
        out.print(f"{p}: {first}", highlight=False)


# typer raises click's exceptions, or those of the copy of click it carries (typer >= 0.25): find them by name
_CLICK = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError, ClickException = _CLICK["UsageError"], _CLICK["ClickException"]
NoArgsIsHelpError = getattr(sys.modules[UsageError.__module__], "NoArgsIsHelpError", None)


_signals: list[int] = []
"""The stop signals this command has received, in order."""


def _stop(signum: int, frame: Any) -> None:
    """SIGINT raises KeyboardInterrupt (as Python's own handler does) and SIGTERM :class:`Terminated`; both are
    recorded, so that an interrupt a library turned into its own error (a C extension interrupted while it
    loads raises ImportError) still ends as an interrupt."""
    _signals.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stopped() -> None:
    """Ctrl-C or SIGTERM that arrived outside a training loop (which says how to continue by itself)."""
    terminated = signal.SIGTERM in _signals
    _note("error: terminated" if terminated else "error: interrupted")
    sys.exit(143 if terminated else 130)


def _deliver_again(unraisable: Any, hook: Any) -> None:
    """``sys.unraisablehook`` while a command runs: a stop signal that landed where Python cannot raise (a weakref
    callback, a ``__del__``) would be printed and lost, and the run would go on; it is sent again instead, a moment
    later (sent now, its handler would raise inside this hook, where it would be lost the same way)."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _signals:
        threading.Timer(0.05, os.kill, (os.getpid(), _signals[-1])).start()
        return
    hook(unraisable)


def main() -> None:
    """The entry point: every error a user can fix is one line, ``error: ...``, with exit status 2; Ctrl-C exits
    with 130 and SIGTERM with 143, after saying how to continue."""
    _signals.clear()
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the caller ignores Ctrl-C
        signal.signal(signal.SIGINT, _stop)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: _deliver_again(unraisable, hook)
    try:
        _run()
    finally:
        sys.unraisablehook = hook


def _run() -> None:
    try:
        code = app(standalone_mode=False)
    except TargetpropError as e:
        _note(f"error: {e}")
        sys.exit(e.exit_code)
    except UsageError as e:
        if NoArgsIsHelpError is not None and isinstance(e, NoArgsIsHelpError):
            e.show()  # the help text, as a bare `targetprop` asks for
            sys.exit(e.exit_code)
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        _note(f"error: {' '.join(e.format_message().split())}{where}")
        sys.exit(2)
    except ClickException as e:
        _note(f"error: {' '.join(e.format_message().split())}")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _stopped()
    except Exception as e:
        if _signals:  # the signal surfaced as another error (see _stop)
            _stopped()
        if not isinstance(e, OSError):
            raise
        # the environment, not the program: a full disk or a lost mount where no module expected one
        where = f" ({e.filename})" if e.filename else ""
        _note(f"error: {e.strerror or e}{where}; free some space, or check the folder and try again")
        sys.exit(2)
    if code == 130:  # click's answer to a KeyboardInterrupt (or our SIGTERM) it caught in a command
        _stopped()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
