"""Two conv2d constructions measured and rejected (slower than im2col on C/VM and Numba),
kept here for ``bench_ops.py`` to re-measure. Same signature and values as
:func:`ift6266_vae.graph.conv.conv2d` for stride 1; results in ``docs/results.md``.

``taps``
    Sum over the ``kh*kw`` kernel taps of ``tensordot(W[:, :, a, b], window)``,
    one small-K GEMM per tap, no im2col buffer.
``shift``
    Flat-shift construction: the padded input is laid out channel-major and
    flattened to (C, (N+1)*Hp*Wp); a kernel tap then is a *constant offset*
    ``a*Wp + b`` into that buffer, so every GEMM operand is a strided view
    (unit inner stride) that BLAS reads without a copy.  Only the ``kw``
    column shifts are stacked (C*kw rows); each kernel row ``a`` is a GEMM on
    a view shifted by ``a*Wp``.  Outputs are computed on the padded grid and
    cropped.
"""

from __future__ import annotations

import pytensor.tensor as pt

from ift6266_vae.graph.conv import _kernel_size, _padding


def _pad(x, ph, pw, extra_axis1=0):
    A, B, H, W = x.shape
    z = pt.zeros((A, B + extra_axis1, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    return pt.set_subtensor(z[:, :B, ph : ph + H, pw : pw + W], x)


def conv2d_taps(x, W, border="valid"):
    kh, kw = _kernel_size(W, None)
    ph, pw = _padding(border, kh, kw)
    xp = _pad(x, ph, pw)  # (N, C, Hp, Wp)
    Ho, Wo = xp.shape[2] - (kh - 1), xp.shape[3] - (kw - 1)
    out = None
    for a in range(kh):
        for b in range(kw):
            term = pt.tensordot(W[:, :, a, b], xp[:, :, a : a + Ho, b : b + Wo], axes=[[1], [1]])
            out = term if out is None else out + term  # (O, N, Ho, Wo)
    return out.dimshuffle(1, 0, 2, 3)


def conv2d_shift(x, W, border="valid"):
    kh, kw = _kernel_size(W, None)
    ph, pw = _padding(border, kh, kw)
    # (C, N+1, Hp, Wp): channel-major, zero-padded, plus one all-zero image so the
    # largest shift (kh-1)*Wp + kw-1 < Hp*Wp stays inside the buffer.
    xp = _pad(x.dimshuffle(1, 0, 2, 3), ph, pw, extra_axis1=1)
    C, N1, Hp, Wp = xp.shape
    N = N1 - 1
    flat = xp.reshape((C, N1 * Hp * Wp))
    L = N * Hp * Wp
    Lq = L + (kh - 1) * Wp
    if kw == 1:
        rows = flat
    else:
        rows = pt.stack([flat[:, b : b + Lq] for b in range(kw)], axis=1).reshape((C * kw, Lq))
    O = W.shape[0]
    out = None
    for a in range(kh):
        term = pt.dot(W[:, :, a, :].reshape((O, C * kw)), rows[:, a * Wp : a * Wp + L])
        out = term if out is None else out + term  # (O, N*Hp*Wp)
    out = out.reshape((O, N, Hp, Wp))[:, :, : Hp - (kh - 1), : Wp - (kw - 1)]
    return out.dimshuffle(1, 0, 2, 3)


REJECTED = {"taps": conv2d_taps, "shift": conv2d_shift}
