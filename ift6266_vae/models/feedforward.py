"""The week-9 feedforward VAE with batch normalization at every layer (2015 defaults).

Encoder ``784-512-512-256`` (ReLU, ReLU, tanh), code 384; ``mu = BN(linear)``,
``sigma = softplus(BN(linear) + 1e-15)``, ``log_sigma = log(sigma)``;
``z = mu + sigma * eps``. Decoder: ``BN(linear)`` from the code to 256 (no non-linearity,
as the 2015 code), then 256-512-512 ReLU layers, output 784 with BN and hard-tanh.
Every linear layer is followed by BN, including the mu and sigma heads. Weights are
uniform in [-0.1, 0.1]; ReLU is ``x * (x > 1e-6)``.
"""

from __future__ import annotations

import numpy as np

from ..nn.layers import BatchNorm, Dense, get_activation
from ..rules import Choice
from .base import ACTIVATION, ACTIVATION_LIST, VAE_RULES, WIDTHS, VAEBase, check_same_length

DEFAULTS = {
    "kind": "feedforward",
    "encoder": [512, 512, 256],
    "encoder_activations": ["relu", "relu", "tanh"],
    "code_size": 384,
    "decoder": [256, 512, 512],
    "decoder_activations": ["linear", "relu", "relu"],
    "output_activation": "hard_tanh",
    "init_range": 0.1,
    "bias": True,
    "bn_formula": "2015",
    "bn_alpha": 0.1,
    "bn_moments": "fast",
    "sigma_offset": 1e-15,
    "decoder_variance": 0.5,
}


RULES = {
    **VAE_RULES,
    "kind": Choice("feedforward"),
    "encoder": WIDTHS,
    "encoder_activations": ACTIVATION_LIST,
    "decoder": WIDTHS,
    "decoder_activations": ACTIVATION_LIST,
    "output_activation": ACTIVATION,
}


class FeedforwardVAE(VAEBase):
    kind = "feedforward"
    DEFAULTS = DEFAULTS
    RULES = RULES

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        check_same_length(cfg, "encoder", "decoder")

    def __init__(self, config: dict | None = None, seed: int = 0):
        cfg = {**DEFAULTS, **(config or {})}
        super().__init__(cfg)
        if len(cfg["encoder"]) != len(cfg["encoder_activations"]):
            raise ValueError("model.encoder and model.encoder_activations must have the same length")
        if len(cfg["decoder"]) != len(cfg["decoder_activations"]):
            raise ValueError("model.decoder and model.decoder_activations must have the same length")
        rng = np.random.default_rng(seed)
        n_x = int(np.prod(self.input_shape))

        def block(n_in, n_out, prefix, i):
            d = self._register(Dense(n_in, n_out, f"{prefix}.dense{i}", rng, cfg["init_range"], cfg["bias"]))
            bn = self._register(BatchNorm(n_out, f"{prefix}.bn{i}", (0,), cfg["bn_formula"],
                                          alpha=cfg["bn_alpha"], moments=cfg["bn_moments"]))
            return d, bn

        self.enc = []
        n = n_x
        for i, (width, act) in enumerate(zip(cfg["encoder"], cfg["encoder_activations"]), 1):
            self.enc.append((*block(n, width, "enc", i), get_activation(act)))
            n = width
        self.mu_head = block(n, cfg["code_size"], "enc.mu", 1)
        self.sigma_head = block(n, cfg["code_size"], "enc.sigma", 1)

        self.dec = []
        n = cfg["code_size"]
        for i, (width, act) in enumerate(zip(cfg["decoder"], cfg["decoder_activations"]), 1):
            self.dec.append((*block(n, width, "dec", i), get_activation(act)))
            n = width
        self.out = (*block(n, n_x, "dec.out", 1), get_activation(cfg["output_activation"]))

    def encode(self, x, deterministic: bool = False, collect: list | None = None):
        h = x.flatten(2) if x.ndim > 2 else x
        for dense, bn, act in self.enc:
            h = act(bn(dense(h), deterministic, collect))
        return self.gaussian_heads(h, deterministic, collect)

    def decode(self, z, deterministic: bool = False, collect: list | None = None):
        h = z
        for dense, bn, act in self.dec:
            h = act(bn(dense(h), deterministic, collect))
        dense, bn, act = self.out
        y = act(bn(dense(h), deterministic, collect))
        return y.reshape((y.shape[0], *self.input_shape))

    def forward_flops(self) -> int:
        return sum(2 * layer.n_in * layer.n_out for layer in self.layers.values() if isinstance(layer, Dense))
