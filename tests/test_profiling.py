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


def test_spread_and_the_gemm_yardstick():
    s = profiling.spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0, "n": 5}
    g = profiling.gemm_gflops(n=64, reps=3)
    assert g["n"] == 3 and 0 < g["min"] <= g["median"] <= g["max"]


class _Counter:
    def __init__(self, out=1.0):
        self.calls, self.resets, self.out = 0, 0, out

    def reset(self):
        self.resets += 1

    def __call__(self):
        self.calls += 1
        return [np.float32(self.out)]


def test_interleaved_rounds_shuffle_every_step_once_per_round_after_warmup():
    steps = {name: _Counter() for name in "abcde"}
    res = profiling.interleaved_times(steps, rounds=6, warmup=2, seed=3)
    assert res["rounds"] == 6 and len(res["orders"]) == 6
    assert all(sorted(o) == list("abcde") for o in res["orders"])
    assert len({tuple(o) for o in res["orders"]}) > 1  # shuffled
    for name, step in steps.items():
        assert len(res["ms"][name]) == 6 and all(t >= 0 for t in res["ms"][name])
        assert step.calls == 2 + 6 and step.resets == 2  # warm-up calls are not timed; reset before and after
    again = profiling.interleaved_times({n: _Counter() for n in "abcde"}, rounds=6, warmup=0, seed=3)
    assert again["orders"] == res["orders"]  # seeded


def test_a_time_budget_cuts_rounds_but_not_below_the_minimum_and_non_finite_steps_fail():
    res = profiling.interleaved_times({"a": _Counter()}, rounds=50, warmup=1, time_budget_s=0.0, min_rounds=5)
    assert res["rounds"] == 5 and len(res["ms"]["a"]) == 5
    with pytest.raises(RuntimeError, match="non-finite"):
        profiling.interleaved_times({"bad": _Counter(float("nan"))}, rounds=2)


def test_compile_step_restores_what_its_updates_change():
    import pytensor

    w = pytensor.shared(np.ones(3, "float32"), name="w")
    x = pt.vector("x", dtype="float32")
    step = profiling.compile_step([x], [pt.sum(w * x)], {w: w * 2}, [np.ones(3, "float32")], "c")
    assert step.compile_s > 0 and np.all(w.get_value() == 1)  # the compile-time call is undone
    step()
    assert np.all(w.get_value() == 2)
    step.reset()
    assert np.all(w.get_value() == 1)
