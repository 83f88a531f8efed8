"""Our feedback alignment (FA) and direct feedback alignment (DFA) against biotorch's, at equal settings.

    python benchmarks/peers.py --data-dir ../shared/data [--batches 300] [--repeats 3] [--lr 0.05]

Trains MNIST 784-240x7-10 tanh, mini-batches of 100, plain SGD on the batch-mean cross-entropy, for ``--batches``
mini-batches with each implementation, both starting from the same forward weights (our seed 0, exported to a
plain ``nn.Sequential``), and prints the wall time per epoch-equivalent (50,000 samples) and the test accuracy
each reached (a timing against a peer that does not learn would be worthless). The data sit in memory.

biotorch (https://github.com/jsalbert/biotorch) is not a dependency of targetprop. Install the version timed here
without letting pip replace the installed torch::

    pip install --no-deps biotorch==0.0.16

Its layers (``biotorch.layers.fa``, ``biotorch.layers.dfa``) and its converter ``biotorch.module.biomodule.BioModule``
import nothing but torch; its other dependencies (torchvision, torchattacks, tensorboard, ...) serve its
training scripts and datasets, not used here. A model is converted the documented way,
``BioModule(nn.Sequential(...), mode="fa")``; in ``"dfa"`` mode the forward pass must be given the targets and the
loss function, ``model(x, targets=y, loss_function=loss)``: it computes ``∂L/∂output`` there and broadcasts it to
every layer, whose backward hook replaces the gradient that back-propagation sent to its input by
``e · weight_backward``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
import warnings

import torch
from torch import Tensor, nn

from targetprop import Network, ReplicaRandom, get_rule, load_dataset
from targetprop.trainer import train_epoch

ARCH = [784, *[240] * 7, 10]
EPOCH = 50_000
"""Training samples in an MNIST epoch (the DTP protocol's split), to express times per epoch."""


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "sign": nn.Tanh, "bernoulli": nn.Sigmoid}
"""Module of each hidden unit; sign and Bernoulli units by their continuous state (biotorch has neither)."""


def plain_mlp(sizes: list[int], activation: str = "tanh", seed: int = 0) -> nn.Sequential:
    """``nn.Linear`` and ``nn.Tanh`` (or ReLU, sigmoid) modules, as a biotorch user writes the network, with the
    forward weights of our initialisation of ``seed``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"no module for unit {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    net = Network.from_spec(sizes, activation, seeds=[seed], feedback="none")
    mods: list[nn.Module] = []
    for i, layer in enumerate(net.layers):
        lin = nn.Linear(layer.n_in, layer.n_out)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[0])
            lin.bias.copy_(layer.bias[0])
        mods.append(lin)
        if i < net.depth - 1:
            mods.append(ACTIVATIONS[activation]())
    return nn.Sequential(*mods)


def biotorch_mlp(mode: str, sizes: list[int], activation: str = "tanh", seed: int = 0) -> nn.Module:
    """The MLP ``sizes`` with biotorch's FA or DFA linear layers, by biotorch's documented conversion
    ``BioModule(nn.Sequential(...), mode=mode)`` (``output_dim`` for DFA). The forward weights are our
    initialisation of ``seed``; the feedback weights biotorch's own (Xavier uniform, from torch's global generator,
    seeded with ``seed``)."""
    from biotorch.module.biomodule import BioModule

    if mode not in ("fa", "dfa"):
        raise ValueError(f"mode must be 'fa' or 'dfa', got {mode!r}")
    module = plain_mlp(sizes, activation, seed)
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints a report
        return BioModule(module, mode=mode, output_dim=sizes[-1] if mode == "dfa" else None)


def train_biotorch(
    model: nn.Module,
    mode: str,
    x: Tensor,
    y: Tensor,
    batch: int,
    batches: int,
    optimizer: str = "sgd",
    lr: float = 0.05,
) -> float:
    """biotorch's training loop (``biotorch.training.functions.train``) over ``batches`` in-memory mini-batches:
    forward (with targets and loss for DFA), cross-entropy, backward, optimiser step. Returns the wall time."""
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # biotorch's DFA uses the deprecated non-full backward hook
        start = time.perf_counter()
        for k in range(batches):
            xb, yb = x[k * batch : (k + 1) * batch], y[k * batch : (k + 1) * batch]
            out = model(xb, targets=yb, loss_function=loss_fn) if mode == "dfa" else model(xb)
            loss = loss_fn(out, yb)
            model.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start


def time_biotorch(
    mode: str, x: Tensor, y: Tensor, batch: int, batches: int, optimizer: str = "sgd", lr: float = 0.05
) -> float:
    """Seconds for ``batches`` mini-batches of biotorch's ``mode`` ("fa" or "dfa") on 784-240x7-10 tanh."""
    return train_biotorch(biotorch_mlp(mode, ARCH), mode, x, y, batch, batches, optimizer, lr)


