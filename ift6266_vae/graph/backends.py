"""One place that turns a backend name into a PyTensor compile mode.

==========  ============================================================================
name        PyTensor mode
==========  ============================================================================
``c``       ``CVM``: the C/VM linker. Compiles fastest for small graphs and is the only
            linker with per-op profiling (``profile=True``).
``numba``   ``NUMBA``: PyTensor's default linker since 3.0.
``jax``     ``JAX``: needs the ``jax`` extra (``pip install -e '.[jax]'``). Functions are
            compiled per input-shape signature (:mod:`ift6266_vae.graph.jax_backend`).
``auto``    JAX when it is installed and sees a GPU; otherwise the CPU backend measured
            fastest for the model kind (:func:`auto_order`): JAX (on the CPU) when it is
            installed; else ``numba`` for the feedforward VAE and the other MLPs, ``c`` for
            the conv VAE. ``docs/results.md`` has the measurements behind the choice.
==========  ============================================================================

Asking for an unknown backend, or for ``jax`` without JAX installed, raises a
:class:`~ift6266_vae.errors.UserError` (one line, with the install command).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from pathlib import Path

import pytensor

from pytensor.compile.mode import get_mode

from ..errors import UserError

log = logging.getLogger(__name__)

_BLAS_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def configure_blas() -> str:
    """Give the C linker a BLAS when PyTensor found none.

    PyTensor's own detection wants ``libblas`` + ``libcblas`` or MKL; with Debian's
    OpenBLAS (``libopenblas-dev``, installed by ``make setup``) it finds neither and
    the C/VM linker's GEMMs fall back to slow code. We point it at ``-lopenblas``.
    A user's own ``blas__ldflags`` (PYTENSOR_FLAGS) is never overridden. Called when
    the ``c`` backend is first used, not at import.
    """
    import os
    import warnings

    with warnings.catch_warnings():  # PyTensor warns on first access when it found no BLAS
        warnings.simplefilter("ignore")
        current = pytensor.config.blas__ldflags
    if current:
        return current
    for d in _BLAS_DIRS:
        if os.path.exists(os.path.join(d, "libopenblas.so")):
            pytensor.config.blas__ldflags = f"-L{d} -lopenblas"
            log.debug("C linker BLAS: %s", pytensor.config.blas__ldflags)
            break
    else:
        log.warning("no BLAS for PyTensor's C linker: install libopenblas-dev (make setup does) "
                    "or the 'c' backend will be slow")
    return pytensor.config.blas__ldflags


BACKENDS = ("c", "numba", "jax", "auto")
_MODES = {"c": "CVM", "numba": "NUMBA", "jax": "JAX"}

#: ``auto`` on a machine without a GPU: the CPU backends in the order measured for a model
#: kind (train step, ``make bench``, which rewrites this file with ``--update-order``); the
#: first one installed is used. Kinds not measured alone (the semi-supervised models, the
#: classifier) take the ``default`` order.
ORDER_FILE = Path(__file__).with_name("backend_order.json")


@functools.cache
def auto_order() -> dict:
    """``{kind: (backends, fastest first)}`` from :data:`ORDER_FILE`."""
    return {k: tuple(v) for k, v in json.loads(ORDER_FILE.read_text())["order"].items()}


def jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def jax_devices() -> list[str]:
    """The platforms of JAX's devices (``["cpu"]``, ``["gpu", "gpu"]``); ``[]`` without JAX."""
    if not jax_available():
        return []
    try:
        import jax

        return [d.platform for d in jax.devices()]
    except Exception:  # no usable runtime: no devices, not an error
        return []


def jax_has_gpu() -> bool:
    return "gpu" in jax_devices()


def _jax_missing() -> UserError:
    return UserError("backend 'jax' needs JAX, which is not installed: run "
                     "`.venv/bin/pip install -e '.[jax]'` (CPU; for a GPU see the JAX install guide)")


def resolve(name: str, kind: str | None = None) -> str:
    """Validate ``name`` and resolve ``auto``; returns one of ``c``, ``numba``, ``jax``.

    ``kind`` is the model kind (``"feedforward"``, ``"conv"``, ...): ``auto`` without a GPU
    picks the first installed backend of :func:`auto_order` [kind].
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    if name == "auto":
        if jax_has_gpu():
            return "jax"
        order = auto_order()
        return next(b for b in order.get(kind, order["default"]) if b != "jax" or jax_available())
    if name == "jax" and not jax_available():
        raise _jax_missing()
    return name


def get_compile_mode(name: str, kind: str | None = None):
    """The PyTensor ``Mode`` for backend ``name`` (``auto`` resolved for model ``kind``)."""
    resolved = resolve(name, kind)
    if resolved == "jax":
        from . import jax_backend

        jax_backend.register_fixes()
    mode = get_mode(_MODES[resolved])
    if resolved == "c":  # numpy sums instead of PyTensor's slow C reductions (rewrites.py)
        from . import rewrites

        configure_blas()
        mode = mode.including(rewrites.register())
    return mode


def function(inputs, outputs, backend: str = "auto", kind: str | None = None, **kwargs):
    """``pytensor.function`` compiled for ``backend`` (the package's only compile entry point).

    On ``jax`` this returns a :class:`~ift6266_vae.graph.jax_backend.ShapeSpecializedFunction`:
    the same call signature, compiled per input-shape signature on first call (JAX needs
    static shapes), returning numpy arrays.
    """
    mode = get_compile_mode(backend, kind)
    if resolve(backend, kind) == "jax":
        from . import jax_backend

        return jax_backend.ShapeSpecializedFunction(inputs, outputs, mode, **kwargs)
    return pytensor.function(inputs, outputs, mode=mode, **kwargs)
