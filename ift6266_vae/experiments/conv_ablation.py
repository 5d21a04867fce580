"""Why was the 2015 conv graph ~100x slower than the feedforward one? The ablation.

Four 2015 constructions of the conv VAE (:data:`FACTORS`) are switched on one at a time
from the fast graph (:data:`ABLATION`, with one extra row: the sub-pixel fusion dropped
alone) and switched off one at a time from the all-2015 graph (:data:`REVERSE`). Every
graph, and the feedforward step, is compiled once on the C/VM linker without the profiler
and timed in interleaved rounds (:func:`ift6266_vae.profiling.interleaved_times`), next to
the two ends (fast, all 2015) and the feedforward step on Numba and JAX. PyTensor's
per-op profiler runs only for the op census of the two ends. :mod:`.conv_finding` turns
the times into a decomposition that adds up and a finding; :func:`write_report` writes
``report.md`` (the finding at the top), ``report.json`` and figures (``make profile``).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import platform
import time
from pathlib import Path

from .. import config as config_mod
from .. import plots
from ..errors import UserError
from ..graph import backends
from ..io import write_json, write_text
from ..models.conv import CONSTRUCTIONS
from ..profiling import compile_step, gemm_gflops, interleaved_times, profile_config, spread, train_graph
from . import conv_finding
from .conv_report import report_markdown

log = logging.getLogger(__name__)

#: The switches of the decomposition: each 2015 construction as config overrides (plus
#: ``fast_sums: False``: the C reduction loops PyTensor inherited from Theano instead of the
#: package's numpy sums). The all-2015 graph has all four on.
FACTORS = {
    "BN moments": {"bn_moments": "naive"},
    "C-loop sums": {"fast_sums": False},
    "full-then-crop conv": {"conv_construction": "2015"},
    "perforated upsampling": {"upsample": "perforated_2015"},
}
#: BN's part: its float64 moments and the C-loop sums (BN's statistics and their gradients
#: are most of the step's sums)
BN_FACTORS = ("BN moments", "C-loop sums")
ALL_2015 = {k: v for overrides in FACTORS.values() for k, v in overrides.items()}

#: The 2015 constructions switched on one at a time from the fast graph. The 2x-grid row is
#: no factor of its own: the full-then-crop conv and the perforated upsampling both drop the
#: sub-pixel fusion, so it is part of each (one reason they interact).
ABLATION = {
    "fast (all fixes)": {},
    "+ 2015 BN moments (float64 mean over (0, 2, 3))": FACTORS["BN moments"],
    "+ C-loop sums (Theano's CAReduce, no numpy sums)": FACTORS["C-loop sums"],
    "+ upsample, then conv on the 2x grid (no sub-pixel)": {"conv_construction": "im2col"},
    "+ 2015 'same' conv (full conv, then crop)": FACTORS["full-then-crop conv"],
    "+ 2015 perforated upsampling (dense 0/1 matrix + dot)": FACTORS["perforated upsampling"],
    "all 2015 constructions": ALL_2015,
}
_FIXES = {"BN moments": "the fast BN moments", "C-loop sums": "numpy sums",
          "full-then-crop conv": "the direct 'same' conv", "perforated upsampling": "zero-insertion upsampling"}
#: The 2015 constructions switched off one at a time from the all-2015 graph.
REVERSE = {f"all 2015 but {_FIXES[f]}": {k: v for k, v in ALL_2015.items() if k not in FACTORS[f]} for f in FACTORS}


def default_rows(all_subsets: bool = False) -> dict:
    """The conv graphs of ``make profile``: fast, each construction on alone (and the 2x-grid
    row), each off alone, all 2015 last; ``all_subsets`` adds the pairs, so that every one of
    the 16 subsets of :data:`FACTORS` is measured and the Shapley values are exact."""
    names = list(ABLATION)
    rows = {n: ABLATION[n] for n in names[:-1]}
    if all_subsets:
        pairs = [(a, b) for i, a in enumerate(FACTORS) for b in list(FACTORS)[i + 1:]]
        rows.update({f"+ {a} + {b}": {**FACTORS[a], **FACTORS[b]} for a, b in pairs})
    rows.update(REVERSE)
    rows[names[-1]] = ABLATION[names[-1]]
    return rows


def subset_of(overrides: dict, factors: dict = FACTORS) -> list | None:
    """The factors a row switches on, or None if its overrides are not a union of factors."""
    on = [f for f, o in factors.items() if o.items() <= overrides.items()]
    union = {k: v for f in on for k, v in factors[f].items()}
    return on if union == dict(overrides) else None


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import numpy as np
    import pytensor

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {"pytensor": pytensor.__version__, "numpy": np.__version__}
    for name in ("numba", "jax"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": cpu, "cores_usable": affinity, "versions": versions,
            "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
                           if k in os.environ},
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _series(ms: list, compile_s: float, gflop: float, batch: int) -> dict:
    s = spread(ms)
    return {"ms": ms, "ms_spread": s, "ms_per_step": s["median"], "compile_s": compile_s, "gflop_model": gflop,
            "batch_size": batch, "ms_per_gflop": s["median"] / gflop}


def _with(cfg: dict, overrides: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"].update({k: v for k, v in overrides.items() if k != "fast_sums"})
    return cfg


def _compile_all(graphs: dict, ends: dict, others: list):
    """Each graph (name -> (config, batch, overrides)) compiled on C/VM, the feedforward step
    and the two ends also on the ``others`` linkers: ``(steps, notes, gflop)`` keyed by
    ``(linker, name)`` (``gflop`` by name). Each compiled step has a model of its own: the
    steps update their parameters, and a JAX step leaves JAX arrays in them."""
    steps, notes, gflop = {}, {}, {}
    for gname, (cfg, batch, overrides) in graphs.items():
        on = ["c"] + [name for name in others if gname in ("feedforward", ends["fast"], ends["2015"])]
        for linker in on:
            try:
                backends.resolve(linker)
                model, inputs, outputs, updates, args = train_graph(_with(cfg, overrides), batch)
                gflop[gname] = 3 * model.forward_flops() * batch / 1e9
                steps[linker, gname] = compile_step(inputs, outputs, updates, args, linker,
                                                    fast_sums=overrides.get("fast_sums", True), name=gname)
                log.info("compiled %s on %s: %.1f s", gname, linker, steps[linker, gname].compile_s)
            except UserError as e:
                notes[linker, gname] = str(e)
            except Exception as e:  # noqa: BLE001 - a linker that cannot compile the graph is a finding
                if linker == "c":
                    raise
                notes[linker, gname] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return steps, notes, gflop


def ablation(conv_batch: int = 128, ff_batch: int = 1000, rows=None, linkers=("c", "numba", "jax"),
             conv_cfg: dict | None = None, ff_cfg: dict | None = None, rounds: int = 7, warmup: int = 1,
             seed: int = 0, n_calls: int = 3, census: bool = True, factors: dict | None = None,
             budget_s: float | None = None) -> dict:
    """Time the conv graphs ``rows`` (name -> overrides; default :func:`default_rows`) and the
    feedforward step on the C/VM linker, and the two ends (the rows switching no factor and
    every factor) and the feedforward step on the other ``linkers``, all in one pool of
    interleaved rounds; profile the two ends per op (``census``); analyze
    (:func:`.conv_finding.analyze`). Returns the JSON-ready result of ``make profile``.

    ``budget_s``: the whole run's time budget; when the compiles leave too little of it,
    fewer timing rounds are run (never fewer than 5, or ``rounds`` if smaller)."""
    t_start = time.perf_counter()
    factors = FACTORS if factors is None else factors
    rows = default_rows() if rows is None else rows
    ff = ff_cfg or config_mod.load("week9")
    conv = conv_cfg or config_mod.load("conv")
    meta = {**_machine(), "warmup": warmup, "seed": seed, "conv_batch": conv_batch, "ff_batch": ff_batch,
            "gemm_start": gemm_gflops()}
    log.info("numpy float32 GEMM: %.0f GFLOP/s", meta["gemm_start"]["median"])
    subsets = {name: subset_of(ov, factors) for name, ov in rows.items()}
    ends = {"fast": next((n for n, s in subsets.items() if s == [] and not rows[n]), None),
            "2015": next((n for n, s in subsets.items() if s is not None and len(s) == len(factors)), None)}
    others = [name for name in linkers if name != "c"]
    graphs = {"feedforward": (ff, ff_batch, {}), **{name: (conv, conv_batch, ov) for name, ov in rows.items()}}
    steps, notes, gflop = _compile_all(graphs, ends, others)
    left = None
    if budget_s is not None:  # keep time for the census: two profiled compiles per end
        reserve = 30.0 + sum(2 * steps["c", n].compile_s for n in ends.values() if census and ("c", n) in steps)
        left = max(0.0, budget_s - (time.perf_counter() - t_start) - reserve)
    log.info("timing %d compiled steps in %d interleaved rounds (+%d warm-up)", len(steps), rounds, warmup)
    timed = interleaved_times(steps, rounds=rounds, warmup=warmup, seed=seed, time_budget_s=left,
                              min_rounds=min(5, rounds))
    meta.update(rounds=timed["rounds"], rounds_requested=rounds, gemm_end=gemm_gflops(),
                loadavg_end=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    compile_s = {key: step.compile_s for key, step in steps.items()}
    del steps  # free the compiled functions before the profiled compiles

    def series(key):
        if key in notes or key not in timed["ms"]:
            return {"note": notes.get(key, "not measured")}
        return _series(timed["ms"][key], compile_s[key], gflop[key[1]], ff_batch if key[1] == "feedforward" else conv_batch)

    ff_s = series(("c", "feedforward"))
    out = {"meta": meta, "factors": factors, "bn_factors": [f for f in BN_FACTORS if f in factors],
           "feedforward": {**ff_s, "summary": {"batch_size": ff_batch, "ms_per_call": ff_s["ms_per_step"],
                                               "gflop_model": ff_s["gflop_model"], "ms_per_gflop": ff_s["ms_per_gflop"]}},
           "rows": [], "linkers": {}, "ends": ends, "orders": [[list(k) for k in o] for o in timed["orders"]]}
    for name, overrides in rows.items():
        row = {"name": name, "overrides": overrides, "subset": subsets[name], **series(("c", name))}
        if "ms" in row:
            row["ratio_to_ff"] = row["ms_per_gflop"] / ff_s["ms_per_gflop"]
        out["rows"].append(row)
    for linker in ("c", *others):
        out["linkers"][linker] = {label: series((linker, gname)) if gname else {"note": "not among the rows"}
                                  for label, gname in (("feedforward", "feedforward"), ("fast", ends["fast"]),
                                                       ("2015", ends["2015"]))}
    if census:
        shown = [n for n in ends.values() if n] or [out["rows"][0]["name"], out["rows"][-1]["name"]]
        for row in (r for r in out["rows"] if r["name"] in shown):
            log.info("per-op profile (C/VM, PyTensor's profiler): %s", row["name"])
            row["profile"] = profile_config(_with(conv, row["overrides"]), conv_batch, n_calls,
                                            fast_sums=row["overrides"].get("fast_sums", True))
    meta.update(n_compiles=len(compile_s) + 2 * sum("profile" in r for r in out["rows"]),
                compile_s_timed_steps=sum(compile_s.values()), wall_s=time.perf_counter() - t_start)
    out["analysis"] = conv_finding.analyze(out)
    return out


def write_report(res: dict, outdir) -> Path:
    """``report.md`` (the finding first), ``report.json`` and figures (ablation, attribution,
    time per op type)."""
    outdir = Path(outdir)
    write_json(outdir / "report.json", res)
    write_text(outdir / "report.md", report_markdown(res))
    plots.save(plots.ablation_bars(res["rows"], res["feedforward"]["summary"]["ms_per_gflop"]), outdir / "ablation.png")
    att = res.get("analysis", {}).get("attribution")
    if att:
        plots.save(plots.attribution_bars(att["factors"], att["gap"]["value"]), outdir / "attribution.png")
    censuses = {r["name"]: r["profile"]["census"] for r in res["rows"] if "profile" in r}
    if censuses:
        plots.save(plots.op_time_bars(censuses), outdir / "time_per_op.png")
    return outdir / "report.md"


def run(config_name: str = "conv", construction: str | None = None, linkers=("c", "numba"), n_calls: int = 3,
        outdir="runs/profile", rounds: int = 7, warmup: int = 1, seed: int = 0, all_subsets: bool = False,
        budget_minutes: float | None = 14.0) -> Path:
    """``make profile``: the ablation of a conv config's train step (or the profile of one
    construction set, ``fast`` or ``2015``), written under ``outdir``."""
    t0 = time.perf_counter()
    cfg = config_mod.load(config_name)
    if cfg["model"]["kind"] != "conv":
        raise UserError(f"profile compares conv graph constructions: --config must be a conv config "
                        f"(e.g. conv), got {config_name!r} of kind {cfg['model']['kind']!r}")
    for linker in linkers:
        if linker not in backends.BACKENDS or linker == "auto":
            raise UserError(f"unknown linker {linker!r}; valid: c, numba, jax")
    rows = default_rows(all_subsets)
    if construction:
        if construction not in CONSTRUCTIONS:
            raise UserError(f"unknown construction {construction!r}; valid: {', '.join(CONSTRUCTIONS)}")
        overrides = dict(CONSTRUCTIONS[construction], **({"fast_sums": False} if construction == "2015" else {}))
        rows = {f"{construction} constructions": overrides}
    res = ablation(conv_batch=cfg["train"]["batch_size"], rows=rows, linkers=tuple(linkers), conv_cfg=cfg,
                   n_calls=n_calls, rounds=rounds, warmup=warmup, seed=seed,
                   budget_s=None if budget_minutes is None else 60 * budget_minutes)
    res["meta"].update(config=config_name, command_wall_s=time.perf_counter() - t0)
    path = write_report(res, outdir)
    log.info("finding: %s", res["analysis"]["finding"])
    return path
