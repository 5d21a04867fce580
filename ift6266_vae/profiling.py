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
* :func:`compile_step` and :func:`interleaved_times` time several compiled steps without
  the profiler, in interleaved rounds (all steps once per round, in a shuffled order), so
  a drift of the machine's speed hits every step alike; :func:`spread` summarizes the
  rounds (median, quartiles, extremes); :func:`gemm_gflops` is the machine's yardstick.
* :func:`profile_config` (``ift6266_vae.profile``): all of this for the train step of a
  VAE config.

The conv-VAE ablation that explains the 2015 ~100x is an experiment built on this module:
:mod:`ift6266_vae.experiments.conv_ablation`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pytensor
from tqdm.auto import tqdm

from . import models
from .errors import UserError
from .graph import backends

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
    call_seconds: list = field(default_factory=list)  # the time of each profiled call


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


def _c_mode(fast_sums: bool = True):
    """The C/VM compile mode (BLAS configured), without the package's fast-sums rewrite
    (:mod:`ift6266_vae.graph.rewrites`) when ``fast_sums`` is False."""
    mode = backends.get_compile_mode("c")
    if fast_sums:
        return mode
    from .graph.rewrites import FAST_SUMS

    return mode.excluding(FAST_SUMS)


def profile_step(inputs, outputs, updates, args, n_calls: int = 5, warmup: int = 1, fast_sums: bool = True,
                 shapes: bool = True):
    """Profile one compiled step on the C/VM linker; returns (records, summary dict).

    ``shapes=False`` skips the second compile that records runtime shapes: the records
    then have no shapes, FLOP or byte estimates (only times).

    ``fast_sums=False`` compiles without the package's fast-sums rewrite
    (:mod:`ift6266_vae.graph.rewrites`), i.e. with PyTensor's (and Theano's) C reduction loops.
    """

    import warnings

    from pytensor.compile import ProfileStats
    from pytensor.graph.traversal import applys_between

    mode = _c_mode(fast_sums)
    # 1. times: the C VM loop with PyTensor's profiler (times every node, little overhead)
    prof = ProfileStats(atexit_print=False)
    t0 = time.perf_counter()
    fn = pytensor.function(inputs, outputs, updates=updates, profile=prof, mode=mode)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        fn(*args)
    prof.apply_time.clear()
    walls, per_call = [], []  # each call's wall time and per-node times
    for _ in range(n_calls):
        t0 = time.perf_counter()
        fn(*args)
        walls.append(time.perf_counter() - t0)
        per_call.append(dict(prof.apply_time))
        prof.apply_time.clear()
    wall = float(np.mean(walls))
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
    for key in per_call[0] if per_call else ():
        node, calls = key[1], [c.get(key, 0.0) for c in per_call]
        t = sum(calls)
        ins, outs = shapes.get(node, ([None] * len(node.inputs), [None] * len(node.outputs)))
        f, useful = estimate_flops(node, ins, outs)
        nbytes = sum(_size(sh) * _itemsize(v) for sh, v in zip(ins, node.inputs) if sh is not None)
        nbytes += sum(_size(sh) * _itemsize(v) for sh, v in zip(outs, node.outputs) if sh is not None)
        records.append(NodeRecord(
            op=type(node.op).__name__, label=str(node.op)[:80], seconds=t / n_calls, flops=f,
            useful_flops=useful, bytes=float(nbytes), shapes=[list(sh) for sh in outs if sh is not None],
            compiled=bool(prof.apply_cimpl.get(node, True)), call_seconds=calls,
        ))
    summary = {
        "ms_per_call": 1000 * wall,
        "ms_per_call_spread": spread([1000 * w for w in walls]),
        "n_calls": n_calls,
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
    """Records grouped by op class, most time first (``ms``: mean per call; ``ms_min``,
    ``ms_max``: the op class's fastest and slowest of the profiled calls)."""
    groups: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0, "gflop": 0.0, "useful_gflop": 0.0,
                                                   "mb": 0.0, "python_nodes": 0, "calls": None})
    for r in records:
        g = groups[r.op]
        g["count"] += 1
        g["ms"] += 1000 * r.seconds
        if r.call_seconds:
            calls = np.asarray(r.call_seconds) * 1000
            g["calls"] = calls if g["calls"] is None else g["calls"] + calls
        g["gflop"] += r.flops / 1e9
        g["useful_gflop"] += r.useful_flops / 1e9
        g["mb"] += r.bytes / 1e6
        g["python_nodes"] += int(not r.compiled)
    total = sum(g["ms"] for g in groups.values()) or 1.0
    for g in groups.values():
        calls = g.pop("calls")
        g["ms_min"], g["ms_max"] = (float(calls.min()), float(calls.max())) if calls is not None else (g["ms"], g["ms"])
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



def train_graph(cfg: dict, batch_size: int):
    """``(model, inputs, outputs, updates, args)`` of a VAE config's train step, compiled
    nowhere yet; ``args`` are random images and noise of ``batch_size`` rows."""
    model = models.build(cfg["model"], seed=0)
    fns = models.kind_of(cfg["model"]).functions(model, "c", optim_config=cfg["optim"], batch_size=batch_size)
    if fns.conditional:
        raise UserError(f"profiling builds the train step of an unconditional VAE (x, eps); model kind "
                        f"{cfg['model']['kind']!r} takes labeled and unlabeled batches")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((batch_size, model.code_size)).astype(np.float32)
    inputs, outputs, updates = fns.train_graph
    return model, inputs, outputs, updates, [x, eps]


