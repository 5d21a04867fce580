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

from ..nn import costs
from ..nn.layers import LayerContainer


class VAEBase(LayerContainer):
    kind = "base"
    input_shape = (1, 28, 28)

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

    def loss(self, x, eps, deterministic: bool = False) -> dict:
        collect: list = []
        mu, log_sigma = self.encode(x, deterministic, collect)
        z = self.sample_code(mu, log_sigma, eps)
        y = self.decode(z, deterministic, collect)
        out = costs.vae_costs(x, y, mu, log_sigma, self.config.get("decoder_variance", costs.DECODER_VARIANCE))
        out.update(mu=mu, log_sigma=log_sigma, z=z, y=y, bn_stats=collect)
        return out


