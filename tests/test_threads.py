"""The thread policy: a run uses the cores that other processes leave free, re-measured as they come and go."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from targetprop import threads
from targetprop.threads import ThreadPolicy, _busy_seconds


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_auto_gives_a_core_to_a_busy_neighbour(restore_threads):
    if _busy_seconds() is None:
        pytest.skip("needs /proc/stat (Linux)")
    policy = ThreadPolicy("auto")
    policy.cores = 2  # as on a 2-core machine, whatever this one has
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the loop is running
        policy.start()
    finally:
        busy.kill()
        busy.wait()
    assert policy.threads == 1 and torch.get_num_threads() == 1


def test_auto_follows_the_measured_load_epoch_by_epoch(restore_threads, monkeypatch):
    """Cores busy in other processes = (machine busy time − own CPU time) / wall time, rounded."""
    clock = {"wall": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: clock["own"])
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    policy = ThreadPolicy("auto")
    policy.cores = 4

    def epoch(seconds: float, own: float, others: float) -> int:
        clock["wall"] += seconds
        clock["own"] += own * seconds
        clock["busy"] += (own + others) * seconds
        policy.update()
        return policy.threads

    policy.start()  # nothing measured yet: all four cores
    assert policy.threads == 4
    assert epoch(10, own=4, others=0) == 4
    assert epoch(10, own=3.5, others=1.0) == 3  # one neighbour
    assert epoch(10, own=2, others=2.4) == 2  # two more or less
    assert epoch(10, own=1, others=3.9) == 1  # never below one
    assert epoch(10, own=1, others=0.2) == 4  # they left: all cores again

    # between mini-batches: a measurement once a second at most, so a load arriving mid-epoch is followed
    clock["wall"] += 0.5
    clock["own"] += 0.5 * 4
    clock["busy"] += 0.5 * 4 + 0.5 * 2
    policy.tick()
    assert policy.threads == 4  # half a second: not measured yet
    clock["wall"] += 0.5
    clock["own"] += 0.5 * 2
    clock["busy"] += 0.5 * 2 + 0.5 * 2
    policy.tick()
    assert policy.threads == 2  # over the last second, two cores were taken by others


def test_a_fixed_count_is_used_as_given(restore_threads):
    torch.set_num_threads(2)  # not the count asked for: start() must set it
    policy = ThreadPolicy(1)
    policy.start()
    assert torch.get_num_threads() == 1
    policy.update()
    assert policy.threads == 1 and torch.get_num_threads() == 1


def test_networks_are_built_at_the_runs_thread_count(restore_threads, monkeypatch, tmp_path, digits):
    """An orthogonal init's SVDs run at the run's count too: at the process's default, beside a busy program, one
    784x500 SVD took 14 s instead of 0.2 s. Both the trainer's build and the check that builds every method of a
    command before the first trains."""
    from targetprop import trainer
    from targetprop.config import make_config

    seen = []
    build = trainer.build

    def recording_build(config, dataset):
        seen.append(torch.get_num_threads())
        return build(config, dataset)

    monkeypatch.setattr(trainer, "build", recording_build)
    torch.set_num_threads(2)  # not the count asked for
    config = make_config(
        {"rule": "bp", "data": "digits", "arch": "64-16-10", "epochs": 1, "threads": 1, "out": str(tmp_path)}
    )
    trainer.check_builds([config], digits)
    assert seen == [1] and torch.get_num_threads() == 2  # the caller's count given back
    trainer.train(config, dataset=digits, progress=False)
    assert seen == [1, 1] and torch.get_num_threads() == 2
