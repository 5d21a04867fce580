"""Native 2-d convolution ops: one PyTensor ``Op`` per convolution, computed with numpy.

:func:`ift6266_vae.ops.conv2d` builds the convolution from PyTensor primitives
(padding, shifted slices, a stack, reshapes and one GEMM).  Every primitive
allocates and copies, and the copies around the GEMM cost more than the GEMM.
This module computes the same function as *one* op whose ``perform`` does the
padding, the im2col copy and the GEMM in numpy, with the data laid out so that
there is exactly one im2col copy and no copy of the GEMM operands:

* :class:`Conv2dOp` ``(border)``: ``out = conv2d(x, W, border)``, NCHW input,
  OIHW weights, stride 1, cross-correlation (the kernel is not flipped), borders
  'valid' / 'same' (odd kernels) / 'full', the same semantics as
  :func:`ift6266_vae.ops.conv2d`.
* its gradient wrt ``x`` is again a :class:`Conv2dOp`: the upstream gradient
  convolved with the flipped, in/out-transposed kernel using the complementary
  border ('valid' <-> 'full', 'same' -> 'same');
* its gradient wrt ``W`` is a :class:`Conv2dGradWeightOp` ``(border)``: the
  correlation of the padded input with the upstream gradient, one GEMM over the
  ``N*Hout*Wout`` axis.  That op is differentiable as well (its gradients are
  again :class:`Conv2dOp` s), so second derivatives work.

Layout of the numpy kernels (``perform``, used by the C/VM linker): ``x`` is
copied once, transposed and zero-padded, into a channel-major (C, N, Hp, Wp)
buffer; the ``kh*kw`` shifted windows are copied into a contiguous
(C, kh, kw, N, Hout, Wout) array which *is* the (C*kh*kw, N*Hout*Wout) im2col
matrix; one float32 GEMM with ``W.reshape(O, C*kh*kw)`` gives (O, N*Hout*Wout),
returned as a C-contiguous (N, O, Hout, Wout) array.  The weight gradient reuses
the same im2col matrix (rebuilt, ops do not share buffers) and one GEMM with the
(O, N*Hout*Wout) transposed upstream gradient.  Alternatives measured and
rejected (slower here): per-image batched ``matmul`` (N GEMMs with 196
columns), a ``sliding_window_view`` + one ``ascontiguousarray`` im2col,
channels-last im2col, and a sum of per-tap GEMMs.

Backends:

* C/VM: ``perform`` (Python + numpy, BLAS through numpy).
* Numba: ``numba_funcify`` is registered for both ops; the njit kernels do the
  im2col with explicit loops into a contiguous buffer and call ``np.dot`` (BLAS).
  Without it PyTensor's Numba linker would fall back to object mode around
  ``perform`` (with a warning).
* JAX: ``jax_funcify`` is registered (when ``pytensor.link.jax`` imports, which
  needs ``jax``) and calls ``jax.lax.conv_general_dilated``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.scalar import upcast
from pytensor.tensor.type import TensorType

__all__ = [
    "BORDERS",
    "Conv2dGradInputOp",
    "Conv2dGradWeightOp",
    "Conv2dOp",
    "conv2d_grad_input_np",
    "conv2d_grad_weight_np",
    "clear_scratch",
    "conv2d_native",
    "conv2d_np",
]

BORDERS = ("valid", "same", "full")
_COMPLEMENT = {"valid": "full", "full": "valid", "same": "same"}


# ----------------------------------------------------------------- shape helpers


def _check_border(border) -> str:
    if not isinstance(border, str) or border not in BORDERS:
        raise ValueError(f"unknown border {border!r}; valid: {', '.join(BORDERS)}")
    return border


def _pads(border: str, kh: int, kw: int) -> tuple[int, int]:
    """Zero padding (rows, columns) on each side of the input for ``border``."""
    from .ops import _padding

    return _padding(border, kh, kw)


def _out_len(border: str, n, k):
    """Output length along one axis (works on ints, None and symbolic scalars)."""
    if border == "same":
        return n
    if n is None or k is None:
        return None
    if border == "valid":
        return n - k + 1
    return n + k - 1


def _static_int(v) -> int | None:
    """Value of a symbolic integer scalar if it is a compile-time constant."""
    try:
        return int(pt.get_underlying_scalar_constant_value(v))
    except Exception:  # NotScalarConstantError and friends: not static
        return None


# ----------------------------------------------------------------- numpy kernels

_SCRATCH = threading.local()


def _scratch(role: str, shape, dtype) -> np.ndarray:
    """An uninitialised work array for ``role``, reusing this thread's previous buffer.

    One growing byte buffer per role and thread: the large im2col / padding
    buffers are not re-allocated (and their pages not re-faulted) on every call,
    which was measured to cut the im2col copy time by about 3x.  Returned arrays
    are views into that buffer, valid until the next call with the same role:
    never return them from an op.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    buf = bufs.get(role)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[role] = np.empty(max(nbytes, 64), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def clear_scratch() -> None:
    """Free this thread's work buffers (they are re-created on the next call)."""
    _SCRATCH.bufs = {}


def _padded(xt: np.ndarray, ph: int, pw: int, dtype) -> np.ndarray:
    """(C, N, H, W) ``xt`` zero-padded by (ph, pw), in the 'pad' scratch buffer."""
    C, N, H, Wd = xt.shape
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    xp = _scratch("pad", (C, N, Hp, Wp), dtype)
    if ph:
        xp[:, :, :ph] = 0
        xp[:, :, ph + H :] = 0
    if pw:
        xp[:, :, ph : ph + H, :pw] = 0
        xp[:, :, ph : ph + H, pw + Wd :] = 0
    xp[:, :, ph : ph + H, pw : pw + Wd] = xt
    return xp


def _im2col(x: np.ndarray, kh: int, kw: int, ph: int, pw: int, dtype) -> tuple[np.ndarray, int, int]:
    """im2col matrix (C*kh*kw, N*Ho*Wo) of NCHW ``x`` zero-padded by (ph, pw).

    Row ``(c*kh + a)*kw + b``, column ``(n*Ho + i)*Wo + j`` holds
    ``xpad[n, c, i + a, j + b]``.
    """
    N, C, H, Wd = x.shape
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    Ho, Wo = Hp - kh + 1, Wp - kw + 1
    if Ho <= 0 or Wo <= 0:
        raise ValueError(f"kernel {kh}x{kw} larger than the padded input {Hp}x{Wp}")
    xt = x.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    if kh == 1 and kw == 1:  # 1x1: no padding, the windows are the input itself
        cols = _scratch("cols", (C, N, Ho, Wo), dtype)
        cols[...] = xt
        return cols.reshape(C, N * Ho * Wo), Ho, Wo
    if ph or pw:
        xp = _padded(xt, ph, pw, dtype)
    else:
        xp = xt
    cols = _scratch("cols", (C, kh, kw, N, Ho, Wo), dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, a, b] = xp[:, :, a : a + Ho, b : b + Wo]
    return cols.reshape(C * kh * kw, N * Ho * Wo), Ho, Wo


def conv2d_np(x: np.ndarray, W: np.ndarray, border: str = "valid", dtype=None) -> np.ndarray:
    """Numpy reference/fast kernel of :class:`Conv2dOp`; returns a C-contiguous (N, O, Ho, Wo)."""
    dtype = np.dtype(dtype or np.result_type(x.dtype, W.dtype))
    N, C = x.shape[:2]
    O, C2, kh, kw = W.shape
    if C != C2:
        raise ValueError(f"channel mismatch: x has {C} channels, W expects {C2}")
    ph, pw = _pads(border, kh, kw)
    cols, Ho, Wo = _im2col(x, kh, kw, ph, pw, dtype)
    Wm = np.ascontiguousarray(W, dtype=dtype).reshape(O, C * kh * kw)
    out = np.dot(Wm, cols)  # (O, N*Ho*Wo)
    res = np.empty((N, O, Ho, Wo), dtype=dtype)
    res[...] = out.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3)
    return res


