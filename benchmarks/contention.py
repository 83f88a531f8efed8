"""CPU contention: how training time degrades when other processes take cores, per OpenMP / thread setting.

    python benchmarks/contention.py                   # BP and DTP, alone and beside 1 busy loop, 3 repeats
    python benchmarks/contention.py --quick           # 1 repeat, fewer mini-batches
    python benchmarks/contention.py --loads 0,1,2 --rules bp --json results/contention.json

The user-reported case: a 3-replica BP epoch (seeds 0,1,2) on Fashion-MNIST 784-256x6-10 tanh, mini-batches of 100,
ran ~5x slower beside one single-threaded busy loop (``python -c "while True: pass"``) on a 2-core machine, where
a fair share of the cores would cost at most 2x.

Every measurement runs in a fresh Python subprocess (``--worker``), so the environment variables of a configuration
(``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ...) are set before torch, and its OpenMP runtime, load. The worker loads
the data, builds the net with :func:`targetprop.trainer.build`, trains ``--warmup`` mini-batches untimed, then times
``--batches`` mini-batches (every pass of the rule's schedule: DTP's alternating schedule makes two passes) with
:func:`targetprop.trainer.train_epoch`. With load ``N``, N busy loops are started before the worker and killed after it
(so they also run during its start-up and warm-up). Runs are interleaved (repeat, configuration, load) so slow drift
of the machine spreads over all of them; the table gives medians and the range of the repeats.

``ratio`` is the loaded median over the same configuration's alone median; ``vs default alone`` divides by the
default configuration's alone median (what a user without contention gets today). ``cpu/wall`` is the worker's
CPU time (all threads, from getrusage) over wall time in the timed section (2.0: both cores busy, spinning
included); ``invol. cs`` the involuntary context switches of the worker during the timed section.

Other processes (anything but the worker and the busy loops) are measured during every run, from ``/proc/stat``
less the CPU time of this driver's children; a run where they kept more than ``--max-foreign`` cores busy on
average is retried (``--tries``) after waiting for the machine to go quiet, and left out of the table where a clean
repeat exists. ``--busy-delay S`` starts the busy loops S seconds after the worker (a load that arrives mid-run:
the worker's start-up and warm-up take ~3 s on 2 cores), ``--busy-for S`` stops them after S seconds (a load that
leaves); ``--batches`` may then exceed an epoch (the order wraps around the training set).

Measured on 2 cores (AMD EPYC VM, torch 2.13.0+cpu, libgomp; BP 300 mini-batches, DTP 80, medians of 3):
BP alone 3.48 s, beside one busy loop 13.90 s (3.99x); threads=1 5.20 / 5.28 s; auto 3.67 / 5.43 s;
DTP 2.35 / 8.43 s; auto 2.43 / 3.69 s. In an earlier run (default BP 3.47 / 13.84 s), OMP_WAIT_POLICY=PASSIVE
with 2 threads took 5.92 / 6.35 s and GOMP_SPINCOUNT=0 5.38 / 5.68 s: slower alone than one thread (4.88 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS: dict[str, tuple[dict[str, str], int]] = {
    # name: (environment set before torch loads, torch.set_num_threads argument; 0 = leave torch's default,
    # -1 = targetprop's automatic policy, ThreadPolicy("auto"): started before training, updated every --recheck
    # mini-batches of the timed section (the trainer updates it after every epoch))
    "default": ({}, 0),
    "threads=1": ({}, 1),
    "auto": ({}, -1),  # targetprop's default: ThreadPolicy("auto") (the cores other processes leave free)
    "PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "GOMP_SPINCOUNT=0": ({"GOMP_SPINCOUNT": "0"}, 0),
    "GOMP_SPINCOUNT=1k": ({"GOMP_SPINCOUNT": "1000"}, 0),
    "GOMP_SPINCOUNT=10k": ({"GOMP_SPINCOUNT": "10000"}, 0),
    "GOMP_SPINCOUNT=30k": ({"GOMP_SPINCOUNT": "30000"}, 0),
    "GOMP_SPINCOUNT=100k": ({"GOMP_SPINCOUNT": "100000"}, 0),
    "ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, 0),
}
"""Candidate settings. OpenMP variables that the parent's environment may set are cleared for every worker."""

OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

NET = {"data": "fashion-mnist", "arch": "784-256x6-10", "activation": "tanh", "seeds": [0, 1, 2], "batch_size": 100}

BUSY = "while True: pass"


# ---- worker: one timed measurement in its own process ---------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    import torch

    policy = None
    chosen: list[int] = []
    if args.threads == -1:
        from targetprop.threads import ThreadPolicy

        policy = ThreadPolicy("auto")
        t = time.perf_counter()
        policy.start()
        probe_seconds = time.perf_counter() - t
        chosen.append(policy.threads)
    elif args.threads:
        torch.set_num_threads(args.threads)
    from targetprop.config import make_config
    from targetprop.data import load_dataset
    from targetprop.trainer import build, train_epoch

    config = make_config(rule=args.rule, **NET)
    dataset = load_dataset(config.data, config.data_dir, n_valid=config.n_valid)
    _, rule = build(config, dataset)
    x, y = dataset.train.x, dataset.train.y
    n_seeds, batch = len(config.seeds), config.batch_size
    # the timed mini-batches may outnumber an epoch's: walk the training set again from its start
    order = (torch.arange(max(args.batches, args.warmup) * batch) % x.shape[0]).expand(n_seeds, -1)
    if args.warmup:
        train_epoch(rule, x, y, order[:, : args.warmup * batch], batch)
    before = resource.getrusage(resource.RUSAGE_SELF)
    if policy is not None:
        # the timed section includes the updates; the start-up probe (probe_seconds) is reported apart
        policy.update()  # a fresh interval: the warm-up's load
        chosen.append(policy.threads)
        start = time.perf_counter()
        for k in range(0, args.batches, args.recheck):
            train_epoch(rule, x, y, order[:, k * batch : min(k + args.recheck, args.batches) * batch], batch)
            policy.update()
            chosen.append(policy.threads)
        seconds = time.perf_counter() - start
    else:
        _, _, seconds = train_epoch(rule, x, y, order[:, : args.batches * batch], batch)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    libs = (
        sorted(
            {
                Path(line.split()[-1]).name
                for line in Path("/proc/self/maps").read_text().splitlines()
                if any(k in line for k in ("gomp", "iomp", "libomp"))
            }
        )
        if Path("/proc/self/maps").exists()
        else []
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "nivcsw": after.ru_nivcsw - before.ru_nivcsw,
                "threads": torch.get_num_threads(),
                **({"chosen_threads": chosen, "probe_seconds": probe_seconds} if policy is not None else {}),
                "openmp_libs": libs,
            }
        )
    )


# ---- driver --------------------------------------------------------------------------------------------------


def start_busy(n: int, delay: float = 0.0, duration: float = 0.0) -> list[subprocess.Popen[bytes]]:
    """``n`` busy loops, running before the worker starts; with ``delay``, each sleeps that long first; with
    ``duration``, each stops after that many seconds of spinning (else when killed, after the worker)."""
    code = BUSY
    if duration:
        code = f"import time\nend = time.monotonic() + {duration}\nwhile time.monotonic() < end: pass"
    if delay:
        code = f"import time; time.sleep({delay})\n{code}"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    if procs and not delay:
        time.sleep(0.3)
    return procs


