"""ift6266_vae.experiments.runs: sweeps reuse finished runs and continue interrupted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift6266_vae import checkpoints
from ift6266_vae.experiments.runs import run_or_reuse
from ift6266_vae.training.loop import finished_metrics


class Killed(Exception):
    pass


def test_an_interrupted_run_is_finished_by_reuse_with_the_uninterrupted_numbers(tmp_path, ff_run, tiny_config):
    """The sweep's run is killed during epoch 3 (after epoch 2's checkpoint); --reuse continues
    it from that checkpoint and ends with the numbers of the same run done in one go."""
    cfg = tiny_config(epochs=3)

    def kill_in_epoch_3(fns, rec, splits):
        if rec["epoch"] == 3:
            raise Killed

    with pytest.raises(Killed):
        run_or_reuse(cfg, tmp_path, reuse=True, callbacks=[kill_in_epoch_3])
    assert checkpoints.read_meta(tmp_path / "checkpoint.h5")["epoch"] == 2 and finished_metrics(tmp_path) is None
    resumed = run_or_reuse(cfg, tmp_path, reuse=True)
    wd, whole = ff_run
    assert resumed["epochs_trained"] == 3
    np.testing.assert_allclose(resumed["test"]["elbo"], whole["test"]["elbo"], rtol=1e-5)
    valid = [[h["valid_elbo"] for h in checkpoints.read_meta(d / "checkpoint.h5")["history"]] for d in (tmp_path, wd)]
    np.testing.assert_allclose(valid[0], valid[1], rtol=1e-5)
    # a finished run is reused as it is: nothing retrained
    again = run_or_reuse(cfg, tmp_path, reuse=True, callbacks=[lambda *a: pytest.fail("retrained")])
    assert again == json.loads((tmp_path / "metrics.json").read_text())
