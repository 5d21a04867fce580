"""Tests of the feedforward VAE (ift6266_vae.models.feedforward) and its compiled functions.

A tiny model (784-16-8, code 4, 8-16-784) keeps compile and run times small; the 2015
architecture itself is only built symbolically (never compiled).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import pytest

from ift6266_vae import config, models
from ift6266_vae.models.compiled import ModelFunctions, image_input
from ift6266_vae.nn.layers import BatchNorm
from helpers import BACKEND, TINY_NET as TINY, images

BATCH = 20
OPTIM = {"name": "sgd_nesterov", "learning_rate": 0.01, "divide_lr_by_batch": True, "momentum": 0.9}


def randomize_bn_state(model, seed):
    """Non-trivial population statistics, so deterministic-mode checks are not vacuous."""
    rng = np.random.default_rng(seed)
    for layer in model.layers.values():
        if isinstance(layer, BatchNorm):
            layer.mean.set_value(rng.normal(0, 0.5, layer.n).astype("float32"))
            layer.var.set_value(rng.uniform(0.5, 2.0, layer.n).astype("float32"))


@pytest.fixture(scope="module")
def infer():
    """A tiny model with inference functions (C backend), shared by the module."""
    model = models.build(TINY, seed=1)
    randomize_bn_state(model, 2)
    return ModelFunctions(model, BACKEND)


@pytest.fixture(scope="module")
def trainer():
    model = models.build(TINY, seed=3)
    return ModelFunctions(model, BACKEND, optim_config=OPTIM, batch_size=BATCH)


# ----------------------------------------------------------------------- structure


def test_tiny_model_layers_and_signature():
    m = models.build(TINY, seed=0)
    shapes = m.signature()["shapes"]
    assert m.signature()["kind"] == "feedforward"
    assert shapes["enc.dense1.W"] == [784, 16]
    assert shapes["enc.dense2.W"] == [16, 8]
    assert shapes["enc.mu.dense1.W"] == [8, 4]
    assert shapes["enc.sigma.dense1.W"] == [8, 4]
    assert shapes["dec.dense1.W"] == [4, 8]
    assert shapes["dec.dense2.W"] == [8, 16]
    assert shapes["dec.out.dense1.W"] == [16, 784]
    assert shapes["dec.out.bn1.mean"] == [784]
    # 7 dense + 7 BN layers; params W, b, G, B each; state mean, var per BN
    assert len(m.params) == 7 * 4 and len(m.bn_state) == 7 * 2
    assert set(m.variables) == set(shapes)
    assert all(v.tag.trainable for v in m.params)
    assert all(v.tag.bn_state for v in m.bn_state)
    assert not set(m.params) & set(m.bn_state)


def test_init_is_seeded():
    a, b, c = (models.build(TINY, seed=s) for s in (5, 5, 6))
    for name, v in a.variables.items():
        np.testing.assert_array_equal(v.get_value(), b.variables[name].get_value())
    assert not np.array_equal(a.variables["enc.dense1.W"].get_value(), c.variables["enc.dense1.W"].get_value())


def test_default_config_has_the_2015_architecture():
    cfg = config.load("week9")["model"]
    m = models.build(cfg, seed=0)
    s = m.signature()["shapes"]
    assert s["enc.dense1.W"] == [784, 512]
    assert s["enc.dense2.W"] == [512, 512]
    assert s["enc.dense3.W"] == [512, 256]
    assert s["enc.mu.dense1.W"] == [256, 384]
    assert s["enc.sigma.dense1.W"] == [256, 384]
    assert s["dec.dense1.W"] == [384, 256]
    assert s["dec.dense2.W"] == [256, 512]
    assert s["dec.dense3.W"] == [512, 512]
    assert s["dec.out.dense1.W"] == [512, 784]
    assert m.code_size == 384
    W = m.variables["enc.dense1.W"].get_value()
    assert np.abs(W).max() <= 0.1 and W.std() > 0.05  # uniform in [-0.1, 0.1]
    bns = [l for l in m.layers.values() if isinstance(l, BatchNorm)]
    assert all(l.formula == "2015" and l.alpha == 0.1 for l in bns)


@pytest.mark.parametrize("cfg,expected", [(None, 9), (TINY, 7)])
def test_training_graph_collects_one_bn_stat_per_bn_layer(cfg, expected):
    m = models.build(cfg if cfg is not None else config.load("week9")["model"], seed=0)
    x = image_input()
    eps = pt.matrix("eps", dtype="float32")
    out = m.loss(x, eps, deterministic=False)
    stats = out["bn_stats"]
    bn_layers = [l for l in m.layers.values() if isinstance(l, BatchNorm)]
    assert len(stats) == expected == len(bn_layers)
    assert [s[0] for s in stats] == bn_layers  # each BN layer once, in graph order
    assert m.loss(x, eps, deterministic=True)["bn_stats"] == []


def test_mismatched_activation_lists_raise():
    with pytest.raises(ValueError, match="encoder_activations"):
        models.build({**TINY, "encoder_activations": ["relu"]})
    with pytest.raises(ValueError, match="decoder_activations"):
        models.build({**TINY, "decoder_activations": ["relu"]})
    with pytest.raises(ValueError, match="unknown model kind"):
        models.build({**TINY, "kind": "no_such_kind"})


# ----------------------------------------------------------------------- compiled functions


def test_shapes_of_compiled_functions(infer):
    x = images(6, 10)
    mu, ls = infer.encode(x)
    assert mu.shape == (6, 4) and ls.shape == (6, 4)
    assert mu.dtype == np.float32 and np.isfinite(mu).all() and np.isfinite(ls).all()
    y = infer.decode(mu)
    assert y.shape == (6, 1, 28, 28) and y.dtype == np.float32
    assert y.min() >= -1.0 and y.max() <= 1.0  # hard-tanh output
    np.testing.assert_array_equal(infer.reconstruct(x), y)
    s = infer.sample(7, np.random.default_rng(0))
    assert s.shape == (7, 1, 28, 28)
    # sample with an explicit eps is decode(eps); with an rng it is reproducible
    eps = np.random.default_rng(0).standard_normal((7, 4)).astype("float32")
    np.testing.assert_array_equal(infer.sample(eps=eps), infer.decode(eps))
    np.testing.assert_array_equal(s, infer.decode(eps))
    elbo, nll, kl = infer.elbo(x, np.zeros((6, 4), "float32"))
    assert elbo.shape == nll.shape == kl.shape == (6,)
    np.testing.assert_allclose(elbo, -(nll + kl), rtol=1e-5)


def test_deterministic_output_does_not_depend_on_the_batch(infer):
    x = images(8, 11)
    other = np.concatenate([x[:1], images(5, 12) * 0.2])  # same first example, different company
    mu_all, ls_all = infer.encode(x)
    mu_one, ls_one = infer.encode(x[:1])
    mu_oth, _ = infer.encode(other)
    np.testing.assert_allclose(mu_one[0], mu_all[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ls_one[0], ls_all[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mu_oth[0], mu_all[0], rtol=1e-5, atol=1e-6)
    z = np.random.default_rng(13).standard_normal((5, 4)).astype("float32")
    np.testing.assert_allclose(infer.decode(z[2:3])[0], infer.decode(z)[2], rtol=1e-5, atol=1e-6)
    eps = np.random.default_rng(14).standard_normal((8, 4)).astype("float32")
    e_all = infer.elbo(x, eps, deterministic=True)[0]
    e_one = infer.elbo(x[:1], eps[:1], deterministic=True)[0]
    np.testing.assert_allclose(e_one[0], e_all[0], rtol=1e-5)
    # contrast: with batch statistics the same example's ELBO does depend on its batch
    b_all = infer.elbo(x, eps, deterministic=False)[0]
    b_oth = infer.elbo(np.concatenate([x[:1], images(7, 15) * 0.2]), eps, deterministic=False)[0]
    assert abs(b_all[0] - b_oth[0]) > 1e-2


def test_deterministic_mode_uses_the_stored_statistics(infer):
    """Changing a BN layer's population statistics changes the deterministic outputs."""
    x = images(3, 16)
    before = infer.encode(x)[0]
    layer = infer.model.layers["enc.mu.bn1"]
    old = layer.mean.get_value()
    try:
        layer.mean.set_value(old + 1.0)
        after = infer.encode(x)[0]
    finally:
        layer.mean.set_value(old)
    # mu = G * (h - mean) / (sqrt(var) + eps) + B: shifting mean by 1 shifts mu by -G / (sqrt(var) + eps)
    G, var = layer.G.get_value(), layer.var.get_value()
    np.testing.assert_allclose(after - before, np.broadcast_to(-G / (np.sqrt(var) + 1e-6), before.shape),
                               rtol=1e-4, atol=1e-5)


