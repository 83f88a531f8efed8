"""Running one group of trials (the replicas of one run): in this process, a spawned worker process or a Ray task.

A group is a plain ``GroupJob`` (a run config and its directory) and comes back as a ``GroupResult``, so that it
pickles to a worker and back. The executors share one small interface, ``submit(job) -> Future`` and ``close()``:
``LocalExecutor`` (this process, or a pool of spawned processes) and ``RayExecutor`` (a running Ray cluster).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targetprop.config import RunConfig
from targetprop.errors import ConfigError, DivergedError, TargetpropError
from targetprop.runs import RunDir, RunDirError


@dataclass
class GroupJob:
    """One run: its config (replica r = the r-th trial) and its directory."""

    config: RunConfig
    run_dir: str
    threads: int
    progress: bool = False
    """Print the trainer's line per epoch (a group trained in the sweep's own process)."""


@dataclass
class GroupResult:
    """The summary's ``per_replica`` entries of a group's run, or why the run failed."""

    per_replica: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


_DATASETS: dict[tuple, Any] = {}


def dataset_for(cfg: RunConfig):
    """The run's dataset, loaded once per process."""
    from targetprop.data import load_dataset

    key = (cfg.data, cfg.data_dir, cfg.n_valid, cfg.device, cfg.download)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(
            cfg.data, cfg.data_dir, device=cfg.device, download=cfg.download, n_valid=cfg.n_valid
        )
    return _DATASETS[key]


def run_group(job: GroupJob) -> GroupResult:
    """Train one group. A new run and an interrupted one are the same call: the trainer continues from the
    checkpoint if there is one. Training failures come back in the result; Ctrl-C is raised as KeyboardInterrupt."""
    import torch

    from targetprop.trainer import train

    torch.set_num_threads(job.threads)
    job.config = job.config.model_copy(update={"threads": job.threads})  # the sweep splits the cores itself
    start = time.perf_counter()
    run_dir = RunDir(job.run_dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(job.config.to_dict())
    try:
        result = train(job.config, dataset=dataset_for(job.config), run_dir=run_dir, resume=True, progress=job.progress)
        per_replica = result.summary["per_replica"]
    except DivergedError as e:
        per_replica = [{"diverged": True, "error": str(e)} for _ in job.config.seeds]
    except RunDirError as e:  # a full disk or a read-only folder fails every trial alike: stop the sweep
        sweep_dir = Path(job.run_dir).parent.parent
        raise RunDirError(
            f"{e.reason or e}; the sweep stops: continue it with `targetprop sweep --resume {sweep_dir}` once there "
            "is room"
        ) from None
    except TargetpropError as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # the trainer's Ctrl-C message names `train --resume`
            raise KeyboardInterrupt from None
        return GroupResult(error=str(e), seconds=time.perf_counter() - start)
    except Exception as e:
        return GroupResult(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - start)
    return GroupResult(per_replica, seconds=time.perf_counter() - start)


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the sweep process dies (a SIGKILL leaves no one to stop the workers), so a
    resumed sweep never trains a group next to an orphan still writing into it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def local_cpus() -> int:
    """The CPUs this process may use (fewer if OMP_NUM_THREADS says so): split between the worker processes."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, torch.get_num_threads())


class LocalExecutor:
    """Runs groups in this process (one at a time) or in spawned worker processes."""

    def __init__(self, processes: int):
        self.pool = None
        if processes > 1:
            ctx = multiprocessing.get_context("spawn")
            self.pool = cf.ProcessPoolExecutor(
                processes, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),)
            )

    def submit(self, job: GroupJob) -> cf.Future:
        if self.pool is not None:
            return self.pool.submit(run_group, job)
        future: cf.Future = cf.Future()
        future.set_result(run_group(job))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Runs each group as a Ray task on a running cluster, asking for as many CPUs as it uses threads."""

    def __init__(self, threads: int):
        import ray  # connected by connect_ray

        self.ray = ray
        self.task = ray.remote(num_cpus=threads, max_retries=0)(run_group)

    def submit(self, job: GroupJob) -> cf.Future:
        return self.task.remote(job).future()

    def close(self) -> None:
        self.ray.shutdown()


def connect_ray(address: str) -> int:
    """Connect to the Ray cluster at HOST:PORT; returns its number of CPUs. Fails fast when nothing answers."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: write HOST:PORT, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with `ray start --head --port {port}`"
        ) from None
    if host in ("127.0.0.1", "localhost", "::1"):
        # A head started on the loopback address (`ray start --head --node-ip-address=127.0.0.1`, with this variable
        # set) is reachable only by a driver that also keeps to the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'targetprop[ray]'") from None
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    return int(ray.cluster_resources().get("CPU", 1))
