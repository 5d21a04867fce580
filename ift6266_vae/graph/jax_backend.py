"""What the package adds to PyTensor's JAX backend (imported only when JAX is asked for).

Two things stand between the package's graphs and ``jax.jit`` in PyTensor 3.3.8:

1. **Static shapes.** ``jax.jit`` needs every shape argument (``reshape``, ``zeros``,
   ``broadcast_to``) to be a concrete integer at trace time. The models compute shapes
   from the batch size and from the (shape-less) shared weights, e.g. the im2col
   ``reshape((C*kh*kw, N*Ho*Wo))`` or ``reshape((N, 128, 7, 7))``; under ``jit`` those
   products are tracers and tracing fails ("Shapes must be 1D sequences of concrete
   values"). :class:`ShapeSpecializedFunction` therefore compiles one PyTensor function
   per distinct input-shape signature: the inputs are given their concrete shapes and
   every shared variable a ``specify_shape`` of its current value's shape, so PyTensor's
   shape rewrites fold all shape arithmetic into constants. JAX itself re-traces and
   re-compiles for every new input shape anyway, so nothing is lost: a training run
   compiles once per batch size it sees (the train batch, and an eval batch or a last
   short batch).

2. **Reduction dtypes.** PyTensor 3.3.8's JAX ``CAReduce`` returns its result in the
   *accumulator* dtype: a float32 ``Sum`` (whose default ``acc_dtype`` is float64) comes
   back as float64, and the whole graph downstream of every sum (BN statistics, the
   loss, all the gradients, the updates) then runs in float64, 2-3x slower, and the
   compiled function returns float64. Likewise ``Alloc`` of a scalar constant (the
   zero buffers of padding and ``set_subtensor``) allocates float64 under JAX's x64 mode,
   which made the im2col matrix of the conv float64. :func:`register_fixes` wraps both
   dispatches so the result is cast to the node's output dtype, as the C and Numba
   backends do.

3. **A persistent compilation cache.** XLA compiles every function (and every new input
   shape) anew in each process unless JAX's disk cache is on; :func:`register_fixes`
   turns it on in ``<user cache dir>/jax`` (:func:`ift6266_vae.io.user_cache_dir`) unless
   the user chose a folder (``JAX_COMPILATION_CACHE_DIR``), for every compile however short.

Shared-variable values live as JAX arrays between calls; outputs are returned as numpy
arrays (the callers do numpy arithmetic and in-place work on them).
"""

from __future__ import annotations

import logging

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors

from ..io import user_cache_dir

log = logging.getLogger(__name__)

_REGISTERED = False


def _with_output_dtype(base, cast_first_input: bool = False):
    """Wrap a ``jax_funcify`` implementation so its result has the node's output dtype
    (``cast_first_input``: cast the first argument instead, e.g. an ``Alloc``'s value
    before it is broadcast, so no float64 buffer is ever materialised)."""

    import jax.numpy as jnp

    def funcify(op, node=None, **kwargs):
        fn = base(op, node=node, **kwargs)
        if node is None or len(node.outputs) != 1:
            return fn
        out_dtype = np.dtype(node.outputs[0].dtype)

        def cast_output(*args):
            if cast_first_input:
                args = (jnp.asarray(args[0], dtype=out_dtype), *args[1:])
            res = fn(*args)
            return res if res.dtype == out_dtype else res.astype(out_dtype)

        return cast_output

    return funcify


def register_fixes() -> None:
    """Register the package's JAX dispatch fixes and turn the persistent compilation cache
    on (idempotent; called when the JAX backend is first used)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(user_cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from pytensor.tensor.basic import Alloc
    from pytensor.tensor.elemwise import CAReduce

    jax_funcify.register(CAReduce)(_with_output_dtype(jax_funcify.dispatch(CAReduce)))
    jax_funcify.register(Alloc)(_with_output_dtype(jax_funcify.dispatch(Alloc), cast_first_input=True))
    _REGISTERED = True


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _relax(value, var):
    """``value`` with ``var``'s broadcast pattern: an update must not be more broadcastable
    than its shared variable (a static size-1 axis from ``specify_shape``). An ``alloc``
    to ``var``'s own runtime shape, which PyTensor's rewrites remove as a no-op."""
    return pt.alloc(value, *[var.shape[i] for i in range(var.ndim)])


class ShapeSpecializedFunction:
    """``pytensor.function(inputs, outputs, updates=...)`` for the JAX backend, compiled
    once per input-shape signature on first call (see the module docstring)."""

    def __init__(self, inputs, outputs, mode, updates=None, **kwargs):
        self.inputs = list(inputs)
        self._single = not isinstance(outputs, (list, tuple))
        self.outputs = _as_list(outputs)
        if updates is None:
            updates = []
        self.updates = list(updates.items()) if hasattr(updates, "items") else list(updates)
        self.mode = mode
        self.kwargs = kwargs
        self._fns: dict = {}
        graph = self.outputs + [v for _, v in self.updates]
        self._shared = [v for v in ancestors(graph) if isinstance(v, SharedVariable)
                        and isinstance(v.type, pt.TensorType)]

    @property
    def n_compiled(self) -> int:
        return len(self._fns)

    def specialize(self, shapes):
        """The compiled PyTensor function for inputs of these concrete ``shapes``."""
        key = tuple(tuple(int(d) for d in s) for s in shapes)
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._compile(key)
        return fn

    def _compile(self, shapes):
        replace, new_inputs = {}, []
        for var, shape in zip(self.inputs, shapes):
            new = var.type.clone(shape=shape)(name=var.name)
            replace[var] = new
            new_inputs.append(new)
        for v in self._shared:
            replace[v] = pt.specify_shape(v, v.get_value(borrow=True).shape)
        graph = self.outputs + [v for _, v in self.updates]
        new = clone_replace(graph, replace=replace) if graph else []
        outs, upd_vals = new[: len(self.outputs)], new[len(self.outputs):]
        updates = [(k, v if k.type.in_same_class(v.type) else _relax(v, k)) for (k, _), v in zip(self.updates, upd_vals)]
        log.debug("JAX: compiling for input shapes %s", shapes)
        return pytensor.function(new_inputs, outs, updates=updates, mode=self.mode, **self.kwargs)

    def __call__(self, *args):
        args = [np.asarray(a) for a in args]
        res = self.specialize([a.shape for a in args])(*args)
        res = [np.asarray(r) for r in res]
        return res[0] if self._single else res
