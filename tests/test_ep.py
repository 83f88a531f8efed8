"""Equilibrium propagation: the free phase settles at a stationary point of the energy, the update tends to the
gradient of the cost at that fixed point, the network predicts by relaxation, learns digits, keeps persistent
states per example, and resumes bit for bit."""

from __future__ import annotations

import tomllib

import pytest
import torch
from clitools import assert_same_run, run_cli, show

from targetprop import Network, ReplicaRandom, checkpoint
from targetprop.config import make_config, with_rule_defaults
from targetprop.data import Split
from targetprop.diagnostics import measure
from targetprop.errors import ConfigError
from targetprop.experiments import load_config_source
from targetprop.rules import RULES, get_rule
from targetprop.rules.base import angle_deg
from targetprop.rules.ep import EquilibriumPropagation
from targetprop.trainer import evaluate, train

F64 = torch.float64
EP_RUN = dict(rule="ep", activation="hardsigmoid", output="linear", init="glorot", batch_size=20)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The relaxations are many small products: one thread (two spin-wait each other on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(arch: str, seeds=(0, 1), bias: float = 0.0, **cfg) -> EquilibriumPropagation:
    net = Network.from_spec(arch, "hardsigmoid", "linear", seeds=list(seeds), init="glorot", feedback="none", dtype=F64)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.add_(bias)
    config = EquilibriumPropagation.Config(**{"layer_lr": [0.1], **cfg})
    return EquilibriumPropagation(net, config, ReplicaRandom(list(seeds), "train"))


def batch(seed: int, replicas: int, n_in: int, n_out: int, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(replicas, size, n_in, generator=gen, dtype=F64), torch.randint(
        0, n_out, (replicas, size), generator=gen
    )


def test_registered_and_refuses_what_it_cannot_relax():
    assert RULES["ep"] is EquilibriumPropagation and get_rule("EP") is EquilibriumPropagation
    assert all(f.description for f in EquilibriumPropagation.Config.model_fields.values())
    seeds = [0]
    for unit, output, message in (
        ("tanh", "linear", "layer\\(s\\) \\[1\\] are tanh: use --activation hardsigmoid$"),
        ("hardsigmoid", "softmax", "the output is softmax: use --output linear$"),
        ("tanh", "softmax", "are tanh and the output is softmax: use --activation hardsigmoid --output linear$"),
    ):
        net = Network.from_spec("6-5-3", unit, output, seeds=seeds, feedback="none")
        with pytest.raises(ConfigError, match=message):
            EquilibriumPropagation(net, EquilibriumPropagation.Config(layer_lr=[0.1]), ReplicaRandom(seeds, "train"))
    net = Network.from_spec("6-5-5-3", "hardsigmoid", "linear", seeds=seeds, feedback="none")
    with pytest.raises(ConfigError, match="2 values for 3 layers"):
        EquilibriumPropagation(net, EquilibriumPropagation.Config(), ReplicaRandom(seeds, "train"))
    with pytest.raises(ConfigError, match="normalises that scale away"):
        make_config(rule="ep", ep={"optimizer": "adam"})
    assert make_config(rule="ep", ep={"optimizer": "adam", "layer_lr": [1.0], "lr": 1e-3}).rule_config().lr == 1e-3


def test_rule_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    """EP's units (``Rule.run_defaults``) where no flag, config file or ``--set`` chose them; one network for compared
    rules, and no default where two rules need different values."""
    both = {"activation": "hardsigmoid", "output": "linear"}
    assert with_rule_defaults({}, {"activation": None}, ["ep"]) == (both, both)
    assert with_rule_defaults({}, {"activation": "tanh"}, ["ep"]) == ({"output": "linear"}, {"output": "linear"})
    assert with_rule_defaults({"output": "softmax"}, {}, ["ep"])[1] == {"activation": "hardsigmoid"}
    assert with_rule_defaults({}, {}, ["bp"]) == ({}, {})
    assert with_rule_defaults({}, {}, ["ep", "bp"])[0] == both  # compare: bp runs on EP's net too
    monkeypatch.setattr(get_rule("sg"), "run_defaults", {"activation": "tanh"})
    assert with_rule_defaults({}, {}, ["ep", "sg"])[1] == {"output": "linear"}
    cfg = make_config(with_rule_defaults({}, {}, ["ep"])[0], rule="ep", data="digits", arch="64-24-10")
    assert (cfg.hidden_units, cfg.output) == ("hardsigmoid", "linear")
    ae = make_config(with_rule_defaults({}, {}, ["dtp-ae"])[0], rule="dtp-ae", data="mnist")
    assert (ae.task, ae.tied_weights, ae.hidden_units, ae.output) == ("reconstruct", True, "sigmoid", "sigmoid")
    assert ae.architecture == "784-1000-784"  # the paper's auto-encoder, the reconstruct task's default
    assert make_config(data="mnist").architecture == "784-240x7-10"


def test_preset_holds_the_authors_settings():
    """``--config ep-mnist``: the code's 784-500-10 run (``net1``) in our units, the rule's defaults but for the
    persistent states."""
    cfg = make_config(load_config_source("ep-mnist"))
    assert (cfg.rule, cfg.data, cfg.architecture, cfg.batch_size, cfg.epochs) == ("ep", "mnist", "784-500-10", 20, 25)
    assert (cfg.hidden_units, cfg.output, cfg.init, cfg.shuffle) == ("hardsigmoid", "linear", "glorot", False)
    ep = cfg.rule_config()
    assert ep.persistent and ep.model_dump() == {**EquilibriumPropagation.Config().model_dump(), "persistent": True}


# ---- the free phase -------------------------------------------------------------------------------------------


def test_free_phase_reaches_a_stationary_point_of_the_energy():
    """After enough iterations the states stop moving, and there ``∂E/∂s`` (autograd on E) vanishes on every unit
    that is not clipped; a clipped unit is held by the box: ``∂E/∂s ≥ 0`` at 0, ``≤ 0`` at 1 (the projected
    gradient is zero: the fixed point minimises E locally over ``[0, 1]``)."""
    rule = make("12-10-8-4", seeds=(0, 1, 2), bias=0.3)
    x, _ = batch(0, 3, 12, 4, size=16)
    with torch.no_grad():
        drive = rule.input_drive(x)
        states = rule.iterate(drive, rule.zero_states(x), 500)
        later = rule.iterate(drive, states, 100)
    assert max(float((a - b).abs().max()) for a, b in zip(states, later, strict=True)) < 1e-10
    free = [s.clone().requires_grad_() for s in states]
    grads = torch.autograd.grad(rule.energy(x, free).sum(), free)
    inside = 0
    for s, g in zip(states, grads, strict=True):
        mid = (s > 0) & (s < 1)
        inside += int(mid.sum())
        assert g[mid].abs().max() < 1e-9
        assert (g[s == 0] >= -1e-9).all() and (g[s == 1] <= 1e-9).all()
    assert inside > 20  # some units are not clipped: the check has something to check


def test_one_iteration_is_the_leaky_integrator_by_hand():
    """``s_i ← clip(s_i + ε(R_i(s) − s_i), 0, 1)``, ``R_i = b_i + W_i ρ(s_{i−1}) + W_{i+1}ᵀ ρ(s_{i+1})``, plus
    ``β(t − s_M)`` at the output, all layers from the previous states."""
    rule = make("5-4-3", seeds=(3,), epsilon=0.3, layer_lr=[0.1])
    x, y = batch(1, 1, 5, 3, size=2)
    gen = torch.Generator().manual_seed(2)
    s = [torch.rand(1, 2, 4, generator=gen, dtype=F64), torch.rand(1, 2, 3, generator=gen, dtype=F64)]
    (w1, b1), (w2, b2) = [(layer.weight[0].detach(), layer.bias[0].detach()) for layer in rule.net.layers]
    t = torch.nn.functional.one_hot(y[0], 3).to(F64)
    beta = 0.7
    r1 = b1 + x[0] @ w1.T + s[1][0] @ w2
    r2 = b2 + s[0][0] @ w2.T + beta * (t - s[1][0])
    expect = [(s[0][0] + 0.3 * (r1 - s[0][0])).clamp(0, 1), (s[1][0] + 0.3 * (r2 - s[1][0])).clamp(0, 1)]
    got = rule.iterate(rule.input_drive(x), s, 1, torch.tensor([beta], dtype=F64), rule.target(y, s[1]))
    for a, b in zip(got, expect, strict=True):
        torch.testing.assert_close(a[0], b)


# ---- the update tends to the gradient of the cost at the fixed point ---------------------------------------------


def fixed_point_cost(rule: EquilibriumPropagation, x, y) -> torch.Tensor:
    """``C̄(s⁰(θ)) = (1/B) Σ_b ½||s⁰_M − t||²`` per replica, at the free fixed point relaxed to 1e-14."""
    s = rule.relax(x, tol=1e-14, max_steps=100_000)[0]
    return 0.5 * (s[-1] - rule.target(y, s[-1])).square().sum(-1).mean(-1)


def test_small_beta_update_and_implicit_gradient_equal_finite_differences_of_the_fixed_point_cost():
    """The true gradient of the cost at the free fixed point, by central finite differences of ``C̄(s⁰(θ))`` (each
    point relaxed to convergence), equals the implicit-function gradient (:meth:`exact_gradients`) and, up to
    ``O(β)``, EP's update at ``β = 1e-5`` with both phases relaxed (``−ΔW_i / α_i``, here ``α_i = 1``), in every layer
    of a 6-5-4-3 net (float64, two replicas). The units sit at least 2e-3 inside ``(0, 1)`` or clipped: a step of
    1e-6 moves no unit across a kink."""
    rule = make("6-5-4-3", seeds=(0, 1), bias=0.3, random_sign=False, beta=1e-5, layer_lr=[1.0])
    rule.config.free_steps = rule.config.nudged_steps = 3000
    x, y = batch(0, 2, 6, 3, size=7)
    exact, _ = rule.exact_gradients(x, y)
    ep, _ = rule.forward_updates(x, y)
    h = 1e-6
    for k, p in enumerate(rule.net.forward_parameters()):
        flat = p.detach().view(p.shape[0], -1)
        fd = torch.zeros_like(flat)
        for j in range(flat.shape[1]):
            with torch.no_grad():
                flat[:, j] += h
                up = fixed_point_cost(rule, x, y)
                flat[:, j] -= 2 * h
                down = fixed_point_cost(rule, x, y)
                flat[:, j] += h
            fd[:, j] = (up - down) / (2 * h)
        fd = fd.view(p.shape)
        assert fd.abs().max() > 1e-4, k  # the parameter matters
        assert ((exact[k] - fd).norm() / fd.norm()) < 1e-4, k
        assert ((ep[k] - fd).norm() / fd.norm()) < 1e-3, k
        assert angle_deg(ep[k], fd).max() < 0.1, k


def test_adjoint_by_conjugate_gradients_equals_the_relaxation_and_solves_the_system():
    """The adjoint ``λ`` that conjugate gradients give equals the damped relaxation's (the linearised dynamics run to
    convergence), and solves ``(I − PAP) λ = P ∂C̄/∂s`` with ``λ = Pλ``; where the operator is not positive definite,
    the solver says so (None) instead of returning a wrong ``λ``."""
    from targetprop.rules.ep import _conjugate_gradients

    rule = make("6-9-7-3", seeds=(0, 1, 2), bias=0.3, layer_lr=[1.0])
    x, y = batch(4, 3, 6, 3, size=11)
    free = rule.relax(x, tol=1e-14, max_steps=100_000)[0]
    t = rule.target(y, free[-1])
    mask = [((s > 0) & (s < 1)).to(s.dtype) for s in free]
    assert 0 < sum(float(m.mean()) for m in mask) / len(mask) < 1  # some units clipped, some free
    cg = rule.adjoint(free, t, tol=1e-13)
    slow = rule.adjoint_by_relaxation(free, t, tol=1e-13, max_steps=400_000)
    for a, b, m in zip(cg, slow, mask, strict=True):
        assert ((a - b).norm() / b.norm()) < 1e-9
        assert torch.equal(a * (1 - m), torch.zeros_like(a))  # clipped units carry no gradient
    couplings = rule._couplings(cg)
    rhs = [torch.zeros_like(s) for s in free]
    rhs[-1] = (free[-1] - t) * mask[-1] / free[-1].shape[-2]
    for a, c, m, b in zip(cg, couplings, mask, rhs, strict=True):
        torch.testing.assert_close(a - m * c, b, rtol=0, atol=1e-12)
    negated = _conjugate_gradients(lambda v: [-u for u in v], rhs, 1e-10, 100)
    assert negated is None


def test_exact_gradients_are_computed_once_per_batch_and_weights():
    """Diagnostics ask for BP's update and signal on one batch: one relaxation and one adjoint serve both; a step of
    the weights, or another batch, computes them again."""
    rule = make("6-5-3", bias=0.3)
    x, y = batch(5, 2, 6, 3)
    first = rule.exact_gradients(x, y)
    assert rule.exact_gradients(x, y) is first
    other = rule.exact_gradients(x.clone(), y)
    assert other is not first
    torch.testing.assert_close(other[0], first[0])
    with torch.no_grad():
        rule.net.layers[0].weight.add_(0.1)
    moved = rule.exact_gradients(x, y)
    assert moved is not first and not torch.allclose(moved[0][0], first[0][0])


def test_update_is_the_contrast_of_the_two_phases_by_hand():
    """``∂W_i = α_i (ρ(s⁰_i)ᵀρ(s⁰_{i−1}) − ρ(s^β_i)ᵀρ(s^β_{i−1})) / (βB)``, ``∂b_i = α_i Σ_b (ρ(s⁰_i) − ρ(s^β_i)) / (βB)``."""
    rule = make("6-5-4-3", seeds=(0, 1), layer_lr=[0.2, 0.1, 0.05], beta=[0.5, 2.0])
    x, _ = batch(3, 2, 6, 3, size=5)
    gen = torch.Generator().manual_seed(9)
    free = [torch.rand(2, 5, n, generator=gen, dtype=F64) for n in (5, 4, 3)]
    nudged = [torch.rand(2, 5, n, generator=gen, dtype=F64) for n in (5, 4, 3)]
    beta = torch.tensor([0.5, -2.0], dtype=F64)
    grads = rule.contrast(x, free, nudged, beta)
    rates0, rates_b = [x, *free], [x, *nudged]
    for i, lr in enumerate([0.2, 0.1, 0.05], start=1):
        for r in range(2):
            c = lr / (beta[r] * 5)
            w = c * (rates0[i][r].T @ rates0[i - 1][r] - rates_b[i][r].T @ rates_b[i - 1][r])
            b = c * (rates0[i][r] - rates_b[i][r]).sum(0)
            torch.testing.assert_close(grads[2 * i - 2][r], w)
            torch.testing.assert_close(grads[2 * i - 1][r], b)


def test_diagnostics_set_ep_against_the_gradient_at_its_fixed_point():
    """The generic diagnostics: with a small β and relaxed phases, EP's updates and its signal ``(s^β − s⁰)/β``
    point along the gradient of the cost at the fixed point (angles below 1°)."""
    rule = make("8-6-6-4", seeds=(0, 1), bias=0.3, beta=1e-6, random_sign=False, layer_lr=[0.1])
    rule.config.free_steps = rule.config.nudged_steps = 2000
    x, y = batch(4, 2, 8, 4, size=32)
    out = measure(rule, x, y)
    assert out["angle_deg"].shape == (2, 3) and out["signal_angle_deg"].shape == (2, 3)
    assert out["angle_deg"].max() < 1.0, out
    assert out["signal_angle_deg"][:, :-1].max() < 1.0, out


# ---- prediction by relaxation -------------------------------------------------------------------------------------


def test_evaluation_scores_the_free_fixed_point_not_the_feed_forward_pass():
    """A net whose fixed point (relaxed here by hand, independently of the rule's code: the output feeds back into
    the hidden layer) ranks the classes otherwise than the feed-forward pass on 14 of 200 samples, with no ties: the
    trainer's evaluation gives the fixed point's error and loss."""
    gen = torch.Generator().manual_seed(0)
    rule = make("10-8-4", seeds=(2,), layer_lr=[0.1], eval_steps=400)
    with torch.no_grad():
        rule.net.layers[1].weight.mul_(0.5)
        rule.net.layers[0].bias.fill_(0.3)
        rule.net.layers[1].bias.fill_(0.4)
    split = Split(torch.rand(200, 10, generator=gen, dtype=F64), torch.randint(0, 4, (200,), generator=gen))
    (w1, b1), (w2, b2) = [(layer.weight[0].detach(), layer.bias[0].detach()) for layer in rule.net.layers]
    s1, s2 = torch.zeros(200, 8, dtype=F64), torch.zeros(200, 4, dtype=F64)
    for _ in range(400):
        s1, s2 = (
            (0.5 * s1 + 0.5 * (b1 + split.x @ w1.T + s2 @ w2)).clamp(0, 1),
            (0.5 * s2 + 0.5 * (b2 + s1 @ w2.T)).clamp(0, 1),
        )
    feed_forward = rule.net(split.x)[0].detach()
    assert (feed_forward.argmax(-1) != s2.argmax(-1)).sum() >= 10
    top = s2.topk(2, -1).values
    assert (top[:, 0] - top[:, 1]).min() > 1e-3  # no ties: the argmax is the fixed point's, not a tie-break's
    scored = evaluate(rule.net, split, rule=rule)
    expected = 100.0 * float((s2.argmax(-1) != split.y).double().mean())
    assert scored["error"].item() == pytest.approx(expected)
    t = torch.nn.functional.one_hot(split.y, 4).to(F64)
    assert scored["loss"].item() == pytest.approx(float((s2 - t).square().sum(-1).mean()), rel=1e-6)
    assert evaluate(rule.net, split)["error"].item() != pytest.approx(expected)  # the feed-forward reading differs


# ---- learning, persistent states, replicas, checkpoints --------------------------------------------------------


def test_learns_digits(tmp_path, digits):
    """Digits, 64-100-10 hard sigmoid, the authors' EP settings (20 + 4 iterations, β = 1 with a random sign,
    layer_lr [0.2, 0.1], batch 20, Glorot initialisation): measured 5.19 ± 0.89 % test error after 5 epochs on
    seeds 0-2 (chance is 90 %)."""
    cfg = make_config(**EP_RUN, arch="64-100-10", seeds="0-2", epochs=5, threads=1, out=str(tmp_path))
    result = train(cfg, dataset=digits, progress=False)
    errors = [r["test_error"] for r in result.summary["per_replica"]]
    assert max(errors) < 10.0, errors


def test_persistent_states_continue_each_examples_relaxation(tmp_path, digits):
    """With ``persistent`` and learning rates too small to move a weight, two shuffled epochs of k free iterations
    leave each example's stored state where 2k iterations from zero take it: the trainer's indices reach the right
    examples, per replica."""
    k = 3
    cfg = make_config(
        **EP_RUN,
        arch="64-16-10",
        seeds=[0, 1],
        epochs=2,
        dtype="float64",
        threads=1,
        out=str(tmp_path),
        ep={"persistent": True, "free_steps": k, "lr": 1e-300},
    )
    result = train(cfg, dataset=digits, progress=False)
    rule = result.rule
    assert rule.indexed and rule.particles is not None
    x = digits.train.x.to(F64)
    expected = rule.free_phase(x, 2 * k)
    for p, e in zip(rule.particles, expected, strict=True):
        assert p.shape == e.shape == (2, len(x), e.shape[-1])
        torch.testing.assert_close(p, e, rtol=0, atol=1e-12)


def test_replicas_equal_single_runs(tmp_path, digits):
    """Each replica draws its own signs of β and data order: R replicas follow the paths of R single runs."""
    common = dict(**EP_RUN, arch="64-16-10", epochs=2, dtype="float64", threads=1, out=str(tmp_path))
    together = train(make_config(seeds=[0, 5], name="together", **common), dataset=digits, progress=False)
    for r, seed in enumerate([0, 5]):
        single = train(make_config(seeds=[seed], name=f"single{seed}", **common), dataset=digits, progress=False)
        for name, p in single.net.named_parameters():
            torch.testing.assert_close(together.net.get_parameter(name)[r], p[0], rtol=1e-9, atol=1e-11)


def test_state_dict_round_trip_continues_identically():
    """Persistent states, signs of β and weights: saved after 3 steps and restored into a rule built from other
    seeds, the next 3 steps equal those of the uninterrupted rule."""
    data = [batch(10 + k, 2, 6, 3, size=4) for k in range(6)]
    index = [torch.tensor([[4 * (k % 3) + j for j in range(4)]] * 2) for k in range(6)]

    def fresh(seeds):
        rule = make("6-5-3", seeds=seeds, persistent=True)
        rule.bind_examples(12)
        return rule

    rule = fresh((0, 1))
    for (x, y), idx in list(zip(data, index, strict=True))[:3]:
        rule.step(x, y, index=idx)
    saved = checkpoint.dumps({"net": rule.net.state_dict(), "rule": rule.state_dict(), "rng": rule.noise.state_dict()})
    for (x, y), idx in list(zip(data, index, strict=True))[3:]:
        rule.step(x, y, index=idx)
    other = fresh((8, 9))
    state = checkpoint.loads(saved)
    other.net.load_state_dict(state["net"])
    other.load_state_dict(state["rule"])
    other.noise.load_state_dict(state["rng"])
    for (x, y), idx in list(zip(data, index, strict=True))[3:]:
        other.step(x, y, index=idx)
    for a, b in zip(
        [*other.net.forward_parameters(), *other.particles],
        [*rule.net.forward_parameters(), *rule.particles],
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_resumed_run_continues_bit_for_bit(tmp_path):
    """Through the command line, as tests/test_run_dirs.py checks the other rules: 2 epochs then resumed to 4 equal
    4 epochs at once (metrics, weights, random streams, summary), persistent states included."""
    run = ["train", "--rule", "ep", "--arch", "64-24-10"]
    run += ["--seeds", "0-1", "--set", "batch_size=20", "--set", "ep.persistent=true", "--threads", "1", "-q"]
    units = ["--activation", "hardsigmoid", "--output", "linear"]
    whole = run_cli(*run, *units, "--epochs", "4", "--out", tmp_path, "--name", "whole", cwd=tmp_path)
    assert whole.returncode == 0, show(whole)
    assert "which ep needs" not in whole.stderr
    # the units left to the rule's defaults (Rule.run_defaults): the same run, and its config says them
    part = run_cli(*run, "--epochs", "2", "--out", tmp_path, "--name", "part", cwd=tmp_path)
    assert part.returncode == 0, show(part)
    assert "ep: running with --activation hardsigmoid --output linear, which ep needs" in part.stderr
    saved = tomllib.loads((tmp_path / "part" / "config.toml").read_text())
    assert (saved["activation"], saved["output"]) == ("hardsigmoid", "linear")
    resumed = run_cli("train", "--resume", tmp_path / "part", "--epochs", "4", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, show(resumed)
    assert_same_run(tmp_path / "part", tmp_path / "whole", epochs=4)
    mine = checkpoint.load(tmp_path / "part" / "checkpoint.safetensors")["rule"]["particles"]
    theirs = checkpoint.load(tmp_path / "whole" / "checkpoint.safetensors")["rule"]["particles"]
    assert len(mine) == 2 and mine[0].shape == (2, 1257, 24)
    for a, b in zip(mine, theirs, strict=True):
        assert torch.equal(a, b) and a.abs().sum() > 0
