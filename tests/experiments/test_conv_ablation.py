"""The conv ablation (make profile): a tiny conv profile is self-consistent, the report notes
missing linkers, the rows switch on every 2015 construction."""

from __future__ import annotations

import pytest

from ift6266_vae import config
from ift6266_vae.experiments import conv_ablation

TINY_CONV = {"kind": "conv", "channels": [4, 8], "dense": 16, "code_size": 4}
TINY_FF = {"kind": "feedforward", "encoder": [32, 16], "encoder_activations": ["relu", "tanh"], "code_size": 8,
           "decoder": [16, 32], "decoder_activations": ["linear", "relu"]}


@pytest.fixture(scope="module")
def tiny_ablation():
    conv = config.resolve({"model": TINY_CONV, "optim": {"name": "rmsprop_nesterov", "learning_rate": 0.01},
                           "train": {"batch_size": 8}})
    ff = config.resolve({"model": TINY_FF, "train": {"batch_size": 16}})
    rows = {"fast (all fixes)": {}, "all 2015 constructions": conv_ablation.ABLATION["all 2015 constructions"]}
    # linkers: "c" reuses the profiled run; "jax" gives a time (or a note where it is not installed); "nope" is unknown
    return conv_ablation.ablation(conv_batch=8, ff_batch=16, n_calls=2, rows=rows, linkers=("c", "jax", "nope"),
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
    path = conv_ablation.write_report(tiny_ablation, tmp_path)
    text = path.read_text()
    assert "| all 2015 constructions |" in text and "nope" in text
    assert (tmp_path / "ablation.png").exists() and (tmp_path / "time_per_op.png").exists()
    assert (tmp_path / "report.json").exists()


def test_ablation_rows_switch_on_every_2015_construction():
    last = conv_ablation.ABLATION["all 2015 constructions"]
    assert last == {"bn_moments": "naive", "fast_sums": False, "conv_construction": "2015",
                    "upsample": "perforated_2015"}
    singles = [r for name, r in conv_ablation.ABLATION.items() if len(r) == 1]
    assert {k for r in singles for k in r} == set(last)