def conv2d_grad_weight_np(x: np.ndarray, gy: np.ndarray, kh: int, kw: int, border: str = "valid",
                          dtype=None) -> np.ndarray:
    """Gradient wrt ``W`` of ``conv2d(x, W, border)`` given the upstream gradient ``gy``.

    ``dW[o, c, a, b] = sum_{n, i, j} xpad[n, c, i + a, j + b] * gy[n, o, i, j]``.
    """
    dtype = np.dtype(dtype or np.result_type(x.dtype, gy.dtype))
    N, C = x.shape[:2]
    O = gy.shape[1]
    ph, pw = _pads(border, kh, kw)
    cols, Ho, Wo = _im2col(x, kh, kw, ph, pw, dtype)
    if gy.shape != (N, O, Ho, Wo):
        raise ValueError(f"output gradient shape {gy.shape} does not match the expected {(N, O, Ho, Wo)}")
    g = _scratch("gt", (O, N, Ho, Wo), dtype)
    g[...] = gy.transpose(1, 0, 2, 3)
    # cols @ g.T, not g @ cols.T: OpenBLAS was measured up to 10x slower on the latter.
    dWt = np.dot(cols, g.reshape(O, N * Ho * Wo).T)  # (C*kh*kw, O)
    dW = np.empty((O, C * kh * kw), dtype=dtype)
    dW[...] = dWt.T
    return dW.reshape(O, C, kh, kw)