def snapshot(model_or_vars) -> dict:
    """The values of every parameter and BN statistic of a model (a train step changes
    them), or of the given shared variables (e.g. the keys of a step's ``updates``)."""
    shared = model_or_vars.params + model_or_vars.bn_state if hasattr(model_or_vars, "params") else model_or_vars
    return {v: v.get_value() for v in shared}


def restore(snap: dict) -> None:
    for v, a in snap.items():
        v.set_value(a)


def profile_config(cfg: dict, batch_size: int, n_calls: int = 3, fast_sums: bool = True,
                   shapes: bool = True) -> dict:
    """Per-op profile (C/VM) of one config's train step; parameters are restored after."""
    model, inputs, outputs, updates, args = train_graph(cfg, batch_size)
    snap = snapshot(model)
    try:
        records, summary = profile_step(inputs, outputs, updates, args, n_calls=n_calls, fast_sums=fast_sums,
                                        shapes=shapes)
    finally:
        restore(snap)
    gflop_model = 3 * model.forward_flops() * batch_size / 1e9
    summary.update(gflop_model=gflop_model, ms_per_gflop=summary["ms_per_call"] / gflop_model,
                   batch_size=batch_size)
    return {"summary": summary, "census": census(records), "ranking": ranking(records),
            "records": [asdict(r) for r in sorted(records, key=lambda r: -r.seconds)[:25]]}


# ------------------------------------------------------------ timing without the profiler


def spread(values) -> dict:
    """Median, quartiles and extremes of repeated measurements (``n`` of them)."""
    v = np.asarray(list(values), dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size)}


def gemm_gflops(n: int = 2048, reps: int = 5) -> dict:
    """numpy's float32 GEMM rate (GFLOP/s of ``n x n`` by ``n x n``, one value per repeat,
    after one warm-up product): the machine's own yardstick, as :func:`spread`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ a
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return spread(rates)


@dataclass
class CompiledStep:
    """A compiled function and its arguments, ready to be timed: ``reset()`` puts back the
    values its updates change (never inside a timer), a call runs it once."""

    fn: object
    args: list
    state: dict
    compile_s: float = 0.0

    def reset(self) -> None:
        restore(self.state)

    def __call__(self):
        return self.fn(*self.args)


def _check_finite(name: str, outputs) -> None:
    values = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if not all(np.all(np.isfinite(np.asarray(v))) for v in values):
        raise RuntimeError(f"step {name!r} returned non-finite values: its timings would not be comparable")


def compile_step(inputs, outputs, updates, args, linker: str = "c", fast_sums: bool = True,
                 name: str = "step") -> CompiledStep:
    """Compile a step on ``linker`` without the profiler and run it once (JAX and Numba
    compile on the first call: ``compile_s`` includes it); its updates are undone.

    ``fast_sums=False`` (C/VM only) compiles without the package's fast-sums rewrite.
    """
    state = snapshot(list((updates or {}).keys()))
    t0 = time.perf_counter()
    if linker == "c" and not fast_sums:
        fn = pytensor.function(inputs, outputs, updates=updates, mode=_c_mode(fast_sums=False))
    else:
        fn = backends.function(inputs, outputs, backend=linker, updates=updates)
    step = CompiledStep(fn, list(args), state)
    try:
        _check_finite(name, step())
    finally:
        step.reset()
    step.compile_s = time.perf_counter() - t0
    return step


def interleaved_times(steps: dict, rounds: int = 7, warmup: int = 1, seed: int = 0,
                      time_budget_s: float | None = None, min_rounds: int = 5) -> dict:
    """Time compiled steps in interleaved rounds: every step once per round, the order
    shuffled per round (seeded), ``warmup`` untimed calls of each first.

    Every step is ``reset()`` once before the warm-up and once at the end; in between, a
    train step keeps updating its parameters as in training (restoring them before each call
    would time a host-to-device copy on JAX), and every call must return finite values.
    With ``time_budget_s``, fewer rounds (never below ``min_rounds``) are run when the
    warm-up pass shows that ``rounds`` would not fit. Returns ``{"ms": {name: [ms of round 0,
    round 1, ...]}, "orders": [...], "rounds": n}``: the lists are aligned by round, so ratios
    of two steps can be taken round by round.
    """
    names = list(steps)
    for name in names:
        steps[name].reset()
    t0 = time.perf_counter()
    for _ in range(warmup):
        for name in names:
            _check_finite(name, steps[name]())
    if time_budget_s is not None and warmup:
        spent = time.perf_counter() - t0
        per_round = spent / warmup
        fit = max(min_rounds, int((time_budget_s - spent) // max(per_round, 1e-9)))
        if fit < rounds:
            log.warning("timing: %d rounds instead of %d (a round takes %.0f s; budget %.0f s)", fit, rounds,
                        per_round, time_budget_s)
            rounds = fit
    rng = np.random.default_rng(seed)
    ms: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for _ in tqdm(range(rounds), desc="timing rounds", unit="round", leave=False, disable=None):
        order = [names[i] for i in rng.permutation(len(names))]
        orders.append(order)
        for name in order:
            step = steps[name]
            t0 = time.perf_counter()
            out = step()
            ms[name].append(1000 * (time.perf_counter() - t0))
            _check_finite(name, out)
    for name in names:
        steps[name].reset()
    return {"ms": ms, "orders": orders, "rounds": rounds}
