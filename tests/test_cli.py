"""The `targetprop` command, run for real in a subprocess: what it prints, its exit status, what it leaves on disk.

Every command runs with its working directory in tmp_path, its runs under tmp_path/"runs", the shared datasets
through $TARGETPROP_DATA, stdin from /dev/null and stdout/stderr captured (no terminal). Each process pays for
importing torch (a few seconds here), so the cases are few and the trainings tiny (digits, 64-32-10).
"""

from __future__ import annotations

import gzip
import importlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from clitools import (
    CLI_TIMEOUT,
    DATA_DIR,
    MNIST_FILES,
    TINY,
    assert_empty_or_absent,
    assert_no_traceback,
    assert_same_run,
    cli_env,
    command,
    ctrl_c,
    ctrl_c_once,
    error_line,
    interruptible,
    only_child,
    read_jsonl,
    run_cli,
    run_files,
    run_main,
    show,
    table_rows,
    wait_until,
)

from targetprop import checkpoint
from targetprop.rules import RULES

# ---- train, compare, rules, help ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train --rule dtp` on digits, two seeds: the process and its run directory."""
    cwd = tmp_path_factory.mktemp("train")
    proc = run_cli("train", "--rule", "dtp", *TINY, "--seeds", "0-1", "--out", cwd / "runs", cwd=cwd)
    assert proc.returncode == 0, show(proc)
    return proc, only_child(cwd / "runs")


def test_train_prints_a_table_and_writes_a_complete_run_directory(trained):
    proc, run_dir = trained
    assert_no_traceback(proc)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock",
        "checkpoint.safetensors",
        "config.toml",
        "metrics.jsonl",
        "summary.json",
    ]
    assert f"run directory: {run_dir}" in proc.stderr, show(proc)

    # config.toml: the resolved configuration, the rule's hyper-parameters filled in
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["rule"] == "dtp"
    assert config["data"] == "digits"
    assert config["arch"] == "64-32-10"
    assert config["epochs"] == 2
    assert config["seeds"] == [0, 1]
    for key in ("batch_size", "activation", "output", "init", "device", "dtype", "shuffle"):
        assert key in config, key
    dtp_fields = RULES["dtp"].Config.model_fields
    assert isinstance(config.get("dtp"), dict), config
    for key, field in dtp_fields.items():
        if field.default is not None:  # TOML has no null: keys left unset mean "as the rule decides"
            assert config["dtp"].get(key) == field.default, key
    assert set(config["dtp"]) <= set(dtp_fields)
    assert not set(config) & {"bp", "tp"}

    # metrics.jsonl: epochs × replicas rows
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert sorted((r["epoch"], r["replica"], r["seed"]) for r in rows) == [(1, 0, 0), (1, 1, 1), (2, 0, 0), (2, 1, 1)]
    for r in rows:
        for key in ("train_error", "valid_error", "test_error"):
            assert 0 <= r[key] <= 100 and math.isfinite(r[key]), r
    last = {r["replica"]: r for r in rows if r["epoch"] == 2}
    assert last[0]["test_error"] != last[1]["test_error"] or last[0]["train_error"] != last[1]["train_error"]

    # summary.json agrees with the last epoch's rows, and the table with the summary
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rule"] == "dtp" and summary["epochs"] == 2 and summary["replicas"] == 2
    assert [p["seed"] for p in summary["per_replica"]] == [0, 1]
    for r, p in enumerate(summary["per_replica"]):
        for key in ("train_error", "valid_error", "test_error"):
            assert p[key] == last[r][key], key
    rows_shown = table_rows(proc.stdout)
    assert "test error %" in proc.stdout
    assert "dtp" in rows_shown, proc.stdout
    test = summary["test_error"]
    assert f"{test['mean']:.2f} ± {test['std']:.2f}" in rows_shown["dtp"], proc.stdout

    # the checkpoint: after the last epoch, with the configuration and every metrics row in its header
    state = checkpoint.load(run_dir / "checkpoint.safetensors")
    assert state["epoch"] == 2
    assert state["config"] == config
    assert state["history"] == rows


