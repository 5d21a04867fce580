"""The profiling report's finding on synthetic results (tables of costs, not measurements): its
words follow the numbers, identities hold exactly, every number has its spread, two runs
compare."""

from __future__ import annotations

import json

import pytest

from helpers import synthetic_profile
from ift6266_vae import cli
from ift6266_vae.experiments import conv_finding, conv_report

BN_DOMINATES = {"base": 350.0, "BN moments": 300.0, "C-loop sums": 250.0, "full-then-crop conv": 60.0,
                "perforated upsampling": 40.0}
CONV_DOMINATES = {"base": 350.0, "BN moments": 5.0, "C-loop sums": 200.0, "full-then-crop conv": 700.0,
                  "perforated upsampling": 300.0}
TIED = {"base": 350.0, "BN moments": 10.0, "C-loop sums": 20.0, "full-then-crop conv": 200.0,
        "perforated upsampling": 205.0}
ALL_TIED = {"base": 350.0, "BN moments": 150.0, "C-loop sums": 150.0, "full-then-crop conv": 150.0,
            "perforated upsampling": 150.0}
NO_GAP = {"base": 350.0, "BN moments": 2.0, "C-loop sums": 1.0, "full-then-crop conv": 3.0, "perforated upsampling": 1.0}


@pytest.fixture(scope="module")
def runs():
    return {"bn": synthetic_profile(BN_DOMINATES), "conv": synthetic_profile(CONV_DOMINATES, overlap=150.0),
            "tied": synthetic_profile(TIED, noise=0.05), "all tied": synthetic_profile(ALL_TIED, noise=0.1),
            "all tied 2": synthetic_profile(ALL_TIED, noise=0.1, seed=3), "none": synthetic_profile(NO_GAP),
            "conv2": synthetic_profile(CONV_DOMINATES, overlap=150.0, seed=1, rounds=9,
                                       linkers={"numba": (280.0, 820.0)})}


def test_the_words_follow_the_numbers(runs):
    bn, conv = runs["bn"]["analysis"], runs["conv"]["analysis"]
    assert bn["labels"]["bn"] == "main cause" and "BN was the main cause" in bn["finding"]
    assert "BN moments" in bn["attribution"]["groups"][0]
    assert conv["labels"]["bn"] == "real, not the main cause" and "BN was a real but not the main cause" in conv["finding"]
    assert conv["labels"]["top"] == "main"
    assert "The main cause of the graph overhead: full-then-crop conv" in conv["finding"]
    assert conv["attribution"]["groups"][0] == ["full-then-crop conv"]
    assert bn["finding"].split("Ranking")[0] != conv["finding"].split("Ranking")[0]
    # both report an overlap the one-at-a-time view hides: the conv and the perforated upsampling share work
    assert conv["attribution"]["factors"]["perforated upsampling"]["interaction"]["ms"]["value"] < -100
    assert "the fix is the graph, not the linker" in conv["finding"] and "JAX" in conv["finding"]


def test_a_tie_is_called_a_tie(runs):
    a = runs["tied"]["analysis"]
    assert a["labels"]["top"] == "tie" and a["attribution"]["groups"][0] == ["perforated upsampling",
                                                                               "full-then-crop conv"]
    assert "tied" in a["finding"] and "perforated upsampling = full-then-crop conv" in a["finding"]


def test_one_tie_of_all_causes_says_what_the_rounds_did(runs):
    a = runs["all tied"]["analysis"]
    st = a["attribution"]["stability"]
    assert len(a["attribution"]["groups"]) == 1 and st["all_held"] == 1.0  # trivially: one group
    assert "one tie: no cause stands apart" in a["finding"] and "kept its place" not in a["finding"]
    assert f"the order of the medians held in {round(st['strict_held'] * st['n'])} of {st['n']} rounds" in a["finding"]
    both = conv_finding.compare(runs["all tied"], runs["all tied 2"])
    assert both["verdict"] == "same" and "neither run orders them" in both["markdown"]


def test_no_gap_ranks_no_cause(runs):
    a = runs["none"]["analysis"]
    assert a["labels"]["gap"] == "none" and "no clear time" in a["finding"] and "Ranking" not in a["finding"]


