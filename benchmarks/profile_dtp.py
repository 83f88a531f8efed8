"""Where the time of one DTP epoch goes: the parts of a step, and the kernels, from ``torch.profiler``.

    python benchmarks/profile_dtp.py [--data-dir ../shared/data] [--device cpu] [--batches 500]

Trains DTP with the authors' settings on MNIST 784-240x7-10 tanh (batch 100, alternating schedule) for one epoch
(``--batches`` mini-batches of each phase; 500 is the whole training split) after a warm-up, under the profiler.
Prints the time of each labelled part of :meth:`targetprop.rules.tp.TargetPropagation.step` and the kernels
that take the most time. Without MNIST files it uses random data of the same shape (the times do not depend on it).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from targetprop import Network, ReplicaRandom, load_dataset
from targetprop.errors import TargetpropError
from targetprop.rules.dtp import DTP
from targetprop.trainer import train_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, default=500)
    p.add_argument("--rows", type=int, default=15, help="kernels to list")
    args = p.parse_args()
    device = torch.device(args.device)
    try:
        data = load_dataset("mnist", args.data_dir, device=device)
        x, y, source = data.train.x, data.train.y, "MNIST"
    except TargetpropError:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(50_000, 784, generator=gen).to(device)
        y = torch.randint(0, 10, (50_000,), generator=gen).to(device)
        source = "random data shaped like MNIST"
    net = Network.from_spec("784-240x7-10", "tanh", seeds=[0], device=device)
    rule = DTP(net, DTP.Config(), ReplicaRandom([0], "train", device))
    order = torch.arange(min(len(y), args.batches * 100), device=device).unsqueeze(0)
    train_epoch(rule, x, y, order[:, :2000], 100)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        _, _, seconds = train_epoch(rule, x, y, order, 100)
    wall = time.perf_counter() - start
    batches = order.shape[1] // 100
    print(
        f"DTP, 784-240x7-10 tanh, {source}, {device}, {torch.get_num_threads()} threads: one epoch of {batches} "
        f"mini-batches x 2 phases took {seconds:.2f} s under the profiler ({wall:.2f} s with its overhead)\n"
    )
    events = prof.key_averages()
    parts = sorted((e for e in events if e.key.startswith("tp:")), key=lambda e: -e.cpu_time_total)
    total = sum(e.cpu_time_total for e in parts)
    print(f"{'part of a step':32s} {'calls':>7s} {'ms total':>10s} {'ms / call':>10s} {'share':>6s}")
    for e in parts:
        print(
            f"{e.key[3:]:32s} {e.count:7d} {e.cpu_time_total / 1e3:10.1f} {e.cpu_time_total / 1e3 / e.count:10.3f} "
            f"{100 * e.cpu_time_total / total:5.1f}%"
        )
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
