"""Progress of long work on stderr: a live bar in a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import statistics
import time

from targetprop.console import print_line


class Progress:
    """A live bar in a terminal, one plain line per epoch otherwise (both on stderr).

    Both say how long the rest will take: the bar in its own column, each plain line (a log file of a run left
    in the background) at its end, from the wall time of the epochs this process has run so far (evaluation
    and checkpoints included).
    """

    def __init__(self, label: str, epochs: int, batches: int, enabled: bool = True):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.label, self.epochs, self.batches = label, epochs, batches
        self._bar = None
        self._done = self._first = 0
        self._since = time.monotonic()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=epochs * batches)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def start_at(self, epoch: int) -> None:
        self._done = self._first = epoch
        self._since = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=epoch * self.batches)

    def epoch_done(self, line: str) -> None:
        self._done += 1
        if not self.enabled:
            return
        if not self.live and self._done < self.epochs:
            per_epoch = (time.monotonic() - self._since) / (self._done - self._first)
            line = f"{line}; {time_left(per_epoch * (self.epochs - self._done))} left"
        print_line(self.console, line)  # a line of a log: never wrapped, no markup read into it

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def mean_std(values: list[float]) -> str:
    """``m±s`` over replicas (two decimals), or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f}±{statistics.stdev(values):.2f}"


def time_left(seconds: float) -> str:
    """``about 2 h 05 min``, ``about 12 min``, ``about 40 s``, ``under 1 s``."""
    seconds = round(seconds)
    if seconds < 1:
        return "under 1 s"
    if seconds < 60:
        return f"about {seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"
