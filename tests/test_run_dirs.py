"""Run directories a user can trust: nothing in one runs code, one writer at a time, damage and full disks give one
line and lose nothing, and a resumed run may change its safe hyper-parameters.

Every command runs for real in a subprocess (see clitools.py). The runs are tiny (digits, two seeds).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from clitools import (
    assert_no_traceback,
    assert_same_run,
    cli_env,
    command,
    error_line,
    every_file,
    read_jsonl,
    run_cli,
    run_files,
    same_rows,
    show,
    table_rows,
    wait_until,
)

from targetprop import checkpoint
from targetprop.errors import Interrupted
from targetprop.lock import FolderLock
from targetprop.lock import holder as holder_of

EPOCHS = 6
RUN = ["train", "--rule", "dtp", "--arch", "64-48-48-10", "--seeds", "0-1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_cli(*RUN, "--epochs", EPOCHS, "--out", cwd, "--name", "run", "-q", cwd=cwd)
    assert proc.returncode == 0, show(proc)
    return cwd / "run"


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Path:
    """The same run stopped after 3 of its epochs (trained with --epochs 3)."""
    cwd = tmp_path_factory.mktemp("partial")
    proc = run_cli(*RUN, "--epochs", "3", "--out", cwd, "--name", "run", "-q", cwd=cwd)
    assert proc.returncode == 0, show(proc)
    return cwd / "run"


@pytest.fixture
def part(partial, tmp_path) -> Path:
    """A fresh copy of ``partial`` to damage."""
    copy = tmp_path / "run"
    shutil.copytree(partial, copy)
    return copy


def resume(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("train", "--resume", run_dir, *args, "-q", cwd=run_dir.parent)


# ---- nothing in a run directory runs code ----------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["checkpoint.pt", "checkpoint.safetensors"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(part, tmp_path, where):
    marker = tmp_path / "exploited"
    (part / "checkpoint.safetensors").unlink()
    with open(part / where, "wb") as f:
        pickle.dump({"epoch": 1, "net": _Exploit(marker)}, f)
    before = run_files(part)
    proc = resume(part, "--epochs", "9")
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    line = error_line(proc)
    assert where in line and ("could run code" in line or "not a checkpoint" in line), line
    looked = run_cli("inspect", part, cwd=tmp_path)
    assert looked.returncode == 0, show(looked)
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    assert run_files(part) == before


# ---- old checkpoint.pt files still resume ----------------------------------------------------------------------


def test_an_old_checkpoint_pt_resumes_to_the_uninterrupted_numbers(part, reference):
    state = checkpoint.load(part / "checkpoint.safetensors")
    del state["history"], state["config"]  # what targetprop 0.1 wrote: torch.save of plain containers
    torch.save(state, part / "checkpoint.pt")
    (part / "checkpoint.safetensors").unlink()
    proc = resume(part, "--epochs", str(EPOCHS))
    assert proc.returncode == 0, show(proc)
    assert not (part / "checkpoint.pt").exists()
    assert_same_run(part, reference, EPOCHS)


# ---- damage: one line, nothing changed --------------------------------------------------------------------------


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _header_damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[20:40] = b"#" * 20  # inside the JSON header
    path.write_bytes(bytes(data))


def _from_another_run(path: Path) -> None:
    other = path.parent.parent / "other"
    proc = run_cli("train", "--arch", "64-20-10", "--epochs", "1", "--out", other, "--name", "x", "-q", cwd=path.parent)
    assert proc.returncode == 0, show(proc)
    shutil.copyfile(other / "x" / "checkpoint.safetensors", path)


def _old_format_from_another_run(path: Path) -> None:
    _from_another_run(path)
    state = checkpoint.load(path)
    del state["config"], state["history"]
    torch.save(state, path.with_name("checkpoint.pt"))
    path.unlink()


DAMAGE = {
    "cut in half": (_half, ["checkpoint.safetensors is damaged"]),
    "random bytes": (_random, ["checkpoint.safetensors is damaged"]),
    "empty": (_empty, ["checkpoint.safetensors is empty"]),
    "header overwritten": (_header_damaged, ["checkpoint.safetensors", "damaged"]),
    "another run's": (_from_another_run, ["config.toml sets arch = '64-48-48-10'", "trained with '64-20-10'"]),
    "another run's, old format": (_old_format_from_another_run, ["checkpoint.pt does not fit", "restore the"]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(part, case):
    damage, fragments = DAMAGE[case]
    damage(part / "checkpoint.safetensors")
    before = run_files(part)
    proc = resume(part, "--epochs", "9")
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    line = error_line(proc)
    for fragment in fragments:
        assert fragment in line, line
    assert run_files(part) == before  # config.toml not rewritten to 9 epochs, nothing else touched
    looked = run_cli("inspect", part, cwd=part.parent)
    assert looked.returncode == 0, show(looked)
    if not case.startswith("another run's"):  # a well-formed file from elsewhere shows only when it is loaded
        assert "problem: " in looked.stdout, show(looked)


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_a_finished_run_whose_summary_is_damaged_gets_it_back_from_resume(part, damage):
    """summary.json unreadable or gone after the last epoch: inspect says so and names the command; `train --resume`
    writes it again from the metrics (the same summary) and trains nothing."""
    summary = part / "summary.json"
    kept, metrics = json.loads(summary.read_text()), (part / "metrics.jsonl").read_bytes()
    summary.write_text("{not json") if damage == "garbage" else summary.unlink()
    looked = run_cli("inspect", part, cwd=part.parent)
    assert looked.returncode == 0, show(looked)
    assert f"summary is missing or unreadable: `targetprop train --resume {part}` writes it" in looked.stdout
    assert ("problem: summary.json cannot be read" in looked.stdout) == (damage == "garbage"), show(looked)
    proc = resume(part)
    assert proc.returncode == 0, show(proc)
    assert "writing its summary.json again" in proc.stderr, show(proc)
    assert json.loads(summary.read_text()) == kept and (part / "metrics.jsonl").read_bytes() == metrics
    assert "finished: 3 epochs" in run_cli("inspect", part, cwd=part.parent).stdout


def _corrupt_middle_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"epoch": 2, "replica": 0, "se\n'
    path.write_text("".join(lines))


def _torn_with_newline(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[:-30] + "\n")


def _torn_without_newline(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[:-30])  # the last row, which the checkpoint covers, is cut


def _deleted(path: Path) -> None:
    path.unlink()


METRICS_DAMAGE = {
    "corrupt middle line": _corrupt_middle_line,
    "torn last line ending in a newline": _torn_with_newline,
    "torn last line without a newline": _torn_without_newline,
    "deleted": _deleted,
}


@pytest.mark.parametrize("case", list(METRICS_DAMAGE))
def test_damaged_metrics_are_rewritten_from_the_checkpoint_and_no_row_is_lost(part, reference, case):
    METRICS_DAMAGE[case](part / "metrics.jsonl")
    proc = resume(part, "--epochs", str(EPOCHS))
    assert proc.returncode == 0, show(proc)
    assert_no_traceback(proc)
    assert "metrics.jsonl was damaged; rewritten from the checkpoint" in proc.stderr, show(proc)
    assert_same_run(part, reference, EPOCHS)


# ---- one writer --------------------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    run_dir = tmp_path / "runs" / "long"
    # far more epochs than it can train before it is killed: a holder that finished while the two commands below
    # started (about 3 s each on a loaded machine) made this test fail once with 400
    args = ["train", "--arch", "64-16-10", "--epochs", "100000", "--out", tmp_path / "runs", "--name", "long", "-q"]
    holder = subprocess.Popen(command(*args), cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL)
    try:
        wait_until(holder, (run_dir / "checkpoint.safetensors").exists)
        assert holder.poll() is None, "the run ended before a second writer could meet it"
        second = run_cli("train", "--resume", run_dir, "--epochs", "500", cwd=tmp_path)
        looked = run_cli("inspect", run_dir, cwd=tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert second.returncode == 2, show(second)
    assert f"is in use by process {holder.pid} " in error_line(second)
    assert f"status: running: process {holder.pid} " in looked.stdout, show(looked)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["epochs"] == 100000  # the refused writer changed nothing
    # the kernel dropped the killed holder's lock: the run continues (one epoch past the last the holder logged)
    last = max(r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl"))
    after = run_cli("train", "--resume", run_dir, "--epochs", str(last + 1), "-q", cwd=tmp_path)
    assert after.returncode == 0, show(after)
    assert {r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")} == set(range(1, last + 2))


def test_a_forked_child_does_not_keep_the_folder_locked_after_its_parent_lets_go(tmp_path):
    """A flock belongs to the open file, which a fork shares: a child still running (an SVM fit whose parent was
    killed) must not keep the run directory locked. The child closes its copy; the parent's lock holds until the
    parent lets go, and then the folder is free though the child lives on."""
    fork = multiprocessing.get_context("fork")
    running, go = fork.Event(), fork.Event()

    def work() -> None:  # the forked child: up and running, then waits as a long fit would
        running.set()
        go.wait(60)

    with FolderLock(tmp_path, "run directory"):
        child = fork.Process(target=work, daemon=True)
        child.start()
        assert running.wait(60) and holder_of(tmp_path) == "this process"
    try:
        assert child.is_alive()
        assert holder_of(tmp_path) is None, "the forked child kept the parent's lock"
        with FolderLock(tmp_path, "run directory"):  # and a new writer takes it
            pass
    finally:
        go.set()
        child.join()


# ---- resuming with changes ------------------------------------------------------------------------------------


def test_checkpoints_every_n_seconds_a_run_stopped_between_them_resumes_from_the_last(part, reference):
    """With ``checkpoint_seconds`` the checkpoint is written only once that long has passed, and after the last
    epoch. A run stopped between checkpoints keeps its last one: resumed, it trains the epochs after it again
    (their metrics rows are replaced, without a warning of damage) and ends with the uninterrupted numbers."""
    from targetprop.resume import plan_resume
    from targetprop.runs import RunDir
    from targetprop.trainer import train

    run_dir = RunDir(part)
    saved: list[int] = []
    save = run_dir.save_checkpoint

    def counted(state):
        saved.append(state["epoch"])
        save(state)

    def stop_after_epoch_5(epoch, _info):
        if epoch == 5:
            raise KeyboardInterrupt

    run_dir.save_checkpoint = counted  # type: ignore[method-assign]
    with run_dir.lock():
        plan = plan_resume(run_dir, ["checkpoint_seconds=1e9"], epochs=EPOCHS)
        assert "checkpoint_seconds" not in plan.changes, "it changes no number: not recorded as a change"
        with pytest.raises(Interrupted, match="continue with"):
            train(plan.config, run_dir=run_dir, resume=True, progress=False, on_epoch=stop_after_epoch_5)
    assert saved == []  # epochs 4 and 5 ended within the interval: no checkpoint written
    assert checkpoint.read_header(part / "checkpoint.safetensors")["epoch"] == 3
    assert max(r["epoch"] for r in read_jsonl(part / "metrics.jsonl")) == 5

    proc = resume(part, "--epochs", str(EPOCHS), "--set", "checkpoint_seconds=1e9")
    assert proc.returncode == 0, show(proc)
    assert "damaged" not in proc.stderr, show(proc)
    assert checkpoint.read_header(part / "checkpoint.safetensors")["epoch"] == EPOCHS  # the last epoch is written
    assert_same_run(part, reference, EPOCHS)


def test_epochs_below_those_done_are_refused_and_config_toml_is_untouched(part):
    before = run_files(part)
    proc = resume(part, "--epochs", "2")
    assert proc.returncode == 2, show(proc)
    assert "already trained 3 epochs" in error_line(proc) and "give more than 3" in error_line(proc)
    assert run_files(part) == before


def test_a_resumed_run_changes_safe_hyper_parameters_from_the_next_epoch(part, reference):
    old_rows = read_jsonl(part / "metrics.jsonl")
    proc = resume(part, "--epochs", "5", "--set", "dtp.lr=0.001", "--set", "eta_hat=0.2")
    assert proc.returncode == 0, show(proc)
    assert "dtp.eta_hat = 0.2, dtp.lr = 0.001, epochs = 5" in proc.stderr, show(proc)
    config = tomllib.loads((part / "config.toml").read_text())
    assert (config["epochs"], config["dtp"]["lr"], config["dtp"]["eta_hat"]) == (5, 0.001, 0.2)
    rows = read_jsonl(part / "metrics.jsonl")
    assert rows[: len(old_rows)] == old_rows  # the epochs before the change stay as they were
    changed = [r for r in rows if "changed" in r]
    assert [r["epoch"] for r in changed] == [4, 4]
    assert changed[0]["changed"] == {"dtp.eta_hat": 0.2, "dtp.lr": 0.001, "epochs": 5}
    ref_epoch_4 = [r for r in read_jsonl(reference / "metrics.jsonl") if r["epoch"] == 4]
    assert same_rows(changed) != same_rows(ref_epoch_4), "the new values did not take effect"

    # an edited config.toml is honoured the same way (the divergence message's advice can be followed by hand) ...
    text = (part / "config.toml").read_text().replace("noise = 0.36", "noise = 0.2").replace("epochs = 5", "epochs = 6")
    (part / "config.toml").write_text(text)
    proc = resume(part)
    assert proc.returncode == 0, show(proc)
    last = [r for r in read_jsonl(part / "metrics.jsonl") if r["epoch"] == 6]
    assert last[0]["changed"] == {"dtp.noise": 0.2, "epochs": 6}

    # ... but what a resumed run cannot change is refused, naming the key
    before = run_files(part)
    (part / "config.toml").write_text(text.replace('activation = "tanh"', 'activation = "relu"'))
    edited = run_files(part)
    proc = resume(part, "--epochs", "7")
    assert proc.returncode == 2, show(proc)
    assert "config.toml sets activation = 'relu'" in error_line(proc)
    assert run_files(part) == edited
    (part / "config.toml").write_bytes(before["config.toml"])
    proc = resume(part, "--epochs", "7", "--set", "dtp.schedule=parallel")
    assert proc.returncode == 2, show(proc)
    assert "--set dtp.schedule cannot change when a run resumes" in error_line(proc)
    proc = resume(part, "--epochs", "7", "--set", "bp.lr=0.01")  # another rule's: the run would never read it
    assert proc.returncode == 2, show(proc)
    assert "--set bp.lr: this run trains dtp, not bp" in error_line(proc)
    proc = resume(part, "--set", "dtp.lr=0.01")
    assert proc.returncode == 2, show(proc)
    assert "add --epochs N with N above 6" in error_line(proc)
    assert run_files(part) == before


def test_the_divergence_message_gives_a_command_that_works(tmp_path):
    args = ["train", "--rule", "bp", "--output", "linear", "--arch", "64-32-10", "--epochs", "4", "--seeds", "0"]
    proc = run_cli(
        *args, "--set", "bp.lr=0.3", "--set", "bp.optimizer=sgd", "--out", tmp_path, "--name", "run", cwd=tmp_path
    )
    assert proc.returncode == 2, show(proc)
    line = error_line(proc)
    assert "diverged at epoch 2" in line, line
    # epoch 1 ended with a huge but finite loss: warned before it overflowed
    assert (
        "warning: seed(s) [0] reached a loss of " in proc.stderr and "at epoch 1: training is blowing up" in proc.stderr
    )
    advice = line.split("`")[1]
    assert advice == f"targetprop train --resume {tmp_path / 'run'} --set bp.lr=...", line
    fixed = run_cli(*advice.split()[1:-1], "bp.lr=0.01", "-q", cwd=tmp_path)
    assert fixed.returncode == 0, show(fixed)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["changed"] == {"bp.lr": 0.01}


# ---- full and read-only disks -----------------------------------------------------------------------------------


def can_mount() -> bool:
    probe = Path("/tmp") / f"targetprop-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        probe.rmdir()


MOUNT = os.geteuid() == 0 and can_mount()


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` (made if missing) with mount ``options``, unmounted afterwards."""
    if not MOUNT:
        pytest.skip("needs root and tmpfs mounts (CI has both)")
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB tmpfs: room for one checkpoint of RUN's network but not for its replacement beside it (without
    mounts, test_faults.py still covers a full disk, with RLIMIT_FSIZE)."""
    with tmpfs(tmp_path / "disk", "size=300k") as mount:
        yield mount


def test_a_full_disk_is_one_line_keeps_every_finished_epoch_and_resumes(small_disk, reference):
    run_dir = small_disk / "run"
    proc = run_cli(*RUN, "--epochs", EPOCHS, "--out", small_disk, "--name", "run", "-q", cwd=small_disk.parent)
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    line = error_line(proc)
    assert "No space left on device" in line and f"`targetprop train --resume {run_dir}`" in line, line
    done = checkpoint.read_header(run_dir / "checkpoint.safetensors")["epoch"]
    assert 1 <= done < EPOCHS
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # room again
    proc = resume(run_dir)
    assert proc.returncode == 0, show(proc)
    assert_same_run(run_dir, reference, EPOCHS)


def test_a_read_only_out_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "size=64k,ro") as mount:
        proc = run_cli(*RUN, "--epochs", "1", "--out", mount / "runs", cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "Read-only file system" in error_line(proc) and "give another --out" in error_line(proc)


def test_a_taken_name_gets_a_new_folder_and_a_note_naming_the_resume_command(part):
    """The same command run twice (say, to continue a stopped run) must not touch the first run's folder."""
    before = every_file(part)
    proc = run_cli(*RUN, "--epochs", "1", "--out", part.parent, "--name", "run", "-q", cwd=part.parent)
    assert proc.returncode == 0, show(proc)
    second = part.parent / "run-2"
    assert every_file(part) == before and (second / "summary.json").exists()
    note = (
        f"note: {part} exists; this run writes {second} (to continue {part} instead: targetprop train --resume {part})"
    )
    assert note in proc.stderr, show(proc)
    # the command is the taken folder's, not the new run's: a comparison's name taken by a run, and the reverse
    compared = run_cli(
        "compare", *RUN[3:], "--epochs", "1", "--out", part.parent, "--name", "run", "-q", cwd=part.parent
    )
    assert f"(to continue {part} instead: targetprop train --resume {part})" in compared.stderr, show(compared)
    trained = run_cli(*RUN, "--epochs", "1", "--out", part.parent, "--name", "run-3", "-q", cwd=part.parent)
    taken = part.parent / "run-3"
    assert f"(to continue {taken} instead: targetprop compare --resume {taken})" in trained.stderr, show(trained)
    assert (taken / "compare.toml").is_file() and (part.parent / "run-3-2" / "summary.json").is_file()


