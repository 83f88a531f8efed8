"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from targetprop.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """scikit-learn's bundled digits (no download), split as the library splits it; loaded once per module."""
    return load_dataset("digits")
