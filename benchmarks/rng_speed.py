"""The two random sources of a run (``rng = "torch"`` and ``rng = "philox"``): time of one draw of each kind.

    python benchmarks/rng_speed.py                          # CPU, one thread, the stochastic net's layer shape
    python benchmarks/rng_speed.py --device cuda --shape 100,1000

A draw is what a training step asks of :class:`targetprop.replicas.ReplicaRandom`: ``(R, *shape)`` normal or
uniform numbers, replica r from its own stream. ``torch`` fills each replica's slice from its ``torch.Generator``;
``philox`` computes a counter-based Philox4x32-10 stream per replica in tensor operations, which
``torch.compile`` traces into a captured GPU step but which, run eagerly, is integer arithmetic spelled out one
operation at a time. The table gives the median microseconds per draw over ``--repeats`` timings of ``--draws``
draws each, and philox's time as a multiple of torch's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from targetprop.replicas import ReplicaRandom


def median_us(draw: Callable[[], torch.Tensor], device: torch.device, draws: int, repeats: int) -> float:
    """Median over ``repeats`` of the microseconds per call of ``draw`` (``draws`` calls timed together)."""
    draw()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(draws):
            draw()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / draws * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as the long runs use)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--shape", default="100,200", help="one replica's draw, e.g. 100,200 (batch × units)")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(int(n) for n in args.shape.split(","))
    seeds = list(range(args.replicas))
    print(f"{args.replicas} replicas × {shape}, {device}, {args.threads} thread(s); µs per draw (median)")
    print("| draw | torch | philox | philox / torch |")
    print("|---|---:|---:|---:|")
    sources = {name: ReplicaRandom(seeds, "train", device, philox=name == "philox") for name in ("torch", "philox")}
    like = torch.empty((args.replicas, *shape), device=device)
    for kind in ("normal", "uniform"):
        us = {}
        for name, source in sources.items():
            draw = partial(source.normal, shape) if kind == "normal" else partial(source.uniform_like, like)
            us[name] = median_us(draw, device, args.draws, args.repeats)
        print(f"| {kind} | {us['torch']:.0f} | {us['philox']:.0f} | {us['philox'] / us['torch']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
