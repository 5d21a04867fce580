"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest
from helpers import tiny_run


@pytest.fixture(scope="session")
def eval_run(shared_dir, embedded_data, tiny_config):
    """``(workdir, metrics)`` of a 1-epoch tiny feedforward run. One epoch, not the 3 of
    ``ff_run``: after 3 epochs the tiny model's samples no longer depend on the code (its
    KL collapses), and sample quality must be seen to depend on the seed."""
    return tiny_run(shared_dir, "eval_run", tiny_config(epochs=1))
