"""Diagnostics: angles between a rule's updates and the BP gradient; inverse reconstruction errors."""

from __future__ import annotations

import math

import pytest
import torch

from targetprop import Network, ReplicaRandom
from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.diagnostics import update_angles
from targetprop.rules import get_rule
from targetprop.rules.tp import inverse_errors
from targetprop.trainer import train


def build(rule_name: str, seeds=(0, 1), **cfg):
    cls = get_rule(rule_name)
    config = cls.Config(**cfg)
    net = Network.from_spec(
        "20-16x4-5", "tanh", seeds=list(seeds), feedback=cls.feedback_maps(config), dtype=torch.float64
    )
    return cls(net, config, ReplicaRandom(list(seeds), "train"))


def test_bp_agrees_with_itself_and_dtp_top_layers_follow_the_gradient():
    x, y = torch.rand(2, 32, 20, dtype=torch.float64), torch.randint(0, 5, (2, 32))
    bp = update_angles(build("bp"), x, y)
    assert bp.shape == (2, 5)
    assert bp.max() < 1e-3
    dtp = update_angles(build("dtp", eta_hat=0.2), x, y)
    # The output layer is trained on the cost itself, and the last hidden layer's target is a gradient step:
    # both updates point along the BP gradient. Lower layers get their direction from the random inverses.
    assert dtp[:, -2:].max() < 1e-3
    assert dtp[:, :-2].min() > 1.0


def test_inverse_errors_shape_and_nan_without_inverse():
    rule = build("dtp")
    errs = inverse_errors(rule.net, torch.rand(2, 32, 20, dtype=torch.float64))
    assert errs.shape == (2, 5)
    assert math.isnan(errs[0, 0]) and math.isnan(errs[0, -1])  # layer 1 and the output layer have no inverse
    assert torch.all(errs[:, 1:-1] > 0)


def test_trainer_logs_diagnostics_per_layer(tmp_path):
    cfg = make_config(rule="dtp", arch="64-32x3-10", epochs=3, seeds=[0, 1], diagnostics=True, out=str(tmp_path))
    result = train(cfg, dataset=load_dataset("digits"), progress=False)
    rows = [r for r in result.history if r["replica"] == 1]
    assert all(len(r["angle_deg"]) == 4 and len(r["inverse_error"]) == 4 for r in rows)
    # the inverses learn: their reconstruction error falls over training
    assert rows[-1]["inverse_error"][1] < rows[0]["inverse_error"][1]
    assert all(a < 90 for a in rows[-1]["angle_deg"][1:])


@pytest.mark.parametrize("rule", ["bp", "dtp"])
@pytest.mark.parametrize(
    ("data", "task", "arch", "output"),
    [("xor", "binary", "2-4-4-1", "linear"), ("digits", "reconstruct", "64-16-64", "sigmoid")],
)
def test_diagnostics_run_with_dense_targets(tmp_path, rule, data, task, arch, output):
    """Dense targets (a binary class as a number, an auto-encoder's input): the diagnostics' BP reference is taken
    on the rule's own task and cost, so it agrees with BP's update exactly, and with DTP's in the output layer."""
    common = dict(rule=rule, epochs=1, diagnostics=True, threads=1, out=str(tmp_path))
    cfg = make_config(data=data, task=task, arch=arch, output=output, **common)
    result = train(cfg, dataset=load_dataset(data), progress=False)
    angles = result.history[-1]["angle_deg"]
    assert len(angles) == len(arch.split("-")) - 1
    # BP agrees with itself, and DTP's output layer trains on the cost itself (to float32 rounding)
    assert max(angles if rule == "bp" else angles[-1:]) < 0.1
