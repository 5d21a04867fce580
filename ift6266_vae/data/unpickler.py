"""The classic ``mnist.pkl.gz``, read as untrusted input: a restricted unpickler that can
rebuild numpy arrays and nothing else."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import IMAGE_SHAPE, N_CLASSES, N_PIXELS, SPLITS
from .idx import read_maybe_gzip

log = logging.getLogger(__name__)


def _safe_dtype(*args):
    d = np.dtype(*args)
    if d.hasobject:
        raise pickle.UnpicklingError(f"refusing object dtype {d!r} in pickle")
    return d


def _safe_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to build {subtype!r}: only numpy.ndarray is allowed")
    return np.ndarray(shape, dtype=_safe_dtype(dtype_code))


def _safe_frombuffer(buf, dtype, shape, order):
    dtype = _safe_dtype(dtype)
    arr = np.frombuffer(bytes(buf), dtype=dtype)
    return arr.reshape(shape, order=order if order in ("C", "F") else "C").copy()


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol 0-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("refusing _codecs.encode other than encode(str, 'latin1')")
    return obj.encode("latin1")


# (module, name) -> what the pickle gets instead. Nothing else can be named by the pickle,
# so no callable outside this table (os.system, builtins.eval, ...) is ever reached.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,  # numpy < 2 / Python 2 files
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class PickleRefused(pickle.UnpicklingError):
    """The pickle names a global that is not needed to rebuild numpy arrays."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (and tuples/lists of them) and nothing else.

    ``find_class`` answers from a fixed table of numpy reconstruction helpers (wrapped to
    refuse object dtypes) and raises ``PickleRefused`` for any other global, before it is
    imported or called. Tuples, lists, strings and numbers need no global.
    """

    def find_class(self, module, name):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise PickleRefused(
                f"pickle references {module}.{name}; only numpy arrays are allowed"
            ) from None


def read_mnist_pkl(path) -> tuple:
    """Read the classic ``mnist.pkl.gz`` safely: returns ``[(x, y)] * 3`` as
    (float or uint8 (N, 784) or (N, 28, 28), int (N,)) for train, valid, test."""
    path = Path(path)
    raw = read_maybe_gzip(path)
    fix = "replace it with a good copy and prepare again"
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except PickleRefused as err:
        raise UserError(f"{path}: refused to unpickle: {err}; use the official mnist.pkl.gz") from err
    except Exception as err:  # any failure of a malformed stream: EOFError, UnpicklingError, ...
        msg = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{path}: corrupt or truncated pickle ({type(err).__name__}: {msg}); {fix}") from err
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise UserError(f"{path}: expected a pickle of (train, valid, test), got {type(obj).__name__}; {fix}")
    parts = []
    for split, part in zip(SPLITS, obj):
        if not (isinstance(part, (tuple, list)) and len(part) == 2):
            raise UserError(f"{path}: {split} part must be an (x, y) pair; {fix}")
        x, y = part
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise UserError(f"{path}: {split} x and y must be numpy arrays; {fix}")
        parts.append((x, y))
    return parts


def pkl_images_to_uint8(x: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """Pixels of a pickle as uint8 (N, 28, 28) and the scale that maps them back exactly."""
    if x.ndim == 2 and x.shape[1] == N_PIXELS:
        x = x.reshape(-1, *IMAGE_SHAPE)
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{where}: images must be (N, 784) or (N, 28, 28), got {x.shape}")
    if x.dtype == np.uint8:
        return x.copy(), 255
    if x.dtype.kind != "f":
        raise UserError(f"{where}: images must be float in [0, 1] or uint8, got {x.dtype}")
    xf = x.astype(np.float64)
    if not np.isfinite(xf).all() or xf.min() < 0.0 or xf.max() > 1.0:
        raise UserError(f"{where}: pixel values must be in [0, 1]")
    for scale in (256, 255):  # mnist.pkl.gz holds multiples of 1/256
        k = np.rint(xf * scale)
        if k.max() <= 255 and np.array_equal((k / scale).astype(x.dtype), x):
            return k.astype(np.uint8), scale
    log.warning("%s: pixels are not multiples of 1/255 or 1/256; storing round(x * 255)", where)
    return np.rint(xf * 255).astype(np.uint8), 255


def pkl_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise UserError(f"{where}: labels must be integers shaped ({n},), got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= N_CLASSES):
        raise UserError(f"{where}: labels must be in 0..9")
    return y.astype(np.uint8)

