"""The arithmetic of the attribution on synthetic tables of graph times: the parts add up to
the gap exactly, the pairwise values are the Shapley values when interactions are pairwise,
ties and rankings."""

from __future__ import annotations

from itertools import combinations

import pytest

from ift6266_vae.experiments import attribution as at

F = ("a", "b", "c", "d")


def table(base, main, pairs=None, triples=None, subsets="corners"):
    """T(S) = base + sum of main effects + pairwise and three-way interaction terms."""
    pairs, triples = pairs or {}, triples or {}

    def T(S):
        return (base + sum(main[f] for f in S) + sum(v for k, v in pairs.items() if set(k) <= S)
                + sum(v for k, v in triples.items() if set(k) <= S))

    full = frozenset(F)
    if subsets == "all":
        keys = [frozenset(c) for k in range(len(F) + 1) for c in combinations(F, k)]
    else:
        keys = [frozenset(), full, *(frozenset([f]) for f in F), *(full - {f} for f in F)]
    return {S: T(S) for S in keys}


MAIN = {"a": 300.0, "b": 5.0, "c": 170.0, "d": 90.0}
PAIRS = {("c", "d"): -120.0, ("a", "b"): 7.0, ("b", "c"): 3.0}


def test_parts_add_up_to_the_gap_exactly():
    d = at.decompose(table(350.0, MAIN, PAIRS, {("a", "c", "d"): 40.0}), F)
    assert d["gap"] == pytest.approx(sum(MAIN.values()) + sum(PAIRS.values()) + 40.0)
    assert sum(d["shapley"].values()) + d["higher_order"] == pytest.approx(d["gap"], abs=1e-9)
    assert d["method"].startswith("pairwise")
    # one at a time, the effects do not add up to the gap: the interactions are visible
    assert d["sum_on"] == pytest.approx(sum(MAIN.values()))
    assert d["interaction"]["d"] == pytest.approx(-120.0 + 40.0)
    assert d["interaction"]["c"] == pytest.approx(-120.0 + 3.0 + 40.0)


def test_pairwise_values_are_the_shapley_values_when_interactions_are_pairwise():
    d = at.decompose(table(350.0, MAIN, PAIRS), F)
    exact = at.shapley(table(350.0, MAIN, PAIRS, subsets="all"), F)
    assert d["higher_order"] == pytest.approx(0.0, abs=1e-9)
    for f in F:
        assert d["shapley"][f] == pytest.approx(exact[f])
    # a pairwise interaction is split equally between its two factors
    assert exact["c"] == pytest.approx(170.0 - 60.0 + 1.5) and exact["d"] == pytest.approx(90.0 - 60.0)


def test_a_three_way_interaction_is_left_visible_or_shared_exactly():
    three = {("a", "c", "d"): 60.0}
    d = at.decompose(table(0.0, MAIN, None, three), F)
    assert d["higher_order"] == pytest.approx(-30.0)  # (on + off) / 2 counts it 3/2 times
    full = at.decompose(table(0.0, MAIN, None, three, subsets="all"), F)
    assert full["method"].startswith("exact") and full["higher_order"] == pytest.approx(0.0, abs=1e-9)
    assert full["shapley"]["a"] == pytest.approx(300.0 + 20.0)  # a third each
    assert sum(full["shapley"].values()) == pytest.approx(full["gap"])


def test_overlapping_intervals_are_a_tie():
    point = {"a": 0.5, "b": 0.3, "c": 0.28, "d": 0.05}
    intervals = {"a": (0.45, 0.55), "b": (0.25, 0.33), "c": (0.2, 0.31), "d": (0.0, 0.1)}
    groups = at.tie_groups(point, intervals)
    assert groups == [["a"], ["b", "c"], ["d"]]
    assert at.ranking_text(groups) == "a > b = c > d"


def test_rank_stability_counts_the_rounds_each_factor_held_its_place():
    groups = [["a"], ["b", "c"], ["d"]]
    rounds = {"a": [5, 5, 1], "b": [3, 2, 3], "c": [2, 3, 2], "d": [0, 0, 4]}
    st = at.rank_stability(groups, rounds)
    # round 3: d is first and a third: neither holds its place; b and c swap within their tie
    assert st["held"] == {"a": 2 / 3, "b": 1.0, "c": 1.0, "d": 2 / 3} and st["all_held"] == 2 / 3
    # the strict order a > b > c > d held in round 1 only (b and c swap in round 2); a first twice, d once
    assert st["strict_held"] == 1 / 3 and st["first"] == {"a": 2, "b": 0, "c": 0, "d": 1}
    # one tie group: every factor holds its place whatever happens; the strict order only in round 1
    one = at.rank_stability([["a", "b", "c", "d"]], rounds)
    assert one["all_held"] == 1.0 and one["strict_held"] == 1 / 3


def test_compare_rankings():
    a = [["x"], ["y", "z"], ["w"]]
    assert at.compare_rankings(a, [["x"], ["z", "y"], ["w"]])["verdict"] == "same"
    assert at.compare_rankings(a, [["x"], ["y"], ["z"], ["w"]])["verdict"] == "compatible"
    diff = at.compare_rankings(a, [["y"], ["x"], ["z", "w"]])
    assert diff["verdict"] == "different" and ("x", "y") in diff["conflicts"]
