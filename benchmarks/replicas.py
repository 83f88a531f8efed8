"""Throughput of R replicas trained in one process against R single runs one after another.

    python benchmarks/replicas.py --rule dtp --replicas 10 --batches 100 [--data-dir ../shared/data]

Trains MNIST 784-240x7-10 tanh (batch 100, the DTP authors' settings) for ``--batches`` mini-batches of every
phase of the rule's schedule, once with R replicas in batched tensors and R times with one replica, and prints
training samples per second of each (R × batches × batch size / wall time) and their ratio. Repeats ``--repeats``
times and reports the median.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from targetprop import Network, ReplicaRandom, get_rule, load_dataset
from targetprop.train import train_epoch


def time_training(
    rule_name: str, seeds: list[int], x: torch.Tensor, y: torch.Tensor, batches: int, batch: int
) -> float:
    cls = get_rule(rule_name)
    config = cls.Config()
    net = Network.from_spec("784-240x7-10", "tanh", seeds=seeds, feedback=cls.feedback_maps(config), device=x.device)
    rule = cls(net, config, ReplicaRandom(seeds, "train", x.device))
    order = ReplicaRandom(seeds, "train", x.device).permutations(len(y))[:, : batches * batch]
    _, _, seconds = train_epoch(rule, x, y, order, batch)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rule", default="dtp")
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    data = load_dataset("mnist", args.data_dir, device=args.device)
    x, y = data.train.x, data.train.y
    seeds = list(range(args.replicas))
    time_training(args.rule, [0], x, y, 5, args.batch_size)  # warm-up
    together, separate = [], []
    for _ in range(args.repeats):
        together.append(time_training(args.rule, seeds, x, y, args.batches, args.batch_size))
        separate.append(sum(time_training(args.rule, [s], x, y, args.batches, args.batch_size) for s in seeds))
    samples = args.replicas * args.batches * args.batch_size
    t_one, t_sep = statistics.median(together), statistics.median(separate)
    result = {
        "rule": args.rule,
        "replicas": args.replicas,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batches_per_phase": args.batches,
        "samples_per_s_replicas_in_one_process": samples / t_one,
        "samples_per_s_single_runs_in_sequence": samples / t_sep,
        "speedup": t_sep / t_one,
        "seconds_together": together,
        "seconds_separate": separate,
    }
    print(
        f"{args.rule} 784-240x7-10, {args.replicas} replicas, {args.batches} batches of {args.batch_size} per phase, "
        f"{args.device}, {torch.get_num_threads()} threads (median of {args.repeats}):\n"
        f"  {args.replicas} replicas in one process: {samples / t_one:10.0f} samples/s\n"
        f"  {args.replicas} single runs in sequence: {samples / t_sep:10.0f} samples/s\n"
        f"  speed-up: {t_sep / t_one:.2f}x"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
