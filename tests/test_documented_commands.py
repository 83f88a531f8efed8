"""Every `targetprop` command that the project's documents show in a code block parses, and the experiment, methods,
rules, presets, sweep spaces and `--set` settings it names exist and validate: a reader can rerun it as written.
Nothing is trained; commands that continue or read a run directory (``--resume``, ``--report``) are parsed only,
since their directories live on the machine that made them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from targetprop.cli import COMPARED_RULES, _common, app, new_run_configs
from targetprop.experiments import find_self_running, get_experiment
from targetprop.replicas import parse_seeds
from targetprop.reproduce import check_assignments, chosen_methods, method_config
from targetprop.sweep import load_space

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("results/**/README.md")])
PLACEHOLDER = re.compile(r"[A-Z]{2,}|\.\.\.|^[A-Z]$")


def documented_commands(path: Path) -> list[str]:
    """The `targetprop ...` lines of the fenced and indented code blocks of a Markdown file, continuation lines
    (ending in a backslash) joined."""
    commands, pending, fenced = [], "", False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if pending:
            pending += " " + line.strip()
        elif (fenced or line.startswith("    ")) and line.strip().startswith("targetprop "):
            pending = line.strip()
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        else:
            commands.append(pending)
            pending = ""
    return commands


def is_template(command: str) -> bool:
    """A command written with placeholders (NAME, DIR, EXP, METHOD.KEY, N, runs/...): a pattern, not a command."""
    return any(PLACEHOLDER.search(word) for word in shlex.split(command, comments=True)[2:])


SHOWN = [(path.relative_to(ROOT).as_posix(), c) for path in DOCUMENTS for c in documented_commands(path)]
COMMANDS = [(document, c) for document, c in SHOWN if not is_template(c)]


def test_the_documents_show_commands():
    """The extraction finds the commands of README.md and REPRODUCTION.md (a broken extraction would pass all)."""
    where = {doc for doc, _ in COMMANDS}
    assert {"README.md", "REPRODUCTION.md"} <= where
    assert sum(doc == "REPRODUCTION.md" for doc, _ in COMMANDS) >= 50
    assert len(SHOWN) - len(COMMANDS) < 10, [c for _, c in SHOWN if is_template(c)]  # templates stay the exception


def parse(command: str) -> tuple[str, dict[str, Any]]:
    """The subcommand and its parsed options, as the command line would see them (unknown options raise)."""
    words = shlex.split(command, comments=True)
    assert words[0] == "targetprop", command
    group = typer.main.get_command(app)
    if words[1].startswith("-"):  # an option of the command line itself (--version), not of a subcommand
        assert words[1] in {o for p in group.params for o in p.opts}, f"no option {words[1]!r}"
        return "", {}
    sub = group.commands.get(words[1])  # type: ignore[attr-defined]
    assert sub is not None, f"no subcommand {words[1]!r}"
    with sub.make_context(words[1], words[2:]) as context:
        return words[1], dict(context.params)


@pytest.mark.parametrize(("document", "command"), COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)])
def test_a_documented_command_names_what_exists(document: str, command: str) -> None:
    sub, p = parse(command)
    if p.get("resume") or p.get("report") or p.get("list_"):
        return  # reads a directory of the machine that made it
    if sub == "reproduce":
        if find_self_running(p["name"]) is not None:
            return
        experiment = get_experiment(p["name"])
        names = chosen_methods(experiment, p["methods"]) if p["methods"] else [m.name for m in experiment.methods]
        methods = [m for m in experiment.methods if m.name in names]
        assignments = p["set_"] or []
        check_assignments(experiment, methods, assignments)
        seeds = parse_seeds(p["seeds"]) if p["seeds"] else [0]
        for method in methods:
            method_config(
                experiment, method, scale=p["scale"] or "full", assignments=assignments, seeds=seeds, epochs=p["epochs"]
            )
    elif sub == "sweep":
        load_space(p["space"])
    elif sub in ("train", "compare"):
        rules = (
            [r.strip() for r in (p["rules"] or COMPARED_RULES).split(",")]
            if sub == "compare"
            else ([p["rule"]] if p["rule"] else None)
        )
        keys = ("data", "data_dir", "download", "arch", "activation", "output", "init", "epochs", "batch_size")
        common = _common(*(p[k] for k in keys), p["seeds"], p["device"], p["threads"])
        new_run_configs(rules, p["config"], p["set_"], common, diagnostics=p["diagnostics"] or None)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("document", [path.relative_to(ROOT).as_posix() for path in DOCUMENTS])
def test_every_link_of_a_document_reaches_a_file_or_heading_that_exists(document: str) -> None:
    """A figure, table or section a document points to is there: a results folder renamed, a heading reworded or
    an image not committed shows up here, not to a reader."""
    path = ROOT / document
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{document}: {broken}"
