"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory, embedded_data, tiny_config):
    """``(workdir, metrics)`` of a 1-epoch tiny feedforward run. One epoch, not the 3 of
    ``ff_run``: after 3 epochs the tiny model's samples no longer depend on the code (its
    KL collapses), and sample quality must be seen to depend on the seed."""
    from ift6266_vae.training.loop import train_and_evaluate

    wd = tmp_path_factory.mktemp("eval_run")
    return wd, train_and_evaluate(tiny_config(epochs=1), wd)
