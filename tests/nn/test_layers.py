"""Tests of ift6266_vae.layers against numpy references.

Gradient checks: the layers own float32 parameters, and a finite-difference check in
float32 is too noisy to catch anything but gross errors. ``verify_grad`` therefore runs
in float64: the input ``h`` is a float64 tensor and the layer's ``G``/``B`` (``W``/``b``)
are swapped for float64 symbolic inputs by a small wrapper, so the check exercises the
layer's own ``__call__`` / ``_normalize`` code with the default float64 tolerances.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from ift6266_vae.nn import layers
from ift6266_vae.nn.layers import BatchNorm, Dense, bn_running_updates

MODE = pytensor.compile.mode.get_mode("CVM")


def fn(inputs, outputs, **kw):
    return pytensor.function(inputs, outputs, mode=MODE, **kw)


# ----------------------------------------------------------------------- numpy references


def ref_bn(h, G, B, axes, formula, eps, mean=None, var=None):
    """Batch norm in float64 numpy; batch statistics unless ``mean``/``var`` are given."""
    h = h.astype(np.float64)
    if mean is None:
        mean = h.mean(axis=axes)
        var = h.var(axis=axes)  # biased, like theano.tensor.std
    shape = [1] * h.ndim
    shape[1] = -1
    m, v = mean.reshape(shape), var.reshape(shape)
    g, b = G.reshape(shape), B.reshape(shape)
    if formula == "2015":
        return g * (h - m) / (np.sqrt(v) + eps) + b
    return g * (h - m) / np.sqrt(v + eps) + b


def make_input(ndim, rng):
    if ndim == 2:
        return (rng.standard_normal((16, 5)) * 3.0 + 2.0).astype("float32")
    return (rng.standard_normal((4, 3, 5, 6)) * 3.0 - 1.0).astype("float32")


AXES = {2: (0,), 4: (0, 2, 3)}


def randomize_bn(bn, rng):
    """Non-trivial G, B and population statistics, so the references are not identities."""
    n = bn.n
    bn.G.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
    bn.B.set_value(rng.standard_normal(n).astype("float32"))
    bn.mean.set_value(rng.standard_normal(n).astype("float32"))
    bn.var.set_value(rng.uniform(0.5, 3.0, n).astype("float32"))


# ----------------------------------------------------------------------- compiled BN fixtures


@pytest.fixture(scope="module")
def bn_fns():
    """For each (formula, ndim): the layer and compiled train / deterministic / update functions."""
    out = {}
    rng = np.random.default_rng(0)
    for formula in layers.BN_FORMULAS:
        for ndim in (2, 4):
            n = 5 if ndim == 2 else 3
            bn = BatchNorm(n, f"bn_{formula}_{ndim}", axes=AXES[ndim], formula=formula, alpha=0.25)
            randomize_bn(bn, rng)
            h = pt.tensor("h", dtype="float32", shape=(None,) * ndim)
            collect: list = []
            y_train = bn(h, deterministic=False, collect=collect)
            y_det = bn(h, deterministic=True)
            (_, bmean, bvar), = collect
            out[formula, ndim] = {
                "bn": bn,
                "train": fn([h], [y_train, bmean, bvar]),
                "det": fn([h], y_det),
                "update": fn([h], [], updates=bn_running_updates(collect)),
            }
    return out


CASES = [(f, nd) for f in layers.BN_FORMULAS for nd in (2, 4)]


@pytest.mark.parametrize("formula,ndim", CASES)
def test_bn_training_mode_matches_numpy(bn_fns, formula, ndim):
    d = bn_fns[formula, ndim]
    bn = d["bn"]
    x = make_input(ndim, np.random.default_rng(1))
    y, bmean, bvar = d["train"](x)
    G, B = bn.G.get_value(), bn.B.get_value()
    expected = ref_bn(x, G, B, AXES[ndim], formula, bn.eps)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # the collected batch statistics are the per-feature mean and *biased* variance
    np.testing.assert_allclose(bmean, x.astype(np.float64).mean(axis=AXES[ndim]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bvar, x.astype(np.float64).var(axis=AXES[ndim]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formula,ndim", CASES)
def test_bn_deterministic_mode_uses_population_statistics(bn_fns, formula, ndim):
    d = bn_fns[formula, ndim]
    bn = d["bn"]
    x = make_input(ndim, np.random.default_rng(2))
    y = d["det"](x)
    expected = ref_bn(x, bn.G.get_value(), bn.B.get_value(), AXES[ndim], formula, bn.eps,
                      mean=bn.mean.get_value().astype(np.float64), var=bn.var.get_value().astype(np.float64))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # and it is NOT the batch-statistics result (the population stats are far from the batch's)
    assert not np.allclose(y, d["train"](x)[0], atol=1e-2)
    # one example alone gives the same output as within its batch
    np.testing.assert_allclose(d["det"](x[:1]), y[:1], rtol=1e-6, atol=1e-6)


def test_bn_eps_defaults_per_formula():
    assert BatchNorm(2, "a", formula="2015").eps == 1e-6
    assert BatchNorm(2, "b", formula="standard").eps == 1e-5
    assert BatchNorm(2, "c", formula="standard", eps=1e-3).eps == 1e-3


def test_bn_2015_formula_differs_from_standard_by_eps_placement():
    """With a tiny variance the two formulas differ exactly as their eps placement says."""
    h = pt.matrix("h", dtype="float64")
    a = BatchNorm(1, "a", formula="2015", eps=1e-2)
    b = BatchNorm(1, "b", formula="standard", eps=1e-2)
    f = fn([h], [a(h), b(h)])
    x = np.array([[0.0], [0.02]])  # std 0.01, var 1e-4
    ya, yb = f(x)
    np.testing.assert_allclose(ya[:, 0], [-0.01 / (0.01 + 1e-2), 0.01 / (0.01 + 1e-2)], rtol=1e-6)
    np.testing.assert_allclose(yb[:, 0], [-0.01 / np.sqrt(1e-4 + 1e-2), 0.01 / np.sqrt(1e-4 + 1e-2)], rtol=1e-6)


@pytest.mark.parametrize("formula,ndim", [("2015", 2), ("standard", 4)])
def test_bn_running_updates_are_exponential_moving_averages(bn_fns, formula, ndim):
    d = bn_fns[formula, ndim]
    bn = d["bn"]
    rng = np.random.default_rng(3)
    randomize_bn(bn, rng)
    for step in range(2):
        x = make_input(ndim, rng)
        old_mean, old_var = bn.mean.get_value(), bn.var.get_value()
        _, bmean, bvar = d["train"](x)
        d["update"](x)
        a = bn.alpha
        np.testing.assert_allclose(bn.mean.get_value(), (1 - a) * old_mean + a * bmean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.var.get_value(), (1 - a) * old_var + a * bvar, rtol=1e-5, atol=1e-6)
        assert bn.mean.get_value().dtype == np.float32
    # parameters G and B are not touched by the running updates
    assert set(bn_running_updates([(bn, pt.vector(), pt.vector())])) == {bn.mean, bn.var}


def test_bn_running_updates_reject_a_layer_applied_twice():
    bn = BatchNorm(3, "twice")
    h = pt.matrix("h", dtype="float32")
    collect: list = []
    bn(h, collect=collect)
    bn(h * 2, collect=collect)
    with pytest.raises(ValueError, match="twice"):
        bn_running_updates(collect)


def test_bn_collect_only_in_training_mode():
    bn = BatchNorm(3, "c")
    h = pt.matrix("h", dtype="float32")
    collect: list = []
    bn(h, deterministic=True, collect=collect)
    assert collect == []
    bn(h, deterministic=False, collect=collect)
    assert len(collect) == 1 and collect[0][0] is bn


def test_bn_rejects_3d_input():
    bn = BatchNorm(3, "bad_ndim")
    with pytest.raises(ValueError, match="2-d or 4-d"):
        bn(pt.tensor3("h", dtype="float32"))


# ----------------------------------------------------------------------- gradients


def _bn_wrapper(formula, axes, n):
    def f(h, G, B):
        bn = BatchNorm(n, "gradcheck", axes=axes, formula=formula)
        bn.G, bn.B = G, B  # float64 symbolic inputs instead of the float32 shared variables
        return bn(h, deterministic=False)
    return f


@pytest.mark.parametrize("formula,ndim", CASES)
def test_bn_verify_grad_training_mode(formula, ndim):
    rng = np.random.default_rng(4)
    x = make_input(ndim, rng).astype(np.float64)
    n = x.shape[1]
    G = rng.uniform(0.5, 2.0, n)
    B = rng.standard_normal(n)
    pytensor.gradient.verify_grad(_bn_wrapper(formula, AXES[ndim], n), [x, G, B],
                                  rng=np.random.default_rng(5), mode=MODE)


def test_bn_verify_grad_deterministic_mode():
    rng = np.random.default_rng(6)
    x = make_input(2, rng).astype(np.float64)

    def f(h):
        bn = BatchNorm(5, "gradcheck_det")
        randomize_bn(bn, np.random.default_rng(7))
        return bn(h, deterministic=True)

    pytensor.gradient.verify_grad(f, [x], rng=np.random.default_rng(8), mode=MODE)


def test_bn_verify_grad_catches_a_wrong_gradient():
    """Sanity check of the harness: verify_grad does fail on a wrong gradient."""
    rng = np.random.default_rng(9)
    x = make_input(2, rng).astype(np.float64)

    def f(h):
        # stop the gradient through the batch mean: analytic != numeric
        return h - pytensor.gradient.disconnected_grad(pt.mean(h, axis=0))

    with pytest.raises(Exception):  # GradientError
        pytensor.gradient.verify_grad(f, [x], rng=np.random.default_rng(10), mode=MODE)


def test_dense_verify_grad():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 4))
    W = rng.standard_normal((4, 3))
    b = rng.standard_normal(3)

    def f(x_, W_, b_):
        d = Dense(4, 3, "gradcheck_dense", np.random.default_rng(0))
        d.W, d.b = W_, b_
        return d(x_)

    pytensor.gradient.verify_grad(f, [x, W, b], rng=np.random.default_rng(12), mode=MODE)


def test_bias_before_bn_gets_zero_gradient_in_training_mode():
    """The Dense docstring's claim: a bias right before training-mode BN has gradient 0."""
    rng = np.random.default_rng(13)
    d = Dense(4, 3, "d", rng)
    d.b.set_value(rng.standard_normal(3).astype("float32"))
    bn = BatchNorm(3, "bn")
    x = pt.matrix("x", dtype="float32")
    y = bn(d(x))
    w = pt.constant(rng.standard_normal((8, 3)).astype("float32"))
    gb, gW = pytensor.grad(pt.sum(y * w), [d.b, d.W])
    gb_v, gW_v = fn([x], [gb, gW])(rng.standard_normal((8, 4)).astype("float32"))
    np.testing.assert_allclose(gb_v, 0.0, atol=1e-5)
    assert np.abs(gW_v).max() > 1e-2


