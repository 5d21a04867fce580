"""The profiling module: census on a hand-built graph, a tiny conv profile, the report."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from ift6266_vae import config, profiling

TINY_CONV = {"kind": "conv", "channels": [4, 8], "dense": 16, "code_size": 4}
TINY_FF = {"kind": "feedforward", "encoder": [32, 16], "encoder_activations": ["relu", "tanh"], "code_size": 8,
           "decoder": [16, 32], "decoder_activations": ["linear", "relu"]}


def test_census_counts_a_dot_and_an_add_with_known_flops():
    a = pt.matrix("a", dtype="float32")
    b = pt.matrix("b", dtype="float32")
    c = pt.matrix("c", dtype="float32")
    out = pt.dot(a, b) + c
    m, k, n = 60, 70, 80
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype("float32") for s in ((m, k), (k, n), (m, n))]
    records, summary = profiling.profile_step([a, b, c], [out], None, args, n_calls=3)
    rows = {r["op"]: r for r in profiling.census(records)}
    gemm = [r for r in records if r.useful_flops > 0]
    # the dot (possibly fused with the add into a Gemm) is 2 m k n useful FLOPs
    assert len(gemm) == 1 and gemm[0].useful_flops == 2 * m * k * n
    assert sum(r["count"] for r in rows.values()) == len(records) >= 1
    assert summary["gflop_useful"] == pytest.approx(2 * m * k * n / 1e9)
    assert summary["python_fallback_nodes"] == 0
    assert gemm[0].shapes == [[m, n]]
    assert gemm[0].bytes >= 4 * (m * k + k * n + m * n)


def test_profile_step_without_shapes_times_only():
    a = pt.matrix("a", dtype="float32")
    args = [np.ones((20, 30), "float32")]
    records, summary = profiling.profile_step([a], [pt.dot(a, a.T)], None, args, n_calls=2, shapes=False)
    assert summary["shapes_recorded"] is False and summary["ms_per_call"] > 0
    assert records and all(r.shapes == [] and r.flops == 0 for r in records)


def test_elementwise_flops_count_fused_scalar_ops():
    x = pt.vector("x", dtype="float32")
    y = pt.exp(x) * 2 + 1  # fused into one Composite of 3 scalar ops
    records, _ = profiling.profile_step([x], [y], None, [np.ones(1000, "float32")], n_calls=2)
    ew = [r for r in records if r.flops > 0]
    assert len(ew) == 1 and ew[0].flops == 3 * 1000 and ew[0].useful_flops == 0


@pytest.fixture(scope="module")
def tiny_ablation():
    conv = config.resolve({"model": TINY_CONV, "optim": {"name": "rmsprop_nesterov", "learning_rate": 0.01},
                           "train": {"batch_size": 8}})
    ff = config.resolve({"model": TINY_FF, "train": {"batch_size": 16}})
    rows = {"fast (all fixes)": {}, "all 2015 constructions": profiling.ABLATION["all 2015 constructions"]}
    # linkers: "c" reuses the profiled run; "jax" gives a time (or a note where it is not installed); "nope" is unknown
    return profiling.ablation(conv_batch=8, ff_batch=16, n_calls=2, rows=rows, linkers=("c", "jax", "nope"),
                              conv_cfg=conv, ff_cfg=ff)


def test_profile_of_a_tiny_conv_model_is_self_consistent(tiny_ablation):
    for row in tiny_ablation["rows"]:
        s = row["profile"]["summary"]
        assert s["ms_per_call"] > 0 and s["n_nodes_after_rewrites"] > 0 and s["n_nodes_before_rewrites"] > 0
        # per-node times are measured inside the call: they sum to at most the call time
        # and, on this VM, to most of it (stated fraction: at least 30 % on tiny shapes)
        assert 0.3 * s["ms_per_call"] <= s["ms_in_nodes"] <= 1.05 * s["ms_per_call"]
        assert s["gflop_useful"] > 0
        census = row["profile"]["census"]
        assert census and abs(sum(c["share"] for c in census) - 1) < 1e-6


def test_report_notes_missing_linkers(tiny_ablation, tmp_path):
    times = tiny_ablation["linkers"]["conv fast"]
    # the C/VM time of the profiled fast step is reused, not re-measured
    assert list(times) == ["c", "jax", "nope"]
    assert times["c"]["ms_median"] == tiny_ablation["rows"][0]["ms_per_step"] and "profiled" in times["c"]["source"]
    assert "valid" in times["nope"]["note"] and "c, numba, jax" in times["nope"]["note"]
    assert "ms_median" in times["jax"] or "pip install" in times["jax"]["note"]
    path = profiling.write_report(tiny_ablation, tmp_path)
    text = path.read_text()
    assert "| all 2015 constructions |" in text and "nope" in text
    assert (tmp_path / "ablation.png").exists() and (tmp_path / "time_per_op.png").exists()
    assert (tmp_path / "report.json").exists()


def test_ablation_rows_switch_on_every_2015_construction():
    last = profiling.ABLATION["all 2015 constructions"]
    assert last == {"bn_moments": "naive", "fast_sums": False, "conv_construction": "2015",
                    "upsample": "perforated_2015"}
    singles = [r for name, r in profiling.ABLATION.items() if len(r) == 1]
    assert {k for r in singles for k in r} == set(last)