def test_a_finished_run_kept_without_its_checkpoint_is_done_and_cannot_be_trained_on(part):
    """Results kept as their plain files (config, metrics, summary), as results/ keeps them: a resume must neither
    train them again from epoch 1 nor touch them."""
    (part / "checkpoint.safetensors").unlink()
    before = every_file(part)
    proc = run_cli("train", "--resume", part, cwd=part.parent)
    assert proc.returncode == 0, show(proc)
    assert f"{part}: all 3 epochs already done" in proc.stderr, show(proc)
    longer = resume(part, "--epochs", "6")
    assert longer.returncode == 2, show(longer)
    assert error_line(longer) == (
        f"error: {part} finished 3 epochs and was kept without its checkpoint, so it cannot train on to 6: "
        "start a new run with --epochs 6"
    )
    assert every_file(part) == before


def test_an_unfinished_run_without_a_checkpoint_trains_again_from_epoch_1_and_keeps_a_copy_of_its_metrics(
    part, reference
):
    """No checkpoint and no summary: a run killed before its first checkpoint, or partial results kept without
    theirs. Resume trains it again from epoch 1 (to the uninterrupted numbers); the rows it overwrites are kept."""
    (part / "checkpoint.safetensors").unlink()
    (part / "summary.json").unlink()
    (part / "config.toml").write_text((part / "config.toml").read_text().replace("epochs = 3", f"epochs = {EPOCHS}"))
    held = (part / "metrics.jsonl").read_bytes()
    looked = run_cli("inspect", part, cwd=part.parent)
    assert f"`targetprop train --resume {part}` would train it again from epoch 1 (keeping a copy" in looked.stdout
    proc = resume(part)
    assert proc.returncode == 0, show(proc)
    assert (
        f"warning: {part} has no checkpoint, so it trains again from epoch 1; the metrics it held are kept in "
        "metrics-before-restart.jsonl"
    ) in proc.stderr, show(proc)
    assert (part / "metrics-before-restart.jsonl").read_bytes() == held
    assert_same_run(part, reference, EPOCHS)


