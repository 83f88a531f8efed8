"""`targetprop sweep`: Optuna trials grouped as replicas, worker processes, a Ray cluster, resume, bad space files.

Sweeps on digits with a tiny network and few epochs. The commands that need their own process (worker processes,
a kill, Ray) run as subprocesses like tests/test_cli.py's; the others call the command's entry point in this
process, which saves each one the seconds of importing torch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import clitools
import pytest
import torch
from test_cli import assert_no_traceback, cli_env, command, read_jsonl, run_cli, show, table_rows

from targetprop import make_config, train
from targetprop import sweep as sweep_module
from targetprop.lock import FolderLock
from targetprop.sweep import Group, GroupResult, Sweep, load_space, run_group
from targetprop.sweep import groups as sweep_groups

BASE = """\
rule = "dtp"
data = "digits"
arch = "64-32-10"
epochs = 3
seeds = 0
dtype = "float64"
"""


def space_file(folder: Path, sweep: str, space: str, base: str = BASE, name: str = "space.toml") -> Path:
    path = folder / name
    path.write_text(f"{base}\n[sweep]\n{sweep}\n\n[space]\n{space}\n")
    return path


LR_ETA = """\
"dtp.lr" = {low = 1e-3, high = 3e-2, log = true}
"dtp.eta_hat" = {low = 0.1, high = 10, log = true}
"""


def read_trials(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def check_trials_match_their_runs(folder: Path, params: list[str]) -> list[dict[str, str]]:
    """Each trial's value is its replica's best validation error in its run directory, and the run trained it with
    the trial's values; returns trials.csv's rows."""
    rows = read_trials(folder)
    for row in rows:
        run_dir, replica = folder / row["run_dir"], int(row["replica"])
        rep = summary(run_dir)["per_replica"][replica]
        assert float(row["best_valid_error"]) == rep["best_valid_error"], row
        assert float(row["test_error_at_best_valid"]) == rep["test_error_at_best_valid"], row
        config = tomllib.loads((run_dir / "config.toml").read_text())
        assert config["seeds"] == [0] * summary(run_dir)["replicas"]  # every trial starts from the base seed
        for name in params:
            rule, key = name.split(".")
            value = config[rule][key]
            value = value[replica] if isinstance(value, list) else value
            assert (str(value) if isinstance(value, str) else pytest.approx(float(row[name]), rel=1e-12)) == (
                row[name] if isinstance(value, str) else value
            ), (name, row)
    return rows


THREADS = torch.get_num_threads()


def run_main(*args: str | Path) -> tuple[int, str, str]:
    """The `targetprop` entry point in this process (clitools.run_main), with the torch threads given back (a sweep
    in this process sets its own)."""
    try:
        return clitools.run_main(list(map(str, args)))
    finally:
        torch.set_num_threads(THREADS)


# ---- replicas are trials ---------------------------------------------------------------------------------------


def test_random_sweep_trains_trials_as_replicas_in_worker_processes(tmp_path):
    space = space_file(tmp_path, 'sampler = "random"\ntrials = 4\nreplicas = 2\nprocesses = 2\nseed = 3', LR_ETA)
    proc = run_cli("sweep", space, "--out", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    folder = tmp_path / "runs" / "space"
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000-0001", "t0002-0003"]
    progress = [line for line in proc.stderr.splitlines() if " done in " in line]
    assert len(progress) == 2 and "trials 0-1" in proc.stderr and "trials 2-3" in proc.stderr, show(proc)
    assert "epoch 1/" not in proc.stderr, show(proc)  # two workers' epoch lines would interleave: one per group

    rows = check_trials_match_their_runs(folder, ["dtp.lr", "dtp.eta_hat"])
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    values = [float(r["best_valid_error"]) for r in rows]
    assert values == sorted(values)  # best first
    assert len({r["dtp.lr"] for r in rows}) == 4
    shown = table_rows(proc.stdout)
    for r in rows:
        cells = shown[r["trial"]]
        assert f"{float(r['best_valid_error']):.2f}" in cells, cells
        assert f"{r['run_dir']} [{r['replica']}]" in cells, cells

    # --at-epoch: the finished sweep's table again, nothing trained, with each trial's validation / test error at
    # those epochs as its replica's rows of its run hold them ("-" past the last epoch)
    again = run_cli("sweep", "--resume", folder, "--at-epoch", "1", "--at-epoch", "3", "--at-epoch", "9", cwd=tmp_path)
    assert again.returncode == 0, show(again)
    assert "nothing to run" in again.stderr and "epoch 1/" not in again.stderr, show(again)
    assert "valid / test % at 1" in again.stdout and "valid / test % at 9" in again.stdout, show(again)
    shown = table_rows(again.stdout)
    for r in rows:
        metrics = read_jsonl(folder / r["run_dir"] / "metrics.jsonl")
        at = {
            m["epoch"]: f"{m['valid_error']:.2f} / {m['test_error']:.2f}"
            for m in metrics
            if m["replica"] == int(r["replica"])
        }
        assert shown[r["trial"]][-4:-1] == [at[1], at[3], "-"], shown[r["trial"]]

    # `inspect` tables the trials as the sweep does, from space.toml and trials.csv alone: with the folder's lock
    # held by another process (a sweep running) and no data anywhere
    with FolderLock(folder, "sweep directory"):
        code, stdout, stderr = run_main("inspect", folder)
    assert code == 0, stderr
    assert "status: running" in stdout and "4 trials of 4" in stdout, stdout
    assert table_rows(stdout) == {k: v for k, v in table_rows(proc.stdout).items() if k.isdigit()}
    # a damaged cell is named, and the rest of the folder is still shown
    text = (folder / "trials.csv").read_text()
    first = rows[0]["best_valid_error"]
    (folder / "trials.csv").write_text(text.replace(first, "1.2.3", 1))
    code, stdout, stderr = run_main("inspect", folder)
    assert code == 0 and "space.toml:" in stdout, stderr
    assert "trials.csv, line 2: best_valid_error = '1.2.3' is not a number" in " ".join(stdout.split()), stdout
    (folder / "trials.csv").write_text(text + "9,done,1.0,1.0,1,,0.1,0.2,runs/x,0,,surplus\n")
    code, stdout, stderr = run_main("inspect", folder)
    assert "line 6: not as many cells as the header has columns" in " ".join(stdout.split()), stdout
    # a space.toml that no longer loads: named, and the trials shown as written
    space_text = (folder / "space.toml").read_text()
    (folder / "space.toml").write_text(space_text.replace('sampler = "random"', 'sampler = "grid"'))
    code, stdout, stderr = run_main("inspect", folder)
    assert code == 0 and "problem: space.toml cannot be read" in stdout, stdout
    assert "trials.csv, as written" in stdout and set(table_rows(stdout)) >= {r["trial"] for r in rows}, stdout
    (folder / "space.toml").write_text(space_text)
    # a trials.csv written before the collapsed_at column existed is tabled the same
    lines = [line.split(",") for line in text.splitlines()]
    drop = lines[0].index("collapsed_at")
    (folder / "trials.csv").write_text("".join(",".join(c[:drop] + c[drop + 1 :]) + "\n" for c in lines))
    code, stdout, stderr = run_main("inspect", folder)
    assert code == 0 and table_rows(stdout) == {k: v for k, v in table_rows(proc.stdout).items() if k.isdigit()}
    (folder / "trials.csv").write_text(text)

    # a trial is an independent run: trained alone with its values (as `targetprop train --config` would), it
    # gives the same errors epoch by epoch
    row = next(r for r in rows if r["replica"] == "1")
    values = {"lr": float(row["dtp.lr"]), "eta_hat": float(row["dtp.eta_hat"])}
    single = train(make_config(tomllib.loads(BASE), out=str(tmp_path / "alone"), dtp=values), progress=False).history
    together = [r for r in read_jsonl(folder / row["run_dir"] / "metrics.jsonl") if r["replica"] == 1]
    for key in ("train_error", "valid_error", "test_error"):
        assert [r[key] for r in together] == [r[key] for r in single], key


# ---- resume --------------------------------------------------------------------------------------------------------

NOISE_SPACE = """\
"dtp.lr" = {low = 1e-3, high = 3e-2, log = true}
"dtp.noise" = {low = 0.1, high = 0.5}
"epochs" = {low = 1, high = 2}
"dtp.schedule" = {choices = ["alternating", "parallel"]}
"""


def test_tpe_sweep_extended_runs_only_the_new_trials_each_alone(tmp_path):
    """TPE; a key that is not per-replica (epochs) makes every trial run alone; `--trials` raises the total; a
    group trained in the sweep's own process shows its epochs."""
    sweep = 'sampler = "tpe"\nstartup_trials = 2\ntrials = 2\nreplicas = 4\nprocesses = 1\nthreads = 1'
    space = space_file(tmp_path, sweep, NOISE_SPACE)
    code, out, err = run_main("sweep", space, "--out", tmp_path / "runs")
    assert code == 0, err
    assert "each trial runs alone: epochs" in err
    assert "epoch 1/" in err, err  # the trainer's progress line
    folder = tmp_path / "runs" / "space"
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000", "t0001"]
    first = {p.name: (p / "summary.json").read_bytes() for p in (folder / "runs").iterdir()}

    code, out, err = run_main("sweep", space, "--out", tmp_path / "runs", "--trials", "4")
    assert code == 0, err
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000", "t0001", "t0002", "t0003"]
    assert {name: (folder / "runs" / name / "summary.json").read_bytes() for name in first} == first  # not rerun
    assert "trial 0 done" not in err and "trial 2 done" in err and "trial 3 done" in err
    rows = check_trials_match_their_runs(folder, ["dtp.lr", "dtp.noise", "dtp.schedule"])
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    assert all(r["state"] == "done" and r["replica"] == "0" for r in rows)
    assert all(r["epochs"] in ("1", "2") and r["dtp.schedule"] in ("alternating", "parallel") for r in rows)
    assert len({r["dtp.lr"] for r in rows}) == 4  # the resumed sampler does not replay its first draws
    for r in rows:
        assert summary(folder / r["run_dir"])["epochs"] == int(r["epochs"])

    # the same space again: nothing runs; the table lists the four trials
    code, out, err = run_main("sweep", "--resume", folder)
    assert code == 0, err
    assert "4 trials done; nothing to run" in err
    assert sorted(table_rows(out)) == ["0", "1", "2", "3"], out

    # a space that searches differently is refused, and nothing changes
    before = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    changed = space_file(tmp_path, sweep, NOISE_SPACE.replace("high = 0.5", "high = 0.6"), name="changed.toml")
    code, out, err = run_main("sweep", changed, "--out", tmp_path / "runs", "--name", "space")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "different space" in err and "dtp.noise" in err, err
    assert sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before


