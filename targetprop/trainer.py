"""The trainer: epochs of mini-batches for any rule, evaluation, run directory, checkpoints and resume.

The whole dataset sits on the device; a mini-batch is an index gather ``X[order[:, k*B:(k+1)*B]]`` giving each
replica its own samples. Metrics stay on the device during an epoch and are read once at its end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from targetprop.config import RunConfig
from targetprop.data import Dataset, Split, load_dataset
from targetprop.diagnostics import measure
from targetprop.errors import ConfigError, DivergedError, Interrupted, warn
from targetprop.health import ReplicaHealth, collapse_epoch
from targetprop.nets import Network, parse_architecture
from targetprop.progress import Progress, mean_std
from targetprop.replicas import ReplicaRandom
from targetprop.resume import ResumePlan, history_on_resume, restore_state
from targetprop.rules import Rule, get_rule
from targetprop.runs import RunDir, RunDirError
from targetprop.subnormals import flushed
from targetprop.tasks import Classify, Task, get_task
from targetprop.threads import ThreadPolicy, run_threads
from targetprop.units import hidden_unit


def build(config: RunConfig, dataset: Dataset) -> tuple[Network, Rule]:
    """The network (one replica per seed) and the rule that trains it."""
    rule_cls = get_rule(config.rule)
    rule_config = config.rule_config()
    sizes = parse_architecture(config.architecture)
    task = get_task(config.task)
    task.check(sizes, config.output, dataset, config.architecture)
    _check_memory(sizes, len(config.seeds), rule_cls.feedback_maps(rule_config), config)
    net = Network.from_spec(
        sizes,
        config.hidden_units,
        config.output,
        seeds=config.seeds,
        init=config.init,
        feedback=rule_cls.feedback_maps(rule_config),
        tied=config.tied_weights,
        device=config.device,
        dtype=getattr(torch, config.dtype),
        flat=config.compile != "reduce-overhead",  # CUDA graphs of whole steps need parameters apart
    )
    noise = ReplicaRandom(config.seeds, "train", config.device, philox=config.rng == "philox")
    rule = rule_cls(net, rule_config, noise, task)
    if rule.indexed:  # it keeps something per training example (EP's persistent states)
        rule.bind_examples(len(dataset.train))
    if config.compile != "off":
        rule.compile(config.compile)
    return net, rule


def check_builds(configs: Iterable[RunConfig], dataset: Dataset) -> None:
    """Build every configuration's network and rule once, uncompiled, and drop them: what only a rule can refuse
    (EP's per-layer rates, TP's hidden layer, ...) stops a command that trains several rules before the first
    of them trains, rather than after it."""
    configs = list(configs)
    if not configs:
        return
    with run_threads(configs[0].threads, dataset.train.x.device):  # orthogonal init's SVDs at the run's count
        for config in configs:
            build(config.model_copy(update={"compile": "off"}), dataset)


def _available_memory(device: torch.device) -> int | None:
    """Bytes free for a new network on ``device`` (None where it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(sizes: list[int], replicas: int, feedback: str, config: RunConfig) -> None:
    """Refuse a network whose parameters, gradients and optimiser moments (about six copies, twice with
    inverses) cannot fit in the device's free memory, before any of it is allocated."""
    weights = sum(a * b + b for a, b in itertools.pairwise(sizes))
    copies = 6 * (2 if feedback != "none" else 1)
    need = weights * copies * replicas * (8 if config.dtype == "float64" else 4)
    free = _available_memory(torch.device(config.device))
    if free is not None and need > free:
        raise ConfigError(
            f"{replicas} replica(s) of {config.architecture} need about {need / 2**30:.1f} GiB for parameters and "
            f"optimiser state, but {config.device} has {free / 2**30:.1f} GiB free; use fewer seeds or smaller layers"
        )


@torch.no_grad()
def evaluate(
    net: Network,
    split: Split,
    noise: ReplicaRandom | None = None,
    samples: int = 1,
    task: Task | None = None,
    rule: Rule | None = None,
) -> dict[str, Tensor]:
    """Per-replica error (the task's: % for classification) and mean cost on a split, from what ``rule`` predicts
    (:meth:`Rule.predict`; without a rule, the feed-forward pass); stochastic units average ``samples`` passes."""
    sample = noise.uniform_like if noise is not None else (lambda h: torch.rand_like(h))
    predict = rule.predict if rule is not None else net.predict
    return (task or Classify()).evaluate(
        lambda x: predict(x, sample, samples), net.output_unit, split, net.replicas, net.layers[0].weight.dtype
    )


@contextlib.contextmanager
def evaluation_units(net: Network, units: str | list[str] | None) -> Iterator[None]:
    """Swap the hidden layers' units for ``units`` (one, or one per hidden layer) while the block runs (the
    ``eval_activation`` run key); the weights are untouched and the trained units come back afterwards."""
    hidden = net.layers[:-1]
    if units is None:
        yield
        return
    names = [units] * len(hidden) if isinstance(units, str) else units * len(hidden) if len(units) == 1 else units
    trained = [layer.unit for layer in hidden]
    try:
        for layer, name in zip(hidden, names, strict=True):
            layer.unit = hidden_unit(name)
        yield
    finally:
        for layer, unit in zip(hidden, trained, strict=True):
            layer.unit = unit


@dataclass
class TrainResult:
    run_dir: RunDir
    summary: dict[str, Any]
    net: Network
    rule: Rule
    history: list[dict[str, Any]] = field(default_factory=list)


SUMMARY_STATS = ("train_error", "valid_error", "test_error", "test_error_at_best_valid", "lowest_test_error")
"""The per-replica figures a summary gives the mean, std, min and max of over the replicas that did not diverge.
``lowest_test_error`` is the lowest test error of any evaluated epoch: chosen on the test set, so not an estimate
of the error on new data, but the figure papers that report "the best test error within N epochs" give (Bartunov
et al. 2018)."""


def summarize(
    config: RunConfig, history: list[dict[str, Any]], diverged: set[int], chance: float | None = None
) -> dict[str, Any]:
    """Final and best-validation errors per replica; mean and standard deviation over the replicas that did not
    diverge. Replicas that collapsed to ``chance`` (:func:`collapse_epoch`) are named but still counted."""
    last_epoch = max(r["epoch"] for r in history)
    per_replica = []
    for r, seed in enumerate(config.seeds):
        rows = [h for h in history if h["replica"] == r]
        final = rows[-1]
        finite = [h for h in rows if math.isfinite(h["valid_error"])]
        best = min(finite, key=lambda h: (h["valid_error"], h["epoch"])) if finite else final
        tested = [h["test_error"] for h in rows if math.isfinite(h["test_error"])]
        per_replica.append(
            {
                "seed": seed,
                "diverged": r in diverged,
                "collapsed_at": None if r in diverged else collapse_epoch(rows, chance),
                "train_error": final["train_error"],
                "valid_error": final["valid_error"],
                "test_error": final["test_error"],
                "best_epoch": best["epoch"],
                "best_valid_error": best["valid_error"],
                "test_error_at_best_valid": best["test_error"],
                "lowest_test_error": min(tested, default=final["test_error"]),
            }
        )

    def stats(key: str) -> dict[str, float]:
        vals = [p[key] for p in per_replica if not p["diverged"]] or [float("nan")]
        return {
            "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals),
            "max": max(vals),
        }

    epoch_seconds = [h["seconds"] for h in history if h["replica"] == 0]
    return {
        "rule": config.rule,
        "task": config.task,
        "error": get_task(config.task).error_label,
        "data": config.data,
        "arch": config.architecture,
        "epochs": last_epoch,
        "replicas": len(config.seeds),
        "seconds_per_epoch": statistics.median(epoch_seconds),
        "diverged_seeds": [config.seeds[r] for r in sorted(diverged)],
        "collapsed_seeds": [p["seed"] for p in per_replica if p["collapsed_at"] is not None],
        "chance_error": chance,
        **{k: stats(k) for k in SUMMARY_STATS},
        "per_replica": per_replica,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(
    rule: Rule,
    x: Tensor,
    y: Tensor,
    order: Tensor,
    batch: int,
    advance: Callable[[], None] = lambda: None,
    input_noise: float = 0.0,
    input_rng: ReplicaRandom | None = None,
) -> tuple[dict[str, Tensor], dict[str, int], float]:
    """One epoch: every pass of ``rule.schedule()`` over the mini-batches ``order[:, k*B:(k+1)*B]``; with
    ``input_noise`` σ, each mini-batch of each pass gets ``x + σ·N(0, 1)`` drawn from ``input_rng`` (the DTP
    authors' stochastic network trains on inputs with σ = 0.3). A rule that is ``indexed`` also gets each
    mini-batch's positions in the training set, ``(x, y, index)``.

    Returns the per-replica sums of the rule's metrics (still on the device), how many terms each sum has
    (samples for ``errors``, batches otherwise), and the wall time of the epoch.
    """
    n_batches = math.ceil(order.shape[1] / batch)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    _synchronize(x.device)
    start = time.perf_counter()
    sizes = [min(batch, order.shape[1] - k * batch) for k in range(n_batches)]
    for phases in rule.schedule():
        batches = ((x[idx], y[idx], *([idx] if rule.indexed else [])) for idx in order.split(batch, dim=1))
        if input_noise > 0:
            assert input_rng is not None, "input noise needs its random streams"
            batches = (
                (xb.add_(input_rng.normal(xb.shape[1:], xb.dtype), alpha=input_noise), *rest) for xb, *rest in batches
            )
        for size, metrics in zip(sizes, rule.train_pass(batches, phases), strict=True):
            for key, value in metrics.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
                counts[key] = counts.get(key, 0) + (size if key == "errors" else 1)
            advance()
    _synchronize(x.device)
    return sums, counts, time.perf_counter() - start


def training_subset(dataset: Dataset, n_train: int) -> Dataset:
    """``dataset`` with only the first ``n_train`` training examples (validation and test sets unchanged)."""
    if n_train > len(dataset.train):
        raise ConfigError(f"n_train = {n_train}, but {dataset.name} has only {len(dataset.train)} training examples")
    return dataclasses.replace(dataset, train=Split(dataset.train.x[:n_train], dataset.train.y[:n_train]))


def train(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    run_dir: RunDir | None = None,
    resume: bool = False,
    changes: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    continue_with: str | None = None,
    label: str | None = None,
) -> TrainResult:
    """Train ``config``; writes a run directory and returns its summary, the network and the rule.

    Everything that can fail on bad input (data, architecture, hyper-parameters) fails before the run
    directory is created. With ``resume``, training continues from ``run_dir``'s checkpoint (if it has one) to the
    same numbers an uninterrupted run gives (on the CPU); ``changes`` (see :func:`targetprop.resume.plan_resume`) are recorded in the
    metrics of the first epoch trained with them, and in ``config.toml`` once that epoch is done. The process holds
    the run directory's lock throughout: a second writer is refused.

    ``on_epoch(epoch, {"rows": ..., "run_dir": ...})`` is called after each evaluated epoch's rows and checkpoint are
    written (every epoch unless ``config.eval_every`` > 1: see :func:`evaluates`);
    with ``config.tensorboard`` a :class:`targetprop.board.TensorBoardLog` writes them as TensorBoard scalars first.
    ``continue_with`` is the command an interrupted run's message gives to go on (default: ``targetprop train
    --resume RUN``; ``reproduce`` gives its own, which continues every method). ``label`` names the run on its
    progress lines (default: its rule; ``reproduce`` gives the method's name, as ``bp-straight-through`` and ``bp``
    train one rule).
    """
    board = None
    if config.tensorboard:
        from targetprop.board import TensorBoardLog

        board = on_epoch = TensorBoardLog(then=on_epoch)  # without the package: refused here, before anything
    device = torch.device(config.device)
    if dataset is None:
        dataset = load_dataset(
            config.data, config.data_dir, device=device, download=config.download, n_valid=config.n_valid
        )
    else:
        dataset = dataset.to(device)
    if config.n_train is not None:
        dataset = training_subset(dataset, config.n_train)
    try:
        # the run's thread count from here on, the network's initialisation included (an orthogonal init's SVDs
        # at more threads than the cores left free by other programs take seconds, not a fraction of one); a
        # library caller gets its own count back
        with run_threads(config.threads, device) as cpu:
            net, rule = build(config, dataset)
            if not resume:
                run_dir = RunDir.create(config.out, config.name or RunDir.default_name(config.rule, config.data))
            assert run_dir is not None
            with run_dir.lock(), flushed():  # subnormal floats slow a long CPU run (targetprop.subnormals)
                return _train_locked(
                    config,
                    dataset,
                    net,
                    rule,
                    run_dir,
                    resume,
                    changes or {},
                    progress,
                    on_epoch,
                    continue_with,
                    cpu,
                    label or config.rule,
                )
    finally:
        if board is not None:
            board.close()


def continue_run(
    run_dir: RunDir,
    plan: ResumePlan,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    continue_with: str | None = None,
    label: str | None = None,
    said_as: str | None = None,
    note: Callable[[str], None] = warn,
) -> dict[str, Any]:
    """Continue ``run_dir`` as ``plan`` (:func:`targetprop.resume.plan_resume`) says and return its summary, as
    ``train --resume``, ``compare --resume`` and ``reproduce --resume`` continue each of their runs: a run that
    trained all its epochs is read, not trained again (its ``summary.json`` made again from its metrics where it is
    missing or stale); a run with no epoch done trains from its first. ``note`` says which, naming the run
    ``said_as`` (default: its folder); ``continue_with`` and ``label`` are :func:`train`'s."""
    name = said_as or str(run_dir.path)
    summary = run_dir.read_summary()
    if plan.done >= plan.config.epochs and summary is not None and summary.get("epochs") == plan.done:
        note(f"{name}: all {plan.done} epochs already done")
        return summary
    if plan.done >= plan.config.epochs:
        note(f"{name}: all {plan.done} epochs done; writing its summary.json again")
    elif plan.done:
        changed = "".join(f", {k} = {v!r}" for k, v in plan.changes.items())
        note(f"{name}: resuming after epoch {plan.done}{changed}")
    result = train(
        plan.config,
        dataset=dataset,
        run_dir=run_dir,
        resume=True,
        changes=plan.changes,
        progress=progress,
        continue_with=continue_with,
        label=label,
    )
    return result.summary


def evaluates(config: RunConfig, epoch: int) -> bool:
    """Whether the trainer evaluates (and logs a metrics row for) ``epoch`` (1-based): every ``eval_every``-th
    epoch and the last."""
    return epoch % config.eval_every == 0 or epoch == config.epochs


def diverged_error(config: RunConfig, run_dir: RunDir, epoch: int) -> DivergedError:
    """The one-line stop of a run whose every replica diverged in ``epoch``: where the last good checkpoint is,
    and the command that continues from it with lower learning rates."""
    kept = run_dir.has_checkpoint()
    where = (
        f"last good checkpoint: {run_dir.checkpoint_path} (epoch {epoch - 1})" if kept else "no checkpoint was written"
    )
    lr_key = f"{config.rule}.lr=..."
    fix = (
        f"lower the learning rates or η̂ and continue: `targetprop train --resume {run_dir.path} --set {lr_key}`"
        if kept
        else f"lower the learning rates or η̂ (e.g. --set {lr_key}) and start again"
    )
    return DivergedError(f"training diverged at epoch {epoch} (loss is not finite for every replica); {where}; {fix}")


def _train_locked(
    config: RunConfig,
    dataset: Dataset,
    net: Network,
    rule: Rule,
    run_dir: RunDir,
    resume: bool,
    changes: dict[str, Any],
    progress: bool,
    on_epoch: Callable[[int, dict[str, Any]], None] | None,
    continue_with: str | None,
    cpu: ThreadPolicy | None,
    name: str,
) -> TrainResult:
    device = torch.device(config.device)
    train_rng = rule.noise
    eval_rng = ReplicaRandom(config.seeds, "eval", device, philox=config.rng == "philox")
    input_rng = ReplicaRandom(config.seeds, "input", device) if config.input_noise > 0 else None
    rngs = {"train_rng": train_rng, "eval_rng": eval_rng, **({"input_rng": input_rng} if input_rng is not None else {})}
    history: list[dict[str, Any]] = []
    start_epoch = 0
    health = ReplicaHealth(config.seeds, rule.task.chance_error(dataset.train), warn)
    reps = net.replicas
    try:
        if resume:
            state = run_dir.load_checkpoint(device)
            if state is not None:
                restore_state(net, rule, rngs, state, str(run_dir.checkpoint_path))
                start_epoch = int(state["epoch"])
                health.diverged = set(state.get("diverged", []))
            history = history_on_resume(run_dir, state, reps, lambda e: evaluates(config, e))
            if state is None:
                run_dir.write_config(config.to_dict())
        else:
            run_dir.write_config(config.to_dict())
    except BaseException:
        if not resume:
            run_dir.remove()
        raise

    task, dtype = rule.task, net.layers[0].weight.dtype
    x_train, y_train = dataset.train.x.to(dtype), task.targets(dataset.train)
    y_train = y_train.to(dtype) if y_train.is_floating_point() else y_train
    n_train, batch = len(y_train), config.batch_size
    label = f"{name} {config.data} {config.architecture} ×{reps}"
    bar = Progress(label, config.epochs, math.ceil(n_train / batch) * len(rule.schedule()), enabled=progress)
    bar.start_at(start_epoch)
    unit = "%" if task.scale() == 100.0 else ""
    pending = dict(changes)  # recorded with the first epoch trained under them

    def advance() -> None:  # after each mini-batch
        bar.advance()
        if cpu is not None:
            cpu.tick()

    last_saved = time.monotonic()

    def save_checkpoint(epoch: int) -> None:  # after each epoch, evaluated or not, at most every checkpoint_seconds
        nonlocal last_saved
        if epoch < config.epochs and time.monotonic() - last_saved < config.checkpoint_seconds:
            return
        run_dir.save_checkpoint(
            {
                "epoch": epoch,
                "net": net.state_dict(),
                "rule": rule.state_dict(),
                **{key: rng.state_dict() for key, rng in rngs.items()},
                "diverged": sorted(health.diverged),
                "chance": health.chance,
                "config": config.to_dict(),
                "history": history,
            }
        )
        last_saved = time.monotonic()

    try:
        for epoch in range(start_epoch, config.epochs):
            rule.on_epoch_start(epoch)
            if config.shuffle:
                order = train_rng.permutations(n_train)
            else:
                order = torch.arange(n_train, device=device).expand(reps, -1)
            sums, counts, seconds = train_epoch(
                rule, x_train, y_train, order, batch, advance, config.input_noise, input_rng
            )
            batch_error = (task.scale() * sums["errors"] / counts["errors"]).tolist()
            if not evaluates(config, epoch + 1):  # no metrics row: the checkpoint alone moves on
                save_checkpoint(epoch + 1)
                bar.epoch_done(
                    f"{label} epoch {epoch + 1}/{config.epochs}: batch error {mean_std(batch_error)}{unit} "
                    f"({seconds:.2f} s; evaluated every {config.eval_every} epochs)"
                )
                if cpu is not None:
                    cpu.update()
                continue
            with evaluation_units(net, config.eval_activation):
                evals = {
                    name: evaluate(net, split, eval_rng, samples, task, rule)
                    for name, split, samples in (
                        ("train", dataset.train, config.eval_train_samples or config.eval_samples),
                        ("valid", dataset.valid, config.eval_samples),
                        ("test", dataset.test, config.eval_samples),
                    )
                }
            if config.diagnostics:
                probe = min(1000, n_train)
                x_probe, y_probe = x_train[:probe], task.expand(y_train[:probe], reps, dtype)
                for key, value in measure(rule, x_probe, y_probe).items():
                    sums[key], counts[key] = value, 1
            batch_loss = (sums["loss"] / counts["loss"]).tolist()
            extra = {k: (sums[k] / counts[k]).tolist() for k in sums if k not in ("loss", "errors")}
            rows = []
            for r in range(reps):
                row = {
                    "epoch": epoch + 1,
                    "replica": r,
                    "seed": config.seeds[r],
                    "batch_loss": batch_loss[r],
                    "batch_error": batch_error[r],
                    "train_error": evals["train"]["error"][r].item(),
                    "valid_error": evals["valid"]["error"][r].item(),
                    "test_error": evals["test"]["error"][r].item(),
                    "train_loss": evals["train"]["loss"][r].item(),
                    **{k: v[r] for k, v in extra.items()},
                    "seconds": seconds,
                }
                if pending:
                    row["changed"] = pending
                rows.append(row)
            history.extend(rows)
            if health.after_epoch(epoch + 1, rows, history, unit):
                raise diverged_error(config, run_dir, epoch + 1)
            run_dir.append_metrics(rows)
            if pending:  # the change has taken effect: config.toml says so from now on
                run_dir.write_config(config.to_dict())
                pending = {}
            save_checkpoint(epoch + 1)
            ok = [row for r, row in enumerate(rows) if r not in health.diverged] or rows
            bar.epoch_done(
                f"{label} epoch {epoch + 1}/{config.epochs}: "
                f"train {mean_std([r['train_error'] for r in ok])}{unit} valid {mean_std([r['valid_error'] for r in ok])}{unit} "
                f"test {mean_std([r['test_error'] for r in ok])}{unit}  ({seconds:.2f} s)"
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, {"rows": rows, "run_dir": run_dir.path})
            if cpu is not None:
                cpu.update()
        summary = summarize(config, history, health.diverged, health.chance)
        run_dir.write_summary(summary)
    except BaseException as e:
        bar.close()
        kept = run_dir.has_checkpoint()
        if not kept and not resume:
            run_dir.remove()  # nothing worth keeping: no half-written run is left behind
        go_on = f"`{continue_with or f'targetprop train --resume {run_dir.path}'}`"
        if isinstance(e, KeyboardInterrupt):
            then = f"; continue with {go_on}" if kept else " before the first epoch ended; nothing was kept"
            raise Interrupted.by(e, then) from None
        if isinstance(e, RunDirError):
            tail = (
                f"the run keeps the epochs of its last checkpoint: continue with {go_on}"
                if kept
                else "nothing was kept"
            )
            wrapped = RunDirError(f"{e}; {tail}")
            wrapped.reason = str(e)  # what went wrong, without the advice (a sweep gives its own)
            raise wrapped from None
        raise
    bar.close()
    return TrainResult(run_dir, summary, net, rule, history)
