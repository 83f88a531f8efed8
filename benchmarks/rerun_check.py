"""Rerun the first epochs of a committed `reproduce` run with today's code and compare them with what it recorded.

    python benchmarks/rerun_check.py results/reproduce/NAME [--epochs N] [--seeds 0-2] [--threads 1] [--data-dir D]
                                     [--as-recorded]

The folder's ``experiment.toml`` names the experiment, its scale, its methods and its ``--set`` settings; each
method is run again with those, for the seeds asked (default: all of the folder's, since the number of replicas in
one process can change the rounding), up to the first epoch its ``metrics.jsonl`` records (default; the stochastic
net evaluates every 20 epochs), in a temporary directory, and stopped once that epoch is written (the auto-encoder
would go on to its classifiers). Per method it prints whether the rerun's metrics of those epochs equal the
recorded ones, how far they moved, and which settings of ``config.toml`` differ from today's. A folder made before a
rule's default changed (the stochastic net's σ, 0.5 until 2026-12-06) reruns with today's value and says so;
``--as-recorded`` gives each method back the settings its ``config.toml`` records (the rule's and the run's, such as
evaluation and data order; not device, threads or logging), as ``--set`` assignments named in the table, so that
what is compared is the code, not the defaults.

What to expect (REPRODUCTION.md, "What a rerun gives"): with the same seeds in one process, the same thread count
and the same kind of CPU, today's code repeats a run to the last digit; anything else rounds differently at first,
which sign and Bernoulli units amplify within one epoch and smooth units over many.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from targetprop.replicas import parse_seeds
from targetprop.runs import RunDir, metric_values

RUN_KEYS = {"epochs", "seeds", "threads", "out", "name", "data_dir"}
"""Settings that say where and how long a run went, not what it computed."""

KEPT_AS_TODAY = RUN_KEYS | {"device", "download", "checkpoint_seconds", "tensorboard", "diagnostics"}
"""Settings ``--as-recorded`` leaves as the rerun gives them: where and how it runs and what it logs."""


def metric_rows(run: Path, last_epoch: int | None = None) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(epoch, seed): metrics}`` of a run directory's ``metrics.jsonl`` (rows up to ``last_epoch`` if given)."""
    return {
        (row["epoch"], row["seed"]): metric_values(row)
        for row in RunDir(run).read_metrics().rows
        if "seed" in row and (last_epoch is None or row["epoch"] <= last_epoch)
    }


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def toml_value(value: Any) -> str:
    """``value`` as the right-hand side of a ``--set KEY=VALUE`` (TOML)."""
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def recorded_assignments(experiment: dict[str, Any], method: str, recorded: dict[str, Any]) -> list[str]:
    """``KEY=VALUE`` for each setting that the folder's ``config.toml`` records and today's experiment gives another
    value (a default changed since the run), the folder's ``--set`` assignments applied to both: the rule's settings
    and the run's (evaluation, noise, data order), but not where the rerun runs or what it logs (``KEPT_AS_TODAY``)."""
    from targetprop.experiments import get_experiment
    from targetprop.reproduce import method_config

    found = get_experiment(experiment["experiment"])
    chosen = next(m for m in found.methods if m.name == method)
    today = flat(
        method_config(
            found, chosen, scale=experiment.get("scale", "full"), assignments=experiment.get("set", [])
        ).to_dict()
    )
    return [
        f"{key}={toml_value(value)}"
        for key, value in flat(recorded).items()
        if key not in KEPT_AS_TODAY and key in today and today[key] != value
    ]


def run_until(cmd: list[str], run: Path, epoch: int, seeds: int, log: Path) -> None:
    """Run ``cmd`` until the run directory ``run`` holds ``epoch`` for every seed (then SIGTERM) or it ends."""
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None:
            time.sleep(1.0)
            if sum(e == epoch for e, _ in metric_rows(run, epoch)) >= seeds:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    if not metric_rows(run):
        sys.exit(f"error: the rerun wrote no metrics; its log:\n{log.read_text()[-2000:]}")


