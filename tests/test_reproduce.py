"""`targetprop reproduce`: the DTP paper's experiments, their smoke versions end to end, the table and figure
(Deep Learning's xor experiment has its own tests in test_xor.py)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import json
import math
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from clitools import (
    CLI_TIMEOUT,
    DATA_DIR,
    assert_no_traceback,
    ctrl_c_once,
    error_line,
    every_file,
    read_jsonl,
    run_cli,
    show,
)

from targetprop import report as report_module
from targetprop.config import make_config
from targetprop.data import CIFAR10_SPEC, DataFile, load_dataset
from targetprop.errors import ConfigError, DataError, Interrupted
from targetprop.experiments import EXPERIMENTS, get_experiment, load_config_source, paper
from targetprop.reproduce import method_config, reproduce
from targetprop.trainer import train, training_subset

reproduce_module = importlib.import_module("targetprop.reproduce")  # the module (the package exports the function)

EXPERIMENT_NAMES = [e.name for e in EXPERIMENTS]
PAPER_NAMES = [e.name for e in paper.EXPERIMENTS]


def check_outputs(folder: Path, methods: list[str], epochs: int, seeds: int) -> list[dict[str, str]]:
    """table.md, table.csv and errors.png exist; every figure is a finite error in [0, 100]; the paper column is
    there; each method's metrics hold every evaluated epoch of every seed (every epoch, or every ``eval_every``-th
    and the last)."""
    for name in ("table.md", "table.csv", "errors.png"):
        assert (folder / name).is_file(), name
    assert (folder / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "table.md").read_text()
    assert "paper test error %" in markdown
    rows = list(csv.DictReader(io.StringIO((folder / "table.csv").read_text())))
    assert [r["method"] for r in rows] == methods
    for r in rows:
        assert "paper_test_error" in r
        for key in ("test_error_mean", "test_error_at_best_valid_mean", "train_error_mean"):
            value = float(r[key])
            assert math.isfinite(value) and 0.0 <= value <= 100.0, (key, r)
        assert math.isfinite(float(r["seconds_per_epoch"]))
        assert int(r["epochs"]) == epochs and int(r["seeds"]) == seeds
        assert f"| {r['method']} |" in markdown
        metrics = read_jsonl(folder / r["method"] / "metrics.jsonl")
        every = tomllib.loads((folder / r["method"] / "config.toml").read_text()).get("eval_every", 1)
        evaluated = [e for e in range(1, epochs + 1) if e % every == 0 or e == epochs]
        assert sorted((m["epoch"], m["replica"]) for m in metrics) == [(e, k) for e in evaluated for k in range(seeds)]
    # each seed's figures: seeds.csv and the second table of table.md give the seeds' own final test errors, the
    # ones the mean above is taken over
    per_seed = list(csv.DictReader(io.StringIO((folder / "seeds.csv").read_text())))
    for r in rows:
        replicas = json.loads((folder / r["method"] / "summary.json").read_text())["per_replica"]
        mine = [s for s in per_seed if s["method"] == r["method"]]
        assert [int(s["seed"]) for s in mine] == [p["seed"] for p in replicas]
        assert [float(s["test_error"]) for s in mine] == pytest.approx([p["test_error"] for p in replicas])
        assert statistics.fmean(float(s["test_error"]) for s in mine) == pytest.approx(float(r["test_error_mean"]))
        cells = " | ".join(f"{p['test_error']:.2f}" for p in replicas)
        assert f"\n| {r['method']} | {cells} |\n" in markdown.split("of each seed:")[1]
    assert len(per_seed) == len(rows) * seeds
    return rows


# ------------------------------------------------------------------------------------------------------------
# The registry


def test_list_names_every_experiment_its_methods_and_figures(tmp_path: Path) -> None:
    proc = run_cli("reproduce", "--list", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    for e in EXPERIMENTS:
        assert f"\n{e.name}" in "\n" + proc.stdout, e.name
        for m in e.methods:
            assert f"    {m.name}: {m.rule}" in proc.stdout
    for figure in ("1.94", "1.86", "3.15", "1.62", "50.37", "53.72", "1.54", "1.71", "1.35"):
        assert figure in proc.stdout
    assert proc.stdout.count("    figures: table.md, errors.png") == len(EXPERIMENTS)
    assert "filters.png" in proc.stdout  # the auto-encoder's
    assert "alias: mnist-paper" in proc.stdout
    assert "\nxor: XOR (Deep Learning, section 6.1)" in proc.stdout


def test_unknown_names_are_one_line_errors(tmp_path: Path) -> None:
    proc = run_cli("reproduce", "mnist-sigmoid", "--out", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 2 and "mnist-tanh" in error_line(proc)
    assert_no_traceback(proc)
    assert not (tmp_path / "runs").exists()


def test_mnist_paper_alias_and_preset_agree_with_mnist_tanh() -> None:
    e = get_experiment("mnist-paper")
    assert e.name == "mnist-tanh"
    preset = load_config_source("mnist-paper")  # `train --config mnist-paper` keeps working
    for m in e.methods[:2]:  # the authors' two (the third, DTP with the output target, has settings of its own)
        cfg = method_config(e, m)
        from_preset = make_config(preset, rule=m.rule)
        assert cfg.to_dict() == from_preset.to_dict()


def test_paper_figures_are_test_errors_and_cifar_accuracy_is_converted() -> None:
    cifar = get_experiment("cifar10-mlp")
    assert [cifar.paper_error(m) for m in cifar.methods] == [pytest.approx(49.63), pytest.approx(46.28)]
    stochastic = get_experiment("stochastic")
    assert [stochastic.paper_error(m) for m in stochastic.methods] == [1.54, 1.71]


@pytest.mark.parametrize("name", EXPERIMENT_NAMES)
def test_every_method_config_is_valid_at_both_scales(name: str) -> None:
    e = get_experiment(name)
    for m in e.methods:
        full = method_config(e, m)
        smoke = method_config(e, m, scale="smoke")
        assert full.n_train is None and smoke.epochs < full.epochs
        if name in PAPER_NAMES:  # the DTP authors' protocol, and a subset of MNIST or CIFAR-10 at smoke scale
            assert full.shuffle is False and full.rule_config().optimizer == "centered_rmsprop"
            assert smoke.n_train is not None and smoke.epochs <= 5
    discrete = get_experiment("discrete")
    assert method_config(discrete, discrete.method("dtp")).hidden_units == ["sign", "tanh"]
    assert method_config(discrete, discrete.method("bp-straight-through")).rule_config().straight_through


def test_n_train_trains_on_a_prefix_of_the_training_set(tmp_path: Path) -> None:
    cfg = make_config(data="digits", arch="64-16-10", epochs=1, n_train=200, threads=1, out=str(tmp_path))
    result = train(cfg, progress=False)
    assert result.summary["epochs"] == 1
    dataset = load_dataset("digits")
    small = training_subset(dataset, 200)
    assert len(small.train) == 200 and small.test is dataset.test
    with pytest.raises(ConfigError, match="n_train"):
        training_subset(dataset, len(dataset.train) + 1)


def test_eval_activation_changes_evaluation_only(tmp_path: Path) -> None:
    """A tanh net evaluated with sign units: training is that of the tanh net, the evaluation is not."""
    common = dict(data="digits", arch="64-16-16-10", epochs=1, rule="bp", threads=1, out=str(tmp_path))
    plain = train(make_config(**common, name="plain"), progress=False)
    swapped = train(make_config(**common, name="sign", eval_activation=["sign", "tanh"]), progress=False)
    a, b = plain.history[0], swapped.history[0]
    assert a["batch_loss"] == b["batch_loss"] and a["train_error"] != b["train_error"]
    assert [layer.unit.name for layer in swapped.net.layers[:-1]] == ["tanh", "tanh"]  # trained units are back
    with pytest.raises(ConfigError, match="eval_activation"):
        make_config(**common, eval_activation=["sign", "tanh", "tanh"])
    with pytest.raises(ConfigError, match="unknown hidden unit"):
        make_config(**common, eval_activation="signum")


# ------------------------------------------------------------------------------------------------------------
# Smoke versions, end to end


@pytest.mark.parametrize(
    "name",
    [
        "mnist-tanh",
        "mnist-relu",
        "discrete",
        "rules-mnist",
        pytest.param("stochastic", marks=pytest.mark.slow),
    ],
)
def test_mnist_experiment_smoke_runs_end_to_end(name: str, tmp_path: Path) -> None:
    proc = run_cli("reproduce", name, "--scale", "smoke", "--out", tmp_path, "--name", "r", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    e = get_experiment(name)
    rows = check_outputs(tmp_path / "r", [m.name for m in e.methods], epochs=3, seeds=2)
    for m, row in zip(e.methods, rows, strict=True):
        paper = e.paper_error(m)
        assert row["paper_test_error"] == ("" if paper is None else str(paper))
        # every method learns in the smoke version's three epochs, every seed: train and test error fall below the
        # first epoch's (the slowest, FA with weight decay on rules-mnist, from about 90 % to about 80 %)
        metrics = read_jsonl(tmp_path / "r" / m.name / "metrics.jsonl")
        for replica in range(2):
            mine = {r["epoch"]: r for r in metrics if r["replica"] == replica}
            first, last = mine[min(mine)], mine[max(mine)]
            for key in ("train_error", "test_error"):
                assert last[key] < first[key], (m.name, replica, key, mine)
    assert "| method |" in proc.stdout  # the table is printed


@pytest.mark.slow
def test_a_rerun_repeats_a_run_to_the_last_digit_and_the_rerun_check_says_where_a_folder_differs(
    tmp_path: Path,
) -> None:
    """What REPRODUCTION.md promises a reader who reruns a command: at the same thread count on the same machine,
    ``reproduce`` repeats a run's metrics exactly (DTP's noise and BP alike); ``benchmarks/rerun_check.py``, which
    reruns a results folder's first epochs, reports them identical, and reports a metric or a setting that
    differs from today's (here a folder edited by hand)."""
    proc = run_cli(
        "reproduce", "mnist-tanh", "--scale", "smoke", "--methods", "dtp,bp", "--seeds", "0", "--epochs", "2",
        "--threads", "1", "--out", tmp_path, "--name", "r", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "r", edited)
    rows = read_jsonl(edited / "dtp" / "metrics.jsonl")
    rows[0]["test_error"] += 0.5
    (edited / "dtp" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = edited / "bp" / "config.toml"
    bp = tomllib.loads(config.read_text())["bp"]
    config.write_text(config.read_text().replace(f"lr = {bp['lr']!r}", "lr = 0.5"))

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rerun_check.py"
    out = {}
    for name in ("r", "edited"):
        check = subprocess.run(
            [sys.executable, str(script), str(tmp_path / name), "--epochs", "2", "--data-dir", str(DATA_DIR)],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=tmp_path,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        out[name] = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in check.stdout.splitlines()[3:]}
    for method in ("dtp", "bp"):
        epochs, rows_compared, identical, err, loss, settings = (c.strip() for c in out["r"][method])
        assert (epochs, rows_compared, identical, err, loss) == ("2", "2", "yes", "0.000", "0.0e+00"), out["r"]
        assert settings.startswith("none"), settings
    assert [c.strip() for c in out["edited"]["dtp"][:4]] == ["2", "2", "no", "0.500"]
    assert out["edited"]["bp"][2].strip() == "yes"  # its metrics are untouched
    assert f"bp.lr: 0.5 → {bp['lr']!r}" in out["edited"]["bp"][5]

    # a folder made when a rule's default and a run default were others (here: run with --set, the --set then
    # dropped from its record): the plain check reruns today's defaults and names the settings; --as-recorded
    # gives the run back its recorded values and repeats it to the last digit
    proc = run_cli(
        "reproduce", "mnist-tanh", "--scale", "smoke", "--methods", "bp", "--seeds", "0", "--epochs", "2",
        "--threads", "1", "--set", "bp.lr=0.0123", "--set", "shuffle=true", "--out", tmp_path, "--name", "old", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    record = tmp_path / "old" / "experiment.toml"
    record.write_text(tomli_w.dumps({k: v for k, v in tomllib.loads(record.read_text()).items() if k != "set"}))
    for flag in ([], ["--as-recorded"]):
        check = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "old"), "--epochs", "2", "--data-dir", str(DATA_DIR), *flag],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=tmp_path,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        [row] = [line.split("|")[2:-1] for line in check.stdout.splitlines()[3:]]
        identical, settings = row[2].strip(), row[5].strip()
        if flag:
            assert identical == "yes" and settings == "none (restored from the record: shuffle=true, bp.lr=0.0123)", row
        else:
            assert identical == "no" and settings.startswith(f"bp.lr: 0.0123 → {bp['lr']!r}, shuffle: True → False"), (
                row
            )


