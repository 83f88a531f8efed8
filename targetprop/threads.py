"""How many CPU threads a run uses, when other programs share the machine.

PyTorch's CPU kernels run on an OpenMP team of one thread per core (libgomp in the CPU wheels). Its threads wait
for each other at the end of every parallel kernel, spinning first. When another program holds one of the cores,
the thread placed there runs only in the scheduler's slices, and every kernel waits for it: on 2 cores beside one
busy loop a BP epoch took ~4x as long (``benchmarks/contention.py``, PERFORMANCE.md), where a fair share of the
machine would cost at most 2x. With one thread fewer than the busy cores leave free, nothing waits for a
descheduled thread, and the run degrades in proportion.

``threads = "auto"`` (the default of ``train``, ``compare`` and ``reproduce``) measures, before the first epoch
and then about once a second between mini-batches, how many cores other processes kept busy (from ``/proc/stat`` less this process's own
CPU time) and uses the cores left, at least one. A number fixes the count. The count can change the last bits of
a result (PyTorch's parallel reductions split their sums by thread), not its statistics.
"""

from __future__ import annotations

import functools
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@functools.cache
def available_cores() -> int:
    """The cores this process may use: its CPU affinity, or fewer if torch was told so (OMP_NUM_THREADS). Read
    once, before any policy changed torch's thread count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, torch.get_num_threads()))


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ThreadPolicy:
    """``ThreadPolicy("auto")`` or ``ThreadPolicy(2)``: call :meth:`start` before training and :meth:`tick`
    after each mini-batch (or :meth:`update` at chosen moments); they set ``torch.set_num_threads``. ``threads``
    says the count in use."""

    def __init__(self, setting: int | str = "auto"):
        self.auto = setting == "auto"
        self.cores = available_cores()
        self.threads = self.cores if self.auto else int(setting)
        self._mark: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_seconds())

    def _others(self) -> float | None:
        """Cores other processes kept busy since the last sample."""
        now = self._sample()
        before, self._mark = self._mark, now
        if before is None or now is None or now[0] - before[0] < 0.05:
            return None
        wall = now[0] - before[0]
        return max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / wall)

    def _apply(self, threads: int) -> None:
        self.threads = max(1, min(self.cores, threads))
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def start(self) -> None:
        if not self.auto:
            self._apply(self.threads)
            return
        self._apply(self.cores)
        self._mark = self._sample()
        time.sleep(0.2)  # what the machine does right now, before this run adds to it
        self.update()

    def tick(self, every: float = 1.0) -> None:
        """:meth:`update` if ``every`` seconds have passed since the last measurement: called after each
        mini-batch, so that a long epoch follows a load that comes or goes in its middle."""
        if self.auto and self._mark is not None and time.monotonic() - self._mark[0] >= every:
            self.update()

    def update(self) -> None:
        """Use the cores that other processes left free over the last interval."""
        if not self.auto:
            return
        others = self._others()
        if others is not None:
            self._apply(self.cores - int(others + 0.5))


@contextmanager
def run_threads(setting: int | str, device: torch.device | str) -> Iterator[ThreadPolicy | None]:
    """The block runs at a run's ``threads`` setting: on the CPU the started policy is yielded (for :meth:`tick`
    and :meth:`update` inside), on a GPU None; the caller's thread count is given back after it."""
    before = torch.get_num_threads()
    policy = ThreadPolicy(setting) if torch.device(device).type == "cpu" else None
    try:
        if policy is not None:
            policy.start()
        yield policy
    finally:
        torch.set_num_threads(before)
