"""Progress of long work on stderr: a live bar in a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import statistics


class Progress:
    """A live bar in a terminal, one plain line per epoch otherwise (both on stderr)."""

    def __init__(self, label: str, epochs: int, batches: int, enabled: bool = True):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.label, self.epochs, self.batches = label, epochs, batches
        self._bar = None
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
        if self._bar is not None:
            self._bar.update(self._task, completed=epoch * self.batches)

    def epoch_done(self, line: str) -> None:
        if self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def mean_std(values: list[float]) -> str:
    """``m±s`` over replicas (two decimals), or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f}±{statistics.stdev(values):.2f}"