def test_resume_of_a_finished_run_says_so_and_changes_nothing(trained):
    _, run_dir = trained
    before = run_files(run_dir)
    proc = run_cli("train", "--resume", run_dir, cwd=run_dir.parent.parent)
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    assert "all 2 epochs already done" in proc.stderr, show(proc)
    assert "dtp" in table_rows(proc.stdout), proc.stdout
    assert run_files(run_dir) == before


def test_compare_prints_one_table_with_every_rule(tmp_path):
    proc = run_cli(
        "compare", "--rules", "dtp,bp,tp", *TINY, "--seeds", "0", "--out", tmp_path / "runs", "-q", cwd=tmp_path
    )
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    assert proc.stdout.count("test error %") == 1, proc.stdout
    assert "digits 64-32-10" in proc.stdout
    rows = table_rows(proc.stdout)
    assert set(rows) == {"dtp", "bp", "tp"}, proc.stdout
    parent = only_child(tmp_path / "runs")
    assert sorted(p.name for p in parent.iterdir()) == [".lock", "bp", "compare.toml", "dtp", "tp"]
    for rule in ("dtp", "bp", "tp"):
        summary = json.loads((parent / rule / "summary.json").read_text())
        assert summary["rule"] == rule
        test = summary["test_error"]
        assert f"{test['mean']:.2f} ± {test['std']:.2f}" in rows[rule]


