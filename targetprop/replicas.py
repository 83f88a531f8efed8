"""Replicas: R independent copies of a network trained side by side in batched tensors.

Each replica owns its seed and, from it, its own random streams: one for the initialisation (on the CPU, so a
seed gives the same starting weights on every device), one for training (data order, corruption noise,
stochastic units), one for evaluation (stochastic units at test time), one for the noise added to the inputs while training
(``input_noise``), and one for the fixed random feedback
matrices of the feedback-alignment rules (on the CPU, apart from ``init`` so that the forward weights of a seed
are the same under every rule). Replica ``r`` of a run with seeds ``[s_0, ..., s_{R-1}]`` therefore follows
exactly the path of a single run with seed ``s_r``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from targetprop import philox
from targetprop.errors import ConfigError

_STREAMS = {"init": 0, "train": 1, "eval": 2, "feedback": 3, "input": 4, "probe": 5, "probe-input": 6}
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit: every stream's generator seed (``seed * 7919 + ...``) then fits in 64 bits."""
MAX_REPLICAS = 4096


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """``"0-9"`` → 0..9, ``"1,3,5"`` → [1, 3, 5], ``"0-3,7"`` → [0, 1, 2, 3, 7]; ints and lists pass through.

    A seed may repeat: ``"0,0,0"`` with a list of learning rates trains three settings from one initialisation
    (what a sweep's replicas do)."""
    if isinstance(text, bool):
        raise ConfigError(f"seeds {text!r} must be integers; write e.g. 0-9 or 1,3,5")
    if isinstance(text, int):
        text = [text]
    if not isinstance(text, str):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in text):
            raise ConfigError(f"seeds {text!r} must be integers; write e.g. 0-9 or 1,3,5")
        seeds = list(text)
    else:
        seeds = []
        for part in text.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise ConfigError(f"cannot read seeds {text!r}; write e.g. 0-9 or 1,3,5")
            lo, hi = int(m[1]), int(m[2] or m[1])
            if hi < lo:
                raise ConfigError(f"seed range {part!r} runs backwards; write e.g. 0-9")
            if hi - lo + 1 + len(seeds) > MAX_REPLICAS:  # checked before the list is built
                raise ConfigError(f"{text!r} asks for more than {MAX_REPLICAS} seeds; train fewer replicas per run")
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ConfigError(f"no seeds in {text!r}; write e.g. 0-9 or 1,3,5")
    if len(seeds) > MAX_REPLICAS:
        raise ConfigError(f"{len(seeds)} seeds given; at most {MAX_REPLICAS} replicas train in one run")
    for s in seeds:
        if not 0 <= s <= MAX_SEED:
            raise ConfigError(f"seed {s} is out of range; seeds are integers from 0 to {MAX_SEED}")
    return seeds


def refuse_repeated_seeds(seeds: Sequence[int], counted_by: str) -> None:
    """Refuse seeds that name one seed twice where ``counted_by`` (a table's mean and std over seeds) would count
    it twice; ``parse_seeds`` allows repeats for replicas with settings of their own."""
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"--seeds names seed(s) {twice} more than once; {counted_by} counts each seed once")


def _seed_value(seed: int, stream: str) -> int:
    return seed * 7919 + _STREAMS[stream] * 104729 + 12345


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one replica and one purpose, seeded from the replica's seed."""
    g = torch.Generator(device=device)
    g.manual_seed(_seed_value(seed, stream))
    return g


class ReplicaRandom:
    """One random stream per replica. Draws come out stacked along a leading replica dimension.

    Uniform and normal draws come from one ``torch.Generator`` per replica, or, with ``philox``, from a
    counter-based Philox stream per replica computed in tensor operations (:mod:`targetprop.philox`): the same
    numbers on every device, and draws that ``torch.compile`` traces, so that a step drawing noise is captured
    whole as a CUDA graph. Permutations come from the generators either way."""

    def __init__(self, seeds: Sequence[int], stream: str, device: torch.device | str = "cpu", philox: bool = False):
        self.seeds = list(seeds)
        self.device = torch.device(device)
        self.generators = [generator(s, stream, self.device) for s in self.seeds]
        self.keys: Tensor | None = None
        """``(R, 2)`` Philox keys, the two 32-bit halves of each replica's seed value (``philox`` only)."""
        self.offsets: Tensor | None = None
        """``(R,)`` each replica's position in its Philox stream, moved on in place by every draw."""
        if philox:
            values = [_seed_value(s, stream) for s in self.seeds]
            self.keys = torch.tensor([[v & 0xFFFFFFFF, v >> 32] for v in values], dtype=torch.int64, device=device)
            self.offsets = torch.zeros(len(self.seeds), dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """``(R, *shape)`` standard normal draws, replica r from its own stream."""
        if self.keys is not None:
            return philox.normal(self.keys, self.offsets, tuple(shape), dtype)  # type: ignore[arg-type]
        out = torch.empty((len(self.generators), *shape), device=self.device, dtype=dtype)
        for row, g in zip(out, self.generators, strict=True):
            row.normal_(generator=g)  # the numbers torch.randn(shape, generator=g) gives, without a copy
        return out

    def normal_rows(self, rows: Sequence[int], width: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(R, Σ rows, width)`` standard normal draws: for each replica, the numbers of the successive draws
        ``normal((rows[0], width))``, ``normal((rows[1], width))``, … stacked along the rows."""
        if self.keys is not None:
            return philox.normal(self.keys, self.offsets, (sum(rows), width), dtype)  # type: ignore[arg-type]
        out = torch.empty((len(self.generators), sum(rows), width), device=self.device, dtype=dtype)
        for row, g in zip(out, self.generators, strict=True):
            for block in row.split(list(rows)):
                block.normal_(generator=g)
        return out

    def uniform_like(self, x: Tensor) -> Tensor:
        """Uniform [0, 1) noise shaped like ``x`` of shape ``(R, ...)``, replica r from its own stream."""
        if self.keys is not None:
            return philox.uniform(self.keys, self.offsets, tuple(x.shape[1:]), x.dtype)  # type: ignore[arg-type]
        out = torch.empty_like(x)
        for row, g in zip(out, self.generators, strict=True):
            row.uniform_(generator=g)  # the numbers torch.rand(shape, generator=g) gives, without a copy
        return out

    def permutations(self, n: int) -> Tensor:
        """``(R, n)``: a permutation of ``range(n)`` per replica."""
        return torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.generators])

    def state_dict(self) -> list[Tensor]:
        """Every generator's state, and after them, with ``philox``, the replicas' stream positions."""
        return [g.get_state() for g in self.generators] + ([self.offsets.clone()] if self.offsets is not None else [])

    def load_state_dict(self, states: Sequence[Tensor]) -> None:
        want = len(self.generators) + (self.offsets is not None)
        if len(states) != want:
            raise ValueError(f"expected {want} random stream states, got {len(states)}")
        for g, s in zip(self.generators, states, strict=False):
            g.set_state(s.cpu())  # a checkpoint loaded onto a GPU brings the states with it
        if self.offsets is not None:
            self.offsets.copy_(states[-1])

    def select(self, index: Sequence[int]) -> ReplicaRandom:
        """The streams of a subset of replicas (sharing their generators)."""
        out = ReplicaRandom.__new__(ReplicaRandom)
        out.seeds = [self.seeds[i] for i in index]
        out.device = self.device
        out.generators = [self.generators[i] for i in index]
        out.keys = None if self.keys is None else self.keys[list(index)]
        out.offsets = None if self.offsets is None else self.offsets[list(index)]  # copies: not shared
        return out
