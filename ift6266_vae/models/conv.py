"""The 2015 convolutional VAE with batch normalization at every layer.

Encoder: conv 64 3x3 'same' + BN + ReLU + 2x2 max-pool, conv 128 3x3 'same' + BN + ReLU
+ 2x2 max-pool -> 128x7x7; flatten; dense 512 + BN + tanh; mu = BN(dense 512 -> 512),
sigma = softplus(BN(dense) + 1e-15) (code 512). Decoder: dense code -> 128*7*7 + BN +
ReLU, reshape; then per stage 2x upsampling, conv 3x3 'same' + BN, ReLU (64 channels),
and for the last stage 1 channel with hard-tanh. BN statistics over (0, 2, 3) for conv
layers. Weights uniform in [-0.05, 0.05].

Graph constructions (same values, different graphs; the profiling report compares them):

* ``conv_construction``: ``"fast"`` (default here: im2col + one GEMM; a decoder conv after
  zero-insertion upsampling is computed on the small grid by the sub-pixel decomposition
  of :func:`ift6266_vae.graph.conv.upsample_conv2d`), ``"im2col"`` (the same without the
  sub-pixel fusion: upsample, then convolve the 2x grid) or ``"2015"`` ('full' conv then
  crop, on the 2x grid);
* ``upsample``: ``"zeros"`` (default here; zero insertion), ``"perforated_2015"`` (a dense
  (H*W) x (4*H*W) 0/1 matrix rebuilt with set_subtensor on every call, then a dot, as in
  2015) or ``"nearest"`` (a different model: copies instead of zeros).

The defaults compute exactly the 2015 functions with the fast graphs; ``construction:
"2015"`` in a config (see :func:`apply_construction`) selects the 2015 graphs.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from ..graph import conv as graph_conv
from ..nn.layers import BatchNorm, Conv2D, Dense, get_activation
from ..rules import Choice, Int, ListOf
from .base import VAE_RULES, VAEBase

DEFAULTS = {
    "kind": "conv",
    "channels": [64, 128],
    "kernel": 3,
    "dense": 512,
    "code_size": 512,
    "init_range": 0.05,
    "bias": True,
    "bn_formula": "2015",
    "bn_alpha": 0.1,
    "bn_moments": "fast",
    "sigma_offset": 1e-15,
    "decoder_variance": 0.5,
    "conv_construction": "fast",
    "upsample": "zeros",
}

#: The named graph-construction sets: ``"2015"`` reproduces the 2015 graphs.
CONSTRUCTIONS = {
    "fast": {"conv_construction": "fast", "upsample": "zeros"},
    "2015": {"conv_construction": "2015", "upsample": "perforated_2015", "bn_moments": "naive"},
}


RULES = {
    **VAE_RULES,
    "kind": Choice("conv"),
    "channels": ListOf(Int(min=1), length=2),
    "kernel": Int(min=1, odd=True),
    "dense": Int(min=1),
    "conv_construction": Choice(*graph_conv.CONV_CONSTRUCTIONS),
    "upsample": Choice(*graph_conv.UPSAMPLE_METHODS),
}


class ConvVAE(VAEBase):
    kind = "conv"
    DEFAULTS = DEFAULTS
    RULES = RULES

    def __init__(self, config: dict | None = None, seed: int = 0):
        cfg = {**DEFAULTS, **(config or {})}
        super().__init__(cfg)
        if cfg["upsample"] not in graph_conv.UPSAMPLE_METHODS:
            raise ValueError(f"unknown upsample method {cfg['upsample']!r}; valid: {graph_conv.UPSAMPLE_METHODS}")
        rng = np.random.default_rng(seed)
        c1, c2 = cfg["channels"]
        k, r, form, alpha = cfg["kernel"], cfg["init_range"], cfg["bn_formula"], cfg["bn_alpha"]

        def conv(n_in, n_out, name):
            return self._register(Conv2D(n_in, n_out, k, name, rng, r, "same", cfg["conv_construction"], cfg["bias"]))

        def dense(n_in, n_out, name):
            return self._register(Dense(n_in, n_out, name, rng, r, cfg["bias"]))

        def bn(n, name, axes):
            return self._register(BatchNorm(n, name, axes, form, alpha=alpha, moments=cfg["bn_moments"]))

        self.side = 7  # 28 / 2 / 2
        flat = c2 * self.side * self.side
        self.enc_convs = [(conv(1, c1, "enc.conv1"), bn(c1, "enc.bn1", (0, 2, 3))),
                          (conv(c1, c2, "enc.conv2"), bn(c2, "enc.bn2", (0, 2, 3)))]
        self.enc_dense = (dense(flat, cfg["dense"], "enc.dense3"), bn(cfg["dense"], "enc.bn3", (0,)))
        self.mu_head = (dense(cfg["dense"], cfg["code_size"], "enc.mu.dense1"), bn(cfg["code_size"], "enc.mu.bn1", (0,)))
        self.sigma_head = (dense(cfg["dense"], cfg["code_size"], "enc.sigma.dense1"),
                           bn(cfg["code_size"], "enc.sigma.bn1", (0,)))
        self.dec_dense = (dense(cfg["code_size"], flat, "dec.dense1"), bn(flat, "dec.bn1", (0,)))
        self.dec_convs = [(conv(c2, c1, "dec.conv2"), bn(c1, "dec.bn2", (0, 2, 3)), get_activation("relu")),
                          (conv(c1, 1, "dec.conv3"), bn(1, "dec.bn3", (0, 2, 3)), get_activation("hard_tanh"))]

    def encode(self, x, deterministic: bool = False, collect: list | None = None):
        relu = get_activation("relu")
        h = x
        for conv, bn in self.enc_convs:
            h = graph_conv.max_pool_2x2(relu(bn(conv(h), deterministic, collect)))
        h = h.flatten(2)
        d, b = self.enc_dense
        h = pt.tanh(b(d(h), deterministic, collect))
        return self.gaussian_heads(h, deterministic, collect)

    def decode(self, z, deterministic: bool = False, collect: list | None = None):
        d, b = self.dec_dense
        h = get_activation("relu")(b(d(z), deterministic, collect))
        h = h.reshape((h.shape[0], self.config["channels"][1], self.side, self.side))
        for conv, bn, act in self.dec_convs:
            h = act(bn(conv.after_upsampling(h, self.config["upsample"]), deterministic, collect))
        return h

    def forward_flops(self) -> int:
        c1, c2 = self.config["channels"]
        k2 = self.config["kernel"] ** 2
        convs = 2 * k2 * (1 * c1 * 28 * 28 + c1 * c2 * 14 * 14 + c2 * c1 * 14 * 14 + c1 * 1 * 28 * 28)
        dense = sum(2 * layer.n_in * layer.n_out for layer in self.layers.values() if isinstance(layer, Dense))
        return convs + dense
