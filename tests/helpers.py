"""Constants and helpers shared by several test modules (``tests/`` is on ``sys.path``
through pytest's ``pythonpath`` setting in setup.cfg; import as ``from helpers import ...``)."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import numpy as np

#: The backend of value tests and tiny runs, where no particular linker is the subject: JAX
#: compiles fastest from a cold cache (tiny conv VAE train step: 7 s, against 82 s on the C
#: linker and 125 s on Numba; tiny week-10 runs: 22 s against 110 s on C). C and Numba are
#: tested where they are the subject (tests/graph/test_backends.py: every backend agrees per
#: model kind; the C rewrites; the C/VM profiler).
BACKEND = "jax"


def tiny_net(width: int, code: int) -> dict:
    """A feedforward network 784-(2 width)-width, code ``code``, width-(2 width) decoder,
    with the week-9 activation pattern, small enough to compile and run in seconds."""
    return {
        "kind": "feedforward",
        "encoder": [2 * width, width],
        "encoder_activations": ["relu", "tanh"],
        "code_size": code,
        "decoder": [width, 2 * width],
        "decoder_activations": ["linear", "relu"],
    }


#: for graph-level tests (784-16-8, code 4)
TINY_NET = tiny_net(8, 4)
#: for end-to-end runs and backend agreement (784-32-16, code 8)
TINY_RUN_NET = tiny_net(16, 8)


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random float32 images (N, 1, 28, 28) with pixels in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 28, 28)).astype("float32")


def once(shared_dir: Path, name: str, build) -> Path:
    """``shared_dir / name``, built by ``build(path)`` once per test run: the first worker to
    get here builds it under a lock, the others wait and reuse it."""
    path = shared_dir / name
    with open(shared_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".built").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            (path / ".built").touch()
    return path


def tiny_run(shared_dir: Path, name: str, cfg: dict):
    """``(workdir, metrics)`` of a finished tiny run, trained once per test run."""
    from ift6266_vae.training.loop import train_and_evaluate

    wd = once(shared_dir, name, lambda path: train_and_evaluate(cfg, path / "run"))
    return wd / "run", json.loads((wd / "run" / "metrics.json").read_text())


def kill_worker_once(cfg: dict, marker) -> list:
    """Callbacks (for ``sweep.Task.callbacks``) that end the process running the run during
    its epoch 2, after the checkpoint of epoch 1, the first time only (``marker`` is the
    file that remembers it): a Dask worker lost mid-run."""
    import os

    def cb(fns, rec, splits):
        if rec["epoch"] == 2 and not Path(marker).exists():
            Path(marker).touch()
            os._exit(1)

    return [cb]