def test_autoencoder_smoke_writes_reconstruction_table_classifier_and_filters(tmp_path: Path, monkeypatch) -> None:
    # the slowest smoke (about 110 s on one idle core)
    args = ["reproduce", "autoencoder", "--scale", "smoke", "--out", tmp_path, "--name", "r", "-q"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    rows = check_outputs(folder, ["dtp", "bp"], epochs=3, seeds=2)
    assert (folder / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "table.md").read_text()
    assert "final test reconstruction error" in markdown and "classifier test error %" in markdown
    assert "fine-tuned test error %" in markdown and "the same from random weights %" in markdown
    assert "RBF SVM test error %" in markdown and "SVM on the raw pixels %" in markdown
    assert "near-constant hidden units" in markdown
    for row in rows:
        metrics = read_jsonl(folder / row["method"] / "metrics.jsonl")
        first = [m["test_error"] for m in metrics if m["epoch"] == 1]
        last = [m["test_error"] for m in metrics if m["epoch"] == 3]
        assert all(b < a for a, b in zip(first, last, strict=True)), (row["method"], first, last)  # it learns
        # a linear classifier on 100 learned features of 5,000 images: far better than chance, far from perfect
        assert 2.0 < float(row["classifier_test_error_mean"]) < 40.0, row
        probe = json.loads((folder / row["method"] / "probe.json").read_text())
        assert [p["seed"] for p in probe["per_replica"]] == [0, 1] and probe["autoencoder_epochs"] == 3
        assert 0 <= float(row["near_constant_units_mean"]) <= probe["units"], row
        finetuned = json.loads((folder / row["method"] / "probe-finetune.json").read_text())
        assert finetuned["autoencoder_epochs"] == 3 and finetuned["settings"]["kind"] == "finetune"
        for key in ("finetune_test_error_mean", "finetune_control_test_error_mean"):
            assert 0.5 < float(row[key]) < 40.0, (key, row)  # two epochs of 5,000 images: it learns, not perfectly
        svm = json.loads((folder / row["method"] / "probe-svm.json").read_text())
        assert svm["settings"]["kind"] == "svm" and [p["seed"] for p in svm["per_replica"]] == [0, 1]
        assert all(len(p["candidates"]) == 2 for p in svm["per_replica"])  # γ 1 and 3, chosen on validation
        assert 0.5 < float(row["svm_test_error_mean"]) < 40.0, row
        assert 0.5 < float(row["svm_control_test_error_mean"]) < 40.0 and row["svm_control_test_error_std"] == "0.0"
    assert rows[0]["paper_test_error"] == "1.35"
    # resuming a finished experiment trains nothing and reads the classifiers back
    before = (folder / "dtp" / "probe.json").stat().st_mtime_ns
    proc = run_cli("reproduce", "--resume", folder, "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert (folder / "dtp" / "probe.json").stat().st_mtime_ns == before
    # Ctrl-C while a classifier is fit says how to continue and loses none of the finished ones; continuing fits the rest
    (folder / "dtp" / "probe-svm.json").unlink()
    fit = reproduce_module.run_probe

    def interrupted_svm(net, dataset, seeds, settings, *args):
        if settings.kind == "svm":
            raise KeyboardInterrupt
        return fit(net, dataset, seeds, settings, *args)

    monkeypatch.setattr(reproduce_module, "run_probe", interrupted_svm)
    with pytest.raises(Interrupted) as stop:
        reproduce_module.reproduce(None, resume=folder, data_dir=str(DATA_DIR), progress=False)
    assert stop.value.exit_code == 130 and f"continue with `targetprop reproduce --resume {folder}`" in str(stop.value)
    assert (folder / "dtp" / "probe.json").stat().st_mtime_ns == before and not (
        folder / "dtp" / "probe-svm.json"
    ).exists()
    # continuing fits dtp's classifiers on its code, and takes their controls (the SVM on the raw pixels, the net
    # from random weights) from bp's files instead of training them again; dtp's own figures come out the same
    finetuned = json.loads((folder / "dtp" / "probe-finetune.json").read_text())
    (folder / "dtp" / "probe-finetune.json").unlink()
    fitted = []

    def recorded(net, dataset, seeds, settings, progress, threads, control):
        fitted.append((settings.kind, control))
        return fit(net, dataset, seeds, settings, progress, threads, control)

    monkeypatch.setattr(reproduce_module, "run_probe", recorded)
    reproduce_module.reproduce(None, resume=folder, data_dir=str(DATA_DIR), progress=False)
    bp_finetune, bp_svm = (json.loads((folder / "bp" / f"probe-{k}.json").read_text()) for k in ("finetune", "svm"))
    assert fitted == [("finetune", bp_finetune["control"]), ("svm", bp_svm["control"])]
    assert json.loads((folder / "dtp" / "probe-svm.json").read_text())["control"] == bp_svm["control"]
    assert json.loads((folder / "dtp" / "probe-finetune.json").read_text()) == finetuned
    # a report reads them too
    proc = run_cli("reproduce", "--report", folder, "--name", "again", "--out", tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    again = list(csv.DictReader(io.StringIO((tmp_path / "again" / "table.csv").read_text())))
    assert [r["finetune_test_error_mean"] for r in again] == [r["finetune_test_error_mean"] for r in rows]
    # and pools them with another run's seeds: every classifier column is the mean over the seeds of both
    proc = run_cli(
        "reproduce", "autoencoder", "--scale", "smoke", "--methods", "dtp", "--seeds", "2", "--out", tmp_path,
        "--name", "seed2", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    proc = run_cli(
        "reproduce", "--report", folder, "--report", tmp_path / "seed2", "--out", tmp_path, "--name", "pooled",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    pooled, bp = list(csv.DictReader(io.StringIO((tmp_path / "pooled" / "table.csv").read_text())))
    assert (pooled["method"], pooled["seeds"], bp["method"], bp["seeds"]) == ("dtp", "3", "bp", "2")
    for file, key in (("probe.json", "classifier"), ("probe-finetune.json", "finetune"), ("probe-svm.json", "svm")):
        seeds = [
            p for f in (folder, tmp_path / "seed2") for p in json.loads((f / "dtp" / file).read_text())["per_replica"]
        ]
        assert [p["seed"] for p in seeds] == [0, 1, 2]
        errors = [p["test_error"] for p in seeds]
        assert float(pooled[f"{key}_test_error_mean"]) == pytest.approx(sum(errors) / 3), key
        assert float(pooled[f"{key}_test_error_std"]) == pytest.approx(float(np.std(errors, ddof=1))), key
    # a classifier trained with other settings in one of them is left out, and the table says so
    other = tmp_path / "seed2" / "dtp" / "probe-finetune.json"
    probe = json.loads(other.read_text())
    other.write_text(json.dumps({**probe, "settings": {**probe["settings"], "input_noise": 0.0}}))
    proc = run_cli("reproduce", "--report", tmp_path / "pooled", cwd=tmp_path)  # the pooled report again, in place
    assert proc.returncode == 0, show(proc)
    pooled = next(csv.DictReader(io.StringIO((tmp_path / "pooled" / "table.csv").read_text())))
    assert pooled["finetune_test_error_mean"] == "" and pooled["classifier_test_error_mean"] != ""  # bp's has one
    assert (
        "dtp: probe-finetune.json left out: not every run directory holds it"
        in (tmp_path / "pooled" / "table.md").read_text()
    )
    # one that cannot be read is left out with the reason
    other.write_text('{"per_replica": [')
    proc = run_cli("reproduce", "--report", tmp_path / "pooled", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert (
        f"dtp: probe-finetune.json left out: {other} cannot be read" in (tmp_path / "pooled" / "table.md").read_text()
    )


def _probe_file(settings: dict, seeds: list[int], errors: list[float], epochs: int = 3) -> dict:
    rows = [{"seed": s, "test_error": e} for s, e in zip(seeds, errors, strict=True)]
    control = [{"seed": s, "test_error": e + 1} for s, e in zip(seeds, errors, strict=True)]
    return {
        "autoencoder_epochs": epochs,
        "settings": settings,
        "per_replica": rows,
        "control": {"per_replica": control},
    }


def test_the_figure_draws_pooled_seeds_only_where_every_seed_was_evaluated() -> None:
    """Seeds pooled from a run evaluated every 20th epoch and one evaluated every 50th: the curve's points are the
    epochs both have (a mean over some seeds at one epoch and others at the next would zigzag); a diverged seed's
    non-finite values leave the mean and the band but not the epochs."""
    result = report_module.MethodResult(get_experiment("stochastic").method("dtp"), {"epochs": 200}, ())
    every_20 = [{"epoch": e, "replica": 0, "test_error": 10.0 - e / 100} for e in range(20, 201, 20)]
    every_50 = [{"epoch": e, "replica": r, "test_error": 20.0 - e / 100} for e in range(50, 201, 50) for r in (1, 2)]
    diverged = {"epoch": 200, "replica": 2, "test_error": math.nan}
    result.metrics_rows = lambda: every_20 + every_50[:-1] + [diverged]  # type: ignore[method-assign]
    epochs, mean, low, high = report_module.curves(result, "test_error")
    assert epochs == [100, 200]
    assert mean == pytest.approx([(9.0 + 19.0 + 19.0) / 3, (8.0 + 18.0) / 2])
    assert (low, high) == ([9.0, 8.0], [19.0, 18.0])
    # the table's settings line and the figure's title say so, counted from the metrics (not the config)
    assert report_module.evaluated_epochs([result]) == ", evaluated at 2 of 200 epochs"
    every_epoch = report_module.MethodResult(get_experiment("stochastic").method("dtp"), {"epochs": 3}, ())
    every_epoch.metrics_rows = lambda: [{"epoch": e, "replica": 0, "test_error": 1.0} for e in (1, 2, 3)]  # type: ignore[method-assign]
    assert report_module.evaluated_epochs([every_epoch]) == ""


def test_a_report_pools_a_classifier_only_where_every_run_trained_the_same_one() -> None:
    """Seeds of different classifiers (other settings), or of auto-encoders at other epochs, are not averaged into
    one figure: the column is left out (None) rather than mixing them."""
    finetune = {"kind": "finetune", "epochs": 40, "input_noise": 0.2}
    a, b = _probe_file(finetune, [0, 1], [1.0, 2.0]), _probe_file(finetune, [2], [6.0])
    pooled = report_module.pooled_probe([a, b], 3)
    assert [p["seed"] for p in pooled["per_replica"]] == [0, 1, 2]
    assert pooled["test_error"] == {"mean": 3.0, "std": pytest.approx(float(np.std([1.0, 2.0, 6.0], ddof=1)))}
    assert pooled["control"]["test_error"]["mean"] == 4.0
    assert report_module.pooled_probe([a], 3) is a
    assert report_module.pooled_probe([a, b], 30) is None  # trained on other epochs than those reported
    assert report_module.pooled_probe([a, None], 3) is None  # one run lacks it
    other = _probe_file({**finetune, "input_noise": 0.0}, [2], [6.0])
    assert report_module.pooled_probe([a, other], 3) is None


def test_resume_continues_each_method_and_skips_finished_ones(tmp_path: Path) -> None:
    args = ["--scale", "smoke", "--seeds", "0", "--methods", "dtp,bp", "-q"]
    proc = run_cli("reproduce", "mnist-paper", *args, "--epochs", "1", "--out", tmp_path, "--name", "r", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    check_outputs(folder, ["dtp", "bp"], epochs=1, seeds=1)
    first = read_jsonl(folder / "dtp" / "metrics.jsonl")
    proc = run_cli("reproduce", "--resume", folder, "--epochs", "2", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "resuming after epoch 1" in proc.stderr
    check_outputs(folder, ["dtp", "bp"], epochs=2, seeds=1)
    assert read_jsonl(folder / "dtp" / "metrics.jsonl")[:1] == first
    proc = run_cli("reproduce", "--resume", folder, "-q", cwd=tmp_path)
    assert proc.returncode == 0 and "all 2 epochs already done" in proc.stderr, show(proc)
    for method in ("dtp", "bp"):  # kept as results/ keeps them, without checkpoints: still done, not trained again
        (folder / method / "checkpoint.safetensors").unlink()
    kept = every_file(folder)
    proc = run_cli("reproduce", "--resume", folder, "-q", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr.count("all 2 epochs already done") == 2, show(proc)
    assert {k: v for k, v in every_file(folder).items() if k.endswith((".jsonl", ".json", ".toml"))} == {
        k: v for k, v in kept.items() if k.endswith((".jsonl", ".json", ".toml"))
    }
    # asked for more, it is refused from the files alone: before the data is looked for (none in an empty folder)
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = run_cli("reproduce", "--resume", folder, "--epochs", "3", "--data-dir", empty, cwd=tmp_path)
    assert error_line(proc) == (
        f"error: {folder / 'dtp'} finished 2 epochs and was kept without its checkpoint, so it cannot train on to 3: "
        "start a new run with --epochs 3"
    )
    empty.rmdir()
    proc = run_cli("reproduce", "--resume", folder, "--seeds", "0-3", cwd=tmp_path)
    assert proc.returncode == 2 and "keeps its seeds" in error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_methods_runs_some_of_an_experiment_and_a_resume_adds_more(tmp_path: Path) -> None:
    args = ["--scale", "smoke", "--seeds", "0", "--epochs", "1", "-q"]
    proc = run_cli(
        "reproduce", "discrete", "--methods", "dfa,bp", *args, "--out", tmp_path, "--name", "r", cwd=tmp_path
    )
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    check_outputs(folder, ["bp", "dfa"], epochs=1, seeds=1)  # in the experiment's order
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["bp", "dfa"]
    trained = {m: (folder / m / "metrics.jsonl").stat().st_mtime_ns for m in ("bp", "dfa")}
    proc = run_cli("reproduce", "--resume", folder, "--methods", "dfa,bp,dtp", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    check_outputs(folder, ["dtp", "bp", "dfa"], epochs=1, seeds=1)
    assert {m: (folder / m / "metrics.jsonl").stat().st_mtime_ns for m in ("bp", "dfa")} == trained  # read, not rerun
    proc = run_cli("reproduce", "--resume", folder, "-q", cwd=tmp_path)  # the directory keeps its methods
    assert proc.returncode == 0, show(proc)
    check_outputs(folder, ["dtp", "bp", "dfa"], epochs=1, seeds=1)
    for bad, words in (("dfa,sgd", ["discrete has no method 'sgd'", "bp-straight-through"]), (",", ["names none"])):
        proc = run_cli("reproduce", "discrete", "--methods", bad, *args, "--out", tmp_path, "--name", "x", cwd=tmp_path)
        assert proc.returncode == 2 and all(w in error_line(proc) for w in words), show(proc)
    proc = run_cli("reproduce", "early-inference", "--methods", "bp", "--out", tmp_path, "--name", "x", cwd=tmp_path)
    assert proc.returncode == 2 and "--methods does not apply" in error_line(proc), show(proc)
    proc = run_cli("reproduce", "discrete", "--scale", "smoke", "--seeds", "0-1,0", "--out", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and "names seed(s) [0] more than once" in error_line(proc), show(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_set_changes_one_method_or_every_method_and_a_resume_allows_only_resumable_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--set METHOD.KEY=VALUE`` reaches that method's rule only, a bare key every method whose rule has it; both
    are recorded (experiment.toml, config.toml, the table's notes) and a resumed directory keeps them, for a method
    added to it later too. A resume may change a learning rate, recorded as a change from the next epoch, but not the
    schedule; assignments no method takes, or that a method's rule refuses, are refused before anything is written."""
    args = ["--scale", "smoke", "--seeds", "0", "--methods", "dtp,bp", "--epochs", "1", "-q"]
    proc = run_cli("reproduce", "mnist-tanh", *args, "--set", "dtp.eta_hat=0.5", "--set", "lr_decay=10", "--set", "shuffle=true",
                   "--out", tmp_path, "--name", "r", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    check_outputs(folder, ["dtp", "bp"], epochs=1, seeds=1)
    dtp, bp = (tomllib.loads((folder / m / "config.toml").read_text()) for m in ("dtp", "bp"))
    assert dtp["dtp"]["eta_hat"] == 0.5 and dtp["dtp"]["lr_decay"] == 10 and bp["bp"]["lr_decay"] == 10
    assert "eta_hat" not in bp["bp"] and dtp["shuffle"] is bp["shuffle"] is True  # the experiment's order is fixed
    given = ["dtp.eta_hat=0.5", "lr_decay=10", "shuffle=true"]
    assert tomllib.loads((folder / "experiment.toml").read_text())["set"] == given
    notes = (folder / "table.md").read_text()
    assert f"set on the command line (over the experiment's settings of the time): {', '.join(given)}" in notes
    proc = run_cli("reproduce", "--report", folder, cwd=tmp_path)  # a report of the folder keeps the note
    assert proc.returncode == 0, show(proc)
    assert (
        f"set on the command line (over the experiment's settings of the time): {', '.join(given)}"
        in (folder / "table.md").read_text()
    )
    titled: list[list[str]] = []  # and errors.png's title says them
    monkeypatch.setattr(
        report_module, "plot_errors", lambda exp, res, path, changes=(), evaluated="": titled.append(list(changes))
    )
    report_module.report([folder])
    assert titled == [given]

    proc = run_cli("reproduce", "--resume", folder, "--epochs", "2", "--set", "dtp.lr=0.002", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    rows = read_jsonl(folder / "dtp" / "metrics.jsonl")
    assert [r.get("changed") for r in rows] == [None, {"dtp.lr": 0.002, "epochs": 2}], rows
    assert tomllib.loads((folder / "dtp" / "config.toml").read_text())["dtp"]["eta_hat"] == 0.5  # kept
    assert [r.get("changed") for r in read_jsonl(folder / "bp" / "metrics.jsonl")] == [None, {"epochs": 2}]
    proc = run_cli("reproduce", "--resume", folder, "--methods", "dtp,bp,dtp-output-target", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)  # a method added later is configured with the directory's changes
    added = tomllib.loads((folder / "dtp-output-target" / "config.toml").read_text())
    own = get_experiment("mnist-tanh").method("dtp-output-target").params["eta_hat"]  # dtp.eta_hat is another method's
    assert added["shuffle"] is True and added["dtp"]["lr_decay"] == 10 and added["dtp"]["eta_hat"] == own != 0.5
    before = every_file(folder)
    proc = run_cli("reproduce", "--resume", folder, "--epochs", "3", "--set", "dtp.schedule=parallel", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot change when a run resumes" in error_line(proc), show(proc)
    assert every_file(folder) == before  # experiment.toml does not record the refused change, nothing trained
    proc = run_cli("reproduce", "--resume", folder, "--set", "arch=784-10", cwd=tmp_path)  # refused for what it is,
    assert proc.returncode == 2 and "--set arch cannot change when a run resumes" in error_line(proc), show(proc)
    proc = run_cli("reproduce", "--resume", folder, "--set", "bp.lr=0.001", cwd=tmp_path)  # not its value; and a
    assert proc.returncode == 2, show(proc)  # change to a method that has trained all its epochs would apply to nothing
    assert f"all 2 epochs of {folder / 'bp'} are done, so nothing would train with bp.lr" in error_line(proc)
    assert every_file(folder) == before

    for bad, words in (
        ("sgd.lr=1", ["mnist-tanh has no method 'sgd'", "dtp-output-target"]),
        ("dtp-output-target.lr=1", ["method 'dtp-output-target' is not run", "dtp, bp"]),
        ("nonsense=1", ["no key 'nonsense'"]),
        ("dtp.eta_hat=-1", ["eta_hat"]),
    ):
        proc = run_cli("reproduce", "mnist-tanh", *args, "--set", bad, "--out", tmp_path, "--name", "x", cwd=tmp_path)
        assert proc.returncode == 2 and all(w in error_line(proc) for w in words), show(proc)
    # what only a later method's rule refuses (tp needs a hidden layer; bp, fa and dfa run before it) stops the
    # command before any method trains, and writes nothing
    proc = run_cli(
        "reproduce", "xor", "--seeds", "0", "--set", "arch=2-1", "--out", tmp_path, "--name", "x", cwd=tmp_path
    )
    assert proc.returncode == 2 and "tp needs at least one hidden layer" in error_line(proc), show(proc)
    assert "epoch" not in proc.stdout + proc.stderr, show(proc)
    proc = run_cli("reproduce", "early-inference", "--set", "beta=1", "--out", tmp_path, "--name", "x", cwd=tmp_path)
    assert proc.returncode == 2 and "--set does not apply" in error_line(proc), show(proc)
    proc = run_cli("reproduce", "--report", folder, "--set", "lr=1", cwd=tmp_path)
    assert proc.returncode == 2 and "drop --set" in error_line(proc), show(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_resumed_reproduce_reads_its_data_from_the_folder_it_was_run_with(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TARGETPROP_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no default data folder to fall back on
    args = dict(scale="smoke", seeds="0", methods="bp", out=tmp_path, run_name="r", progress=False)
    reproduce("discrete", epochs=1, data_dir=str(DATA_DIR), **args)
    _, folder, results = reproduce(None, resume=tmp_path / "r", epochs=2, progress=False)  # no data_dir given
    assert results[0].summary["epochs"] == 2
    with pytest.raises(DataError, match=r"not found in .*elsewhere"):  # another folder, when given, is used
        reproduce(None, resume=folder, epochs=3, data_dir=str(tmp_path / "elsewhere"), progress=False)


def test_an_interrupted_reproduce_names_the_command_that_continues_it(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    methods = ["bp", "bp-tanh-eval-sign"]
    args = ["reproduce", "discrete", "--scale", "smoke", "--seeds", "0", "--methods", ",".join(methods), "-q"]
    ready = (folder / "bp" / "checkpoint.safetensors").exists
    code, stderr = ctrl_c_once([*args, "--epochs", "500", "--out", tmp_path, "--name", "r"], tmp_path, ready)
    assert code == 130 and "Traceback" not in stderr, stderr
    assert (
        stderr.strip().splitlines()[-1] == f"error: interrupted; continue with `targetprop reproduce --resume {folder}`"
    )
    done = max(row["epoch"] for row in read_jsonl(folder / "bp" / "metrics.jsonl"))
    looked = run_cli("inspect", folder, cwd=tmp_path)  # the method it had not reached is listed, not left out
    assert looked.returncode == 0, show(looked)
    assert re.search(rf"bp +│ stopped after epoch {done} of 500 ", looked.stdout), show(looked)
    assert re.search(r"bp-tanh-eval-sign +│ not started ", looked.stdout), show(looked)
    assert f"continue with `targetprop reproduce --resume {folder}`" in looked.stdout
    resumed = run_cli("reproduce", "--resume", folder, "--epochs", str(done + 1), "-q", cwd=tmp_path)  # as told
    assert resumed.returncode == 0, show(resumed)
    check_outputs(folder, methods, epochs=done + 1, seeds=1)


def test_report_tables_a_run_made_on_a_device_this_machine_lacks(tmp_path: Path) -> None:
    """A table trains nothing: a run directory made on a GPU is tabled on a machine without one (its stored
    configs name a device that cannot be trained on here), with the same numbers."""
    proc = run_cli("reproduce", "xor", "--scale", "smoke", "--methods", "bp", "-q", "--name", "gpu", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "runs" / "gpu"
    table = (folder / "table.csv").read_text()
    config = folder / "bp" / "config.toml"
    text = config.read_text()
    assert 'device = "cpu"' in text
    config.write_text(text.replace('device = "cpu"', 'device = "cuda:99"'))
    with pytest.raises(ConfigError, match="cuda:99"):  # what a run with that config would meet here
        make_config(tomllib.loads((folder / "bp" / "config.toml").read_text()))
    proc = run_cli("reproduce", "--report", folder, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert (folder / "table.csv").read_text() == table


def test_report_tables_a_stopped_run_and_pools_seeds_of_several_runs(tmp_path: Path) -> None:
    """--report trains nothing: a stopped run is tabled at its last finished epoch, and two runs' seeds pooled
    give the mean over both at the last epoch every seed has finished."""
    args = ["reproduce", "discrete", "--scale", "smoke", "--methods", "bp", "-q", "--out", tmp_path]
    proc = run_cli(*args, "--seeds", "0", "--epochs", "2", "--name", "a", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    stopped = tmp_path / "b"
    ready = (stopped / "bp" / "checkpoint.safetensors").exists
    code, stderr = ctrl_c_once([*args, "--seeds", "1", "--epochs", "500", "--name", "b"], tmp_path, ready)
    assert code == 130, stderr
    metrics = stopped / "bp" / "metrics.jsonl"
    rows_b, before = read_jsonl(metrics), metrics.stat().st_mtime_ns
    done = max(r["epoch"] for r in rows_b)

    proc = run_cli("reproduce", "--report", stopped, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    (row,) = list(csv.DictReader(io.StringIO((stopped / "table.csv").read_text())))
    assert (int(row["epochs"]), int(row["planned_epochs"]), int(row["seeds"])) == (done, 500, 1)
    assert float(row["test_error_mean"]) == pytest.approx(rows_b[-1]["test_error"])
    assert f"bp: epoch {done} of 500" in (stopped / "table.md").read_text() and (stopped / "errors.png").is_file()
    assert metrics.stat().st_mtime_ns == before and read_jsonl(metrics) == rows_b  # nothing trained
    looked = run_cli("inspect", stopped, cwd=tmp_path)  # what it was asked, where each method stands, what next
    assert looked.returncode == 0, show(looked)
    assert "asked: experiment discrete; scale smoke; seeds 1; epochs 500; methods bp\n" in looked.stdout
    assert re.search(
        rf"bp +│ stopped after epoch {done} of 500 +│ epoch {done} +│ {rows_b[-1]['test_error']:.2f} ", looked.stdout
    )
    assert f"continue with `targetprop reproduce --resume {stopped}`" in looked.stdout, show(looked)
    looked = run_cli(
        "inspect", stopped / "bp", cwd=tmp_path
    )  # a method's folder names its reproduce directory's resume
    assert (
        f"stopped after epoch {done} of 500; continue with `targetprop reproduce --resume {stopped}`" in looked.stdout
    )

    proc = run_cli(
        "reproduce", "--report", tmp_path / "a", "--report", stopped, "--out", tmp_path, "--name", "ab", cwd=tmp_path
    )
    assert proc.returncode == 0, show(proc)
    (row,) = list(csv.DictReader(io.StringIO((tmp_path / "ab" / "table.csv").read_text())))
    common = min(done, 2)
    at = [r["test_error"] for r in read_jsonl(tmp_path / "a" / "bp" / "metrics.jsonl") + rows_b if r["epoch"] == common]
    assert (int(row["epochs"]), int(row["seeds"])) == (common, 2)
    assert float(row["test_error_mean"]) == pytest.approx(sum(at) / 2)
    assert "seeds pooled from" in (tmp_path / "ab" / "table.md").read_text()
    assert (tmp_path / "ab" / "report.toml").is_file()
    looked = run_cli("inspect", tmp_path / "ab", cwd=tmp_path)  # a pooled report: the folders it was made of
    assert looked.returncode == 0, show(looked)
    assert f"pooled report: {tmp_path / 'ab'}\n" in looked.stdout
    assert f"from {tmp_path / 'a'}\nasked: experiment discrete; scale smoke; seeds 0; epochs 2" in looked.stdout
    assert f"from {stopped}\n" in looked.stdout and "finished: 2 epochs" in looked.stdout
    table = (tmp_path / "ab" / "table.csv").read_text()
    proc = run_cli("reproduce", "--report", tmp_path / "ab", cwd=tmp_path)  # a pooled report, again, in place
    assert proc.returncode == 0, show(proc)
    assert (tmp_path / "ab" / "table.csv").read_text() == table
    kept = tmp_path / "kept"  # results kept without the run folders: the sources copied into the report's folder
    shutil.copytree(tmp_path / "ab", kept)
    for source in ("a", "b"):
        shutil.copytree(tmp_path / source, kept / source)
    for source in ("a", "b"):  # gone from where report.toml recorded them
        shutil.move(tmp_path / source, tmp_path / f"{source}-moved")
    proc = run_cli("reproduce", "--report", kept, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert (kept / "table.csv").read_text() == table
    assert f"seeds pooled from: {kept / 'a'} (seeds 0); {kept / 'b'} (seeds 1)" in (kept / "table.md").read_text()
    shutil.rmtree(kept / "a")
    proc = run_cli("reproduce", "--report", kept, cwd=tmp_path)
    assert proc.returncode == 2 and "neither there nor copied into" in error_line(proc), show(proc)
    shutil.rmtree(kept)
    for source in ("a", "b"):
        shutil.move(tmp_path / f"{source}-moved", tmp_path / source)

    # the sources are recorded relative to the report's folder: read from any directory, and moved with it
    (tmp_path / "cwd").mkdir()
    proc = run_cli("reproduce", "--report", "a", "--report", "b", "--out", "results", "--name", "ab", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert tomllib.loads((tmp_path / "results" / "ab" / "report.toml").read_text())["sources"] == ["../../a", "../../b"]
    proc = run_cli("reproduce", "--report", tmp_path / "results" / "ab", cwd=tmp_path / "cwd")
    assert proc.returncode == 0 and (tmp_path / "results" / "ab" / "table.csv").read_text() == table, show(proc)
    # as reports written before 2026-12-07 recorded them: relative to the directory the report was made in
    listing = tomllib.loads((tmp_path / "results" / "ab" / "report.toml").read_text())
    listing["sources"] = ["a", "b"]
    (tmp_path / "results" / "ab" / "report.toml").write_text(tomli_w.dumps(listing))
    proc = run_cli("inspect", tmp_path / "results" / "ab", cwd=tmp_path / "cwd")
    assert proc.returncode == 0 and "problem" not in proc.stdout and f"from {tmp_path / 'b'}\n" in proc.stdout, show(
        proc
    )
    proc = run_cli("reproduce", "--report", tmp_path / "results" / "ab", cwd=tmp_path / "cwd")
    assert proc.returncode == 0 and (tmp_path / "results" / "ab" / "table.csv").read_text() == table, show(proc)
    shutil.rmtree(tmp_path / "cwd")
    shutil.rmtree(tmp_path / "results")

    for bad, words in (
        (["--report", tmp_path / "a", "--report", tmp_path / "a", "--name", "x"], ["seed(s) [0]", "more than one"]),
        (["--report", tmp_path / "a", "--epochs", "3"], ["trains nothing", "--epochs"]),
        (["--report", tmp_path / "nothing"], ["not a reproduce directory"]),
    ):
        proc = run_cli("reproduce", *bad, "--out", tmp_path, cwd=tmp_path)
        assert proc.returncode == 2 and all(w in error_line(proc) for w in words), show(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "ab", "b"]
    looked = run_cli("inspect", tmp_path, cwd=tmp_path)  # the folder they are in: one row each
    assert looked.returncode == 0, show(looked)
    assert re.search(r"a +│ reproduce +│ bp finished: 2 epochs", looked.stdout), show(looked)
    assert re.search(r"ab +│ pooled report +│ pooled from a, b", looked.stdout), show(looked)
    assert re.search(rf"b +│ reproduce +│ bp stopped after epoch {done} of 500", looked.stdout), show(looked)


def test_a_damaged_or_mismatched_request_is_one_line(tmp_path: Path) -> None:
    """experiment.toml missing a key or holding a wrong type, or a folder of another experiment named to resume:
    one line naming the file and the problem, for --resume and --report alike, and nothing written."""
    args = ["reproduce", "discrete", "--scale", "smoke", "--methods", "bp", "--seeds", "0", "--epochs", "1", "-q"]
    proc = run_cli(*args, "--out", tmp_path, "--name", "r", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    request = (folder / "experiment.toml").read_text()
    for name in ("early-inference", "mnist-tanh"):
        proc = run_cli("reproduce", name, "--resume", folder, cwd=tmp_path)
        assert proc.returncode == 2 and f"holds experiment 'discrete', not '{name}'" in error_line(proc), show(proc)
    for damaged, words in (
        (request.replace('scale = "smoke"\n', ""), ["scale: Field required"]),
        (request.replace("seeds = [", 'seeds = ["a", '), ["seeds.0", "valid integer"]),
    ):
        (folder / "experiment.toml").write_text(damaged)
        before = every_file(folder)
        for command_line in (["--resume", folder], ["--report", folder]):
            proc = run_cli("reproduce", *command_line, cwd=tmp_path)
            assert proc.returncode == 2, show(proc)
            assert_no_traceback(proc)
            line = error_line(proc)
            assert f"{folder / 'experiment.toml'} is not a reproduce request" in line and all(w in line for w in words)
            assert every_file(folder) == before


def test_report_says_when_it_cannot_tell_collapsed_seeds(tmp_path: Path, monkeypatch) -> None:
    """A run kept without its summary and checkpoint, on a machine without its data: the chance error is unknown,
    and the table says collapsed seeds are not flagged instead of flagging none as if none had collapsed."""
    from targetprop.report import report

    proc = run_cli("reproduce", "discrete", "--scale", "smoke", "--methods", "bp", "--seeds", "0", "--epochs", "2",
                   "-q", "--out", tmp_path, "--name", "r", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    run = tmp_path / "r" / "bp"
    report([tmp_path / "r"])
    assert "not flagged" not in (tmp_path / "r" / "table.md").read_text()
    (run / "summary.json").unlink()
    (run / "checkpoint.safetensors").unlink()
    config = (run / "config.toml").read_text()
    (run / "config.toml").write_text(re.sub(r'data_dir = ".*"', f'data_dir = "{tmp_path / "gone"}"', config))
    monkeypatch.delenv("TARGETPROP_DATA", raising=False)
    report([tmp_path / "r"])
    notes = (tmp_path / "r" / "table.md").read_text()
    assert "bp: its chance error is unknown" in notes and "are not flagged" in notes, notes


def test_report_tables_only_the_methods_asked_for_and_a_pooled_report_keeps_them(tmp_path: Path) -> None:
    """--report --methods leaves the other methods out of the table (and says so); a pooled report records them,
    so writing it again in place tables the same methods, until --methods names others."""
    args = ["reproduce", "discrete", "--scale", "smoke", "--methods", "bp,bp-straight-through", "--epochs", "1", "-q"]
    for seed, name in ((0, "a"), (1, "b")):
        proc = run_cli(*args, "--seeds", seed, "--out", tmp_path, "--name", name, cwd=tmp_path)
        assert proc.returncode == 0, show(proc)

    def tabled(folder: Path) -> list[str]:
        return [row["method"] for row in csv.DictReader(io.StringIO((folder / "table.csv").read_text()))]

    pooled = tmp_path / "ab"
    proc = run_cli("reproduce", "--report", tmp_path / "a", "--report", tmp_path / "b", "--methods",
                   "bp-straight-through", "--out", tmp_path, "--name", "ab", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    assert tabled(pooled) == ["bp-straight-through"]
    assert "only bp-straight-through tabled (--methods); left out: bp" in (pooled / "table.md").read_text()
    assert tomllib.loads((pooled / "report.toml").read_text())["methods"] == ["bp-straight-through"]
    seeds = list(csv.DictReader(io.StringIO((pooled / "seeds.csv").read_text())))
    assert {(r["method"], r["seed"]) for r in seeds} == {("bp-straight-through", "0"), ("bp-straight-through", "1")}
    table = (pooled / "table.csv").read_text()
    proc = run_cli("reproduce", "--report", pooled, cwd=tmp_path)  # again, in place: the same methods
    assert proc.returncode == 0, show(proc)
    assert (pooled / "table.csv").read_text() == table

    proc = run_cli("reproduce", "--report", pooled, "--methods", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "discrete has no method 'nope'" in error_line(proc), show(proc)
    assert (pooled / "table.csv").read_text() == table  # nothing written
    proc = run_cli("reproduce", "--report", pooled, "--methods", "bp,bp-straight-through", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert tabled(pooled) == ["bp-straight-through", "bp"]
    assert "left out" not in (pooled / "table.md").read_text()
    assert tomllib.loads((pooled / "report.toml").read_text())["methods"] == ["bp-straight-through", "bp"]

    proc = run_cli("reproduce", "--report", tmp_path / "a", "--methods", "bp", cwd=tmp_path)  # one folder, in place
    assert proc.returncode == 0, show(proc)
    assert tabled(tmp_path / "a") == ["bp"]
    proc = run_cli("reproduce", "--report", tmp_path / "a", "--methods", "dtp", cwd=tmp_path)  # not run there
    assert proc.returncode == 2 and "no method of dtp has finished an epoch" in error_line(proc), show(proc)

    # --out (or --name) with one folder writes a new folder naming it, and leaves the folder's own table alone
    kept = (tmp_path / "a" / "table.csv").read_text()
    proc = run_cli("reproduce", "--report", tmp_path / "a", "--out", tmp_path / "elsewhere", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    (made,) = (tmp_path / "elsewhere").iterdir()
    assert tabled(made) == ["bp-straight-through", "bp"] and (tmp_path / "a" / "table.csv").read_text() == kept
    assert tomllib.loads((made / "report.toml").read_text())["sources"] == ["../../a"]
    proc = run_cli("reproduce", "--report", pooled, "--out", tmp_path, "--name", "copy", cwd=tmp_path)  # a pooled one
    assert proc.returncode == 0, show(proc)
    assert (tmp_path / "copy" / "table.csv").read_text() == (pooled / "table.csv").read_text()

    # a folder kept as its table alone (its methods' run directories not kept): said, not mistaken for "no epoch yet"
    alone = tmp_path / "alone"
    shutil.copytree(tmp_path / "a", alone)
    for method in ("bp", "bp-straight-through"):
        shutil.rmtree(alone / method)
    looked = run_cli("inspect", alone, cwd=tmp_path)
    assert looked.returncode == 0, show(looked)
    said = " ".join(looked.stdout.split())
    assert "no method's run directory here" in said and "its runs were not kept, so it cannot be written" in said
    proc = run_cli("reproduce", "--report", alone, cwd=tmp_path)
    assert proc.returncode == 2 and "no method's run directory here" in error_line(proc), show(proc)


def test_report_says_which_settings_a_run_was_trained_with_that_the_experiment_has_since_changed(
    tmp_path: Path,
) -> None:
    """The table's notes describe the experiment as it is now; a run trained before its defaults moved (after a
    search) gets a note with the value it was trained with, and a run of the current settings gets none."""
    from targetprop.report import report

    proc = run_cli("reproduce", "discrete", "--scale", "smoke", "--methods", "bp", "--seeds", "0", "--epochs", "1",
                   "-q", "--out", tmp_path, "--name", "r", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    report([folder])
    assert "was trained with" not in (folder / "table.md").read_text()

    now = method_config(get_experiment("discrete"), get_experiment("discrete").method("bp"), scale="smoke")
    config = folder / "bp" / "config.toml"
    config.write_text(config.read_text().replace(f"lr = {now.rule_config().lr!r}\n", "lr = 0.125\n", 1))
    report([folder])
    notes = (folder / "table.md").read_text()
    assert f"bp: {folder / 'bp'} was trained with lr = 0.125 (now {now.rule_config().lr!r})" in notes, notes


def tiny_cifar(folder: Path, per_batch: int) -> tuple[Path, object]:
    """A CIFAR-10 archive in the official python-batch format (five training batches and a test batch of
    ``per_batch`` random images each) and the file spec with its checksums."""
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    raw = {}
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, size=per_batch).tolist(),
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        raw[name] = pickle.dumps(batch, protocol=2)
    (folder / "cifar10").mkdir(parents=True)
    archive = folder / "cifar10" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, mode="w:gz", compresslevel=1) as tar:
        for name, data in raw.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    def md5(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    spec = dataclasses.replace(
        CIFAR10_SPEC,
        archive=DataFile(archive.name, md5(archive.read_bytes())),
        train_batches=tuple(DataFile(name, md5(raw[name])) for name in names[:5]),
        test_batch=DataFile("test_batch", md5(raw["test_batch"])),
    )
    return folder, spec


def test_cifar10_mlp_smoke_runs_on_a_tiny_cifar_archive(tmp_path: Path) -> None:
    e = get_experiment("cifar10-mlp")
    n_train = method_config(e, e.methods[0], scale="smoke").n_train
    data_dir, spec = tiny_cifar(tmp_path / "data", per_batch=(n_train + 200) // 5)
    dataset = load_dataset("cifar10", data_dir, n_valid=200, spec=spec)
    assert len(dataset.train) == n_train
    experiment, folder, results = reproduce(
        "cifar10-mlp",
        scale="smoke",
        seeds="0-1",
        threads=1,
        out=tmp_path / "runs",
        run_name="r",
        dataset=dataset,
        progress=False,
    )
    assert experiment is e and folder == tmp_path / "runs" / "r" and len(results) == 2
    rows = check_outputs(folder, ["dtp", "bp"], epochs=3, seeds=2)
    assert [float(r["paper_test_error"]) for r in rows] == [pytest.approx(49.63), pytest.approx(46.28)]
    assert "100 − accuracy" in (folder / "table.md").read_text()


def test_the_paired_seeds_script_pairs_two_methods_seed_by_seed(tmp_path: Path) -> None:
    """``benchmarks/paired_seeds.py``, which REPRODUCTION.md uses to say whether two methods' means differ beyond
    the seeds' noise: it pairs by seed (not by row order; a seed one file lacks is left out), and its figures are
    the paired differences' and scipy's tests of them; a file of several methods needs the method named."""
    from scipy import stats

    header = (
        "method,seed,test_error,test_error_at_best_valid,best_epoch,valid_error,train_error,diverged,collapsed_at\n"
    )
    a = {0: 2.0, 1: 1.9, 2: 2.2, 3: 1.8, 4: 2.1}
    b = {4: 1.9, 3: 1.85, 2: 2.0, 1: 1.8, 0: 1.95, 7: 0.1}  # another order; seed 7 only here
    (tmp_path / "a.csv").write_text(header + "".join(f"dtp,{s},{v},,,,,False,\n" for s, v in a.items()))
    (tmp_path / "b.csv").write_text(header + "".join(f"bp,{s},{v},,,,,False,\n" for s, v in b.items()))
    (tmp_path / "ab.csv").write_text((tmp_path / "a.csv").read_text() + (tmp_path / "b.csv").read_text()[len(header) :])
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_seeds.py"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path)

    proc = run("a.csv", "b.csv")
    assert proc.returncode == 0, proc.stderr
    diff = [a[s] - b[s] for s in range(5)]
    t, w = stats.ttest_rel([a[s] for s in range(5)], [b[s] for s in range(5)]), stats.wilcoxon(diff)
    assert "seeds [0, 1, 2, 3, 4]" in proc.stdout
    assert f"A - B {sum(diff) / 5:+.3f}" in proc.stdout and "A lower in 1, B lower in 4" in proc.stdout, proc.stdout
    assert f"t = {t.statistic:.2f}, p = {t.pvalue:.3f}; Wilcoxon signed-rank: p = {w.pvalue:.3f}" in proc.stdout

    proc = run("a.csv", "a.csv")
    assert proc.returncode == 0 and "equal on every seed: nothing to test" in proc.stdout, proc.stderr
    proc = run("ab.csv", "ab.csv")
    assert proc.returncode != 0 and "holds the methods bp, dtp: name one" in proc.stderr, proc.stderr
    proc = run("ab.csv", "ab.csv", "--method-a", "dtp", "--method-b", "bp")
    assert proc.returncode == 0 and "A = dtp" in proc.stdout and "B = bp" in proc.stdout, proc.stderr
