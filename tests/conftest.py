"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch

from targetprop.data import Dataset, load_dataset
from targetprop.threads import available_cores

# One CPU thread for every run inside the test processes, set before any run reads the machine's cores
# (``targetprop.threads.available_cores`` reads torch's count once, so ``threads = "auto"`` resolves to 1 here).
# The suite runs two pytest-xdist workers on two cores: under "auto" a run would follow the other worker's load, so
# the two runs a test compares bit for bit could use different thread counts, and PyTorch's parallel reductions split
# their sums by thread (317 of 3072 weights differing by 3e-8 failed such a test). CLI subprocesses get
# OMP_NUM_THREADS=1 from ``clitools``; tests of the thread policy itself set its core count explicitly.
torch.set_num_threads(1)
if available_cores() != 1:  # read (and cached) before this file ran: "auto" would still follow the other worker
    raise RuntimeError(f"the tests' runs would use {available_cores()} threads; conftest must set 1 before any run")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """scikit-learn's bundled digits (no download), split as the library splits it; loaded once per module."""
    return load_dataset("digits")