# ---- inspect ------------------------------------------------------------------------------------------------------


def test_inspect_shows_config_progress_and_summary(partial, reference):
    looked = run_cli("inspect", partial, cwd=partial.parent)
    assert looked.returncode == 0, show(looked)
    assert "status: finished: 3 epochs" in looked.stdout
    assert 'rule = "dtp"' in looked.stdout and 'arch = "64-48-48-10"' in looked.stdout
    summary = json.loads((partial / "summary.json").read_text())
    assert f"test_error: {summary['test_error']['mean']:.2f} ± {summary['test_error']['std']:.2f} %" in looked.stdout


def test_inspect_of_a_stopped_run_names_the_resume_command(part):
    (part / "summary.json").unlink()
    text = (part / "config.toml").read_text().replace("epochs = 3", "epochs = 8")
    (part / "config.toml").write_text(text)
    looked = run_cli("inspect", part, cwd=part.parent)
    assert looked.returncode == 0, show(looked)
    assert f"status: stopped after epoch 3 of 8; continue with `targetprop train --resume {part}`" in looked.stdout


def test_inspect_of_a_compare_directory_shows_each_rule_and_the_command_that_continues_a_stopped_one(tmp_path):
    proc = run_cli(
        "compare", "--rules", "dtp,bp", "--arch", "64-16-10", "--epochs", "2", "--seeds", "0-1", "--out", tmp_path,
        "--name", "c", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, show(proc)
    folder = tmp_path / "c"
    summary = json.loads((folder / "bp" / "summary.json").read_text())
    (folder / "dtp" / "summary.json").unlink()  # dtp as if stopped after epoch 2 of 4
    config = folder / "dtp" / "config.toml"
    config.write_text(config.read_text().replace("epochs = 2", "epochs = 4"))
    looked = run_cli("inspect", folder, cwd=tmp_path)
    assert looked.returncode == 0, show(looked)
    assert f"compare directory: {folder}\n" in looked.stdout
    bp = f"{summary['test_error']['mean']:.2f} ± {summary['test_error']['std']:.2f}"
    assert re.search(rf"bp +│ finished: 2 epochs +│ epoch 2 +│ {re.escape(bp)} ", looked.stdout), show(looked)
    assert re.search(r"dtp +│ stopped after epoch 2 of 4 +│ epoch 2 ", looked.stdout), show(looked)
    command = f"targetprop compare --resume {folder}"
    assert f"continue with `{command}`" in looked.stdout
    (folder / "compare.toml").rename(tmp_path / "kept")  # as a comparison made before compare.toml: rule by rule
    older = run_cli("inspect", folder, cwd=tmp_path)
    assert (
        f"dtp: stopped after epoch 2 of 4; continue with `targetprop train --resume {folder / 'dtp'}`" in older.stdout
    )
    (folder / "compare.toml").write_text("rules = 3\n")  # damaged: said by inspect, refused by --resume
    said = f'{folder / "compare.toml"} says rules = 3; it should list them: rules = ["dtp", ...]'
    assert f"problem: {said}" in run_cli("inspect", folder, cwd=tmp_path).stdout
    assert error_line(run_cli(*command.split()[1:], cwd=tmp_path)) == f"error: {said}"
    (tmp_path / "kept").rename(folder / "compare.toml")
    resumed = run_cli(*command.split()[1:], "-q", cwd=tmp_path)  # as told: the comparison's table again
    assert resumed.returncode == 0, show(resumed)
    assert f"{folder / 'bp'}: all 2 epochs already done" in resumed.stderr, show(resumed)
    assert set(table_rows(resumed.stdout)) == {"dtp", "bp"}, show(resumed)
    assert bp in table_rows(resumed.stdout)["bp"]
    assert re.search(r"dtp +│ finished: 4 epochs", run_cli("inspect", folder, cwd=tmp_path).stdout)
    above = run_cli("inspect", tmp_path, cwd=tmp_path)  # a folder holding no run, only a compare directory
    assert above.returncode == 0, show(above)
    assert f"run directories in: {tmp_path}\n" in above.stdout
    assert re.search(r"c +│ compare +│ bp finished: 2 epochs; dtp finished: 4 epochs", above.stdout), show(above)


# ---- sweep directories --------------------------------------------------------------------------------------------

SPACE = """rule = "dtp"
data = "digits"
arch = "64-16-10"
epochs = 1
seeds = 0
[sweep]
sampler = "random"
trials = 2
replicas = 2
[space]
"dtp.lr" = {low = 1e-4, high = 1e-2, log = true}
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("sweep")
    (cwd / "space.toml").write_text(SPACE)
    proc = run_cli("sweep", "space.toml", "--out", cwd, "--name", "s", "-q", cwd=cwd)
    assert proc.returncode == 0, show(proc)
    return cwd / "s"


def _damage_journal_line(folder: Path) -> None:
    lines = (folder / "study.log").read_text().split("\n")
    lines[2] = '{"op_code": 5, "wor\x01'
    (folder / "study.log").write_text("\n".join(lines))


SWEEP_DAMAGE = {
    "journal line": (_damage_journal_line, "study.log is damaged"),
    "journal bytes": (lambda f: (f / "study.log").write_bytes(b"\x90\x01 not json\n" * 30), "study.log is damaged"),
    "space file": (lambda f: (f / "space.toml").write_text("garbage [[["), "space.toml' is not valid TOML"),
}


@pytest.mark.parametrize("case", list(SWEEP_DAMAGE))
def test_a_damaged_sweep_directory_is_one_line(swept, tmp_path, case):
    folder = tmp_path / "s"
    shutil.copytree(swept, folder)
    damage, fragment = SWEEP_DAMAGE[case]
    damage(folder)
    before = every_file(folder)
    proc = run_cli("sweep", "--resume", folder, "--trials", "4", "-q", cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    assert fragment in error_line(proc)
    assert every_file(folder) == before  # refused before touching anything: no trial added, nothing rewritten
    looked = run_cli("inspect", folder, cwd=tmp_path)  # the damaged folder can still be looked at
    assert looked.returncode == 0 and "sweep directory:" in looked.stdout, show(looked)
    assert ("problem: space.toml cannot be read" in looked.stdout) == (case == "space file"), show(looked)


def test_a_sweep_on_a_full_disk_stops_with_one_line(tmp_path):
    (tmp_path / "space.toml").write_text(
        SPACE.replace("epochs = 1", "epochs = 3")
    )  # the second checkpoint does not fit
    with tmpfs(tmp_path / "disk", "size=100k") as disk:
        proc = run_cli("sweep", "space.toml", "--out", disk, "--name", "s", "-q", cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert_no_traceback(proc)
    line = error_line(proc)
    assert "No space left on device" in line and f"`targetprop sweep --resume {disk / 's'}`" in line, line