# ----------------------------------------------------------------------- Dense


def test_dense_forward_and_init():
    rng = np.random.default_rng(14)
    d = Dense(7, 5, "enc.dense1", rng, init_range=0.05)
    W = d.W.get_value()
    assert W.shape == (7, 5) and W.dtype == np.float32
    assert np.abs(W).max() <= 0.05 and W.std() > 0.01
    assert d.b.get_value().shape == (5,) and not d.b.get_value().any()
    d.b.set_value(np.arange(5, dtype="float32"))
    x = pt.matrix("x", dtype="float32")
    xv = rng.standard_normal((3, 7)).astype("float32")
    np.testing.assert_allclose(fn([x], d(x))(xv), xv @ W + np.arange(5), rtol=1e-5, atol=1e-6)

    nb = Dense(7, 5, "nobias", np.random.default_rng(14), bias=False)
    assert nb.b is None and [p.name for p in nb.params] == ["nobias.W"]
    np.testing.assert_allclose(fn([x], nb(x))(xv), xv @ nb.W.get_value(), rtol=1e-5, atol=1e-6)


def test_dense_init_is_seeded():
    a = Dense(4, 3, "a", np.random.default_rng(42)).W.get_value()
    b = Dense(4, 3, "b", np.random.default_rng(42)).W.get_value()
    c = Dense(4, 3, "c", np.random.default_rng(43)).W.get_value()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------- parameter tags


