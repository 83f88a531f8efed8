"""The benchmark suite: training throughput of every rule on the paper's networks, against a plain PyTorch loop.

    python benchmarks/suite.py                       # CPU (and CUDA when present), all networks, table + JSON
    python benchmarks/suite.py --quick               # MNIST network only, fewer repeats
    python benchmarks/suite.py --networks mnist --devices cpu --repeats 7 --json results/bench.json

For each network of the DTP paper's experiments (MNIST 784-240x7-10 tanh, the discrete 784-500-500-10 sign net,
the stochastic 784-200-200-10 Bernoulli net, CIFAR-10 3072-1000x3-10 tanh), mini-batches of 100 drawn from data
that already sit on the device, it times in the same process and interleaved, ``--repeats`` times:

- ``plain``: a plain PyTorch back-propagation loop (``nn.Sequential`` of ``nn.Linear`` and the network's
  continuous unit, ``F.cross_entropy``, ``loss.backward()``, ``torch.optim.RMSprop(centered=True, momentum=0.9)``,
  the optimiser the DTP authors used for everything). Every ratio is taken against it, run by run;
- every rule of ``targetprop`` with its default (paper) settings: one training step per mini-batch and phase
  (DTP and TP: the inverses' pass and the forward pass of the alternating schedule, so a DTP "epoch" is two
  passes over the data), plus ``dtp-parallel`` (both phases on each mini-batch, one forward pass);
- with ``--compile``, ``bp`` and ``dtp`` again with ``torch.compile`` d steps (compilation is not timed), and on
  CUDA also as CUDA graphs (``+graphs``: ``compile=reduce-overhead``, built as the trainer builds it);
- peers: biotorch 0.0.16's FA and DFA (``pip install --no-deps biotorch==0.0.16``), SGD, when it imports;
- ``R replicas``: R seeds trained as replicas of one process against R single runs one after another.

``throughput vs plain`` is the plain loop's time over the row's, ``epoch time vs bp`` the row's time over our BP's,
``vs biotorch`` biotorch's time over ours for FA and DFA (above 1: ours is faster); each ratio is taken within
one repeat and summarised by its median and range. Samples per second count training samples (times replicas); seconds per epoch scale the time of ``--batches``
mini-batches to an epoch of the dataset's training split. ``matmul GFLOP/s`` is the rule's matrix-multiply work
per sample (counted from the layer sizes, see :func:`matmul_flops`) times its throughput, and ``of peak`` divides
it by the machine's best measured ``torch.mm`` rate (square float32 products of 256 to 2048).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from targetprop import Network, ReplicaRandom, get_rule, parse_architecture
from targetprop.trainer import train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 100


@dataclass(frozen=True)
class Net:
    arch: str
    activation: str
    n_train: int

    @property
    def sizes(self) -> list[int]:
        return parse_architecture(self.arch)


NETWORKS = {
    "mnist": Net("784-240x7-10", "tanh", 50_000),
    "discrete": Net("784-500-500-10", "sign", 50_000),
    "stochastic": Net("784-200-200-10", "bernoulli", 50_000),
    "cifar10": Net("3072-1000x3-10", "tanh", 45_000),
}
"""The DTP paper's networks and the size of their training split (an epoch)."""

RULE_OPTIONS = {"fa": {"optimizer": "sgd", "lr": 0.05}, "dfa": {"optimizer": "sgd", "lr": 0.05}}
"""FA and DFA train with plain SGD, as biotorch's are timed (the rest: their defaults, centered RMSprop)."""
DISCRETE_OPTIONS = {"bp": {"straight_through": True}}
"""BP through sign / Bernoulli units uses the straight-through estimator (the paper's baseline)."""

