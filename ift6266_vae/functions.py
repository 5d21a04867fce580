"""Compiled counterparts of a model's symbolic graphs, compiled lazily once per backend.

:class:`ModelFunctions` is what training, evaluation, plotting callers and the CLI use to
run a model on numpy arrays: ``train_step``, ``elbo``, ``encode``, ``decode``,
``reconstruct``, ``sample`` and ``bn_batch_stats``. The VAE noise ``eps`` is always an
*input* drawn from a numpy ``Generator`` the caller owns, so runs are reproducible and
resumable (the generator state goes into checkpoints) and identical on every backend.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import numpy as np
import pytensor.tensor as pt

from . import backends, optim
from .layers import FLOATX, bn_running_updates

log = logging.getLogger(__name__)


def image_input(name: str = "x"):
    return pt.tensor(name, dtype=FLOATX, shape=(None, 1, 28, 28))


class ModelFunctions:
    """Compiled functions of ``model`` for ``backend``; ``optim_config`` enables ``train_step``."""

    def __init__(self, model, backend: str = "auto", optim_config: dict | None = None,
                 batch_size: int | None = None):
        self.model = model
        self.backend = backends.resolve(backend, getattr(model, "kind", None))
        self.optim_config = optim_config
        self.batch_size = batch_size
        self._fns: dict = {}
        self.optimizer_state: list = []
        self.compile_seconds: dict[str, float] = {}
        if optim_config is not None:
            self._build_train()

    # ------------------------------------------------------------------ helpers
    def _compile(self, key, inputs, outputs, updates=None):
        t0 = time.perf_counter()
        fn = backends.function(inputs, outputs, backend=self.backend, updates=updates)
        self.compile_seconds[key] = time.perf_counter() - t0
        log.debug("compiled %s on %s in %.1f s", key, self.backend, self.compile_seconds[key])
        return fn

    def _get(self, key, builder):
        if key not in self._fns:
            self._fns[key] = builder()
        return self._fns[key]

    # ------------------------------------------------------------------ training
    def _build_train(self):
        cfg = dict(self.optim_config)
        name = cfg.pop("name")
        lr = cfg.pop("learning_rate")
        if cfg.pop("divide_lr_by_batch"):
            if not self.batch_size:
                raise ValueError("divide_lr_by_batch needs the batch size")
            lr = lr / self.batch_size
        x = image_input()
        eps = pt.matrix("eps", dtype=FLOATX)
        out = self.model.loss(x, eps, deterministic=False)
        rule = optim.get_optimizer(name)
        updates = rule(out["loss"], self.model.params, np.float32(lr), **cfg)
        updates = OrderedDict(updates)
        bn_upd = bn_running_updates(out["bn_stats"])
        updates.update(bn_upd)
        params = set(self.model.params)
        self.optimizer_state = [v for v in updates if v not in params and v not in bn_upd]
        n = pt.cast(x.shape[0], FLOATX)
        outputs = [out["loss"] / n, pt.mean(out["nll"]), pt.mean(out["kl"])]
        self._train_graph = ([x, eps], outputs, updates)

    @property
    def train_graph(self):
        """The symbolic train step: ``(inputs [x, eps], outputs, updates)`` (for profiling)."""
        return self._train_graph

    def compile_train(self):
        """Compile the update function now (training clocks then measure steps only)."""
        return self._get("train_step", lambda: self._compile("train_step", *self._train_graph))

    def train_step(self, x: np.ndarray, eps: np.ndarray):
        """One update; returns (loss per example, mean NLL in nats, mean KL)."""
        return [float(v) for v in self.compile_train()(x, eps)]

    # ------------------------------------------------------------------ evaluation
    def elbo(self, x: np.ndarray, eps: np.ndarray, deterministic: bool = True):
        """Per-example (elbo, nll, kl) in nats. ``deterministic=False`` uses batch statistics."""
        def build():
            xs, e = image_input(), pt.matrix("eps", dtype=FLOATX)
            out = self.model.loss(xs, e, deterministic=deterministic)
            return self._compile(f"elbo[{deterministic}]", [xs, e], [out["elbo"], out["nll"], out["kl"]])
        return self._get(("elbo", deterministic), build)(x, eps)

    def bn_batch_stats(self, x: np.ndarray, eps: np.ndarray):
        """Training-mode batch (mean, var) of every BN layer, in graph order: [(layer, mean, var)]."""
        def build():
            xs, e = image_input(), pt.matrix("eps", dtype=FLOATX)
            out = self.model.loss(xs, e, deterministic=False)
            self._bn_layers = [layer for layer, _, _ in out["bn_stats"]]
            flat = [t for _, m, v in out["bn_stats"] for t in (m, v)]
            return self._compile("bn_batch_stats", [xs, e], flat)
        vals = self._get("bn_batch_stats", build)(x, eps)
        return [(layer, vals[2 * i], vals[2 * i + 1]) for i, layer in enumerate(self._bn_layers)]

    def encode(self, x: np.ndarray):
        """(mu, log_sigma) with population BN statistics."""
        def build():
            xs = image_input()
            mu, ls = self.model.encode(xs, deterministic=True)
            return self._compile("encode", [xs], [mu, ls])
        return self._get("encode", build)(x)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images (N, 1, 28, 28) in [-1, 1] (the hard-tanh range) with population BN statistics."""
        def build():
            zs = pt.matrix("z", dtype=FLOATX)
            return self._compile("decode", [zs], self.model.decode(zs, deterministic=True))
        return self._get("decode", build)(np.asarray(z, dtype=FLOATX))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean of each input."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample(self, n: int | None = None, rng: np.random.Generator | None = None,
               eps: np.ndarray | None = None) -> np.ndarray:
        """Decode codes drawn from the N(0, I) prior (or the given ``eps``)."""
        if eps is None:
            eps = rng.standard_normal((n, self.model.code_size)).astype(FLOATX)
        return self.decode(eps)
