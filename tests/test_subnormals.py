"""Training flushes subnormal floats to zero on the CPU (they slow long runs; targetprop.subnormals), and gives the
caller's setting back."""

from __future__ import annotations

import pytest
import torch

from targetprop import make_config, train
from targetprop.subnormals import SUBNORMAL, flushed, flushing


@pytest.fixture
def restore_flush():
    before = flushing()
    yield
    torch.set_flush_denormal(before)


def test_flushing_reads_the_cpu_setting(restore_flush):
    torch.set_flush_denormal(False)
    assert not flushing()
    assert torch.tensor([SUBNORMAL]).mul(0.5).item() != 0.0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    assert flushing()
    assert torch.tensor([SUBNORMAL]).mul(0.5).item() == 0.0  # what an optimiser's decaying average then does


@pytest.mark.parametrize("before", [False, True])
def test_training_flushes_subnormals_and_gives_the_callers_setting_back(tmp_path, restore_flush, before):
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(before)
    during = []
    cfg = make_config(rule="dtp", data="digits", epochs=2, seeds=0, out=str(tmp_path), name=f"run{before}")
    train(cfg, progress=False, on_epoch=lambda epoch, row: during.append(flushing()))
    assert during == [True, True]
    assert flushing() == before


def test_a_failing_block_restores_the_setting(restore_flush):
    torch.set_flush_denormal(False)
    with pytest.raises(RuntimeError), flushed():
        assert flushing() or not torch.set_flush_denormal(True)
        raise RuntimeError("training failed")
    assert not flushing()
