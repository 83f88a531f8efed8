"""Fault injection: one run stopped again and again at random moments — SIGKILL, Ctrl-C (SIGINT), SIGTERM and a
disk that fills up — and resumed each time, ends with exactly the numbers and weights of the uninterrupted run.

Each fault lands either while the command starts (loading PyTorch, reading the checkpoint) or after the run has
logged a random number of further epochs, plus a random fraction of an epoch (in the step, the evaluation or a
write). Counting epochs rather than seconds makes the run's length independent of the machine's speed: however
fast it trains, all twelve faults land before it ends.

The disk fills for real where this process may mount a tmpfs (root, as in CI): the run directory lives on one, and
a filler file takes all but a random few KiB of it while the run goes on; the filler is deleted before resuming.
Elsewhere the same fault comes from a file-size limit (RLIMIT_FSIZE) on the process: its writes past a random
size fail as a full disk's do.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import signal
import subprocess
import time
from pathlib import Path

from clitools import CLI_TIMEOUT, assert_same_run, interruptible, run_cli, show, start_cli, wait_until
from test_run_dirs import MOUNT

EPOCHS = 300
"""Longer than the twelve faults' segments can be together: each trains at most ``MOST_EPOCHS`` epochs and about
two seconds more."""
MOST_EPOCHS = 15
"""A fault lands after 0 (while the command starts) to this many newly logged epochs."""
RUN = ["--rule", "dtp", "--arch", "64-96-96-10", "--seeds", "0-1", "--epochs", str(EPOCHS), "-q"]
FAULTS = ["SIGKILL", "SIGINT", "SIGTERM", "disk full"] * 3
"""Twelve faults, in a shuffled order; their count is quoted in the README's reliability section."""


def start(args: list, cwd: Path, fsize: int | None = None) -> subprocess.Popen:
    def limit() -> None:
        interruptible()
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return start_cli(args, cwd, stdout=subprocess.DEVNULL, preexec=limit)


def logged_epochs(run_dir: Path, replicas: int = 2) -> int:
    """The epochs ``metrics.jsonl`` holds: its finished rows (each ends in a newline), one per replica and epoch."""
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b"\n") // replicas
    except FileNotFoundError:
        return 0


def wait_for_moment(proc: subprocess.Popen, run_dir: Path, rng: random.Random) -> None:
    """Wait for a random moment of the run ``proc``: 0.5-2 s into its start, or once it has logged 1 to
    ``MOST_EPOCHS`` more epochs and then 0-0.2 s more (SIGTERM before ``targetprop``'s handler is installed, in
    the first tenths of a second, would kill the interpreter without a word; that is not what is tested here)."""
    more = rng.randint(0, MOST_EPOCHS)
    if more == 0:
        time.sleep(rng.uniform(0.5, 2.0))
        return
    target = logged_epochs(run_dir) + more
    wait_until(proc, lambda: logged_epochs(run_dir) >= target, seconds=120)
    time.sleep(rng.uniform(0.0, 0.2))


def fill(disk: Path, leave: int) -> Path:
    """Take all of ``disk``'s free space but about ``leave`` bytes (all of it, if the run writes meanwhile)."""
    stat = os.statvfs(disk)
    todo = max(0, stat.f_bavail * stat.f_frsize - leave)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while todo > 0:
                todo -= f.write(chunk[: min(len(chunk), todo)])
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


def test_a_run_stopped_at_random_moments_resumes_to_the_uninterrupted_numbers(tmp_path):
    rng = random.Random(2026)
    faults = FAULTS.copy()
    rng.shuffle(faults)
    disk = tmp_path / "disk"
    disk.mkdir()
    if MOUNT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], check=True)
    try:
        run_dir = disk / "run"
        fresh = ["train", *RUN, "--out", disk, "--name", "run"]
        survived: list[str] = []
        for fault in faults:
            args = ["train", "--resume", run_dir, "-q"] if (run_dir / "config.toml").exists() else fresh
            size = (
                (run_dir / "checkpoint.safetensors").stat().st_size
                if (run_dir / "checkpoint.safetensors").exists()
                else 400_000
            )
            fsize = None
            if fault == "disk full" and not MOUNT:
                fsize = rng.randint(size // 2, size - 1)  # the next checkpoint is over the limit
            proc = start(args, tmp_path, fsize)
            filler = None
            if fault == "disk full":
                if MOUNT:
                    wait_for_moment(proc, run_dir, rng)
                    filler = fill(disk, rng.randint(0, size - 1))  # the next checkpoint cannot fit
            else:
                wait_for_moment(proc, run_dir, rng)
                if proc.poll() is None:
                    proc.send_signal(getattr(signal, fault))
            try:
                _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if filler is not None:
                    filler.unlink()
            assert "Traceback" not in stderr, stderr
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            code = proc.returncode
            if code == 0:
                break  # the run finished before the fault landed
            survived.append(fault)
            if fault == "SIGKILL":
                assert code == -signal.SIGKILL, (code, stderr)
            elif fault in ("SIGINT", "SIGTERM"):
                what = "interrupted" if fault == "SIGINT" else "terminated"
                assert code == (130 if fault == "SIGINT" else 143), (code, stderr)
                assert last.startswith(f"error: {what}"), stderr
            else:
                assert code == 2, (code, stderr)
                assert last.startswith("error: cannot write") and ("No space left" in last or "too large" in last), last
            assert len(stderr.strip().splitlines()) <= 2, stderr  # "resuming ..." and the one error line
        proc = run_cli("train", "--resume", run_dir, "-q", cwd=tmp_path) if (run_dir / "config.toml").exists() else None
        if proc is None:  # every fault landed before the first epoch of a fresh run: nothing was kept
            proc = run_cli(*fresh, cwd=tmp_path)
        assert proc.returncode == 0, show(proc)
        assert len(survived) == len(FAULTS), f"only {len(survived)} faults landed before the run finished: {survived}"

        reference = run_cli("train", *RUN, "--out", tmp_path / "reference", "--name", "run", cwd=tmp_path)
        assert reference.returncode == 0, show(reference)
        assert_same_run(run_dir, tmp_path / "reference" / "run", EPOCHS)
    finally:
        if MOUNT:
            subprocess.run(["umount", "-l", str(disk)], check=False)
