"""Is every replica still learning? The checks the trainer makes after each epoch, and how tables count them.

Three ways a replica goes wrong, each seen from the metrics of the epoch it happens in:

- **diverged**: its mini-batch cost or its train cost is not finite. It stays marked (in the checkpoint too) and
  drops out of the summary's means; when every replica has diverged the trainer stops.
- **blowing up**: a finite cost above :data:`LOSS_WARNING`, on its way to overflow. A warning, once per replica.
- **collapsed**: it had learned, then fell back to chance with a finite cost (every ReLU silent, the output
  stuck on one class, DTP's targets gone meaningless): :func:`collapse_epoch`. A warning, once per replica; the
  summary names it, and its errors still count in the means (they are what the run did).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOSS_WARNING = 1e6
"""A finite loss above this gets a warning: it is on its way to overflow."""
COLLAPSE_LEARNED = 0.5
"""A replica has learned once its train error falls below this fraction of the chance error."""
COLLAPSE_BACK = 0.9
"""A replica that had learned has collapsed when its train error climbs back to this fraction of chance."""


def collapse_epoch(rows: Sequence[dict[str, Any]], chance: float | None) -> int | None:
    """The first epoch at which a replica that had learned fell back to chance, or None.

    ``rows`` are one replica's metrics rows in epoch order; ``chance`` the task's
    :meth:`~targetprop.tasks.Task.chance_error` on the training set (None: the task has no chance level, e.g. a
    reconstruction). Learned: a train error below ``COLLAPSE_LEARNED × chance``; collapsed: afterwards a train
    error at or above ``COLLAPSE_BACK × chance``.
    """
    if not chance:
        return None
    learned = False
    for h in rows:
        error = h["train_error"]
        if not math.isfinite(error):
            continue
        if error < COLLAPSE_LEARNED * chance:
            learned = True
        elif learned and error >= COLLAPSE_BACK * chance:
            return int(h["epoch"])
    return None


def has_diverged(row: dict[str, Any]) -> bool:
    """Whether a replica's metrics row says it diverged: its mini-batch cost or its train cost is not finite."""
    return not (math.isfinite(row["batch_loss"]) and math.isfinite(row["train_loss"]))


def seeds_cell(replicas: int, diverged: int, collapsed: int) -> str:
    """A table's seeds cell: the replicas, with how many diverged or collapsed, e.g. "3 (2 collapsed)"."""
    flagged = [f"{n} {word}" for n, word in ((diverged, "diverged"), (collapsed, "collapsed")) if n]
    return f"{replicas}" + (f" ({', '.join(flagged)})" if flagged else "")


@dataclass
class ReplicaHealth:
    """The trainer's watch over its replicas across epochs (``diverged`` is restored from a checkpoint)."""

    seeds: list[int]
    chance: float | None
    warn: Callable[[str], None]
    diverged: set[int] = field(default_factory=set)
    _blowing: set[int] = field(default_factory=set)
    _collapsed: set[int] = field(default_factory=set)

    def after_epoch(self, epoch: int, rows: list[dict[str, Any]], history: Sequence[dict[str, Any]], unit: str) -> bool:
        """Check the rows of ``epoch`` (one per replica; ``history`` holds every row so far, these included);
        warn of what is new. True when every replica has now diverged: the trainer stops."""
        seeds = self.seeds
        bad = {r for r, row in enumerate(rows) if has_diverged(row)}
        newly = bad - self.diverged
        self.diverged |= bad
        if newly and len(self.diverged) == len(rows):
            return True
        if newly:
            self.warn(
                f"warning: seed(s) {[seeds[r] for r in sorted(newly)]} diverged at epoch {epoch}; the other replicas go on"
            )
        loss = {r: max(row["batch_loss"], row["train_loss"]) for r, row in enumerate(rows)}
        blowing = [r for r in range(len(rows)) if r not in self.diverged | self._blowing and loss[r] > LOSS_WARNING]
        if blowing:
            self.warn(
                f"warning: seed(s) {[seeds[r] for r in blowing]} reached a loss of {max(loss[r] for r in blowing):.3g} "
                f"at epoch {epoch}: training is blowing up; consider lower learning rates or η̂"
            )
            self._blowing.update(blowing)
        collapsed = [
            r
            for r in range(len(rows))
            if r not in self.diverged | self._collapsed
            and collapse_epoch([h for h in history if h["replica"] == r], self.chance) == epoch
        ]
        if collapsed:
            errors = ", ".join(f"{rows[r]['train_error']:.2f}{unit}" for r in collapsed)
            self.warn(
                f"warning: seed(s) {[seeds[r] for r in collapsed]} fell back to chance at epoch {epoch} (train error "
                f"{errors}, chance {self.chance:.2f}{unit}) with a finite loss; consider lower learning rates or η̂"
            )
            self._collapsed.update(collapsed)
        return False
