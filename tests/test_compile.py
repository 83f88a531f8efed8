"""The optional torch.compile path gives the eager step's numbers (slow: compiling takes tens of seconds)."""

from __future__ import annotations

import pytest
import torch

from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.train import train


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "seeds"), [("dtp", "0"), ("dtp", "0-1"), ("bp", "0")])
def test_compiled_step_matches_eager(rule, seeds, tmp_path):
    data = load_dataset("digits")
    results = {}
    for mode in ("off", "default"):
        config = make_config(
            {"rule": rule, "data": "digits", "arch": "64-32x2-10", "epochs": 2, "seeds": seeds, "compile": mode},
            out=str(tmp_path / mode),
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
    with pytest.raises(Exception, match="compile"):
        make_config({"compile": "fastest"})
