"""Helpers for the tests that run the `targetprop` command for real, in a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
TINY = ["--arch", "64-32-10", "--epochs", "2"]
# How long a `targetprop` subprocess may run before a test calls it hung. A guard against hangs, not a speed check:
# the runs take seconds alone, but minutes on a machine whose two cores a background experiment also uses.
CLI_TIMEOUT = 900


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS", "LINES", "TARGETPROP_MIRROR")}
    env["TARGETPROP_DATA"] = str(DATA_DIR)
    env["PYTHONIOENCODING"] = "utf-8"
    # One thread per process: the machine is shared, and over-subscribed threads make tiny runs crawl.
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "targetprop", *map(str, args)]


def run_cli(*args: str | Path, cwd: Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, show(proc)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one `error: ...` line, which must be the last line on stderr."""
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], show(proc)
    return errors[0]


def assert_empty_or_absent(folder: Path) -> None:
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
    assert left == [], f"{folder} holds {left}"


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The body rows of rich tables: first cell → all cells."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def read_jsonl(path: Path) -> list[dict]:
    """Complete rows only (a writer may be half-way through a line)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            rows.append(json.loads(line))
    return rows


def only_child(folder: Path) -> Path:
    children = list(folder.iterdir())
    assert len(children) == 1, children
    return children[0]


def every_file(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (its subfolders too) but the locks."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory but its lock (whose text names the last process that held it)."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != ".lock"}


def interruptible() -> None:
    """``preexec_fn`` of a command a test will Ctrl-C: SIGINT back to its default in the child. A shell that runs
    the suite in the background (``pytest &``, nohup) ignores SIGINT, its children inherit that, and Python then
    never raises KeyboardInterrupt, so the command would run on as if nothing had been sent."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(proc: subprocess.Popen, ready, seconds: float = 240) -> None:
    """Poll until ``ready()`` holds or the process ends."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.02)


def start_cli(args: list, cwd: Path, *, stdout: int = subprocess.PIPE, preexec=interruptible) -> subprocess.Popen:
    """Start ``targetprop ARGS`` in the background, Ctrl-C-able (``preexec`` runs in the child; the default
    restores SIGINT), its stderr piped as text."""
    return subprocess.Popen(
        command(*args),
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def ctrl_c(proc: subprocess.Popen, ready) -> tuple[int, str]:
    """Press Ctrl-C (SIGINT) on the running ``proc`` once ``ready()`` holds, and return its exit code and stderr
    (piped as text). Fails if the command ends before it could be interrupted."""
    try:
        wait_until(proc, ready)
        assert proc.poll() is None, "the run ended before it could be interrupted; make it longer"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def ctrl_c_once(args: list, cwd: Path, ready) -> tuple[int, str]:
    """Start ``targetprop ARGS`` and :func:`ctrl_c` it once ``ready()`` holds."""
    return ctrl_c(start_cli(args, cwd), ready)


def same_rows(rows: list[dict]) -> list[dict]:
    """Metrics rows without what legitimately differs between an interrupted run and an uninterrupted one."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "changed")} for r in rows]


def assert_same_run(run_dir: Path, ref_dir: Path, epochs: int, replicas: int = 2) -> None:
    """The run in ``run_dir`` reached the numbers, weights and random streams of the reference run, bit for bit."""
    import torch

    from targetprop import checkpoint

    rows, ref_rows = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(ref_dir / "metrics.jsonl")
    assert len(rows) == len(ref_rows) == epochs * replicas
    assert same_rows(rows) == same_rows(ref_rows)
    state = checkpoint.load(run_dir / "checkpoint.safetensors")
    ref_state = checkpoint.load(ref_dir / "checkpoint.safetensors")
    assert state["epoch"] == ref_state["epoch"] == epochs
    for key, tensor in ref_state["net"].items():
        torch.testing.assert_close(state["net"][key], tensor, rtol=0, atol=0, msg=key)
    for key in ("train_rng", "eval_rng"):
        for a, b in zip(state[key], ref_state[key], strict=True):
            assert torch.equal(a, b), key
    assert same_rows(state["history"]) == same_rows(rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    assert summary["per_replica"] == ref_summary["per_replica"]


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``targetprop ARGS`` in this process: exit status, stdout, stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, handlers = sys.argv, {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = ["targetprop", *args]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                from targetprop import cli

                cli.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, stdout.getvalue(), stderr.getvalue()


def whole_and_resumed(dataset, epochs: int = 3, **common):
    """The same run trained ``epochs`` epochs at once, and 1 epoch then resumed through the trainer's checkpoint
    to ``epochs``: ``(whole, resumed)`` results, to be compared bit for bit."""
    from targetprop.config import make_config
    from targetprop.trainer import train

    whole = train(make_config(epochs=epochs, name="whole", **common), dataset=dataset, progress=False)
    part = train(make_config(epochs=1, name="part", **common), dataset=dataset, progress=False)
    resumed = train(
        make_config(epochs=epochs, name="part", **common),
        dataset=dataset,
        run_dir=part.run_dir,
        resume=True,
        progress=False,
    )
    return whole, resumed
