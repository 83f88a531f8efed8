"""Every rule learns real data: digits for all rules; MNIST with the DTP authors' settings (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from targetprop.config import make_config
from targetprop.experiments import load_config_source
from targetprop.trainer import train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# TP without the difference correction is unstable in deeper nets (the reason DTP exists): it gets a wider,
# shallower net, Adam and a small corruption noise. BP and DTP run with their defaults (the DTP authors'
# MNIST settings) on the default digits architecture 64-100x3-10; FA and DFA with their default Adam at lr 2e-3.
DIGITS_SETTINGS = {
    "bp": dict(epochs=30),
    "dtp": dict(epochs=30),
    "fa": dict(epochs=30, fa=dict(lr=2e-3)),
    "dfa": dict(epochs=30, dfa=dict(lr=2e-3)),
    "tp": dict(
        epochs=40,
        arch="64-256x2-10",
        tp=dict(eta_hat=1.0, lr=3e-4, lr_feedback=1e-2, noise=0.05, optimizer="adam"),
    ),
}


@pytest.mark.parametrize("rule", sorted(DIGITS_SETTINGS))
def test_every_rule_learns_digits(tmp_path, digits, rule):
    cfg = make_config(rule=rule, seeds="0-2", out=str(tmp_path), **DIGITS_SETTINGS[rule])
    result = train(cfg, dataset=digits, progress=False)
    accuracies = [100.0 - r["test_error"] for r in result.summary["per_replica"]]
    assert min(accuracies) >= 95.0, accuracies


# DTP with the first target on the output pre-activation (first_target = "output"): the default digits net and
# DTP settings, but η̂ = 3 (the default 0.3277 moves â_M = a_M − η̂ ∂L/∂a_M too little: 5-7 % test error after
# 30 epochs; η̂ = 30 is unstable: 6-91 %). Measured on seeds 0-9, 30 epochs, float32, one thread: test error
# 2.8-4.2 % in both schedules, train error 1.0-1.7 %. The same net with only its output layer trained (hidden
# layers frozen at their random orthogonal initialisation) reaches 4.7-6.1 % test and 5.3-6.3 % train error:
# the train-error bound below needs the hidden layers to learn.
OUTPUT_TARGET = dict(epochs=30, diagnostics=True, dtp=dict(first_target="output", eta_hat=3.0))


@pytest.mark.parametrize("schedule", ["alternating", "parallel"])
def test_dtp_with_the_first_target_on_the_output_learns_digits(tmp_path, digits, schedule):
    settings = dict(OUTPUT_TARGET, dtp=dict(OUTPUT_TARGET["dtp"], schedule=schedule))
    cfg = make_config(rule="dtp", seeds="0-2", out=str(tmp_path), **settings)
    assert cfg.architecture == "64-100x3-10"
    result = train(cfg, dataset=digits, progress=False)
    test_errors = [r["test_error"] for r in result.summary["per_replica"]]
    train_errors = [r["train_error"] for r in result.summary["per_replica"]]
    assert max(test_errors) <= 5.0, test_errors  # chance: 90 %
    assert max(train_errors) <= 3.0, train_errors
    # every hidden layer's update points within 90° of the BP gradient; the output layer's is BP's (2η̂/B times)
    for row in (r for r in result.history if r["epoch"] == cfg.epochs):
        assert all(a < 90.0 for a in row["angle_deg"][:-1]), row["angle_deg"]
        assert row["angle_deg"][-1] < 1.0, row["angle_deg"]


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["dtp", "bp"])
def test_one_epoch_on_mnist_with_the_authors_settings(tmp_path, rule):
    """784-240x7-10 tanh, the DTP authors' hyper-parameters and protocol: ≥ 90 % test accuracy after one epoch."""
    base = load_config_source("mnist-paper")
    cfg = make_config(base, rule=rule, epochs=1, data_dir=str(SHARED_DATA), out=str(tmp_path))
    assert cfg.architecture == "784-240x7-10" and cfg.batch_size == 100 and not cfg.shuffle
    result = train(cfg, progress=False)
    test_accuracy = 100.0 - result.summary["test_error"]["mean"]
    assert test_accuracy >= 90.0, test_accuracy
