"""Tests of ift6266_vae.conv_op: the native Conv2dOp and its gradient ops.

Values against ``ops.conv2d`` and ``scipy.signal.correlate2d`` (C/VM linker),
``verify_grad`` in float64 for every border and op, and one Numba compile (and
one JAX compile when ``jax`` is installed) compared with C/VM.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode
from pytensor.gradient import verify_grad
from scipy.signal import correlate2d

from ift6266_vae import conv_op, ops

warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")

MODE = get_mode("CVM")
BORDERS = ("valid", "same", "full")


def _ref_conv(x, w, border):
    """scipy.signal.correlate2d per (n, o, c), summed over c, in float64."""
    n_, c_ = x.shape[:2]
    return np.asarray([[sum(correlate2d(x[n, c].astype(np.float64), w[o, c].astype(np.float64), mode=border)
                            for c in range(c_)) for o in range(w.shape[0])] for n in range(n_)])


def _grad_fn(border, k, native=True, mode=MODE, dtype="float32"):
    x = pt.tensor4("x", dtype=dtype)
    w = pt.tensor4("W", dtype=dtype, shape=(None, None, k, k))
    g = pt.tensor4("g", dtype=dtype)
    y = conv_op.conv2d_native(x, w, border) if native else ops.conv2d(x, w, border)
    gx, gw = pytensor.grad(None, [x, w], known_grads={y: g})
    return pytensor.function([x, w, g], [y, gx, gw], mode=mode)


def _data(seed, n, c, o, h, w, k, border, dtype="float32"):
    rng = np.random.default_rng(seed)
    xv = rng.standard_normal((n, c, h, w)).astype(dtype)
    wv = rng.standard_normal((o, c, k, k)).astype(dtype)
    gv = rng.standard_normal(ops.conv2d_output_shape(xv.shape, wv.shape, border)).astype(dtype)
    return xv, wv, gv


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_values_and_grads_match_ops_conv2d(border, k):
    f = _grad_fn(border, k)
    f_ref = _grad_fn(border, k, native=False)
    for seed, (n, c, o, h, w) in enumerate([(2, 1, 1, 7, 8), (2, 3, 4, 6, 6), (1, 5, 2, 9, 7)]):
        xv, wv, gv = _data(seed, n, c, o, h, w, k, border)
        got = f(xv, wv, gv)
        want = f_ref(xv, wv, gv)
        for a, b in zip(got, want):
            assert a.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[0], _ref_conv(xv, wv, border), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("border", BORDERS)
def test_numpy_kernels_against_scipy(border):
    xv, wv, gv = _data(3, 2, 3, 4, 6, 5, 3, border, dtype="float64")
    y = conv_op.conv2d_np(xv, wv, border)
    assert y.flags.c_contiguous
    np.testing.assert_allclose(y, _ref_conv(xv, wv, border), rtol=1e-10, atol=1e-10)
    # gradients by the adjoint identities <gy, conv(x, W)> = <gx, x> = <gW, W>
    gx = conv_op.conv2d_grad_input_np(gv, wv, border)
    gw = conv_op.conv2d_grad_weight_np(xv, gv, 3, 3, border)
    lhs = float((gv * y).sum())
    assert np.isclose(float((gx * xv).sum()), lhs) and np.isclose(float((gw * wv).sum()), lhs)
    # grad wrt input = complementary-border conv with the flipped, transposed kernel
    comp = {"valid": "full", "same": "same", "full": "valid"}[border]
    np.testing.assert_allclose(gx, conv_op.conv2d_np(gv, wv[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), comp),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("border", BORDERS)
def test_verify_grad(border):
    rng = np.random.default_rng(11)
    xv = rng.standard_normal((2, 2, 5, 4))
    wv = rng.standard_normal((3, 2, 3, 3))
    verify_grad(lambda x, w: conv_op.conv2d_native(x, w, border), [xv, wv], rng=rng, mode=MODE)
    gv = rng.standard_normal(ops.conv2d_output_shape(xv.shape, wv.shape, border))
    verify_grad(lambda g, w: conv_op.Conv2dGradInputOp(border)(g, w), [gv, wv], rng=rng, mode=MODE)
    verify_grad(lambda x, g: conv_op.Conv2dGradWeightOp(border)(x, g, np.array([3, 3])), [xv, gv],
                rng=rng, mode=MODE)


def test_static_shapes_dtype_and_infer_shape():
    x = pt.tensor4("x", dtype="float32", shape=(8, 3, 10, 12))
    w = pt.tensor4("W", dtype="float32", shape=(5, 3, 3, 5))
    for border, hw in [("valid", (8, 8)), ("same", (10, 12)), ("full", (12, 16))]:
        y = conv_op.conv2d_native(x, w, border)
        assert y.type.shape == (8, 5, *hw) and y.dtype == "float32"
        gx, gw = pytensor.grad(y.sum(), [x, w])
        assert gx.type.shape == x.type.shape and gw.type.shape == w.type.shape
        assert gx.dtype == gw.dtype == "float32"
    # dynamic shapes: infer_shape gives the runtime shape without computing the conv
    xd = pt.tensor4("xd", dtype="float32")
    wd = pt.tensor4("wd", dtype="float32")
    yd = conv_op.conv2d_native(xd, wd, "full")
    gwd = pytensor.grad(yd.sum(), wd)
    f = pytensor.function([xd, wd], [yd.shape, gwd.shape], mode=MODE)
    assert not any(isinstance(n.op, conv_op.Conv2dOp) for n in f.maker.fgraph.toposort())
    s_y, s_gw = f(np.zeros((2, 3, 6, 7), "float32"), np.zeros((4, 3, 3, 2), "float32"))
    assert tuple(s_y) == (2, 4, 8, 8) and tuple(s_gw) == (4, 3, 3, 2)


def test_errors():
    x = pt.tensor4("x", dtype="float32", shape=(None, 3, None, None))
    with pytest.raises(ValueError, match="border"):
        conv_op.conv2d_native(x, pt.tensor4(shape=(2, 3, 3, 3)), "bogus")
    with pytest.raises(ValueError, match="channel"):
        conv_op.conv2d_native(x, pt.tensor4(shape=(2, 4, 3, 3)), "valid")
    with pytest.raises(ValueError, match="odd"):
        conv_op.conv2d_native(x, pt.tensor4(shape=(2, 3, 2, 2)), "same")
    with pytest.raises(ValueError, match="4-d"):
        conv_op.conv2d_native(pt.matrix(), pt.tensor4(), "valid")
    wd = pt.tensor4("W", dtype="float32")  # kernel size only known at run time
    f = pytensor.function([x, wd], conv_op.conv2d_native(x, wd, "same"), mode=MODE)
    with pytest.raises(ValueError, match="odd"):
        f(np.zeros((1, 3, 4, 4), "float32"), np.zeros((2, 3, 2, 2), "float32"))


def test_second_derivative():
    """The gradient ops are differentiable: grad of a function of the gradient."""
    rng = np.random.default_rng(5)
    xv = rng.standard_normal((2, 2, 5, 5))
    wv = rng.standard_normal((2, 2, 3, 3))

    def gnorm(x, w):
        y = conv_op.conv2d_native(x, w, "same")
        gx, gw = pytensor.grad((y ** 2).sum(), [x, w])
        return (gx ** 2).sum() + (gw ** 2).sum()

    verify_grad(gnorm, [xv, wv], rng=rng, mode=MODE)


def test_float64_and_mixed_dtypes():
    x = pt.tensor4("x", dtype="float32")
    w = pt.tensor4("W", dtype="float64", shape=(None, None, 3, 3))
    y = conv_op.conv2d_native(x, w, "valid")
    assert y.dtype == "float64"
    gx, gw = pytensor.grad(y.sum(), [x, w])
    assert gx.dtype == "float32" and gw.dtype == "float64"
    xv, wv, _ = _data(1, 2, 2, 3, 5, 5, 3, "valid")
    out = pytensor.function([x, w], y, mode=MODE)(xv, wv.astype("float64"))
    np.testing.assert_allclose(out, _ref_conv(xv, wv, "valid"), rtol=1e-6, atol=1e-6)


def _compare_with_cvm(mode):
    for border, k, seed in [("valid", 3, 0), ("same", 5, 1), ("full", 3, 2), ("same", 1, 3)]:
        xv, wv, gv = _data(seed, 2, 3, 4, 7, 6, k, border)
        got = _grad_fn(border, k, mode=mode)(xv, wv, gv)
        want = _grad_fn(border, k)(xv, wv, gv)
        for a, b in zip(got, want):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_numba_matches_cvm_without_object_mode():
    pytest.importorskip("numba")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")  # the silent-ish fallback
        _compare_with_cvm(get_mode("NUMBA"))


def test_jax_matches_cvm():
    pytest.importorskip("jax")
    _compare_with_cvm(get_mode("JAX"))
