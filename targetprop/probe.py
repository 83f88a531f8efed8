"""How good an auto-encoder's features are for classification: a linear classifier on its frozen code.

The DTP paper reports, for its auto-encoder trained by DTP, a test error on MNIST (1.35 %) without saying how the
classifier on the learned features was trained. The classifier here is the one that measures the features and
nothing else: a softmax (multinomial logistic) regression on the frozen code ``h = f(x)`` of the encoder, trained
by gradient descent on the cross-entropy (one layer: back-propagation has nothing to propagate), the epoch chosen
on the validation split. A classifier with hidden layers of its own, or fine-tuning the encoder, would measure
the extra layers or the supervised training as much as the features.

Every replica (seed) of the auto-encoder gets its own classifier, initialised from its own seed, all trained
side by side as replicas of one :class:`~targetprop.nets.Network` ``H-10``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from targetprop.data import Dataset
from targetprop.nets import Network
from targetprop.replicas import ReplicaRandom
from targetprop.rules.bp import BP, BPConfig


@dataclass(frozen=True)
class ProbeSettings:
    """The linear classifier's training: optimiser, learning rate, epochs, mini-batch size."""

    epochs: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 100

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "optimizer": self.optimizer, "batch_size": self.batch_size}


@torch.no_grad()
def encoder_features(net: Network, x: Tensor, chunk: int = 10_000) -> Tensor:
    """The code ``h = f_1(x)`` of the first layer for every replica: ``(R, N, H)``."""
    encoder = net.layers[0]
    dtype = encoder.weight.dtype
    return torch.cat(
        [encoder(x[i : i + chunk].to(dtype).expand(net.replicas, -1, -1)) for i in range(0, len(x), chunk)], 1
    )


@torch.no_grad()
def _errors(classifier: Network, features: Tensor, labels: Tensor, chunk: int = 10_000) -> Tensor:
    """Per-replica error % of the classifier on ``features`` ``(R, N, H)``."""
    wrong = torch.zeros(classifier.replicas, device=features.device)
    for i in range(0, features.shape[1], chunk):
        logits = classifier(features[:, i : i + chunk])
        wrong += (logits.argmax(-1) != labels[i : i + chunk]).sum(-1).float()
    return 100.0 * wrong / features.shape[1]


def linear_probe(net: Network, dataset: Dataset, seeds: Sequence[int], settings: ProbeSettings) -> dict[str, Any]:
    """Train one softmax regression per replica on the frozen features of ``net``'s encoder; per replica, the
    validation and test error % of the epoch with the lowest validation error, and that epoch."""
    train, valid, test = (encoder_features(net, split.x) for split in (dataset.train, dataset.valid, dataset.test))
    replicas, width = net.replicas, train.shape[-1]
    classifier = Network.from_spec(
        [width, dataset.n_classes],
        [],
        "softmax",
        seeds=seeds,
        init="glorot",
        feedback="none",
        device=train.device,
        dtype=train.dtype,
    )
    rule = BP(
        classifier, BPConfig(lr=settings.lr, optimizer=settings.optimizer), ReplicaRandom(seeds, "probe", train.device)
    )
    order_rng = rule.noise  # the mini-batch order (a softmax regression draws nothing else)
    labels = dataset.train.y.to(train.device)
    rows = torch.arange(replicas, device=train.device).unsqueeze(1)
    best = {"valid": [math.inf] * replicas, "test": [math.nan] * replicas, "epoch": [0] * replicas}
    for epoch in range(1, settings.epochs + 1):
        order = order_rng.permutations(train.shape[1])
        for start in range(0, train.shape[1], settings.batch_size):
            idx = order[:, start : start + settings.batch_size]
            rule.step(train[rows, idx], labels[idx])
        valid_err = _errors(classifier, valid, dataset.valid.y.to(train.device)).tolist()
        test_err = _errors(classifier, test, dataset.test.y.to(train.device)).tolist()
        for r in range(replicas):
            if valid_err[r] < best["valid"][r]:
                best["valid"][r], best["test"][r], best["epoch"][r] = valid_err[r], test_err[r], epoch
    return {
        "classifier": "softmax regression on the frozen code h = f(x)",
        "settings": settings.to_dict(),
        "per_replica": [
            {"seed": s, "best_epoch": best["epoch"][r], "valid_error": best["valid"][r], "test_error": best["test"][r]}
            for r, s in enumerate(seeds)
        ],
    }
