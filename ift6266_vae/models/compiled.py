"""Compiled counterparts of a model's symbolic graphs, compiled lazily once per backend.

:class:`ModelFunctions` is what training, evaluation, the CLI and :func:`ift6266_vae.load`
use to run a VAE on numpy arrays: ``train_step``, ``elbo``, ``encode``, ``decode``,
``reconstruct``, ``sample`` and ``bn_batch_stats``. :class:`SSLFunctions` adds what the
semi-supervised models can do (``predict``, ``generate``, ``analogies``). The VAE noise
``eps`` is always an *input* drawn from a numpy ``Generator`` the caller owns, so runs are
reproducible and resumable (the generator state goes into checkpoints) and identical on
every backend. The registry (:mod:`ift6266_vae.models`) maps each model kind to its class.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import numpy as np
import pytensor.tensor as pt

from ..errors import UserError
from ..graph import backends
from ..nn import optim
from ..nn.layers import FLOATX, bn_running_updates, shared
from .semisupervised import N_CLASSES

log = logging.getLogger(__name__)


def as_generator(seed) -> np.random.Generator:
    """A numpy Generator: ``default_rng(seed)`` for an int (or None), the Generator itself."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def image_input(name: str = "x"):
    return pt.tensor(name, dtype=FLOATX, shape=(None, 1, 28, 28))


class ModelFunctions:
    """Compiled functions of ``model`` for ``backend``; ``optim_config`` enables ``train_step``.

    ``kl_warmup``: the train step weights the KL of its objective by ``kl_weight`` (a shared
    scalar the training loop sets each epoch; KL warm-up), else the graph has no such weight.
    """

    #: whether the decoder needs a label next to the code (semi-supervised models)
    conditional = False

    def __init__(self, model, backend: str = "auto", optim_config: dict | None = None,
                 batch_size: int | None = None, kl_warmup: bool = False):
        self.model = model
        self.backend = backends.resolve(backend, getattr(model, "kind", None))
        self.optim_config = optim_config
        self.batch_size = batch_size
        self.kl_weight = shared(np.float32(1.0), "train.kl_weight") if kl_warmup else None
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
    def _updates(self, loss, bn_stats) -> OrderedDict:
        """The configured rule's updates of the parameters and its state, then the BN
        running averages; records the rule's state variables in ``optimizer_state``."""
        cfg = dict(self.optim_config)
        name, lr = cfg.pop("name"), cfg.pop("learning_rate")
        if cfg.pop("divide_lr_by_batch"):
            if not self.batch_size:
                raise ValueError("divide_lr_by_batch needs the batch size")
            lr = lr / self.batch_size
        updates = OrderedDict(optim.get_optimizer(name)(loss, self.model.params, np.float32(lr), **cfg))
        self.optimizer_state = optim.optimizer_state(updates)
        updates.update(bn_running_updates(bn_stats))
        return updates

    def _build_train(self):
        x = image_input()
        eps = pt.matrix("eps", dtype=FLOATX)
        out = self.model.loss(x, eps, deterministic=False, kl_weight=self.kl_weight)
        n = pt.cast(x.shape[0], FLOATX)
        outputs = [out["loss"] / n, pt.mean(out["nll"]), pt.mean(out["kl"])]
        self._train_graph = ([x, eps], outputs, self._updates(out["loss"], out["bn_stats"]))

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
    def elbo(self, x: np.ndarray, eps: np.ndarray | None = None, deterministic: bool = True, seed=0):
        """Per-example (elbo, nll, kl) in nats, one noise draw per example (``eps``, or drawn
        from ``seed``). ``deterministic=False`` uses batch statistics."""
        if eps is None:
            eps = as_generator(seed).standard_normal((len(x), self.model.code_size)).astype(FLOATX)

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

    def sample(self, n: int | None = None, seed=0, eps: np.ndarray | None = None) -> np.ndarray:
        """``n`` images decoded from codes of the N(0, I) prior drawn from ``seed`` (an int or a
        numpy Generator), or from the given codes ``eps``; in the hard-tanh range [-1, 1]."""
        if eps is None:
            eps = as_generator(seed).standard_normal((n, self.model.code_size)).astype(FLOATX)
        return self.decode(eps)


