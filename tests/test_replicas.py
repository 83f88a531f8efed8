"""R replicas in one process follow exactly the paths of R single runs with the same seeds."""

from __future__ import annotations

import pytest
import torch
from clitools import whole_and_resumed

from targetprop import Network, parse_seeds
from targetprop.config import make_config
from targetprop.errors import ConfigError
from targetprop.trainer import train


@pytest.mark.parametrize(
    ("rule", "activation", "params"),
    [
        ("bp", "tanh", {}),
        ("dtp", "tanh", {}),  # corruption noise and shuffling, per replica
        ("dtp", "bernoulli", {"schedule": "parallel"}),  # stochastic units sample per replica
        ("tp", "relu", {"optimizer": "adam", "lr": 1e-3}),
        ("fa", "tanh", {}),
        ("dfa", "tanh", {"optimizer": "sgd", "lr": 0.05}),
        ("fa", "bernoulli", {}),  # stochastic units sample per replica
        ("dfa", "sign", {"feedback_init": "orthogonal"}),
    ],
)
def test_replicas_equal_single_runs(tmp_path, digits, rule, activation, params):
    seeds = [0, 5, 7]
    common = dict(
        rule=rule,
        arch="64-24-24-10",
        activation=activation,
        epochs=2,
        batch_size=50,
        dtype="float64",
        out=str(tmp_path),
        **{rule: params},
    )
    together = train(make_config(seeds=seeds, name="together", **common), dataset=digits, progress=False)
    for r, seed in enumerate(seeds):
        single = train(make_config(seeds=[seed], name=f"single{seed}", **common), dataset=digits, progress=False)
        for name, p in single.net.named_parameters():
            torch.testing.assert_close(together.net.get_parameter(name)[r], p[0], rtol=1e-9, atol=1e-11)
        for a, b in zip(getattr(together.rule, "feedback", []), getattr(single.rule, "feedback", []), strict=True):
            torch.testing.assert_close(a[r], b[0], rtol=0, atol=0)  # FA / DFA: each replica's own matrices
        rows_together = [h for h in together.history if h["replica"] == r]
        for a, b in zip(rows_together, single.history, strict=True):
            assert a["seed"] == b["seed"] == seed
            for key in ("train_error", "valid_error", "test_error"):
                assert a[key] == b[key], (key, a, b)
            assert a["batch_loss"] == pytest.approx(b["batch_loss"], rel=1e-9)
    # the replicas are not copies of each other
    w = together.net.layers[0].weight
    assert (w[0] - w[1]).abs().max() > 1e-3


def test_replica_export_is_a_plain_network(digits):
    net = Network.from_spec("64-32-32-10", "tanh", seeds=[0, 1, 2])
    for r in range(3):
        plain = net.export(r)
        assert isinstance(plain, torch.nn.Sequential)
        assert all(not p.shape or p.shape[0] != 3 or p.dim() == 1 for p in plain.parameters())
        torch.testing.assert_close(plain(digits.test.x), net(digits.test.x)[r])
        torch.testing.assert_close(net.select(r)(digits.test.x)[0], net(digits.test.x)[r])


