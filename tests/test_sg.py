"""Synthetic gradients (DNI): the predictors' closed-form gradients, the blocks' backward pass, learning on digits,
predictions that come to track the true gradients, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from clitools import whole_and_resumed

from targetprop import Network, ReplicaRandom
from targetprop.config import make_config
from targetprop.errors import ConfigError
from targetprop.rules.bp import BP, descent_directions
from targetprop.rules.sg import SGConfig, SyntheticGradients
from targetprop.trainer import train


def make(arch: str = "6-5-5-5-3", seeds=(0, 1), **cfg) -> SyntheticGradients:
    net = Network.from_spec(arch, "tanh", seeds=list(seeds), feedback="none", dtype=torch.float64)
    return SyntheticGradients(net, SGConfig(**cfg), ReplicaRandom(list(seeds), "train"))


def batch(seed: int = 0, replicas: int = 2, size: int = 7, n_in: int = 6, n_out: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(replicas, size, n_in, generator=gen, dtype=torch.float64), torch.randint(
        0, n_out, (replicas, size), generator=gen
    )


def randomise_predictors(rule: SyntheticGradients) -> None:
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in rule.predictors:
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("hidden", [0, 4])
@pytest.mark.parametrize("conditioned", [False, True])
def test_predictor_gradients_match_autograd(hidden, conditioned):
    rule = make(hidden=hidden, conditioned=conditioned)
    randomise_predictors(rule)
    x, y = batch()
    h = rule.net.activity(x).h[1]
    target = torch.randn(h.shape, dtype=h.dtype, generator=torch.Generator().manual_seed(9))
    g_hat, phi, z = rule.predict_gradient(0, h, y)
    closed = rule.predictor_gradients(0, g_hat, target, phi, z)
    params = [p.detach().clone().requires_grad_(True) for p in rule._params(0)]
    saved = list(rule.predictors)
    n = len(params)
    rule.predictors[0:n] = params
    g_auto = rule.predict_gradient(0, h, y)[0]
    rule.predictors[:] = saved
    expected = torch.autograd.grad((g_auto - target).square().sum(-1).mean(-1).sum(), params)
    for got, want in zip(closed, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_a_block_learns_from_its_synthetic_gradient_and_back_propagates_inside():
    """block = 2 on 4 layers: one predictor on h_2. Layers 3-4 get the exact BP gradient; layers 1-2 the gradient
    of the surrogate ⟨ĝ_2 / B, h_2⟩, i.e. BP inside the block from the synthetic gradient."""
    rule = make(block=2)
    randomise_predictors(rule)
    x, y = batch()
    grads, _ = rule.forward_updates(x, y)
    exact, _ = BP(rule.net, BP.Config(), rule.noise).forward_updates(x, y)
    for k in (4, 5, 6, 7):
        torch.testing.assert_close(grads[k], exact[k])
    params = [p.detach().clone().requires_grad_(True) for p in rule.net.forward_parameters()[:4]]
    w1, b1, w2, b2 = params
    h1 = torch.tanh(torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2)))
    h2 = torch.tanh(torch.baddbmm(b2.unsqueeze(1), h1, w2.transpose(1, 2)))
    g_hat = rule.predict_gradient(0, h2.detach(), y)[0]
    expected = torch.autograd.grad((g_hat / x.shape[1] * h2).sum(), params)
    for got, want in zip(grads[:4], expected, strict=True):
        torch.testing.assert_close(got, want)


def test_zero_initialised_predictors_send_nothing_down_at_first():
    rule = make()
    grads, _ = rule.forward_updates(*batch())
    assert all(torch.count_nonzero(g) == 0 for g in grads[:6])  # layers 1-3 wait for their predictors
    assert torch.count_nonzero(grads[6]) > 0  # the output layer learns from the true gradient


def test_predictor_targets_bootstrap_or_true():
    """A step trains each predictor towards B δ_{i+1} W_{i+1} (bootstrap) or B ∂L/∂h_i (true): at the top
    predictor, where the layer above is the output layer, both are the exact per-sample gradient."""
    x, y = batch()
    for target in ("bootstrap", "true"):
        rule = make(target=target, lr_synthetic=1e-3, optimizer="sgd")
        randomise_predictors(rule)
        acts = rule.net.activity(x)
        _, at_sites = rule.backward(acts, y)
        exact = descent_directions(rule.net, x, y)
        torch.testing.assert_close(at_sites[3][1], -exact[2] * x.shape[1])
    with pytest.raises(ConfigError, match="no predictor"):
        make(block=4)


def test_predictions_come_to_track_the_true_gradients(digits):
    """With the forward weights (almost) still, the gradients to predict stay put: the predictors' angle to the
    true gradient falls and their relative error drops below 1 (better than predicting nothing), in every layer."""
    net = Network.from_spec("64-32-32-32-10", "tanh", seeds=[0, 1], feedback="none")
    rule = SyntheticGradients(net, SGConfig(lr=1e-12, conditioned=True), ReplicaRandom([0, 1], "train"))
    x, y = digits.train.x[:1000], digits.train.y[:1000]
    xs, ys = x.expand(2, -1, -1), y.expand(2, -1)
    history = []
    for _ in range(10):
        for start in range(0, 1000, 100):
            rule.step(xs[:, start : start + 100], ys[:, start : start + 100])
        signal = rule.signal(xs, ys)
        exact = descent_directions(net, xs, ys)
        cos = [
            torch.nn.functional.cosine_similarity(s.flatten(1), e.flatten(1), dim=1)
            for s, e in zip(signal, exact, strict=True)
        ]
        history.append((torch.stack(cos, 1), rule.diagnostics(xs, ys)["sg_error"][:, :3]))
    print("cosine to −∂L/∂h, epochs 1 and 10:", history[0][0].tolist(), history[-1][0].tolist())
    print("sg_error, epochs 1 and 10:", history[0][1].tolist(), history[-1][1].tolist())
    assert torch.all(history[-1][0] > history[0][0] + 0.05)
    assert torch.all(history[-1][0] > 0.7)
    assert torch.all(history[-1][1] < 0.5)


def test_conditioned_synthetic_gradients_learn_digits(digits, tmp_path):
    """cDNI on 64-64x3-10 (Adam, 20 epochs): under 6 % test error (BP: 2.78 % on the same net and epochs), with
    every hidden layer's learning signal within 90° of −∂L/∂h and its predictions better than none."""
    cfg = make_config(
        rule="sg", arch="64-64x3-10", epochs=20, seeds=[0, 1], threads=1, diagnostics=True, out=str(tmp_path),
        sg={"conditioned": True},
    )  # fmt: skip
    result = train(cfg, dataset=digits, progress=False)
    last = [r for r in result.history if r["epoch"] == 20]
    print("test error %:", [r["test_error"] for r in last], "signal angle:", [r["signal_angle_deg"] for r in last])
    assert all(r["test_error"] < 6.0 for r in last)
    assert all(a < 75.0 for r in last for a in r["signal_angle_deg"][:3])
    assert all(e < 1.0 for r in last for e in r["sg_error"][:3])


def test_resumed_run_equals_uninterrupted_run(digits, tmp_path):
    """The predictors and their optimiser travel in the checkpoint (the rule's RuleState)."""
    common = dict(rule="sg", arch="64-24-24-10", seeds=[0, 3], dtype="float64", out=str(tmp_path), threads=1)
    whole, resumed = whole_and_resumed(digits, **common)
    for p, q in zip(resumed.net.forward_parameters(), whole.net.forward_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(resumed.rule.predictors, whole.rule.predictors, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [h["test_error"] for h in resumed.history] == [h["test_error"] for h in whole.history]
    one = resumed.rule.state_dict(replicas=[1])
    assert one["predictors"][0].shape[0] == 1
    torch.testing.assert_close(one["predictors"][0][0], resumed.rule.predictors[0][1])
