"""Hidden and output units: closed-form derivatives agree with autograd; costs are the textbook ones."""

from __future__ import annotations

import math

import pytest
import torch

from targetprop.config import make_config
from targetprop.errors import ConfigError
from targetprop.nets import Network, parse_architecture
from targetprop.replicas import ReplicaRandom
from targetprop.rules import get_rule
from targetprop.trainer import train
from targetprop.units import HIDDEN_UNITS, OUTPUT_UNITS, hidden_unit, output_unit

torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(HIDDEN_UNITS))
def test_hidden_unit_vjp_matches_autograd(name):
    unit = hidden_unit(name)
    a = (torch.randn(2, 5, 7, dtype=torch.float64) * 2).requires_grad_()
    a.data[a.data.abs() < 1e-3] = 0.5  # keep away from the kinks
    a.data[(a.data.abs() - 1).abs() < 1e-3] = 0.5
    h = unit(a)
    g = torch.randn_like(h)
    (auto,) = torch.autograd.grad(h, a, g)
    torch.testing.assert_close(unit.vjp(a.detach(), h.detach(), g), auto)


@pytest.mark.parametrize("name", sorted(HIDDEN_UNITS))
def test_hidden_unit_derivative_matches_autograd(name):
    """``derivative(a, h) = s'(a)`` of the state, element by element (away from the kinks of relu, abs, hardtanh)."""
    unit = hidden_unit(name)
    a = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64)
    a = a[(a.abs() > 1e-3) & ((a.abs() - 1).abs() > 1e-3)].requires_grad_()
    h = unit(a)
    (auto,) = torch.autograd.grad(h.sum(), a)
    torch.testing.assert_close(unit.derivative(a.detach(), h.detach()), auto)


def test_units_of_deep_learning_chapter_6():
    """abs ``|a|``, cos, and the binary step: state ``σ(a)``, transmits ``1[a > 0]``, whose derivative is zero
    almost everywhere (no gradient reaches ``a`` through it unless straight-through)."""
    a = torch.tensor([[[-2.0, -0.5, 0.0, 0.5, 2.0]]], dtype=torch.float64)
    assert hidden_unit("abs")(a).tolist() == [[[2.0, 0.5, 0.0, 0.5, 2.0]]]
    torch.testing.assert_close(hidden_unit("cos")(a), torch.cos(a))
    step = hidden_unit("step")
    assert step.transmits == "step" and step.discrete and step.deterministic
    torch.testing.assert_close(step(a), torch.sigmoid(a))
    assert step.transmit(step(a)).tolist() == [[[0.0, 0.0, 0.0, 1.0, 1.0]]]
    a.requires_grad_()
    assert not step.transmit(step(a)).requires_grad  # the step itself: derivative 0 almost everywhere
    (through,) = torch.autograd.grad(step.transmit(step(a), straight_through=True).sum(), a)
    torch.testing.assert_close(through, step.derivative(a.detach(), step(a).detach()))  # straight-through: σ'(a)


# BP on digits, 64-32-10, 10 epochs, lr 3e-3 (centered RMSprop), seeds 0-2, one thread: test accuracy
# abs 96.7-97.5 %, cos 95.8-96.9 %, step with the straight-through estimator 91.7-94.2 % (relu 95.3-96.9 %).
@pytest.mark.parametrize(("name", "least"), [("abs", 94.0), ("cos", 94.0), ("step", 88.0)])
def test_a_net_of_each_new_unit_trains_under_bp_on_digits(tmp_path, digits, name, least):
    bp = {"lr": 3e-3, "straight_through": name == "step"}
    common = dict(rule="bp", arch="64-32-10", activation=name, epochs=10, seeds="0-2", threads=1, out=str(tmp_path))
    before = Network.from_spec("64-32-10", name, seeds=[0, 1, 2]).layers[0].weight
    result = train(make_config(**common, bp=bp), dataset=digits, progress=False)
    accuracies = [100.0 - r["test_error"] for r in result.summary["per_replica"]]
    assert min(accuracies) >= least, accuracies
    assert not torch.equal(result.net.layers[0].weight, before)  # the hidden layer learned
    if name == "step":  # without the straight-through estimator no gradient crosses the step: layer 1 stays put
        plain = train(make_config(**common, bp={"lr": 3e-3}, name="plain"), dataset=digits, progress=False)
        assert torch.equal(plain.net.layers[0].weight, before)