def stop_busy(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def busy_cpu_seconds() -> float:
    """CPU seconds (all CPUs, not idle / iowait) the whole machine has spent since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this driver and its waited-for children (workers, busy loops)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) until other processes use under ``limit`` cores over one second; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        b0, o0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        foreign = (busy_cpu_seconds() - b0 - (own_cpu_seconds() - o0)) / (time.monotonic() - t0)
        if foreign < limit or time.monotonic() > deadline:
            return foreign


def measure(rule: str, config: str, load: int, batches: int, args: argparse.Namespace) -> dict:
    """One run; retried (after waiting for quiet) while other processes took over ``max_foreign`` cores on average."""
    best: dict | None = None
    max_foreign, tries = args.max_foreign, args.tries
    for attempt in range(tries):
        res = _measure_once(rule, config, load, batches, args)
        res["attempt"] = attempt
        if best is None or res["foreign"] < best["foreign"]:
            best = res
        if res["foreign"] <= max_foreign:
            break
        print(f"    (other processes used {res['foreign']:.2f} cores during the run ({res['seconds']:.2f}s); "
              "waiting for quiet and retrying)", flush=True)  # fmt: skip
        if attempt + 1 < tries:
            wait_quiet(max_foreign / 2, 120)
    assert best is not None
    best["clean"] = best["foreign"] <= max_foreign
    return best


def _measure_once(rule: str, config: str, load: int, batches: int, args: argparse.Namespace) -> dict:
    env_extra, threads = CONFIGS[config]
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", "--rule", rule, "--threads", str(threads),
           "--batches", str(batches), "--warmup", str(args.warmup),
           "--recheck", str(args.recheck)]  # fmt: skip
    b0, o0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    busy = start_busy(load, args.busy_delay, args.busy_for)
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        stop_busy(busy)
    foreign = (busy_cpu_seconds() - b0 - (own_cpu_seconds() - o0)) / (time.monotonic() - t0)
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({rule}, {config}, load {load}):\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["foreign"] = max(0.0, foreign)
    return res


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _rng(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 repeat, half the mini-batches")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rules", default="bp,dtp", help="comma-separated rules (bp, dtp, ...)")
    p.add_argument("--configs", default=None, help=f"comma-separated, of: {', '.join(CONFIGS)}")
    p.add_argument("--dtp-configs", default="default,threads=1,PASSIVE", help="configurations for rules other than bp")
    p.add_argument("--loads", default="0,1", help="numbers of busy loops to run beside the worker")
    p.add_argument("--batches", type=int, default=300, help="timed BP mini-batches (other rules: --batches-other)")
    p.add_argument("--batches-other", type=int, default=80, help="timed mini-batches for rules other than bp")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--max-foreign",
        type=float,
        default=0.1,
        help="retry a run when other processes used more than this many cores on average during it",
    )
    p.add_argument("--tries", type=int, default=3, help="attempts per run (see --max-foreign)")
    p.add_argument(
        "--busy-delay",
        type=float,
        default=0.0,
        help="start the busy loops this many seconds after the worker (a load that arrives mid-run) instead of before",
    )
    p.add_argument(
        "--busy-for",
        type=float,
        default=0.0,
        help="the busy loops stop after this many seconds (a load that leaves mid-run); 0: they run to the end",
    )
    p.add_argument("--recheck", type=int, default=50, help="auto: update the thread policy every N mini-batches")
    p.add_argument("--json", default=None, help="write every run's figures here")
    # worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rule", default="bp", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return

    repeats = 1 if args.quick else args.repeats
    scale = 0.5 if args.quick else 1.0
    rules = args.rules.split(",")
    loads = [int(v) for v in args.loads.split(",")]
    bp_configs = args.configs.split(",") if args.configs else ["default", "threads=1", "PASSIVE", "GOMP_SPINCOUNT=0"]
    other_configs = args.dtp_configs.split(",")
    for c in bp_configs + other_configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown configuration {c!r}; choose from: {', '.join(CONFIGS)}")
    cases = [(r, c) for r in rules for c in (bp_configs if r == "bp" else other_configs)]
    batches = {r: max(1, int((args.batches if r == "bp" else args.batches_other) * scale)) for r in rules}

    quiet = wait_quiet(args.max_foreign / 2, 60)
    print(f"other processes: {quiet:.2f} cores busy over 1 s before start")
    load1 = os.getloadavg()[0]
    print(
        f"cpus {os.cpu_count()}, load average (1 min) before start: {load1:.2f}"
        + ("  ** other processes busy **" if quiet > args.max_foreign else "")
    )
    print(f"net: {NET}; timed mini-batches: {batches}; warm-up {args.warmup}; repeats {repeats}; loads {loads}"
          + (f"; busy loops start {args.busy_delay}s after the worker" if args.busy_delay else "")
          + (f"; busy loops stop after {args.busy_for}s" if args.busy_for else ""))  # fmt: skip

    # SIGTERM / SIGHUP unwind like Ctrl-C, so the busy loops are killed (finally in _measure_once)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    runs: dict[tuple[str, str, int], list[dict]] = {}
    started = time.perf_counter()

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({
                "net": NET, "batches": batches, "warmup": args.warmup, "loads": loads, "load_before": load1,
                "busy_delay": args.busy_delay, "busy_for": args.busy_for, "max_foreign": args.max_foreign,
                "recheck": args.recheck,
                "runs": [{"rule": r, "config": c, "load": n, **res} for (r, c, n), rs in runs.items() for res in rs],
            }, indent=1))  # fmt: skip

    for rep in range(repeats):
        for rule, config in cases:
            for load in loads:
                res = measure(rule, config, load, batches[rule], args)
                runs.setdefault((rule, config, load), []).append(res)
                print(f"  [{time.perf_counter() - started:6.1f}s] rep {rep} {rule:4s} {config:18s} load {load}: "
                      f"{res['seconds']:.2f}s  cpu/wall {res['cpu'] / res['seconds']:.2f}  invol.cs {res['nivcsw']}"
                      f"  others {res['foreign']:.2f} cores"
                      + (f"  threads chosen {res['chosen_threads']} (probe {res['probe_seconds']:.2f}s)"
                         if "chosen_threads" in res else ""),
                      flush=True)  # fmt: skip
                save()  # after every run, so an interrupted benchmark keeps what it measured
    dirty = sum(not r["clean"] for rs in runs.values() for r in rs)
    runs = {k: ([r for r in rs if r["clean"]] or rs) for k, rs in runs.items()}  # drop contaminated runs if any clean
    if dirty:
        print(
            f"\n{dirty} run(s) stayed contaminated by other processes after {args.tries} tries; left out of the "
            "table where a clean repeat exists"
        )
    first = next(iter(runs.values()))[0]
    defaults = [rs[0]["threads"] for (_, c, _), rs in runs.items() if c == "default"]
    print(f"\nOpenMP libraries mapped in the worker: {first['openmp_libs']}"
          + (f"; torch's default thread count: {defaults[0]}" if defaults else ""))  # fmt: skip

    header = (
        f"{'rule':5s} {'configuration':19s} {'threads':>7s} "
        + " ".join(f"{'s load ' + str(n):>9s} {'(range)':>11s} {'cpu/wall':>8s}" for n in loads)
        + "".join(f" {'ratio ' + str(n):>8s} {'vs dflt':>8s}" for n in loads if n)
        + f" {'alone vs dflt':>13s}"
    )
    print("\n" + header)
    print("-" * len(header))
    for rule, config in cases:
        threads = "auto" if CONFIGS[config][1] < 0 else str(runs[(rule, config, loads[0])][0]["threads"])
        med = {n: _med([r["seconds"] for r in runs[(rule, config, n)]]) for n in loads}
        row = f"{rule:5s} {config:19s} {threads:>7s} "
        row += " ".join(
            f"{med[n]:9.2f} {_rng([r['seconds'] for r in runs[(rule, config, n)]]):>11s} "
            f"{_med([r['cpu'] / r['seconds'] for r in runs[(rule, config, n)]]):8.2f}"
            for n in loads
        )
        default_key = (rule, "default")
        dflt = (
            {n: _med([r["seconds"] for r in runs[(rule, "default", n)]]) for n in loads}
            if default_key in cases
            else None
        )
        for n in loads:
            if n:
                base = med.get(0)
                row += f" {med[n] / base:8.2f}" if base else f" {'':8s}"
                row += f" {med[n] / dflt[0]:8.2f}" if dflt and 0 in dflt else f" {'':8s}"
        row += f" {med[0] / dflt[0]:13.2f}" if dflt and 0 in med else ""
        print(row)
    kept = [r for rs in runs.values() for r in rs]
    print(
        f"\nother processes during the kept runs: median {_med([r['foreign'] for r in kept]):.3f} cores, "
        f"max {max(r['foreign'] for r in kept):.3f}; runs retried: {sum(r['attempt'] > 0 for r in kept)}"
    )
    print(f"total {time.perf_counter() - started:.0f}s, load average (1 min) at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
