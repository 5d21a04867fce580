"""Tests of ift6266_vae.graph.rewrites: numpy sums in the C/VM mode."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode

from ift6266_vae.graph import backends, rewrites

PLAIN = get_mode("CVM")
WITH = PLAIN.including(rewrites.register())


def _op_names(f):
    return {type(n.op).__name__ for n in f.maker.fgraph.apply_nodes}


@pytest.mark.parametrize("shape,axes,rewritten", [
    ((6, 5, 4, 3), (0, 2, 3), True),   # BN of NCHW: leading + trailing block
    ((7, 9), (0,), True),              # BN / bias of a dense batch
    ((7, 9), (1,), True),
    ((6, 5, 4, 3), (2, 3), True),
    ((6, 5, 4), (0, 2), True),
    ((6, 5, 4, 3), (1, 2), False),     # a middle block: left to PyTensor
    ((7, 9), None, False),             # full reduction: left to PyTensor
])
def test_fast_sum_values_and_graph(shape, axes, rewritten):
    rng = np.random.default_rng(0)
    x = pt.tensor(dtype="float32", shape=(None,) * len(shape))
    a = rng.standard_normal(shape).astype(np.float32)
    for keepdims in (False, True):
        y = x.sum(axis=axes, keepdims=keepdims)
        f0, f1 = pytensor.function([x], y, mode=PLAIN), pytensor.function([x], y, mode=WITH)
        want, got = f0(a), f1(a)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        names = _op_names(f1)
        assert ("Sum" not in names) == rewritten, names
        assert ("NumpySum" in names) == rewritten


def test_fast_sum_gradient_and_static_shapes():
    rng = np.random.default_rng(1)
    x = pt.tensor4("x", dtype="float32", shape=(None, 3, 4, 4))
    y = (pt.sqr(x).sum(axis=(0, 2, 3)) * np.arange(1, 4, dtype=np.float32)).sum()
    g = pytensor.grad(y, x)
    a = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    r0 = pytensor.function([x], [y, g], mode=PLAIN)(a)
    r1 = pytensor.function([x], [y, g], mode=WITH)(a)
    for u, v in zip(r0, r1):
        np.testing.assert_allclose(v, u, rtol=1e-5)


def test_fast_sum_accuracy_at_bn_scale():
    # The size of the conv VAE's biggest BN: mean over 128 x 28 x 28 per channel, float32.
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((128, 8, 28, 28)) + 3.0).astype(np.float32)
    x = pt.tensor4("x", dtype="float32")
    got = pytensor.function([x], x.sum(axis=(0, 2, 3)), mode=WITH)(a)
    want = a.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_c_backend_mode_includes_the_rewrite():
    x = pt.matrix("x", dtype="float32")
    f = backends.function([x], x.sum(axis=0), backend="c")
    assert "Sum" not in _op_names(f)
    f_numba = pytensor.function([x], x.sum(axis=0), mode=backends.get_compile_mode("numba"))
    np.testing.assert_allclose(f(np.ones((3, 2), np.float32)), f_numba(np.ones((3, 2), np.float32)))