def test_same_seed_same_initialisation_across_rules():
    """A seed gives the same forward weights whether or not the rule needs feedback weights (fair comparisons)."""
    a = Network.from_spec("64-32-32-10", "tanh", seeds=[4], feedback="none")
    b = Network.from_spec("64-32-32-10", "tanh", seeds=[4], feedback="hidden")
    for pa, pb in zip(a.forward_parameters(), b.forward_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_per_replica_hyper_parameters(tmp_path, digits):
    """Lists of learning rates, η̂ and corruption σ and its decay give each replica its own; replica r equals a
    single run with the r-th values (over two epochs, so that the decayed σ of the second counts)."""
    common = dict(rule="dtp", arch="64-24-24-10", epochs=2, dtype="float64", out=str(tmp_path))
    lists = {"lr": [0.01, 0.001], "eta_hat": [0.3, 0.1], "noise": [0.5, 0.1], "noise_decay": [1.0, 3.0]}
    both = train(make_config(seeds=[1, 2], name="both", **common, dtp=lists), dataset=digits, progress=False)
    for replica, seed in enumerate((1, 2)):
        single = train(
            make_config(seeds=[seed], name=f"one{seed}", **common, dtp={k: v[replica] for k, v in lists.items()}),
            dataset=digits,
            progress=False,
        )
        for name, p in single.net.named_parameters():
            torch.testing.assert_close(both.net.get_parameter(name)[replica], p[0], rtol=1e-9, atol=1e-11)
    with pytest.raises(ConfigError, match="per replica"):
        train(
            make_config(seeds=[1, 2, 3], name="bad", **common, dtp={"lr": [0.1, 0.2]}), dataset=digits, progress=False
        )


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]
    assert parse_seeds("0,0,0") == [0, 0, 0]  # one initialisation, several settings (sweeps)
    for bad in ("a-b", "", "3-"):
        with pytest.raises(ConfigError, match=f"cannot read seeds '{bad}'"):
            parse_seeds(bad)


@pytest.mark.parametrize("rule", ["bp", "dtp"])
def test_training_with_small_optimiser_blocks_is_bitwise_the_same(tmp_path, digits, monkeypatch, rule):
    """A large buffer's update runs in cache-sized blocks (``Optimizer.block_elements``). With blocks far smaller
    than these buffers (pieces of rows, and several rows per block) three replicas with their own learning rates
    train to the same bits as with the whole buffer at once, including DTP's inverses, whose gradients land in the
    feedback buffer as views."""
    from targetprop.optim import Optimizer

    lrs = {"lr": [0.01, 0.003, 0.001]} | ({"lr_feedback": [0.01, 0.001, 0.003]} if rule == "dtp" else {})
    common = dict(
        rule=rule, arch="64-24-24-10", activation="tanh", epochs=2, batch_size=50, seeds=[0, 5, 7], **{rule: lrs}
    )
    whole = train(make_config(name="whole", out=str(tmp_path), **common), dataset=digits, progress=False)
    for budget in (100, 5000):  # 100: pieces of every row; 5000: two rows of the 2,410 forward parameters
        monkeypatch.setattr(Optimizer, "block_elements", budget)
        blocked = train(make_config(name=f"b{budget}", out=str(tmp_path), **common), dataset=digits, progress=False)
        for name, p in whole.net.named_parameters():
            assert torch.equal(blocked.net.get_parameter(name), p), (budget, name)


def test_lr_decay_sets_each_epochs_forward_rate_per_replica_and_resumes_on_schedule(tmp_path, digits):
    """``lr_decay`` τ: epoch e (from 0) trains the forward weights at ``lr / (1 + e/τ)``, τ per replica; the
    inverses keep their rate; a run resumed after epoch 1 continues the schedule bit for bit."""
    dtp = {"lr": [0.01, 0.02], "lr_feedback": 0.003, "lr_decay": [1.0, 4.0], "optimizer": "sgd"}
    common = dict(rule="dtp", arch="64-24-24-10", seeds=[0, 0], dtype="float64", out=str(tmp_path), dtp=dtp)
    whole, resumed = whole_and_resumed(digits, epochs=3, **common)
    for p, q in zip(resumed.net.forward_parameters(), whole.net.forward_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    f64 = dict(dtype=torch.float64)
    torch.testing.assert_close(
        whole.rule.optimizer.lr, torch.tensor([0.01 / (1 + 2 / 1.0), 0.02 / (1 + 2 / 4.0)], **f64)
    )
    torch.testing.assert_close(whole.rule.optimizers()["feedback"].lr, torch.tensor([0.003, 0.003], **f64))
    steady = train(
        make_config(epochs=3, name="steady", **{**common, "dtp": {**dtp, "lr_decay": None}}),
        dataset=digits,
        progress=False,
    )
    torch.testing.assert_close(steady.rule.optimizer.lr, torch.tensor([0.01, 0.02], **f64))
    assert steady.history[-1]["train_loss"] != whole.history[-1]["train_loss"]
