"""The equations of BRIEF.md, checked on small networks: targets, locality, exact inverses, inverse training."""

from __future__ import annotations

import math

import pytest
import torch

from targetprop import Network, ReplicaRandom
from targetprop.rules import get_rule
from targetprop.rules.bp import BP
from targetprop.rules.dtp import DTP
from targetprop.rules.tp import TP


@pytest.fixture(autouse=True)
def float64_by_default():
    """These tests compare equations to tight tolerances: float64 by default, restored afterwards so that no
    other test module runs with it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def make_rule(name: str, net: Network, seeds=(0,), **cfg):
    cls = get_rule(name)
    return cls(net, cls.Config(**cfg), ReplicaRandom(list(seeds), "train"))


def tiny_net() -> Network:
    """x (1) → h1 = tanh(w1 x + b1) → h2 = tanh(w2 h1 + b2) → softmax(W3 h2 + b3) (2 classes)."""
    net = Network([1, 1, 1, 2], ["tanh", "tanh"], "softmax", replicas=1, feedback="hidden").double()
    with torch.no_grad():
        net.layer(1).weight.fill_(0.8)
        net.layer(1).bias.fill_(0.1)
        net.layer(2).weight.fill_(-1.3)
        net.layer(2).bias.fill_(0.2)
        net.layer(3).weight.copy_(torch.tensor([[[0.5], [-0.7]]]))
        net.layer(3).bias.copy_(torch.tensor([[0.05, -0.05]]))
        net.layer(2).fb_weight.fill_(-0.6)  # g2(h2) = tanh(v2 h2 + c2)
        net.layer(2).fb_bias.fill_(0.3)
    return net


def test_dtp_targets_match_hand_computation():
    net = tiny_net()
    eta = 0.4
    rule = make_rule("dtp", net, eta_hat=eta)
    x, y = 0.9, 1
    # by hand, in plain floats
    h1 = math.tanh(0.8 * x + 0.1)
    h2 = math.tanh(-1.3 * h1 + 0.2)
    a3 = [0.5 * h2 + 0.05, -0.7 * h2 - 0.05]
    z = [math.exp(v) for v in a3]
    p = [v / sum(z) for v in z]
    dl_dh2 = (p[0] - 0.0) * 0.5 + (p[1] - 1.0) * (-0.7)  # ∂(−log p_y)/∂h2 = Σ_k (p_k − t_k) W3[k]
    h2_hat = h2 - eta * dl_dh2
    g = lambda h: math.tanh(-0.6 * h + 0.3)  # noqa: E731
    h1_hat = h1 - g(h2) + g(h2_hat)

    acts = net.activity(torch.tensor([[[x]]]))
    targets = rule.targets(acts, torch.tensor([[y]]))
    assert set(targets) == {1, 2}
    assert targets[2].item() == pytest.approx(h2_hat, abs=1e-12)
    assert targets[1].item() == pytest.approx(h1_hat, abs=1e-12)

    # layer-local gradient of layer 1: ∂/∂w1 ||ĥ1 − tanh(w1 x + b1)||² = 2 (h1 − ĥ1)(1 − h1²) x
    grads = rule.local_gradients(acts, torch.tensor([[y]]), targets)
    assert grads[0].item() == pytest.approx(2 * (h1 - h1_hat) * (1 - h1**2) * x, abs=1e-12)
    assert grads[1].item() == pytest.approx(2 * (h1 - h1_hat) * (1 - h1**2), abs=1e-12)
    # the output layer is trained on the cost itself: ∂L/∂W3[k] = (p_k − t_k) h2
    assert grads[4].flatten().tolist() == pytest.approx([p[0] * h2, (p[1] - 1) * h2], abs=1e-12)


def output_target_rule(rule_name: str = "dtp", output: str = "softmax", eta: float = 3.0, seeds=(3, 4)):
    cls = get_rule(rule_name)
    cfg = cls.Config(eta_hat=eta, first_target="output")
    net = Network.from_spec(
        "12-9-7-5", "tanh", output, seeds=list(seeds), feedback=cls.feedback_maps(cfg), dtype=torch.float64
    )
    return cls(net, cfg, ReplicaRandom(list(seeds), "train"))


def test_first_target_on_output_preactivation_by_hand():
    """first_target = "output", softmax: â_M = a_M − η̂ (softmax(a_M) − onehot(y))/B (batch-mean cross-entropy),
    ĥ_{M−1} = h_{M−1} − g_M(a_M) + g_M(â_M) with g_M(a) = tanh(V_M a + c_M) reading the pre-activation, and the
    output layer's update is the gradient of ||â_M − a_M||² (sum over units, mean over the batch): 2η̂/B times
    the BP gradient of the cost, so its direction is exactly BP's."""
    eta, batch = 3.0, 6
    rule = output_target_rule(eta=eta)
    net = rule.net
    assert rule.top == net.depth == 3 and net.layer(3).has_feedback
    x, y = torch.rand(2, batch, 12), torch.randint(0, 5, (2, batch))
    acts = net.activity(x)
    targets = rule.targets(acts, y)
    assert set(targets) == {1, 2, 3}
    a3 = acts.a[3]
    onehot = torch.nn.functional.one_hot(y, 5).double()
    a3_hat = a3 - eta * (torch.softmax(a3, -1) - onehot) / batch
    torch.testing.assert_close(targets[3], a3_hat, atol=1e-12, rtol=0)
    out = net.layer(3)
    g3 = lambda a: torch.tanh(a @ out.fb_weight.transpose(1, 2) + out.fb_bias.unsqueeze(1))  # noqa: E731
    h2_hat = acts.h[2] - g3(a3) + g3(a3_hat)
    torch.testing.assert_close(targets[2], h2_hat, atol=1e-12, rtol=0)
    layer2 = net.layer(2)
    g2 = lambda h: torch.tanh(h @ layer2.fb_weight.transpose(1, 2) + layer2.fb_bias.unsqueeze(1))  # noqa: E731
    torch.testing.assert_close(targets[1], acts.h[1] - g2(acts.h[2]) + g2(h2_hat), atol=1e-12, rtol=0)

    grads = rule.local_gradients(acts, y, targets)
    delta3 = 2.0 * (a3 - a3_hat) / batch
    torch.testing.assert_close(grads[4], delta3.transpose(1, 2) @ acts.h[2], atol=1e-12, rtol=0)
    torch.testing.assert_close(grads[5], delta3.sum(1), atol=1e-12, rtol=0)
    bp, _ = BP(net, BP.Config(), ReplicaRandom([3, 4], "train")).forward_updates(x, y)
    torch.testing.assert_close(grads[4], (2 * eta / batch) * bp[4], atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(grads[5], (2 * eta / batch) * bp[5], atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_first_target_on_output_is_a_gradient_step_on_the_preactivation(output):
    """â_M = a_M − η̂ ∂L/∂a_M for every output unit, with ∂L/∂a_M that of the batch-mean cost (checked against
    autograd); for a linear output a_M = h_M, and the target is the paper's ĥ_M = h_M − η̂ ∂L/∂h_M."""
    eta = 0.7
    rule = output_target_rule(output=output, eta=eta)
    x, y = torch.rand(2, 6, 12), torch.randint(0, 5, (2, 6))
    acts = rule.net.activity(x)
    a = acts.a[-1].clone().requires_grad_()
    (grad,) = torch.autograd.grad(rule.net.output_unit.loss(a, y).sum(), a)
    target = rule.targets(acts, y)[rule.net.depth]
    torch.testing.assert_close(target, acts.a[-1] - eta * grad, atol=1e-12, rtol=1e-12)
    if output == "linear":
        h = acts.h[-1]
        torch.testing.assert_close(target, h - eta * rule.net.output_unit.output_grad(acts.a[-1], h, y))


def test_output_inverse_trains_on_the_corrupted_last_hidden_layer():
    """L_M^inv = (1/B) Σ_b ||g_M(W_M (h_{M−1} + ε) + b_M) − (h_{M−1} + ε)||²: the rule's closed-form gradients for
    V_M, c_M are autograd's on that loss, for a given ε (g_M reads the pre-activation, not the softmax)."""
    rule = output_target_rule()
    net = rule.net
    x = torch.rand(2, 8, 12)
    acts = net.activity(x)
    eps = 0.3 * torch.randn(2, 8, 9 + 7)  # layers 2 and 3: ε for h_1 (9 wide) and h_2 (7 wide)
    h_tilde, fb_in = rule.corrupt(acts, eps)
    grads, total = rule.inverse_gradients_at(h_tilde, fb_in)
    out = net.layer(3)
    h2_tilde = acts.h[2] + eps[..., 9:]
    torch.testing.assert_close(h_tilde[1], h2_tilde)
    torch.testing.assert_close(fb_in[1], out.preactivation(h2_tilde))
    params = net.feedback_parameters()
    h1_tilde = acts.h[1] + eps[..., :9]
    codes = {2: net.layer(2)(h1_tilde), 3: out.preactivation(h2_tilde)}  # f_2(h̃_1) and a_M(h̃_2)
    losses = [
        ((net.layer(i).inverse(codes[i]) - h_t) ** 2).sum(-1).mean(-1) for i, h_t in ((2, h1_tilde), (3, h2_tilde))
    ]
    auto = torch.autograd.grad(sum(loss.sum() for loss in losses), params)
    for a, b in zip(grads, auto, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(total, losses[0].detach() + losses[1].detach())


def test_output_inverse_is_not_stacked_and_chunked_pass_equals_step_by_step():
    """With the output layer among the inverses (first_target = "output"), square layers of one unit name
    (sigmoid hidden units, sigmoid output) do not stack (g_M reads a_M, not s(a_M)); the alternating schedule's
    chunked inverse pass still gives each mini-batch the update of its own step."""
    seeds = [0, 1]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 70, 20, generator=gen)
    y = torch.randint(0, 5, (2, 70), generator=gen)
    batches = [(x[:, k : k + 16], y[:, k : k + 16]) for k in range(0, 70, 16)]
    results = []
    for chunk_rows in (0, 40):
        net = Network.from_spec("20-5x4-5", "sigmoid", "sigmoid", seeds=seeds, feedback="all", dtype=torch.float64)
        rule = make_rule("dtp", net, seeds=seeds, first_target="output")
        assert not rule.fast.stackable()
        rule.fast.chunk_rows = chunk_rows
        losses = [m["inverse_loss"] for m in rule.train_pass(iter(batches), ("feedback",))]
        results.append((rule, losses))
    (chunked, chunked_losses), (plain, plain_losses) = results
    torch.testing.assert_close(torch.stack(chunked_losses), torch.stack(plain_losses))
    for a, b in zip(chunked.net.feedback_parameters(), plain.net.feedback_parameters(), strict=True):
        torch.testing.assert_close(a, b)
    fresh = Network.from_spec("20-5x4-5", "sigmoid", "sigmoid", seeds=seeds, feedback="all", dtype=torch.float64)
    assert (chunked.net.feedback_parameters()[-2] - fresh.feedback_parameters()[-2]).abs().max() > 1e-4


@pytest.mark.parametrize("first_target", ["last_hidden", "output"])
def test_dtp_target_equal_to_activity_propagates_as_activity(first_target):
    """ĥ_i = h_i ⇒ ĥ_{i−1} = h_{i−1}, for inverses that are far from exact (random ones); with η̂ = 0 every target
    equals the activity it sits on (the output pre-activation a_M for the output layer)."""
    cls = DTP
    cfg = cls.Config(eta_hat=0.0, first_target=first_target)
    net = Network.from_spec("12-9-7-8-5", "tanh", seeds=[3, 4], feedback=cls.feedback_maps(cfg), dtype=torch.float64)
    rule = cls(net, cfg, ReplicaRandom([3, 4], "train"))
    x, y = torch.rand(2, 6, 12), torch.randint(0, 5, (2, 6))
    acts = net.activity(x)
    targets = rule.targets(acts, y)
    assert len(targets) == (4 if first_target == "output" else 3)
    for i, t in targets.items():
        torch.testing.assert_close(t, acts.a[i] if i == net.depth else acts.h[i], atol=1e-12, rtol=0)
    # TP with the same inverses does not have this property: the check above can fail.
    tp = TP(net, TP.Config(eta_hat=0.0, first_target=first_target), ReplicaRandom([3, 4], "train"))
    tp_targets = tp.targets(acts, y)
    assert (tp_targets[1] - acts.h[1]).abs().max() > 1e-2


def exact_inverse_net(first_target: str, output: str = "linear") -> Network:
    """Identity units and square invertible weights, with V_i = W_i^{-1}, c_i = −W_i^{-1} b_i: g_i = f_i^{-1}
    (for the output layer, the inverse of its pre-activation map u_{M−1} ↦ a_M)."""
    n = 5
    feedback = "all" if first_target == "output" else "hidden"
    net = Network([n, n, n, n, n], ["identity"] * 3, output, replicas=2, feedback=feedback).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in net.layers:
            w = torch.eye(n) + 0.3 * torch.randn(2, n, n, generator=gen)
            layer.weight.copy_(w)
            layer.bias.copy_(0.1 * torch.randn(2, n, generator=gen))
            if layer.has_feedback:
                inv = torch.linalg.inv(layer.weight)
                layer.fb_weight.copy_(inv)
                layer.fb_bias.copy_(-(inv @ layer.bias.unsqueeze(-1)).squeeze(-1))
    return net


@pytest.mark.parametrize(
    ("first_target", "output"),
    [("last_hidden", "linear"), ("output", "linear"), ("output", "softmax"), ("output", "sigmoid")],
)
def test_dtp_equals_tp_with_exact_inverse(first_target, output):
    net = exact_inverse_net(first_target, output)
    eta = 0.5 if output == "linear" else 3.0
    dtp = make_rule("dtp", net, seeds=(0, 1), eta_hat=eta, first_target=first_target)
    tp = make_rule("tp", net, seeds=(0, 1), eta_hat=eta, first_target=first_target)
    x, y = torch.randn(2, 7, 5), torch.randint(0, 5, (2, 7))
    acts = net.activity(x)
    # the inverse is exact: g_i(h_i) = h_{i−1}; the output layer's inverts its pre-activation, g_M(a_M) = h_{M−1}
    for i in range(2, dtp.top + 1):
        torch.testing.assert_close(net.layer(i).inverse(dtp.target_site(acts, i)), acts.h[i - 1])
    t_dtp, t_tp = dtp.targets(acts, y), tp.targets(acts, y)
    assert t_dtp.keys() == t_tp.keys()
    for i in t_dtp:
        torch.testing.assert_close(t_dtp[i], t_tp[i], atol=1e-10, rtol=1e-10)
        assert (t_dtp[i] - dtp.target_site(acts, i)).abs().max() > 1e-3  # the targets do move
    g_dtp, _ = dtp.forward_updates(x, y)
    g_tp, _ = tp.forward_updates(x, y)
    for a, b in zip(g_dtp, g_tp, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("rule_name", ["dtp", "tp"])
@pytest.mark.parametrize("first_target", ["last_hidden", "output"])
def test_forward_update_is_layer_local(rule_name, first_target):
    """Each layer's update is the gradient of its own loss ||ĥ_i − f_i(h_{i−1})||² w.r.t. its own parameters,
    with h_{i−1} and ĥ_i held fixed: autograd on that loss puts no gradient on any other layer's parameters,
    and agrees with the rule's closed form."""
    cls = get_rule(rule_name)
    cfg = cls.Config(first_target=first_target)
    net = Network.from_spec("10-8-8-6-4", "tanh", seeds=[0, 1], feedback=cls.feedback_maps(cfg), dtype=torch.float64)
    rule = cls(net, cfg, ReplicaRandom([0, 1], "train"))
    x, y = torch.rand(2, 16, 10), torch.randint(0, 4, (2, 16))
    grads, _ = rule.forward_updates(x, y)
    acts = net.activity(x)
    targets = rule.targets(acts, y)
    params = net.forward_parameters() + net.feedback_parameters()
    for i in range(1, net.depth + 1):
        layer = net.layer(i)
        h = layer.unit(layer.preactivation(acts.u[i - 1].detach()))
        if i in targets and i == net.depth:  # first_target = "output": the loss is on the pre-activation a_M
            loss = ((targets[i].detach() - layer.preactivation(acts.u[i - 1].detach())) ** 2).sum(-1).mean(-1).sum()
        elif i in targets:
            loss = ((targets[i].detach() - h) ** 2).sum(-1).mean(-1).sum()
        else:  # the output layer, trained on the cost
            loss = net.output_unit.loss(layer.preactivation(acts.u[i - 1].detach()), y).sum()
        auto = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        for j, (p, g) in enumerate(zip(params, auto, strict=True)):
            own = p is layer.weight or p is layer.bias
            if own:
                torch.testing.assert_close(g, grads[j], atol=1e-12, rtol=1e-9)
            else:
                assert torch.count_nonzero(g) == 0, f"layer {i}'s loss reached another parameter"


def test_dtp_step_changes_forward_layers_only_through_their_own_targets():
    """Moving one layer's target changes that layer's update and no other."""
    net = Network.from_spec("10-8-8-6-4", "tanh", seeds=[0], feedback="hidden", dtype=torch.float64)
    rule = make_rule("dtp", net)
    x, y = torch.rand(1, 16, 10), torch.randint(0, 4, (1, 16))
    acts = net.activity(x)
    targets = rule.targets(acts, y)
    base = rule.local_gradients(acts, y, targets)
    moved = dict(targets)
    moved[2] = targets[2] + 0.1
    changed = rule.local_gradients(acts, y, moved)
    diff = [(a - b).abs().max().item() > 0 for a, b in zip(base, changed, strict=True)]
    assert diff == [False, False, True, True, False, False, False, False]


def test_inverse_loss_falls_while_inverses_train():
    cfg = DTP.Config(lr_feedback=0.005)
    net = Network.from_spec("20-30x3-5", "tanh", seeds=[0, 1], feedback="hidden", dtype=torch.float64)
    rule = DTP(net, cfg, ReplicaRandom([0, 1], "train"))
    gen = torch.Generator().manual_seed(1)
    data = torch.rand(10, 2, 32, 20, generator=gen)
    labels = torch.randint(0, 5, (10, 2, 32), generator=gen)
    forward_before = [p.clone() for p in net.forward_parameters()]
    losses = []
    for _epoch in range(30):
        total = 0
        for x, y in zip(data, labels, strict=True):
            total = total + rule.step(x, y, ("feedback",))["inverse_loss"]
        losses.append(total / len(data))
    assert torch.all(losses[-1] < 0.5 * losses[0]), (losses[0], losses[-1])
    for before, after in zip(forward_before, net.forward_parameters(), strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)  # the feedback phase leaves f alone


def test_bp_matches_plain_pytorch_on_exported_replica():
    """Our BP on replica r equals an ordinary nn.Sequential trained with torch.optim.SGD on the same batches."""
    cls = get_rule("bp")
    net = Network.from_spec("6-5-4-3", "relu", seeds=[0, 1], feedback="none", dtype=torch.float64)
    plain = net.export(1)
    rule = cls(net, cls.Config(lr=0.1, optimizer="sgd"), ReplicaRandom([0, 1], "train"))
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for _ in range(5):
        x, y = torch.rand(2, 8, 6), torch.randint(0, 3, (2, 8))
        rule.step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(plain(x[1]), y[1]).backward()
        opt.step()
    x = torch.rand(9, 6)
    torch.testing.assert_close(net(x)[1], plain(x))
    torch.testing.assert_close(net.select(1)(x)[0], plain(x))


@pytest.mark.parametrize(("hidden", "reads_sign"), [(["sign", "tanh"], True), (["tanh", "tanh"], False)])
def test_a_discrete_connection_is_discrete_both_ways(hidden, reads_sign):
    """The DTP paper's discrete network: below a sign layer 1, the tanh layer 2's inverse reads the sign,
    ``g_2(h_2) = tanh(V_2 sign(h_2) + c_2)``, in the targets and in its own training,
    ``L_2^inv = (1/B) Σ_b ||g_2(f_2(sign(h_1 + ε))) − (h_1 + ε)||²`` (autograd on that loss); above a tanh layer 1
    it reads ``h_2`` itself."""
    net = Network.from_spec("6-5-4-3", hidden, seeds=[0, 1], dtype=torch.float64)
    layer = net.layer(2)
    code = (lambda h: torch.where(h > 0, 1.0, -1.0)) if reads_sign else (lambda h: h)

    def g(h):
        return torch.tanh(torch.einsum("rbo,rio->rbi", code(h), layer.fb_weight) + layer.fb_bias[:, None])

    h = 2 * torch.rand(2, 7, 4) - 1
    torch.testing.assert_close(layer.inverse(h), g(h))
    rule = make_rule("dtp", net, seeds=(0, 1))
    x, y = torch.rand(2, 7, 6), torch.randint(0, 3, (2, 7))
    acts = net.activity(x)
    targets = rule.targets(acts, y)
    torch.testing.assert_close(targets[1], acts.h[1] - g(acts.h[2]) + g(targets[2]))
    eps = 0.4 * torch.randn(2, 7, 5)
    grads, total = rule.inverse_gradients_at(*rule.corrupt(acts, eps))
    h1_tilde = acts.h[1] + eps
    loss = ((g(layer(net.layer(1).transmit(h1_tilde))) - h1_tilde) ** 2).sum(-1).mean(-1)
    auto = torch.autograd.grad(loss.sum(), [layer.fb_weight, layer.fb_bias])
    for a, b in zip(grads, auto, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(total, loss.detach())
    if reads_sign:  # the check can fail: the sign changes what g_2 gives
        assert (
            g(h) - torch.tanh(torch.einsum("rbo,rio->rbi", h, layer.fb_weight) + layer.fb_bias[:, None])
        ).abs().max() > 0.1


def test_the_stochastic_networks_inverse_reads_probabilities_through_tanh():
    """The DTP paper's stochastic network: ``g_2(h_2^p) = tanh(V_2 h_2^p + c_2)`` (the authors' code), on the
    probabilities, never a sample."""
    net = Network.from_spec("6-5-4-3", "bernoulli", seeds=[0], dtype=torch.float64)
    layer = net.layer(2)
    assert layer.feedback_unit.name == "tanh"
    h = torch.rand(1, 7, 4)
    expected = torch.tanh(torch.einsum("rbo,rio->rbi", h, layer.fb_weight) + layer.fb_bias[:, None])
    torch.testing.assert_close(layer.inverse(h), expected)
    assert (layer.inverse(h) < 0).any()  # the check can fail: a sigmoid never goes below 0


@pytest.mark.parametrize("unit", ["sign", "step"])
def test_discrete_units_block_bp_unless_straight_through(unit):
    cls = get_rule("bp")
    x, y = torch.rand(1, 8, 6), torch.randint(0, 3, (1, 8))
    for st, expect_zero in [(False, True), (True, False)]:
        net = Network.from_spec("6-5-4-3", unit, seeds=[0], feedback="none", dtype=torch.float64)
        rule = cls(net, cls.Config(straight_through=st), ReplicaRandom([0], "train"))
        grads, _ = rule.forward_updates(x, y)
        assert bool(torch.count_nonzero(grads[0]) == 0) is expect_zero
        assert torch.count_nonzero(grads[-2]) > 0  # the output layer always learns


@pytest.mark.parametrize(
    ("hidden", "straight_through"),
    [
        ("tanh", False),
        ("relu", False),
        ("sigmoid", False),
        ("abs", False),
        ("cos", False),
        ("sign", False),
        ("sign", True),
        ("step", False),
        ("step", True),
        ("bernoulli", True),
        ("bernoulli", False),
    ],
)
def test_closed_form_bp_equals_autograd(hidden, straight_through):
    """BP's closed-form backward pass gives autograd's gradients, through every unit (and straight-through)."""
    x = torch.randn(2, 16, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 16))
    grads = {}
    for use_autograd in (False, True):
        net = Network.from_spec("5-7-6-3", hidden, seeds=[0, 1], feedback="none", dtype=torch.float64)
        config = BP.Config(straight_through=straight_through, autograd=use_autograd)
        rule = BP(net, config, ReplicaRandom([0, 1], "train"))
        grads[use_autograd], _ = rule.forward_updates(x, y)
    for g_closed, g_auto in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(g_closed, g_auto)
    # the check can fail: the gradients are not all zero
    assert any(g.abs().sum() > 0 for g in grads[False])


@pytest.mark.parametrize(("activation", "replicas"), [("tanh", 1), ("tanh", 3), ("sign", 2), ("step", 2)])
def test_stacked_inverse_training_equals_layer_by_layer(activation, replicas):
    """The inverses of equal-width layers train as one product over layers; it gives the per-layer numbers."""
    seeds = list(range(replicas))
    x = torch.rand(replicas, 16, 20)
    y = torch.randint(0, 5, (replicas, 16))
    rules = []
    for stacked in (True, False):
        net = Network.from_spec("20-8x4-5", activation, seeds=seeds, dtype=torch.float64)
        rule = make_rule("dtp", net, seeds=seeds)
        rule.fast.stack = stacked
        assert rule.fast.stackable() is stacked
        losses = [rule.step(x, y, ("feedback",))["inverse_loss"] for _ in range(3)]
        rules.append((rule, losses))
    (stacked_rule, stacked_losses), (plain_rule, plain_losses) = rules
    torch.testing.assert_close(torch.stack(stacked_losses), torch.stack(plain_losses))
    for a, b in zip(stacked_rule.net.feedback_parameters(), plain_rule.net.feedback_parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # the inverses did train: the check compares moving parameters
    fresh = Network.from_spec("20-8x4-5", activation, seeds=seeds, dtype=torch.float64)
    assert (stacked_rule.net.feedback_parameters()[0] - fresh.feedback_parameters()[0]).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("architecture", "activation", "replicas"),
    [
        ("20-8x4-5", "tanh", 1),
        ("20-8x4-5", "tanh", 3),
        ("20-8x4-5", "sign", 2),
        ("20-8x4-5", "step", 2),
        ("20-9-7-6-5", "tanh", 2),
    ],
)
def test_chunked_inverse_pass_equals_step_by_step(architecture, activation, replicas):
    """DTP's inverse pass shares the forward-weight work between mini-batches (the forward weights are frozen
    through it): each mini-batch still gets the update of its own step, with its own ε, in order; the last
    mini-batch is short and the chunks do not divide the pass."""
    seeds = list(range(replicas))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(replicas, 70, 20, generator=gen)
    y = torch.randint(0, 5, (replicas, 70), generator=gen)
    batches = [(x[:, k : k + 16], y[:, k : k + 16]) for k in range(0, 70, 16)]  # 16, 16, 16, 16, 6
    results = []
    for chunk_rows in (0, 40):
        net = Network.from_spec(architecture, activation, seeds=seeds, dtype=torch.float64)
        rule = make_rule("dtp", net, seeds=seeds)
        rule.fast.chunk_rows = chunk_rows
        assert rule.fast.chunkable(("feedback",)) is (chunk_rows > 0)
        losses = [m["inverse_loss"] for m in rule.train_pass(iter(batches), ("feedback",))]
        results.append((rule, losses))
    (chunked, chunked_losses), (plain, plain_losses) = results
    assert len(chunked_losses) == len(batches)
    torch.testing.assert_close(torch.stack(chunked_losses), torch.stack(plain_losses))
    for a, b in zip(chunked.net.feedback_parameters(), plain.net.feedback_parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # the random streams are left where step by step leaves them
    assert torch.equal(chunked.noise.normal((3,)), plain.noise.normal((3,)))
    for a, b in zip(chunked.net.forward_parameters(), plain.net.forward_parameters(), strict=True):
        assert torch.equal(a, b)  # frozen in an inverse pass
    fresh = Network.from_spec(architecture, activation, seeds=seeds, dtype=torch.float64)
    assert (chunked.net.feedback_parameters()[0] - fresh.feedback_parameters()[0]).abs().max() > 1e-4


def test_inverse_pass_with_stochastic_units_runs_step_by_step():
    """Bernoulli units draw samples in the forward pass: drawing ε ahead would reorder the random stream, so the
    inverse pass of a stochastic network is not chunked."""
    net = Network.from_spec("20-8-8-5", "bernoulli", dtype=torch.float64)
    rule = make_rule("dtp", net)
    assert not rule.fast.chunkable(("feedback",))
    assert not rule.fast.chunkable(("feedback", "forward"))


@pytest.mark.parametrize("per_replica", [False, True])
def test_corruption_sigma_follows_its_schedule_epoch_by_epoch(per_replica):
    """σ_e = noise / (1 + e / noise_decay) at every epoch the trainer starts, and at the epoch a restored state
    carries (σ is computed once an epoch and must not outlive it); one σ for every replica stays a float."""
    net = Network([3, 4, 4, 2], ["tanh", "tanh"], "softmax", replicas=2, feedback="hidden")
    noise, decay = ([0.5, 2.0], [50.0, 10.0]) if per_replica else (0.5, 50.0)
    rule = make_rule("dtp", net, seeds=(0, 1), noise=noise, noise_decay=decay)

    def expected(epoch: int) -> list[float]:
        pairs = zip(noise, decay, strict=True) if per_replica else [(noise, decay)] * 2
        return [n / (1 + epoch / d) for n, d in pairs]

    for epoch in (0, 1, 7, 7, 99):
        rule.on_epoch_start(epoch)
        sigma = rule.sigma
        assert isinstance(sigma, torch.Tensor) == per_replica
        got = sigma.tolist() if per_replica else [sigma] * 2
        assert got == pytest.approx(expected(epoch), rel=1e-12)
    state = rule.state_dict()
    rule.on_epoch_start(3)
    rule.load_state_dict(state)  # back at epoch 99, before the trainer starts epoch 100
    got = rule.sigma.tolist() if per_replica else [rule.sigma] * 2
    assert got == pytest.approx(expected(99), rel=1e-12)
