"""Property: every bad value given to the command line or the config loader is refused with one line,
``error: ...``, exit status 2, nothing on stdout and nothing written — never a traceback, never a run.

Hypothesis draws the bad values (derandomized, so CI sees the same ones every time); the command line runs in
this process (``targetprop.cli.main`` with its ``sys.argv``), which keeps a few hundred cases within seconds. The
count of cases is quoted in the README's reliability section.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

from clitools import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetprop.nets import INITS
from targetprop.rules import RULES
from targetprop.units import HIDDEN_UNITS

EXAMPLES = 300
BASE = ["train", "--arch", "64-16-10", "--epochs", "1", "--seeds", "0", "-q"]

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-:.0123456789 ", min_size=1, max_size=12)
non_positive = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.just(-math.inf))
negative = st.one_of(st.floats(max_value=-1e-12), st.just(math.nan), st.just(math.inf))


def toml_float(x: float) -> str:
    return {math.inf: "inf", -math.inf: "-inf"}.get(x, "nan" if math.isnan(x) else repr(x))


def option(name: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return values.map(lambda v: [name, str(v)])


def assignment(key: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return values.map(lambda v: ["--set", f"{key}={v}"])


VALID_SEEDS = re.compile(r"\s*\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*\s*")
VALID_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
VALID_ARCH = re.compile(r"\s*64(-\d+([x*]\d+)?)*-10\s*")

bad_cli = st.one_of(
    option("--epochs", st.one_of(st.integers(max_value=0), words.filter(lambda w: not w.strip().isdigit()))),
    option("--batch-size", st.integers(max_value=0)),
    option(
        "--seeds",
        st.one_of(
            st.integers(min_value=2**32, max_value=2**80),
            st.tuples(st.integers(0, 10**12), st.integers(5000, 10**12)).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
            st.tuples(st.integers(1, 100), st.integers(1, 50)).map(lambda t: f"{t[0] + t[1]}-{t[0]}"),
            words.filter(lambda w: not VALID_SEEDS.fullmatch(w)),
        ),
    ),
    option(
        "--arch",
        st.one_of(
            words.filter(lambda w: not VALID_ARCH.fullmatch(w)),
            st.integers(65, 10**6).map(lambda n: f"{n}-16-10"),
            st.integers(0, 10).map(lambda k: f"64-{'0' if k == 0 else 16 * k}x0-10"),
            st.integers(100_001, 10**12).map(lambda n: f"64-{n}-10"),
            st.integers(1_001, 10**9).map(lambda n: f"64-16x{n}-10"),
        ),
    ),
    option("--device", words.filter(lambda w: not VALID_DEVICE.fullmatch(w))),
    option("--rule", words.filter(lambda w: w.lower() not in RULES)),
    option("--activation", words.filter(lambda w: w not in HIDDEN_UNITS)),
    option("--output", words.filter(lambda w: w not in ("softmax", "sigmoid", "linear"))),
    option("--init", words.filter(lambda w: w not in INITS)),
    option(
        "--name",
        st.one_of(st.just(".."), st.just("."), words.map(lambda w: f"{w}/../x"), words.map(lambda w: f"../{w}")),
    ),
    assignment("dtp.lr", non_positive.map(toml_float)),
    assignment("dtp.lr_feedback", non_positive.map(toml_float)),
    assignment("dtp.eta_hat", negative.map(toml_float)),
    assignment("dtp.noise", negative.map(toml_float)),
    assignment("dtp.noise_decay", non_positive.map(toml_float)),
    assignment(
        "dtp.lr", st.lists(non_positive.map(toml_float), min_size=1, max_size=3).map(lambda v: f"[{', '.join(v)}]")
    ),
    assignment("dtp.lr", st.just("[]")),
    assignment("dtp.lr", words.filter(lambda w: not _is_number(w)).map(lambda w: f'"{w}"')),
    assignment(
        "dtp.optimizer_args",
        st.tuples(
            st.sampled_from(["momentum", "decay"]),
            st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.just(math.nan)),
        ).map(lambda t: f"{{{t[0]} = {toml_float(t[1])}}}"),
    ),
    assignment("dtp.optimizer_args", st.just("{eps = 0.0}")),
    assignment("dtp.optimizer_args", words.filter(str.isidentifier).map(lambda w: f"{{{w}x = 0.5}}")),
    assignment("dtp.schedule", words.filter(lambda w: w not in ("alternating", "parallel")).map(lambda w: f'"{w}"')),
    assignment("dtp.optimizer", words.map(lambda w: f'"{w}x"')),
    assignment("n_valid", st.one_of(st.integers(max_value=0), st.integers(min_value=1500, max_value=10**9))),
    assignment("eval_samples", st.one_of(st.integers(max_value=0), st.integers(min_value=100_001))),
    assignment("batch_size", st.integers(max_value=0)),
    assignment("dtype", words.map(lambda w: f'"{w}"')),
    assignment("compile", words.filter(lambda w: w not in ("off", "default")).map(lambda w: f'"{w}x"')),
    assignment("shuffle", words.map(lambda w: f'"{w}"')),
    words.filter(str.isidentifier).map(lambda w: ["--set", f"nosuchkey_{w}=1"]),
    words.filter(lambda w: "=" not in w).map(lambda w: ["--set", w]),
)

bad_config_file = st.one_of(
    st.binary(min_size=1, max_size=64).filter(lambda b: not _is_valid_empty_toml(b)),
    words.filter(str.isidentifier).map(lambda w: f"{w}_unknown = 1\n".encode()),
    st.sampled_from(["epochs", "batch_size", "eval_samples"]).map(lambda k: f"{k} = -3\n".encode()),
    st.just(b'[dtp]\nlr = "fast"\n'),
    st.just(b"seeds = [0, -1]\n"),
    st.just(b"seeds = [true]\n"),
    st.just(b"[dtp]\nunknown = 1\n"),
    st.just(b"dtp = 3\n"),
    st.just(b"activation = []\n"),
    st.just(b'activation = ["tanh", "tanh", "tanh"]\n'),
)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_valid_empty_toml(data: bytes) -> bool:
    import tomllib

    try:
        return tomllib.loads(data.decode()) == {}
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def assert_refused(args: list[str], out: Path) -> None:
    code, stdout, stderr = run_main(args)
    lines = stderr.strip().splitlines()
    assert code == 2, (args, code, stderr)
    assert stdout == "", (args, stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
    assert not out.exists() or not any(out.iterdir()), (args, sorted(out.rglob("*")))


SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(bad=bad_cli)
def test_every_bad_command_line_value_is_one_line_and_exit_2(bad):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        assert_refused([*BASE, *bad, "--out", str(out)], out)


@settings(max_examples=EXAMPLES // 3, deadline=None, derandomize=True)
@given(content=bad_config_file)
def test_every_bad_config_file_is_one_line_and_exit_2(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.toml"
        path.write_bytes(content)
        out = Path(tmp) / "runs"
        # only options the files do not set: a file's epochs or seeds must not be overridden
        assert_refused(["train", "--arch", "64-16-10", "-q", "--config", str(path), "--out", str(out)], out)


def test_the_commands_the_bad_values_go_into_run_as_they_are(tmp_path):
    """The controls: without a bad value, the command line and the config-file command both train (exit 0, a run
    directory written), so the refusals above are the bad values' doing."""
    code, _, stderr = run_main([*BASE, "--out", str(tmp_path / "a")])
    assert code == 0 and (tmp_path / "a").is_dir() and any((tmp_path / "a").iterdir()), stderr
    path = tmp_path / "good.toml"
    path.write_bytes(b"epochs = 1\nseeds = [0]\n")
    code, _, stderr = run_main(
        ["train", "--arch", "64-16-10", "-q", "--config", str(path), "--out", str(tmp_path / "b")]
    )
    assert code == 0 and any((tmp_path / "b").iterdir()), stderr
