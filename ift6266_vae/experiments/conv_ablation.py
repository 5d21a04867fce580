"""Why was the 2015 conv graph ~100x slower than the feedforward one? The ablation.

The 2015 constructions of the conv VAE (:data:`ABLATION`) are switched on one at a time
from the fast graph; each row's train step is profiled on the C/VM linker
(:mod:`ift6266_vae.profiling`) and compared with the feedforward step per analytic FLOP.
:func:`write_report` writes ``report.md``, ``report.json`` and figures (``make profile``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from .. import config as config_mod
from .. import plots
from ..errors import UserError
from ..graph import backends
from ..io import write_json, write_text
from ..models.conv import CONSTRUCTIONS
from ..profiling import function_times, profile_config, restore, snapshot, train_graph

log = logging.getLogger(__name__)

#: The 2015 constructions of the conv VAE, switched on one at a time by the ablation: model
#: config overrides, plus ``fast_sums: False`` for the C reduction loops PyTensor inherited
#: from Theano (instead of the package's fast-sums rewrite).
ABLATION = {
    "fast (all fixes)": {},
    "+ 2015 BN moments (float64 mean over (0, 2, 3))": {"bn_moments": "naive"},
    "+ C-loop sums (Theano's CAReduce, no numpy sums)": {"fast_sums": False},
    "+ upsample, then conv on the 2x grid (no sub-pixel)": {"conv_construction": "im2col"},
    "+ 2015 'same' conv (full conv, then crop)": {"conv_construction": "2015"},
    "+ 2015 perforated upsampling (dense 0/1 matrix + dot)": {"upsample": "perforated_2015"},
    "all 2015 constructions": {"bn_moments": "naive", "fast_sums": False, "conv_construction": "2015",
                               "upsample": "perforated_2015"},
}



def ablation(conv_batch: int = 128, ff_batch: int = 1000, n_calls: int = 3, rows=None,
             linkers=("c", "numba", "jax"), conv_cfg: dict | None = None, ff_cfg: dict | None = None) -> dict:
    """The 2015 constructions of the conv VAE switched on one at a time (see :data:`ABLATION`).

    For each row: ms per train step on the C/VM linker (per-op profile), ms per analytic
    GFLOP, and the ratio of that to the feedforward VAE's (measured in the same run), plus
    each 2015 construction's share of the gap between the fast graph and all-2015 graph.
    Whole-function times on every linker for the feedforward and fast conv steps.
    """
    ff = copy.deepcopy(ff_cfg or config_mod.load("week9"))
    conv = copy.deepcopy(conv_cfg or config_mod.load("conv"))
    log.info("profiling the feedforward step (batch %d)", ff_batch)
    base = profile_config(ff, ff_batch, n_calls)
    out = {"feedforward": base, "rows": [], "linkers": {}}
    ff_ms_per_gflop = base["summary"]["ms_per_gflop"]
    rows = rows or ABLATION
    for i, (name, overrides) in enumerate(rows.items()):
        cfg = copy.deepcopy(conv)
        model_overrides = {k: v for k, v in overrides.items() if k != "fast_sums"}
        cfg["model"].update(model_overrides)
        log.info("profiling conv: %s", name)
        # runtime shapes (a second compile) only for the two rows whose op census is reported
        prof = profile_config(cfg, conv_batch, n_calls, fast_sums=overrides.get("fast_sums", True),
                              shapes=i in (0, len(rows) - 1))
        s = prof["summary"]
        out["rows"].append({"name": name, "overrides": overrides, "ms_per_step": s["ms_per_call"],
                            "gflop_model": s["gflop_model"], "ms_per_gflop": s["ms_per_gflop"],
                            "ratio_to_ff": s["ms_per_gflop"] / ff_ms_per_gflop, "profile": prof})
    first, last = out["rows"][0]["ms_per_step"], out["rows"][-1]["ms_per_step"]
    gap = last - first
    for r in out["rows"]:
        r["share_of_gap"] = (r["ms_per_step"] - first) / gap if gap > 0 else None
    # The C/VM time of a step profiled above is reused (PyTensor's profiler adds little to
    # the C VM loop), saving a compile per step.
    profiled = {"feedforward": base["summary"],
                "conv fast": None if out["rows"][0]["overrides"] else out["rows"][0]["profile"]["summary"]}
    for label, cfg, bs in (("feedforward", ff, ff_batch), ("conv fast", conv, conv_batch)):
        s = profiled[label]
        others = tuple(name for name in linkers if not (name == "c" and s is not None))
        times = {}
        if others != tuple(linkers):
            times["c"] = {"ms_median": s["ms_per_call"], "ms_min": s["ms_per_call"], "compile_s": s["compile_s"],
                          "source": f"profiled C/VM run, mean of {n_calls} calls"}
        model, inputs, outputs, updates, args = train_graph(cfg, bs)
        snap = snapshot(model)
        log.info("timing %s on linkers %s", label, ", ".join(others))
        times.update(function_times(inputs, outputs, updates, args, others, n_calls=max(n_calls, 3)))
        out["linkers"][label] = {name: times[name] for name in linkers if name in times}
        restore(snap)
    return out


def report_markdown(res: dict) -> str:
    ff = res["feedforward"]["summary"]
    L = ["# Why was the 2015 conv graph ~100x slower than the feedforward one?", "",
         f"Train step, C/VM linker with PyTensor's profiler; feedforward batch {ff['batch_size']}, "
         f"conv batch {res['rows'][0]['profile']['summary']['batch_size']}. "
         f"Feedforward: {ff['ms_per_call']:.0f} ms/step, {ff['gflop_model']:.1f} GFLOP, "
         f"{ff['ms_per_gflop']:.1f} ms/GFLOP.", "",
         "## Ablation: the 2015 constructions switched on one at a time", "",
         "| conv graph | ms/step | GFLOP/step | ms/GFLOP | conv/ff time per FLOP | share of the gap |",
         "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        share = "-" if r["share_of_gap"] is None else f"{100 * r['share_of_gap']:.0f} %"
        L.append(f"| {r['name']} | {r['ms_per_step']:.0f} | {r['gflop_model']:.1f} | {r['ms_per_gflop']:.1f} | "
                 f"{r['ratio_to_ff']:.2f}x | {share} |")
    L += ["", "## Whole-step time per linker", "", "| step | linker | ms (median) | compile s | note |", "|---|---|---|---|---|"]
    for label, times in res["linkers"].items():
        for linker, t in times.items():
            if "note" in t:
                L.append(f"| {label} | {linker} | - | - | {t['note']} |")
            else:
                L.append(f"| {label} | {linker} | {t['ms_median']:.0f} | {t['compile_s']:.1f} | {t.get('source', '')} |")
    for r in (res["rows"][0], res["rows"][-1]):
        s = r["profile"]["summary"]
        L += ["", f"## Op census: {r['name']}", "",
              f"{s['n_nodes_before_rewrites']} Apply nodes before rewrites, {s['n_nodes_after_rewrites']} after; "
              f"compile {s['compile_s']:.1f} s; {s['python_fallback_nodes']} nodes fall back to Python.", "",
              "| op | nodes | ms | share | GFLOP (est.) | useful GFLOP | MB moved | achieved GFLOP/s | Python nodes |",
              "|---|---|---|---|---|---|---|---|---|"]
        for c in r["profile"]["ranking"]:
            L.append(f"| {c['op']} | {c['count']} | {c['ms']:.1f} | {100 * c['share']:.0f} % | {c['gflop']:.2f} | "
                     f"{c['useful_gflop']:.2f} | {c['mb']:.0f} | {c['achieved_gflops']:.1f} | {c['python_nodes']} |")
    return "\n".join(L) + "\n"


def write_report(res: dict, outdir) -> Path:
    """``report.md``, ``report.json`` and figures (time per op type, ablation bars)."""
    outdir = Path(outdir)
    write_json(outdir / "report.json", res)
    write_text(outdir / "report.md", report_markdown(res))
    plots.save(plots.ablation_bars(res["rows"], res["feedforward"]["summary"]["ms_per_gflop"]), outdir / "ablation.png")
    plots.save(plots.op_time_bars({r["name"]: r["profile"]["census"] for r in (res["rows"][0], res["rows"][-1])}),
               outdir / "time_per_op.png")
    return outdir / "report.md"


def run(config_name: str = "conv", construction: str | None = None, linkers=("c", "numba"), n_calls: int = 3,
        outdir="runs/profile") -> Path:
    """``make profile``: the ablation of a conv config's train step (or the profile of one
    construction set, ``fast`` or ``2015``), written under ``outdir``."""
    cfg = config_mod.load(config_name)
    if cfg["model"]["kind"] != "conv":
        raise UserError(f"profile compares conv graph constructions: --config must be a conv config "
                        f"(e.g. conv), got {config_name!r} of kind {cfg['model']['kind']!r}")
    for linker in linkers:
        if linker not in backends.BACKENDS or linker == "auto":
            raise UserError(f"unknown linker {linker!r}; valid: c, numba, jax")
    rows = ABLATION
    if construction:
        if construction not in CONSTRUCTIONS:
            raise UserError(f"unknown construction {construction!r}; valid: {', '.join(CONSTRUCTIONS)}")
        rows = {f"{construction} constructions": {**CONSTRUCTIONS[construction], "fast_sums": construction != "2015"}}
    res = ablation(conv_batch=cfg["train"]["batch_size"], rows=rows, linkers=tuple(linkers), conv_cfg=cfg,
                   n_calls=n_calls)
    return write_report(res, outdir)