def test_bn_batch_stats_match_the_layer_inputs(infer):
    """The first BN layer's batch statistics are those of x @ W1 + b1."""
    x = images(10, 17)
    eps = np.zeros((10, 4), "float32")
    stats = infer.bn_batch_stats(x, eps)
    assert len(stats) == 7 and stats[0][0].name == "enc.bn1"
    d = infer.model.layers["enc.dense1"]
    h = x.reshape(10, -1).astype(np.float64) @ d.W.get_value() + d.b.get_value()
    np.testing.assert_allclose(stats[0][1], h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[0][2], h.var(0), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------- training


def test_train_step_reduces_loss_and_updates_running_stats(trainer):
    m = trainer.model
    x = images(BATCH, 20)
    eps = np.random.default_rng(21).standard_normal((BATCH, 4)).astype("float32")
    names = sorted(v.name for v in trainer.optimizer_state)
    assert names == sorted(f"{p.name}.velocity" for p in m.params)

    # one step: running statistics move by alpha towards the batch statistics of the pre-step model
    batch = {layer.name: (mb, vb) for layer, mb, vb in trainer.bn_batch_stats(x, eps)}
    old = {v.name: v.get_value() for v in m.bn_state}
    p_old = m.variables["enc.dense1.W"].get_value()
    loss0, nll0, kl0 = trainer.train_step(x, eps)
    for layer in (l for l in m.layers.values() if isinstance(l, BatchNorm)):
        mb, vb = batch[layer.name]
        a = layer.alpha
        np.testing.assert_allclose(layer.mean.get_value(), (1 - a) * old[layer.mean.name] + a * mb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.var.get_value(), (1 - a) * old[layer.var.name] + a * vb, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(m.variables["enc.dense1.W"].get_value(), p_old)
    # returned values: loss per example (the 2015 cost / N), mean NLL at variance 1/2, mean KL
    assert np.isfinite([loss0, nll0, kl0]).all()
    np.testing.assert_allclose(nll0 + kl0, loss0 + 784 * 0.5 * np.log(np.pi), rtol=1e-4)

    losses = [loss0] + [trainer.train_step(x, eps)[0] for _ in range(29)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses  # ~630 -> ~140 here
    assert trainer.compile_seconds.get("train_step") is not None