def test_target_propagation_reaches_below_a_step_layer(digits):
    """A step layer's state σ(a) receives a target, so DTP gives layer 1 an update where BP gives it none."""
    x, y = digits.train.x[:50].expand(2, -1, -1), digits.train.y[:50].expand(2, -1)
    updates = {}
    for rule in ("dtp", "bp"):
        cls = get_rule(rule)
        config = cls.Config()
        net = Network.from_spec("64-16-16-10", ["step", "tanh"], seeds=[0, 1], feedback=cls.feedback_maps(config))
        grads, _ = cls(net, config, ReplicaRandom([0, 1], "train")).forward_updates(x, y)
        updates[rule] = grads[0]
    assert updates["dtp"].flatten(1).norm(dim=1).gt(0).all()  # every replica's W_1 moves
    assert torch.count_nonzero(updates["bp"]) == 0


@pytest.mark.parametrize("name", OUTPUT_UNITS)
def test_output_unit_gradients_match_autograd(name):
    unit = output_unit(name)
    a = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (3, 6))
    loss = unit.loss(a, y)
    (auto_a,) = torch.autograd.grad(loss.sum(), a)
    torch.testing.assert_close(unit.loss_grad(a.detach(), y), auto_a)
    # ∂L/∂h with respect to the output h = s(a), checked through the chain rule: (∂h/∂a)ᵀ ∂L/∂h = ∂L/∂a
    h = unit(a.detach())
    torch.testing.assert_close(unit.vjp(a.detach(), h, unit.output_grad(a.detach(), h, y)), auto_a)


def test_costs_are_the_textbook_ones():
    a = torch.tensor([[[2.0, -1.0, 0.5]]], dtype=torch.float64)
    y = torch.tensor([[0]])
    p = torch.softmax(a, -1)
    assert output_unit("softmax").loss(a, y).item() == pytest.approx(-math.log(p[0, 0, 0].item()))
    s = torch.sigmoid(a)[0, 0]
    bce = -(math.log(s[0]) + math.log(1 - s[1]) + math.log(1 - s[2]))
    assert output_unit("sigmoid").loss(a, y).item() == pytest.approx(bce)
    assert output_unit("linear").loss(a, y).item() == pytest.approx((2 - 1) ** 2 + 1 + 0.25)


def test_discrete_and_stochastic_units_transmit_what_they_should():
    h = torch.tensor([[[-0.3, 0.0, 0.7]]])
    assert hidden_unit("sign").transmit(h).tolist() == [[[-1.0, -1.0, 1.0]]]
    p = torch.full((1, 20000, 1), 0.3)
    sample = hidden_unit("bernoulli").transmit(p, torch.rand_like)
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    assert sample.mean().item() == pytest.approx(0.3, abs=0.02)


def test_unknown_units_and_bad_architectures_are_config_errors():
    with pytest.raises(ConfigError, match="unknown hidden unit 'swish'"):
        hidden_unit("swish")
    with pytest.raises(ConfigError, match="unknown output unit"):
        output_unit("tanh")
    assert parse_architecture("784-240x7-10") == [784] + [240] * 7 + [10]
    for bad in ("784", "784--10", "a-10", "784-0-10", "784-240x0-10"):
        with pytest.raises(ConfigError, match=f"architecture '{bad}'"):
            parse_architecture(bad)


def test_initialisations():
    from targetprop.nets import Network

    net = Network.from_spec("30-20-50-10", "tanh", seeds=[0, 1], init="orthogonal", dtype=torch.float64)
    for layer in net.layers:
        w = layer.weight
        small = min(w.shape[1:])
        gram = w @ w.mT if w.shape[1] == small else w.mT @ w  # (semi-)orthogonal: orthonormal rows or columns
        torch.testing.assert_close(gram, torch.eye(small, dtype=w.dtype).expand_as(gram))
        assert torch.count_nonzero(layer.bias) == 0
    default = Network.from_spec("30-20-10", "tanh", seeds=[0], init="default")
    bound = 1 / math.sqrt(30)
    assert default.layers[0].weight.abs().max() <= bound and default.layers[0].bias.abs().max() <= bound
    assert default.layers[0].bias.abs().max() > 0
