"""The counter-based random streams (``rng = "philox"``): Philox4x32-10 as its authors define it, a stream per
replica that continues across draws and checkpoints, draws of the right distribution, and noisy steps that
``torch.compile`` traces without a break (what lets a CUDA graph capture them whole)."""

from __future__ import annotations

import pytest
import torch

from targetprop import Network, get_rule, philox
from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.replicas import ReplicaRandom
from targetprop.trainer import train

KNOWN_ANSWERS = [  # Random123's known-answer vectors for philox4x32-10: counter, key, output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_gives_the_known_answers(counter, key, expected):
    as_tensors = [torch.tensor([v], dtype=torch.int64) for v in (*counter, *key)]
    out = philox.philox4x32(tuple(as_tensors[:4]), tuple(as_tensors[4:]))  # type: ignore[arg-type]
    assert [int(w) for w in out] == list(expected)


def test_each_replica_has_its_own_stream_that_continues_across_draws():
    """Replica r of a run with several seeds draws what a run with seed r alone draws; two draws in a row give
    what one draw of both gives (sizes a multiple of 4: a draw uses whole counters)."""
    together = ReplicaRandom([3, 7, 3], "train", philox=True)
    first = together.uniform_like(torch.empty(3, 8, 5))
    second = together.normal((4, 6))
    for r, seed in enumerate([3, 7, 3]):
        alone = ReplicaRandom([seed], "train", philox=True)
        assert torch.equal(alone.uniform_like(torch.empty(1, 8, 5))[0], first[r])
        assert torch.equal(alone.normal((4, 6))[0], second[r])
    assert torch.equal(first[0], first[2]) and not torch.equal(first[0], first[1])
    one = ReplicaRandom([3], "train", philox=True)
    both = philox.words(one.keys, one.offsets.clone(), 64)  # type: ignore[arg-type]
    a, b = philox.words(one.keys, one.offsets, 40), philox.words(one.keys, one.offsets, 24)  # type: ignore[arg-type]
    assert torch.equal(torch.cat([a, b], dim=1), both)
    streams = [ReplicaRandom([3], s, philox=True).uniform_like(torch.empty(1, 40)) for s in ("train", "eval")]
    assert not torch.equal(*streams)  # each purpose has its own stream


def test_draws_have_the_distributions_they_claim():
    """Mean and variance of 400,000 uniform and normal draws within five standard errors; uniforms in [0, 1)."""
    rng = ReplicaRandom([0, 1], "train", philox=True)
    u = rng.uniform_like(torch.empty(2, 200_000, dtype=torch.float64))
    z = rng.normal((200_000,), torch.float64)
    n = u.numel()
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12) ** 0.5 / n**0.5
    assert abs(float(u.var()) - 1 / 12) < 5 * (1 / 180) ** 0.5 / n**0.5  # var of (u − 1/2)² is 1/180
    assert abs(float(z.mean())) < 5 / n**0.5
    assert abs(float(z.var()) - 1.0) < 5 * 2**0.5 / n**0.5
    assert abs(float(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1])) < 5 / n**0.5 * 2**0.5


def test_a_checkpointed_stream_continues_where_it_stopped():
    rng = ReplicaRandom([0, 1], "train", philox=True)
    rng.uniform_like(torch.empty(2, 10))
    state = rng.state_dict()
    ahead = rng.uniform_like(torch.empty(2, 12))
    restored = ReplicaRandom([0, 1], "train", philox=True)
    restored.load_state_dict(state)
    assert torch.equal(restored.uniform_like(torch.empty(2, 12)), ahead)
    with pytest.raises(ValueError, match="random stream states"):
        ReplicaRandom([0, 1], "train").load_state_dict(state)  # a generator run cannot take a Philox state


@pytest.mark.parametrize(
    ("rule", "hidden", "schedule"), [("dtp", "bernoulli", "alternating"), ("dtp", "tanh", "parallel")]
)
def test_a_noisy_step_traces_without_a_graph_break(rule, hidden, schedule):
    """Stochastic units and DTP's corruption noise drawn from Philox streams: dynamo traces the whole step as one
    graph (``fullgraph=True`` raises at any break). The same step with generator streams breaks."""
    cls = get_rule(rule)
    config = cls.Config(schedule=schedule)
    x, y = torch.rand(2, 20, 16), torch.randint(0, 4, (2, 20))
    for use_philox in (True, False):
        torch._dynamo.reset()
        net = Network.from_spec("16-12-12-4", hidden, seeds=[0, 1], feedback=cls.feedback_maps(config))
        model = cls(net, config, ReplicaRandom([0, 1], "train", philox=use_philox))
        step = torch.compile(model.step, fullgraph=True, backend="eager")
        if use_philox:
            step(x, y, ("forward", "feedback"))
        else:
            with pytest.raises(torch._dynamo.exc.Unsupported):  # the generator's draws break the graph
                step(x, y, ("forward", "feedback"))


def test_a_philox_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    """DTP on digits with stochastic units and ``rng = "philox"``: 2 epochs, then 2 more from the checkpoint, end
    with the weights and metrics of 4 epochs in one go."""
    data = load_dataset("digits")
    keys = {"rule": "dtp", "data": "digits", "arch": "64-32-32-10", "activation": "bernoulli", "seeds": "0-1"}
    keys["threads"] = 1  # bit for bit needs one thread count throughout ("auto" follows the machine's load)
    whole = train(
        make_config(keys, epochs=4, rng="philox", out=str(tmp_path), name="whole"), dataset=data, progress=False
    )
    half = make_config(keys, epochs=2, rng="philox", out=str(tmp_path), name="half")
    first = train(half, dataset=data, progress=False)
    resumed = train(
        half.model_copy(update={"epochs": 4}), dataset=data, run_dir=first.run_dir, resume=True, progress=False
    )
    for a, b in zip(whole.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [r["test_error"] for r in whole.history] == [r["test_error"] for r in resumed.history]
    generators = train(make_config(keys, epochs=1, out=str(tmp_path), name="torch"), dataset=data, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(generators.net.parameters(), first.net.parameters(), strict=True))
