"""The conv ablation (make profile) on a tiny conv VAE: every graph timed in interleaved rounds
with its spread, the decomposition adds up on real times, the report and figures are written,
missing linkers get a note, the rows switch every 2015 construction on and off."""

from __future__ import annotations

import json

import pytest

from ift6266_vae import config
from ift6266_vae.experiments import conv_ablation, conv_finding

TINY_CONV = {"kind": "conv", "channels": [4, 8], "dense": 16, "code_size": 4}
TINY_FF = {"kind": "feedforward", "encoder": [32, 16], "encoder_activations": ["relu", "tanh"], "code_size": 8,
           "decoder": [16, 32], "decoder_activations": ["linear", "relu"]}
#: two of the four constructions: all four subsets are four graphs (exact Shapley values)
TWO = {k: conv_ablation.FACTORS[k] for k in ("BN moments", "perforated upsampling")}
ROWS = {"fast (all fixes)": {}, "+ BN moments": TWO["BN moments"], "+ perforated": TWO["perforated upsampling"],
        "both": {**TWO["BN moments"], **TWO["perforated upsampling"]}}
ROUNDS = 3


@pytest.fixture(scope="module")
def tiny_ablation():
    conv = config.resolve({"model": TINY_CONV, "optim": {"name": "rmsprop_nesterov", "learning_rate": 0.01},
                           "train": {"batch_size": 8}})
    ff = config.resolve({"model": TINY_FF, "train": {"batch_size": 16}})
    # linkers: "jax" times the two ends (or gets a note where it is not installed); "nope" is unknown
    return conv_ablation.ablation(conv_batch=8, ff_batch=16, rows=ROWS, linkers=("c", "jax", "nope"), conv_cfg=conv,
                                  ff_cfg=ff, rounds=ROUNDS, n_calls=2, factors=TWO)


def test_every_graph_is_timed_in_interleaved_rounds_with_its_spread(tiny_ablation):
    res = tiny_ablation
    timed = [res["feedforward"], *res["rows"], *(e for lk in res["linkers"].values() for e in lk.values() if "ms" in e)]
    for entry in timed:
        s = entry["ms_spread"]
        assert len(entry["ms"]) == ROUNDS == s["n"] and s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
        assert s["min"] > 0 and entry["ms_per_step"] == s["median"] and entry["compile_s"] > 0
    steps = {tuple(k) for k in res["orders"][0]}
    assert len(res["orders"]) == ROUNDS and all({tuple(k) for k in o} == steps and len(o) == len(steps)
                                                 for o in res["orders"])
    assert ("c", "feedforward") in steps and all(("c", name) in steps for name in ROWS)
    assert res["ends"] == {"fast": "fast (all fixes)", "2015": "both"}
    jax = res["linkers"]["jax"]
    assert set(jax) == {"feedforward", "fast", "2015"}
    assert "ms" in jax["2015"] or "pip install" in jax["2015"]["note"]
    nope = res["linkers"]["nope"]["fast"]["note"]
    assert "valid" in nope and "c, numba, jax" in nope
    assert res["meta"]["gemm_start"]["median"] > 0 and res["meta"]["gemm_end"]["n"] == 5


def test_the_decomposition_of_real_times_adds_up(tiny_ablation):
    att = tiny_ablation["analysis"]["attribution"]
    assert att["method"].startswith("exact")  # all four subsets of the two constructions were timed
    parts = sum(f["shapley"]["ms"]["value"] for f in att["factors"].values())
    assert parts == pytest.approx(att["gap"]["value"], rel=1e-9, abs=1e-9)
    assert att["higher_order"]["ms"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert att["bn"]["factors"] == ["BN moments"]
    assert tiny_ablation["analysis"]["finding"].startswith("**Finding**")


def test_the_census_of_the_two_ends_is_self_consistent(tiny_ablation):
    profiled = [r for r in tiny_ablation["rows"] if "profile" in r]
    assert [r["name"] for r in profiled] == ["fast (all fixes)", "both"]
    for row in profiled:
        s = row["profile"]["summary"]
        assert s["ms_per_call"] > 0 and s["n_nodes_after_rewrites"] > 0 and s["n_nodes_before_rewrites"] > 0
        # per-node times are measured inside the call: they sum to at most the call time
        # and, on this VM, to most of it (stated fraction: at least 30 % on tiny shapes)
        assert 0.3 * s["ms_per_call"] <= s["ms_in_nodes"] <= 1.05 * s["ms_per_call"]
        assert s["gflop_useful"] > 0
        census = row["profile"]["census"]
        assert census and abs(sum(c["share"] for c in census) - 1) < 1e-6
        assert all(c["ms_min"] <= c["ms"] * (1 + 1e-9) <= c["ms_max"] * (1 + 1e-9) for c in census)


def test_the_report_opens_with_its_finding(tiny_ablation, tmp_path):
    path = conv_ablation.write_report(tiny_ablation, tmp_path)
    text = path.read_text()
    assert text.splitlines()[2] == tiny_ablation["analysis"]["finding"]
    assert "| both |" in text and "nope" in text and "## Attribution" in text and "## Op census: both" in text
    for fig in ("ablation.png", "attribution.png", "time_per_op.png"):
        assert (tmp_path / fig).exists()
    again = json.loads((tmp_path / "report.json").read_text())
    assert conv_finding.compare(again, tiny_ablation)["verdict"] == "same"


def test_the_rows_switch_every_2015_construction_on_and_off():
    last = conv_ablation.ABLATION["all 2015 constructions"]
    assert last == {"bn_moments": "naive", "fast_sums": False, "conv_construction": "2015",
                    "upsample": "perforated_2015"}
    singles = [r for r in conv_ablation.ABLATION.values() if len(r) == 1]
    assert {k for r in singles for k in r} == set(last)
    rows = conv_ablation.default_rows()
    subsets = {name: conv_ablation.subset_of(ov) for name, ov in rows.items()}
    factors = set(conv_ablation.FACTORS)
    assert len(rows) == 11 and list(rows)[0] == "fast (all fixes)" and list(rows)[-1] == "all 2015 constructions"
    assert {frozenset(s) for s in subsets.values() if s is not None} == (
        {frozenset(), frozenset(factors)} | {frozenset([f]) for f in factors} | {frozenset(factors - {f}) for f in factors})
    assert subsets["+ upsample, then conv on the 2x grid (no sub-pixel)"] is None  # no factor of its own
    assert len(conv_ablation.default_rows(all_subsets=True)) == 17
