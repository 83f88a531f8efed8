"""Subnormal floats: one optimiser update with and without flushing them to zero (targetprop.subnormals).

    python benchmarks/subnormals.py                 # the discrete experiment's net, 3 replicas, one thread
    python benchmarks/subnormals.py --threads 2 --steps 100

The state is the one of the ``discrete`` experiment's DTP run: the forward parameters of 784-500-500-10 for 3
replicas (648,010 each) under the authors' centered RMSprop with momentum (``targetprop.optim``). The gradient is
built so that the state looks like that run's checkpoint at epoch 146, where 9.2 % of ``grad_avg``, 9.4 % of
``square_avg`` and 10.5 % of ``velocity`` were subnormal: 10 % of the entries get a subnormal gradient (1e-39, a
product of small factors behind saturated units), 10 % a gradient whose square is subnormal (1e-21), 6 % none, the
rest N(0, 1e-3²). ``--warmup`` untimed steps fill the running averages
first; then flushing off and on alternate, ``--repeats`` times, ``--steps`` updates each, and the table gives the
median milliseconds per update.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from targetprop.optim import CenteredRMSpropMomentum
from targetprop.subnormals import flushing

SIZES = [(500, 784), (500,), (500, 500), (500,), (10, 500), (10,)]


def subnormal_fraction(tensors: list[torch.Tensor]) -> float:
    tiny = torch.finfo(torch.float32).tiny
    count = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)
    return count / sum(t.numel() for t in tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    params = [torch.zeros(args.replicas, *s) for s in SIZES]
    opt = CenteredRMSpropMomentum(params, lr=torch.full((args.replicas,), 6.6e-4))
    grads = []
    for p in params:
        g = torch.randn(p.shape, generator=gen) * 1e-3
        kind = torch.rand(p.shape, generator=gen)
        g[kind < 0.26] = 1e-21  # its square is subnormal
        g[kind < 0.16] = 1e-39  # itself subnormal (a product of small factors)
        g[kind < 0.06] = 0.0  # no gradient at all
        grads.append(g)

    before = flushing()
    times: dict[bool, list[float]] = {False: [], True: []}
    torch.set_flush_denormal(False)
    for _ in range(args.warmup):
        opt.step(grads)
    shares = ", ".join(f"{name} {subnormal_fraction(opt.state[name]):.1%}" for name in opt.state_names)
    print(f"subnormal share of the optimiser state after {args.warmup} steps: {shares}")
    saved = {name: [t.clone() for t in opt.state[name]] for name in opt.state_names}
    try:
        for _ in range(args.repeats):
            for flush in (False, True):
                for name in opt.state_names:  # every measurement starts from the same state
                    for t, s in zip(opt.state[name], saved[name], strict=True):
                        t.copy_(s)
                torch.set_flush_denormal(flush)
                start = time.perf_counter()
                for _ in range(args.steps):
                    opt.step(grads)
                times[flush].append((time.perf_counter() - start) / args.steps * 1e3)
    finally:
        torch.set_flush_denormal(before)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    n = sum(p[0].numel() for p in params)
    print(
        f"centered RMSprop update, {args.replicas} x {n:,} parameters, {args.threads} thread(s), median of "
        f"{args.repeats} x {args.steps} steps:"
    )
    print(f"  subnormals kept:    {off:7.2f} ms")
    print(f"  subnormals flushed: {on:7.2f} ms   ({off / on:.1f}x faster)")


if __name__ == "__main__":
    main()