CONTINUOUS = {"sign": nn.Tanh, "bernoulli": nn.Sigmoid, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


# ---- work counts ---------------------------------------------------------------------------------------------


def matmul_flops(rule: str, sizes: list[int]) -> float:
    """Matrix-multiply FLOPs per training sample (2 per multiply-add) of one epoch's steps, from the layer sizes.

    ``F = Σ_i 2 n_{i−1} n_i`` is the forward pass; ``F_inv = Σ_{i=2}^{M−1} 2 n_{i−1} n_i`` the layers with an inverse
    (first target on the last hidden layer, as in the DTP authors' code).

    - BP, FA: forward ``F``, error to each layer's input (all but the first) ``F − 2 n_0 n_1``, weight gradients ``F``;
    - DFA: forward, the output error to every hidden layer ``Σ_{i<M} 2 n_M n_i``, weight gradients;
    - DTP: forward, two passes of each inverse for the targets (``2 F_inv``), the first target through the output
      layer, weight gradients; the inverses' training: forward up to layer ``M − 2``, ``f_i`` and ``g_i`` of the
      corrupted activity and the inverses' gradients (``3 F_inv``). The parallel schedule reuses the forward pass.
      TP: one inverse pass for the targets.
    """
    layer = [2 * a * b for a, b in itertools.pairwise(sizes)]
    f, f_inv, n_out = sum(layer), sum(layer[1:-1]), sizes[-1]
    base = rule.split("+")[0].removeprefix("biotorch-")
    if base in ("plain", "bp", "fa"):
        return 3 * f - layer[0]
    if base == "dfa":
        return 2 * f + sum(2 * n_out * n for n in sizes[1:-1])
    inverse_passes = 1 if base == "tp" else 2
    forward_phase = f + inverse_passes * f_inv + layer[-1] + f
    second_forward = 0 if base == "dtp-parallel" else sum(layer[:-2])
    return forward_phase + second_forward + 3 * f_inv


def peak_matmul_gflops(device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Best ``torch.mm`` rate (GFLOP/s) of square float32 products, and the rate at the size of a layer."""
    rates = {}
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        reps = max(3, int(2e9 / (2 * n**3)))
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            _sync(device)
            best = min(best, (time.perf_counter() - t) / reps)
        rates[f"mm{n}"] = 2 * n**3 / best / 1e9
    rates["peak"] = max(rates.values())
    return rates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- what is timed -------------------------------------------------------------------------------------------

Runner = Callable[[], None]
"""Trains on ``batches`` mini-batches (every phase of the rule's schedule)."""


def plain_loop(net: Net, x: torch.Tensor, y: torch.Tensor, batches: int) -> Runner:
    """A plain PyTorch BP loop on the same layers, initialised like ours (seed 0)."""
    ours = Network.from_spec(net.arch, net.activation, seeds=[0], feedback="none", device=x.device)
    mods: list[nn.Module] = []
    for i, layer in enumerate(ours.layers):
        lin = nn.Linear(layer.n_in, layer.n_out, device=x.device)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[0])
            lin.bias.copy_(layer.bias[0])
        mods += [lin] if i == ours.depth - 1 else [lin, CONTINUOUS[net.activation]()]
    model = nn.Sequential(*mods)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.000804, centered=True, momentum=0.9)

    def run() -> None:
        for k in range(batches):
            xb, yb = x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

    return run


def our_rule(
    name: str, net: Net, x: torch.Tensor, y: torch.Tensor, batches: int, seeds: list[int], compile_mode: str = "off"
) -> Runner:
    base = name.split("+")[0]
    options = dict(RULE_OPTIONS.get(base, {}))
    if net.activation in ("sign", "bernoulli"):
        options.update(DISCRETE_OPTIONS.get(base, {}))
    if base == "dtp-parallel":
        base, options = "dtp", {"schedule": "parallel"}
    cls = get_rule(base)
    config = cls.Config(**options)
    # CUDA graphs: built as `train` builds a run with compile=reduce-overhead (parameters apart) and, as
    # gpu_check.sh runs them, rng=philox (noise the graph can hold)
    graphs = compile_mode == "reduce-overhead"
    model = Network.from_spec(
        net.arch, net.activation, seeds=seeds, feedback=cls.feedback_maps(config), device=x.device, flat=not graphs
    )
    rule = cls(model, config, ReplicaRandom(seeds, "train", x.device, philox=graphs))
    if compile_mode != "off":
        rule.compile(compile_mode)
    order = torch.arange(batches * BATCH, device=x.device).expand(len(seeds), -1)
    return lambda: train_epoch(rule, x, y, order, BATCH)  # type: ignore[return-value]


def biotorch_loop(mode: str, net: Net, x: torch.Tensor, y: torch.Tensor, batches: int) -> Runner:
    """biotorch's FA / DFA layers on the same network, SGD (lr 0.05), its documented training loop."""
    import peers  # benchmarks/peers.py

    model = peers.biotorch_mlp(mode, net.sizes, "tanh" if net.activation == "sign" else net.activation).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def run() -> None:
        for k in range(batches):
            xb, yb = x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            # biotorch's DFA takes the targets and the loss in the forward pass (its documented use)
            out = model(xb, targets=yb, loss_function=F.cross_entropy) if mode == "dfa" else model(xb)
            F.cross_entropy(out, yb).backward()
            opt.step()

    return run


def time_runners(
    runners: dict[str, Runner], device: torch.device, repeats: int, on_repeat: Callable[[int], None]
) -> dict[str, list[float]]:
    """Seconds of each runner, interleaved: one call of every runner per repeat, after one warm-up call each."""
    for run in runners.values():
        run()
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(repeats):
        for name, run in runners.items():
            _sync(device)
            t = time.perf_counter()
            run()
            _sync(device)
            seconds[name].append(time.perf_counter() - t)
        on_repeat(i)
    return seconds


def optimizer_of(name: str) -> str:
    base = name.split("+")[0]
    if base.startswith("biotorch"):
        return "sgd"
    if base == "plain":
        return "torch centered rmsprop"
    return RULE_OPTIONS.get(base, {}).get("optimizer", "centered_rmsprop")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---- the suite -----------------------------------------------------------------------------------------------


def bench_network(
    net_name: str, device: torch.device, args: argparse.Namespace, peak: float, log: Callable[[str], None]
) -> list[dict]:
    net = NETWORKS[net_name]
    sizes = net.sizes
    batches = args.batches if sizes[0] < 3072 else max(5, args.batches // 5)
    n = batches * BATCH
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, sizes[0], generator=gen).to(device)
    y = torch.randint(0, sizes[-1], (n,), generator=gen).to(device)

    runners: dict[str, Runner] = {"plain": plain_loop(net, x, y, batches)}
    for rule in args.rules:
        runners[rule] = our_rule(rule, net, x, y, batches, [0])
    if args.compile:
        for rule in ("bp", "dtp"):
            log(f"  compiling {rule} on {net_name} ({device.type}) ...")
            runners[f"{rule}+compile"] = our_rule(rule, net, x, y, batches, [0], "default")
            if device.type == "cuda":  # whole steps replayed as CUDA graphs
                runners[f"{rule}+graphs"] = our_rule(rule, net, x, y, batches, [0], "reduce-overhead")
    notes = {}
    if args.peers:
        for mode in ("fa", "dfa"):
            try:
                runners[f"biotorch-{mode}"] = biotorch_loop(mode, net, x, y, batches)
            except ImportError as e:
                notes[f"biotorch-{mode}"] = f"not run: {e} (pip install --no-deps biotorch==0.0.16)"
    log(f"{net_name} {net.arch} {net.activation} on {device.type}: {len(runners)} runners x {args.repeats} repeats")
    seconds = time_runners(runners, device, args.repeats, lambda i: log(f"  repeat {i + 1}/{args.repeats} done"))

    rows = []
    ref = seconds["plain"]
    bp_ref = seconds.get("bp")

    def vs_peer(name: str, secs: list[float]) -> dict[str, float] | None:
        """Our FA / DFA against biotorch's, time ratio run by run (above 1: ours is faster)."""
        peer = seconds.get(f"biotorch-{name}")
        return spread([p / s for p, s in zip(peer, secs, strict=True)]) if peer and name in ("fa", "dfa") else None

    for name, secs in seconds.items():
        samples = [n / s for s in secs]
        flops = matmul_flops(name, sizes)
        row = {
            "network": net_name,
            "arch": net.arch,
            "activation": net.activation,
            "device": device.type,
            "rule": name,
            "optimizer": optimizer_of(name),
            "replicas": 1,
            "samples_per_s": spread(samples),
            "seconds_per_epoch": spread([s * net.n_train / n for s in secs]),
            "vs_plain": spread([p / s for p, s in zip(ref, secs, strict=True)]),
            "time_vs_bp": spread([s / b for s, b in zip(secs, bp_ref, strict=True)]) if bp_ref else None,
            "vs_biotorch": vs_peer(name, secs),
            "matmul_mflop_per_sample": flops / 1e6,
            "matmul_gflops": statistics.median(samples) * flops / 1e9,
            "of_peak": statistics.median(samples) * flops / 1e9 / peak,
            "seconds": secs,
        }
        rows.append(row)
    for name, why in notes.items():
        rows.append({"network": net_name, "device": device.type, "rule": name, "note": why})
    return rows


def bench_replicas(device: torch.device, args: argparse.Namespace, log: Callable[[str], None]) -> list[dict]:
    """R replicas in one process against R single runs one after another, on the MNIST network."""
    net, r = NETWORKS["mnist"], args.replicas
    batches = args.batches
    n = batches * BATCH
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, net.sizes[0], generator=gen).to(device)
    y = torch.randint(0, net.sizes[-1], (n,), generator=gen).to(device)
    rows = []
    for rule in args.replica_rules:
        together = our_rule(rule, net, x, y, batches, list(range(r)))
        singles = [our_rule(rule, net, x, y, batches, [s]) for s in range(r)]

        def separate(singles: list[Runner] = singles) -> None:
            for run in singles:
                run()

        log(f"replicas: {rule} x{r} on {device.type}")
        secs = time_runners(
            {"together": together, "separate": separate}, device, max(3, args.repeats // 2), lambda i: None
        )
        samples = r * n
        rows.append(
            {
                "network": "mnist",
                "device": device.type,
                "rule": rule,
                "replicas": r,
                "samples_per_s_together": spread([samples / s for s in secs["together"]]),
                "samples_per_s_separate": spread([samples / s for s in secs["separate"]]),
                "speedup": spread([s / t for s, t in zip(secs["separate"], secs["together"], strict=True)]),
                "seconds": secs,
            }
        )
    return rows


def _ratio(r: dict[str, float] | None) -> str:
    return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]" if r else ""