def test_killed_sweep_resumes_its_interrupted_group_from_its_checkpoint(tmp_path):
    epochs = 25
    base = BASE.replace('arch = "64-32-10"', 'arch = "64-64-64-10"').replace("epochs = 3", f"epochs = {epochs}")
    space = space_file(tmp_path, 'sampler = "random"\ntrials = 4\nreplicas = 2\nprocesses = 1', LR_ETA, base=base)
    folder = tmp_path / "runs" / "space"
    first = folder / "runs" / "t0000-0001"
    victim = subprocess.Popen(
        command("sweep", space, "--out", tmp_path / "runs"),
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while victim.poll() is None and time.monotonic() < deadline:
            if len({r["epoch"] for r in read_jsonl(first / "metrics.jsonl")}) >= 2:
                break
            time.sleep(0.02)
        still_running = victim.poll() is None
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert still_running, "the sweep ended before it was killed; make it longer"
    assert not (first / "summary.json").exists()
    epochs_at_kill = {r["epoch"] for r in read_jsonl(first / "metrics.jsonl")}
    assert 2 <= len(epochs_at_kill) < epochs

    # trials.csv was written when the group started: `inspect` shows the two trials it killed, with how far each
    # got (its replica's last validation error in metrics.jsonl) and how to continue them
    assert [(r["trial"], r["state"], r["run_dir"]) for r in read_trials(folder)] == [
        ("0", "running", "runs/t0000-0001"),
        ("1", "running", "runs/t0000-0001"),
    ]
    metrics = read_jsonl(first / "metrics.jsonl")
    code, stdout, stderr = run_main("inspect", folder, "--at-epoch", "1")
    assert code == 0, stderr
    shown, said = table_rows(stdout), " ".join(stdout.split())
    for replica in (0, 1):
        last = max(r["epoch"] for r in metrics if r["replica"] == replica)
        valid = {r["epoch"]: r["valid_error"] for r in metrics if r["replica"] == replica}
        state = f"running: valid {valid[last]:.2f} at epoch {last} of {epochs}"
        assert state in " ".join(shown[str(replica)]), shown
        at_1 = next(r for r in metrics if r["replica"] == replica and r["epoch"] == 1)
        assert f"{at_1['valid_error']:.2f} / {at_1['test_error']:.2f}" == shown[str(replica)][-2], shown  # --at-epoch 1
    assert f"2 trial(s) were running when the sweep stopped; `targetprop sweep --resume {folder}`" in said, stdout
    code, stdout, stderr = run_main("inspect", first, "--at-epoch", "1")
    assert code == 2 and f"--at-epoch is for a sweep directory; {first} is a run directory" in stderr, stderr

    resumed = run_cli("sweep", "--resume", folder, cwd=tmp_path)
    assert resumed.returncode == 0, show(resumed)
    assert_no_traceback(resumed)
    assert "continuing 2 interrupted trial(s)" in resumed.stderr, show(resumed)
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000-0001", "t0002-0003"]
    rows = check_trials_match_their_runs(folder, ["dtp.lr", "dtp.eta_hat"])
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3] and all(r["state"] == "done" for r in rows)
    metrics = read_jsonl(first / "metrics.jsonl")
    assert sorted((r["epoch"], r["replica"]) for r in metrics) == [(e, r) for e in range(1, epochs + 1) for r in (0, 1)]


