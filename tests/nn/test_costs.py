"""Tests of ift6266_vae.costs against numpy (float64 references, float32 graphs)."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from ift6266_vae.nn import costs

MODE = pytensor.compile.mode.get_mode("CVM")
N, C = 5, 3  # examples, code size
D = 28 * 28
RTOL = 1e-5


def ref_se(x, y):
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    return ((x - y) ** 2).sum(axis=1)


def ref_nll(x, y, var):
    return ref_se(x, y) / (2 * var) + x[0].size * 0.5 * np.log(2 * np.pi * var)


def ref_kl(mu, ls):
    mu, ls = mu.astype(np.float64), ls.astype(np.float64)
    sigma2 = np.exp(2 * ls)
    # closed form KL(N(mu, sigma^2) || N(0, 1)) written independently of the 2015 expression
    return (0.5 * (sigma2 + mu ** 2 - 1) - ls).sum(axis=1)


def ref_log_normal(z, mu, ls):
    z, mu, ls = (a.astype(np.float64) for a in (z, mu, ls))
    s2 = np.exp(2 * ls)
    return (-0.5 * (z - mu) ** 2 / s2 - 0.5 * np.log(2 * np.pi * s2)).sum(axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    f32 = lambda a: np.asarray(a, dtype="float32")  # noqa: E731
    return {
        "x": f32(rng.uniform(0, 1, (N, 1, 28, 28))),
        "y": f32(rng.uniform(-1, 1, (N, 1, 28, 28))),
        "mu": f32(rng.standard_normal((N, C))),
        "ls": f32(rng.normal(0, 0.5, (N, C))),
        "z": f32(rng.standard_normal((N, C))),
    }


@pytest.fixture(scope="module")
def compiled():
    """One compiled function with every cost term; inputs x, y (images), mu, log_sigma, z."""
    x = pt.tensor("x", dtype="float32", shape=(None, 1, 28, 28))
    y = pt.tensor("y", dtype="float32", shape=(None, 1, 28, 28))
    mu, ls, z = (pt.matrix(n, dtype="float32") for n in ("mu", "ls", "z"))
    terms = {
        "se": costs.squared_error(x, y),
        "se_flat": costs.squared_error(x.flatten(2), y.flatten(2)),
        "nll_half": costs.gaussian_nll(x, y),
        "nll_2": costs.gaussian_nll(x, y, variance=2.0),
        "kl": costs.gaussian_kl(mu, ls),
        "logq": costs.gaussian_log_density(z, mu, ls),
        "logp": costs.standard_normal_log_density(z),
        "bern": costs.bernoulli_nll(x, y * 30),  # logits up to +-30: softplus must not overflow
    }
    vae = costs.vae_costs(x, y, mu, ls)
    vae2 = costs.vae_costs(x, y, mu, ls, variance=2.0)
    terms.update({f"vae_{k}": v for k, v in vae.items()})
    terms.update({f"vae2_{k}": v for k, v in vae2.items()})
    names = sorted(terms)
    f = pytensor.function([x, y, mu, ls, z], [terms[k] for k in names], mode=MODE)

    def run(d):
        return dict(zip(names, f(d["x"], d["y"], d["mu"], d["ls"], d["z"])))
    return run


@pytest.fixture(scope="module")
def out(compiled, data):
    return compiled(data)


def test_squared_error(out, data):
    np.testing.assert_allclose(out["se"], ref_se(data["x"], data["y"]), rtol=RTOL)
    np.testing.assert_allclose(out["se_flat"], out["se"], rtol=1e-6)
    assert out["se"].shape == (N,) and out["se"].dtype == np.float32


@pytest.mark.parametrize("key,var", [("nll_half", 0.5), ("nll_2", 2.0)])
def test_gaussian_nll(out, data, key, var):
    np.testing.assert_allclose(out[key], ref_nll(data["x"], data["y"], var), rtol=RTOL)
    assert out[key].shape == (N,) and out[key].dtype == np.float32


def test_bernoulli_nll(out, data):
    x = data["x"].reshape(N, -1).astype(np.float64)
    p = 1 / (1 + np.exp(-30 * data["y"].reshape(N, -1).astype(np.float64)))
    ref = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)
    np.testing.assert_allclose(out["bern"], ref, rtol=1e-4)
    assert out["bern"].shape == (N,) and out["bern"].dtype == np.float32 and np.all(np.isfinite(out["bern"]))


def test_nll_at_half_variance_is_squared_error_plus_constant(out):
    """The relation the package's ELBO reporting rests on: -log N(x; y, 1/2) = se + D/2 log(pi)."""
    np.testing.assert_allclose(out["nll_half"], out["se"] + D * 0.5 * np.log(np.pi), rtol=RTOL)
    assert costs.DECODER_VARIANCE == 0.5


def test_gaussian_kl(out, data):
    np.testing.assert_allclose(out["kl"], ref_kl(data["mu"], data["ls"]), rtol=RTOL, atol=1e-6)
    assert (out["kl"] > 0).all()


def test_kl_is_zero_at_the_prior(compiled, data):
    d = dict(data, mu=np.zeros((N, C), "float32"), ls=np.zeros((N, C), "float32"))
    o = compiled(d)
    np.testing.assert_array_equal(o["kl"], np.zeros(N))
    # and grows with |mu|
    d2 = dict(d, mu=np.full((N, C), 2.0, "float32"))
    np.testing.assert_allclose(compiled(d2)["kl"], np.full(N, C * 0.5 * 4.0), rtol=1e-6)


def test_log_densities(out, data):
    np.testing.assert_allclose(out["logq"], ref_log_normal(data["z"], data["mu"], data["ls"]), rtol=RTOL)
    zeros = np.zeros_like(data["mu"])
    np.testing.assert_allclose(out["logp"], ref_log_normal(data["z"], zeros, zeros), rtol=RTOL)


def test_vae_costs_terms(out, data):
    se = ref_se(data["x"], data["y"])
    kl = ref_kl(data["mu"], data["ls"])
    np.testing.assert_allclose(out["vae_se"], se, rtol=RTOL)
    np.testing.assert_allclose(out["vae_kl"], kl, rtol=RTOL)
    np.testing.assert_allclose(out["vae_nll"], ref_nll(data["x"], data["y"], 0.5), rtol=RTOL)
    np.testing.assert_allclose(out["vae_elbo"], -(ref_nll(data["x"], data["y"], 0.5) + kl), rtol=RTOL)
    # at variance 1/2 the loss is exactly the 2015 cost sum(se) + sum(kl)
    cost_2015 = se.sum() + kl.sum()
    np.testing.assert_allclose(out["vae_loss"], cost_2015, rtol=RTOL)
    # ... and -sum(ELBO) = cost_2015 + N * D/2 log(pi)
    np.testing.assert_allclose(-out["vae_elbo"].sum(), cost_2015 + N * D * 0.5 * np.log(np.pi), rtol=RTOL)


def test_vae_costs_other_variance(out, data):
    se = ref_se(data["x"], data["y"])
    kl = ref_kl(data["mu"], data["ls"])
    np.testing.assert_allclose(out["vae2_loss"], se.sum() / 4.0 + kl.sum(), rtol=RTOL)
    np.testing.assert_allclose(out["vae2_nll"], ref_nll(data["x"], data["y"], 2.0), rtol=RTOL)
    # the loss is -sum(elbo) up to a constant that does not depend on y, mu or log_sigma
    const = -out["vae2_elbo"].sum() - out["vae2_loss"]
    np.testing.assert_allclose(const, N * D * 0.5 * np.log(2 * np.pi * 2.0), rtol=RTOL)