def print_tables(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    for dev, info in results["devices"].items():
        table = Table(
            title=f"training throughput, {dev} ({info['name']}), batch {BATCH}, median of {results['repeats']}"
            f" [min-max]; matmul peak {info['matmul_gflops']['peak']:.0f} GFLOP/s"
        )
        for col in (
            "network",
            "rule",
            "optimizer",
            "samples/s",
            "s/epoch",
            "throughput vs plain",
            "epoch time vs bp",
            "vs biotorch",
            "MFLOP/sample",
            "GFLOP/s",
            "of peak",
        ):
            table.add_column(col, justify="left" if col in ("network", "rule") else "right")
        for row in results["rows"]:
            if row["device"] != dev:
                continue
            if "note" in row:
                table.add_row(row["network"], row["rule"], "", row["note"], *[""] * 7)
                continue
            sp, se, vp, vb = row["samples_per_s"], row["seconds_per_epoch"], row["vs_plain"], row["time_vs_bp"]
            table.add_row(
                row["network"],
                row["rule"],
                row["optimizer"],
                f"{sp['median']:,.0f} [{sp['min']:,.0f}-{sp['max']:,.0f}]",
                f"{se['median']:.2f}",
                f"{vp['median']:.2f}x [{vp['min']:.2f}-{vp['max']:.2f}]",
                f"{vb['median']:.2f}x [{vb['min']:.2f}-{vb['max']:.2f}]" if vb else "",
                _ratio(row.get("vs_biotorch")),
                f"{row['matmul_mflop_per_sample']:.2f}",
                f"{row['matmul_gflops']:.1f}",
                f"{100 * row['of_peak']:.0f}%",
            )
        console.print(table)
        reps = [r for r in results["replicas"] if r["device"] == dev]
        if reps:
            t = Table(title=f"replicas in one process vs single runs in sequence, mnist, {dev}")
            for col in ("rule", "replicas", "together samples/s", "separate samples/s", "speed-up"):
                t.add_column(col, justify="left" if col == "rule" else "right")
            for r in reps:
                s = r["speedup"]
                t.add_row(
                    r["rule"],
                    str(r["replicas"]),
                    f"{r['samples_per_s_together']['median']:,.0f}",
                    f"{r['samples_per_s_separate']['median']:,.0f}",
                    f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}]",
                )
            console.print(t)


