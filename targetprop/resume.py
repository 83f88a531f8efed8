"""Resuming a run directory: what it continues from, and what may change on the way.

A checkpoint holds the configuration it was trained with (see :mod:`targetprop.runs`). :func:`plan_resume` takes
that as the base, applies the safe changes a user asks for (``--set dtp.lr=...``, ``--epochs``, an edited
``config.toml``) and refuses the others before anything is written; :func:`restore_state` puts the network, the
rule and the random streams back; :func:`history_on_resume` gives the metrics rows the checkpoint covers and
rewrites ``metrics.jsonl`` to hold exactly them (repairing a torn or damaged file from the checkpoint's copy).
Without a checkpoint, a finished run kept as its plain files counts as done, and an unfinished one trains again
from epoch 1 with a copy kept of the metrics it overwrites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from targetprop.config import RunConfig, make_config
from targetprop.errors import ConfigError, TargetpropError, warn
from targetprop.nets import Network
from targetprop.replicas import ReplicaRandom
from targetprop.rules import Rule, get_rule
from targetprop.runs import METRICS, RunDir, RunDirError

RUN_KEYS_RESUMABLE = (
    "epochs",
    "eval_every",
    "eval_train_samples",
    "checkpoint_seconds",
    "device",
    "data_dir",
    "download",
    "threads",
    "tensorboard",
)
"""Run keys a resumed run may change; ``out`` and ``name`` (where the folder was made) are not compared."""
RESUME_OPTIONS = ("--epochs", "--device", "--threads", "--data-dir", "--download", "--tensorboard")
"""The command-line options of the resumable run keys; the others are given as ``--set KEY=VALUE``."""
RESUME_SET_KEYS = tuple(k for k in RUN_KEYS_RESUMABLE if "--" + k.replace("_", "-") not in RESUME_OPTIONS)
UNRECORDED = ("out", "name", "device", "data_dir", "download", "threads", "tensorboard", "checkpoint_seconds")
"""Keys whose change does not change the numbers: not recorded as a change in the metrics."""


@dataclass
class ResumePlan:
    """How a run directory continues: the configuration, the epochs done, and what changes from the epoch after."""

    config: RunConfig
    done: int
    changes: dict[str, Any]
    """``{"dtp.lr": 0.001, "epochs": 40}``: hyper-parameters that differ from those the checkpoint was trained with."""
    notes: list[str] = field(default_factory=list)


def _flat(config: dict[str, Any], rule: str) -> dict[str, Any]:
    flat = {k: v for k, v in config.items() if k != rule}
    flat.update({f"{rule}.{k}": v for k, v in config.get(rule, {}).items()})
    return flat


def _resumable(key: str, rule: str) -> bool:
    if "." in key:
        return key.split(".", 1)[1] in get_rule(rule).Config.resumable
    return key in RUN_KEYS_RESUMABLE or key in ("out", "name")


def plan_resume(run_dir: RunDir, assignments: list[str] | None = None, **overrides: Any) -> ResumePlan:
    """Check how ``run_dir`` would continue, before anything is written.

    The configuration the checkpoint was trained with is the base. Safe changes (:data:`RUN_KEYS_RESUMABLE` and
    each rule's ``Config.resumable``: learning rates, η̂, noise) may come from ``--set`` assignments, ``overrides``
    (``epochs``, ``device``, ``data_dir``, ``download``, ``threads``, ``tensorboard``) or an edited ``config.toml``; any other difference is refused."""
    from targetprop.config import apply_assignments

    notes: list[str] = []
    header = run_dir.checkpoint_header()
    done = 0
    trained_with: dict[str, Any] | None = None
    if header is not None:
        done, trained_with = int(header.get("epoch", 0)), header.get("config")
    elif run_dir.has_checkpoint():  # an old checkpoint.pt: read by the restricted unpickler
        state = run_dir.load_checkpoint("cpu")
        done = int(state["epoch"]) if state else 0
    kept = _kept_without_checkpoint(run_dir) if header is None and not run_dir.has_checkpoint() else None
    if kept is not None:  # finished, then kept without its checkpoint: done, and nothing to train on from
        done = kept
    try:
        on_disk: dict[str, Any] | None = run_dir.read_config()
    except TargetpropError as e:
        if trained_with is None:
            raise
        notes.append(f"warning: {e}; rewritten from the checkpoint's copy")
        on_disk = None
    base = make_config(trained_with or on_disk).to_dict()
    rule = base["rule"]
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    if trained_with is not None and on_disk is not None:  # config.toml edited since the checkpoint
        edited = make_config(on_disk).to_dict()
        if edited["rule"] != rule:
            raise ConfigError(
                f"{run_dir.path / 'config.toml'} names rule {edited['rule']!r}, but the run trained {rule!r}"
            )
        was, now = _flat(base, rule), _flat(edited, rule)
        for key in sorted(set(was) | set(now)):
            if was.get(key) == now.get(key) or key in ("out", "name"):
                continue
            if not _resumable(key, rule):
                raise ConfigError(
                    f"config.toml sets {key} = {now.get(key)!r} but the run was trained with {was.get(key)!r}; "
                    f"{_resumable_text(rule)}: put it back, or start a new run"
                )
            head, _, tail = key.partition(".")
            if tail:
                data[head][tail] = now[key]
            else:
                data[key] = now[key]
    check_resumable(assignments or [], rule)
    data = apply_assignments(data, assignments or [], [rule])
    config = make_config(data, **overrides)
    if kept is not None and config.epochs > kept:
        raise RunDirError(
            f"{run_dir.path} finished {kept} epochs and was kept without its checkpoint, so it cannot train on to "
            f"{config.epochs}: start a new run with --epochs {config.epochs}"
        )
    if config.epochs < done:
        raise ConfigError(
            f"{run_dir.path} has already trained {done} epochs; --epochs {config.epochs} would not continue it: "
            f"give more than {done}"
        )
    before, after = _flat(base, rule), _flat(config.to_dict(), rule)
    changes = {k: after[k] for k in sorted(after) if before.get(k) != after.get(k) and k not in UNRECORDED}
    if config.epochs == done and changes:  # nothing left to train: the change would be recorded, never applied
        raise ConfigError(
            f"all {done} epochs of {run_dir.path} are done, so nothing would train with {', '.join(changes)}; add "
            f"--epochs N with N above {done}"
        )
    return ResumePlan(config, done, changes, notes)


def check_resumable(assignments: list[str], rule: str) -> None:
    """Refuse a ``--set`` assignment (``train --set`` form) that a resumed run of ``rule`` may not take, before its
    value is looked at."""
    for text in assignments:
        key = text.split("=", 1)[0].strip()
        key = key if "." in key or key in RunConfig.model_fields else f"{rule}.{key}"
        if not _resumable(key, rule) or key in ("out", "name"):
            raise ConfigError(
                f"--set {key} cannot change when a run resumes ({_resumable_text(rule)}); start a new run instead"
            )


def _kept_without_checkpoint(run_dir: RunDir) -> int | None:
    """The epochs of a finished run whose checkpoint is gone (results kept as their plain files: ``config.toml``,
    ``metrics.jsonl``, ``summary.json``); ``None`` if it has no summary, as a run stopped before its first
    checkpoint has none."""
    summary = run_dir.read_summary()
    epochs = summary.get("epochs") if summary is not None else None
    return epochs if isinstance(epochs, int) and epochs > 0 else None


def _resumable_text(rule: str) -> str:
    """What a resumed run of ``rule`` may change: ``a dtp run may change only lr, ...; and --epochs, ...``."""
    keys = ", ".join(get_rule(rule).Config.resumable)
    run = ", ".join([*RESUME_OPTIONS, *(f"--set {k}" for k in RESUME_SET_KEYS)])
    return f"a {rule} run may change only {keys}; and {run}"


def resumable_summary() -> str:
    """What any resumed run may change, in words (each rule adds its learning rates, η̂ and noise)."""
    return f"{', '.join(RESUME_OPTIONS)}, --set {', '.join(RESUME_SET_KEYS)} and --set of learning rates, η̂ and noise"


def restore_state(net: Network, rule: Rule, rngs: dict[str, ReplicaRandom], state: dict[str, Any], where: str) -> None:
    try:
        net.load_state_dict(state["net"])
        rule.load_state_dict(state["rule"])
        for key, rng in rngs.items():
            rng.load_state_dict(state[key])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(
            f"{where} does not fit this run's network and rule ({reason}); was it copied from another run? "
            "restore the right file, or start the run again"
        ) from None


def history_on_resume(
    run_dir: RunDir, state: dict[str, Any] | None, replicas: int, evaluated: Callable[[int], bool] = lambda e: True
) -> list[dict[str, Any]]:
    """The metrics rows the checkpoint covers; ``metrics.jsonl`` rewritten to hold exactly them. ``evaluated(e)``
    says whether epoch ``e`` logged rows (see ``eval_every``)."""
    done = int(state["epoch"]) if state else 0
    found = run_dir.read_metrics()
    if state is not None and "history" in state:
        history = list(state["history"])
        if found.damaged or [r for r in found.rows if r["epoch"] <= done] != history:
            warn(f"warning: {run_dir.path / 'metrics.jsonl'} was damaged; rewritten from the checkpoint's copy")
    else:  # no checkpoint yet, or an old one without a copy of the metrics: the file is all there is
        if found.damaged:
            raise RunDirError(
                f"{run_dir.path / 'metrics.jsonl'} line {found.damaged[0]} is damaged and the checkpoint holds no "
                "copy of the metrics; repair or delete that line, or start the run again"
            )
        history = [r for r in found.rows if r["epoch"] <= done]
        if state is None and found.rows:
            _keep_rows_trained_again(run_dir)
        have = {(r["epoch"], r["replica"]) for r in history}
        missing = sorted({e for e in range(1, done + 1) if evaluated(e) for k in range(replicas) if (e, k) not in have})
        if missing:
            raise RunDirError(
                f"{run_dir.path / 'metrics.jsonl'} lacks the rows of epoch(s) {missing[:5]} that the checkpoint covers; "
                "restore the file from a copy, or start the run again"
            )
    run_dir.write_metrics(history)
    return history


def _keep_rows_trained_again(run_dir: RunDir) -> None:
    """A run with metrics but no checkpoint trains again from epoch 1: keep a copy of the rows it will overwrite (a
    run killed before its first checkpoint, or partial results kept without their checkpoint) and say where."""
    n = 1
    while (copy := run_dir.path / f"metrics-before-restart{'' if n == 1 else f'-{n}'}.jsonl").exists():
        n += 1
    copy.write_bytes((run_dir.path / METRICS).read_bytes())
    warn(
        f"warning: {run_dir.path} has no checkpoint, so it trains again from epoch 1; the metrics it held are kept "
        f"in {copy.name}"
    )
