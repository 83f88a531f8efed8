"""XOR (Deep Learning, section 6.1): the dataset and the task binary."""

from __future__ import annotations

import pytest
import torch

from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.errors import ConfigError, DataError
from targetprop.tasks import get_task
from targetprop.train import build
from targetprop.units import output_unit

POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def test_xor_is_the_four_points_in_every_split():
    data = load_dataset("xor")
    for split in (data.train, data.valid, data.test):
        assert split.x.tolist() == POINTS and split.y.tolist() == [0, 1, 1, 0]
    assert data.n_classes == 2 and data.n_inputs == 2 and data.train.x is not data.test.x
    with pytest.raises(DataError, match="drop n_valid"):
        load_dataset("xor", n_valid=2)
    assert make_config(data="xor").architecture == "2-2-2"  # the default task, classify: two outputs


def test_task_binary_is_one_output_unit_on_two_classes(tmp_path):
    task = get_task("binary")
    data = load_dataset("xor")
    assert task.targets(data.train).tolist() == [[0.0], [1.0], [1.0], [0.0]]
    t = task.expand(task.targets(data.train), 1, torch.float32)
    a = torch.tensor([[[0.4], [0.6], [0.5], [-3.0]]])  # right, right, wrong (not above 1/2), right
    assert task.sample_errors(output_unit("linear"), a, t).tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert task.sample_errors(output_unit("sigmoid"), a, t).tolist() == [[1.0, 0.0, 0.0, 0.0]]  # σ(a) > 1/2 ⇔ a > 0
    common = dict(data="xor", task="binary", rule="bp", threads=1, out=str(tmp_path))
    for bad, match in (
        (dict(arch="2-2-1", output="softmax"), "softmax is always 1"),
        (dict(arch="2-2-2", output="linear"), "needs 2 inputs and 1 outputs"),
    ):
        with pytest.raises(ConfigError, match=match):
            build(make_config(**common, **bad), data)
    with pytest.raises(ConfigError, match="needs two classes, digits has 10"):
        build(make_config(**{**common, "data": "digits"}, arch="64-10-1", output="linear"), load_dataset("digits"))