def conv2d_grad_input_np(gy: np.ndarray, W: np.ndarray, border: str = "valid", dtype=None) -> np.ndarray:
    """Gradient wrt ``x`` of ``conv2d(x, W, border)`` given the upstream gradient ``gy`` (col2im).

    Equals ``conv2d(gy, W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), complementary border)``;
    computed as one GEMM ``W.reshape(O, C*kh*kw).T @ gy`` giving the im2col-shaped
    gradient, scatter-added back by ``kh*kw`` shifted window additions.
    """
    dtype = np.dtype(dtype or np.result_type(gy.dtype, W.dtype))
    N, O, Ho, Wo = gy.shape
    O2, C, kh, kw = W.shape
    if O != O2:
        raise ValueError(f"channel mismatch: gradient has {O} channels, W has {O2} outputs")
    ph, pw = _pads(border, kh, kw)
    Hp, Wp = Ho + kh - 1, Wo + kw - 1
    H, Wd = Hp - 2 * ph, Wp - 2 * pw
    if H <= 0 or Wd <= 0:
        raise ValueError(f"output gradient {Ho}x{Wo} too small for kernel {kh}x{kw} and border={border!r}")
    g = _scratch("gt", (O, N, Ho, Wo), dtype)
    g[...] = gy.transpose(1, 0, 2, 3)
    Wt = np.empty((C * kh * kw, O), dtype=dtype)
    Wt[...] = np.ascontiguousarray(W).reshape(O, C * kh * kw).T
    dcols = _scratch("cols", (C * kh * kw, N * Ho * Wo), dtype)
    np.dot(Wt, g.reshape(O, N * Ho * Wo), out=dcols)
    dcols = dcols.reshape(C, kh, kw, N, Ho, Wo)
    res = np.empty((N, C, H, Wd), dtype=dtype)
    rt = res.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    if kh == 1 and kw == 1:
        rt[...] = dcols[:, 0, 0]
        return res
    xp = _scratch("pad", (C, N, Hp, Wp), dtype)
    xp.fill(0)
    for a in range(kh):
        for b in range(kw):
            xp[:, :, a : a + Ho, b : b + Wo] += dcols[:, a, b]
    rt[...] = xp[:, :, ph : ph + H, pw : pw + Wd]
    return res


