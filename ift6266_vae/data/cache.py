"""The HDF5 cache every data set is converted into once, and what it must hold.

``<data_dir>/<name>.h5``, written atomically (temporary file + rename): groups ``train``,
``valid``, ``test`` with ``images`` (uint8, ``(N, 28, 28)``, gzip + Fletcher-32 checksums)
and ``labels`` (uint8, ``(N,)``); file attributes record the format version, the source
files and their sha256, the split rule and the pixel scale (``load`` returns
``images / scale``). A builder (one per data set) returns a :class:`Built`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import UserError
from ..io import sha256_file, write_hdf5

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1
N_CLASSES = 10
IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


@dataclass
class Built:
    """What a data set's builder returns: uint8 arrays per split and where they came from."""

    splits: dict  # split -> (images uint8 (N, 28, 28), labels uint8 (N,))
    sources: list  # source file paths
    split_text: str
    pixel_scale: int = 255
    source_text: str = ""


def sizes_text(splits: dict) -> str:
    return ", ".join(f"{s} {splits[s][1].shape[0]}" for s in SPLITS)


def write_cache(path: Path, name: str, built: Built, source_text: str = "") -> None:
    for s in SPLITS:
        check_arrays(*built.splits[s], what=f"{name} {s}")
    sha = {Path(p).name: sha256_file(p) for p in built.sources}

    def fill(f):
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["name"] = name
        f.attrs["source"] = built.source_text or source_text
        f.attrs["source_files"] = json.dumps([str(p) for p in built.sources])
        f.attrs["sha256"] = json.dumps(sha, sort_keys=True)
        f.attrs["split"] = built.split_text
        f.attrs["pixel_scale"] = int(built.pixel_scale)
        f.attrs["written_by"] = "ift6266_vae"
        for s in SPLITS:
            images, labels = built.splits[s]
            g = f.create_group(s)
            n = images.shape[0]
            g.create_dataset("images", data=images, chunks=(max(1, min(n, 1024)), *IMAGE_SHAPE),
                             compression="gzip", compression_opts=4, fletcher32=True)
            g.create_dataset("labels", data=labels, fletcher32=True)

    try:
        write_hdf5(path, fill)
    except OSError as e:
        raise UserError(f"could not write the data cache {path} ({e.strerror or e}); any previous cache is "
                        "kept: free disk space or choose another data folder") from None


def check_arrays(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{what}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise UserError(f"{what}: labels must be uint8 ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= N_CLASSES:
        raise UserError(f"{what}: labels must be in 0..9, found {int(labels.max())}")


def read_cache(path: Path, name: str, splits=SPLITS, images: bool = True):
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

