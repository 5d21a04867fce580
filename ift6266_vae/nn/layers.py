"""Layers that own their parameters and build symbolic PyTensor graphs (Lasagne style).

Every parameter is a named ``pytensor.shared`` variable tagged with its role:

* ``var.tag.trainable = True`` for weights, biases and the BN gain/shift (``G``, ``B``);
* ``var.tag.bn_state = True`` for the BN population statistics (``mean``, ``var``).

Names are dotted (``enc.dense1.W``, ``enc.bn1.mean``) so checkpoints, profiles and logs
speak the same names.

Batch normalization
-------------------
The 2015 formula is the default: ``G * (h - mean(h)) / (std(h) + 1e-6) + B`` with the
statistics over axis 0 (dense) or axes (0, 2, 3) (NCHW conv). ``std`` is the biased
(population-of-the-batch) standard deviation, as ``theano.tensor.std`` computed it.

``formula="standard"`` gives ``G * (h - mean) / sqrt(var + eps) + B`` (Ioffe & Szegedy).

The ``deterministic`` switch picks the statistics:

* ``deterministic=False`` (training): batch statistics, and the layer registers updates
  that move its running (population) ``mean`` / ``var`` towards the batch values with an
  exponential moving average of rate ``alpha``;
* ``deterministic=True`` (inference): the stored population statistics, so the output
  of one example does not depend on the rest of its batch. This is the "fixed point"
  plumbing the 2015 author left open; :func:`ift6266_vae.evaluation.elbo.recompute_bn_statistics`
  also recomputes them exactly over the training set after training.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt

from ..graph import conv

FLOATX = "float32"

BN_FORMULAS = ("2015", "standard")
BN_MOMENTS = ("fast", "naive")


def shared(value: np.ndarray, name: str, **tags) -> pytensor.compile.SharedVariable:
    """A float32 shared variable with a name and boolean tags (``trainable``, ``bn_state``)."""
    var = pytensor.shared(np.asarray(value, dtype=FLOATX), name=name)
    for key, val in tags.items():
        setattr(var.tag, key, val)
    return var


def relu_2015(x):
    """ReLU as the 2015 code wrote it: ``x * (x > 1e-6)``."""
    return x * pt.gt(x, np.asarray(1e-6, dtype=x.dtype))


def hard_tanh(x):
    """Clip to [-1, 1] (the 2015 output non-linearity)."""
    return pt.clip(x, np.asarray(-1.0, dtype=x.dtype), np.asarray(1.0, dtype=x.dtype))


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": relu_2015,
    "tanh": pt.tanh,
    "hard_tanh": hard_tanh,
    "softplus": pt.softplus,
}


def get_activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None


class Layer:
    """Base class: a named container of shared variables."""

    def __init__(self, name: str):
        self.name = name
        self._vars: list = []

    def add(self, value: np.ndarray, suffix: str, **tags):
        var = shared(value, f"{self.name}.{suffix}", **tags)
        self._vars.append(var)
        return var

    @property
    def params(self) -> list:
        """Trainable parameters."""
        return [v for v in self._vars if getattr(v.tag, "trainable", False)]

    @property
    def state(self) -> list:
        """BN population statistics (not trained by gradient)."""
        return [v for v in self._vars if getattr(v.tag, "bn_state", False)]


class LayerContainer:
    """Bookkeeping shared by models and the classifier: named layers, their parameters
    (``params``), BN state (``bn_state``), both by name (``variables``, what checkpoints
    save) and an architecture ``signature`` (kind + every variable's shape)."""

    kind = "container"

    def __init__(self):
        self.layers: dict[str, Layer] = {}

    def _register(self, layer: Layer) -> Layer:
        if layer.name in self.layers:
            raise ValueError(f"duplicate layer name {layer.name}")
        self.layers[layer.name] = layer
        return layer

    @property
    def params(self) -> list:
        return [p for layer in self.layers.values() for p in layer.params]

    @property
    def bn_state(self) -> list:
        return [s for layer in self.layers.values() for s in layer.state]

    @property
    def variables(self) -> dict:
        return {v.name: v for v in self.params + self.bn_state}

    @property
    def frozen_variables(self) -> dict:
        """Variables of a part the container holds but never trains (a pre-trained sub-model),
        by checkpoint name; saved and loaded with the container."""
        return {}

    def signature(self) -> dict:
        """Kind plus every variable's name and shape (checked when loading a checkpoint)."""
        every = {**self.variables, **self.frozen_variables}
        return {"kind": self.kind, "shapes": {name: list(v.get_value(borrow=True).shape) for name, v in every.items()}}


class Dense(Layer):
    """``x @ W + b`` with ``W`` uniform in ``[-init_range, init_range]`` (the 2015 init).

    ``bias=False`` drops ``b``: a bias right before BN is cancelled by the mean
    subtraction (its gradient is exactly zero in training mode).
    """

    def __init__(self, n_in: int, n_out: int, name: str, rng: np.random.Generator,
                 init_range: float = 0.1, bias: bool = True):
        super().__init__(name)
        self.n_in, self.n_out = n_in, n_out
        self.W = self.add(rng.uniform(-init_range, init_range, (n_in, n_out)), "W", trainable=True)
        self.b = self.add(np.zeros(n_out), "b", trainable=True) if bias else None

    def __call__(self, x):
        y = pt.dot(x, self.W)
        return y + self.b if self.b is not None else y


class BatchNorm(Layer):
    """Batch normalization with a ``deterministic`` switch (see module docstring).

    Parameters
    ----------
    n : number of features (dense) or channels (conv).
    axes : axes the statistics are taken over: ``(0,)`` dense, ``(0, 2, 3)`` NCHW.
    formula : ``"2015"`` (``/(std + eps)``, eps 1e-6) or ``"standard"`` (``/sqrt(var + eps)``).
    alpha : rate of the running-average update of the population statistics.
    """

    def __init__(self, n: int, name: str, axes=(0,), formula: str = "2015",
                 eps: float | None = None, alpha: float = 0.1, moments: str = "fast"):
        super().__init__(name)
        if formula not in BN_FORMULAS:
            raise ValueError(f"unknown BN formula {formula!r}; valid: {BN_FORMULAS}")
        if moments not in BN_MOMENTS:
            raise ValueError(f"unknown BN moments construction {moments!r}; valid: {BN_MOMENTS}")
        self.moments_construction = moments
        self.n, self.axes, self.formula, self.alpha = n, tuple(axes), formula, alpha
        self.eps = (1e-6 if formula == "2015" else 1e-5) if eps is None else eps
        self.G = self.add(np.ones(n), "G", trainable=True)
        self.B = self.add(np.zeros(n), "B", trainable=True)
        self.mean = self.add(np.zeros(n), "mean", bn_state=True)
        self.var = self.add(np.ones(n), "var", bn_state=True)

    def _bcast(self, v, ndim):
        if ndim == 2:
            return v.dimshuffle("x", 0)
        if ndim == 4:
            return v.dimshuffle("x", 0, "x", "x")
        raise ValueError(f"{self.name}: BatchNorm expects a 2-d or 4-d input, got {ndim}-d")

    def _normalize(self, h, mean, var):
        eps = np.asarray(self.eps, dtype=h.dtype)
        if self.formula == "2015":
            scale = 1.0 / (pt.sqrt(var) + eps)
        else:
            scale = 1.0 / pt.sqrt(var + eps)
        # Fold G and the statistics into one per-feature scale and shift, so the
        # per-element work is a single multiply-add.
        a = self.G * scale
        c = self.B - mean * a
        return h * self._bcast(a, h.ndim) + self._bcast(c, h.ndim)

    def moments(self, h):
        """Batch mean and biased variance over ``self.axes`` (two passes, float32 sums).

        Speed matters here: PyTensor's default ``mean`` accumulates in float64 and, over
        the non-contiguous axes (0, 2, 3) of an NCHW tensor, runs 3-6x slower than this
        two-stage sum (first over the contiguous H*W block, then over the batch), which
        keeps float32 accumulators short enough (H*W, then N terms) to stay accurate.
        ``moments="naive"`` keeps the plain ``mean`` graph (how the 2015 code and a first
        port write it) for the profiling ablation.
        """
        acc = h.dtype
        if self.moments_construction == "naive":
            mean = pt.mean(h, axis=self.axes)
            return mean, pt.mean(pt.sqr(h - self._bcast(mean, h.ndim)), axis=self.axes)
        if self.axes == (0,) and h.ndim == 2:
            n = pt.cast(h.shape[0], acc)
            mean = pt.sum(h, axis=0, acc_dtype=acc) / n
            var = pt.sum(pt.sqr(h - mean.dimshuffle("x", 0)), axis=0, acc_dtype=acc) / n
            return mean, var
        if self.axes == (0, 2, 3) and h.ndim == 4:
            n_, c_, h_, w_ = h.shape
            n = pt.cast(n_ * h_ * w_, acc)
            r = h.reshape((n_, c_, h_ * w_))
            mean = pt.sum(pt.sum(r, axis=2, acc_dtype=acc), axis=0, acc_dtype=acc) / n
            d = r - mean.dimshuffle("x", 0, "x")
            var = pt.sum(pt.sum(pt.sqr(d), axis=2, acc_dtype=acc), axis=0, acc_dtype=acc) / n
            return mean, var
        mean = pt.mean(h, axis=self.axes)
        return mean, pt.mean(pt.sqr(h - self._bcast(mean, h.ndim)), axis=self.axes)

    def __call__(self, h, deterministic: bool = False, collect: list | None = None):
        """Normalize ``h``.

        In training mode the symbolic batch statistics ``(layer, mean, var)`` are appended
        to ``collect`` (when given): :func:`bn_running_updates` turns them into the
        population-statistics updates, and the exact recomputation reads them.
        """
        if deterministic:
            return self._normalize(h, self.mean, self.var)
        mean, var = self.moments(h)
        if collect is not None:
            collect.append((self, mean, var))
        return self._normalize(h, mean, var)


def bn_running_updates(bn_stats) -> OrderedDict:
    """Exponential-moving-average updates of the population statistics.

    ``bn_stats`` is the ``collect`` list filled by training-mode :class:`BatchNorm` calls.
    """
    upd = OrderedDict()
    for layer, mean, var in bn_stats:
        if layer.mean in upd:
            raise ValueError(f"{layer.name} was applied twice in one graph; pass one collector per call")
        a = np.asarray(layer.alpha, dtype=FLOATX)
        upd[layer.mean] = (1 - a) * layer.mean + a * mean
        upd[layer.var] = (1 - a) * layer.var + a * var
    return upd


class Conv2D(Layer):
    """NCHW convolution (stride 1) with OIHW weights uniform in ``[-init_range, init_range]``.

    ``border`` is ``valid``, ``same`` or ``full``; ``construction`` picks how the graph
    is built (:data:`ift6266_vae.graph.conv.CONV_CONSTRUCTIONS`; ``"2015"`` is the 'full'
    convolution then cropped that the 2015 code used for 'same'). All constructions give
    the same values.
    """

    def __init__(self, n_in: int, n_out: int, kernel: int, name: str, rng: np.random.Generator,
                 init_range: float = 0.05, border: str = "same", construction: str = "fast",
                 bias: bool = True):
        super().__init__(name)
        if construction not in conv.CONV_CONSTRUCTIONS:
            raise ValueError(f"unknown conv construction {construction!r}; valid: {conv.CONV_CONSTRUCTIONS}")
        self.border, self.construction = border, construction
        self.W = self.add(rng.uniform(-init_range, init_range, (n_out, n_in, kernel, kernel)), "W", trainable=True)
        self.b = self.add(np.zeros(n_out), "b", trainable=True) if bias else None

    def __call__(self, x):
        return self._bias(conv.conv2d(x, self.W, border=self.border, construction=self.construction))

    def after_upsampling(self, x, method: str):
        """This convolution applied to ``conv.upsample_2x(x, method)``.

        For zero insertion and a 'same' border the pair is computed on the small grid
        by :func:`conv.upsample_conv2d` (same values, 0.44x the multiply-adds for 3x3).
        """
        if method == "zeros" and self.border == "same":
            return self._bias(conv.upsample_conv2d(x, self.W, construction=self.construction))
        return self(conv.upsample_2x(x, method))

    def _bias(self, y):
        return y + self.b.dimshuffle("x", 0, "x", "x") if self.b is not None else y
