"""Examples per second of equilibrium propagation's training step at the authors' settings (Scellier & Bengio
2017, 784-500-10 hard sigmoid, batch 20, 20 free + 4 nudged iterations), on the CPU.

Times targetprop's ``ep`` step (one replica, and ``--replicas`` replicas side by side), and, with
``--laborieux DIR``, the step of Laborieux et al.'s public PyTorch EP code (``Laborieux-Axel/Equilibrium-Propagation``,
a checkout outside this tree) at the same settings: its ``P_MLP`` with the hard sigmoid, 20 + 4 iterations, the
squared-error nudge, per-layer SGD rates, and the body of its ``train`` loop for ``alg='EP'`` (free phase, the
running accuracy it reads back, a random sign of β, nudged phase, ``compute_syn_grads``, ``optimizer.step``). Their
dynamics are ``s ← σ(∂Φ/∂s)`` by autograd at each iteration; ours are the closed-form leaky integrator. Inputs are
uniform random numbers of MNIST's shape (the step's cost does not depend on the values).

    python benchmarks/ep_speed.py --threads 1 [--replicas 10] [--laborieux /tmp/laborieux] [--seconds 10]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from collections.abc import Callable

import torch

SIZES = [784, 500, 10]
BATCH, FREE, NUDGED = 20, 20, 4


def rate(step: Callable[[int], None], seconds: float, repeats: int, examples: int = BATCH) -> list[float]:
    """Examples per second of ``step(k)`` (``examples`` per call: one mini-batch of each replica), ``repeats``
    timings of about ``seconds / repeats`` each, after a warm-up."""
    for k in range(20):
        step(k)
    out = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            step(n)
            n += 1
        out.append(n * examples / (time.perf_counter() - start))
    return out


def ours(replicas: int, batches: int = 64) -> Callable[[int], None]:
    from targetprop import Network, ReplicaRandom
    from targetprop.rules.ep import EquilibriumPropagation

    seeds = list(range(replicas))
    net = Network.from_spec(SIZES, "hardsigmoid", "linear", seeds=seeds, init="glorot", feedback="none")
    config = EquilibriumPropagation.Config(free_steps=FREE, nudged_steps=NUDGED)  # the authors' settings
    rule = EquilibriumPropagation(net, config, ReplicaRandom(seeds, "train"))
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(batches, replicas, BATCH, SIZES[0], generator=gen)
    ys = torch.randint(0, SIZES[-1], (batches, replicas, BATCH), generator=gen)

    def step(k: int) -> None:
        rule.step(xs[k % batches], ys[k % batches])

    return step


def laborieux(folder: str, batches: int = 64) -> Callable[[int], None]:
    """Their step, from a checkout ``folder`` of their repository (imported from there, not copied)."""
    import numpy as np

    sys.path.insert(0, folder)
    if importlib.util.find_spec("torchvision") is None:  # imported at the top of their modules, unused by P_MLP
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    mu = importlib.import_module("model_utils")
    model = mu.P_MLP(SIZES, activation=mu.hard_sigmoid)
    groups = [{"params": model.synapses[i].parameters(), "lr": lr} for i, lr in enumerate([0.1, 0.05])]
    optimizer = torch.optim.SGD(groups, momentum=0.0)
    criterion = torch.nn.MSELoss(reduction="none")
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(batches, BATCH, SIZES[0], generator=gen)
    ys = torch.randint(0, SIZES[-1], (batches, BATCH), generator=gen)
    beta_2 = 0.5

    def step(k: int) -> None:  # the body of their train() for alg='EP', random_sign, no third phase
        x, y = xs[k % batches], ys[k % batches]
        neurons = model.init_neurons(x.size(0), x.device)
        neurons = model(x, y, neurons, FREE, beta=0.0, criterion=criterion)
        neurons_1 = mu.copy(neurons)
        with torch.no_grad():
            pred = torch.argmax(neurons[-1], dim=1).squeeze()
            (y == pred).sum().item()
        betas = 0.0, (2 * np.random.randint(2) - 1) * beta_2
        neurons = model(x, y, neurons, NUDGED, beta=betas[1], criterion=criterion)
        neurons_2 = mu.copy(neurons)
        model.compute_syn_grads(x, y, neurons_1, neurons_2, betas, criterion)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=10, help="also time this many replicas side by side")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per implementation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--laborieux", metavar="DIR", help="a checkout of Laborieux-Axel/Equilibrium-Propagation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [("targetprop ep, 1 replica", ours(1), BATCH)]
    if args.replicas > 1:
        label = f"targetprop ep, {args.replicas} replicas (examples of all replicas)"
        runs.append((label, ours(args.replicas), args.replicas * BATCH))
    if args.laborieux:
        runs.append(("Laborieux et al. P_MLP (autograd dynamics)", laborieux(args.laborieux), BATCH))
    print(
        f"EP step, 784-500-10 hard sigmoid, batch {BATCH}, {FREE} + {NUDGED} iterations, float32, "
        f"{args.threads} thread(s), torch {torch.__version__}; examples/s, median (min-max) of {args.repeats}"
    )
    for label, step, examples in runs:
        values = rate(step, args.seconds, args.repeats, examples)
        print(f"  {label}: {statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})")


if __name__ == "__main__":
    main()
