"""The profiling report's finding, written from the run's own numbers.

:func:`analyze` turns the interleaved times of :func:`.conv_ablation.ablation` into the
numbers of the finding. Each is a value computed from the per-graph medians (so that the
identities hold exactly: the product below, the parts of the gap) with its 90 % bootstrap
interval over rounds (the rounds resampled with replacement, the same rounds for every
graph so that paired quantities stay paired; 5th and 95th percentiles):

* per example, conv/ff cost ratio ``R = W x G x L``: ``W`` the inherent work ratio
  (analytic FLOPs per example, an exact count), ``G`` the graph overhead of the 2015
  constructions (all-2015 over fast time per step), ``L`` what is left of the fast graph
  (its time per FLOP over the feedforward step's);
* the decomposition of the gap (all 2015 minus fast) over the constructions
  (:mod:`.attribution`), their ranking with ties (intervals that overlap) and how often it
  held round by round;
* BN's share (its float64 moments and the C-loop sums), ``G`` on each linker.

:func:`finding` picks the words from those numbers with the thresholds of
:data:`THRESHOLDS`; :func:`compare` says whether two runs rank the causes the same way.
"""

from __future__ import annotations

import numpy as np

from .attribution import compare_rankings, decompose, per_round, rank_stability, ranking_text, tie_groups

#: gap: the 2015 graph counts as slower when the low end of G's interval (or of a linker's
#: all-2015 / fast ratio) exceeds it; parity: L's interval within this band means "as fast
#: per FLOP as the feedforward step"; main: a cause (or BN) whose share's interval starts at
#: or above it is the main cause; minor: a share whose interval ends below it is "not a
#: cause"; drift: a GEMM rate changing by more than this between start and end is flagged.
#: Ties: two causes whose shares' intervals overlap.
THRESHOLDS = {"gap": 1.10, "parity": (0.8, 1.25), "main": 0.5, "minor": 0.10, "drift": 0.10}
#: bootstrap resamples and the percentiles of the interval
BOOTSTRAP = {"n": 2000, "percentiles": (5, 95)}
LINKER_NAMES = {"c": "C/VM", "numba": "Numba", "jax": "JAX"}
_BN_PARTS = {"BN moments": "its float64 moments", "C-loop sums": "the C-loop sums (mostly its statistics and their gradients)"}


def q(value, samples) -> dict:
    """A quantity: its ``value`` and the interval ``lo``-``hi`` of its bootstrap ``samples``."""
    v = np.asarray(samples, dtype=float).ravel()
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, BOOTSTRAP["percentiles"]) if v.size else (np.nan, np.nan)
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


class _Boot:
    """The median of a time series (aligned by round) and its bootstrap samples: the same
    resampled rounds for every series."""

    def __init__(self, n_rounds: int, seed: int = 0):
        self.idx = np.random.default_rng(seed).integers(0, n_rounds, (BOOTSTRAP["n"], n_rounds))

    def __call__(self, ms):
        ms = np.asarray(ms, dtype=float)
        return float(np.median(ms)), np.median(ms[self.idx], axis=1)


