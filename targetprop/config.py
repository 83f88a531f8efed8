"""Run configuration: one validated object from defaults, a TOML file and command-line overrides.

A TOML file holds the run's keys at the top level and each rule's hyper-parameters in a table named after the
rule::

    rule = "dtp"
    data = "mnist"
    arch = "784-240x7-10"
    epochs = 100
    seeds = "0-9"

    [dtp]
    eta_hat = 0.3277
    lr = 0.01489

Unknown keys are errors, with the list of known ones.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from targetprop.errors import ConfigError
from targetprop.nets import INITS, parse_architecture
from targetprop.replicas import parse_seeds
from targetprop.rules import RULES, RuleConfig, get_rule
from targetprop.units import hidden_unit

DEFAULT_ARCH = {
    "digits": "64-100x3-10",
    "mnist": "784-240x7-10",
    "fashion-mnist": "784-240x7-10",
    "cifar10": "3072-1000x3-10",
    "xor": "2-2-2",
}
"""The architecture of a run that names none, for the default task, classify (task binary on xor: give 2-2-1)."""
AUTOENCODER_ARCH = {
    "digits": "64-100-64",
    "mnist": "784-1000-784",
    "fashion-mnist": "784-1000-784",
    "cifar10": "3072-1000-3072",
}
"""The architecture of a ``reconstruct`` run that names none: one hidden layer, the DTP paper's 1000 units where
the images are MNIST-sized or larger."""


class RunConfig(BaseModel):
    """Everything that defines a run. Rule hyper-parameters live in tables named after the rules."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, use_attribute_docstrings=True)

    rule: str = "dtp"
    """Credit-assignment rule (see ``targetprop rules``)."""
    data: str = "digits"
    """digits, mnist, fashion-mnist, cifar10 or xor (the four points of Deep Learning's section 6.1)."""
    data_dir: str | None = None
    """Folder holding the datasets (default: $TARGETPROP_DATA, else ~/.cache/targetprop/data)."""
    download: bool = False
    """Download missing dataset files from their canonical source (checksums verified)."""
    n_valid: int | None = Field(None, ge=1)
    """Size of the validation split (default: the paper's, 10,000 for MNIST)."""
    n_train: int | None = Field(None, ge=1)
    """Train on the first N examples of the training split only (quick runs; default: all of it)."""
    arch: str | None = None
    """Layer sizes, e.g. 784-240x7-10 (default: one per dataset)."""
    activation: str | list[str] = "tanh"
    """Hidden unit, or one per hidden layer."""
    task: Literal["classify", "binary", "reconstruct"] = "classify"
    """What the network learns: classify (targets are the labels), binary (two classes, one linear or sigmoid output
    unit whose target is the class, 0 or 1) or reconstruct (targets are the inputs: an auto-encoder; needs a sigmoid
    or linear output as wide as the input)."""
    tied_weights: bool = False
    """An auto-encoder n-H-n whose decoder weights are the encoder's transposed (the DTP paper's auto-encoder)."""
    output: Literal["softmax", "sigmoid", "linear"] = "softmax"
    """Output unit and its cost: softmax + cross-entropy, sigmoid + binary cross-entropy, linear + squared error."""
    init: str = "orthogonal"
    """orthogonal (DTP authors' code), glorot, or default (PyTorch's nn.Linear)."""
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(100, ge=1)
    seeds: list[int] = [0]
    """One replica per seed, all trained in one process: "0-9", "1,3,5", or a list."""
    shuffle: bool = True
    """Draw a new mini-batch order every epoch (per replica); false walks the data in a fixed order."""
    eval_activation: str | list[str] | None = None
    """Hidden units the evaluation uses in place of the trained ones, one or one per hidden layer (e.g. a net trained
    with tanh, evaluated with sign: the DTP paper's discrete-network baseline); default: the trained ones."""
    input_noise: float = Field(0.0, ge=0, allow_inf_nan=False)
    """σ of Gaussian noise added to the inputs of every training mini-batch (the DTP authors' stochastic network:
    0.3), from each replica's own stream; evaluation sees clean inputs."""
    eval_samples: int = Field(1, ge=1, le=100_000)
    """Forward passes averaged at evaluation for stochastic units."""
    eval_train_samples: int | None = Field(None, ge=1, le=100_000)
    """Forward passes averaged for the training split's error (default: ``eval_samples``). The DTP authors average
    their 100 passes over the validation and test sets only (``sto_dtp.py``); 1 here cuts the stochastic net's
    evaluation to about 2/7 of its cost, and its train error is then that of one stochastic pass."""
    eval_every: int = Field(1, ge=1)
    """Evaluate train, validation and test error every N epochs and at the last; the epochs between log no metrics
    row (their checkpoint is still written). For long runs whose evaluation costs more than training (the
    stochastic net's 100 passes). Divergence and collapse are checked at evaluated epochs."""
    checkpoint_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Write the checkpoint after an epoch only once this many seconds have passed since the last one was written,
    and after the last epoch; 0: after every epoch. A checkpoint holds every replica's weights and optimiser
    moments (144 MB for 10 replicas of the discrete net) and takes about as long to write as a GPU takes to train
    an epoch; a run stopped between checkpoints resumes from the last one and trains the epochs after it again."""
    diagnostics: bool = False
    """Log, each epoch, the angle between each layer's update and the BP gradient and the inverses' errors."""
    tensorboard: bool = False
    """Also write every metric of every epoch as TensorBoard scalars under <run>/tensorboard/ (needs the optional
    tensorboard package; see targetprop/board.py). A resumed run may switch it on or off."""
    device: str = "cpu"
    threads: int | Literal["auto"] = "auto"
    """CPU threads: "auto" uses the cores other processes leave free, re-measured about once a second (see
    targetprop/threads.py); a number fixes the count."""
    dtype: Literal["float32", "float64"] = "float32"
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    """Compile the rule's training step with torch.compile in this mode ("reduce-overhead" adds CUDA graphs on a
    GPU, and builds the network with its parameters apart rather than in flat buffers, so that whole steps are
    captured). Fuses the element-wise work; the first steps of each phase take tens of seconds to compile."""
    rng: Literal["torch", "philox"] = "torch"
    """Where the rule's noise (stochastic units, corruption noise) and evaluation's stochastic units draw from:
    one ``torch.Generator`` per replica ("torch"), or a counter-based Philox stream per replica computed in tensor
    operations ("philox": the same numbers on every device, and draws that ``torch.compile`` traces, so that
    ``compile=reduce-overhead`` captures a noisy step whole as a CUDA graph). Data order and input noise come from
    generators either way. Run eagerly on a CPU, philox's draws take an order of magnitude longer than a
    generator's (``benchmarks/rng_speed.py``): it is meant for compiled steps."""
    out: str = "runs"
    """Parent folder of the run directories."""
    name: str | None = None
    """Run directory name (default: <rule>-<data>-<time>)."""

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, v: Any) -> Any:
        return {True: "default", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> list[int]:
        return parse_seeds(v)

    @field_validator("rule")
    @classmethod
    def _rule(cls, v: str) -> str:
        get_rule(v)
        return v.lower()

    @field_validator("init", "data")
    @classmethod
    def _choice(cls, v: str, info: ValidationInfo) -> str:
        what, allowed = {"init": ("initialisation", INITS), "data": ("dataset", tuple(DEFAULT_ARCH))}[info.field_name]
        if v not in allowed:
            raise ConfigError(f"unknown {what} {v!r}; choose one of: {', '.join(allowed)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import torch

        m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", v)
        if m is None or (m[1] == "cpu" and m[2] is not None):
            raise ConfigError(f"unknown device {v!r}; targetprop trains on cpu, cuda or cuda:N")
        if m[1] == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {v!r} asked for, but CUDA is not available here; use --device cpu")
            if m[2] is not None and int(m[2]) >= torch.cuda.device_count():
                raise ConfigError(f"device {v!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | str) -> int | str:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024):
            raise ConfigError(f"threads {v!r}: give auto or a whole number from 1 to 1024")
        return v

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard(cls, v: bool) -> bool:
        if v:
            from targetprop.board import require

            require()  # a missing package is refused with the configuration, before any folder is made
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        from targetprop.runs import check_name

        return None if v is None else check_name(v)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        extra = self.model_extra or {}
        for key, value in extra.items():
            if key not in RULES:
                known = sorted(set(type(self).model_fields) | set(RULES))
                hint = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(
                    f"config key {key!r} does not exist"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; known keys: {', '.join(known)}"
                )
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table of {key}'s hyper-parameters, got {value!r}")
            rule_config(key, value)  # validates
        sizes = parse_architecture(self.architecture)
        if self.tied_weights and (len(sizes) != 3 or sizes[0] != sizes[2]):
            raise ConfigError(
                f"tied_weights needs an auto-encoder n-H-n such as 784-1000-784, got arch {self.architecture}"
            )
        for key in ("activation", "eval_activation"):
            units = getattr(self, key)
            if isinstance(units, list) and len(units) not in (1, len(sizes) - 2):
                raise ConfigError(
                    f"{len(units)} {key} units given for {len(sizes) - 2} hidden layers; "
                    "give one, or one per hidden layer"
                )
            for unit in [units] if isinstance(units, str) else units or []:
                hidden_unit(unit)
        return self

    @property
    def architecture(self) -> str:
        if self.arch:
            return self.arch
        if self.task == "reconstruct" and self.data in AUTOENCODER_ARCH:
            return AUTOENCODER_ARCH[self.data]
        return DEFAULT_ARCH[self.data]

    @property
    def hidden_units(self) -> str | list[str]:
        if isinstance(self.activation, list) and len(self.activation) == 1:
            return self.activation[0]
        return self.activation

    def rule_params(self, rule: str | None = None) -> dict[str, Any]:
        return dict((self.model_extra or {}).get(rule or self.rule, {}))

    def rule_config(self, rule: str | None = None) -> RuleConfig:
        return rule_config(rule or self.rule, self.rule_params(rule))

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, every rule's hyper-parameters filled in, as TOML-ready data."""
        out = {k: v for k, v in self.model_dump(exclude_none=True).items() if k not in RULES}
        out["arch"] = self.architecture
        out[self.rule] = self.rule_config().model_dump(exclude_none=True)
        return out


def rule_config(rule: str, params: dict[str, Any]) -> RuleConfig:
    cls = get_rule(rule).Config
    try:
        return cls(**params)
    except ValidationError as e:
        raise ConfigError(f"[{rule}] " + describe_validation_error(e, cls)) from None


def describe_validation_error(e: ValidationError, model: type[BaseModel]) -> str:
    """One line from pydantic's first error: which key, what is wrong, what is allowed."""
    err = e.errors()[0]
    # a union's errors carry the member's tag ("constrained-float", "list[...]") in their location: not a key
    loc = ".".join(str(p) for p in err["loc"] if not re.search(r"[^\w]", str(p))) or "config"
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields)
        hint = difflib.get_close_matches(str(err["loc"][0]), list(model.model_fields), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"key {loc!r} does not exist{did}; known keys: {known}"
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, ConfigError):
        return str(ctx_error)
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None


def make_config(base: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """Validate ``base`` (e.g. from a TOML file) updated with ``overrides``; one-line ConfigError on failure.

    Run keys the rule needs (:attr:`Rule.run_defaults`, e.g. EP's hard-sigmoid units) are filled in where neither
    gives them, as the CLI does, so ``make_config(rule="ep", data="digits")`` is a run EP can train."""
    data = dict(base or {})
    for k, v in overrides.items():
        if v is None:
            continue
        if k in RULES and isinstance(v, dict):
            data[k] = {**data.get(k, {}), **v}
        else:
            data[k] = v
    rule = data.get("rule")
    if isinstance(rule, str) and rule.lower() in RULES:
        data, _ = with_rule_defaults(data, {}, [rule])
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, RunConfig)) from None


def with_rule_defaults(
    base: dict[str, Any], overrides: dict[str, Any], rules: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``base`` with the run keys ``rules`` need (:attr:`Rule.run_defaults`) where neither ``base`` (the config file
    and ``--set``) nor ``overrides`` (the flags) set them; and what was added. Compared rules share one network, so
    a key is added for all of them, and not at all where two rules need different values (each rule's own check
    then names the conflict)."""
    wanted: dict[str, set[Any]] = {}
    for rule in rules:
        for key, value in get_rule(rule).run_defaults.items():
            wanted.setdefault(key, set()).add(value)
    added = {
        key: next(iter(values))
        for key, values in wanted.items()
        if len(values) == 1 and base.get(key) is None and overrides.get(key) is None
    }
    return {**base, **added}, added


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"dtp.eta_hat=0.5"`` → (["dtp", "eta_hat"], 0.5); the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set needs KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_assignments(data: dict[str, Any], assignments: list[str], rules: list[str]) -> dict[str, Any]:
    """Apply ``--set`` assignments. ``KEY`` of the run, ``RULE.KEY`` of a rule, or a bare rule key, which goes
    to every rule in ``rules`` that has it. ``RULE.KEY`` of a rule not in ``rules`` is refused: the run would
    never read it."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for text in assignments:
        path, value = parse_assignment(text)
        if len(path) == 2 and path[0] in RULES and path[0] not in rules:
            raise ConfigError(
                f"--set {path[0]}.{path[1]}: this run trains {' and '.join(rules)}, not {path[0]}, so nothing would "
                f"read it; set {rules[0]}.{path[1]} (or the bare {path[1]}) instead"
            )
        if len(path) == 2:
            data.setdefault(path[0], {})[path[1]] = value
        elif len(path) == 1 and path[0] in RunConfig.model_fields:
            data[path[0]] = value
        elif len(path) == 1:
            owners = [r for r in rules if path[0] in get_rule(r).Config.model_fields]
            if not owners:
                raise ConfigError(
                    f"--set {path[0]}: no such key for the run or for rule(s) {', '.join(rules)}; "
                    "see `targetprop rules` for each rule's keys"
                )
            for r in owners:
                data.setdefault(r, {})[path[0]] = value
        else:
            raise ConfigError(f"--set {text!r}: write KEY=VALUE or RULE.KEY=VALUE")
    return data
