"""Graph rewrites the package adds to PyTensor's C/VM mode.

``fast_sums``
    PyTensor's C implementation of a sum over some axes (``CAReduce``) is a generic,
    single-threaded loop: on this machine it reduces a (128, 64, 28, 28) float32 tensor
    over (0, 2, 3) in ~17 ms, where numpy's own reduction (SIMD, pairwise summation)
    takes ~1 ms. Batch normalization of conv layers is made of such sums (the two
    moments forward; the gradients of the scale, shift and bias backward), so in the
    conv VAE's C/VM step they cost more than the convolutions' GEMMs. This rewrite
    replaces a float sum whose reduced axes are a leading block, a trailing block, or
    both (``(0,)`` of a dense batch, ``(0, 2, 3)`` of NCHW, ...) by a :class:`NumpySum`
    node that calls numpy's ``sum`` with a float32 accumulator (pairwise summation,
    accurate to ~1e-6 relative at BN sizes, tested) instead of the ``Sum``'s float64
    one (conv VAE train step: 449 vs 612 ms; ``docs/results.md``). Only the ``c``
    backend uses it: Numba's own loops already reduce at numpy's speed.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.tensor.math import Sum

__all__ = ["FAST_SUMS", "NumpySum", "local_fast_sum", "register"]

#: Tag that switches the rewrite on (``mode.including(FAST_SUMS)``).
FAST_SUMS = "ift6266_fast_sums"


def _blocks(axes: tuple[int, ...], ndim: int) -> tuple[int, int] | None:
    """(n_leading, n_trailing) reduced axes if ``axes`` is a leading block plus a
    trailing block (either may be empty) and at least one axis is kept; else None."""
    axes = sorted(set(axes))
    lead = 0
    while lead < len(axes) and axes[lead] == lead:
        lead += 1
    trail = axes[lead:]
    if trail != list(range(ndim - len(trail), ndim)):
        return None
    if lead + len(trail) >= ndim or not axes:
        return None
    return lead, len(trail)


class NumpySum(Op):
    """Sum of ``x`` over its ``lead`` leading and ``trail`` trailing axes, by numpy.

    One node per replaced ``Sum``. ``perform`` is Python calling numpy; the profiler
    lists these nodes as Python (not C) nodes, which they are. It is introduced by a
    compile-time rewrite, after gradients are taken, so it needs no gradient.
    """

    __props__ = ("lead", "trail")

    def __init__(self, lead: int, trail: int):
        self.lead, self.trail = int(lead), int(trail)

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        kept = x.type.shape[self.lead : x.type.ndim - self.trail]
        return Apply(self, [x], [pt.tensor(dtype=x.dtype, shape=kept)])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        axes = tuple(range(self.lead)) + tuple(range(x.ndim - self.trail, x.ndim))
        output_storage[0][0] = np.asarray(x.sum(axis=axes, dtype=x.dtype))

    def infer_shape(self, node, shapes):
        (s,) = shapes
        return [tuple(s[self.lead : len(s) - self.trail])]


@node_rewriter([Sum])
def local_fast_sum(fgraph, node):
    (x,) = node.inputs
    if x.dtype not in ("float32", "float64") or node.outputs[0].dtype != x.dtype or x.ndim < 2:
        return None
    axes = tuple(range(x.ndim)) if node.op.axis is None else tuple(node.op.axis)
    blocks = _blocks(axes, x.ndim)
    if blocks is None:
        return None
    out = NumpySum(*blocks)(x)
    old = node.outputs[0]
    if out.type != old.type:
        out = pt.specify_shape(out, old.type.shape)
    return [out]


def register() -> str:
    """Register the rewrite in PyTensor's optimizer database (once, when the ``c`` backend
    is first used) and return the tag that switches it on (``mode.including(tag)``)."""
    if "local_fast_sum" not in optdb:
        # After specialize (2), so Sums it creates are caught; only modes including the tag run it.
        optdb.register("local_fast_sum", dfs_rewriter(local_fast_sum), FAST_SUMS, position=2.05)
    return FAST_SUMS

