"""`targetprop plot` (every per-epoch metric against epochs, one PNG) and `--tensorboard` (the same metrics as
TensorBoard scalars): what they draw and write, on a run, a compare or reproduce directory and a resumed run;
their errors.

The trainings are tiny (digits, 64-16-10, 2 epochs, one thread) and run through the real command line.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from clitools import assert_no_traceback, read_jsonl, run_cli, run_main, show

from targetprop.plots import MEANINGS, Run, metric_unit, panel_title, plot_metrics, read_run
from targetprop.runs import RunDir, metric_values

TINY = ["--arch", "64-16-10", "--epochs", "2", "--threads", "1", "-q"]
PNG = b"\x89PNG\r\n\x1a\n"
MISSING = "error: --tensorboard needs the tensorboard package: pip install 'targetprop[tensorboard]'"


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory) -> Path:
    """A DTP run with diagnostics (``--diagnostics``, the run key ``diagnostics = true``), two seeds, two epochs."""
    cwd = tmp_path_factory.mktemp("diagnosed")
    proc = run_cli(
        "train", "--rule", "dtp", *TINY, "--seeds", "0-1", "--diagnostics", "--out", "runs", "--name", "d", cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    return cwd / "runs" / "d"


def test_axes_name_the_task_error_and_the_angles(diagnosed, tmp_path):
    run = read_run("d", RunDir(diagnosed), note=print)
    assert run.error_label == "error %"
    assert metric_unit("test_error", [run]) == "error %" and metric_unit("angle_deg", [run]) == "degrees"
    assert metric_unit("inverse_error", [run]) is None and metric_unit("train_loss", [run]) is None
    autoencoder = Run("ae", tmp_path, 1, {}, "reconstruction error")
    assert metric_unit("valid_error", [run, autoencoder]) == "error % / reconstruction error"
    (tmp_path / "damaged").mkdir()
    shutil.copy(diagnosed / "metrics.jsonl", tmp_path / "damaged" / "metrics.jsonl")
    (tmp_path / "damaged" / "config.toml").write_text("rule = \n")
    notes: list[str] = []
    damaged = read_run("damaged", RunDir(tmp_path / "damaged"), note=notes.append)
    assert damaged.error_label is None and "drawn without their unit" in notes[0]
    assert damaged.metrics["test_error"].values.shape == run.metrics["test_error"].values.shape


def test_every_panel_of_a_diagnosed_run_says_what_it_measures(diagnosed):
    run = read_run("d", RunDir(diagnosed), note=print)
    assert {"angle_deg", "signal_angle_deg", "inverse_error"} <= set(run.metrics)
    splits = ("train_error", "valid_error", "test_error")  # their names say it
    assert [name for name in run.metrics if name not in MEANINGS and name not in splits] == []
    assert (
        panel_title("angle_deg", True, False) == "angle_deg (per layer)\nthe rule's update of W_i against BP's gradient"
    )
    assert panel_title("inverse_error", True, True).startswith("inverse_error (per layer), log scale\n||g_i(")
    assert panel_title("test_error", False, False) == "test_error"


def test_compare_diagnoses_every_rule_and_a_resume_cannot_switch_diagnostics_on(diagnosed, tmp_path):
    proc = run_cli("compare", "--rules", "fa,bp", *TINY, "--diagnostics", "--out", "runs", "--name", "c", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    rows = {rule: read_jsonl(tmp_path / "runs" / "c" / rule / "metrics.jsonl") for rule in ("fa", "bp")}
    assert all(len(row["angle_deg"]) == 2 for rule in rows for row in rows[rule])  # per layer, every epoch
    assert "feedback_angle_deg" in rows["fa"][0]  # and what FA reports itself
    proc = run_cli("compare", "--rules", "fa,bp", *TINY, "--out", "runs", "--name", "plain", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "angle_deg" not in read_jsonl(tmp_path / "runs" / "plain" / "fa" / "metrics.jsonl")[0]

    before = (diagnosed / "metrics.jsonl").read_bytes()
    proc = run_cli("train", "--resume", diagnosed, "--epochs", "3", "--diagnostics", cwd=tmp_path)
    assert proc.returncode != 0 and "drop --diagnostics" in proc.stderr, show(proc)
    assert (diagnosed / "metrics.jsonl").read_bytes() == before


# ---- plot --------------------------------------------------------------------------------------------------


def test_plot_draws_every_metric_with_a_panel_per_metric_and_per_layer_lists(diagnosed, tmp_path):
    figure = plot_metrics(diagnosed, tmp_path / "all.png")
    assert figure.path == tmp_path / "all.png" and figure.path.read_bytes()[:8] == PNG
    assert figure.runs == ["d"]
    lists = ["angle_deg", "signal_angle_deg", "inverse_error"]  # the diagnostics of a DTP run, per layer
    for name in ("train_error", "valid_error", "test_error", "train_loss", "batch_loss", *lists):
        assert name in figure.metrics, figure.metrics
    assert not {"epoch", "replica", "seed", "seconds"} & set(figure.metrics)
    # numbers first, per-layer lists after them
    assert figure.metrics[-3:] == lists

    chosen = plot_metrics(diagnosed, tmp_path / "two.png", ["angle_deg", "test_error"])
    assert chosen.metrics == ["angle_deg", "test_error"]


def test_plot_command_writes_metrics_png_into_the_run_and_says_where(diagnosed):
    proc = run_cli("plot", diagnosed, cwd=diagnosed.parent)
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    path = diagnosed / "metrics.png"
    assert path.read_bytes()[:8] == PNG
    assert proc.stdout.startswith(f"wrote {path} ("), show(proc)
    assert "angle_deg" in proc.stdout and "test_error" in proc.stdout


def test_plot_draws_whatever_numeric_columns_the_rows_hold(tmp_path):
    """Any name, numbers or per-layer lists (a future rule's metrics); text, tables and bookkeeping are not drawn."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('rule = "x"\n')
    rows = [
        {
            "epoch": e,
            "replica": r,
            "seed": r,
            "test_error": 10.0 - e,
            "signal_angle_deg": [e * r, math.nan, 3.0],
            "note": "text",
            "changed": {"x.lr": 0.1},
            "sg_error": math.inf,
            "seconds": 1.0,
        }
        for e in (1, 2, 3)
        for r in (0, 1)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    figure = plot_metrics(run)
    assert figure.metrics == ["test_error", "sg_error", "signal_angle_deg"]
    assert (run / "metrics.png").read_bytes()[:8] == PNG
    assert figure.log_scale == []  # 7-9 and 0-6: linear axes


def test_a_metric_that_grows_by_orders_of_magnitude_gets_a_log_axis(tmp_path):
    """A run that breaks down: one layer's inverse error grows from 3 to 3e13 (a linear axis shows a flat line
    and a wall); the error stays on a linear axis, and so does a metric that touches zero."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('rule = "dtp"\n')
    rows = [
        {
            "epoch": e,
            "replica": 0,
            "train_error": 5.0 + e,
            "inverse_error": [3.0, 3.0 * 10 ** (e * 13 / 5)],
            "angle_deg": [0.0, 10.0 * e],
        }
        for e in range(6)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    figure = plot_metrics(run)
    assert figure.log_scale == ["inverse_error"]


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------------------


def _config_only(tmp: Path, run: Path) -> list[str]:
    (tmp / "fresh").mkdir()
    (tmp / "fresh" / "config.toml").write_text('rule = "dtp"\n')
    return ["plot", str(tmp / "fresh")]


def _plain_folder(tmp: Path, run: Path) -> list[str]:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "a.txt").write_text("not a run\n")
    return ["plot", str(tmp / "notes")]


BAD = {
    "missing folder": (lambda tmp, run: ["plot", str(tmp / "nothere")], ["nothere", "does not exist"]),
    "not a run directory": (_plain_folder, ["notes", "not a run directory", "holds none"]),
    "no metrics yet": (_config_only, ["fresh", "no metrics yet"]),
    "unknown metric": (
        lambda tmp, run: ["plot", str(run), "--metrics", "test_error,angel_deg", "--out", str(tmp / "x.png")],
        ["unknown metric 'angel_deg'", "available: ", "angle_deg", "test_error"],
    ),
    "--out a folder": (lambda tmp, run: ["plot", str(run), "--out", str(tmp)], ["is a folder"]),
    "--out in a missing folder": (
        lambda tmp, run: ["plot", str(run), "--out", str(tmp / "no" / "x.png")],
        ["does not exist"],
    ),
}


@pytest.mark.parametrize(
    "errors, expected",
    [
        ([3.40, 2.48, 2.14], ["2.5", "3"]),  # every error between 1 and 10 %: the usual test-error panel
        ([1.9, 1.7, 1.65], ["1.7", "1.8", "1.9"]),
        ([9.0, 1.2, 0.0], ["0", "1", "2", "5"]),  # a train error that reaches 0 beside a test error
        ([60.0, 12.0, 4.0], ["5", "10", "20", "50"]),
    ],
)
def test_the_error_axis_of_reproduce_figures_is_labelled_inside_one_decade(errors, expected):
    """errors.png draws error % on a symlog axis; labelled at its decades alone (0, 1, 10), a panel of errors
    between 1 and 10 % had no number on its y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from targetprop.report import error_scale

    fig, ax = plt.subplots()
    ax.plot(range(len(errors)), errors)
    error_scale(ax)
    fig.canvas.draw()
    low, high = ax.get_ylim()
    labels = [t.label1.get_text() for t in ax.yaxis.get_major_ticks() if low <= t.get_loc() <= high]
    plt.close(fig)
    assert set(expected) <= set(labels) and len(labels) >= 3, labels
    assert all(label and "10^" not in label and "times" not in label for label in labels), labels


@pytest.mark.parametrize("case", list(BAD))
def test_plot_bad_input_is_one_line_exit_2_and_writes_nothing(case, diagnosed, tmp_path):
    make_args, fragments = BAD[case]
    args = make_args(tmp_path, diagnosed)
    before = sorted(tmp_path.rglob("*")), sorted(diagnosed.iterdir())
    code, stdout, stderr = run_main(args)
    assert code == 2, (code, stdout, stderr)
    assert stdout == "" and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert (sorted(tmp_path.rglob("*")), sorted(diagnosed.iterdir())) == before


def test_plot_of_a_compare_directory_draws_every_rule_in_each_panel(tmp_path):
    proc = run_cli(
        "compare",
        "--rules",
        "dtp,bp",
        *TINY,
        "--seeds",
        "0-1",
        "--tensorboard",
        "--out",
        "runs",
        "--name",
        "c",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, show(proc)
    parent = tmp_path / "runs" / "c"
    for rule in ("dtp", "bp"):  # each run directory has its own scalars
        assert [step for step, _ in scalars(parent / rule / "tensorboard")["test_error/seed1"]] == [1, 2]
    figure = plot_metrics(parent)
    assert figure.runs == ["bp", "dtp"]
    assert figure.path == parent / "metrics.png" and figure.path.read_bytes()[:8] == PNG
    assert {"train_error", "valid_error", "test_error", "train_loss"} <= set(figure.metrics)
    proc = run_cli("plot", parent, "--metrics", "test_error", "--out", tmp_path / "t.png", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == f"wrote {tmp_path / 't.png'} (1 panels: test_error)"


# ---- --tensorboard -----------------------------------------------------------------------------------------


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``folder``: tag → [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_logged(logged: dict[str, list[tuple[int, float]]], rows: list[dict]) -> None:
    """Every metric of every row is a scalar at step = epoch, tagged METRIC/seedS or METRIC/layerI/seedS."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in metric_values(row).items():
            layers = value if isinstance(value, list) else [value]
            for i, v in enumerate(layers, start=1):
                tag = f"{key}/layer{i}/seed{row['seed']}" if isinstance(value, list) else f"{key}/seed{row['seed']}"
                expected.setdefault(tag, []).append((row["epoch"], v))
    assert sorted(logged) == sorted(expected)
    for tag, points in expected.items():
        got = sorted(logged[tag])
        assert [step for step, _ in got] == sorted(step for step, _ in points), tag
        for (_, a), (_, b) in zip(got, sorted(points), strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6), (tag, a, b)


def test_tensorboard_holds_every_metric_of_every_epoch_and_a_resumed_run_appends(tmp_path):
    proc = run_cli(
        "train", "--rule", "dtp", *TINY, "--seeds", "0-1", "--set", "diagnostics=true", "--tensorboard",
        "--out", "runs", "--name", "tb", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    run = tmp_path / "runs" / "tb"
    logged = scalars(run / "tensorboard")
    assert [step for step, _ in logged["test_error/seed0"]] == [1, 2]
    assert {"angle_deg/layer1/seed0", "angle_deg/layer2/seed1", "inverse_error/layer2/seed0"} <= set(logged)
    assert not [tag for tag in logged if tag.split("/")[0] in ("epoch", "replica", "seed", "seconds")]
    assert_logged(logged, read_jsonl(run / "metrics.jsonl"))

    # the run remembers --tensorboard: resuming without the flag adds epoch 3, in a second event file
    proc = run_cli("train", "--resume", run, "--epochs", "3", "--threads", "1", "-q", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    logged = scalars(run / "tensorboard")
    assert [step for step, _ in logged["test_error/seed1"]] == [1, 2, 3]
    assert_logged(logged, read_jsonl(run / "metrics.jsonl"))
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_reproduce_with_tensorboard_and_a_plot_of_its_directory(tmp_path):
    proc = run_cli(
        "reproduce", "mnist-paper", "--scale", "smoke", "--seeds", "0", "--epochs", "1", "--threads", "1",
        "--methods", "dtp,bp", "--tensorboard", "--out", tmp_path, "--name", "r", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "r"
    for method in ("dtp", "bp"):
        assert_logged(scalars(folder / method / "tensorboard"), read_jsonl(folder / method / "metrics.jsonl"))
    figure = plot_metrics(folder)
    assert figure.runs == ["bp", "dtp"] and "test_error" in figure.metrics
    assert (folder / "metrics.png").read_bytes()[:8] == PNG


MISSING_PACKAGE = {
    "train": ["train", "--arch", "64-16-10", "--epochs", "1", "--tensorboard"],
    "compare": ["compare", "--arch", "64-16-10", "--epochs", "1", "--tensorboard"],
    "reproduce": ["reproduce", "discrete", "--scale", "smoke", "--tensorboard"],
    "run key": ["train", "--arch", "64-16-10", "--epochs", "1", "--set", "tensorboard=true"],
}


@pytest.mark.parametrize("case", list(MISSING_PACKAGE))
def test_tensorboard_without_the_package_is_one_line_before_anything_is_written(case, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `from torch.utils.tensorboard ...` fails
    code, stdout, stderr = run_main([*MISSING_PACKAGE[case], "--out", str(tmp_path / "runs"), "-q"])
    assert code == 2, (code, stdout, stderr)
    assert stdout == "" and stderr.strip() == MISSING, stderr
    assert list(tmp_path.iterdir()) == []
