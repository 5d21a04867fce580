"""Convolution, pooling and upsampling built from PyTensor primitives.

PyTensor 3.x no longer ships Theano's ``nnet.conv2d`` / ``pool_2d``, so the
layers of the 2015 model are rebuilt here from slicing, joining, reshaping and
matrix products.  Every op is an ordinary PyTensor graph: gradients come from
``pytensor.grad`` and every backend (C/VM, Numba) can compile it.

Conventions
-----------
* Tensors are NCHW (batch, channels, rows, columns); filters are OIHW
  (out_channels, in_channels, kernel_rows, kernel_cols).
* :func:`conv2d` is a **cross-correlation**, exactly like
  ``torch.nn.functional.conv2d`` and ``scipy.signal.correlate2d``; the kernel is
  *not* flipped::

      out[n, o, i, j] = sum_{c, a, b} xpad[n, c, i + a, j + b] * W[o, c, a, b]

  where ``xpad`` is ``x`` zero-padded by 0 ('valid'), ``(k - 1) // 2`` ('same',
  odd kernels only) or ``k - 1`` ('full') on each side.  Stride is 1.
* Constants are created in the input's dtype, so a float32 graph stays float32
  whatever ``pytensor.config.floatX`` is.

Convolution constructions
-------------------------
All constructions compute the same function (equal up to float32 summation
order); they differ only in the graph they build, which matters for speed
(measurements: ``docs/results.md``, benchmark: ``benchmarks/bench_ops.py``).

``"im2col"``
    Channel-major im2col: ``x`` is transposed to (C, N, H, W) and zero-padded,
    the ``kh*kw`` shifted windows are stacked into one (C*kh*kw, N*Ho*Wo)
    matrix (a contiguous reshape of the stack, no extra copy) which feeds a
    single GEMM with ``W.reshape(O, C*kh*kw)``; the (O, N, Ho, Wo) result is
    returned as a transposed view.  Measured the fastest on C/VM and Numba.
``"fast"``
    Alias of the fastest construction (:data:`FAST_CONSTRUCTION`); for a
    convolution that follows zero-insertion upsampling, :func:`upsample_conv2d`
    computes the pair by its sub-pixel decomposition.
``"2015"``
    The 2015 code's 'same' convolution: a 'full' convolution (computed with
    the fast construction) cropped to its centre.  It does ``(H+k-1)^2 / H^2``
    times the work of a direct 'same' convolution (1.3x for 3x3 on 14x14,
    2.5x for 5x5 on 7x7).  For 'valid' and 'full' it is identical to ``"fast"``.

Pooling and upsampling
----------------------
:func:`max_pool_2x2` reshapes to (N, C, H/2, 2, W/2, 2) and takes the max over
the two size-2 axes.  Its gradient is PyTensor's ``Max`` gradient,
``eq(out, x) * g``: the upstream gradient goes to the arg-max of each 2x2 block;
on ties *every* tied position receives the full upstream gradient (so the
gradient of a tied block sums to a multiple of ``g``).

:func:`upsample_2x` offers three methods, see its docstring.  ``"zeros"`` and
``"perforated_2015"`` produce the same values; ``"perforated_2015"`` deliberately
keeps the 2015 construction (a dense (H*W, 4*H*W) 0/1 matrix rebuilt on every
call and a GEMM), which costs O(N*C*(H*W)^2) instead of O(N*C*H*W).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytensor.tensor as pt
from pytensor.raise_op import CheckAndRaise

log = logging.getLogger(__name__)

__all__ = [
    "BORDERS",
    "CONV_CONSTRUCTIONS",
    "FAST_CONSTRUCTION",
    "UPSAMPLE_METHODS",
    "conv2d",
    "conv2d_flops",
    "conv2d_output_shape",
    "max_pool_2x2",
    "upsample_2x",
    "upsample_conv2d",
]

BORDERS = ("valid", "same", "full")
#: Name of the construction that ``construction="fast"`` resolves to.
FAST_CONSTRUCTION = "im2col"
CONV_CONSTRUCTIONS = ("fast", "im2col", "2015")
UPSAMPLE_METHODS = ("perforated_2015", "zeros", "nearest")


# --------------------------------------------------------------------------- helpers


def _check_choice(value, choices: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
    return value


def _as_4d(v, name: str):
    v = pt.as_tensor_variable(v)
    if v.ndim != 4:
        raise ValueError(f"{name} must be a 4-d tensor, got ndim={v.ndim}")
    return v


def _static_dims(v, axes: Sequence[int]) -> tuple[int | None, ...]:
    """Static sizes of ``v`` along ``axes`` (None where unknown).

    Looks at the type's static shape, then at the value of a shared variable or
    constant.
    """
    dims = [v.type.shape[a] for a in axes]
    if any(d is None for d in dims):
        value = None
        if isinstance(v, pt.TensorConstant):
            value = v.data
        elif hasattr(v, "get_value"):
            value = v.get_value(borrow=True)
        if value is not None:
            dims = [d if d is not None else int(value.shape[a]) for d, a in zip(dims, axes)]
    return tuple(None if d is None else int(d) for d in dims)


def _kernel_size(W, filter_shape) -> tuple[int, int]:
    if filter_shape is not None:
        if len(filter_shape) not in (2, 4):
            raise ValueError("filter_shape must be (kh, kw) or (O, C, kh, kw)")
        kh, kw = (int(s) for s in filter_shape[-2:])
        static = _static_dims(W, (2, 3))
        if any(s is not None and s != k for s, k in zip(static, (kh, kw))):
            raise ValueError(f"filter_shape {tuple(filter_shape)} does not match W's kernel size {static}")
        return kh, kw
    kh, kw = _static_dims(W, (2, 3))
    if kh is None or kw is None:
        raise ValueError(
            "conv2d needs the kernel size at graph-build time: give W a static shape "
            "(e.g. pt.tensor4(shape=(None, None, 3, 3))), use a shared variable or "
            "constant, or pass filter_shape=(kh, kw)"
        )
    return kh, kw


def _padding(border: str, kh: int, kw: int) -> tuple[int, int]:
    if border == "valid":
        return 0, 0
    if border == "full":
        return kh - 1, kw - 1
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"border='same' needs an odd kernel size, got {kh}x{kw}")
    return (kh - 1) // 2, (kw - 1) // 2


def _zero_pad_last2(x, ph: int, pw: int):
    """Zero-pad the two last axes of a 4-d tensor by (ph, pw) on both sides."""
    if ph == 0 and pw == 0:
        return x
    A, B, H, W = x.shape
    z = pt.zeros((A, B, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    return pt.set_subtensor(z[:, :, ph : ph + H, pw : pw + W], x)


def conv2d_output_shape(x_shape, w_shape, border: str = "valid") -> tuple[int, int, int, int]:
    """Output shape (N, O, Hout, Wout) of :func:`conv2d` for concrete shapes."""
    _check_choice(border, BORDERS, "border")
    n, c, h, w = (int(s) for s in x_shape)
    o, c2, kh, kw = (int(s) for s in w_shape)
    if c != c2:
        raise ValueError(f"channel mismatch: x has {c} channels, W expects {c2}")
    if border == "valid":
        ho, wo = h - kh + 1, w - kw + 1
    elif border == "full":
        ho, wo = h + kh - 1, w + kw - 1
    else:
        _padding(border, kh, kw)
        ho, wo = h, w
    if ho <= 0 or wo <= 0:
        raise ValueError(f"kernel {kh}x{kw} larger than input {h}x{w} for border='valid'")
    return n, o, ho, wo


def conv2d_flops(x_shape, w_shape, border: str = "valid") -> int:
    """Analytic FLOPs of one forward :func:`conv2d`: ``2*N*O*Hout*Wout*C*kh*kw``.

    Counts a multiply-add as 2 FLOPs, over output positions only (the padding
    zeros are counted as in a direct convolution; the extra work of the
    ``"2015"`` construction is not).
    """
    n, o, ho, wo = conv2d_output_shape(x_shape, w_shape, border)
    _, c, kh, kw = (int(s) for s in w_shape)
    return 2 * n * o * ho * wo * c * kh * kw


# ------------------------------------------------------------------ constructions


def _im2col(xp, offsets, Ho, Wo):
    """Channel-major im2col of a padded (C, N, Hp, Wp) tensor: the windows
    ``xp[:, :, a:a+Ho, b:b+Wo]`` for each ``(a, b)`` in ``offsets``, stacked into one
    (C*len(offsets), N*Ho*Wo) matrix (row index ``c*len(offsets) + k``)."""
    C, N = xp.shape[0], xp.shape[1]
    windows = [xp[:, :, a : a + Ho, b : b + Wo] for a, b in offsets]
    cols = windows[0] if len(windows) == 1 else pt.stack(windows, axis=1)  # (C, K, N, Ho, Wo)
    return cols.reshape((C * len(offsets), N * Ho * Wo))


def _conv_im2col(x, W, kh, kw, ph, pw):
    xp = _zero_pad_last2(x.dimshuffle(1, 0, 2, 3), ph, pw)  # (C, N, Hp, Wp)
    C, N, Hp, Wp = xp.shape
    Ho, Wo = Hp - (kh - 1), Wp - (kw - 1)
    cols = _im2col(xp, [(a, b) for a in range(kh) for b in range(kw)], Ho, Wo)
    O = W.shape[0]
    out = pt.dot(W.reshape((O, C * kh * kw)), cols)  # (O, N*Ho*Wo)
    return out.reshape((O, N, Ho, Wo)).dimshuffle(1, 0, 2, 3)


_BUILDERS = {"im2col": _conv_im2col}


def conv2d(x, W, border: str = "valid", construction: str = "fast", filter_shape=None):
    """2-d cross-correlation of NCHW ``x`` with OIHW ``W``, stride 1.

    Parameters
    ----------
    x : 4-d tensor (N, C, H, W)
    W : 4-d tensor (O, C, kh, kw).  The kernel size must be known when the graph
        is built: from W's static shape, from a shared variable's / constant's
        value at build time (``set_value`` with another kernel size later
        would not rebuild the graph), or from ``filter_shape``.
    border : 'valid' (H-kh+1), 'same' (H; odd kernels) or 'full' (H+kh-1).
    construction : one of :data:`CONV_CONSTRUCTIONS` (see the module docstring);
        all give the same values.
    filter_shape : optional (kh, kw) or (O, C, kh, kw).

    Like ``torch.nn.functional.conv2d`` / ``scipy.signal.correlate2d`` the kernel
    is not flipped.
    """
    _check_choice(border, BORDERS, "border")
    _check_choice(construction, CONV_CONSTRUCTIONS, "conv2d construction")
    x = _as_4d(x, "x")
    W = _as_4d(W, "W")
    kh, kw = _kernel_size(W, filter_shape)
    (cx,) = _static_dims(x, (1,))
    (cw,) = _static_dims(W, (1,))
    if cx is not None and cw is not None and cx != cw:
        raise ValueError(f"channel mismatch: x has {cx} channels, W expects {cw}")
    if construction == "fast":
        construction = FAST_CONSTRUCTION
    if construction == "2015":
        if border != "same":
            return _BUILDERS[FAST_CONSTRUCTION](x, W, kh, kw, *_padding(border, kh, kw))
        ph, pw = _padding("same", kh, kw)
        full = _BUILDERS[FAST_CONSTRUCTION](x, W, kh, kw, kh - 1, kw - 1)
        return full[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
    return _BUILDERS[construction](x, W, kh, kw, *_padding(border, kh, kw))


# ------------------------------------------------------------------------ pooling


def max_pool_2x2(x):
    """2x2 max pooling, stride 2, of an NCHW tensor with even H and W.

    Raises ``ValueError`` at graph-build time if a static H or W is odd, and at
    run time (``CheckAndRaise``) if the runtime H or W is odd.  Gradient: the
    upstream gradient goes to the position of each block's maximum; tied
    maxima each receive it in full (PyTensor's ``Max`` gradient).
    """
    x = _as_4d(x, "x")
    h, w = x.type.shape[2], x.type.shape[3]
    if (h is not None and h % 2) or (w is not None and w % 2):
        raise ValueError(f"max_pool_2x2 needs even H and W, got H={h}, W={w}")
    N, C, H, W = x.shape
    if h is None or w is None:
        x = CheckAndRaise(ValueError, "max_pool_2x2 needs even H and W")(
            x, pt.eq(H % 2, 0), pt.eq(W % 2, 0)
        )
    return x.reshape((N, C, H // 2, 2, W // 2, 2)).max(axis=(3, 5))


# --------------------------------------------------------------------- upsampling


def _perforated_matrix(h, w, dtype):
    """The 2015 (h*w, 4*h*w) 0/1 matrix: row i*w+j has a 1 at column (2i)*(2w)+2j.

    Built symbolically (Alloc of zeros + AdvancedIncSubtensor) so it is
    recomputed on every call of the compiled function, as in 2015.
    """
    P = pt.zeros((h * w, 4 * h * w), dtype=dtype)
    r = pt.arange(h * w)
    cols = (2 * (r // w)) * (2 * w) + 2 * (r % w)
    return pt.set_subtensor(P[r, cols], np.asarray(1, dtype=dtype))


def upsample_2x(x, method: str = "zeros"):
    """2x spatial upsampling of an NCHW tensor: (N, C, H, W) -> (N, C, 2H, 2W).

    Methods (:data:`UPSAMPLE_METHODS`):

    ``"perforated_2015"``
        The 2015 construction, kept on purpose: a dense (H*W, 4*H*W) 0/1 matrix
        ``P`` with ``P[i*W + j, (2i)*(2W) + 2j] = 1`` is built by ``set_subtensor``
        into a zeros matrix on every call, and the output is
        ``dot(x.reshape(N*C, H*W), P).reshape(N, C, 2H, 2W)``.
    ``"zeros"``
        Same values (each input value at the top-left of its 2x2 block, zeros
        elsewhere) via ``set_subtensor(zeros[:, :, ::2, ::2], x)``.
    ``"nearest"``
        Nearest neighbour: each value fills its whole 2x2 block.
    """
    _check_choice(method, UPSAMPLE_METHODS, "upsample method")
    x = _as_4d(x, "x")
    N, C, H, W = x.shape
    if method == "perforated_2015":
        P = _perforated_matrix(H, W, x.dtype)
        return pt.dot(x.reshape((N * C, H * W)), P).reshape((N, C, 2 * H, 2 * W))
    if method == "zeros":
        z = pt.zeros((N, C, 2 * H, 2 * W), dtype=x.dtype)
        return pt.set_subtensor(z[:, :, ::2, ::2], x)
    # nearest
    big = pt.broadcast_to(x.dimshuffle(0, 1, 2, "x", 3, "x"), (N, C, H, 2, W, 2))
    return big.reshape((N, C, 2 * H, 2 * W))


# ------------------------------------------------ upsampling followed by a convolution


def _subpixel_taps(k: int, p: int):
    """For a 'same' k-tap kernel applied after 2x zero insertion: the input offsets
    ``d`` that output phase ``r`` (0 = even, 1 = odd positions) reads, with the kernel
    tap each one uses: ``{r: {d: a}}`` where ``a = 2*d - r + p``."""
    taps = {0: {}, 1: {}}
    for r in (0, 1):
        for a in range(k):
            if (r + a - p) % 2 == 0:
                taps[r][(r + a - p) // 2] = a
    return taps


def upsample_conv2d(x, W, construction: str = "fast", filter_shape=None):
    """``conv2d(upsample_2x(x, "zeros"), W, border="same")`` without the zeros.

    Zero insertion puts ``x[i, j]`` at ``(2i, 2j)`` of a 2x larger grid and zeros
    elsewhere, so a 'same' convolution of it reads, for each of the four output
    phases ``(2i + r, 2j + s)``, only the kernel taps that land on even positions
    (for 3x3: 1, 2, 2 and 4 taps): a transposed (fractionally strided) convolution.
    With ``construction="fast"`` this is computed on the small grid ("sub-pixel"
    decomposition): one channel-major im2col of ``x`` over the input offsets the
    phases use (2x2 for a 3x3 kernel), one GEMM with a (4*O, C*offsets) weight
    matrix holding each phase's taps (zeros where a phase does not read an offset),
    and an interleave of the four phases.  For 3x3 kernels that is 16/9 x 1/4 = 0.44x
    the multiply-adds of the dense convolution and a 4x smaller im2col matrix.  Same
    values (up to float32 summation order) as the two-step graph, which any other
    ``construction`` builds (``"2015"``, ``"im2col"``, ...).
    """
    _check_choice(construction, CONV_CONSTRUCTIONS, "conv2d construction")
    x = _as_4d(x, "x")
    W = _as_4d(W, "W")
    if construction != "fast":
        return conv2d(upsample_2x(x, "zeros"), W, border="same", construction=construction,
                      filter_shape=filter_shape)
    kh, kw = _kernel_size(W, filter_shape)
    ph, pw = _padding("same", kh, kw)
    rows, cols_ = _subpixel_taps(kh, ph), _subpixel_taps(kw, pw)
    dr = sorted(set(rows[0]) | set(rows[1]))
    dc = sorted(set(cols_[0]) | set(cols_[1]))
    N, C, H, Wd = x.shape
    O = W.shape[0]
    # pad so that every offset d in [dr[0], dr[-1]] stays inside: xp[i - dr[0] + d] = x[i + d]
    top, bottom, left, right = -min(dr[0], 0), max(dr[-1], 0), -min(dc[0], 0), max(dc[-1], 0)
    xc = x.dimshuffle(1, 0, 2, 3)  # (C, N, H, W)
    if top or bottom or left or right:
        z = pt.zeros((C, N, H + top + bottom, Wd + left + right), dtype=x.dtype)
        xc = pt.set_subtensor(z[:, :, top : top + H, left : left + Wd], xc)
    offsets = [(d + top, e + left) for d in dr for e in dc]
    cols = _im2col(xc, offsets, H, Wd)  # (C * n_off, N*H*W)
    zero = pt.zeros((O, C), dtype=W.dtype)
    phases = []
    for r in (0, 1):
        for s in (0, 1):
            blocks = [W[:, :, rows[r][d], cols_[s][e]] if d in rows[r] and e in cols_[s] else zero
                      for d in dr for e in dc]
            phases.append(pt.stack(blocks, axis=0))  # (n_off, O, C)
    Wbig = pt.stack(phases, axis=0).dimshuffle(0, 2, 3, 1).reshape((4 * O, C * len(offsets)))
    out = pt.dot(Wbig, cols)  # (4*O, N*H*W), rows (r, s, o)
    out = out.reshape((2, 2, O, N, H, Wd)).dimshuffle(3, 2, 4, 0, 5, 1)  # (N, O, H, r, W, s)
    return out.reshape((N, O, 2 * H, 2 * Wd))