def test_a_group_killed_while_its_results_were_told_is_finished_without_a_new_run(tmp_path):
    """The sweep died after telling trial 0 and before trial 1: resuming tells trial 1 from the same run."""
    space = load_space(space_file(tmp_path, 'sampler = "random"\ntrials = 2\nreplicas = 2\nthreads = 1', LR_ETA))
    folder = tmp_path / "runs" / "space"
    sweep = Sweep(space, folder)
    sweep.open()
    group = sweep._ask(2)
    result = run_group(sweep._job(group))
    sweep._tell(Group(group.trials[:1], group.values[:1], group.run_dir), GroupResult(result.per_replica[:1]))
    sweep.close()
    torch.set_num_threads(THREADS)

    code, _out, err = run_main("sweep", "--resume", folder)
    assert code == 0, err
    assert "continuing 1 interrupted trial(s)" in err
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000-0001"]
    rows = check_trials_match_their_runs(folder, ["dtp.lr", "dtp.eta_hat"])
    assert sorted(int(r["trial"]) for r in rows) == [0, 1] and all(r["state"] == "done" for r in rows)


def test_diverged_replicas_are_trials_with_value_inf(tmp_path):
    """bp with squared error and SGD: lr 1e8 overflows in the first epoch, 0.01 trains."""
    base = BASE.replace('rule = "dtp"', 'rule = "bp"') + 'output = "linear"\n[bp]\noptimizer = "sgd"\n'
    sweep = 'sampler = "random"\ntrials = 8\nreplicas = 8\nthreads = 1'
    mixed = space_file(tmp_path, sweep, '"bp.lr" = {choices = [0.01, 1e8]}', base=base, name="mixed.toml")
    code, _out, err = run_main("sweep", mixed, "--out", tmp_path / "runs")
    assert code == 0, err
    rows = read_trials(tmp_path / "runs" / "mixed")
    for r in rows:
        diverged = float(r["bp.lr"]) == 1e8
        assert r["state"] == ("diverged" if diverged else "done"), r
        if diverged:
            assert r["best_valid_error"] == "inf", r
        else:  # it learns: below digits' chance (about 90 %; 69 % after these few epochs of plain SGD)
            assert float(r["best_valid_error"]) < 80, r
    assert {r["state"] for r in rows} == {"diverged", "done"}, rows  # 8 draws of 2 choices: both (p = 0.992)
    assert rows[-1]["state"] == "diverged" and rows[0]["state"] == "done"  # best first

    # every replica diverges: the trainer raises, and the trials still end with inf
    sweep = 'sampler = "random"\ntrials = 2\nreplicas = 2\nthreads = 1'
    lost = space_file(tmp_path, sweep, '"bp.lr" = {choices = [1e8, 1e9]}', base=base, name="lost.toml")
    code, _out, err = run_main("sweep", lost, "--out", tmp_path / "runs")
    assert code == 0, err
    rows = read_trials(tmp_path / "runs" / "lost")
    assert [(r["state"], r["best_valid_error"]) for r in rows] == [("diverged", "inf")] * 2