def _labels_input(name: str = "y"):
    return pt.vector(name, dtype="int64")


class SSLFunctions(ModelFunctions):
    """Compiled functions of a :class:`~ift6266_vae.models.semisupervised.SemiSupervisedVAE`.

    ``ce_weight`` multiplies the summed cross-entropy of the labeled rows in the training
    objective (:meth:`ift6266_vae.training.semisupervised.SemiSupervisedHooks.ce_weight`). Labels passed to ``decode`` may be
    integer classes ``(N,)`` or rows of class probabilities ``(N, 10)``.
    """

    conditional = True

    def __init__(self, model, backend: str = "auto", optim_config: dict | None = None,
                 batch_size: int | None = None, kl_warmup: bool = False, ce_weight: float = 1.0):
        self.ce_weight = float(ce_weight)
        self.last_ce = float("nan")
        super().__init__(model, backend, optim_config, batch_size, kl_warmup)

    # ------------------------------------------------------------------ training
    def _inputs(self):
        return image_input("x_l"), _labels_input("y_l"), image_input("x_u"), pt.matrix("eps", dtype=FLOATX)

    def _build_train(self):
        x_l, y_l, x_u, eps = self._inputs()
        out = self.model.ssl_loss(x_l, y_l, x_u, eps, deterministic=False, ce_weight=self.ce_weight,
                                  kl_weight=self.kl_weight)
        n = pt.cast(eps.shape[0], FLOATX)
        n_l = pt.maximum(pt.cast(x_l.shape[0], FLOATX), np.float32(1))
        outputs = [out["loss"] / n, pt.mean(out["nll"]), pt.mean(out["kl"]), pt.sum(out["ce"]) / n_l]
        self._train_graph = ([x_l, y_l, x_u, eps], outputs, self._updates(out["loss"], out["bn_stats"]))

    def train_step(self, x_l, y_l, x_u, eps):
        """One update on ``n_l`` labeled and ``n_u`` unlabeled images (``eps``: ``n_l + n_u``
        rows, labeled first); returns (objective per example, mean NLL, mean KL) and keeps
        the labeled cross-entropy in ``last_ce``."""
        loss, nll, kl, ce = (float(v) for v in self.compile_train()(x_l, np.asarray(y_l, np.int64), x_u, eps))
        self.last_ce = ce
        return [loss, nll, kl]

    def ssl_costs(self, x_l, y_l, x_u, eps, deterministic: bool = True) -> dict:
        """Per-example ``elbo``, ``nll``, ``kl``, ``ce`` and the objective ``loss`` of a mixed batch."""
        def build():
            ins = self._inputs()
            out = self.model.ssl_loss(*ins, deterministic=deterministic, ce_weight=self.ce_weight)
            keys = ["loss", "elbo", "nll", "kl", "ce"]
            fn = self._compile(f"ssl_costs[{deterministic}]", list(ins), [out[k] for k in keys])
            return keys, fn
        keys, fn = self._get(("ssl_costs", deterministic), build)
        return dict(zip(keys, fn(x_l, np.asarray(y_l, np.int64), x_u, eps)))

    # ------------------------------------------------------------------ inference
    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """``q(y|x)`` with population BN statistics, (N, 10)."""
        def build():
            xs = image_input()
            return self._compile("predict_proba", [xs], pt.special.softmax(self.model.classify(xs, True), axis=1))
        fn = self._get("predict_proba", build)
        return np.concatenate([fn(x[s:s + batch_size]) for s in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros((0, N_CLASSES), FLOATX)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted classes (int64, (N,))."""
        return self.predict_proba(x, batch_size).argmax(axis=1).astype(np.int64)

    def _label_rows(self, labels, n: int) -> np.ndarray:
        lab = np.asarray(labels)
        if lab.ndim == 2:
            if lab.shape != (n, N_CLASSES):
                raise ValueError(f"label rows must have shape ({n}, {N_CLASSES}), got {lab.shape}")
            return lab.astype(FLOATX)
        lab = np.broadcast_to(lab, (n,)).astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= N_CLASSES):
            raise UserError(f"labels must lie in 0-{N_CLASSES - 1}, got {sorted(set(lab.tolist()))[:5]}")
        return np.eye(N_CLASSES, dtype=FLOATX)[lab]

    def encode(self, x: np.ndarray, labels=None):
        """``(mu, log_sigma)`` with population BN statistics. For m2 the encoder needs a label:
        ``labels`` (classes or probability rows), by default the predicted class."""
        if not self.model.label_in_encoder:  # blog, q(z|x): the label does not enter the encoder
            def build():
                xs = image_input()
                return self._compile("encode", [xs], list(self.model.encode(xs, None, deterministic=True)))
            return self._get("encode", build)(x)

        def build():
            xs, ys = image_input(), pt.matrix("y", dtype=FLOATX)
            return self._compile("encode", [xs, ys], list(self.model.encode(xs, ys, deterministic=True)))
        if labels is None:
            labels = self.predict(x)
        return self._get("encode", build)(x, self._label_rows(labels, len(x)))

    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        """Images (N, 1, 28, 28) from codes and labels (classes or probability rows; required)."""
        if labels is None:
            raise ValueError("the semi-supervised decoder needs labels: decode(z, labels)")
        def build():
            zs, ys = pt.matrix("z", dtype=FLOATX), pt.matrix("y", dtype=FLOATX)
            return self._compile("decode", [zs, ys], self.model.decode(zs, ys, deterministic=True))
        z = np.asarray(z, dtype=FLOATX)
        return self._get("decode", build)(z, self._label_rows(labels, len(z)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean with the classifier's label (m2: predicted class; blog:
        ``Y'``, as in training)."""
        if self.model.label_in_encoder:
            lab = self.predict(x)
            return self.decode(self.encode(x, lab)[0], lab)
        return self.decode(self.encode(x)[0], self.predict_proba(x))

    def sample(self, n: int | None = None, seed=0, eps: np.ndarray | None = None, labels=None) -> np.ndarray:
        """Decode prior codes (drawn from ``seed``, or ``eps``) with the given labels (default:
        classes drawn uniformly from the same generator)."""
        rng = as_generator(seed)
        if eps is None:
            eps = rng.standard_normal((n, self.model.code_size)).astype(FLOATX)
        if labels is None:
            labels = rng.integers(0, N_CLASSES, len(eps))
        return self.decode(eps, labels)

    def generate(self, label: int, n: int, seed=0, eps: np.ndarray | None = None) -> np.ndarray:
        """``n`` images of class ``label``: prior codes (from ``seed`` or ``eps``) decoded with
        the label clamped."""
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < N_CLASSES:
            raise UserError(f"label must be a class in 0-{N_CLASSES - 1}, got {label!r}")
        if eps is None:
            eps = as_generator(seed).standard_normal((n, self.model.code_size)).astype(FLOATX)
        return self.decode(eps, np.full(len(eps), int(label)))

    def analogies(self, x: np.ndarray, labels=None) -> np.ndarray:
        """Style transfer: each digit's posterior-mean code decoded with every label.

        Returns ``(len(x) * 10, 1, 28, 28)``, row-major: row ``i`` holds digit ``i``'s
        code decoded with labels 0..9. The m2 encoder reads ``labels`` (default: the
        predicted classes)."""
        n = len(x)
        mu, _ = self.encode(x, labels)
        z = np.repeat(mu, N_CLASSES, axis=0)
        lab = np.tile(np.arange(N_CLASSES), n)
        return self.decode(z, lab)