def test_rules_lists_every_rule_with_its_hyper_parameters(tmp_path):
    proc = run_cli("rules", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    sections: dict[str, list[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        head = line.split(":", 1)[0]
        if not line.startswith(" ") and head in RULES:
            current = head
            sections[current] = []
        elif current and line.startswith("    ") and not line.startswith("     ") and " = " in line:
            sections[current].append(line.strip().split(" = ")[0])
    assert list(sections) == list(RULES), proc.stdout
    for name, keys in sections.items():
        assert keys == list(RULES[name].Config.model_fields), name
    assert "eta_hat = 0.3277" in proc.stdout
    assert "(where unset, train and compare use: activation 'hardsigmoid', output 'linear')" in proc.stdout  # ep


def test_help(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    for name in ("train", "compare", "rules"):
        assert f"  {name} " in proc.stdout, proc.stdout
    assert proc.stderr == ""


# ---- bad input: exit 2, one line on stderr, nothing written ------------------------------------------------


def _bad_toml(tmp: Path) -> list[str]:
    (tmp / "bad.toml").write_text("learning_rate = 0.1\n")
    return ["train", "--config", "bad.toml", *TINY]


def _empty_data_dir(tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return ["train", "--data", "mnist", "--data-dir", str(tmp / "empty"), "--arch", "784-32-10", "--epochs", "1"]


def _corrupt_mnist(tmp: Path) -> list[str]:
    assert all((DATA_DIR / "mnist" / name).is_file() for name in MNIST_FILES), f"MNIST is not in {DATA_DIR / 'mnist'}"
    folder = tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copyfile(DATA_DIR / "mnist" / name, folder / name)
    # a valid gzip file whose content is not the one the checksum expects
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(100)))
    return ["train", "--data", "mnist", "--data-dir", str(tmp / "data"), "--arch", "784-32-10", "--epochs", "1"]


def _not_a_run_dir(tmp: Path) -> list[str]:
    (tmp / "some-folder").mkdir()
    (tmp / "some-folder" / "notes.txt").write_text("not a run\n")
    return ["train", "--resume", "some-folder"]


def _a_file_to_resume(tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("not a run\n")
    return ["train", "--resume", "notes.txt"]


def _out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("")
    return ["train", *TINY, "--out", "afile"]


BAD_INPUTS = {
    "unknown rule": (lambda tmp: ["train", "--rule", "foo", *TINY], ["unknown rule 'foo'", "dtp"]),
    "threads not a number": (lambda tmp: ["train", *TINY, "--threads", "two"], ["--threads two: give auto or"]),
    "malformed architecture": (
        lambda tmp: ["train", "--arch", "64-x-10", "--epochs", "1"],
        ["malformed architecture", "64-x-10"],
    ),
    "architecture does not fit the data": (
        lambda tmp: ["train", "--arch", "100-10", "--epochs", "1"],
        ["100-10 does not fit digits", "64 inputs"],
    ),
    "rule that cannot train the architecture": (
        lambda tmp: ["train", "--rule", "tp", "--arch", "64-10", "--epochs", "1"],
        ["tp needs at least one hidden layer"],
    ),
    "unknown key in a config file": (_bad_toml, ["'learning_rate' does not exist"]),
    "unknown rule hyper-parameter": (
        lambda tmp: ["train", "--set", "dtp.etahat=1", *TINY],
        ["'etahat' does not exist", "eta_hat"],
    ),
    "another rule's hyper-parameter": (
        lambda tmp: ["train", "--rule", "dtp", "--set", "fa.lr=0.1", *TINY],
        ["--set fa.lr", "trains dtp, not fa", "dtp.lr"],
    ),
    "a hyper-parameter of a rule not compared": (
        lambda tmp: ["compare", "--rules", "dtp,bp", "--set", "fa.lr=0.1", *TINY],
        ["--set fa.lr", "trains dtp and bp, not fa"],
    ),
    "missing dataset files": (_empty_data_dir, ["not found", "train-images-idx3-ubyte.gz", "--download"]),
    "corrupt dataset file": (_corrupt_mnist, ["checksum", "md5", "train-labels-idx1-ubyte.gz"]),
    "bad seeds": (lambda tmp: ["train", "--seeds", "a-b", *TINY], ["seeds", "'a-b'"]),
    "missing config file": (lambda tmp: ["train", "--config", "missing.toml", *TINY], ["missing.toml", "not found"]),
    "cuda without cuda": (lambda tmp: ["train", "--device", "cuda", *TINY], ["'cuda'", "CUDA is not available"]),
    "resume a folder that is no run": (_not_a_run_dir, ["some-folder", "not a run directory"]),
    "resume a folder that does not exist": (lambda tmp: ["train", "--resume", "gone"], ["'gone' does not exist"]),
    "resume a file": (_a_file_to_resume, ["'notes.txt' is a file, not a run directory"]),
    "compare naming a seed twice": (
        lambda tmp: ["compare", "--rules", "dtp,bp", *TINY, "--seeds", "0-1,1"],
        ["--seeds names seed(s) [1] more than once"],
    ),
    "compare naming a rule twice": (
        lambda tmp: ["compare", "--rules", "dtp,bp,dtp", *TINY],
        ["--rules names dtp more than once"],
    ),
    "run name climbing out of --out": (lambda tmp: ["train", *TINY, "--name", "../../x"], ["plain folder name"]),
    "--out naming a file": (_out_is_a_file, ["'afile' is a file, not a folder"]),
    "seed too large for 64 bits": (lambda tmp: ["train", *TINY, "--seeds", "4611686018427387904"], ["out of range"]),
    "a billion seeds": (lambda tmp: ["train", *TINY, "--seeds", "0-999999999"], ["more than 4096 seeds"]),
    "empty validation split": (
        lambda tmp: ["train", *TINY, "--set", "n_valid=0"],
        ["n_valid", "greater than or equal to 1"],
    ),
    "meta device": (lambda tmp: ["train", *TINY, "--device", "meta"], ["unknown device 'meta'"]),
    "mps device": (lambda tmp: ["train", *TINY, "--device", "mps"], ["unknown device 'mps'"]),
    "negative learning rate": (lambda tmp: ["train", *TINY, "--set", "dtp.lr=-1"], ["lr", "greater than 0"]),
    "zero learning rate": (lambda tmp: ["train", *TINY, "--set", "dtp.lr=0"], ["lr", "greater than 0"]),
    "NaN learning rate": (lambda tmp: ["train", *TINY, "--set", "dtp.lr=nan"], ["lr", "finite number"]),
    "negative η̂": (lambda tmp: ["train", *TINY, "--set", "dtp.eta_hat=-1"], ["eta_hat", "greater than or equal to 0"]),
    "negative noise": (lambda tmp: ["train", *TINY, "--set", "dtp.noise=-1"], ["noise", "greater than or equal to 0"]),
    "epochs not a number": (lambda tmp: ["train", "--epochs", "abc"], ["'--epochs'", "valid integer", "--help"]),
    "unknown option": (lambda tmp: ["train", "--bogus"], ["No such option: --bogus"]),
    "network too large for memory": (
        lambda tmp: ["train", "--arch", "64-90000x900-10", "--epochs", "1"],
        ["GiB free", "use fewer seeds or smaller layers"],
    ),
    "compare with an architecture that does not fit": (
        lambda tmp: ["compare", "--rules", "dtp,bp", "--arch", "100-10", "--epochs", "1"],
        ["100-10 does not fit digits"],
    ),
    "compare with a rule that refuses the net, after one that takes it": (
        lambda tmp: [
            "compare",
            "--rules",
            "bp,ep",
            "--arch",
            "64-32-32-10",
            "--activation",
            "hardsigmoid",
            "--output",
            "linear",
            "--epochs",
            "1",
        ],
        ["ep.layer_lr has 2 values for 3 layers", "--arch 64-32-10"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    make_args, fragments = BAD_INPUTS[case]
    args = make_args(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = run_cli(*args, *([] if "--out" in args else ["--out", tmp_path / "runs"]), cwd=tmp_path)

    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    assert proc.stdout == "", show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), show(proc)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert_empty_or_absent(tmp_path / "runs")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "runs"))
    assert after == before  # nothing written anywhere else either


# ---- divergence ------------------------------------------------------------------------------------------------

# bp with a linear output (squared error) and plain SGD: lr 1e8 overflows in the first epoch; lr 0.3 survives
# epoch 1 and blows up in epoch 2 (checked over seeds 0-5).
DIVERGING = {
    "epoch 1": ("1e8", 1),
    "epoch 2": ("0.3", 2),
}


def test_a_replica_that_learned_then_fell_back_to_chance_is_flagged(tmp_path):
    # A ReLU net learns for 3 epochs, then a learning rate of 30 silences its units: the loss stays finite (no
    # divergence), the error returns to chance. The run says so, the summary names the seeds and the epoch, and
    # the table's seeds column counts them; their errors still count in the means.
    train = ["train", "--rule", "bp", "--activation", "relu", "--arch", "64-32-10", "--seeds", "0-1"]
    sgd = ["--set", "bp.optimizer=sgd", "--out", tmp_path / "runs", "--name", "run"]
    first = run_cli(*train, "--epochs", "3", "--set", "bp.lr=0.3", *sgd, cwd=tmp_path)
    assert first.returncode == 0, show(first)
    assert "collapsed" not in first.stdout + first.stderr, show(first)
    proc = run_cli("train", "--resume", tmp_path / "runs" / "run", "--epochs", "5", "--set", "bp.lr=30", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "warning: seed(s) [0, 1] fell back to chance at epoch 4" in proc.stderr, show(proc)
    assert "collapsed" in proc.stdout, show(proc)  # the table's seeds cell: "2 (2 collapsed)", however it wraps
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert summary["collapsed_seeds"] == [0, 1] and summary["diverged_seeds"] == []
    assert [p["collapsed_at"] for p in summary["per_replica"]] == [4, 4]
    assert 85 < summary["chance_error"] < 95  # 100 % less the share of digits' most frequent class
    assert summary["train_error"]["mean"] > 0.9 * summary["chance_error"]
    assert summary["test_error_at_best_valid"]["mean"] < 40  # the epochs before the collapse are kept
    rows = read_jsonl(tmp_path / "runs" / "run" / "metrics.jsonl")
    for r, replica in enumerate(summary["per_replica"]):  # the lowest test error of any epoch, before the collapse
        lowest = min(row["test_error"] for row in rows if row["replica"] == r)
        assert replica["lowest_test_error"] == lowest < 40 < replica["test_error"]


@pytest.mark.parametrize("case", list(DIVERGING))
def test_divergence_is_one_line_exit_2_naming_epoch_and_checkpoint(case, tmp_path):
    lr, epoch = DIVERGING[case]
    proc = run_cli(
        "train",
        "--rule",
        "bp",
        "--output",
        "linear",
        "--arch",
        "64-32-10",
        "--epochs",
        "4",
        "--seeds",
        "0",
        "--set",
        f"bp.lr={lr}",
        "--set",
        "bp.optimizer=sgd",
        "--out",
        tmp_path / "runs",
        "--name",
        "run",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    assert proc.stdout == "", show(proc)
    line = error_line(proc)
    assert f"diverged at epoch {epoch} " in line, line
    run_dir = tmp_path / "runs" / "run"
    if epoch == 1:
        assert "no checkpoint was written" in line, line
        assert_empty_or_absent(tmp_path / "runs")
    else:
        assert f"last good checkpoint: {run_dir / 'checkpoint.safetensors'} (epoch {epoch - 1})" in line, line
        assert f"`targetprop train --resume {run_dir} --set bp.lr=...`" in line, line
        assert sorted(p.name for p in run_dir.iterdir()) == [
            ".lock",
            "checkpoint.safetensors",
            "config.toml",
            "metrics.jsonl",
        ]
        state = checkpoint.load(run_dir / "checkpoint.safetensors")
        assert state["epoch"] == epoch - 1
        assert {r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")} == set(range(1, epoch))


# ---- resume after a kill ---------------------------------------------------------------------------------------

RESUME_EPOCHS = 12
RESUME_RUN = ["train", "--rule", "dtp", "--arch", "64-64-64-10", "--epochs", str(RESUME_EPOCHS), "--seeds", "0-1"]


def _start_resume_run(tmp_path: Path, **pipes) -> subprocess.Popen:
    """Start RESUME_RUN in the background (run directory tmp_path/runs/run)."""
    return subprocess.Popen(
        command(*RESUME_RUN, "--out", tmp_path / "runs", "--name", "run"),
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        preexec_fn=interruptible,
        **pipes,
    )


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    victim = _start_resume_run(tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(victim, lambda: len({r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")}) >= 2)
        still_running = victim.poll() is None
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert still_running, f"the run ended (exit {victim.returncode}) before it was killed; make it longer"
    assert victim.returncode == -signal.SIGKILL
    rows_at_kill = read_jsonl(run_dir / "metrics.jsonl")
    assert 2 * 2 <= len(rows_at_kill) < RESUME_EPOCHS * 2, "the kill must land mid-run"
    assert not (run_dir / "summary.json").exists()
    # A kill in the middle of appending an epoch's rows (with many replicas they take several writes) leaves a
    # torn last line: simulate one.
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "replica": 0, "seed": 0, "batch_lo')

    resumed = run_cli("train", "--resume", run_dir, "-q", cwd=tmp_path)
    assert resumed.returncode == 0, show(resumed)
    assert_no_traceback(resumed)
    assert "resuming" in resumed.stderr, show(resumed)

    reference = run_cli(*RESUME_RUN, "--out", tmp_path / "reference", "--name", "run", "-q", cwd=tmp_path)
    assert reference.returncode == 0, show(reference)
    assert_same_run(run_dir, tmp_path / "reference" / "run", RESUME_EPOCHS)


def test_ctrl_c_names_the_resume_command_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    args = [*RESUME_RUN, "--out", tmp_path / "runs", "--name", "run"]
    code, stderr = ctrl_c_once(args, tmp_path, (run_dir / "checkpoint.safetensors").exists)
    assert code == 130, stderr  # the shell's convention for Ctrl-C
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == f"error: interrupted; continue with `targetprop train --resume {run_dir}`", stderr
    resumed = run_cli("train", "--resume", run_dir, "-q", cwd=tmp_path)
    assert resumed.returncode == 0, show(resumed)
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == RESUME_EPOCHS * 2


def test_ctrl_c_in_compare_keeps_the_comparison_and_its_resume_finishes_every_rule(tmp_path):
    """Stopped in its first rule after a checkpoint, compare keeps its folder, with the rules not started yet: the
    message's command continues the first rule, trains the others and prints the table of all (a compare folder is
    removed only when nothing in it could be resumed)."""
    parent = tmp_path / "runs" / "cmp"
    args = ["compare", "--rules", "dtp,bp,fa", "--data", "digits", "--seeds", "0", "--epochs", "500"]
    code, stderr = ctrl_c_once([*args, "--out", tmp_path / "runs", "--name", "cmp"], tmp_path,
                               (parent / "dtp" / "checkpoint.safetensors").exists)  # fmt: skip
    assert code == 130, stderr
    command = f"targetprop compare --resume {parent}"
    assert stderr.strip().splitlines()[-1] == f"error: interrupted; continue with `{command}`"
    assert (parent / "dtp" / "checkpoint.safetensors").is_file(), stderr
    assert tomllib.loads((parent / "compare.toml").read_text()) == {"rules": ["dtp", "bp", "fa"]}
    looked = run_cli("inspect", parent, cwd=tmp_path)
    assert re.search(r"fa +│ no epoch finished", looked.stdout) and f"continue with `{command}`" in looked.stdout, show(
        looked
    )
    done = max([r["epoch"] for r in read_jsonl(parent / "dtp" / "metrics.jsonl")], default=0)
    resumed = run_cli(*command.split()[1:], "--epochs", done + 1, "-q", cwd=tmp_path)
    assert resumed.returncode == 0, show(resumed)
    assert f"{parent / 'dtp'}: resuming after epoch {done}, epochs = {done + 1}" in resumed.stderr, show(resumed)
    assert list(table_rows(resumed.stdout)) == ["dtp", "bp", "fa"], show(resumed)
    for rule in ("dtp", "bp", "fa"):
        assert max(r["epoch"] for r in read_jsonl(parent / rule / "metrics.jsonl")) == done + 1, rule
    refused = run_cli("compare", "--resume", parent, "--arch", "64-10", cwd=tmp_path)
    assert error_line(refused).startswith("error: --resume continues a comparison as it was configured; drop --arch")
    above = run_cli("compare", "--resume", parent.parent, cwd=tmp_path)  # the folder of comparisons: not one
    assert "holds no compare.toml and no rule's run directory" in error_line(above)
    one_run = run_cli("compare", "--resume", parent / "dtp", cwd=tmp_path)
    assert error_line(one_run) == (
        f"error: {parent / 'dtp'} is one run's directory, not a comparison's: continue it with "
        f"`targetprop train --resume {parent / 'dtp'}`"
    )


PROBE = """
import sys

import targetprop.__main__
import targetprop.cli


def interrupted_inside_exec():
    try:
        print("ready", flush=True)
        exec("while True: pass", {}, {})  # as dataclasses build their methods
    except KeyboardInterrupt:
        sys.exit(130)


targetprop.cli.main = interrupted_inside_exec
targetprop.__main__.main()
"""


def test_ctrl_c_inside_code_run_by_exec_still_exits_130_under_python_m(tmp_path):
    """CPython marks a KeyboardInterrupt that left a string ``exec`` as unhandled even when it was caught, and under
    ``python -m`` then ends the process by SIGINT (-2), whatever ``sys.exit`` said. Loading a library while
    Ctrl-C arrives hits this (dataclasses build their methods by ``exec``); the fault test caught it as a -2."""
    (tmp_path / "probe.py").write_text(PROBE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "probe"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )

    def inside_the_loop() -> bool:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.3)  # well inside the exec'd loop
        return True

    code, stderr = ctrl_c(proc, inside_the_loop)
    assert code == 130, (code, stderr)


def test_a_ctrl_c_that_a_library_turns_into_its_own_error_ends_as_an_interrupt(tmp_path, monkeypatch):
    """A C extension interrupted while it loads raises ImportError, not KeyboardInterrupt: the command still ends as
    interrupted (130, one line), not with a traceback."""

    def load_interrupted(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None
        raise AssertionError("SIGINT did not interrupt")

    monkeypatch.setattr(importlib.import_module("targetprop.trainer"), "load_dataset", load_interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # also where the suite runs under nohup
    try:
        code, _, stderr = run_main(["train", "--rule", "bp", *TINY, "--out", str(tmp_path), "-q"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted", stderr
    assert "Traceback" not in stderr


WEAKREF_PROBE = """
import importlib
import os
import re
import signal
import sys
import time
import weakref

import targetprop.__main__

train = importlib.import_module("targetprop.trainer")
load_dataset = train.load_dataset


class Thing:
    pass


def load_interrupted(*args, **kwargs):
    thing = Thing()
    ref = weakref.ref(thing, lambda _: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))
    del thing  # the callback runs here, and the interrupt lands inside it
    assert ref() is None
    time.sleep(5)
    print("the interrupt was lost", file=sys.stderr)
    return load_dataset(*args, **kwargs)  # the run goes on


train.load_dataset = load_interrupted
sys.argv = ["targetprop", *sys.argv[1:]]
targetprop.__main__.main()
"""


def test_a_ctrl_c_that_lands_in_a_weakref_callback_still_stops_the_command(tmp_path):
    """Python cannot raise from a weakref callback: a KeyboardInterrupt there is printed as "Exception ignored" and
    lost, and the run would go on. The command delivers it again and stops (130, one line)."""
    (tmp_path / "probe.py").write_text(WEAKREF_PROBE)
    proc = subprocess.run(
        [sys.executable, "probe.py", "train", "--rule", "bp", *TINY, "--out", "runs", "-q"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        preexec_fn=interruptible,
    )
    assert proc.returncode == 130, show(proc)
    assert proc.stderr.strip().splitlines() == ["error: interrupted"], show(proc)


def test_resume_refuses_options_it_would_ignore(trained):
    _, run_dir = trained
    proc = run_cli("train", "--resume", run_dir, "--rule", "bp", cwd=run_dir.parent)
    assert proc.returncode == 2
    assert "drop --rule" in error_line(proc)


def test_help_and_the_package_load_without_pytorch():
    """``targetprop --help``, a rule's name, a misspelt rule's error and the package's public names do not wait for
    PyTorch (seconds): it loads with the first name that needs it. ``targetprop.train`` stays the function once the trainer module is
    imported (a submodule of that name would replace it)."""
    probe = (
        "import sys, targetprop, targetprop.cli\n"
        "from targetprop.rules import RULES, get_rule\n"
        "assert 'torch' not in sys.modules, 'loaded by the import'\n"
        "assert 'dtp' in RULES and list(RULES)[0] == 'bp'\n"
        "assert 'torch' not in sys.modules, 'loaded by the registry'\n"
        "import targetprop.trainer\n"
        "from targetprop import train, Network\n"
        "assert callable(train) and train is targetprop.trainer.train and targetprop.train is train\n"
        "assert get_rule('DTP').__name__ == 'DTP' and 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for args, status, says in [
        (["--help"], 0, "reproduce"),
        (["train", "--rule", "nope"], 2, "unknown rule 'nope'"),
        (["compare", "--rules", "dtp,nope"], 2, "unknown rule 'nope'"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "targetprop", *args],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == status and says in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        imported = [ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
        assert "targetprop.cli" in imported and "torch" not in imported, f"{' '.join(args)} imported torch"


def test_version_is_the_installed_distributions():
    """``targetprop --version`` prints ``targetprop.__version__``, which is the installed distribution's version
    (pyproject.toml reads it from there); and exits 0 without a command."""
    from importlib.metadata import version

    import targetprop

    proc = subprocess.run(
        [sys.executable, "-m", "targetprop", "--version"], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"targetprop {version('targetprop')}" == f"targetprop {targetprop.__version__}"
