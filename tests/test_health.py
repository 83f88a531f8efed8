"""The replica health checks: when a replica counts as collapsed, and what the trainer's watch warns of."""

from __future__ import annotations

import math

from targetprop.health import ReplicaHealth, collapse_epoch, seeds_cell

CHANCE = 90.0


def rows(*errors: float, replica: int = 0) -> list[dict]:
    return [{"epoch": e, "replica": replica, "train_error": err} for e, err in enumerate(errors, start=1)]


def test_collapse_needs_learning_first_then_a_return_to_chance():
    assert collapse_epoch(rows(30.0, 10.0, 5.0, 88.0, 89.0), CHANCE) == 4  # 88 ≥ 0.9 × 90
    assert collapse_epoch(rows(89.0, 88.0, 87.0), CHANCE) is None  # never learned: slow, not collapsed
    assert collapse_epoch(rows(44.0, 80.0), CHANCE) is None  # learned, worse, but not back at chance
    assert collapse_epoch(rows(46.0, 89.0), CHANCE) is None  # 46 is not below half of chance: not learned yet
    assert collapse_epoch(rows(10.0, math.nan, 81.0), CHANCE) == 3  # a non-finite epoch is skipped
    assert collapse_epoch(rows(10.0, 95.0, 10.0, 95.0), CHANCE) == 2  # the first collapse counts
    assert collapse_epoch(rows(0.5, 900.0), None) is None  # a task without a chance level (reconstruction)


def test_the_watch_warns_once_per_replica_and_stops_when_every_replica_diverged():
    said: list[str] = []
    health = ReplicaHealth([7, 8], CHANCE, said.append)
    history: list[dict] = []

    def epoch(e: int, *per_replica: tuple[float, float]) -> bool:
        new = [
            {"epoch": e, "replica": r, "train_error": err, "batch_loss": loss, "train_loss": loss}
            for r, (err, loss) in enumerate(per_replica)
        ]
        history.extend(new)
        return health.after_epoch(e, new, history, "%")

    assert not epoch(1, (10.0, 0.5), (12.0, 0.5)) and said == []
    assert not epoch(2, (85.0, 2.3), (12.0, 2e6))
    assert said == [
        "warning: seed(s) [8] reached a loss of 2e+06 at epoch 2: training is blowing up; consider lower learning "
        "rates or η̂",
        "warning: seed(s) [7] fell back to chance at epoch 2 (train error 85.00%, chance 90.00%) with a finite loss; "
        "consider lower learning rates or η̂",
    ]
    assert (
        not epoch(3, (86.0, 2.3), (12.0, math.inf)) and len(said) == 3 and "seed(s) [8] diverged at epoch 3" in said[2]
    )
    assert health.diverged == {1}
    assert epoch(4, (86.0, math.nan), (12.0, math.nan))  # every replica has diverged: stop
    assert len(said) == 3


def test_the_seeds_cell_counts_what_went_wrong():
    assert seeds_cell(3, 0, 0) == "3"
    assert seeds_cell(3, 0, 2) == "3 (2 collapsed)"
    assert seeds_cell(10, 1, 2) == "10 (1 diverged, 2 collapsed)"
