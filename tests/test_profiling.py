"""The profiling module: census, FLOP estimates and times on hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import pytest

from ift6266_vae import profiling

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
