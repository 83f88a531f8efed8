"""The run directory: what a run leaves on disk, written so that neither a kill nor a full disk leaves a
half-written file, read so that nothing in it can run code.

<out>/<name>/
  config.toml              the resolved configuration (every default filled in)
  metrics.jsonl            one JSON object per epoch and replica
  summary.json             final and best-validation errors per replica, their mean and spread
  checkpoint.safetensors   after the last finished epoch: network, rule state (optimiser moments, feedback
                           matrices), random streams, and in its JSON header the epoch, the configuration it was
                           trained with and every metrics row so far (see :mod:`targetprop.checkpoint`)
  .lock                    held by the one process writing here (see :mod:`targetprop.lock`)

Every file but ``metrics.jsonl`` is replaced whole by an atomic rename. ``metrics.jsonl`` is appended to, so a kill
or a full disk can tear its last line; the checkpoint holds the same rows, and resuming rewrites the file from it.
Any failure to write becomes a one-line :class:`RunDirError` naming the file and the cause.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch

from targetprop import checkpoint
from targetprop.errors import ConfigError, TargetpropError, warn
from targetprop.lock import FolderLock

CONFIG, METRICS, SUMMARY = "config.toml", "metrics.jsonl", "summary.json"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
"""What targetprop 0.1 wrote (``torch.save``): read with the restricted unpickler, replaced at the next save."""


class RunDirError(TargetpropError):
    """A run directory that cannot be written (full disk, read-only, permissions) or is damaged."""

    reason: str = ""
    """The cause alone, without the advice on how to continue."""


def write_failure(path: Path, e: OSError) -> RunDirError:
    """What failed and why; the caller adds how to go on (resume, another --out), which only it knows."""
    room = "; free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return RunDirError(f"cannot write {path}: {e.strerror or e}{room}")


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file in the same folder and one rename: old or new, never half."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode an open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_failure(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            Path(tmp).unlink(missing_ok=True)


def check_name(name: str) -> str:
    """A run directory name is one plain folder name: it cannot climb out of ``--out``."""
    if not name or name in (".", "..") or re.search(r"[/\\\x00]", name) or name != name.strip():
        raise ConfigError(f"run name {name!r} must be a plain folder name (no '/', not '.' or '..')")
    return name


@dataclass
class Metrics:
    """The rows of ``metrics.jsonl`` and what was wrong with the file, if anything."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    """Line numbers (1-based) that are not a JSON object."""
    torn: bool = False
    """The last line has no newline: an append cut short by a kill or a full disk."""


BOOKKEEPING = ("epoch", "replica", "seed", "seconds", "changed")
"""Columns of a metrics row that say which row it is (or how long its epoch took), not how the network did."""


def metric_values(row: dict[str, Any]) -> dict[str, float | list[float]]:
    """The metrics of one ``metrics.jsonl`` row: every column but :data:`BOOKKEEPING` that holds a number, or a
    non-empty list of numbers (one per layer, e.g. ``angle_deg``); anything else (text, tables) is left out.
    NaN and ±inf are kept: a diverged replica's value, or a layer a metric does not apply to."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    out: dict[str, float | list[float]] = {}
    for key, value in row.items():
        if key in BOOKKEEPING:
            continue
        if number(value):
            out[key] = float(value)
        elif isinstance(value, list) and value and all(number(v) for v in value):
            out[key] = [float(v) for v in value]
    return out


def continue_command(folder: Path) -> str | None:
    """The command that continues ``folder``, by the file that says what made it: a reproduce directory
    (``experiment.toml``), a comparison (``compare.toml``), a run (``config.toml``) or a sweep (``space.toml``);
    None for any other folder."""
    from targetprop.comparison import COMPARE_FILE
    from targetprop.reproduce import EXPERIMENT_FILE
    from targetprop.sweep.study import SPACE_FILE

    for marker, command in (
        (EXPERIMENT_FILE, "reproduce"),
        (COMPARE_FILE, "compare"),
        (CONFIG, "train"),
        (SPACE_FILE, "sweep"),
    ):
        if (folder / marker).is_file():
            return f"targetprop {command} --resume {folder}"
    return None


