"""Tests of ift6266_vae.evaluation.iwae: the IWAE bound against a model with a known
likelihood (a linear-Gaussian VAE), its independence of batching, bad input."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import pytest
import scipy.stats

from ift6266_vae.errors import UserError
from ift6266_vae.evaluation.iwae import iwae_bound
from ift6266_vae.models.base import VAEBase
from ift6266_vae.models.compiled import ModelFunctions
from ift6266_vae.nn.layers import FLOATX
from helpers import BACKEND

D_X = 28 * 28


class LinearGaussianVAE(VAEBase):
    """``p(z) = N(0, I)``, ``p(x | z) = N(W z + b, s2 I)``, so ``p(x) = N(b, W W^T + s2 I)``.

    ``W`` has orthogonal columns of squared norm ``c``, so the exact posterior is
    ``N(v W^T (x - b) / s2, v I)`` with ``v = 1 / (1 + c / s2)``. The encoder ``q`` is
    deliberately imperfect: its mean is off by ``shift * sqrt(v)`` in every coordinate and
    its standard deviation is ``widen * sqrt(v)``; ``KL(q || posterior)`` is the same
    for every ``x`` (:meth:`kl_to_posterior`), the exact ELBO gap.
    """

    kind = "linear_gaussian"

    def __init__(self, code_size=6, s2=0.3, c=1.0, shift=1.0, widen=1.8, seed=0):
        super().__init__({"code_size": code_size, "decoder_variance": s2})
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((D_X, code_size)))
        self.W = q * np.sqrt(c)
        self.b = rng.uniform(0, 1, D_X)
        self.s2, self.v = s2, 1.0 / (1.0 + c / s2)
        self.shift, self.widen = shift, widen

    def encode(self, x, deterministic=False, collect=None):
        h = x.flatten(2)
        a = (self.W * (self.v / self.s2)).astype(FLOATX)
        mu = pt.dot(h - self.b.astype(FLOATX), a) + np.float32(self.shift * np.sqrt(self.v))
        log_sigma = pt.zeros_like(mu) + np.float32(np.log(self.widen * np.sqrt(self.v)))
        return mu, log_sigma

    def decode(self, z, deterministic=False, collect=None):
        y = pt.dot(z, self.W.T.astype(FLOATX)) + self.b.astype(FLOATX)
        return y.reshape((y.shape[0], 1, 28, 28))

    def sample_x(self, n, seed=1):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.code_size))
        x = z @ self.W.T + self.b + np.sqrt(self.s2) * rng.standard_normal((n, D_X))
        return x.reshape(n, 1, 28, 28).astype(FLOATX)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s2 * np.eye(D_X)
        return scipy.stats.multivariate_normal(self.b, cov).logpdf(x.reshape(len(x), -1).astype(np.float64))

    def kl_to_posterior(self):
        sq, m = self.widen ** 2, self.shift ** 2  # in units of the posterior variance v
        return self.code_size * (-0.5 * np.log(sq) + 0.5 * (sq + m) - 0.5)


@pytest.fixture(scope="module")
def toy():
    model = LinearGaussianVAE()
    x = model.sample_x(50)
    fns = ModelFunctions(model, BACKEND)
    return model, fns, x, model.log_px(x)


def test_toy_model_elbo_matches_closed_form(toy):
    """The package's ELBO (analytic KL) and the mean log weight agree with log p(x) - KL."""
    model, fns, x, log_px = toy
    exact = log_px - model.kl_to_posterior()
    reps = 40
    eps = np.random.default_rng(4).standard_normal((len(x) * reps, model.code_size)).astype(FLOATX)
    diff = fns.elbo(np.repeat(x, reps, axis=0), eps)[0] - np.repeat(exact, reps)
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff)) + 0.01
    r = iwae_bound(fns, x, 1000, seed=3)
    assert r["elbo"] == pytest.approx(exact.mean(), abs=0.06)


def test_iwae_k1_is_the_elbo(toy):
    _, fns, x, _ = toy
    r = iwae_bound(fns, x, 1, seed=0)
    assert r["iwae"] == pytest.approx(r["elbo"], abs=1e-9)
    assert r["ess_mean"] == pytest.approx(1.0)


def test_iwae_increases_with_k_and_converges_to_log_px(toy):
    """With ``KL(q || posterior) = 6.2`` nats and an effective sample size of ~5 % of k,
    the bound's gap to log p(x) is ~1 nat at k=10, ~0.05 at k=100 and ~0.002 at k=5000,
    while its Monte-Carlo noise (mean over 50 examples) is ~0.01-0.03 at k >= 1000."""
    model, fns, x, log_px = toy
    truth = float(log_px.mean())
    ks = (1, 10, 100, 1000, 5000)
    runs = [iwae_bound(fns, x, k, seed=11, per_example=True) for k in ks]
    bounds = [r["iwae"] for r in runs]
    assert bounds[0] < bounds[1] - 0.5 and bounds[1] < bounds[2] - 0.3, bounds
    assert all(b2 > b1 - 0.05 for b1, b2 in zip(bounds[2:], bounds[3:])), bounds
    assert abs(bounds[-1] - truth) < 0.03, (bounds, truth)
    # the mean log weight of the same samples is the ELBO: log p(x) - KL, for every k
    assert runs[-1]["elbo"] == pytest.approx(truth - model.kl_to_posterior(), abs=0.03)
    assert runs[-1]["ess_mean"] < 0.2 * ks[-1]
    # a lower bound in expectation: per example never above log p(x) by more than noise
    # (the per-example standard deviation at k=5000 is ~0.06 nats)
    assert np.all(runs[-1]["per_example"] - log_px < 0.3), np.max(runs[-1]["per_example"] - log_px)


def test_iwae_does_not_depend_on_batching(toy):
    _, fns, x, _ = toy
    a = iwae_bound(fns, x[:7], 37, batch_size=3, samples_per_call=5, seed=2, per_example=True)
    b = iwae_bound(fns, x[:7], 37, batch_size=7, seed=2, per_example=True)
    np.testing.assert_allclose(a["per_example"], b["per_example"], rtol=0, atol=1e-4)
    c = iwae_bound(fns, x[:7], 37, batch_size=7, seed=3)
    assert c["iwae"] != b["iwae"]


@pytest.mark.parametrize("k", [0, -5, 2.5, True])
def test_iwae_bad_k(toy, k):
    _, fns, x, _ = toy
    with pytest.raises(UserError, match="k >= 1"):
        iwae_bound(fns, x, k)


def test_iwae_at_least_elbo_on_a_feedforward_model(tiny_config, embedded_data):
    from ift6266_vae import data, models

    cfg = tiny_config()
    model = models.build(cfg["model"], seed=0)
    x = data.load(embedded_data, "test")[0][:40]
    r = iwae_bound(model, x, 30, batch_size=16, backend=BACKEND, per_example=True)
    assert np.isfinite(r["iwae"]) and r["iwae"] >= r["elbo"]
    assert 1.0 <= r["ess_mean"] <= 30.0
