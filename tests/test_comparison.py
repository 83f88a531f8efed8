"""A compare directory's record (``compare.toml``) and how a resumed comparison hands ``--set`` to its rules; the
command-line round trips (interrupted, inspected, resumed) are in test_cli.py and test_run_dirs.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from targetprop.comparison import asked_rules, assignments_for, open_comparison, write_request
from targetprop.config import make_config
from targetprop.errors import ConfigError


def test_a_resumed_comparison_gives_each_rule_only_the_changes_that_are_its_own():
    rules = ["dtp", "bp", "fa"]
    given = ["dtp.lr=0.01", "bp.lr=0.002", "lr_feedback=1e-4", "lr=0.003", "epochs=9", "eta_hat=0.5"]
    assert assignments_for("dtp", given, rules) == [
        "dtp.lr=0.01",
        "lr_feedback=1e-4",
        "lr=0.003",
        "epochs=9",
        "eta_hat=0.5",
    ]
    assert assignments_for("bp", given, rules) == ["bp.lr=0.002", "lr=0.003", "epochs=9"]
    assert assignments_for("fa", given, rules) == ["lr=0.003", "epochs=9"]
    with pytest.raises(ConfigError, match="not tp"):  # a rule the comparison does not train: nothing would read it
        assignments_for("dtp", ["tp.lr=1"], rules)
    with pytest.raises(ConfigError, match="no such key"):
        assignments_for("dtp", ["no_such_key=1"], rules)


def test_the_record_keeps_the_rules_in_the_order_asked(tmp_path: Path):
    configs = [make_config({"data": "digits", "epochs": 1}, rule=rule) for rule in ("fa", "dtp", "bp")]
    write_request(tmp_path, configs)
    assert asked_rules(tmp_path) == ["fa", "dtp", "bp"]
    assert open_comparison(tmp_path) == (tmp_path, ["fa", "dtp", "bp"])
    recorded = tomllib.loads((tmp_path / "dtp" / "config.toml").read_text())  # a run with no epoch yet
    assert (recorded["rule"], recorded["out"], recorded["name"]) == ("dtp", str(tmp_path), "dtp")
    assert not (tmp_path / "dtp" / "metrics.jsonl").exists()
    (tmp_path / "compare.toml").write_text('rules = ["fa", "dtp", "bp", "nope"]\n')
    with pytest.raises(ConfigError, match="names nope"):
        asked_rules(tmp_path)
    (tmp_path / "compare.toml").write_text('rules = ["fa", "dtp", "bp", "tp"]\n')  # a rule whose run is not there
    with pytest.raises(ConfigError, match=r"names tp in compare\.toml but holds no run directory for it"):
        open_comparison(tmp_path)
    (tmp_path / "compare.toml").unlink()  # as an older comparison: its rules' run directories, by name
    (tmp_path / "notes").mkdir()
    assert asked_rules(tmp_path) == ["bp", "dtp", "fa"]
