"""TensorBoard scalars: every metric of every epoch of a run, written under ``RUN/tensorboard/`` (the run key
``tensorboard``; ``--tensorboard`` on ``train``, ``compare`` and ``reproduce``).

Each metrics row (one per epoch and replica) gives, for every metric m it holds (:func:`targetprop.runs.metric_values`),
the scalar m at step = epoch, tagged

    m/seed{s}               a number (``test_error/seed0``)
    m/layer{i}/seed{s}      the i-th entry of a per-layer list, i = 1, 2, ... as in W_i (``angle_deg/layer1/seed0``)

so TensorBoard puts each metric in a section of its own with one curve per seed (and layer). The writer is an
``on_epoch`` callback of :func:`targetprop.trainer.train`: it sees the rows the epoch appended to ``metrics.jsonl``,
after the checkpoint that holds them, and flushes them to disk before training goes on. A resumed run opens a new
event file in the same folder, which TensorBoard reads after the first: the curves continue.

The ``tensorboard`` package is an optional extra (``pip install 'targetprop[tensorboard]'``), imported only when a
run asks for it; without it the run is refused before anything is written (:func:`require`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from targetprop.errors import ConfigError
from targetprop.runs import metric_values

FOLDER = "tensorboard"
MISSING = "--tensorboard needs the tensorboard package: pip install 'targetprop[tensorboard]'"


def require() -> type:
    """``SummaryWriter``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(MISSING) from None
    return SummaryWriter


def scalars(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The (tag, value) pairs of one metrics row."""
    seed = row.get("seed", row.get("replica"))
    for key, value in metric_values(row).items():
        if isinstance(value, list):
            for i, v in enumerate(value, start=1):
                yield f"{key}/layer{i}/seed{seed}", v
        else:
            yield f"{key}/seed{seed}", value


class TensorBoardLog:
    """An ``on_epoch`` callback that writes each epoch's rows as scalars under ``<run directory>/tensorboard/``
    (the folder is made at the first epoch's end), then calls ``then`` (another callback) if given."""

    def __init__(self, then: Callable[[int, dict[str, Any]], None] | None = None):
        self._writer_class = require()
        self._then = then
        self._writer: Any = None

    def __call__(self, epoch: int, info: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(Path(info["run_dir"]) / FOLDER))
        for row in info["rows"]:
            for tag, value in scalars(row):
                self._writer.add_scalar(tag, value, global_step=epoch)
        self._writer.flush()
        if self._then is not None:
            self._then(epoch, info)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