def compare(new: dict, old: dict) -> tuple[int, float, float, bool]:
    """Rows compared, the largest |Δ| of an error metric (points of %), the largest relative |Δ| of a loss, and
    whether every shared number is equal."""
    rows, err_delta, loss_rel, identical = 0, 0.0, 0.0, True
    for key, row in new.items():
        if key not in old:
            continue
        rows += 1
        for name, value in row.items():
            ref = old[key].get(name)
            if not isinstance(value, float) or not isinstance(ref, float):  # per-layer lists are not compared
                continue
            if math.isnan(value) and math.isnan(ref):
                continue
            identical &= value == ref
            if name.endswith("error"):
                err_delta = max(err_delta, abs(value - ref))
            elif name.endswith("loss"):
                loss_rel = max(loss_rel, abs(value - ref) / max(abs(ref), 1e-12))
    return rows, err_delta, loss_rel, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder that `targetprop reproduce` wrote (or one of results/)")
    parser.add_argument("--epochs", type=int, help="epochs to rerun (default: the first epoch the run recorded)")
    parser.add_argument(
        "--seeds", help="seeds to rerun, e.g. 0-2 (default: the folder's; fewer replicas may round differently)"
    )
    parser.add_argument("--threads", default="1", help="CPU threads of the rerun (default 1)")
    parser.add_argument("--data-dir", default=os.environ.get("TARGETPROP_DATA", "../shared/data"))
    parser.add_argument(
        "--as-recorded",
        action="store_true",
        help="rerun with the settings the folder recorded where today's defaults differ",
    )
    args = parser.parse_args()

    experiment = tomllib.loads((args.folder / "experiment.toml").read_text())
    seeds = args.seeds or ",".join(str(s) for s in experiment["seeds"])
    n_seeds = len(parse_seeds(seeds))
    sets = [arg for assignment in experiment.get("set", []) for arg in ("--set", assignment)]
    print(f"{args.folder}: {experiment['experiment']}, seeds {seeds}, {args.threads} thread(s)")
    print("| method | epochs | rows | identical | max Δ error (points) | max relative Δ loss | settings that differ |")
    print("|---|---:|---:|---|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="rerun-check-") as tmp:
        methods = experiment.get("methods") or sorted(p.parent.name for p in args.folder.glob("*/metrics.jsonl"))
        for method in methods:
            recorded = metric_rows(args.folder / method)
            epochs = args.epochs or min(epoch for epoch, _ in recorded)
            recorded_config = RunDir(args.folder / method).read_config()
            restored = recorded_assignments(experiment, method, recorded_config) if args.as_recorded else []
            restore = [arg for assignment in restored for arg in ("--set", assignment)]
            cmd = [sys.executable, "-m", "targetprop", "reproduce", experiment["experiment"], "--methods", method,
                   "--scale", experiment.get("scale", "full"), "--seeds", seeds, "--epochs", str(epochs), "--threads", args.threads,
                   "--data-dir", args.data_dir, "--out", tmp, "--name", method, *sets, *restore]  # fmt: skip
            rerun = Path(tmp, method, method)
            run_until(cmd, rerun, epochs, n_seeds, Path(tmp, f"{method}.log"))
            rows, err_delta, loss_rel, identical = compare(metric_rows(rerun, epochs), recorded)
            new_cfg = flat(RunDir(rerun).read_config())
            old_cfg = flat(recorded_config)
            differ = sorted(k for k in old_cfg if k not in RUN_KEYS and new_cfg.get(k) != old_cfg[k])
            added = sorted(k for k in new_cfg if k not in old_cfg and k not in RUN_KEYS)
            settings = ", ".join(f"{k}: {old_cfg[k]!r} → {new_cfg.get(k)!r}" for k in differ) or "none"
            if added:
                settings += f" (keys added since: {', '.join(added)})"
            if restored:
                settings += f" (restored from the record: {', '.join(restored)})"
            print(f"| {method} | {epochs} | {rows} | {'yes' if identical and rows else 'no'} | {err_delta:.3f} | "
                  f"{loss_rel:.1e} | {settings} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
