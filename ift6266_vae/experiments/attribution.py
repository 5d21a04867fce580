"""How much of a slowdown each switch causes, in parts that add up to the whole.

A graph has ``n`` switches (factors), each on (a 2015 construction) or off (its fix);
``times[frozenset(factors on)]`` is the measured time of that graph. The gap is the time
with every switch on minus the time with none. Per factor:

* ``on``: its effect switched on alone from the fast graph, ``T({i}) - T({})``;
* ``off``: its effect switched off alone from the all-on graph, ``T(all) - T(all - {i})``;
* ``interaction = off - on``: how much its cost depends on the other switches (0 when the
  factors do not interact; negative when they share work, e.g. two constructions that both
  drop the same fusion);
* ``shapley``: its average marginal effect over every order in which the switches can be
  turned on. Exact when all ``2**n`` graphs were measured; from the ``2n + 2`` graphs above
  it is ``(on + off) / 2``, which *is* the Shapley value whenever the factors interact at
  most in pairs. ``higher_order`` (interactions of three or more factors; 0 when exact) is
  what that leaves unplaced, so the values plus ``higher_order`` add up to the gap exactly.

Pure arithmetic on numbers: no PyTensor, no timing (tested on synthetic tables).
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

__all__ = ["compare_rankings", "decompose", "per_round", "rank_stability", "ranking_text", "shapley", "tie_groups"]


def _all_subsets(factors):
    return [frozenset(c) for k in range(len(factors) + 1) for c in combinations(factors, k)]


def shapley(times: dict, factors) -> dict:
    """Exact Shapley value of each factor from the times of all ``2**n`` subsets."""
    n = len(factors)
    out = {}
    for f in factors:
        others = [g for g in factors if g != f]
        total = 0.0
        for S in _all_subsets(others):
            w = factorial(len(S)) * factorial(n - len(S) - 1) / factorial(n)
            total += w * (times[S | {f}] - times[S])
        out[f] = total
    return out


def decompose(times: dict, factors) -> dict:
    """One-at-a-time effects both ways, their interactions, and a decomposition of the gap
    (see the module docstring). ``times`` maps frozensets of factors to times; it needs the
    empty set, the full set, each single factor and each full-minus-one set."""
    factors = list(factors)
    none, full = frozenset(), frozenset(factors)
    gap = times[full] - times[none]
    on = {f: times[frozenset([f])] - times[none] for f in factors}
    off = {f: times[full] - times[full - {f}] for f in factors}
    exact = all(S in times for S in _all_subsets(factors))
    value = shapley(times, factors) if exact else {f: (on[f] + off[f]) / 2 for f in factors}
    return {"gap": gap, "on": on, "off": off, "interaction": {f: off[f] - on[f] for f in factors},
            "shapley": value, "higher_order": gap - sum(value.values()),
            "sum_on": sum(on.values()), "sum_off": sum(off.values()),
            "method": "exact Shapley (all subsets)" if exact else "pairwise Shapley ((on + off) / 2)"}


def per_round(series: dict, factors) -> list[dict]:
    """:func:`decompose` of each round: ``series`` maps subsets to lists aligned by round."""
    n = min(len(v) for v in series.values())
    return [decompose({S: v[r] for S, v in series.items()}, factors) for r in range(n)]


def tie_groups(point: dict, intervals: dict) -> list[list]:
    """Factors ordered by ``point`` (largest first) and grouped into ties: a factor joins the
    group of the factor ranked just above it when their ``intervals`` (factor -> (low,
    high)) overlap."""
    order = sorted(point, key=lambda f: -point[f])
    groups: list[list] = []
    for f in order:
        if groups and intervals[f][1] >= intervals[groups[-1][-1]][0]:
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


def rank_stability(groups: list[list], rounds: dict) -> dict:
    """How often each factor held its place: in a round, a factor holds it when its rank
    among that round's values falls within its group's ranks (a tie group spans several).
    A tie group's members always hold their places, so a ranking that is one tie says
    nothing there; ``strict_held`` (rounds whose own order is the groups' order read as a
    strict one, i.e. the order of the medians) and ``first`` (rounds each factor came first)
    say how often the order of the point values held.
    Returns ``{"held": {factor: fraction of rounds}, "all_held": fraction, "strict_held":
    fraction, "first": {factor: rounds}, "n": rounds}``."""
    places, start = {}, 0
    for g in groups:
        for f in g:
            places[f] = range(start, start + len(g))
        start += len(g)
    n = min(len(v) for v in rounds.values())
    strict = [f for g in groups for f in g]
    held = {f: 0 for f in places}
    first = {f: 0 for f in places}
    all_held = strict_held = 0
    for r in range(n):
        order = sorted(places, key=lambda f: -rounds[f][r])
        ok = {f: order.index(f) in places[f] for f in places}
        for f in places:
            held[f] += ok[f]
        all_held += all(ok.values())
        strict_held += order == strict
        first[order[0]] += 1
    return {"held": {f: held[f] / n for f in places}, "all_held": all_held / n if n else 0.0,
            "strict_held": strict_held / n if n else 0.0, "first": first, "n": n}


def ranking_text(groups: list[list]) -> str:
    """``A > B = C > D`` (``=``: a tie)."""
    return " > ".join(" = ".join(g) for g in groups)


def compare_rankings(a: list[list], b: list[list]) -> dict:
    """Two tie-grouped rankings of the same factors: ``same`` (identical groups),
    ``compatible`` (they differ only where one calls a tie) or ``different`` (some pair is
    ordered one way in one and the other way in the other; ``conflicts`` lists them)."""
    def rank(groups):
        return {f: i for i, g in enumerate(groups) for f in g}

    ra, rb = rank(a), rank(b)
    if set(ra) != set(rb):
        return {"verdict": "different", "conflicts": [], "note": "not the same factors"}
    conflicts = [(x, y) for x, y in combinations(sorted(ra), 2)
                 if (ra[x] - ra[y]) * (rb[x] - rb[y]) < 0]
    same = [sorted(g) for g in a] == [sorted(g) for g in b]
    return {"verdict": "same" if same else "compatible" if not conflicts else "different", "conflicts": conflicts}
