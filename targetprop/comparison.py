"""A compare directory: several rules trained on one network, data and seeds, one run directory per rule.

``targetprop compare`` writes ``compare.toml`` (the rules asked, in order) and every rule's ``config.toml`` before
the first rule trains, so that an interrupted comparison says what it was asked, ``inspect`` lists the rules not
started yet, and ``targetprop compare --resume DIR`` continues it: each rule from its checkpoint, or from its first
epoch where it had not started, then the one table. A folder made before ``compare.toml`` existed is continued with
the rules its run directories hold.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
from pydantic import TypeAdapter, ValidationError

from targetprop.config import RunConfig, apply_assignments, parse_assignment
from targetprop.errors import ConfigError, warn
from targetprop.rules import RULES, get_rule
from targetprop.runs import RunDir, atomic_write

if TYPE_CHECKING:
    from targetprop.data import Dataset

COMPARE_FILE = "compare.toml"

_RULES = TypeAdapter(list[str])


def resume_command(folder: Path) -> str:
    return f"targetprop compare --resume {folder}"


def write_request(folder: Path, configs: Sequence[RunConfig]) -> None:
    """Record the comparison in ``folder``: ``compare.toml`` and each rule's run directory with its configuration
    (no epoch trained yet)."""
    for cfg in configs:
        run = RunDir(folder / cfg.rule)
        run.path.mkdir()
        run.write_config(cfg.model_copy(update={"out": str(folder), "name": cfg.rule}).to_dict())
    request = {"rules": [cfg.rule for cfg in configs]}
    atomic_write(folder / COMPARE_FILE, lambda f: f.write(tomli_w.dumps(request).encode()))


def is_comparison(folder: Path) -> bool:
    return (folder / COMPARE_FILE).is_file()


def asked_rules(folder: Path) -> list[str]:
    """The rules the comparison in ``folder`` was asked to train, in order (``compare.toml``); in a folder made
    without one, the rules of its run directories."""
    path = folder / COMPARE_FILE
    if not path.is_file():  # a comparison's run directories are named by their rules
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name in RULES and (p / "config.toml").is_file())
    try:
        request = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read {path} ({str(e).splitlines()[0]}); restore it") from None
    try:
        rules = _RULES.validate_python(request.get("rules"))
    except ValidationError:
        raise ConfigError(
            f'{path} says rules = {request.get("rules")!r}; it should list them: rules = ["dtp", ...]'
        ) from None
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise ConfigError(f"{path} names {', '.join(unknown) or 'no rule'}; it should list rules of `targetprop rules`")
    return rules


def open_comparison(path: str | Path) -> tuple[Path, list[str]]:
    """The compare directory ``path`` and its rules, for ``--resume``; refused unless every rule has a run
    directory (``compare.toml`` is written after them, so a folder holding it has them all)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{str(path)!r} is not a folder; give the directory `targetprop compare` made")
    if (folder / "config.toml").is_file():
        raise ConfigError(
            f"{folder} is one run's directory, not a comparison's: continue it with `targetprop train --resume {folder}`"
        )
    rules = asked_rules(folder)
    if not rules:
        raise ConfigError(
            f"{str(path)!r} holds no {COMPARE_FILE} and no rule's run directory; give the directory `targetprop "
            "compare` made"
        )
    missing = [r for r in rules if not (folder / r / "config.toml").is_file()]
    if missing:
        raise ConfigError(
            f"{folder} names {', '.join(missing)} in {COMPARE_FILE} but holds no run directory for it; "
            "start a new comparison"
        )
    return folder, rules


def assignments_for(rule: str, assignments: Sequence[str], rules: Sequence[str]) -> list[str]:
    """The ``--set`` assignments of a resumed comparison that apply to ``rule``'s run: run keys, its own
    ``RULE.KEY``, and bare keys of its rule. Every assignment is checked against all the ``rules`` first."""
    apply_assignments({}, list(assignments), list(rules))  # refuses a key no compared rule has
    keep = []
    for text in assignments:
        path, _ = parse_assignment(text)
        if len(path) == 2:
            keep += [text] if path[0] == rule else []
        elif path[0] in RunConfig.model_fields or path[0] in get_rule(rule).Config.model_fields:
            keep.append(text)
    return keep


def train_rules(
    folder: Path,
    rules: Sequence[str],
    assignments: Sequence[str],
    overrides: dict[str, Any],
    *,
    dataset: Dataset | None = None,
    progress: bool,
    note: Callable[[str], None] = warn,
) -> list[tuple[str, dict[str, Any], str]]:
    """Train (or continue) each rule's run directory in ``folder``, in order, on one ``dataset`` (default: the one
    the runs name); a rule that trained all its epochs is read, not trained again. Returns ``(rule, summary, run
    directory)`` rows. Every run's plan is made first, so that a change one of them cannot take stops the command
    before anything trains."""
    from targetprop.data import load_dataset
    from targetprop.resume import plan_resume
    from targetprop.trainer import continue_run

    plans = [
        (
            RunDir(folder / rule),
            plan_resume(RunDir(folder / rule), assignments_for(rule, assignments, rules), **overrides),
        )
        for rule in rules
    ]
    first = plans[0][1].config
    if dataset is None:
        dataset = load_dataset(
            first.data, first.data_dir, device=first.device, download=first.download, n_valid=first.n_valid
        )
    rows = []
    for (run, plan), rule in zip(plans, rules, strict=True):
        for line in plan.notes:
            note(line)
        summary = continue_run(
            run,
            plan,
            dataset=dataset,
            progress=progress,
            continue_with=resume_command(folder),
            said_as=str(run.path),
            note=note,
        )
        rows.append((rule, summary, str(run.path)))
    return rows
