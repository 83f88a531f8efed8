"""Progress lines: a run left in the background with its output in a log file says how long the rest will take."""

from __future__ import annotations

import pytest

from targetprop import progress
from targetprop.progress import Progress, time_left


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "under 1 s"),
        (40.2, "about 40 s"),
        (59.6, "about 1 min"),
        (725, "about 12 min"),
        (7500, "about 2 h 05 min"),
    ],
)
def test_time_left_reads_as_a_person_would_say_it(seconds, text):
    assert time_left(seconds) == text


def test_each_plain_line_ends_with_the_time_left_from_the_epochs_this_process_ran(monkeypatch, capsys):
    clock = iter([100.0, 100.0, 130.0, 160.0, 190.0])  # constructed, resumed after epoch 4, then 30 s an epoch
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = Progress("dtp mnist", epochs=7, batches=10)
    assert not bar.live  # pytest's stderr is no terminal: plain lines
    bar.start_at(4)
    for epoch in (5, 6, 7):
        bar.epoch_done(f"epoch {epoch}/7")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["epoch 5/7; about 1 min left", "epoch 6/7; about 30 s left", "epoch 7/7"]
