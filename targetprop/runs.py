"""The run directory: what a run leaves on disk, written so that a kill never leaves a half-written file.

<out>/<name>/
  config.toml       the resolved configuration (every default filled in)
  metrics.jsonl     one JSON object per epoch and replica
  summary.json      final and best-validation errors per replica, their mean and spread
  checkpoint.pt     network, rule (optimiser state) and random streams after the last finished epoch
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomli_w
import torch

from targetprop.errors import ConfigError

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.toml", "metrics.jsonl", "summary.json", "checkpoint.pt"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """One run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path, name: str) -> RunDir:
        """A new, empty run directory ``out/name`` (a suffix is added if the name is taken)."""
        parent = Path(out)
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / name
        k = 1
        while True:
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                k += 1
                path = parent / f"{name}-{k}"

    @staticmethod
    def default_name(rule: str, data: str) -> str:
        return f"{rule}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, for ``--resume``."""
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise ConfigError(f"{str(path)!r} is not a run directory (no {CONFIG}); give the folder a run made")
        return run

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # --- files ---------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def write_config(self, config: dict[str, Any]) -> None:
        _atomic_write(self.path / CONFIG, lambda f: f.write(tomli_w.dumps(config).encode()))

    def read_config(self) -> dict[str, Any]:
        import tomllib

        return tomllib.loads((self.path / CONFIG).read_text())

    def append_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        with open(self.path / METRICS, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        lines = path.read_text().split("\n")
        lines.pop()  # "" after the final newline, else the tail of an append a kill cut short (no checkpoint has it)
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, epochs: int) -> list[dict[str, Any]]:
        """Keep the rows of the first ``epochs`` epochs (those a checkpoint covers); returns them."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        _atomic_write(self.path / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))
        return rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        _atomic_write(self.path / SUMMARY, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))

    def read_summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location=device, weights_only=False)
