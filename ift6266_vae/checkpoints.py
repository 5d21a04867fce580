"""Checkpoints in HDF5: parameters, BN state, optimizer state, RNG state, epoch, config.

Layout::

    /params/<name>      trainable parameters      (float32)
    /bn_state/<name>    BN population statistics  (float32)
    /optim/<name>       optimizer slots           (float32)
    /bn_population/<name>  BN statistics recomputed exactly over the training set
                        after training (optional; used for inference when present,
                        while /bn_state keeps the running averages that --resume needs)
    /frozen/<name>      a pre-trained part the model holds but does not train (m1m2's M1)
    attrs: format, config (JSON), signature (JSON), epoch, rng_state (JSON),
           history (JSON), dataset

Writes are atomic (the file is built in memory, then temp file + rename) and refuse
non-finite values, so a good checkpoint is never replaced by a bad or half-written one, even
on a full disk. Loading checks the architecture signature and every array's shape, dtype
and finiteness before touching the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from .errors import UserError
from .io import write_hdf5

log = logging.getLogger(__name__)

FORMAT = "ift6266_vae.checkpoint.v1"
BN_SOURCES = ("auto", "running", "population")


def save(path, model, optimizer_state=(), *, config: dict, epoch: int,
         rng_state: dict | None = None, history: list | None = None, dataset: str = "",
         bn_population: dict | None = None, attrs: dict | None = None) -> Path:
    """Write ``model`` (and the optimizer slots) to ``path``; ``attrs``: extra file attributes."""
    groups = {
        "params": model.params,
        "bn_state": model.bn_state,
        "optim": list(optimizer_state),
    }
    arrays = {g: {v.name: np.asarray(v.get_value()) for v in vs} for g, vs in groups.items()}
    if model.frozen_variables:
        arrays["frozen"] = {name: np.asarray(v.get_value()) for name, v in model.frozen_variables.items()}
    if bn_population is not None:
        arrays["bn_population"] = {k: np.asarray(v) for k, v in bn_population.items()}
    for g, named in arrays.items():
        for name, a in named.items():
            if not np.all(np.isfinite(a)):
                raise FloatingPointError(f"refusing to checkpoint non-finite values in {g}/{name}; the previous checkpoint is kept")
    path = Path(path)

    def fill(f):
        f.attrs["format"] = FORMAT
        f.attrs["config"] = json.dumps(config)
        f.attrs["signature"] = json.dumps(model.signature())
        f.attrs["epoch"] = int(epoch)
        f.attrs["rng_state"] = json.dumps(rng_state or {})
        f.attrs["history"] = json.dumps(history or [])
        f.attrs["dataset"] = dataset
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for g, named in arrays.items():
            grp = f.create_group(g)
            for name, a in named.items():
                grp.create_dataset(name, data=a)

    try:
        write_hdf5(path, fill)
    except OSError as e:
        raise UserError(f"could not write {path} ({e.strerror or e}); the previous file is kept: free disk "
                        "space (or fix the folder's permissions) and continue with --resume") from None
    return path


def read_meta(path) -> dict:
    """Config, signature, epoch, RNG state, history and data set of a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; train first (`ift6266-vae train ...`)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise UserError(f"{path} is not an ift6266_vae checkpoint (format {f.attrs.get('format')!r})")
            return {
                "config": json.loads(f.attrs["config"]),
                "signature": json.loads(f.attrs["signature"]),
                "epoch": int(f.attrs["epoch"]),
                "rng_state": json.loads(f.attrs["rng_state"]),
                "history": json.loads(f.attrs["history"]),
                "dataset": str(f.attrs["dataset"]),
            }
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({e}); use another checkpoint or retrain") from None


def load_into(path, model, optimizer_state=(), bn_source: str = "auto") -> dict:
    """Restore ``model`` (and optimizer slots, when given) from ``path``; returns the metadata.

    ``bn_source``: ``running`` restores the running averages (what ``--resume`` needs),
    ``population`` the recomputed statistics, ``auto`` the recomputed ones when the
    checkpoint has them (inference), else the running averages. Everything is validated
    before any variable is assigned, so a failing load leaves the model untouched.
    """
    if bn_source not in BN_SOURCES:
        raise ValueError(f"unknown bn_source {bn_source!r}; valid: {BN_SOURCES}")
    path = Path(path)
    meta = read_meta(path)
    sig = model.signature()
    if meta["signature"] != sig:
        raise UserError(
            f"checkpoint {path} holds a {meta['signature'].get('kind')!r} model whose parameters differ from "
            f"this {sig['kind']!r} model; load it with the config it was trained with"
        )
    staged = []
    try:
        with h5py.File(path, "r") as f:
            bn_group = "bn_state"
            if bn_source == "population" or (bn_source == "auto" and "bn_population" in f):
                bn_group = "bn_population"
            meta["bn_source"] = bn_group
            wanted = {g: {v.name: v for v in vs} for g, vs in
                      (("params", model.params), (bn_group, model.bn_state), ("optim", optimizer_state))}
            wanted["frozen"] = model.frozen_variables
            for g, named in wanted.items():
                for name, v in named.items():
                    key = f"{g}/{name}"
                    if key not in f:
                        raise UserError(f"checkpoint {path} lacks {key}; it was written by a different model or optimizer")
                    a = f[key][()]
                    cur = v.get_value(borrow=True)
                    if a.shape != cur.shape or a.dtype != cur.dtype:
                        raise UserError(f"checkpoint {path}: {key} has shape {a.shape} {a.dtype}, expected {cur.shape} {cur.dtype}")
                    if not np.all(np.isfinite(a)):
                        raise UserError(f"checkpoint {path}: {key} holds non-finite values")
                    staged.append((v, a))
    except OSError as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({e}); use another checkpoint or retrain") from None
    for v, a in staged:
        v.set_value(a)
    return meta
