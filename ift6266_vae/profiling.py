"""Look inside compiled PyTensor functions: where does the time of a training step go?

Works on any function of the package (a model's train step, an inference step, any
config or graph construction):

* :func:`profile_step` compiles the step on the C/VM linker with PyTensor's own profiler
  (``profile=True``; with ``profile_memory`` so the VM records every variable's runtime
  shape) and returns one :class:`NodeRecord` per Apply node: op class, output shapes,
  measured time per call, estimated FLOPs and bytes moved, and whether the node ran
  compiled C code or fell back to Python (``perform``).
* :func:`census` groups the records by op class; :func:`ranking` orders op classes by
  time per useful FLOP (GEMM FLOPs are the useful work; copies, joins, reshapes and
  set_subtensor do none).
* :func:`function_times` times the whole step on every installed linker (C/VM, Numba,
  JAX); a linker that is not installed gets a note, not a crash.
* :func:`ablation` switches the 2015 graph constructions on one at a time on the conv VAE
  and reports each one's ms/step and conv/feedforward time-per-FLOP ratio;
  :func:`write_report` writes ``report.md``, ``report.json`` and figures.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytensor

from . import backends
from .utils import UserError, atomic_path, write_json

log = logging.getLogger(__name__)



@dataclass
class NodeRecord:
    op: str             # op class name (Dot22, Elemwise, Join, ...)
    label: str          # short str(op)
    seconds: float      # mean time per call
    flops: float        # estimated FLOPs per call
    useful_flops: float  # GEMM FLOPs (the work the model needs)
    bytes: float        # bytes read + written per call
    shapes: list = field(default_factory=list)
    compiled: bool = True  # False: Python `perform` fallback


def _shape_of(profile, var):
    sh = profile.variable_shape.get(var) if hasattr(profile, "variable_shape") else None
    if isinstance(sh, (tuple, list)):
        return tuple(int(d) for d in sh)
    return None


def _size(shape):
    return int(np.prod(shape)) if shape is not None else 0


def _gemm_operands(name: str, in_shapes):
    """The (A, B) operand shapes of a matrix-product node, or None."""
    if name in ("Dot", "Dot22", "Dot22Scalar", "BatchedDot"):
        return in_shapes[0], in_shapes[1]
    if name == "Gemm":  # Gemm(z, alpha, x, y, beta)
        return in_shapes[2], in_shapes[3]
    if name == "Gemv":  # Gemv(y, alpha, A, x, beta)
        return in_shapes[2], in_shapes[3]
    return None


def estimate_flops(node, in_shapes, out_shapes) -> tuple[float, float]:
    """(FLOPs, useful GEMM FLOPs) of one Apply node from its runtime shapes.

    Matrix products: ``2 m k n``. Elementwise: output size x the number of scalar ops
    fused into it. Reductions: input size. Data movement (join, subtensor, reshape, ...):
    0 FLOPs (its cost shows as bytes moved).
    """
    name = type(node.op).__name__
    ops = _gemm_operands(name, in_shapes)
    if ops is not None:
        a, b = ops
        if not a or not b:
            return 0.0, 0.0
        m = _size(a) // a[-1]
        k = a[-1]
        n = b[-1] if len(b) >= 2 else 1
        f = 2.0 * m * k * n
        return f, f
    out = sum(_size(sh) for sh in out_shapes)
    scalar = getattr(node.op, "scalar_op", None)
    if scalar is not None and name not in ("Sum", "Max", "CAReduce", "Prod", "Argmax"):
        inner = getattr(scalar, "fgraph", None)
        n_ops = len(inner.apply_nodes) if inner is not None else 1
        return float(out * n_ops), 0.0
    if name in ("Sum", "Max", "CAReduce", "Prod", "Argmax", "MaxAndArgmax"):
        return float(_size(in_shapes[0])), 0.0
    return 0.0, 0.0


def _itemsize(var):
    try:
        return np.dtype(var.type.dtype).itemsize
    except (AttributeError, TypeError):
        return 0


def profile_step(inputs, outputs, updates, args, n_calls: int = 5, warmup: int = 1, fast_sums: bool = True,
                 shapes: bool = True):
    """Profile one compiled step on the C/VM linker; returns (records, summary dict).

    ``shapes=False`` skips the second compile that records runtime shapes: the records
    then have no shapes, FLOP or byte estimates (only times).

    ``fast_sums=False`` compiles without the package's fast-sums rewrite
    (:mod:`ift6266_vae.rewrites`), i.e. with PyTensor's (and Theano's) C reduction loops.
    """

    import warnings

    from pytensor.compile import ProfileStats
    from pytensor.graph.traversal import applys_between

    backends.configure_blas()
    mode = backends.get_compile_mode("c")
    if not fast_sums:
        from .rewrites import FAST_SUMS

        mode = mode.excluding(FAST_SUMS)
    # 1. times: the C VM loop with PyTensor's profiler (times every node, little overhead)
    prof = ProfileStats(atexit_print=False)
    t0 = time.perf_counter()
    fn = pytensor.function(inputs, outputs, updates=updates, profile=prof, mode=mode)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        fn(*args)
    prof.apply_time.clear()
    t0 = time.perf_counter()
    for _ in range(n_calls):
        fn(*args)
    wall = (time.perf_counter() - t0) / n_calls
    # 2. runtime shapes: config.profile + profile_memory turn the VM into a Python Stack VM
    #    that records every variable's shape (too slow to time with); nodes are matched by
    #    their position in the (deterministic) topological order of the rewritten graph.
    record_shapes, shapes = shapes, {}
    if record_shapes:
        with warnings.catch_warnings(), pytensor.config.change_flags(profile=True, profile_memory=True):
            warnings.simplefilter("ignore")
            sprof = ProfileStats(atexit_print=False)
            sfn = pytensor.function(inputs, outputs, updates=updates, profile=sprof, mode=mode)
            sfn(*args)
        for node, snode in zip(fn.maker.fgraph.toposort(), sfn.maker.fgraph.toposort()):
            if str(node.op) == str(snode.op):
                shapes[node] = ([_shape_of(sprof, v) for v in snode.inputs],
                                [_shape_of(sprof, v) for v in snode.outputs])
    before = sum(1 for _ in applys_between(list(inputs), list(outputs) + list((updates or {}).values())))
    after = len(fn.maker.fgraph.apply_nodes)
    records = []
    for (_fg, node), t in prof.apply_time.items():
        ins, outs = shapes.get(node, ([None] * len(node.inputs), [None] * len(node.outputs)))
        f, useful = estimate_flops(node, ins, outs)
        nbytes = sum(_size(sh) * _itemsize(v) for sh, v in zip(ins, node.inputs) if sh is not None)
        nbytes += sum(_size(sh) * _itemsize(v) for sh, v in zip(outs, node.outputs) if sh is not None)
        records.append(NodeRecord(
            op=type(node.op).__name__, label=str(node.op)[:80], seconds=t / n_calls, flops=f,
            useful_flops=useful, bytes=float(nbytes), shapes=[list(sh) for sh in outs if sh is not None],
            compiled=bool(prof.apply_cimpl.get(node, True)),
        ))
    summary = {
        "ms_per_call": 1000 * wall,
        "ms_in_nodes": 1000 * sum(r.seconds for r in records),
        "compile_s": compile_s,
        "n_nodes_before_rewrites": before,
        "n_nodes_after_rewrites": after,
        "gflop_estimated": sum(r.flops for r in records) / 1e9,
        "gflop_useful": sum(r.useful_flops for r in records) / 1e9,
        "python_fallback_nodes": sum(not r.compiled for r in records),
        "shapes_recorded": bool(record_shapes),
    }
    return records, summary


def census(records: list[NodeRecord]) -> list[dict]:
    """Records grouped by op class, most time first."""
    groups: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0, "gflop": 0.0, "useful_gflop": 0.0,
                                                   "mb": 0.0, "python_nodes": 0})
    for r in records:
        g = groups[r.op]
        g["count"] += 1
        g["ms"] += 1000 * r.seconds
        g["gflop"] += r.flops / 1e9
        g["useful_gflop"] += r.useful_flops / 1e9
        g["mb"] += r.bytes / 1e6
        g["python_nodes"] += int(not r.compiled)
    total = sum(g["ms"] for g in groups.values()) or 1.0
    rows = [{"op": k, **v, "share": v["ms"] / total} for k, v in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def ranking(records: list[NodeRecord], top: int = 10) -> list[dict]:
    """Op classes ranked by time per useful GFLOP of the whole step (the cost of the non-GEMM
    work is charged to the useful work it serves)."""
    useful = sum(r.useful_flops for r in records) / 1e9 or 1.0
    rows = census(records)
    for r in rows:
        r["ms_per_useful_gflop"] = r["ms"] / useful
        r["achieved_gflops"] = r["gflop"] / (r["ms"] / 1000) if r["ms"] > 0 else 0.0
    return rows[:top]


def function_times(inputs, outputs, updates, args, linkers=("c", "numba", "jax"), n_calls: int = 10) -> dict:
    """Median ms per call of the whole function on each linker; notes for missing ones."""
    out = {}
    for name in linkers:
        try:
            backends.resolve(name)
        except UserError as e:
            out[name] = {"note": str(e)}
            continue
        try:
            t0 = time.perf_counter()
            fn = backends.function(inputs, outputs, backend=name, updates=updates)
            fn(*args)
            compile_s = time.perf_counter() - t0
            ts = []
            for _ in range(n_calls):
                t = time.perf_counter()
                fn(*args)
                ts.append(time.perf_counter() - t)
            out[name] = {"ms_median": 1000 * float(np.median(ts)), "ms_min": 1000 * float(min(ts)),
                         "compile_s": compile_s}
        except Exception as e:  # noqa: BLE001 - a linker that cannot compile the graph is a finding
            out[name] = {"note": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


# ------------------------------------------------------------------------------ models
def _train_graph(cfg: dict, batch_size: int):
    from . import models
    from .functions import ModelFunctions

    model = models.build(cfg["model"], seed=0)
    fns = ModelFunctions(model, "c", optim_config=cfg["optim"], batch_size=batch_size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((batch_size, model.code_size)).astype(np.float32)
    inputs, outputs, updates = fns.train_graph
    return model, inputs, outputs, updates, [x, eps]


def _snapshot(model):
    return {v: v.get_value() for v in model.params + model.bn_state}


def _restore(snap):
    for v, a in snap.items():
        v.set_value(a)


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


def profile_config(cfg: dict, batch_size: int, n_calls: int = 3, fast_sums: bool = True,
                   shapes: bool = True) -> dict:
    """Per-op profile (C/VM) of one config's train step; parameters are restored after."""
    model, inputs, outputs, updates, args = _train_graph(cfg, batch_size)
    snap = _snapshot(model)
    try:
        records, summary = profile_step(inputs, outputs, updates, args, n_calls=n_calls, fast_sums=fast_sums,
                                        shapes=shapes)
    finally:
        _restore(snap)
    gflop_model = 3 * model.forward_flops() * batch_size / 1e9
    summary.update(gflop_model=gflop_model, ms_per_gflop=summary["ms_per_call"] / gflop_model,
                   batch_size=batch_size)
    return {"summary": summary, "census": census(records), "ranking": ranking(records),
            "records": [asdict(r) for r in sorted(records, key=lambda r: -r.seconds)[:25]]}


