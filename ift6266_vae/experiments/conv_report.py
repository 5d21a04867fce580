"""``runs/profile/report.md``: the finding first, then every number it rests on, each with
its spread: a step's time as median [interquartile range] and min–max over the interleaved
rounds; ratios, effects and shares with their 90 % bootstrap interval over rounds
(:mod:`.conv_finding`); the op censuses as mean [fastest–slowest] of the profiled calls."""

from __future__ import annotations

from . import conv_finding
from .conv_finding import LINKER_NAMES, THRESHOLDS, n_, num, pct
from .conv_finding import x_ as _x


def med(s: dict) -> str:
    """``median [q1–q3]`` of raw rounds."""
    return f"{n_(s['median'])} [{n_(s['q1'])}–{n_(s['q3'])}]"


def ext(s: dict) -> str:
    return f"{n_(s['min'])}–{n_(s['max'])}"


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _method(res: dict) -> list[str]:
    m = res["meta"]
    v = m.get("versions", {})
    g0, g1 = m.get("gemm_start"), m.get("gemm_end")
    gemm = (f"numpy float32 GEMM {med(g0)} GFLOP/s at the start, {med(g1)} at the end (median [IQR] of 5 "
            f"products each)"
            if g0 and g1 else "")
    load = (f"load average {m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end"
            if m.get("loadavg_start") and m.get("loadavg_end") else "")
    cut = (f" (cut from {m['rounds_requested']} to fit the time budget)"
           if m.get("rounds_requested", m["rounds"]) != m["rounds"] else "")
    return ["## How this was measured", "",
            f"Every graph was compiled once without the profiler and timed with plain calls in {m['rounds']} "
            f"interleaved rounds{cut}: every step once per round, in an order shuffled per round (seed {m['seed']}), "
            f"after {m['warmup']} untimed warm-up call(s) each and an untimed first call at compile time; each "
            f"train step updates its parameters from call to call as in training (restored before the warm-up "
            f"and after the rounds), and every call returned finite values. "
            f"A step's time is the median over rounds, [q1–q3] its interquartile range, min–max its extremes. "
            f"Ratios, effects and shares are computed from those medians (so that they multiply and add up "
            f"exactly), in brackets their 90 % bootstrap interval: rounds resampled with replacement (the same "
            f"rounds for every step, 2000 times), the quantity recomputed, its 5th-95th percentiles. Ties: "
            f"intervals that overlap. PyTensor's per-op "
            f"profiler runs only for the op censuses at the end. {m.get('n_compiles', '?')} graphs compiled "
            f"({m.get('compile_s_timed_steps', 0):.0f} s for the timed steps); wall time {m.get('wall_s', 0):.0f} s.",
            "",
            f"Machine: {m.get('date')}, host {m.get('host')}, {m.get('cpu')}, {m.get('cores_usable')} usable cores, "
            f"thread settings {m.get('thread_env') or 'default'}; {load}; {gemm}. PyTensor {v.get('pytensor')}, "
            f"numpy {v.get('numpy')}, Numba {v.get('numba')}, JAX {v.get('jax')}. Conv batch {m['conv_batch']}, "
            f"feedforward batch {m['ff_batch']}.", "",
            f"Thresholds of the finding's words: the 2015 graph is \"slower\" when the low end of the interval of its "
            f"time over the fast graph's exceeds {THRESHOLDS['gap']}x; the fast conv step is \"about as fast per FLOP\" "
            f"as the feedforward step when that ratio's interval lies within {THRESHOLDS['parity'][0]}-"
            f"{THRESHOLDS['parity'][1]}x; a cause (or BN) is \"the main cause\" when the interval of its share "
            f"starts at or above {THRESHOLDS['main']:.0%}, \"not a cause\" when it ends below "
            f"{THRESHOLDS['minor']:.0%}; a GEMM rate that changes by more than {THRESHOLDS['drift']:.0%} from start "
            f"to end is flagged.", ""]


