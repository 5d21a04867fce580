"""Time one training step (forward + backward + update) of each model on each backend.

Each case runs in its own subprocess (clean peak-RSS, no shared caches in memory) with
the thread count set explicitly. Reports ms/step (median and min over ``--steps`` steps
after ``--warmup``), analytic GFLOP/step (3x the forward FLOPs of the dense and conv
layers) and GFLOP/s, next to numpy's float32 GEMM GFLOP/s measured in the same run.

    python benchmarks/bench_steps.py [--backends numba c] [--cases ff conv-fast conv-2015]

Writes ``benchmarks/results/steps-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    # name: (config, batch size, model overrides)
    "ff": ("week9", 1000, {}),
    "conv-fast": ("conv", 128, {"conv_construction": "fast", "upsample": "zeros"}),
    "conv-2015": ("conv", 128, {"conv_construction": "2015", "upsample": "perforated_2015"}),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


def gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ a
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / min(ts) / 1e9


def run_case(case: str, backend: str, steps: int, warmup: int) -> dict:
    """Compile and time one case in this process."""
    import resource

    import numpy as np

    from ift6266_vae import config, models
    from ift6266_vae.functions import ModelFunctions

    cfg_name, bs, overrides = CASES[case]
    cfg = config.load(cfg_name)
    cfg["model"].update(overrides)
    model = models.build(cfg["model"], seed=0)
    fns = ModelFunctions(model, backend, optim_config=cfg["optim"], batch_size=bs)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (bs, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((bs, model.code_size)).astype(np.float32)
    t0 = time.perf_counter()
    fns.train_step(x, eps)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fns.train_step(x, eps)
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        fns.train_step(x, eps)
        ts.append(time.perf_counter() - t)
    gflop = 3 * model.forward_flops() * bs / 1e9
    med = float(np.median(ts))
    return {
        "case": case, "backend": backend, "batch_size": bs,
        "ms_median": 1000 * med, "ms_min": 1000 * min(ts),
        "gflop_per_step": gflop, "gflops_per_s": gflop / med,
        "compile_and_first_step_s": first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def versions() -> dict:
    import numpy
    import pytensor

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "pytensor": pytensor.__version__}
    for mod in ("numba", "jax", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def markdown(res: dict) -> str:
    lines = [f"Measured {res['date']} on {res['machine']['cpu']} ({res['threads']} threads); "
             f"numpy float32 GEMM {res['gemm_gflops']:.0f} GFLOP/s.", "",
             "| case | backend | batch | ms/step (median) | ms/step (min) | GFLOP/step | GFLOP/s | % of GEMM | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['backend']} | | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['case']} | {r['backend']} | {r['batch_size']} | {r['ms_median']:.0f} | {r['ms_min']:.0f} | "
                     f"{r['gflop_per_step']:.2f} | {r['gflops_per_s']:.1f} | {100 * r['gflops_per_s'] / res['gemm_gflops']:.0f} % | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--backends", nargs="+", default=["numba"], choices=["c", "numba", "jax"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--one", nargs=2, metavar=("CASE", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _set_threads(args.threads)
    if args.one:  # child process: one case, JSON on stdout
        sys.stdout.write(json.dumps(run_case(args.one[0], args.one[1], args.steps, args.warmup)) + "\n")
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("bench")
    res = {"date": dt.datetime.now().isoformat(timespec="seconds"), "threads": args.threads,
           "machine": machine(), "versions": versions(), "gemm_gflops": gemm_gflops(), "rows": []}
    log.info("numpy GEMM: %.0f GFLOP/s", res["gemm_gflops"])
    for backend in args.backends:
        for case in args.cases:
            cmd = [sys.executable, __file__, "--one", case, backend, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                row = {"case": case, "backend": backend, "error": proc.stderr.strip().splitlines()[-1][:200]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            log.info("%s", row)
            res["rows"].append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"steps-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    log.info("\n%s\nwrote %s", markdown(res), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