def our_rule(rule_name: str, optimizer: str = "sgd", lr: float = 0.05, seed: int = 0):
    cls = get_rule(rule_name)
    config = cls.Config(optimizer=optimizer, lr=lr)
    net = Network.from_spec(ARCH, "tanh", seeds=[seed], feedback=cls.feedback_maps(config))
    return cls(net, config, ReplicaRandom([seed], "train"))


def time_ours(
    rule_name: str, x: Tensor, y: Tensor, batch: int, batches: int, optimizer: str = "sgd", lr: float = 0.05, rule=None
) -> float:
    """Seconds for ``batches`` mini-batches of our ``rule_name`` through the trainer's :func:`train_epoch`, in
    the data's order (as the biotorch loop), on 784-240x7-10 tanh."""
    rule = rule if rule is not None else our_rule(rule_name, optimizer, lr)
    order = torch.arange(batches * batch, device=x.device).expand(1, -1)
    _, _, seconds = train_epoch(rule, x, y, order, batch)
    return seconds


@torch.no_grad()
def accuracy(model, x: Tensor, y: Tensor) -> float:
    """Test accuracy (%) of a module returning logits ``(B, 10)`` or a network returning ``(1, B, 10)``."""
    logits = model(x)
    return 100.0 * (logits.reshape(-1, logits.shape[-1]).argmax(-1) == y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate of both implementations")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    data = load_dataset("mnist", args.data_dir)
    x, y = data.train.x, data.train.y
    b, n = args.batch_size, args.batches
    scale = EPOCH / (n * b)
    rows = {}
    for mode in ("fa", "dfa"):
        ours, theirs, acc_ours, acc_theirs = [], [], [], []
        time_ours(mode, x, y, b, 5, lr=args.lr)  # warm-up
        time_biotorch(mode, x, y, b, 5, lr=args.lr)
        for _ in range(args.repeats):  # interleaved, so that a load on the machine hits both alike
            rule = our_rule(mode, lr=args.lr)
            ours.append(time_ours(mode, x, y, b, n, rule=rule))
            acc_ours.append(accuracy(rule.net, data.test.x, data.test.y))
            model = biotorch_mlp(mode, ARCH)
            theirs.append(train_biotorch(model, mode, x, y, b, n, lr=args.lr))
            model.eval()
            acc_theirs.append(accuracy(model, data.test.x, data.test.y))
        rows[mode] = {
            "targetprop_s_per_epoch": statistics.median(ours) * scale,
            "biotorch_s_per_epoch": statistics.median(theirs) * scale,
            "speedup": statistics.median(theirs) / statistics.median(ours),
            "targetprop_test_accuracy": statistics.fmean(acc_ours),
            "biotorch_test_accuracy": statistics.fmean(acc_theirs),
            "targetprop_seconds": ours,
            "biotorch_seconds": theirs,
        }
    print(
        f"MNIST 784-240x7-10 tanh, batch {b}, SGD lr {args.lr}, {n} batches per run, CPU, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}; s/epoch = time scaled to {EPOCH} samples"
    )
    print(
        f"{'rule':5} {'targetprop s/epoch':>19} {'biotorch s/epoch':>17} {'speed-up':>9} {'test acc ours':>14} {'theirs':>7}"
    )
    for mode, r in rows.items():
        print(
            f"{mode:5} {r['targetprop_s_per_epoch']:19.2f} {r['biotorch_s_per_epoch']:17.2f} {r['speedup']:8.2f}x "
            f"{r['targetprop_test_accuracy']:13.1f}% {r['biotorch_test_accuracy']:6.1f}%"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"threads": torch.get_num_threads(), "batches": n, "batch_size": b, "lr": args.lr, **rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