def _per_example(a: dict) -> list[str]:
    if "ratio" not in a:
        return []
    w, pe = a["work"], a["per_example"]
    rows = [["conv (all 2015) / feedforward, cost per example", _x(a["ratio"])],
            ["= inherent work: analytic train-step MFLOP per example "
             f"({w['conv_mflop']:.0f} conv / {w['ff_mflop']:.1f} ff)", f"{w['ratio']:.2f}x (exact count)"],
            ["x graph overhead: all-2015 / fast conv step", _x(a["graph"])],
            ["x left in the fast graph: its time per FLOP / the feedforward step's", _x(a["left"])],
            ["conv step, all 2015, ms per example", num(pe["conv_2015_ms"])],
            ["conv step, fast, ms per example", num(pe["conv_fast_ms"])],
            ["feedforward step, ms per example", num(pe["ff_ms"])]]
    return ["## Per example: inherent work x graph overhead x what is left (C/VM)", "",
            *_table(["quantity", "value [90 % bootstrap interval]"], rows), ""]


def ablation_table(res: dict, a: dict) -> list[str]:
    """Every conv graph (and the feedforward step) on C/VM: its time with its spread."""
    ff = res["feedforward"]
    rows = []
    if "ms" in ff:
        rows.append(["feedforward step (reference)", "-", med(ff["ms_spread"]), ext(ff["ms_spread"]),
                     f"{ff['gflop_model']:.2f}", n_(ff["ms_per_gflop"]), "1 (reference)", f"{ff['compile_s']:.1f}"])
    for r in res["rows"]:
        if "ms" not in r:
            rows.append([r["name"], "-", "-", "-", "-", "-", "-", r.get("note", "")])
            continue
        on = "-" if r.get("subset") is None else ", ".join(r["subset"]) or "none"
        rt = a.get("ratio_to_ff", {}).get(r["name"])
        rows.append([r["name"], on, med(r["ms_spread"]), ext(r["ms_spread"]), f"{r['gflop_model']:.2f}",
                     n_(r["ms_per_gflop"]), _x(rt) if rt else "-", f"{r['compile_s']:.1f}"])
    return _table(["graph", "2015 constructions on", "ms/step median [IQR]", "min–max", "GFLOP/step", "ms/GFLOP",
                   "conv/ff time per FLOP [90 % interval]", "compile s (once)"], rows)


def attribution_table(a: dict) -> list[str]:
    """Each construction on from the fast graph, off from the all-2015 graph, their
    interaction and its share; the unattributed rest; the gap (ranked, with intervals)."""
    att = a["attribution"]
    f, st = att["factors"], att["stability"]
    order = [k for g in att["groups"] for k in g]
    rows = [[k, num(f[k]["on"]["ms"]), num(f[k]["off"]["ms"]), num(f[k]["interaction"]["ms"]),
             num(f[k]["shapley"]["ms"]), pct(f[k]["shapley"]["share"]), f"{100 * st['held'][k]:.0f} %"] for k in order]
    ho = att["higher_order"]
    rows.append(["interactions of 3+ constructions (unattributed)", "-", "-", "-", num(ho["ms"]), pct(ho["share"]), "-"])
    rows.append(["**gap: all 2015 - fast**", num(att["sum_on"]["ms"]) + " (sum)", num(att["sum_off"]["ms"]) + " (sum)",
                 "-", num(att["gap"]), "100 %", f"whole ranking: {100 * st['all_held']:.0f} %"])
    return _table(["construction (ranked)", "on from fast, ms", "off from all 2015, ms", "interaction (off - on), ms",
                   "share, ms", "share of the gap", "held its rank (rounds)"], rows)