def test_a_trial_whose_replica_collapsed_says_so_in_trials_csv_and_the_table(tmp_path, monkeypatch):
    """The trainer's collapse flag (targetprop.health; its detection is tested in test_health.py and test_cli.py)
    reaches the sweep: here the summary of the trial in replica 0 is marked as collapsed at epoch 2."""
    real = sweep_groups.run_group

    def marked(job):
        result = real(job)
        result.per_replica[0]["collapsed_at"] = 2
        return result

    monkeypatch.setattr(sweep_groups, "run_group", marked)  # what the executor calls
    space = space_file(
        tmp_path,
        'sampler = "random"\ntrials = 2\nreplicas = 2\nthreads = 1',
        '"dtp.lr" = {low = 1e-3, high = 1e-2, log = true}',
    )
    code, out, err = run_main("sweep", space, "--out", tmp_path / "runs")
    assert code == 0, err
    rows = {r["replica"]: r for r in read_trials(tmp_path / "runs" / "space")}
    assert rows["0"]["collapsed_at"] == "2" and rows["1"]["collapsed_at"] == ""
    assert all(r["state"] == "done" for r in rows.values())
    assert "done, collapsed at epoch 2" in " ".join(out.split())


# ---- Ray -----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, in its own process group (stopped by that group, not `ray stop`, which
    would stop every Ray instance on the machine); yields its address and the environment that reaches it."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    # every Ray address on the loopback; no usage report (it would ask cloud metadata servers who hosts us)
    env = {**cli_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            "--block",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while head.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        assert head.poll() is None, f"ray start exited with {head.returncode}"
        yield f"127.0.0.1:{port}", env
    finally:
        with contextlib.suppress(ProcessLookupError):  # Ray's processes ignore SIGTERM for seconds
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_on_a_local_ray_cluster(tmp_path, ray_head):
    address, env = ray_head
    space = space_file(tmp_path, 'sampler = "random"\ntrials = 4\nreplicas = 2\nprocesses = 2', LR_ETA)
    proc = subprocess.run(
        command("sweep", space, "--out", tmp_path / "runs", "--ray-address", address),
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=clitools.CLI_TIMEOUT,
    )
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    folder = tmp_path / "runs" / "space"
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["t0000-0001", "t0002-0003"]
    rows = check_trials_match_their_runs(folder, ["dtp.lr", "dtp.eta_hat"])
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3] and all(r["state"] == "done" for r in rows)
    assert sorted(table_rows(proc.stdout)) == ["0", "1", "2", "3"], proc.stdout