def ablation(conv_batch: int = 128, ff_batch: int = 1000, n_calls: int = 3, rows=None,
             linkers=("c", "numba", "jax"), conv_cfg: dict | None = None, ff_cfg: dict | None = None) -> dict:
    """The 2015 constructions of the conv VAE switched on one at a time (see :data:`ABLATION`).

    For each row: ms per train step on the C/VM linker (per-op profile), ms per analytic
    GFLOP, and the ratio of that to the feedforward VAE's (measured in the same run), plus
    each 2015 construction's share of the gap between the fast graph and all-2015 graph.
    Whole-function times on every linker for the feedforward and fast conv steps.
    """
    from . import config as config_mod

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
        model, inputs, outputs, updates, args = _train_graph(cfg, bs)
        snap = _snapshot(model)
        log.info("timing %s on linkers %s", label, ", ".join(others))
        times.update(function_times(inputs, outputs, updates, args, others, n_calls=max(n_calls, 3)))
        out["linkers"][label] = {name: times[name] for name in linkers if name in times}
        _restore(snap)
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
    from . import plots

    outdir = Path(outdir)
    write_json(outdir / "report.json", res)
    with atomic_path(outdir / "report.md") as tmp:
        tmp.write_text(report_markdown(res))
    plots.ablation_bars(res["rows"], res["feedforward"]["summary"]["ms_per_gflop"], outdir / "ablation.png")
    plots.op_time_bars({r["name"]: r["profile"]["census"] for r in (res["rows"][0], res["rows"][-1])},
                       outdir / "time_per_op.png")
    return outdir / "report.md"
