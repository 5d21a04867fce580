"""Time the conv2d constructions (and the pooling / upsampling ops) of ``ift6266_vae.graph.conv``
(and the rejected ones of ``conv_constructions.py``).

Reproduces the conv construction table of ``docs/results.md``::

    .venv/bin/python benchmarks/bench_ops.py                 # CVM + NUMBA, all constructions
    .venv/bin/python benchmarks/bench_ops.py --modes NUMBA --constructions im2col taps
    .venv/bin/python benchmarks/bench_ops.py --rounds 20 --no-extras

For each mode in turn, the compiled functions are timed in interleaved rounds
(round-robin over the functions of that mode, ``--reps`` calls each per round),
so a burst of load from another process hits all candidates alike; the table
reports the minimum and the median per call in ms.  The machine may be shared:
each call is flagged "quiet" when other processes used almost no CPU meanwhile
(from /proc/stat), the statistics use the quiet calls when there are any, and
each round first waits (up to ``--wait-quiet`` s) for the other processes to go
idle.  ``--threads 1 --clock cpu`` times process CPU time instead, a proxy that
hardly depends on other jobs.  ``fwd`` is the convolution output, ``fwd+bwd``
the output plus the gradients wrt x and W for a given upstream gradient (what a
training step needs).  The thread count of OpenBLAS / OpenMP / Numba is fixed
(``--threads``, default 2) before numpy is imported.  Results go to the log and
to ``benchmarks/results/ops-<date>[-<clock>-<threads>t].json`` with machine and
library versions.

The docstring table came from::

    .venv/bin/python benchmarks/bench_ops.py --rounds 8 --wait-quiet 150
    .venv/bin/python benchmarks/bench_ops.py --threads 1 --clock cpu --wait-quiet 0 --rounds 8
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_ops")

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["CVM", "NUMBA"])
    p.add_argument(
        "--constructions",
        nargs="+",
        default=["im2col", "taps", "shift", "2015"],
        help="conv2d constructions to time ('fast' is an alias and is not timed twice)",
    )
    p.add_argument("--x-shape", type=int, nargs=4, default=[128, 64, 14, 14])
    p.add_argument("--w-shape", type=int, nargs=4, default=[128, 64, 3, 3])
    p.add_argument("--border", default="same")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="'cpu' = process CPU time; with --threads 1 a load-independent proxy "
                        "for a shared machine")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--reps", type=int, default=2, help="calls per function per round")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each round wait up to this many seconds for other processes to go idle")
    p.add_argument("--no-extras", action="store_true", help="skip the pooling/upsampling timings")
    p.add_argument("--json", default=None,
                   help="output path (default benchmarks/results/ops-<date>[-<clock>-<threads>t].json)")
    p.add_argument("--no-json", action="store_true")
    return p.parse_args(argv)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _busy_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process); (0, 0) if unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        v = [int(f) for f in fields]
        machine = v[0] + v[1] + v[2] + sum(v[5:8])  # user nice system irq softirq steal
        st = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return machine, int(st[11]) + int(st[12])  # utime + stime (all threads)
    except (OSError, ValueError, IndexError):
        return 0, 0


def _others_busy(seconds: float) -> float:
    """CPU-seconds used by other processes during a ``seconds`` sleep."""
    m0, s0 = _busy_jiffies()
    time.sleep(seconds)
    m1, s1 = _busy_jiffies()
    return ((m1 - m0) - (s1 - s0)) / os.sysconf("SC_CLK_TCK")


def _timed(fn, inputs, tick: float, clock: str = "wall") -> tuple[float, bool]:
    """Time of one call and whether other processes stayed (almost) idle meanwhile.

    ``clock="wall"``: elapsed time; ``clock="cpu"``: CPU time of this process (all
    threads), which at ``--threads 1`` hardly depends on other processes' load.
    """
    timer = time.perf_counter if clock == "wall" else time.process_time
    m0, s0 = _busy_jiffies()
    t0 = timer()
    fn(*inputs)
    dt = timer() - t0
    m1, s1 = _busy_jiffies()
    others = ((m1 - m0) - (s1 - s0)) * tick
    return dt, others <= max(2 * tick, 0.05 * dt)


def _versions() -> dict:
    import numpy
    import pytensor
    import scipy

    out = {"python": platform.python_version(), "pytensor": pytensor.__version__,
           "numpy": numpy.__version__, "scipy": scipy.__version__}
    try:
        import numba

        out["numba"] = numba.__version__
    except ImportError:  # pragma: no cover
        out["numba"] = None
    return out


def _conv_cases(args, np, pt, pytensor, ops, rejected):
    """Yield (group, name, mode, inputs, fwd_fn, fwd_bwd_fn, compile_s)."""
    from pytensor.compile.mode import get_mode

    rng = np.random.default_rng(0)
    xv = rng.standard_normal(args.x_shape).astype("float32")
    wv = (rng.standard_normal(args.w_shape) * 0.05).astype("float32")
    out_shape = ops.conv2d_output_shape(args.x_shape, args.w_shape, args.border)
    gv = rng.standard_normal(out_shape).astype("float32")
    for mode in args.modes:
        for cons in args.constructions:
            x = pt.tensor4("x", dtype="float32")
            w = pt.tensor4("W", dtype="float32", shape=(None, None, *args.w_shape[2:]))
            g = pt.tensor4("g", dtype="float32")
            y = (rejected[cons](x, w, args.border) if cons in rejected
                 else ops.conv2d(x, w, args.border, construction=cons))
            gx, gw = pytensor.grad(None, [x, w], known_grads={y: g})
            t0 = time.perf_counter()
            f = pytensor.function([x, w], y, mode=get_mode(mode))
            fb = pytensor.function([x, w, g], [y, gx, gw], mode=get_mode(mode))
            f(xv, wv), fb(xv, wv, gv)  # first call: numba JIT, caches, page faults
            yield "conv2d", cons, mode, (xv, wv), (xv, wv, gv), f, fb, time.perf_counter() - t0


def _extra_cases(args, np, pt, pytensor, ops):
    from pytensor.compile.mode import get_mode

    rng = np.random.default_rng(1)
    n, c = args.x_shape[0], args.w_shape[0]
    for mode in args.modes:
        for name in ("max_pool_2x2", *[f"upsample_2x:{m}" for m in ops.UPSAMPLE_METHODS]):
            hw = 14 if name == "max_pool_2x2" else 7
            xv = rng.standard_normal((n, c, hw, hw)).astype("float32")
            x = pt.tensor4("x", dtype="float32")
            g = pt.tensor4("g", dtype="float32")
            y = ops.max_pool_2x2(x) if name == "max_pool_2x2" else ops.upsample_2x(x, name.split(":")[1])
            (gx,) = pytensor.grad(None, [x], known_grads={y: g})
            oh = hw // 2 if name == "max_pool_2x2" else 2 * hw
            gv = rng.standard_normal((n, c, oh, oh)).astype("float32")
            t0 = time.perf_counter()
            f = pytensor.function([x], y, mode=get_mode(mode))
            fb = pytensor.function([x, g], [y, gx], mode=get_mode(mode))
            f(xv), fb(xv, gv)
            yield "extra", f"{name} {xv.shape}", mode, (xv,), (xv, gv), f, fb, time.perf_counter() - t0


def main(argv=None) -> dict:
    args = _parse(argv)
    for var in THREAD_VARS:
        os.environ[var] = str(args.threads)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    import warnings

    warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")

    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conv_constructions import REJECTED
    from ift6266_vae.graph import conv as ops
    from ift6266_vae.io import write_json

    args.constructions = [c for c in args.constructions if c != "fast"]
    load_before = os.getloadavg()
    cases = list(_conv_cases(args, np, pt, pytensor, ops, REJECTED))
    if not args.no_extras:
        cases += list(_extra_cases(args, np, pt, pytensor, ops))

    # all constructions must agree (per mode and across modes)
    ref = {}
    for group, name, mode, inp, inpb, f, fb, _ in cases:
        if group != "conv2d":
            continue
        outs = fb(*inpb)
        if "ref" not in ref:
            ref["ref"] = outs
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(outs, ref["ref"]))
        if err > 1e-3:
            log.warning("%s/%s differs from the first construction by %.3g", mode, name, err)

    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    # times[i][k] = list of (seconds, quiet) for fwd (k=0) and fwd+bwd (k=1)
    times = {i: ([], []) for i in range(len(cases))}
    waited = 0.0
    # One mode at a time: the C/VM graphs call numpy's OpenBLAS and the Numba graphs
    # scipy's, two separate thread pools whose idle threads spin for a while after a
    # call; alternating between them would make the pools fight for the cores.
    for mode in args.modes:
        idx = [i for i, case in enumerate(cases) if case[2] == mode]
        time.sleep(0.5)
        for r in range(args.rounds):
            t_wait = time.perf_counter()
            while args.wait_quiet > 0 and time.perf_counter() - t_wait < args.wait_quiet:
                if _others_busy(0.5) < 0.1:  # < 20% of one core used by others
                    break
            waited += time.perf_counter() - t_wait
            for i in idx:
                _, _, _, inp, inpb, f, fb, _ = cases[i]
                for _ in range(args.reps):
                    times[i][0].append(_timed(f, inp, tick, args.clock))
                for _ in range(args.reps):
                    times[i][1].append(_timed(fb, inpb, tick, args.clock))
            log.debug("%s round %d done", mode, r)
    load_after = os.getloadavg()

    def _stats(samples):
        all_ms = 1000 * np.asarray([t for t, _ in samples])
        quiet_ms = 1000 * np.asarray([t for t, q in samples if q])
        use = quiet_ms if quiet_ms.size else all_ms
        return float(use.min()), float(np.median(use)), int(quiet_ms.size), int(all_ms.size)

    flops = ops.conv2d_flops(args.x_shape, args.w_shape, args.border)
    rows = []
    for i, (group, name, mode, *_rest, compile_s) in enumerate(cases):
        f_min, f_med, f_q, f_n = _stats(times[i][0])
        b_min, b_med, b_q, b_n = _stats(times[i][1])
        rows.append({
            "group": group, "name": name, "mode": mode,
            "fwd_ms_min": round(f_min, 2), "fwd_ms_median": round(f_med, 2),
            "fwd_bwd_ms_min": round(b_min, 2), "fwd_bwd_ms_median": round(b_med, 2),
            "quiet_samples": f"{f_q}/{f_n} fwd, {b_q}/{b_n} fwd+bwd",
            "compile_s": round(compile_s, 2),
            **({"fwd_gflops_at_min": round(flops / f_min / 1e6, 1)} if group == "conv2d" else {}),
        })

    header = (f"{'op / construction':44s} {'mode':6s} {'fwd min':>8s} {'fwd med':>8s} {'f+b min':>8s} "
              f"{'f+b med':>8s} {'compile':>8s}  quiet samples")
    log.info("conv2d x=%s W=%s border=%s, float32, %d threads, %d rounds x %d reps; %s ms per call",
             tuple(args.x_shape), tuple(args.w_shape), args.border, args.threads, args.rounds, args.reps,
             "wall-clock" if args.clock == "wall" else "process CPU")
    log.info("forward FLOPs (2*N*O*Ho*Wo*C*kh*kw): %.3g", flops)
    log.info(header)
    for r in rows:
        log.info("%-44s %-6s %8.1f %8.1f %8.1f %8.1f %7.1fs  %s", r["name"], r["mode"], r["fwd_ms_min"],
                 r["fwd_ms_median"], r["fwd_bwd_ms_min"], r["fwd_bwd_ms_median"], r["compile_s"],
                 r["quiet_samples"])
    log.info("statistics over 'quiet' samples (other processes used < 5% of the call's wall time "
             "of CPU) when there are any, else over all samples")
    log.info("load average before %s, after %s; waited %.0f s for quiet rounds",
             tuple(round(v, 2) for v in load_before), tuple(round(v, 2) for v in load_after), waited)
    log.info("ops.FAST_CONSTRUCTION = %r", ops.FAST_CONSTRUCTION)

    result = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "versions": _versions(),
        "config": {"x_shape": args.x_shape, "w_shape": args.w_shape, "border": args.border,
                   "threads": args.threads, "clock": args.clock,
                   "thread_env": {v: os.environ[v] for v in THREAD_VARS},
                   "rounds": args.rounds, "reps": args.reps, "wait_quiet_s": args.wait_quiet,
                   "waited_s": round(waited, 1), "dtype": "float32",
                   "fast_construction": ops.FAST_CONSTRUCTION, "conv_fwd_flops": flops},
        "results": rows,
    }
    if not args.no_json:
        suffix = "" if (args.clock, args.threads) == ("wall", 2) else f"-{args.clock}-{args.threads}t"
        path = Path(args.json) if args.json else (
            Path(__file__).resolve().parent / "results" / f"ops-{_dt.date.today().isoformat()}{suffix}.json")
        write_json(path, result)
        log.info("wrote %s", path)
    return result


if __name__ == "__main__":
    main()
