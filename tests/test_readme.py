"""The README's Python example runs as written and learns."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    errors = namespace["tp"].evaluate(namespace["net"], namespace["data"].test)["error"]
    assert errors.shape == (3,)
    assert errors.max() < 10.0  # ten epochs of DTP on digits
    assert len(namespace["plain"]) == 7  # 4 linear layers and 3 units
    assert "tensor" in capsys.readouterr().out


def test_readme_commands_match_ci():
    text = README.read_text()
    commands = re.findall(r"^(pip install .*|\(test -d .*)$", text, flags=re.M)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci, "the CI script must run the README's test command"
