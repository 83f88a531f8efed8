"""Checkpoint files that cannot run code: tensors in safetensors, everything else in JSON.

A training state is a tree of dicts (string keys), lists, numbers, strings and tensors: the network's
parameters, the rule's optimiser moments and feedback matrices, the random streams' states, the epoch, the
metrics so far and the configuration they were trained with. :func:`encode` splits the tree in two: every tensor
goes to a flat ``{name: tensor}`` table (its name is its path in the tree, e.g. ``net.layers.0.weight``) and the
rest to a JSON *skeleton* in which each tensor is replaced by ``{"__tensor__": name}``. Both go into one
safetensors file (the skeleton in its header's metadata), written in one atomic rename, so a checkpoint is never
half of one thing and half of another.

Reading it parses a length-prefixed JSON header and copies raw little-endian arrays: no unpickling, so a
checkpoint downloaded with a paper's supplement or shared by a colleague cannot execute anything. The header
alone (:func:`read_header`) gives the epoch, the configuration and the metrics without touching a tensor, which
is what ``targetprop inspect`` shows.

Older runs of this project wrote ``checkpoint.pt`` with ``torch.save``. :func:`load_legacy` reads those with
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that builds only tensors and plain containers;
anything else in the file is refused, never executed.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from targetprop.errors import TargetpropError

FORMAT = "targetprop-checkpoint"
VERSION = 1
TENSOR = "__tensor__"


class CheckpointError(TargetpropError):
    """A checkpoint file that cannot be read: damaged, truncated, or not one of ours."""


def encode(state: Any) -> tuple[dict[str, Tensor], Any]:
    """``(tensors, skeleton)``: the tensors of ``state`` by path (as contiguous CPU tensors of their own, as
    safetensors requires), and ``state`` with each tensor replaced by ``{"__tensor__": path}``."""
    tensors: dict[str, Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Tensor):
            if path in tensors:
                raise TypeError(f"two tensors of the checkpoint would both be named {path!r}")
            tensors[path] = node.detach().to("cpu", copy=True).contiguous()
            return {TENSOR: path}
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    raise TypeError(f"checkpoint keys must be strings, got {key!r} at {path or 'the top'}")
            return {key: walk(value, f"{path}.{key}" if path else key) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [walk(value, f"{path}.{k}" if path else str(k)) for k, value in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(f"cannot checkpoint a {type(node).__name__} at {path or 'the top'}")

    return tensors, walk(state, "")


def decode(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {TENSOR}:
            name = skeleton[TENSOR]
            if name not in tensors:
                raise CheckpointError(f"the checkpoint names a tensor {name!r} it does not hold")
            return tensors[name]
        return {key: decode(value, tensors) for key, value in skeleton.items()}
    if isinstance(skeleton, list):
        return [decode(value, tensors) for value in skeleton]
    return skeleton


def dumps(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint of ``state`` (the caller writes them atomically)."""
    from safetensors.torch import save as save_tensors

    tensors, skeleton = encode(state)
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(skeleton)}
    return save_tensors(tensors, metadata=metadata)


def loads(data: bytes, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The state in the bytes :func:`dumps` made (for tests and in-memory copies)."""
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(data)
        f.flush()
        return load(Path(f.name), device)


def read_header(path: Path) -> dict[str, Any]:
    """The skeleton of the checkpoint at ``path`` (tensors not read): its epoch, config and metrics."""
    return _open(path)[0]


def load(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved at ``path``, its tensors on ``device``."""
    skeleton, handle = _open(path)
    try:
        tensors = {name: handle.get_tensor(name).to(device) for name in handle.keys()}  # noqa: SIM118
    except Exception as e:  # a damaged data section: anything the reader raises means the same to the user
        raise CheckpointError(f"{path} is damaged ({_reason(e)})") from None
    return decode(skeleton, tensors)


def _open(path: Path) -> tuple[dict[str, Any], Any]:
    """The checkpoint's skeleton (checked to be ours) and the open file, whose tensors are read on demand."""
    from safetensors import safe_open

    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        metadata = handle.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({_reason(e)})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a targetprop checkpoint")
    if metadata.get("version") != str(VERSION):
        raise CheckpointError(
            f"{path} is a version {metadata.get('version')} checkpoint; this targetprop reads version {VERSION}: "
            "upgrade targetprop"
        )
    try:
        skeleton = json.loads(metadata["state"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} has a damaged header ({_reason(e)})") from None
    if not isinstance(skeleton, dict):
        raise CheckpointError(f"{path} has a damaged header (its state is not a table)")
    return skeleton, handle


def load_legacy(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A ``checkpoint.pt`` of an older targetprop, read by PyTorch's restricted unpickler (no code runs)."""
    import pickle

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol: not the user's concern
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it asks for {found[1]})" if found else ""
        raise CheckpointError(
            f"{path} holds more than tensors and plain values{what} and is refused: unpickling it could run code"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({_reason(e)})") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a targetprop checkpoint")
    return state


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
