"""A search over the fine-tuning of an auto-encoder's features: which classifier settings to make the experiment's.

The DTP paper does not say how it trained the classifier behind its 1.35 % (``targetprop/probe.py``). This trains
the fine-tuned classifier (and its control from random weights) of one finished auto-encoder run once per setting
of a small grid and prints each one's validation and test error at its best validation epoch, so the choice can
be made on the validation split. Usage, on a method folder of ``targetprop reproduce autoencoder``::

    python benchmarks/probe_search.py runs/ae-dtp/dtp --replicas 0 --noise 0,0.1,0.2,0.3,0.5 --threads 1

One line per setting and seed, then a CSV of every result with ``--csv FILE``. ``--no-control`` leaves the
controls out (half the work; the fine-tuned nets' figures are the same either way).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.probe import ProbeSettings, finetune_probe
from targetprop.reproduce import trained_network
from targetprop.runs import RunDir


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a method folder of an auto-encoder run, e.g. runs/ae-dtp/dtp")
    parser.add_argument("--replicas", default="0", help="which of the run's replicas (0-based, comma-separated)")
    parser.add_argument("--noise", type=floats, default=[0.0], help="input noise σ values (comma-separated)")
    parser.add_argument("--lr", type=floats, default=[1e-3])
    parser.add_argument("--lr-decay", type=floats, default=[10.0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument(
        "--no-control", action="store_true", help="train the fine-tuned nets only, not their controls (half the work)"
    )
    args = parser.parse_args()

    config = make_config(RunDir(args.run_dir).read_config())
    dataset = load_dataset(config.data, args.data_dir or config.data_dir, n_valid=config.n_valid)
    net = trained_network(args.run_dir, dataset)
    replicas = [int(r) for r in args.replicas.split(",")]
    seeds = [config.seeds[r] for r in replicas]
    net = net.select(replicas)
    threads = int(args.threads) if args.threads.isdigit() else args.threads
    rows = []
    for noise, lr, decay in itertools.product(args.noise, args.lr, args.lr_decay):
        settings = ProbeSettings(kind="finetune", epochs=args.epochs, lr=lr, lr_decay=decay, input_noise=noise)
        start = time.perf_counter()
        probe = finetune_probe(net, dataset, seeds, settings, threads=threads, control=not args.no_control)
        seconds = time.perf_counter() - start
        parts = [("fine-tuned", probe)] + ([] if args.no_control else [("control", probe["control"])])
        for part, result in parts:
            for p in result["per_replica"]:
                rows.append({"noise": noise, "lr": lr, "lr_decay": decay, "part": part, **p, "seconds": seconds})
                print(
                    f"noise {noise:g} lr {lr:g} decay {decay:g} {part:10s} seed {p['seed']}: valid "
                    f"{p['valid_error']:.2f} % test {p['test_error']:.2f} % (epoch {p['best_epoch']}) "
                    f"[{seconds:.0f} s]",
                    flush=True,
                )
    if args.csv is not None:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