def markdown_tables(results: dict) -> str:
    """The tables as Markdown (for PERFORMANCE.md)."""
    lines = []
    for dev, info in results["devices"].items():
        lines += [
            f"Training throughput on {dev} ({info['name']}), batch {BATCH}, median of {results['repeats']} runs "
            f"[min–max]; matmul peak {info['matmul_gflops']['peak']:.0f} GFLOP/s.",
            "",
            "| network | rule | optimizer | samples/s | s/epoch | throughput vs plain | epoch time vs bp "
            "| vs biotorch | MFLOP/sample | GFLOP/s | of peak |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["rows"]:
            if row["device"] != dev:
                continue
            if "note" in row:
                lines.append(f"| {row['network']} | {row['rule']} | | {row['note']} | | | | | | | |")
                continue
            sp, se, vp, vb = row["samples_per_s"], row["seconds_per_epoch"], row["vs_plain"], row["time_vs_bp"]
            vb_text = f"{vb['median']:.2f}x [{vb['min']:.2f}–{vb['max']:.2f}]" if vb else ""
            lines.append(
                f"| {row['network']} | {row['rule']} | {row['optimizer']} | {sp['median']:,.0f} "
                f"[{sp['min']:,.0f}–{sp['max']:,.0f}] | {se['median']:.2f} | {vp['median']:.2f}x "
                f"[{vp['min']:.2f}–{vp['max']:.2f}] | {vb_text} | {_ratio(row.get('vs_biotorch'))} "
                f"| {row['matmul_mflop_per_sample']:.2f} "
                f"| {row['matmul_gflops']:.1f} | {100 * row['of_peak']:.0f}% |"
            )
        reps = [r for r in results["replicas"] if r["device"] == dev]
        if reps:
            lines += [
                "",
                f"Replicas in one process against single runs one after another (mnist, {dev}):",
                "",
                "| rule | replicas | together samples/s | separate samples/s | speed-up |",
                "|---|---|---|---|---|",
            ]
            for r in reps:
                s = r["speedup"]
                lines.append(
                    f"| {r['rule']} | {r['replicas']} | {r['samples_per_s_together']['median']:,.0f} | "
                    f"{r['samples_per_s_separate']['median']:,.0f} | {s['median']:.2f}x [{s['min']:.2f}–{s['max']:.2f}] |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    from targetprop.rules import RULES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated: {', '.join(NETWORKS)}")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, and cuda when present)")
    # the networks here are the DTP paper's tanh/sign/Bernoulli classifiers: rules that need other units or another
    # task (EP's hard-sigmoid energy net, dtp-ae's auto-encoder) are timed only when named
    paper_nets = [name for name, rule in RULES.items() if not rule.run_defaults]
    p.add_argument(
        "--rules",
        default=",".join([*paper_nets, "dtp-parallel"]),
        help=f"default: {', '.join(paper_nets)}, dtp-parallel (the rules that train the paper's networks as they are)",
    )
    p.add_argument("--batches", type=int, default=50, help="mini-batches per timed call (CIFAR-10: a fifth)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--replicas", type=int, default=10, help="R for the replica comparison (0 skips it)")
    p.add_argument("--replica-rules", default="bp,dtp")
    p.add_argument("--compile", action="store_true", help="also time torch.compile d bp and dtp")
    p.add_argument("--no-peers", dest="peers", action="store_false", help="skip biotorch")
    p.add_argument("--quick", action="store_true", help="MNIST network only, 3 repeats, no replicas")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default="benchmarks/results.json", help="where to write every figure")
    p.add_argument("--markdown", default=None, help="also write the tables as Markdown to this file")
    p.add_argument("--from-json", default=None, help="print the tables of an earlier run's JSON and exit")
    args = p.parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print_tables(results)
        if args.markdown:
            Path(args.markdown).write_text(markdown_tables(results))
        return
    if args.quick:
        args.networks, args.repeats, args.replicas = "mnist", 3, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.rules = [r for r in args.rules.split(",") if r]
    args.replica_rules = [r for r in args.replica_rules.split(",") if r]
    unknown = [n for n in args.networks.split(",") if n not in NETWORKS]
    if unknown:
        p.error(f"unknown network {unknown[0]!r}; choose from {', '.join(NETWORKS)}")
    devices = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "batch": BATCH,
        "batches": args.batches,
        "repeats": args.repeats,
        "devices": {},
        "rows": [],
        "replicas": [],
    }
    for dev_name in devices:
        device = torch.device(dev_name)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else results["machine"]["processor"]
        log(f"measuring matmul throughput on {dev_name} ...")
        peak = peak_matmul_gflops(device)
        results["devices"][dev_name] = {"name": name, "matmul_gflops": peak}
        for net_name in args.networks.split(","):
            results["rows"] += bench_network(net_name, device, args, peak["peak"], log)
        if args.replicas > 1:
            results["replicas"] += bench_replicas(device, args, log)
    print_tables(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    log(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown_tables(results))
        log(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
