"""Every rule trains, checkpoints and resumes on each device this machine has, and keeps its tensors there.

The CPU cases run everywhere. The CUDA cases run where ``torch.cuda.is_available()`` (the CI machines have no GPU;
``benchmarks/gpu_check.sh`` runs this module on one): they check that a rule's network, its state (optimiser
moments, FA's matrices, EP's persistent states, synthetic-gradient predictors) and its metrics stay on the GPU,
that training from the same initial weights on the GPU follows the CPU to float32 rounding where the rule draws no
noise, and that a checkpoint written on the GPU resumes there and loads on the CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.nets import Network
from targetprop.replicas import ReplicaRandom
from targetprop.rules import RULES, get_rule
from targetprop.tasks import get_task
from targetprop.trainer import train

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ),
]

ARCH = {"dtp-ae": "64-32-64", "ep": "64-24-10"}
"""The auto-encoder reconstructs its input; EP's default rates are for one hidden layer; every other rule classifies
digits on 64-24-24-10."""


def _tensors(state: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) state dict."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in _tensors(v)]
    if isinstance(state, list | tuple):
        return [t for v in state for t in _tensors(v)]
    return []


def _config(rule: str, device: str, tmp: Path, epochs: int):
    return make_config(
        rule=rule,
        data="digits",
        arch=ARCH.get(rule, "64-24-24-10"),
        seeds=[0, 1],
        epochs=epochs,
        device=device,
        out=str(tmp),
        name="run",
        threads=1,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", list(RULES))
def test_rule_trains_and_keeps_its_tensors_on_the_device(rule, device, tmp_path):
    result = train(_config(rule, device, tmp_path, epochs=2), progress=False)
    want = torch.device(device).type
    held = _tensors(result.net.state_dict()) + _tensors(result.rule.state_dict())
    assert held and {t.device.type for t in held} == {want}, rule
    for row in result.history:
        assert math.isfinite(row["train_error"]) and math.isfinite(row["test_error"]), (rule, row)
    # the checkpoint written on this device resumes on it, and loads on the CPU
    resumed = train(
        _config(rule, device, tmp_path, epochs=3),
        run_dir=result.run_dir,
        resume=True,
        progress=False,
    )
    assert len(resumed.history) >= 1 and resumed.history[-1]["epoch"] == 3
    state = result.run_dir.load_checkpoint(torch.device("cpu"))
    assert {t.device.type for t in _tensors(state)} == {"cpu"}


def _weights_after_steps(rule: str, device: str, steps: int = 10) -> list[torch.Tensor]:
    """The parameters (on the CPU) of a 64-32-32-10 net, replicas of seeds 0 and 1, after ``steps`` mini-batches
    of 100 digits trained by ``rule`` on ``device``. Initial weights and FA's matrices are drawn on the CPU from
    the seeds, so they are the same on every device."""
    data = load_dataset("digits", device=device)
    cls = get_rule(rule)
    config = cls.Config(lr=1e-3)
    net = Network.from_spec("64-32-32-10", "tanh", seeds=[0, 1], feedback=cls.feedback_maps(config), device=device)
    trainer = cls(net, config, ReplicaRandom([0, 1], "train", device), get_task("classify"))
    x, y = data.train.x, data.train.y
    for i in range(0, 100 * steps, 100):
        trainer.step(x[i : i + 100].expand(2, -1, -1), y[i : i + 100].expand(2, -1), ("forward",))
    return [p.detach().cpu() for p in net.parameters()]


def test_weights_after_steps_are_those_of_the_rule():
    """The helper of the GPU comparison trains: its weights move from the initial ones, the same way twice."""
    start = [p.detach() for p in Network.from_spec("64-32-32-10", "tanh", seeds=[0, 1]).parameters()]
    once, again = _weights_after_steps("bp", "cpu"), _weights_after_steps("bp", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))
    assert any(not torch.allclose(a, b) for a, b in zip(once, start, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_a_noiseless_rule_on_the_gpu_follows_the_cpu(rule):
    """The same initial weights and mini-batches give the same weights after 10 steps on either device, to
    float32 rounding (cuBLAS sums in another order)."""
    for a, b in zip(_weights_after_steps(rule, "cpu"), _weights_after_steps(rule, "cuda"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_philox_streams_draw_the_same_numbers_on_the_gpu():
    """``rng = "philox"``: a replica's stream is integer arithmetic, the same on either device."""
    draws = {}
    for device in ("cpu", "cuda"):
        rng = ReplicaRandom([0, 5], "train", device, philox=True)
        draws[device] = (rng.uniform_like(torch.empty(2, 3000, device=device)), rng.normal((3000,)))
    assert torch.equal(draws["cuda"][0].cpu(), draws["cpu"][0])
    torch.testing.assert_close(draws["cuda"][1].cpu(), draws["cpu"][1], rtol=1e-6, atol=1e-6)  # log, cos


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize(
    ("rule", "keys"),
    [("bp", {}), ("dtp", {}), ("dtp", {"rng": "philox"}), ("dtp", {"rng": "philox", "activation": "bernoulli"})],
)
def test_a_step_compiled_into_cuda_graphs_gives_the_eager_numbers(rule, keys, tmp_path):
    """``compile=reduce-overhead`` replays each whole step as a CUDA graph (inductor skips none: the parameters
    are apart, see ``Network._flatten``); the weights after two epochs are the eager ones to rounding. With the
    generator streams, a step that draws noise (DTP's corruption) is graphed in pieces around each draw; with
    Philox streams it is one graph (``tests/test_philox.py``), stochastic units included."""
    from torch._dynamo.utils import counters

    data = load_dataset("digits")
    nets = {}
    for mode in ("off", "reduce-overhead"):
        where = {"arch": "64-32x2-10", "epochs": 2, "seeds": [0, 1], "device": "cuda", "out": str(tmp_path / mode)}
        config = make_config(rule=rule, data="digits", compile=mode, **where, **keys)
        counters.clear()
        nets[mode] = train(config, dataset=data, progress=False).net
    assert counters["inductor"]["cudagraph_skips"] == 0
    for eager, graphed in zip(nets["off"].parameters(), nets["reduce-overhead"].parameters(), strict=True):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)
