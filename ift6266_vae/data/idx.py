"""IDX files (the official MNIST and Fashion-MNIST format), gzipped or not."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import IMAGE_SHAPE, N_CLASSES

log = logging.getLogger(__name__)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
OFFICIAL_TRAIN_SIZE = 60_000
OFFICIAL_TEST_SIZE = 10_000


def read_maybe_gzip(path: Path) -> bytes:
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
    raw = read_maybe_gzip(path)
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


def find_idx_set(directory: Path) -> dict | None:
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


def read_idx_set(files: dict) -> tuple:
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

