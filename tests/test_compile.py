"""The optional torch.compile path gives the eager step's numbers (slow: compiling takes tens of seconds)."""

from __future__ import annotations

import pytest
import torch

from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.errors import ConfigError
from targetprop.trainer import train


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "seeds", "optimizer"),
    [
        ("dtp", "0", "centered_rmsprop"),
        ("dtp", "0-1", "centered_rmsprop"),
        ("bp", "0", "centered_rmsprop"),
        ("bp", "0-1", "adam"),
    ],
)
def test_compiled_step_matches_eager(rule, seeds, optimizer, tmp_path):
    data = load_dataset("digits")
    results = {}
    for mode in ("off", "default"):
        config = make_config(
            {"rule": rule, "data": "digits", "arch": "64-32x2-10", "epochs": 2, "seeds": seeds, "compile": mode},
            out=str(tmp_path / mode),
            **{rule: {"optimizer": optimizer}},
        )
        results[mode] = train(config, dataset=data, progress=False)
    for p_eager, p_compiled in zip(results["off"].net.parameters(), results["default"].net.parameters(), strict=True):
        torch.testing.assert_close(p_compiled, p_eager, rtol=1e-4, atol=1e-5)
    eager = [r["test_error"] for r in results["off"].summary["per_replica"]]
    compiled = [r["test_error"] for r in results["default"].summary["per_replica"]]
    assert compiled == pytest.approx(eager, abs=0.6)  # at most two of 360 test images may flip


def test_compile_option_is_validated():
    assert make_config({"compile": True}).compile == "default"
    assert make_config({"compile": False}).compile == "off"
    with pytest.raises(ConfigError, match=r"compile: .*'reduce-overhead'.*\(got 'fastest'\)"):
        make_config({"compile": "fastest"})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "schedule", "one_graph", "optimizer"),
    [
        ("dtp", "alternating", True, "centered_rmsprop"),
        ("bp", None, True, "centered_rmsprop"),
        ("dtp", "parallel", False, "centered_rmsprop"),
        ("bp", None, True, "adam"),
    ],
)
def test_compiled_step_has_no_graph_breaks_and_compiles_once(rule, schedule, one_graph, optimizer):
    """Two replicas. BP's step, and each part of DTP's alternating schedule (the step, the chunked inverse pass),
    is one graph without breaks: optimiser buffers are allocated before compiling, gradients reach the strided
    views of the flat buffers by a copy rather than ``out=``, DTP's views of the feedback buffer need no
    ``storage_offset()`` inside the graph, and its stacked forward weights are not cached by version counters
    there. The parallel schedule draws ε inside its step from per-replica ``torch.Generator`` s, which dynamo
    cannot trace, so its step breaks there. Either way the first epoch compiles all there is: later epochs reuse it
    (Adam's bias corrections read its step count from a tensor, not a Python number the graph would be specialised
    on and compiled again for at every step)."""
    from torch._dynamo.utils import counters

    from targetprop import Network, ReplicaRandom, get_rule
    from targetprop.trainer import train_epoch

    torch._dynamo.reset()
    counters.clear()
    cls = get_rule(rule)
    config = cls.Config(optimizer=optimizer, **({"schedule": schedule} if schedule else {}))
    net = Network.from_spec("64-32x3-10", "tanh", seeds=[0, 1], feedback=cls.feedback_maps(config))
    model = cls(net, config, ReplicaRandom([0, 1], "train"))
    model.compile("default")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(500, 64, generator=gen), torch.randint(0, 10, (500,), generator=gen)
    order = torch.stack([torch.randperm(500, generator=gen) for _ in range(2)])
    train_epoch(model, x, y, order, 100)
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):
        train_epoch(model, x, y, order, 100)
    if one_graph:
        assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("rule", ["bp", "dtp"])
def test_cuda_graph_mode_builds_parameters_apart(rule):
    """``compile=reduce-overhead`` builds the network with every parameter in storage of its own, and optimisers
    that update the parameters themselves: a step that reads parameters sharing one storage and writes them
    cannot be captured as a CUDA graph (AOTAutograd merges such inputs into a "synthetic base" without a fixed
    address). Any other mode keeps the flat buffers, whose one-kernel updates the eager step needs."""
    from targetprop.trainer import build

    data = load_dataset("digits")
    for mode, flat in (("off", True), ("default", True), ("reduce-overhead", False)):
        config = make_config({"rule": rule, "data": "digits", "arch": "64-32x2-10", "seeds": "0-1", "compile": mode})
        net, model = build(config, data)
        params = list(net.parameters())
        storages = {p.untyped_storage().data_ptr() for p in params}
        assert net.flat is flat
        assert len(storages) == (
            len([g for g in (net.forward_parameters(), net.feedback_parameters()) if g]) if flat else len(params)
        )
        for optimizer in model.optimizers().values():
            assert optimizer.is_flat is flat
            if not flat:
                assert all(s is p for s, p in zip(optimizer.slots, optimizer.params, strict=True))