class RunDir:
    """One run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path, name: str) -> RunDir:
        """A new, empty run directory ``out/name``.

        A taken name gets a suffix (``name-2``, ``name-3``, ...) and a note on stderr: the same command
        run twice does not overwrite the first run. The note names the command that would continue the taken
        folder instead (:func:`continue_command`), where it is one that can be continued.
        """
        parent = Path(out)
        check_name(name)
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--out {str(parent)!r} is a file, not a folder; give a folder for the run directories")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            path = parent / name
            k = 1
            while True:
                try:
                    path.mkdir()
                    if k > 1:
                        taken = parent / name
                        command = continue_command(taken)
                        again = f" (to continue {taken} instead: {command})" if command else ""
                        warn(f"note: {taken} exists; this run writes {path}{again}")
                    return cls(path)
                except FileExistsError:
                    k += 1
                    path = parent / f"{name}-{k}"
        except OSError as e:
            if isinstance(e, NotADirectoryError):
                raise ConfigError(f"--out {str(parent)!r} lies under a file, not a folder") from None
            raise RunDirError(
                f"cannot create a run directory in {parent}: {e.strerror or e}; give another --out"
            ) from None

    @staticmethod
    def default_name(rule: str, data: str) -> str:
        return f"{rule}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, for ``--resume`` and ``inspect``."""
        run = cls(path)
        if not run.path.exists():
            raise ConfigError(f"{str(path)!r} does not exist; give the folder a run made")
        if not run.path.is_dir():
            raise ConfigError(f"{str(path)!r} is a file, not a run directory; give the folder a run made")
        if not (run.path / CONFIG).is_file():
            raise ConfigError(f"{str(path)!r} is not a run directory (no {CONFIG}); give the folder a run made")
        return run

    def lock(self) -> FolderLock:
        """The lock that makes this process the directory's one writer (``with run_dir.lock(): ...``)."""
        return FolderLock(self.path, "run directory")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # --- config and summary ----------------------------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.path / CONFIG, lambda f: f.write(tomli_w.dumps(config).encode()))

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path} is damaged ({str(e).splitlines()[0]}); restore it or start a new run") from None
        except OSError as e:
            raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.path / SUMMARY, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))

    def read_summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return None  # rewritten from the metrics at the end of the run
        return summary if isinstance(summary, dict) else None

    # --- metrics ---------------------------------------------------------------------------------------------

    def append_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        path = self.path / METRICS
        try:
            with open(path, "a") as f:
                f.write("".join(json.dumps(row) + "\n" for row in rows))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_failure(path, e) from None

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        atomic_write(self.path / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))

    def read_metrics(self) -> Metrics:
        """Every row that reads as a JSON object with an epoch and a replica; the damage found, if any."""
        path = self.path / METRICS
        out = Metrics()
        if not path.exists():
            return out
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
        lines = text.split("\n")
        tail = lines.pop()  # "" after the final newline, else an append cut short
        out.torn = tail.strip() != ""
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                out.damaged.append(number)
                continue
            if isinstance(row, dict) and isinstance(row.get("epoch"), int) and isinstance(row.get("replica"), int):
                out.rows.append(row)
            else:
                out.damaged.append(number)
        return out

    # --- checkpoint ------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        """Where the checkpoint is (an old run's ``checkpoint.pt`` until its next save) or will be."""
        legacy = self.path / LEGACY_CHECKPOINT
        current = self.path / CHECKPOINT
        return legacy if legacy.exists() and not current.exists() else current

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists() or (self.path / LEGACY_CHECKPOINT).exists()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        data = checkpoint.dumps(state)
        atomic_write(self.path / CHECKPOINT, lambda f: f.write(data))
        legacy = self.path / LEGACY_CHECKPOINT
        try:
            legacy.unlink(missing_ok=True)  # superseded
        except OSError as e:
            raise write_failure(legacy, e) from None

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The last checkpoint, or None before the first epoch ended. Never runs code from the file."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            if path.name == LEGACY_CHECKPOINT:
                return checkpoint.load_legacy(path, device)
            return checkpoint.load(path, device)
        except checkpoint.CheckpointError as e:
            raise RunDirError(
                f"{e}; this run cannot continue from it: restore the file from a copy, or start the run again"
            ) from None

    def checkpoint_header(self) -> dict[str, Any] | None:
        """The checkpoint's epoch, configuration and metrics without its tensors (None for none or an old one)."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        try:
            return checkpoint.read_header(path)
        except checkpoint.CheckpointError as e:
            raise RunDirError(f"{e}; restore the file from a copy, or start the run again") from None