# ---- bad space files -----------------------------------------------------------------------------------------------

OK_SWEEP = 'sampler = "random"\ntrials = 2'
BAD_SPACES = {
    "no [space]": (BASE + "\n[sweep]\ntrials = 2\n", ["no [space] table", '"dtp.lr"']),
    "unknown [sweep] key": (space_file, ("tirals = 2", LR_ETA), ["'tirals' does not exist", "trials"]),
    "base key after [sweep]": (
        BASE.replace("seeds = 0\n", "") + "\n[sweep]\nseeds = 0\n[space]\n" + LR_ETA,
        ["'seeds'", "before the first [table]"],
    ),
    "unknown searched key": (space_file, (OK_SWEEP, '"dtp.eta" = {low = 1, high = 2}'), ["dtp.eta", "eta_hat"]),
    "key of another rule": (space_file, (OK_SWEEP, '"bp.lr" = {low = 1e-3, high = 1e-2}'), ["rule 'dtp'"]),
    "unsearchable key": (space_file, (OK_SWEEP, '"seeds" = {low = 0, high = 9}'), ["seeds cannot be searched"]),
    "low above high": (space_file, (OK_SWEEP, '"dtp.lr" = {low = 1e-2, high = 1e-3}'), ["low must be below high"]),
    "log of zero": (space_file, (OK_SWEEP, '"dtp.lr" = {low = 0, high = 1e-3, log = true}'), ["low > 0"]),
    "a value, not a range": (space_file, (OK_SWEEP, '"dtp.lr" = 0.01'), ["must be a table", "base run"]),
    "range of a string key": (space_file, (OK_SWEEP, '"arch" = {low = 1, high = 2}'), ["choices"]),
    "float range of an int key": (space_file, (OK_SWEEP, '"epochs" = {low = 1.5, high = 3}'), ["integer"]),
    "bad choice": (space_file, (OK_SWEEP, '"dtp.schedule" = {choices = ["alternating", "sideways"]}'), ["sideways"]),
    "architecture that does not fit": (
        space_file,
        (OK_SWEEP, '"arch" = {choices = ["64-32-10", "100-10"]}'),
        ["100-10 does not fit digits"],
    ),
    "several seeds": (space_file, (OK_SWEEP, LR_ETA, BASE.replace("seeds = 0", 'seeds = "0-3"')), ["one seed"]),
    "unknown sampler": (space_file, ('sampler = "grid"', LR_ETA), ["sampler", "grid"]),
    "missing file": (None, ["missing.toml", "not found"]),
    "experiment without a method": (
        space_file,
        (OK_SWEEP, LR_ETA, 'experiment = "stochastic"\nseeds = 0'),
        ["give experiment and method together"],
    ),
    "unknown experiment": (
        space_file,
        (OK_SWEEP, LR_ETA, 'experiment = "stochastc"\nmethod = "dtp"\nseeds = 0'),
        ["space.toml", "no experiment named 'stochastc'", "stochastic"],
    ),
    "method the experiment lacks": (
        space_file,
        (OK_SWEEP, LR_ETA, 'experiment = "stochastic"\nmethod = "dpt"\nseeds = 0'),
        ["no method 'dpt'", "dtp, bp-straight-through"],
    ),
    "preset and experiment": (
        space_file,
        (OK_SWEEP, LR_ETA, 'preset = "mnist-paper"\nexperiment = "stochastic"\nmethod = "dtp"\nseeds = 0'),
        ["preset or experiment, not both"],
    ),
}


