"""``fashion-mnist``: the IDX files of the Debian package ``dataset-fashion-mnist``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import Built
from .idx import IDX_FILES, find_idx_set, read_idx_set
from .splits import SPLIT_SEED

# Where the Debian package ``dataset-fashion-mnist`` puts its files (searched after
# ``<data_dir>/fashion-mnist``); a module attribute so tests can replace it.
FASHION_SYSTEM_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path("/usr/share/fashion-mnist"),
    Path("/usr/local/share/datasets/fashion-mnist"),
)


def search_dirs(d: Path) -> list[Path]:
    return [d / "fashion-mnist", d / "raw" / "fashion-mnist", *FASHION_SYSTEM_DIRS]


def build(d: Path, fetch: bool, allow_unverified: bool = False) -> Built:
    dirs = search_dirs(d)
    for sub in dirs:
        files = find_idx_set(sub)
        if files is not None:
            break
    else:
        raise UserError(
            "Fashion-MNIST IDX files not found (looked in "
            + ", ".join(str(p) for p in dirs)
            + "): run `apt-get install dataset-fashion-mnist` or copy the four IDX files into "
            + str(d / "fashion-mnist")
        )
    xtr, ytr, xte, yte = read_idx_set(files)
    n = xtr.shape[0]
    n_valid = n // 6
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    valid_idx = np.sort(perm[:n_valid])
    train_idx = np.sort(perm[n_valid:])
    return Built(
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

