"""The DTP paper's auto-encoder trained by difference target propagation (Lee et al. 2015, section 3.4).

A one-hidden-layer auto-encoder with tied weights (``--set tied_weights=true``, architecture ``n-H-n``, task
``reconstruct``)::

    encoder   h = f(x) = sig(W x + b)
    decoder   z = g(h + ε) = sig(Wᵀ(h + ε) + c),      ε ~ N(0, σ²)   (``noise``)

The decoder ``g`` is the layer whose target is known: the input itself, ``x̂ = x``. The encoder ``f`` is the
approximate inverse of ``g``, so DTP's difference correction gives the hidden target

    ĥ = h + f(x̂) − f(z) = 2h − f(z)

and each half trains on its own layer-local loss, with no gradient crossing from the decoder into the encoder:

- decoder: the reconstruction cost ``L_g(a_z, x)`` of its pre-activation ``a_z = Wᵀ(h + ε) + c``, on the output
  unit's cost (the paper writes ``||z − x||²``; with a sigmoid output the library's cost is the binary
  cross-entropy, the cost the back-propagation baseline minimises too): ``δ_z = ∂L_g/∂a_z``,
  ``∂/∂Wᵀ = δ_zᵀ (h + ε)``, ``∂/∂c = Σ_b δ_z``;
- encoder: ``L_f = ||f(x̃) − ĥ||²`` (sum over units, mean over the batch), ``ĥ`` held fixed, on the corrupted
  input ``x̃ = x + ε_x`` the trainer gives (``input_noise``; ``x̃ = x`` without it):
  ``δ_h = s'(a) ⊙ 2(f(x̃) − ĥ)/B``, ``∂/∂W = δ_hᵀ x̃``, ``∂/∂b = Σ_b δ_h``.

``W`` receives both directions, ``∂/∂W + (∂/∂Wᵀ)ᵀ``, through the tied optimiser (:mod:`targetprop.nets`). The
clean ``x`` is the task's target ``y``; ``h`` and ``ĥ`` are computed from it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from targetprop.errors import ConfigError
from targetprop.nets import Network
from targetprop.replicas import ReplicaRandom
from targetprop.rules.base import Rule, RuleConfig, Scalar
from targetprop.tasks import Reconstruct, Task


class DTPAutoencoderConfig(RuleConfig):
    lr: Scalar = 1e-3
    """Learning rate of the tied weights and both biases."""
    noise: float = Field(0.3, ge=0, allow_inf_nan=False)
    """σ of the Gaussian noise ε added to the code ``h`` before decoding."""

    resumable: ClassVar[tuple[str, ...]] = (*RuleConfig.resumable, "noise")


class DTPAutoencoder(Rule):
    """The paper's DTP auto-encoder: decoder target ``x``, hidden target ``ĥ = 2h − f(z)``."""

    name = "dtp-ae"
    Config = DTPAutoencoderConfig
    config: DTPAutoencoderConfig
    run_defaults: ClassVar[dict[str, Any]] = {
        "task": "reconstruct",
        "tied_weights": True,
        "activation": "sigmoid",
        "output": "sigmoid",
    }
    """The paper's auto-encoder: sigmoid units, tied weights, the input as the decoder's target (and, with no
    ``--arch``, the task's default n-H-n: :data:`targetprop.config.AUTOENCODER_ARCH`)."""

    def __init__(self, net: Network, config: DTPAutoencoderConfig, noise: ReplicaRandom, task: Task | None = None):
        if not isinstance(task, Reconstruct) or not net.tied:
            raise ConfigError(
                "dtp-ae trains the paper's tied auto-encoder: use --set task=reconstruct --set tied_weights=true "
                "--arch 784-1000-784 --output sigmoid"
            )
        super().__init__(net, config, noise, task)

    def targets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From the clean input ``x``: the code ``h = f(x)``, the corrupted code ``h + ε``, the decoder's
        pre-activation ``a_z = Wᵀ(h + ε) + c`` and the hidden target ``ĥ = 2h − f(z)``. Returns
        ``(h + ε, a_z, ĥ)``."""
        encoder, decoder = self.net.layers
        h = encoder(x)
        code = h + self.config.noise * self.noise.normal(h.shape[1:], h.dtype)
        a_z = decoder.preactivation(code)
        h_hat = 2.0 * h - encoder(self.net.output_unit(a_z))
        return code, a_z, h_hat

    def forward_updates(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Layer-local directions ``[∂L_f/∂W, ∂L_f/∂b, ∂L_g/∂Wᵀ, ∂L_g/∂c]`` (the optimiser ties the two ``W``)."""
        with torch.no_grad():
            encoder, decoder = self.net.layers[0], self.net.layers[1]
            clean = y
            code, a_z, h_hat = self.targets(clean)
            a = encoder.preactivation(x)
            h_noisy = encoder.unit(a)
            delta_h = encoder.unit.vjp(a, h_noisy, (h_noisy - h_hat).mul_(2.0 / x.shape[1]))
            delta_z = self.net.output_unit.loss_grad(a_z, clean)
            grads = [*encoder.weight_grads(delta_h, x), *decoder.weight_grads(delta_z, code)]
        return grads, self.metrics(a_z, clean)