def _make_bad(tmp: Path, case: str) -> list[str]:
    spec = BAD_SPACES[case]
    if spec[0] is None:
        return ["sweep", "missing.toml"]
    if callable(spec[0]):
        path = spec[0](tmp, *spec[1])
    else:
        path = tmp / "space.toml"
        path.write_text(spec[0])
    return ["sweep", str(path)]


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_space_file_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    args = _make_bad(tmp_path, case)
    fragments = BAD_SPACES[case][-1]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_main(*args, "--out", tmp_path / "runs")
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert sorted(tmp_path.rglob("*")) == before


def test_bad_command_lines(tmp_path):
    space = space_file(tmp_path, OK_SWEEP, LR_ETA)
    cases = {
        ("sweep",): "give a space file",
        ("sweep", "--resume", tmp_path): "is not a sweep directory",
        ("sweep", space, "--ray-address", f"127.0.0.1:{free_port()}"): "no Ray cluster answers at 127.0.0.1:",
        ("sweep", space, "--ray-address", "nowhere"): "HOST:PORT",
        ("sweep", space, "--at-epoch", "0"): "'--at-epoch'",
    }
    before = sorted(tmp_path.rglob("*"))
    for args, fragment in cases.items():
        code, out, err = run_main(*args)
        assert code == 2 and out == "" and err.startswith("error: ") and fragment in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_space_can_start_from_a_method_of_an_experiment(tmp_path):
    """``experiment`` and ``method`` make the base run the settings that method of ``targetprop reproduce`` runs
    with (the stochastic net's DTP: the authors' settings in their fixed batch order, which a base written out by
    hand once missed), the file's keys over them; σ, now one value per replica, lets the trials share a run."""
    from targetprop.experiments import get_experiment
    from targetprop.reproduce import method_config

    base = 'experiment = "stochastic"\nmethod = "dtp"\nepochs = 3\nseeds = 2\n\n[dtp]\neta_hat = 10.0'
    space = load_space(space_file(tmp_path, OK_SWEEP + "\nreplicas = 4", '"dtp.noise" = {low = 0.1, high = 1}', base))
    experiment = get_experiment("stochastic")
    [dtp] = [m for m in experiment.methods if m.name == "dtp"]
    expected = method_config(experiment, dtp, scale="full").to_dict()
    got = make_config(space.base).to_dict()
    assert (got["epochs"], got["seeds"], got["dtp"].pop("eta_hat")) == (3, [2], 10.0)
    assert got["shuffle"] is False and got["dtp"]["noise_decay"] == 100.0
    for key in ("epochs", "seeds", "threads"):
        got.pop(key), expected.pop(key)
    expected["dtp"].pop("eta_hat")
    assert got == expected
    assert space.group_size == 4