def _attribution(a: dict) -> list[str]:
    att = a.get("attribution")
    if not att:
        return ["## Attribution", "", "Not computed: this run did not time the fast graph, the all-2015 graph and "
                "each construction switched on and off alone.", ""]
    lines = ["## Attribution: parts that add up to the gap", "",
             f"Method: {att['method']}. \"On\": the construction switched on alone from the fast graph; \"off\": "
             f"switched off alone from the all-2015 graph; their difference is its interaction with the others "
             f"(negative: it shares work with them). The share is the mean of the two, the construction's Shapley "
             f"value when constructions interact at most in pairs (exact when all subsets were measured); the "
             f"shares and the unattributed interactions of three or more add up to the gap exactly. Ranking: "
             f"{conv_finding.ranking_text(att['groups'])}.", "", *attribution_table(a), "",
             f"On-effects add up to {pct(att['sum_on']['share'])} of the gap, off-effects to "
             f"{pct(att['sum_off']['share'])}."]
    for name, e in att.get("extras", {}).items():
        lines.append(f"Row \"{name}\" (no factor of its own; the full-then-crop conv and the perforated upsampling "
                     f"both drop the sub-pixel fusion, so it is part of each): {num(e)} ms over the fast graph.")
    return lines + [""]


def linkers_table(res: dict, a: dict) -> list[str]:
    """The feedforward step and the two ends of the ablation on every linker."""
    rows = []
    for linker, entry in res.get("linkers", {}).items():
        cells, notes, comp = [], [], []
        for label in ("feedforward", "fast", "2015"):
            e = entry.get(label, {})
            cells.append(med(e["ms_spread"]) if "ms" in e else "-")
            comp.append(f"{e['compile_s']:.1f}" if "compile_s" in e else "-")
            if "note" in e:
                notes.append(f"{label}: {e['note']}")
        an = a.get("linkers", {}).get(linker, {})
        rows.append([LINKER_NAMES.get(linker, linker), *cells, _x(an["graph"]) if "graph" in an else "-",
                     _x(an["left"]) if "left" in an else "-", " / ".join(comp), "; ".join(notes)])
    return _table(["linker", "feedforward ms/step", "fast conv ms/step", "all-2015 conv ms/step", "all 2015 / fast",
                   "fast conv / ff, time per FLOP", "compile s (ff / fast / 2015)", "note"], rows) if rows else []


def _census(res: dict) -> list[str]:
    L = []
    for r in res["rows"]:
        if "profile" not in r:
            continue
        s = r["profile"]["summary"]
        sp = s.get("ms_per_call_spread")
        call = f"{n_(s['ms_per_call'])} ms per profiled call" + (f" [{ext(sp)}]" if sp else "")
        L += [f"## Op census: {r['name']}", "",
              f"PyTensor's profiler, C/VM, {s.get('n_calls', '?')} calls: {call}. {s['n_nodes_before_rewrites']} "
              f"Apply nodes before rewrites, {s['n_nodes_after_rewrites']} after; compile {s['compile_s']:.1f} s "
              f"(once); {s['python_fallback_nodes']} nodes fall back to Python. Times: mean [fastest–slowest call]; "
              f"counts, FLOPs and bytes are exact for the runtime shapes.", "",
              *_table(["op", "nodes", "ms [min–max]", "share", "GFLOP (est.)", "useful GFLOP", "MB moved",
                       "achieved GFLOP/s", "Python nodes"],
                      [[c["op"], str(c["count"]), f"{n_(c['ms'])} [{n_(c.get('ms_min', c['ms']))}–"
                        f"{n_(c.get('ms_max', c['ms']))}]", f"{100 * c['share']:.0f} %", f"{c['gflop']:.2f}",
                        f"{c['useful_gflop']:.2f}", f"{c['mb']:.0f}", f"{c['achieved_gflops']:.1f}",
                        str(c["python_nodes"])] for c in r["profile"]["ranking"]]), ""]
    return L


def report_markdown(res: dict) -> str:
    a = res.get("analysis") or conv_finding.analyze(res)
    L = ["# Why was the 2015 conv graph ~100x slower than the feedforward one?", "", a["finding"], ""]
    L += _method(res) + _per_example(a)
    L += ["## The conv graphs, C/VM linker", "", *ablation_table(res, a), ""] + _attribution(a)
    if res.get("linkers"):
        L += ["## The two ends on every linker", "", *linkers_table(res, a), ""]
    L += _census(res)
    return "\n".join(L).rstrip() + "\n"
