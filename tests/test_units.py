"""Hidden and output units: closed-form derivatives agree with autograd; costs are the textbook ones."""

from __future__ import annotations

import math

import pytest
import torch

from targetprop.errors import ConfigError
from targetprop.nets import parse_architecture
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
        with pytest.raises(ConfigError):
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