@pytest.mark.parametrize("name", sweep_module.bundled_space_names())
def test_every_bundled_space_file_loads_by_its_name(name):
    """The space files REPRODUCTION.md cites stay runnable as `targetprop sweep NAME`: each loads by its bundled
    name, and its base run and the run at every edge of its space are valid configs (load_space checks both)."""
    space = load_space(name)
    assert space.params and Path(space.source).name == name.replace("-", "_") + ".toml", name
    assert space.settings.name == name  # its directory is named as it was asked for: runs/sweeps/NAME


def test_the_sweep_records_its_base_run_resolved_and_resumes_sweeps_recorded_before(tmp_path):
    """``space.toml`` records every key the trials ran with, the defaults the file relied on included (an unrecorded
    ``shuffle`` once hid how a search ran); a file that spells a default out is the same sweep as one that relies
    on it, one that changes it is not; and a sweep recorded with only its file's keys, as sweeps were before,
    still resumes."""
    import optuna

    from targetprop.errors import ConfigError
    from targetprop.sweep.study import STUDY_NAME, _storage, check_sweep_dir

    space = load_space(space_file(tmp_path, OK_SWEEP, LR_ETA))
    recorded = tomllib.loads(space.resolved_toml())
    assert "shuffle" not in BASE and recorded["shuffle"] is True
    assert recorded["dtp"]["noise"] == 0.36 and recorded["dtp"]["schedule"] == "alternating"
    assert "data_dir" not in recorded and "threads" not in recorded
    again = tmp_path / "again"
    again.mkdir()
    (again / "space.toml").write_text(space.resolved_toml())
    assert load_space(again / "space.toml").definition() == space.definition()

    spelled = load_space(space_file(tmp_path, OK_SWEEP, LR_ETA, BASE + "shuffle = true\n", name="spelled.toml"))
    assert spelled.definition() == space.definition()
    changed = load_space(space_file(tmp_path, OK_SWEEP, LR_ETA, BASE + "shuffle = false\n", name="changed.toml"))
    assert changed.definition() != space.definition()

    folder = tmp_path / "old"
    folder.mkdir()
    study = optuna.create_study(study_name=STUDY_NAME, storage=_storage(folder))
    old = {**space.definition(), "run": {k: v for k, v in space.base.items() if k != "data_dir"}}
    study.set_user_attr("definition", json.loads(json.dumps(old)))
    check_sweep_dir(space, folder)  # the same sweep: no error
    with pytest.raises(ConfigError, match=r"different space.*shuffle"):
        check_sweep_dir(changed, folder)