# ------------------------------------------------------------------------- ops


def _flip_transpose(W):
    """OIHW -> IOHW with both kernel axes reversed: the kernel of the input gradient."""
    return W[:, :, ::-1, ::-1].dimshuffle(1, 0, 2, 3)


def _kshape(W):
    """(kh, kw) of W as an int64 vector: a constant when W's static shape has it."""
    kh, kw = W.type.shape[2:]
    if kh is not None and kw is not None:
        return pt.as_tensor(np.array([kh, kw], dtype="int64"))
    return pt.cast(W.shape[2:], "int64")


def _cast(v, dtype):
    return v if v.dtype == dtype else pt.cast(v, dtype)


class Conv2dOp(Op):
    """``conv2d(x, W, border)``: NCHW x, OIHW W, stride 1, cross-correlation."""

    __props__ = ("border",)

    def __init__(self, border: str = "valid"):
        self.border = _check_border(border)

    def make_node(self, x, W):
        x = pt.as_tensor_variable(x)
        W = pt.as_tensor_variable(W)
        if x.ndim != 4 or W.ndim != 4:
            raise ValueError(f"Conv2dOp needs 4-d x and W, got ndim {x.ndim} and {W.ndim}")
        n, cx, h, w = x.type.shape
        o, cw, kh, kw = W.type.shape
        if cx is not None and cw is not None and cx != cw:
            raise ValueError(f"channel mismatch: x has {cx} channels, W expects {cw}")
        if self.border == "same" and ((kh is not None and kh % 2 == 0) or (kw is not None and kw % 2 == 0)):
            raise ValueError(f"border='same' needs an odd kernel size, got {kh}x{kw}")
        ho, wo = _out_len(self.border, h, kh), _out_len(self.border, w, kw)
        if (ho is not None and ho <= 0) or (wo is not None and wo <= 0):
            raise ValueError(f"kernel {kh}x{kw} larger than input {h}x{w} for border='valid'")
        dtype = upcast(x.dtype, W.dtype)
        out = TensorType(dtype, shape=(n, o, ho, wo))()
        return Apply(self, [x, W], [out])

    def perform(self, node, inputs, output_storage):
        x, W = inputs
        output_storage[0][0] = conv2d_np(x, W, self.border, node.outputs[0].dtype)

    def infer_shape(self, node, shapes):
        (n, _, h, w), (o, _, kh, kw) = shapes
        return [(n, o, _out_len(self.border, h, kh), _out_len(self.border, w, kw))]

    def pullback(self, inputs, outputs, cotangents):
        x, W = inputs
        (gy,) = cotangents
        gx = Conv2dGradInputOp(self.border)(gy, W)
        gW = Conv2dGradWeightOp(self.border)(x, gy, _kshape(W))
        return [_cast(gx, x.dtype), _cast(gW, W.dtype)]

    def pushforward(self, inputs, outputs, tangents):
        x, W = inputs
        tx, tW = (None if isinstance(t.type, DisconnectedType) else t for t in tangents)
        terms = []
        if tx is not None:
            terms.append(self(tx, W))
        if tW is not None:
            terms.append(self(x, tW))
        if not terms:
            return [DisconnectedType()()]
        out = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        return [_cast(out, outputs[0].dtype)]