def _q(fn, *series) -> dict:
    """``fn`` of the medians, with the interval of ``fn`` of the bootstrap samples."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return q(fn(*(m for m, _ in series)), fn(*(s for _, s in series)))


# ------------------------------------------------------------------------ the numbers
def _ends(res):
    rows = {r["name"]: r for r in res["rows"] if "ms" in r}
    ends = res.get("ends", {})
    fast, full = rows.get(ends.get("fast")), rows.get(ends.get("2015"))
    return (fast, full) if fast and full else (None, None)


def _attribution(res, boot) -> dict | None:
    factors = list(res.get("factors", {}))
    series = {frozenset(r["subset"]): r["ms"] for r in res["rows"] if r.get("subset") is not None and "ms" in r}
    full = frozenset(factors)
    need = {frozenset(), full} | {frozenset([f]) for f in factors} | {full - {f} for f in factors}
    if not factors or not need <= set(series):
        return None
    meds = {S: boot(v) for S, v in series.items()}
    point = decompose({S: m for S, (m, _) in meds.items()}, factors)
    samples = decompose({S: s for S, (_, s) in meds.items()}, factors)
    gap_s = np.where(samples["gap"] > 0, samples["gap"], np.nan)

    def both(key, f=None):
        pt, sm = (point[key], samples[key]) if f is None else (point[key][f], samples[key][f])
        return {"ms": q(pt, sm), "share": q(pt / point["gap"] if point["gap"] else np.nan, sm / gap_s)}

    out = {"method": point["method"], "gap": q(point["gap"], samples["gap"]), "factors": {}}
    for f in factors:
        out["factors"][f] = {k: both(k, f) for k in ("on", "off", "interaction", "shapley")}
    out["higher_order"], out["sum_on"], out["sum_off"] = both("higher_order"), both("sum_on"), both("sum_off")
    shares = {f: out["factors"][f]["shapley"]["share"] for f in factors}
    out["groups"] = tie_groups({f: s["value"] for f, s in shares.items()}, {f: (s["lo"], s["hi"]) for f, s in shares.items()})
    rounds = per_round(series, factors)
    out["stability"] = rank_stability(out["groups"], {f: [r["shapley"][f] for r in rounds] for f in factors})
    bn = [f for f in res.get("bn_factors", []) if f in factors]
    if bn:
        out["bn"] = {"factors": bn, "share": q(sum(shares[f]["value"] for f in bn),
                                               sum(samples["shapley"][f] for f in bn) / gap_s)}
    fast = boot(series[frozenset()])
    out["extras"] = {r["name"]: _q(lambda a, b: a - b, boot(r["ms"]), fast)
                     for r in res["rows"] if r.get("subset") is None and "ms" in r}
    return out


def _linker(entry: dict, boot) -> dict:
    ff, fast, full = (entry.get(k, {}) for k in ("feedforward", "fast", "2015"))
    if "ms" not in fast or "ms" not in full:
        return {"note": full.get("note") or fast.get("note") or "not measured"}
    out = {"graph": _q(lambda a, b: a / b, boot(full["ms"]), boot(fast["ms"]))}
    if "ms" in ff:
        cg, fg = fast["gflop_model"], ff["gflop_model"]
        out["left"] = _q(lambda b, f: (b / cg) / (f / fg), boot(fast["ms"]), boot(ff["ms"]))
    return out


def analyze(res: dict) -> dict:
    """The numbers of the finding (see the module docstring) and the finding itself."""
    out = {"thresholds": THRESHOLDS, "bootstrap": BOOTSTRAP}
    fast, full = _ends(res)
    ff = res["feedforward"]
    meta = res.get("meta", {})
    lengths = {len(r["ms"]) for r in [ff, *res["rows"]] if "ms" in r}
    boot = _Boot(min(lengths), meta.get("seed", 0)) if lengths else None
    if fast and "ms" in ff:
        Bc, Bf, cg, fg = fast["batch_size"], ff["batch_size"], fast["gflop_model"], ff["gflop_model"]
        a, b, f = boot(full["ms"]), boot(fast["ms"]), boot(ff["ms"])
        out["work"] = {"conv_mflop": 1e3 * cg / Bc, "ff_mflop": 1e3 * fg / Bf, "ratio": (cg / Bc) / (fg / Bf)}
        out["per_example"] = {"conv_2015_ms": _q(lambda x: x / Bc, a), "conv_fast_ms": _q(lambda x: x / Bc, b),
                              "ff_ms": _q(lambda x: x / Bf, f)}
        out["ratio"] = _q(lambda x, y: (x / Bc) / (y / Bf), a, f)
        out["graph"] = _q(lambda x, y: x / y, a, b)
        out["left"] = _q(lambda x, y: (x / cg) / (y / fg), b, f)
        out["step_ms"] = {"fast": _q(lambda x: x, b), "2015": _q(lambda x: x, a), "ff": _q(lambda x: x, f)}
    if boot and "ms" in ff:
        f = boot(ff["ms"])
        out["ratio_to_ff"] = {r["name"]: _q(lambda x, y: (x / r["gflop_model"]) / (y / ff["gflop_model"]), boot(r["ms"]), f)
                              for r in res["rows"] if "ms" in r}
    att = _attribution(res, boot) if boot else None
    if att:
        out["attribution"] = att
    out["linkers"] = {linker: _linker(entry, boot) for linker, entry in res.get("linkers", {}).items()}
    if "gemm_start" in meta and "gemm_end" in meta:
        g0, g1 = meta["gemm_start"]["median"], meta["gemm_end"]["median"]
        out["gemm"] = {"start": meta["gemm_start"], "end": meta["gemm_end"], "drift": g1 / g0 - 1}
    out["labels"] = labels(out)
    out["finding"] = finding(out, meta)
    return out


# ------------------------------------------------------------------------ the words
def _band(x: dict, lo: float, hi: float) -> str:
    if lo <= x["lo"] and x["hi"] <= hi:
        return "inside"
    if x["lo"] > hi:
        return "above"
    if x["hi"] < lo:
        return "below"
    return "straddles"


def labels(a: dict) -> dict:
    """The words of the finding as labels (what :func:`compare` compares besides the ranking)."""
    T = THRESHOLDS
    out = {}
    if "left" in a:
        out["left"] = _band(a["left"], *T["parity"])
    if "graph" in a:
        out["gap"] = "clear" if a["graph"]["lo"] > T["gap"] else "none"
    att = a.get("attribution")
    if att and out.get("gap") == "clear":
        top = att["groups"][0]
        share = att["factors"][top[0]]["shapley"]["share"]
        out["top"] = ("tie" if len(top) > 1 else "main" if share["lo"] >= T["main"]
                      else "largest, under half" if share["hi"] < T["main"] else "largest, uncertain")
        out["ranking"] = ranking_text(att["groups"])
        if "bn" in att:
            s = att["bn"]["share"]
            out["bn"] = ("not a cause" if s["hi"] < T["minor"] else "main cause" if s["lo"] >= T["main"]
                         else "main cause?" if s["hi"] >= T["main"]
                         else "real, not the main cause" if s["lo"] >= T["minor"] else "minor, not the main cause")
    states = {k: _linker_state(v["graph"]) for k, v in a.get("linkers", {}).items() if "graph" in v}
    if states:  # in a fixed order, so that two runs that measured the linkers in another order compare equal
        order = sorted(states, key=lambda k: (list(LINKER_NAMES).index(k) if k in LINKER_NAMES else len(LINKER_NAMES), k))
        out["linkers"] = ", ".join(f"{LINKER_NAMES.get(k, k)} {states[k]}" for k in order)
    return out


def _linker_state(g: dict) -> str:
    """The all-2015 over fast ratio on one linker: ``slower``, ``not slower`` or ``unsettled``."""
    return "slower" if g["lo"] > THRESHOLDS["gap"] else "not slower" if g["hi"] <= THRESHOLDS["gap"] else "unsettled"


def x_(d: dict, digits: int = 2) -> str:
    """``2.84x [2.71–2.95]``: the value and its interval."""
    return f"{d['value']:.{digits}f}x [{d['lo']:.{digits}f}–{d['hi']:.{digits}f}]"


def pct(d: dict) -> str:
    return f"{100 * d['value']:.0f} % [{100 * d['lo']:.0f}–{100 * d['hi']:.0f} %]"


def n_(v: float) -> str:
    """A time with about three significant digits (ms of real and of tiny graphs)."""
    if v != v:
        return "-"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"


def num(d: dict) -> str:
    return f"{n_(d['value'])} [{n_(d['lo'])}–{n_(d['hi'])}]"


def _and(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def finding(a: dict, meta: dict) -> str:
    """One paragraph from the numbers of :func:`analyze` (``a``) and the run's ``meta``."""
    T, L = THRESHOLDS, a["labels"]
    n = meta.get("rounds", "?")
    head = (f"**Finding** (written by `make profile` from this run's own numbers: {meta.get('date', '?')}, "
            f"host {meta.get('host', '?')}, {meta.get('cpu', '?')}, {meta.get('cores_usable', '?')} usable cores; "
            f"C/VM linker unless named; {n} interleaved rounds; each number is computed from the medians over "
            f"rounds, in brackets its 90 % bootstrap interval over rounds).")
    if "ratio" not in a:
        return head + (" This run did not time the fast graph, the all-2015 graph and the feedforward step "
                       "together: there is no finding to draw.")
    w, pe = a["work"], a["per_example"]
    s = [f"Per example, the conv train step with all the 2015 constructions costs {x_(a['ratio'], 1)} the "
         f"feedforward step ({num(pe['conv_2015_ms'])} vs {num(pe['ff_ms'])} ms per example) = "
         f"{w['ratio']:.1f}x inherent work ({w['conv_mflop']:.0f} vs {w['ff_mflop']:.1f} MFLOP per example, "
         f"an exact count) x {x_(a['graph'])} graph overhead of the 2015 constructions "
         f"({num(a['step_ms']['2015'])} vs {num(a['step_ms']['fast'])} ms per step) x {x_(a['left'])} left in "
         f"the fast graph (its time per FLOP over the feedforward step's)."]
    s.append({
        "inside": "With the package's constructions the conv step turns FLOPs into time about as fast as the "
                  "feedforward step, so what remains of the per-example cost is the inherent work.",
        "above": "Even with the package's constructions the conv step spends more time per FLOP than the "
                 "feedforward step: part of the cost is left in the fast graph (see its op census).",
        "below": "With the package's constructions the conv step turns FLOPs into time faster than the "
                 "feedforward step.",
        "straddles": f"Whether the fast conv step turns FLOPs into time as fast as the feedforward step (within "
                     f"{T['parity'][0]}-{T['parity'][1]}x) is not settled by this run's interval.",
    }[L["left"]])
    att = a.get("attribution")
    if L["gap"] == "none":
        s.append(f"The 2015 constructions cost no clear time here (the low end of the graph overhead's interval is "
                 f"not above {T['gap']:.2f}x), so no cause is ranked.")
    elif att:
        s += _causes(att, L)
    s += _linker_sentence(a)
    g = a.get("gemm")
    if g:
        drift = (f"the machine's speed drifted by {100 * g['drift']:+.0f} %, so compare with care"
                 if abs(g["drift"]) > T["drift"] else "steady")
        s.append(f"numpy's float32 GEMM ran at {g['start']['median']:.0f} GFLOP/s "
                 f"[{g['start']['min']:.0f}–{g['start']['max']:.0f}] at the start and {g['end']['median']:.0f} "
                 f"[{g['end']['min']:.0f}–{g['end']['max']:.0f}] at the end (median [min–max] of 5 products; {drift}).")
    return head + " " + " ".join(s)


