"""Tests of ift6266_vae.ops: conv2d, max_pool_2x2, upsample_2x against numpy/scipy.

Compiled with the C/VM mode (fast to compile); compiled functions are cached per
graph key so each graph is compiled once per session.  One test compiles under
Numba and compares with C/VM.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import get_mode
from pytensor.gradient import verify_grad
from scipy.signal import correlate2d

from ift6266_vae.graph import conv as graph_conv

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")

MODE = get_mode("CVM")
CONSTRUCTIONS = [c for c in graph_conv.CONV_CONSTRUCTIONS if c != "fast"] + ["fast"]


@pytest.fixture(scope="module")
def compiled():
    """Module-level cache: key -> compiled function."""
    return {}


def _conv_fn(cache, border, construction, kh, kw, dtype="float32"):
    key = ("conv", border, construction, kh, kw, dtype)
    if key not in cache:
        x = pt.tensor4("x", dtype=dtype)
        w = pt.tensor4("W", dtype=dtype, shape=(None, None, kh, kw))
        cache[key] = pytensor.function([x, w], graph_conv.conv2d(x, w, border, construction), mode=MODE)
    return cache[key]


def _ref_conv(x, w, border):
    """scipy.signal.correlate2d per (n, o, c), summed over c."""
    n_, c_ = x.shape[:2]
    o_ = w.shape[0]
    out = []
    for n in range(n_):
        per_o = []
        for o in range(o_):
            acc = sum(correlate2d(x[n, c].astype(np.float64), w[o, c].astype(np.float64), mode=border)
                      for c in range(c_))
            per_o.append(acc)
        out.append(per_o)
    return np.asarray(out)


def _rand(rng, shape, dtype="float32"):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------- conv2d


CONV_SHAPES = [  # (x_shape, (O, kh, kw)); C taken from x
    ((2, 3, 7, 6), (4, 1, 1)),
    ((2, 3, 7, 6), (4, 3, 3)),
    ((1, 2, 9, 8), (3, 5, 5)),
    ((3, 1, 5, 5), (2, 3, 3)),
    ((2, 4, 6, 7), (1, 5, 5)),
    ((2, 2, 6, 8), (3, 3, 5)),  # rectangular kernel
]


@pytest.mark.parametrize("border", graph_conv.BORDERS)
@pytest.mark.parametrize("x_shape,okk", CONV_SHAPES)
def test_conv2d_fast_matches_scipy(compiled, border, x_shape, okk):
    rng = np.random.default_rng(0)
    o, kh, kw = okk
    x = _rand(rng, x_shape)
    w = _rand(rng, (o, x_shape[1], kh, kw))
    got = _conv_fn(compiled, border, "fast", kh, kw)(x, w)
    ref = _ref_conv(x, w, border)
    assert got.dtype == np.float32
    assert got.shape == ref.shape == graph_conv.conv2d_output_shape(x.shape, w.shape, border)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


CONSTRUCTION_CASES = [(b, k) for b in graph_conv.BORDERS for k in (1, 3)] + [("same", 5)]


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
@pytest.mark.parametrize("border,k", CONSTRUCTION_CASES)
def test_conv2d_constructions_match_scipy(compiled, construction, border, k):
    # k=5 for 'valid'/'full' is covered by test_conv2d_fast_matches_scipy; the 25-tap
    # graphs of the other constructions are slow to compile.
    rng = np.random.default_rng(1)
    f = _conv_fn(compiled, border, construction, k, k)
    for x_shape, o in [((2, 3, 7, 6), 4), ((1, 5, 8, 9), 2)]:
        x = _rand(rng, x_shape)
        w = _rand(rng, (o, x_shape[1], k, k))
        np.testing.assert_allclose(f(x, w), _ref_conv(x, w, border), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [3, 5])
def test_conv2d_2015_same_equals_fast(compiled, k):
    rng = np.random.default_rng(2)
    x = _rand(rng, (3, 4, 7, 7))
    w = _rand(rng, (5, 4, k, k))
    a = _conv_fn(compiled, "same", "2015", k, k)(x, w)
    b = _conv_fn(compiled, "same", "fast", k, k)(x, w)
    assert a.shape == b.shape == x.shape[:1] + (5,) + x.shape[2:]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
@pytest.mark.parametrize("border", graph_conv.BORDERS)
def test_conv2d_verify_grad(construction, border):
    rng = np.random.default_rng(3)
    kh, kw = 3, 3
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, kh, kw))
    verify_grad(
        lambda x_, w_: graph_conv.conv2d(x_, w_, border, construction, filter_shape=(kh, kw)),
        [x, w], rng=rng, mode=MODE, n_tests=1,
    )


def test_conv2d_verify_grad_rectangular_kernel():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((2, 2, 1, 3))
    verify_grad(lambda x_, w_: graph_conv.conv2d(x_, w_, "same", filter_shape=(1, 3)), [x, w],
                rng=rng, mode=MODE, n_tests=1)


def test_conv2d_float32_graph_stays_float32():
    x = pt.tensor4(dtype="float32")
    w = pt.tensor4(dtype="float32", shape=(None, None, 3, 3))
    for construction in CONSTRUCTIONS:
        for border in graph_conv.BORDERS:
            assert graph_conv.conv2d(x, w, border, construction).dtype == "float32"


def test_conv2d_kernel_size_from_shared_variable():
    rng = np.random.default_rng(5)
    x_val = _rand(rng, (2, 3, 6, 6))
    w_val = _rand(rng, (2, 3, 3, 3))
    w = pytensor.shared(w_val)
    x = pt.tensor4(dtype="float32")
    f = pytensor.function([x], graph_conv.conv2d(x, w, "same"), mode=MODE)
    np.testing.assert_allclose(f(x_val), _ref_conv(x_val, w_val, "same"), rtol=1e-5, atol=1e-5)


def test_conv2d_errors():
    x = pt.tensor4(dtype="float32")
    w = pt.tensor4(dtype="float32", shape=(None, None, 3, 3))
    with pytest.raises(ValueError, match="valid, same, full"):
        graph_conv.conv2d(x, w, border="half")
    with pytest.raises(ValueError, match="im2col"):
        graph_conv.conv2d(x, w, construction="winograd")
    with pytest.raises(ValueError, match="odd"):
        graph_conv.conv2d(x, pt.tensor4(dtype="float32", shape=(None, None, 2, 2)), border="same")
    with pytest.raises(ValueError, match="kernel size"):
        graph_conv.conv2d(x, pt.tensor4(dtype="float32"))
    with pytest.raises(ValueError, match="4-d"):
        graph_conv.conv2d(pt.matrix(dtype="float32"), w)
    with pytest.raises(ValueError, match="channel mismatch"):
        graph_conv.conv2d(pt.tensor4(dtype="float32", shape=(None, 2, None, None)),
                   pt.tensor4(dtype="float32", shape=(4, 3, 3, 3)))
    with pytest.raises(ValueError, match="does not match"):
        graph_conv.conv2d(x, w, filter_shape=(5, 5))


def test_conv2d_flops():
    assert graph_conv.conv2d_flops((128, 64, 14, 14), (128, 64, 3, 3), "same") == 2 * 128 * 128 * 14 * 14 * 64 * 9
    assert graph_conv.conv2d_flops((2, 3, 7, 6), (4, 3, 3, 3), "valid") == 2 * 2 * 4 * 5 * 4 * 3 * 9
    assert graph_conv.conv2d_flops((2, 3, 7, 6), (4, 3, 3, 5), "full") == 2 * 2 * 4 * 9 * 10 * 3 * 15
    with pytest.raises(ValueError, match="valid, same, full"):
        graph_conv.conv2d_flops((1, 1, 4, 4), (1, 1, 3, 3), "bogus")
    with pytest.raises(ValueError, match="channel mismatch"):
        graph_conv.conv2d_flops((1, 2, 4, 4), (1, 1, 3, 3), "same")


def test_conv2d_numba_matches_cvm(compiled):
    """Fwd + grad compiled under Numba equals the C/VM result (tiny shape)."""
    rng = np.random.default_rng(6)
    x_val = _rand(rng, (2, 2, 5, 5))
    w_val = _rand(rng, (3, 2, 3, 3))
    g_val = _rand(rng, (2, 3, 5, 5))
    x = pt.tensor4("x", dtype="float32")
    w = pt.tensor4("W", dtype="float32", shape=(None, None, 3, 3))
    g = pt.tensor4("g", dtype="float32")
    y = graph_conv.conv2d(x, w, "same")
    gx, gw = pytensor.grad(None, [x, w], known_grads={y: g})
    outs = {}
    for name in ("NUMBA", "CVM"):
        f = pytensor.function([x, w, g], [y, gx, gw], mode=get_mode(name))
        outs[name] = f(x_val, w_val, g_val)
    for a, b in zip(outs["NUMBA"], outs["CVM"]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["CVM"][0], _ref_conv(x_val, w_val, "same"), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- pooling


def _ref_pool(x):
    n_, c_, h, w = x.shape
    out = np.empty((n_, c_, h // 2, w // 2), x.dtype)
    for n in range(n_):
        for c in range(c_):
            for i in range(h // 2):
                for j in range(w // 2):
                    out[n, c, i, j] = x[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max()
    return out


@pytest.fixture(scope="module")
def pool_fns():
    x = pt.tensor4("x", dtype="float32")
    g = pt.tensor4("g", dtype="float32")
    y = graph_conv.max_pool_2x2(x)
    (gx,) = pytensor.grad(None, [x], known_grads={y: g})
    return pytensor.function([x], y, mode=MODE), pytensor.function([x, g], gx, mode=MODE)


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 4, 6), (3, 2, 8, 8)])
def test_max_pool_matches_loop(pool_fns, shape):
    x = _rand(np.random.default_rng(7), shape)
    got = pool_fns[0](x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _ref_pool(x))


def test_max_pool_grad_routes_to_argmax(pool_fns):
    rng = np.random.default_rng(8)
    x = rng.permutation(2 * 3 * 4 * 6).reshape(2, 3, 4, 6).astype("float32")  # no ties
    g = _rand(rng, (2, 3, 2, 3))
    got = pool_fns[1](x, g)
    ref = np.zeros_like(x)
    for n, c, i, j in np.ndindex(g.shape):
        block = x[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        a, b = np.unravel_index(np.argmax(block), (2, 2))
        ref[n, c, 2 * i + a, 2 * j + b] = g[n, c, i, j]
    np.testing.assert_array_equal(got, ref)


def test_max_pool_grad_ties_go_to_every_tied_position(pool_fns):
    # Documented behaviour of PyTensor's Max gradient: eq(out, x) * g.
    x = np.array([[[[1.0, 1.0], [0.0, 1.0]]]], dtype="float32")
    g = np.array([[[[2.0]]]], dtype="float32")
    np.testing.assert_array_equal(pool_fns[1](x, g), [[[[2.0, 2.0], [0.0, 2.0]]]])


def test_max_pool_verify_grad():
    rng = np.random.default_rng(9)
    x = (rng.permutation(2 * 2 * 4 * 4).reshape(2, 2, 4, 4) * 0.1).astype("float64")
    verify_grad(graph_conv.max_pool_2x2, [x], rng=rng, mode=MODE, n_tests=1)


def test_max_pool_odd_shapes_raise(pool_fns):
    with pytest.raises(ValueError, match="even H and W"):
        graph_conv.max_pool_2x2(pt.tensor4(dtype="float32", shape=(None, None, 5, 4)))
    with pytest.raises(ValueError, match="even H and W"):
        graph_conv.max_pool_2x2(pt.tensor4(dtype="float32", shape=(None, None, 4, 3)))
    with pytest.raises(ValueError, match="even H and W"):
        pool_fns[0](np.zeros((1, 1, 3, 4), "float32"))  # runtime check


# ------------------------------------------------------------------- upsampling


def _ref_upsample(x, method):
    n_, c_, h, w = x.shape
    out = np.zeros((n_, c_, 2 * h, 2 * w), x.dtype)
    for i in range(h):
        for j in range(w):
            if method == "nearest":
                out[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = x[:, :, i : i + 1, j : j + 1]
            else:
                out[:, :, 2 * i, 2 * j] = x[:, :, i, j]
    return out


@pytest.fixture(scope="module")
def upsample_fns():
    fns = {}
    for method in graph_conv.UPSAMPLE_METHODS:
        x = pt.tensor4("x", dtype="float32")
        fns[method] = pytensor.function([x], graph_conv.upsample_2x(x, method), mode=MODE)
    return fns


@pytest.mark.parametrize("method", graph_conv.UPSAMPLE_METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 3, 4), (2, 2, 5, 5)])
def test_upsample_matches_loop(upsample_fns, method, shape):
    x = _rand(np.random.default_rng(10), shape)
    got = upsample_fns[method](x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _ref_upsample(x, method))


def test_perforated_2015_equals_zeros(upsample_fns):
    x = _rand(np.random.default_rng(11), (3, 4, 7, 7))
    np.testing.assert_array_equal(upsample_fns["perforated_2015"](x), upsample_fns["zeros"](x))


def test_perforated_2015_builds_matrix_at_run_time():
    # The 0/1 matrix must stay in the compiled graph (the 2015 cost), not be folded.
    x = pt.tensor4("x", dtype="float32", shape=(None, None, 7, 7))
    f = pytensor.function([x], graph_conv.upsample_2x(x, "perforated_2015"), mode=MODE)
    names = {type(node.op).__name__ for node in f.maker.fgraph.apply_nodes}
    assert "AdvancedIncSubtensor" in names or "AdvancedIncSubtensor1" in names, names


@pytest.mark.parametrize("method", graph_conv.UPSAMPLE_METHODS)
def test_upsample_verify_grad(method):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 2, 3, 2))
    verify_grad(lambda v: graph_conv.upsample_2x(v, method), [x], rng=rng, mode=MODE, n_tests=1)


def test_upsample_errors():
    x = pt.tensor4(dtype="float32")
    with pytest.raises(ValueError, match="perforated_2015, zeros, nearest"):
        graph_conv.upsample_2x(x, "bilinear")
    with pytest.raises(ValueError, match="4-d"):
        graph_conv.upsample_2x(pt.matrix(dtype="float32"), "zeros")


# ------------------------------------------------------- upsampling + convolution

UPCONV_SHAPES = [  # (x_shape, (O, kh, kw))
    ((2, 3, 4, 5), (2, 3, 3)),
    ((1, 2, 3, 3), (3, 5, 5)),
    ((2, 1, 1, 1), (2, 1, 1)),
    ((2, 2, 3, 4), (1, 3, 5)),  # rectangular kernel
]


def _upconv_fn(cache, construction, kh, kw):
    key = ("upconv", construction, kh, kw)
    if key not in cache:
        x = pt.tensor4("x", dtype="float32")
        w = pt.tensor4("W", dtype="float32", shape=(None, None, kh, kw))
        cache[key] = pytensor.function([x, w], graph_conv.upsample_conv2d(x, w, construction), mode=MODE)
    return cache[key]


@pytest.mark.parametrize("construction", ["fast", "im2col", "2015"])
@pytest.mark.parametrize("x_shape,okk", UPCONV_SHAPES)
def test_upsample_conv2d_matches_scipy(compiled, construction, x_shape, okk):
    rng = np.random.default_rng(20)
    x = _rand(rng, x_shape)
    o, kh, kw = okk
    w = _rand(rng, (o, x_shape[1], kh, kw))
    got = _upconv_fn(compiled, construction, kh, kw)(x, w)
    want = _ref_conv(_ref_upsample(x, "zeros"), w, "same")
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upsample_conv2d_fast_is_smaller_than_the_two_step_graph():
    # The fast graph's GEMM reads an im2col matrix of the *input* grid: (C*4, N*H*W) for 3x3.
    x = pt.tensor4("x", dtype="float32")
    w = pt.tensor4("W", dtype="float32", shape=(5, 3, 3, 3))
    f = pytensor.function([x, w], graph_conv.upsample_conv2d(x, w), mode=MODE)
    f(np.zeros((2, 3, 4, 4), np.float32), np.zeros((5, 3, 3, 3), np.float32))
    gemms = [n for n in f.maker.fgraph.apply_nodes if type(n.op).__name__ in ("Dot22", "Dot", "Gemm")]
    assert len(gemms) == 1
    (gemm,) = gemms
    assert gemm.outputs[0].type.shape[0] in (None, 20)  # 4 phases x 5 output channels


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 3)])
def test_upsample_conv2d_verify_grad(kh, kw):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 2, 3, 2))
    w = rng.standard_normal((3, 2, kh, kw))
    verify_grad(lambda a, b: graph_conv.upsample_conv2d(a, b, filter_shape=(kh, kw)), [x, w], rng=rng,
                mode=MODE, n_tests=1)


def test_public_names():
    assert graph_conv.CONV_CONSTRUCTIONS[:1] == ("fast",) and "2015" in graph_conv.CONV_CONSTRUCTIONS
    assert graph_conv.FAST_CONSTRUCTION in graph_conv.CONV_CONSTRUCTIONS
    assert set(graph_conv.UPSAMPLE_METHODS) == {"perforated_2015", "zeros", "nearest"}
