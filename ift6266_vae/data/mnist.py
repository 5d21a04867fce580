"""``mnist``: the official MNIST, from its IDX files or the classic ``mnist.pkl.gz``
(dropped by the user into the data directory)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .cache import SPLITS, Built
from .idx import IDX_FILES, find_idx_set, read_idx_set
from .unpickler import pkl_images_to_uint8, pkl_labels, read_mnist_pkl

MNIST_PKL_NAMES = ("mnist.pkl.gz", "mnist.pkl")


def find_sources(d: Path):
    """``("idx", files)`` or ``("pkl", path)`` for official MNIST under ``d``, else None."""
    dirs = (d, d / "mnist", d / "raw")
    for sub in dirs:
        files = find_idx_set(sub)
        if files is not None:
            return "idx", files
    for sub in dirs:
        for n in MNIST_PKL_NAMES:
            if (sub / n).is_file():
                return "pkl", sub / n
    return None


def build(d: Path, fetch: bool, allow_unverified: bool = False) -> Built:
    found = find_sources(d)
    if found is None:
        names = ", ".join(f"{b}.gz" for b in IDX_FILES.values())
        raise UserError(
            f"MNIST files not found in {d} (nor its mnist/ or raw/): put {names} or mnist.pkl.gz "
            f"there and run `ift6266-vae data prepare mnist`, or use the embedded set: `make data`"
        )
    kind, src = found
    if kind == "idx":
        xtr, ytr, xte, yte = read_idx_set(src)
        n_valid = xtr.shape[0] // 6
        n_train = xtr.shape[0] - n_valid
        splits = {
            "train": (xtr[:n_train], ytr[:n_train]),
            "valid": (xtr[n_train:], ytr[n_train:]),
            "test": (xte, yte),
        }
        return Built(
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
        images, scale = pkl_images_to_uint8(x, f"{src} {s}")
        splits[s] = (images, pkl_labels(y, images.shape[0], f"{src} {s}"))
        scales.add(scale)
    if len(scales) != 1:
        raise UserError(f"{src}: splits use different pixel grids {sorted(scales)}; use the official mnist.pkl.gz")
    return Built(
        splits=splits,
        sources=[src],
        split_text="the (train, valid, test) parts of mnist.pkl.gz as stored",
        pixel_scale=scales.pop(),
        source_text="official MNIST mnist.pkl.gz",
    )