def _causes(att: dict, L: dict) -> list[str]:
    f, groups = att["factors"], att["groups"]
    top = groups[0]
    shares = {k: pct(f[k]["shapley"]["share"]) for k in f}
    lead = {"tie": f"The largest causes of the graph overhead are tied: {_and(f'{k} {shares[k]}' for k in top)} of "
                   f"the gap (their intervals overlap).",
            "main": f"The main cause of the graph overhead: {top[0]}, {shares[top[0]]} of the gap.",
            "largest, under half": f"The largest cause of the graph overhead: {top[0]}, {shares[top[0]]} of the "
                                   f"gap, less than half of it.",
            "largest, uncertain": f"The largest cause of the graph overhead: {top[0]}, {shares[top[0]]} of the "
                                  f"gap (its interval does not settle whether it is more than half)."}[L["top"]]
    st = att["stability"]
    n = st["n"]
    often = max(st["first"], key=st["first"].get)
    by_round = (f"round by round, the order of the medians held in {round(st['strict_held'] * n)} of {n} rounds "
                f"and {often} came first in {st['first'][often]} of {n}")
    if len(groups) == 1:  # one tie: every cause "holds its place" trivially, so say what the rounds did
        out = [lead, f"Ranking of causes: {L['ranking']} (one tie: no cause stands apart from the others at "
                     f"{n} rounds); {by_round}."]
    else:
        least = min(st["held"].values())
        each = "in all of them" if least == 1 else f"in at least {100 * least:.0f} % of them"
        out = [lead, f"Ranking of causes: {L['ranking']} ('=' marks a tie); the whole ranking held in "
                     f"{round(st['all_held'] * n)} of {n} rounds, each cause kept its place {each}; {by_round}."]
    how = ("each share is the construction's exact Shapley value over every subset of them"
           if att["method"].startswith("exact") else
           f"each share is the mean of its two effects (its Shapley value if the constructions interact at most "
           f"in pairs), and interactions of three or more leave {pct(att['higher_order']['share'])} of the gap "
           f"unattributed")
    out.append(f"Switched on one at a time from the fast graph the constructions add up to "
               f"{pct(att['sum_on']['share'])} of the gap, switched off one at a time from the all-2015 graph to "
               f"{pct(att['sum_off']['share'])}; {how}.")
    if "bn" in att:
        bn = att["bn"]
        parts = _and(_BN_PARTS.get(k, k) for k in bn["factors"])
        out.append({"not a cause": f"BN was not a cause: {parts} account for {pct(bn['share'])} of the gap.",
                    "main cause": f"BN was the main cause: {parts} account for {pct(bn['share'])} of the gap.",
                    "main cause?": f"BN's share of the gap ({parts}) is {pct(bn['share'])}: whether it was the "
                                   f"main cause is not settled by this run.",
                    "minor, not the main cause": f"BN was a minor cause at most, not the main one: {parts} account "
                                                 f"for {pct(bn['share'])} of the gap.",
                    "real, not the main cause": f"BN was a real but not the main cause: {parts} account for "
                                                f"{pct(bn['share'])} of the gap."}[L["bn"]])
    return out


