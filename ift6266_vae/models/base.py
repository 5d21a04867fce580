"""What every model shares: parameter bookkeeping and the Gaussian-VAE loss.

A model is a plain object that owns layers and builds symbolic graphs. Its API:

* ``params`` (trainable shared variables), ``bn_state`` (BN population statistics),
  ``variables`` (both, name -> shared variable, used by checkpoints);
* ``encode(x, deterministic, collect)`` -> ``(mu, log_sigma)``;
* ``decode(z, deterministic, collect)`` -> images ``(N, 1, 28, 28)``;
* ``loss(x, eps, deterministic)`` -> dict of symbolic terms (see :func:`costs.vae_costs`)
  plus ``bn_stats`` (the batch statistics of a training-mode graph);
* ``signature()``: architecture description stored in checkpoints and compared on load.

Compiled (numeric) counterparts ``sample``, ``reconstruct``, ``encode``, ``decode`` live in
:class:`ift6266_vae.models.compiled.ModelFunctions`, which compiles them once per backend.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from ..errors import UserError
from ..nn import costs
from ..nn.layers import ACTIVATIONS, BN_FORMULAS, BN_MOMENTS, LayerContainer
from ..rules import Bool, Choice, Float, Int, ListOf

ACTIVATION = Choice(*ACTIVATIONS)
ACTIVATION_LIST = ListOf(ACTIVATION)
WIDTHS = ListOf(Int(min=1))
#: the checked ranges of the keys every VAE shares (a model's ``RULES`` adds its own)
VAE_RULES = {
    "code_size": Int(min=1),
    "init_range": Float(gt=0),
    "bias": Bool(),
    "bn_formula": Choice(*BN_FORMULAS),
    "bn_alpha": Float(gt=0, le=1),
    "bn_moments": Choice(*BN_MOMENTS),
    "sigma_offset": Float(ge=0),
    "decoder_variance": Float(gt=0),
}


def check_same_length(cfg: dict, *parts: str) -> None:
    """``model.<part>`` and ``model.<part>_activations`` name one activation per layer."""
    for part in parts:
        widths, acts = cfg.get(part), cfg.get(f"{part}_activations")
        if widths is not None and acts is not None and len(widths) != len(acts):
            raise UserError(f"config keys 'model.{part}' ({len(widths)} layers) and 'model.{part}_activations' "
                            f"({len(acts)}) must have the same length")


class VAEBase(LayerContainer):
    kind = "base"
    input_shape = (1, 28, 28)

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        """Checks across keys of a resolved ``model`` section (each key's own range is in
        ``RULES``); raises a one-line UserError."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)

    @property
    def code_size(self) -> int:
        return int(self.config["code_size"])

    def forward_flops(self) -> int:
        """Analytic FLOPs (2 x multiply-adds of the dense and conv layers) of one example's
        forward pass through encoder and decoder. A training step costs about 3x this
        (forward, gradient w.r.t. inputs, gradient w.r.t. weights)."""
        raise NotImplementedError

    def gaussian_heads(self, h, deterministic: bool, collect: list | None):
        """``(mu, log_sigma)`` from the last encoder features ``h``: ``mu = BN(linear)``,
        ``sigma = softplus(BN(linear) + sigma_offset)`` as in 2015 (``self.mu_head`` and
        ``self.sigma_head`` are (Dense, BatchNorm) pairs)."""
        mu = self.mu_head[1](self.mu_head[0](h), deterministic, collect)
        s = self.sigma_head[1](self.sigma_head[0](h), deterministic, collect)
        sigma = pt.softplus(s + np.asarray(self.config["sigma_offset"], dtype=s.dtype))
        return mu, pt.log(sigma)

    def sample_code(self, mu, log_sigma, eps):
        """Reparameterised code ``z = mu + sigma * eps``."""
        return mu + eps * pt.exp(log_sigma)

    def loss(self, x, eps, deterministic: bool = False, kl_weight=None) -> dict:
        """The costs of a batch; ``kl_weight`` (a symbolic scalar, KL warm-up) weights the KL
        in the training objective ``loss`` (the per-example bounds are unweighted)."""
        collect: list = []
        mu, log_sigma = self.encode(x, deterministic, collect)
        z = self.sample_code(mu, log_sigma, eps)
        y = self.decode(z, deterministic, collect)
        out = costs.vae_costs(x, y, mu, log_sigma, self.config.get("decoder_variance", costs.DECODER_VARIANCE),
                              kl_weight=kl_weight)
        out.update(mu=mu, log_sigma=log_sigma, z=z, y=y, bn_stats=collect)
        return out


