"""One writer per folder: an advisory lock that a killed process cannot leave behind.

The lock is ``fcntl.flock`` on a file ``.lock`` inside the folder. The kernel releases it when the holding process
ends, however it ends (SIGKILL, a crash, a power-off of a network client aside), so there is nothing stale to
clean up. The file also says who holds it (process id, host, command, start time), which a second writer prints
in its one-line error; that text is only informative and is never trusted to decide anything.

Locks are re-entrant within a process: the command line takes the lock of a run directory before it reads the
checkpoint, and the trainer it calls takes it again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from targetprop.errors import TargetpropError

LOCK_FILE = ".lock"


class LockedError(TargetpropError):
    """Another process is writing to the folder."""


_held: dict[Path, tuple[IO[str], int]] = {}


class FolderLock:
    """``with FolderLock(folder, "run directory"):`` holds ``folder/.lock`` for this process."""

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder = Path(folder).resolve()
        self.what = what

    def acquire(self) -> None:
        import fcntl

        if self.folder in _held:
            handle, count = _held[self.folder]
            _held[self.folder] = (handle, count + 1)
            return
        path = self.folder / LOCK_FILE
        try:
            handle = open(path, "a+")  # noqa: SIM115 (held until release); "a+" keeps the holder's text
        except OSError as e:
            raise LockedError(f"cannot open {path} to lock the {self.what}: {e.strerror or e}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise LockedError(
                f"{self.folder} is in use by {holder}; wait for it to finish or stop it, then try again"
            ) from None
        try:  # who holds it, for the next process's error message
            handle.seek(0)
            handle.truncate()
            handle.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "command": " ".join(["targetprop", *sys.argv[1:]])[:300],
                        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    }
                )
            )
            handle.flush()
        except OSError:  # a full disk: the lock holds all the same, only the description is missing
            pass
        _held[self.folder] = (handle, 1)

    def release(self) -> None:
        if self.folder not in _held:
            return
        handle, count = _held[self.folder]
        if count > 1:
            _held[self.folder] = (handle, count - 1)
            return
        del _held[self.folder]
        handle.close()  # closing the descriptor releases the flock

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _not_inherited() -> None:
    """In a forked child: close the child's copies of the held locks' files. A flock belongs to the open file, which
    a fork shares, so a child that outlives its parent (an SVM fit in :mod:`targetprop.probe`, the parent killed)
    would keep the folder locked until it ends. Closing a copy leaves the parent's lock as it is."""
    for handle, _ in _held.values():
        handle.close()
    _held.clear()


os.register_at_fork(after_in_child=_not_inherited)


def holder(folder: str | Path) -> str | None:
    """Who writes to ``folder`` now, or None. Takes a shared lock for an instant (never blocks a writer for
    longer), so ``targetprop inspect`` can tell a run in progress from a stopped one."""
    import fcntl

    path = Path(folder) / LOCK_FILE
    if Path(folder).resolve() in _held:
        return "this process"
    try:
        handle = open(path)  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {int(info['pid'])} on {info['host']} (`{info['command']}`, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