def _linker_sentence(a: dict) -> list[str]:
    lk = a.get("linkers", {})
    measured = {k: v for k, v in lk.items() if "graph" in v}
    if not measured:
        return []
    name = {k: LINKER_NAMES.get(k, k) for k in lk}
    ratios = _and(f"{name[k]} {x_(v['graph'])}" for k, v in measured.items())
    missing = [f"{name[k]}, {v['note'].split(':')[0][:60]}" for k, v in lk.items() if "graph" not in v]
    tail = f"; not measured: {'; '.join(missing)}" if missing else ""
    by = {state: [name[k] for k, v in measured.items() if _linker_state(v["graph"]) == state]
          for state in ("slower", "not slower", "unsettled")}
    if not by["not slower"] and not by["unsettled"]:
        return [f"The all-2015 graph is slower than the fast one on every linker measured ({ratios}{tail}): the fix "
                f"is the graph, not the linker."]
    parts = [f"slower than the fast one on {_and(by['slower'])}"] if by["slower"] else []
    if by["not slower"]:
        parts.append(f"not slower on {_and(by['not slower'])} (there the linker absorbs the graph's cost)")
    if by["unsettled"]:
        parts.append(f"on {_and(by['unsettled'])} its interval does not settle whether it is slower")
    return [f"The all-2015 graph is {'; '.join(parts)} ({ratios}{tail})."]