def test_identities_hold_exactly(runs):
    for res in runs.values():
        a = res["analysis"]
        assert a["ratio"]["value"] == pytest.approx(a["work"]["ratio"] * a["graph"]["value"] * a["left"]["value"],
                                                    rel=1e-12)
        att = a["attribution"]
        parts = sum(f["shapley"]["ms"]["value"] for f in att["factors"].values()) + att["higher_order"]["ms"]["value"]
        assert parts == pytest.approx(att["gap"]["value"], rel=1e-12)
        shares = sum(f["shapley"]["share"]["value"] for f in att["factors"].values())
        assert shares + att["higher_order"]["share"]["value"] == pytest.approx(1.0)
        for q in (a["ratio"], a["graph"], a["left"], *(f["shapley"]["share"] for f in att["factors"].values())):
            assert q["lo"] <= q["hi"]


def test_every_number_of_the_report_has_its_spread(runs):
    res = runs["conv2"]
    a, md = res["analysis"], conv_report.report_markdown(res)
    finding = md.split("\n\n")[1]
    assert finding == a["finding"] and finding.startswith("**Finding**")
    att = a["attribution"]
    quoted = [conv_finding.x_(a["ratio"], 1), conv_finding.x_(a["graph"]), conv_finding.x_(a["left"]),
              conv_finding.num(a["step_ms"]["2015"]), conv_finding.num(a["step_ms"]["fast"]),
              conv_finding.num(a["per_example"]["ff_ms"]), conv_finding.pct(att["bn"]["share"]),
              conv_finding.pct(att["sum_on"]["share"]), conv_finding.pct(att["higher_order"]["share"]),
              conv_finding.pct(att["factors"]["full-then-crop conv"]["shapley"]["share"]),
              *(conv_finding.x_(a["linkers"][k]["graph"]) for k in ("c", "numba"))]
    for text in quoted:
        assert text in finding and "[" in text
    sections = md.split("\n## ")
    graphs = next(s for s in sections if s.startswith("The conv graphs"))
    rows = [line.split(" | ") for line in graphs.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 1 + len(res["rows"])  # the feedforward reference and every conv graph
    for cells in rows:
        assert "[" in cells[2] and "–" in cells[3]  # median [IQR], min–max
    attribution = next(s for s in sections if s.startswith("Attribution"))
    table = [line for line in attribution.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 4 + 2  # four constructions, the interactions of three or more, the gap
    for line in table:  # the share in ms and in % of the gap (the gap is 100 % of itself)
        cells = line.split(" | ")
        assert "[" in cells[4] and ("[" in cells[5] or cells[5] == "100 %")
    linkers = next(s for s in sections if s.startswith("The two ends"))
    assert "| Numba | " in linkers and "not installed" in linkers


def test_a_drifting_machine_is_flagged():
    res = synthetic_profile(CONV_DOMINATES, overlap=150.0)
    res["meta"]["gemm_end"] = {**res["meta"]["gemm_end"], "median": 180.0}
    a = conv_finding.analyze(res)
    assert "drifted by -28 %" in a["finding"]


def test_linker_words_do_not_depend_on_the_order_the_linkers_ran_in(runs):
    res = runs["conv2"]
    flipped = {**res, "linkers": dict(reversed(list(res["linkers"].items())))}
    assert list(flipped["linkers"]) != list(res["linkers"])
    assert conv_finding.analyze(flipped)["labels"]["linkers"] == res["analysis"]["labels"]["linkers"]
    assert "linkers" not in conv_finding.compare(res, {**flipped, "analysis": conv_finding.analyze(flipped)})["labels_differ"]


def test_two_runs_compare(runs, tmp_path):
    same = conv_finding.compare(runs["conv"], runs["conv2"])
    assert same["verdict"] == "same" and "the same ranking of causes" in same["markdown"]
    other = conv_finding.compare(runs["conv"], runs["bn"])
    assert other["verdict"] == "different" and ("BN moments", "full-then-crop conv") in other["conflicts"]
    assert "bn" in other["labels_differ"]
    paths = {}
    for name in ("conv", "conv2", "bn"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(runs[name]))
        paths[name] = str(tmp_path / name)
    assert cli.main(["profile-compare", paths["conv"], paths["conv2"] + "/report.json"]) == 0
    assert cli.main(["profile-compare", paths["conv"], paths["bn"]]) == 1
    assert cli.main(["profile-compare", paths["conv"], str(tmp_path / "nowhere")]) == 2