class Conv2dGradWeightOp(Op):
    """Gradient wrt W of ``Conv2dOp(border)``: inputs ``(x, gy, kshape)``, output OIHW.

    ``kshape`` is the int vector ``(kh, kw)`` (needed because 'same' does not
    determine the kernel size from the shapes of ``x`` and ``gy``).
    """

    __props__ = ("border",)

    def __init__(self, border: str = "valid"):
        self.border = _check_border(border)

    def make_node(self, x, gy, kshape):
        x = pt.as_tensor_variable(x)
        gy = pt.as_tensor_variable(gy)
        kshape = pt.as_tensor_variable(kshape)
        if x.ndim != 4 or gy.ndim != 4:
            raise ValueError(f"Conv2dGradWeightOp needs 4-d x and gy, got ndim {x.ndim} and {gy.ndim}")
        if kshape.ndim != 1 or not kshape.dtype.startswith(("int", "uint")):
            raise TypeError("kshape must be an integer vector (kh, kw)")
        if kshape.type.shape[0] not in (None, 2):
            raise ValueError("kshape must have length 2")
        if kshape.type.shape[0] is None:
            kshape = pt.specify_shape(kshape, (2,))
        kh, kw = _static_int(kshape[0]), _static_int(kshape[1])
        if self.border == "same" and ((kh is not None and kh % 2 == 0) or (kw is not None and kw % 2 == 0)):
            raise ValueError(f"border='same' needs an odd kernel size, got {kh}x{kw}")
        dtype = upcast(x.dtype, gy.dtype)
        out = TensorType(dtype, shape=(gy.type.shape[1], x.type.shape[1], kh, kw))()
        return Apply(self, [x, gy, kshape], [out])

    def perform(self, node, inputs, output_storage):
        x, gy, kshape = inputs
        kh, kw = (int(k) for k in kshape)
        output_storage[0][0] = conv2d_grad_weight_np(x, gy, kh, kw, self.border, node.outputs[0].dtype)

    def infer_shape(self, node, shapes):
        x, gy, kshape = node.inputs
        return [(shapes[1][1], shapes[0][1], kshape[0], kshape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def pullback(self, inputs, outputs, cotangents):
        x, gy, kshape = inputs
        (G,) = cotangents  # (O, C, kh, kw)
        gx = Conv2dGradInputOp(self.border)(gy, G)
        ggy = Conv2dOp(self.border)(x, G)
        return [_cast(gx, x.dtype), _cast(ggy, gy.dtype), DisconnectedType()()]


class Conv2dGradInputOp(Op):
    """Gradient wrt x of ``Conv2dOp(border)``: inputs ``(gy, W)``, output NCHW.

    Mathematically ``Conv2dOp(complementary border)(gy, flip_transpose(W))``
    ('valid' <-> 'full', 'same' -> 'same'); ``perform`` uses col2im (one GEMM
    and ``kh*kw`` shifted additions), measured faster than the im2col of ``gy``.
    """

    __props__ = ("border",)

    def __init__(self, border: str = "valid"):
        self.border = _check_border(border)

    def make_node(self, gy, W):
        gy = pt.as_tensor_variable(gy)
        W = pt.as_tensor_variable(W)
        if gy.ndim != 4 or W.ndim != 4:
            raise ValueError(f"Conv2dGradInputOp needs 4-d gy and W, got ndim {gy.ndim} and {W.ndim}")
        n, og, ho, wo = gy.type.shape
        ow, c, kh, kw = W.type.shape
        if og is not None and ow is not None and og != ow:
            raise ValueError(f"channel mismatch: gradient has {og} channels, W has {ow} outputs")
        if self.border == "same" and ((kh is not None and kh % 2 == 0) or (kw is not None and kw % 2 == 0)):
            raise ValueError(f"border='same' needs an odd kernel size, got {kh}x{kw}")
        comp = _COMPLEMENT[self.border]
        out = TensorType(upcast(gy.dtype, W.dtype), shape=(n, c, _out_len(comp, ho, kh), _out_len(comp, wo, kw)))()
        return Apply(self, [gy, W], [out])

    def perform(self, node, inputs, output_storage):
        gy, W = inputs
        output_storage[0][0] = conv2d_grad_input_np(gy, W, self.border, node.outputs[0].dtype)

    def infer_shape(self, node, shapes):
        (n, _, ho, wo), (_, c, kh, kw) = shapes
        comp = _COMPLEMENT[self.border]
        return [(n, c, _out_len(comp, ho, kh), _out_len(comp, wo, kw))]

    def pullback(self, inputs, outputs, cotangents):
        gy, W = inputs
        (Gx,) = cotangents  # (N, C, H, W)
        ggy = Conv2dOp(self.border)(Gx, W)
        gW = Conv2dGradWeightOp(self.border)(Gx, gy, _kshape(W))
        return [_cast(ggy, gy.dtype), _cast(gW, W.dtype)]


def conv2d_native(x, W, border: str = "valid"):
    """2-d cross-correlation of NCHW ``x`` with OIHW ``W``, stride 1, as one :class:`Conv2dOp`.

    Same semantics as :func:`ift6266_vae.ops.conv2d` (``border`` in 'valid',
    'same' (odd kernels), 'full'), but the kernel size need not be static.
    """
    _check_border(border)
    x = pt.as_tensor_variable(x)
    W = pt.as_tensor_variable(W)
    if x.ndim != 4:
        raise ValueError(f"x must be a 4-d tensor, got ndim={x.ndim}")
    if W.ndim != 4:
        raise ValueError(f"W must be a 4-d tensor, got ndim={W.ndim}")
    return Conv2dOp(border)(x, W)


# ---------------------------------------------------------------- numba backend


def _register_numba() -> None:
    import numba
    from pytensor.link.numba.dispatch import basic as numba_basic

    @numba_basic.numba_njit(inline="always")
    def _fill_cols(x, cols, kh, kw, ph, pw, Ho, Wo):
        # cols: (C*kh*kw, N*Ho*Wo), pre-zeroed; row (c*kh+a)*kw+b, col (n*Ho+i)*Wo+j
        N, C, H, Wd = x.shape
        for c in range(C):
            for a in range(kh):
                i0 = max(0, ph - a)
                i1 = min(Ho, H + ph - a)
                for b in range(kw):
                    j0 = max(0, pw - b)
                    j1 = min(Wo, Wd + pw - b)
                    row = (c * kh + a) * kw + b
                    for n in range(N):
                        base = n * Ho * Wo
                        for i in range(i0, i1):
                            src = i + a - ph
                            off = base + i * Wo
                            for j in range(j0, j1):
                                cols[row, off + j] = x[n, c, src, j + b - pw]

    def _pads_nb(border):
        # returns a jitted (kh, kw) -> (ph, pw) for a fixed border
        if border == "valid":

            @numba_basic.numba_njit(inline="always")
            def pads(kh, kw):
                return 0, 0

        elif border == "full":

            @numba_basic.numba_njit(inline="always")
            def pads(kh, kw):
                return kh - 1, kw - 1

        else:

            @numba_basic.numba_njit(inline="always")
            def pads(kh, kw):
                if kh % 2 == 0 or kw % 2 == 0:
                    raise ValueError("border='same' needs an odd kernel size")
                return (kh - 1) // 2, (kw - 1) // 2

        return pads

    @numba_basic.register_funcify_default_op_cache_key(Conv2dOp)
    def numba_funcify_Conv2dOp(op, node, **kwargs):
        dtype = np.dtype(node.outputs[0].dtype)
        pads = _pads_nb(op.border)

        @numba_basic.numba_njit
        def conv2d_native_nb(x, W):
            N, C, H, Wd = x.shape
            O, C2, kh, kw = W.shape
            if C != C2:
                raise ValueError("channel mismatch between x and W")
            ph, pw = pads(kh, kw)
            Ho = H + 2 * ph - kh + 1
            Wo = Wd + 2 * pw - kw + 1
            if Ho <= 0 or Wo <= 0:
                raise ValueError("kernel larger than the padded input")
            K = C * kh * kw
            L = N * Ho * Wo
            cols = np.zeros((K, L), dtype=dtype)
            _fill_cols(x, cols, kh, kw, ph, pw, Ho, Wo)
            Wm = np.empty((O, K), dtype=dtype)
            for o in range(O):
                for c in range(C):
                    for a in range(kh):
                        for b in range(kw):
                            Wm[o, (c * kh + a) * kw + b] = W[o, c, a, b]
            out = np.dot(Wm, cols)  # (O, N*Ho*Wo)
            res = np.empty((N, O, Ho, Wo), dtype=dtype)
            HW = Ho * Wo
            for n in range(N):
                for o in range(O):
                    src = out[o, n * HW : (n + 1) * HW]
                    dst = res[n, o].reshape(HW)
                    dst[:] = src
            return res

        return conv2d_native_nb

    @numba_basic.register_funcify_default_op_cache_key(Conv2dGradWeightOp)
    def numba_funcify_Conv2dGradWeightOp(op, node, **kwargs):
        dtype = np.dtype(node.outputs[0].dtype)
        pads = _pads_nb(op.border)

        @numba_basic.numba_njit
        def conv2d_grad_weight_nb(x, gy, kshape):
            N, C, H, Wd = x.shape
            O = gy.shape[1]
            kh = kshape[0]
            kw = kshape[1]
            ph, pw = pads(kh, kw)
            Ho = H + 2 * ph - kh + 1
            Wo = Wd + 2 * pw - kw + 1
            if gy.shape[0] != N or gy.shape[2] != Ho or gy.shape[3] != Wo:
                raise ValueError("output gradient shape does not match the convolution")
            K = C * kh * kw
            L = N * Ho * Wo
            HW = Ho * Wo
            cols = np.zeros((K, L), dtype=dtype)
            _fill_cols(x, cols, kh, kw, ph, pw, Ho, Wo)
            g = np.empty((O, L), dtype=dtype)
            for o in range(O):
                for n in range(N):
                    base = n * HW
                    for i in range(Ho):
                        for j in range(Wo):
                            g[o, base + i * Wo + j] = gy[n, o, i, j]
            dW = np.dot(g, cols.T)  # (O, K)
            return dW.reshape((O, C, kh, kw))

        return conv2d_grad_weight_nb

    @numba_basic.register_funcify_default_op_cache_key(Conv2dGradInputOp)
    def numba_funcify_Conv2dGradInputOp(op, node, **kwargs):
        dtype = np.dtype(node.outputs[0].dtype)
        pads = _pads_nb(op.border)

        @numba_basic.numba_njit
        def conv2d_grad_input_nb(gy, W):
            N, O, Ho, Wo = gy.shape
            O2, C, kh, kw = W.shape
            if O != O2:
                raise ValueError("channel mismatch between the output gradient and W")
            ph, pw = pads(kh, kw)
            H = Ho + kh - 1 - 2 * ph
            Wd = Wo + kw - 1 - 2 * pw
            if H <= 0 or Wd <= 0:
                raise ValueError("output gradient too small for the kernel")
            K = C * kh * kw
            HW = Ho * Wo
            L = N * HW
            Wt = np.empty((K, O), dtype=dtype)
            for o in range(O):
                for c in range(C):
                    for a in range(kh):
                        for b in range(kw):
                            Wt[(c * kh + a) * kw + b, o] = W[o, c, a, b]
            g = np.empty((O, L), dtype=dtype)
            for o in range(O):
                for n in range(N):
                    base = n * HW
                    for i in range(Ho):
                        for j in range(Wo):
                            g[o, base + i * Wo + j] = gy[n, o, i, j]
            dcols = np.dot(Wt, g)  # (K, N*Ho*Wo)
            res = np.zeros((N, C, H, Wd), dtype=dtype)
            for n in range(N):
                base = n * HW
                for c in range(C):
                    for a in range(kh):
                        i0 = max(0, ph - a)
                        i1 = min(Ho, H + ph - a)
                        for b in range(kw):
                            j0 = max(0, pw - b)
                            j1 = min(Wo, Wd + pw - b)
                            row = (c * kh + a) * kw + b
                            for i in range(i0, i1):
                                dst = i + a - ph
                                off = base + i * Wo
                                for j in range(j0, j1):
                                    res[n, c, dst, j + b - pw] += dcols[row, off + j]
            return res

        return conv2d_grad_input_nb

    del numba  # only imported to fail early when numba is missing


# ------------------------------------------------------------------ JAX backend


def _jax_padding(border: str, kh: int, kw: int):
    ph, pw = _pads(border, kh, kw)
    return ((ph, ph), (pw, pw))


def _register_jax() -> None:
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    dn = ("NCHW", "OIHW", "NCHW")

    @jax_funcify.register(Conv2dOp)
    def jax_funcify_Conv2dOp(op, node=None, **kwargs):
        border = op.border
        dtype = node.outputs[0].dtype if node is not None else None

        def conv2d_native_jax(x, W):
            if dtype is not None:
                x = x.astype(dtype)
                W = W.astype(dtype)
            return jax.lax.conv_general_dilated(
                x, W, window_strides=(1, 1), padding=_jax_padding(border, W.shape[2], W.shape[3]),
                dimension_numbers=dn)

        return conv2d_native_jax

    @jax_funcify.register(Conv2dGradInputOp)
    def jax_funcify_Conv2dGradInputOp(op, node=None, **kwargs):
        comp = _COMPLEMENT[op.border]
        dtype = node.outputs[0].dtype if node is not None else None

        def conv2d_grad_input_jax(gy, W):
            if dtype is not None:
                gy = gy.astype(dtype)
                W = W.astype(dtype)
            Wf = W[:, :, ::-1, ::-1]  # (O, C, kh, kw) read as "IOHW": no transpose needed
            return jax.lax.conv_general_dilated(
                gy, Wf, window_strides=(1, 1), padding=_jax_padding(comp, W.shape[2], W.shape[3]),
                dimension_numbers=("NCHW", "IOHW", "NCHW"))

        return conv2d_grad_input_jax

    @jax_funcify.register(Conv2dGradWeightOp)
    def jax_funcify_Conv2dGradWeightOp(op, node=None, **kwargs):
        border = op.border
        dtype = node.outputs[0].dtype if node is not None else None
        static_k = None
        if node is not None:
            ks = node.outputs[0].type.shape[2:]
            if ks[0] is not None and ks[1] is not None:
                static_k = (int(ks[0]), int(ks[1]))
            elif isinstance(node.inputs[2], Constant):  # kshape folded to a constant by the rewrites
                static_k = tuple(int(k) for k in node.inputs[2].data)

        def conv2d_grad_weight_jax(x, gy, kshape):
            if static_k is not None:
                kh, kw = static_k
            elif border == "valid":  # shapes are concrete under jit
                kh, kw = x.shape[2] - gy.shape[2] + 1, x.shape[3] - gy.shape[3] + 1
            elif border == "full":
                kh, kw = gy.shape[2] - x.shape[2] + 1, gy.shape[3] - x.shape[3] + 1
            else:
                raise NotImplementedError(
                    "JAX: the weight gradient of a 'same' Conv2dOp needs a static kernel size "
                    "(give W a static shape)")
            if dtype is not None:
                x = x.astype(dtype)
                gy = gy.astype(dtype)
            # dW[o, c, a, b] = sum_{n,i,j} xpad[n, c, i+a, j+b] gy[n, o, i, j]:
            # a conv whose batch axis is x's channel axis and whose contracted feature
            # axis is the sample axis n (lhs "CNHW"), with gy as the kernel (n = I,
            # o = O: "IOHW"); the output array (O, C, kh, kw) is spec "CNHW".
            return jax.lax.conv_general_dilated(
                x, gy, window_strides=(1, 1), padding=_jax_padding(border, kh, kw),
                dimension_numbers=("CNHW", "IOHW", "CNHW"))

        return conv2d_grad_weight_jax


try:
    _register_numba()
except ImportError:  # numba missing: the Numba linker is unavailable anyway
    pass

try:
    _register_jax()
except ImportError:  # jax missing: the JAX linker is unavailable anyway
    pass