# ------------------------------------------------------------------------ two runs
def compare(a: dict, b: dict, names=("A", "B")) -> dict:
    """Do two runs (their ``report.json``) draw the same finding? ``verdict`` of the ranking
    of causes (:func:`.attribution.compare_rankings`), the labels that differ, and a
    markdown table of the numbers side by side."""
    aa, ab = a["analysis"], b["analysis"]
    ra, rb = aa.get("attribution"), ab.get("attribution")
    rank = compare_rankings(ra["groups"], rb["groups"]) if ra and rb else {"verdict": "not comparable", "conflicts": []}
    la, lb = aa["labels"], ab["labels"]
    differ = {k: (la.get(k), lb.get(k)) for k in sorted(set(la) | set(lb)) if k != "ranking" and la.get(k) != lb.get(k)}
    rows = [["date, host", *(f"{r['meta'].get('date')}, {r['meta'].get('host')}" for r in (a, b))],
            ["usable cores, thread settings", *(f"{r['meta'].get('cores_usable')}, {r['meta'].get('thread_env') or '-'}"
                                                for r in (a, b))],
            ["rounds; wall time", *(f"{r['meta'].get('rounds')}; {r['meta'].get('wall_s', 0):.0f} s" for r in (a, b))]]
    if "gemm" in aa and "gemm" in ab:
        rows.append(["GEMM GFLOP/s start / end", *(f"{x['gemm']['start']['median']:.0f} / {x['gemm']['end']['median']:.0f}"
                                                    for x in (aa, ab))])
    for key, label in (("ratio", "conv/ff cost per example"), ("graph", "graph overhead (2015 / fast)"),
                       ("left", "left in the fast graph (per FLOP vs ff)")):
        if key in aa and key in ab:
            rows.append([label, x_(aa[key]), x_(ab[key])])
    if ra and rb:
        for f in ra["factors"]:
            if f in rb["factors"]:
                rows.append([f"share of the gap: {f}", *(pct(r["factors"][f]["shapley"]["share"]) for r in (ra, rb))])
        rows.append(["ranking of causes", ranking_text(ra["groups"]), ranking_text(rb["groups"])])
    for k, (va, vb) in differ.items():
        rows.append([f"finding's word: {k}", str(va), str(vb)])
    table = "\n".join([f"| | {names[0]} | {names[1]} |", "|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in rows])
    verdict = {"same": "the same ranking of causes", "compatible": "compatible rankings (they differ only by ties)",
               "different": "different rankings: " + "; ".join(f"{x} vs {y}" for x, y in rank["conflicts"]),
               "not comparable": "no ranking in one of the runs"}[rank["verdict"]]
    words = "the finding's other words agree" if not differ else "the finding's words differ on " + ", ".join(differ)
    if ra and rb and len(ra["groups"]) == 1 and len(rb["groups"]) == 1:
        verdict += " (in both runs all the causes are one tie: the same, but neither run orders them)"
    text = f"{table}\n\nThe two runs give {verdict}; {words}.\n"
    return {"verdict": rank["verdict"], "conflicts": rank["conflicts"], "labels_differ": differ, "markdown": text}