def test_parameter_names_and_tags():
    d = Dense(3, 2, "enc.dense1", np.random.default_rng(0))
    bn = BatchNorm(2, "enc.bn1")
    assert [p.name for p in d.params] == ["enc.dense1.W", "enc.dense1.b"]
    assert d.state == []
    assert [p.name for p in bn.params] == ["enc.bn1.G", "enc.bn1.B"]
    assert [s.name for s in bn.state] == ["enc.bn1.mean", "enc.bn1.var"]
    for p in d.params + bn.params:
        assert p.tag.trainable is True
        assert not getattr(p.tag, "bn_state", False)
        assert p.dtype == "float32"
    for s in bn.state:
        assert s.tag.bn_state is True
        assert not getattr(s.tag, "trainable", False)
        assert s.dtype == "float32"
    np.testing.assert_array_equal(bn.G.get_value(), [1, 1])
    np.testing.assert_array_equal(bn.B.get_value(), [0, 0])
    np.testing.assert_array_equal(bn.mean.get_value(), [0, 0])
    np.testing.assert_array_equal(bn.var.get_value(), [1, 1])


# ----------------------------------------------------------------------- errors and activations


def test_bad_bn_formula_raises():
    with pytest.raises(ValueError, match="formula"):
        BatchNorm(3, "bn", formula="ioffe")


def test_bad_activation_raises_listing_valid():
    with pytest.raises(ValueError, match="relu") as e:
        layers.get_activation("swish")
    assert "swish" in str(e.value)


def test_activations_against_numpy():
    x = pt.vector("x", dtype="float32")
    names = sorted(layers.ACTIVATIONS)
    f = fn([x], [layers.get_activation(n)(x) for n in names])
    xv = np.array([-3.0, -1.0, -0.5, 0.0, 5e-7, 2e-6, 0.5, 1.0, 3.0], dtype="float32")
    got = dict(zip(names, f(xv)))
    np.testing.assert_array_equal(got["relu"], xv * (xv > 1e-6))
    assert got["relu"][4] == 0.0 and got["relu"][5] == np.float32(2e-6)  # the 1e-6 threshold
    np.testing.assert_array_equal(got["hard_tanh"], np.clip(xv, -1, 1))
    np.testing.assert_array_equal(got["linear"], xv)
    np.testing.assert_allclose(got["tanh"], np.tanh(xv), rtol=1e-6)
    np.testing.assert_allclose(got["softplus"], np.log1p(np.exp(xv.astype(np.float64))), rtol=1e-5)
    for name, v in got.items():
        assert v.dtype == np.float32, name
