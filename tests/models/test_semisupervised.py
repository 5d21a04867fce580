"""Tests of the week-10 semi-supervised VAEs (ift6266_vae.models.semisupervised and their
compiled functions, SSLFunctions): the M2 marginalisation identity, the blog cost without
labels, inference shapes and determinism, bad input.

Tiny models (784-16-8, code 4) on the C backend; one set of compiled inference functions
per variant is shared by the module.
"""

from __future__ import annotations

import numpy as np
import pytest

from ift6266_vae import models
from ift6266_vae.errors import UserError
from ift6266_vae.models.compiled import SSLFunctions
from ift6266_vae.nn.layers import BatchNorm
from helpers import BACKEND, TINY_NET, images

TINY = {**TINY_NET, "kind": "semisupervised", "check_samples": False}
CODE = 4
VARIANCE = 0.5


def noise(n, seed):
    return np.random.default_rng(seed).standard_normal((n, CODE)).astype("float32")


def no_images():
    return np.zeros((0, 1, 28, 28), "float32")


def randomize_bn_state(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers.values():
        if isinstance(layer, BatchNorm):
            layer.mean.set_value(rng.normal(0, 0.5, layer.n).astype("float32"))
            layer.var.set_value(rng.uniform(0.5, 2.0, layer.n).astype("float32"))


def _inference_functions(variant):
    model = models.build({**TINY, "variant": variant}, seed=1)
    randomize_bn_state(model, 2)  # non-trivial population statistics
    return SSLFunctions(model, BACKEND, ce_weight=3.0)


@pytest.fixture(scope="module")
def blog():
    return _inference_functions("blog")


@pytest.fixture(scope="module")
def m2():
    return _inference_functions("m2")


@pytest.fixture(params=["blog", "m2"])
def infer(request):
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------- the costs


def test_m2_unlabeled_bound_is_the_q_weighted_sum_of_labeled_bounds_plus_entropy(m2):
    fns = m2
    x, eps = images(6, 10), noise(6, 11)
    elbo_u, nll_u, kl_u = fns.elbo(x, eps, deterministic=True)
    # labeled bounds of every example under every class, with the same eps
    cost_l = np.stack([-fns.ssl_costs(x, np.full(6, k), no_images(), eps)["elbo"] for k in range(10)], axis=1)
    q = fns.predict_proba(x).astype(np.float64)
    entropy = -(q * np.log(q)).sum(1)
    # not vacuous: the classes give different bounds and q is neither one-hot nor uniform
    assert cost_l.std(axis=1).min() > 1e-2
    assert 0.1 < entropy.min() and entropy.max() < np.log(10) - 1e-3
    np.testing.assert_allclose(-elbo_u, (q * cost_l).sum(1) - entropy, rtol=1e-5)
    # the labeled bound includes -log p(y) = log 10; the unlabeled KL is sum_y q KL_z + KL(q || uniform)
    assert np.all(kl_u >= 0)
    np.testing.assert_allclose(elbo_u, -(nll_u + kl_u), rtol=1e-6)


def test_m2_mixed_batch_matches_its_parts(m2):
    """In a mixed batch the labeled rows get the labeled bound, the unlabeled rows the
    marginalised one, and the objective is -sum(elbo) + ce_weight * sum(ce)."""
    fns = m2
    x, eps, y = images(5, 12), noise(5, 13), np.array([3, 7])
    mixed = fns.ssl_costs(x[:2], y, x[2:], eps)
    lab = fns.ssl_costs(x[:2], y, no_images(), eps[:2])
    unl = fns.elbo(x[2:], eps[2:], deterministic=True)[0]
    np.testing.assert_allclose(mixed["elbo"], np.concatenate([lab["elbo"], unl]), rtol=1e-5)
    q = fns.predict_proba(x[:2])
    np.testing.assert_allclose(mixed["ce"], -np.log(q[[0, 1], y]), rtol=1e-4)
    np.testing.assert_allclose(mixed["loss"], -mixed["elbo"].sum() + 3.0 * mixed["ce"].sum(), rtol=1e-5)


def test_unlabeled_weight_scales_only_the_unlabeled_bound():
    """model.unlabeled_weight = 0 (the supervised-classifier control) leaves the labeled
    bound and the cross-entropy in the objective and drops the unlabeled rows' bound."""
    model = models.build({**TINY, "variant": "m2", "unlabeled_weight": 0.25}, seed=1)
    fns = SSLFunctions(model, BACKEND, ce_weight=3.0)
    x, eps, y = images(5, 30), noise(5, 31), np.array([1, 4])
    c = fns.ssl_costs(x[:2], y, x[2:], eps)
    expected = -c["elbo"][:2].sum() - 0.25 * c["elbo"][2:].sum() + 3.0 * c["ce"].sum()
    np.testing.assert_allclose(c["loss"], expected, rtol=1e-5)
    assert abs(c["elbo"][2:].sum()) > 1.0  # the dropped part is not negligible


def test_m2_with_a_bernoulli_decoder():
    """likelihood "bernoulli": the nll is the binary cross-entropy of the intensities under
    the decoded pixel means, and the M2 marginalisation identity still holds."""
    model = models.build({**TINY, "variant": "m2", "likelihood": "bernoulli"}, seed=1)
    randomize_bn_state(model, 2)
    fns = SSLFunctions(model, BACKEND)
    x, eps, y = images(4, 32), noise(4, 33), np.array([0, 5, 9, 2])
    c = fns.ssl_costs(x, y, no_images(), eps)
    mu, ls = fns.encode(x, y)
    p = fns.decode(mu + np.exp(ls) * eps, y).reshape(4, -1).astype(np.float64)
    assert p.min() > 0 and p.max() < 1
    xf = x.reshape(4, -1).astype(np.float64)
    bce = -(xf * np.log(p) + (1 - xf) * np.log1p(-p)).sum(1)
    np.testing.assert_allclose(c["nll"], bce, rtol=1e-4)
    np.testing.assert_allclose(c["kl"], _kl(mu, ls) + np.log(10), rtol=1e-4)
    elbo_u = fns.elbo(x, eps, deterministic=True)[0]
    cost_l = np.stack([-fns.ssl_costs(x, np.full(4, k), no_images(), eps)["elbo"] for k in range(10)], axis=1)
    q = fns.predict_proba(x).astype(np.float64)
    np.testing.assert_allclose(-elbo_u, (q * cost_l).sum(1) + (q * np.log(q)).sum(1), rtol=1e-5)
    with pytest.raises(ValueError, match="likelihood"):
        models.build({**TINY, "likelihood": "poisson"})


def _gaussian_nll(x, y):
    d = (x.reshape(len(x), -1).astype(np.float64) - y.reshape(len(y), -1)) ** 2
    return (d / (2 * VARIANCE) + 0.5 * np.log(2 * np.pi * VARIANCE)).sum(1)


def _kl(mu, ls):
    mu, ls = mu.astype(np.float64), ls.astype(np.float64)
    return -0.5 * (2 * ls - np.exp(2 * ls) - mu ** 2 + 1).sum(1)


def test_blog_without_labels_is_a_plain_vae_cost_with_kl_on_the_code(blog):
    fns = blog
    x, eps = images(6, 14), noise(6, 15)
    c = fns.ssl_costs(no_images(), np.zeros(0, np.int64), x, eps)
    mu, ls = fns.encode(x)
    z = mu + np.exp(ls) * eps
    recon = fns.decode(z, fns.predict_proba(x))  # the label part of the code is Y'
    nll, kl = _gaussian_nll(x, recon), _kl(mu, ls)
    assert c["ce"].shape == (0,)
    np.testing.assert_allclose(c["kl"], kl, rtol=1e-4)  # KL on the z part of the code only
    np.testing.assert_allclose(c["nll"], nll, rtol=1e-4)
    np.testing.assert_allclose(c["loss"], (nll + kl).sum(), rtol=1e-4)
    # ... which is the 2015 cost sum((x - y)^2) + KL up to the Gaussian constant
    se = ((x.reshape(6, -1) - recon.reshape(6, -1)) ** 2).sum()
    np.testing.assert_allclose(c["loss"], se + kl.sum() + 6 * 784 * 0.5 * np.log(np.pi), rtol=1e-4)


def test_blog_with_labels_clamps_the_label_and_adds_the_cross_entropy(blog):
    fns = blog
    x, eps, y = images(4, 16), noise(4, 17), np.array([0, 5, 9, 2])
    c = fns.ssl_costs(x, y, no_images(), eps)
    mu, ls = fns.encode(x)
    recon = fns.decode(mu + np.exp(ls) * eps, y)  # true one-hot in the code
    ce = -np.log(fns.predict_proba(x)[np.arange(4), y])
    nll, kl = _gaussian_nll(x, recon), _kl(mu, ls)
    np.testing.assert_allclose(c["ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(c["loss"], (nll + kl).sum() + 3.0 * ce.sum(), rtol=1e-4)


# ----------------------------------------------------------------------- inference


def test_predict_generate_analogies_shapes_and_determinism(infer):
    x = images(7, 18)
    pred = infer.predict(x)
    assert pred.shape == (7,) and pred.dtype == np.int64 and set(pred) <= set(range(10))
    p = infer.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    # population BN statistics: one example's prediction does not depend on its batch
    np.testing.assert_allclose(infer.predict_proba(x[2:3])[0], p[2], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(infer.predict(x), pred)

    g = infer.generate(3, 5, seed=np.random.default_rng(0))
    assert g.shape == (5, 1, 28, 28) and g.dtype == np.float32
    assert g.min() >= -1 and g.max() <= 1
    np.testing.assert_array_equal(g, infer.generate(3, 5, seed=np.random.default_rng(0)))
    # the label is clamped: same codes, another label, other images
    assert not np.allclose(g, infer.generate(4, 5, seed=np.random.default_rng(0)))
    eps = np.random.default_rng(0).standard_normal((5, CODE)).astype("float32")
    np.testing.assert_array_equal(g, infer.decode(eps, np.full(5, 3)))

    a = infer.analogies(x[:2])
    assert a.shape == (20, 1, 28, 28)
    mu = infer.encode(x[:2], infer.predict(x[:2]))[0]
    for k in (0, 6):
        np.testing.assert_allclose(a[10 + k], infer.decode(mu[1:2], [k])[0], rtol=1e-5, atol=1e-6)
    assert infer.reconstruct(x[:3]).shape == (3, 1, 28, 28)


def test_bad_labels_at_inference(infer):
    with pytest.raises(UserError, match="0-9"):
        infer.generate(10, 2)
    with pytest.raises(UserError, match="0-9"):
        infer.decode(noise(2, 0), [1, -1])


def test_unknown_variant_and_m2_encoder_without_label():
    with pytest.raises(ValueError, match="blog, m2"):
        models.build({**TINY, "variant": "m3"})
    m = models.build({**TINY, "variant": "m2"})
    import pytensor.tensor as pt

    with pytest.raises(ValueError, match="needs the label"):
        m.encode(pt.matrix("x"), None)


def test_architecture_of_both_variants():
    blog = models.build({**TINY, "variant": "blog"}).signature()["shapes"]
    m2 = models.build({**TINY, "variant": "m2"}).signature()["shapes"]
    # blog: classifier head on the shared trunk; m2: q(z|x,y) reads [x, y], separate classifier from x
    assert blog["enc.dense1.W"] == [784, 16] and blog["cls.out.dense1.W"] == [8, 10]
    assert not any(k.startswith("cls.dense") for k in blog)
    assert m2["enc.dense1.W"] == [794, 16] and m2["cls.dense1.W"] == [784, 16] and m2["cls.out.dense1.W"] == [8, 10]
    for s in (blog, m2):
        assert s["dec.dense1.W"] == [CODE + 10, 8]  # the label is concatenated after the code


# ----------------------------------------------------------------------- m1m2
def test_m1m2_is_m2_on_m1_posterior_means():
    """M2 on M1's features: the bound of the m1m2 model on images equals M2's bound on the
    rows of that width (M1's posterior means, with its population BN statistics); images
    decode through M1's decoder; M1 is frozen (not trained) and saved with the model."""
    import pytensor
    import pytensor.tensor as pt

    model = models.build({**TINY, "variant": "m1m2", "m1_hidden": [12], "m1_code_size": 6}, seed=1)
    randomize_bn_state(model, 2)
    randomize_bn_state(model.m1, 3)
    x, eps = images(6, 4), noise(6, 5)
    labels = np.array([3, 1], dtype=np.int64)
    xi, yi, ui, ei = pt.tensor4("x"), pt.lvector("y"), pt.tensor4("u"), pt.matrix("e")
    on_images = pytensor.function([xi, yi, ui, ei], [model.ssl_loss(xi, yi, ui, ei, True)[k] for k in
                                                     ("elbo", "nll", "kl", "loss")], mode="FAST_COMPILE")
    feats = pytensor.function([xi], model.m1.encode(xi, deterministic=True)[0], mode="FAST_COMPILE")(x)
    assert feats.shape == (6, 6)
    fl, fu = pt.matrix("fl"), pt.matrix("fu")
    on_rows = pytensor.function([fl, yi, fu, ei], [model.ssl_loss(fl, yi, fu, ei, True)[k] for k in
                                                   ("elbo", "nll", "kl", "loss")], mode="FAST_COMPILE")
    for a, b in zip(on_images(x[:2], labels, x[2:], eps), on_rows(feats[:2], labels, feats[2:], eps)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    z, onehot_y = pt.matrix("z"), pt.matrix("onehot_y")
    decoded = pytensor.function([z, onehot_y], model.decode(z, onehot_y, True), mode="FAST_COMPILE")(
        noise(3, 7), np.eye(10, dtype="float32")[:3])
    assert decoded.shape == (3, 1, 28, 28)
    m1_vars = set(model.m1.variables.values())
    assert not m1_vars & set(model.params) and not m1_vars & set(model.bn_state)
    assert set(model.frozen_variables) == {f"m1.{k}" for k in model.m1.variables}
