"""``make bench``: one training step (forward + backward + update) of each model on each
backend, next to PyTorch and numpy's GEMM measured in the same run.

Cases: the feedforward VAE (``week9``, batch 1000) and the conv VAE (``conv``, batch
128) in its two graph constructions (``fast`` and ``2015``, see
:mod:`ift6266_vae.models.conv`), on every backend (``c``, ``numba``, ``jax``), and the
same two models written in PyTorch (``benchmarks/torch_models.py``) when a PyTorch
Python is given (``--torch-python``; the Makefile's ``.venv-torch``).

Each case runs in its own subprocess, pinned to ``--threads`` cores with the BLAS /
OpenMP / Numba thread counts set to the same number, with a timeout (``--case-timeout``,
and whatever is left of the run's ``--budget``; a case that exceeds it is recorded as
such). Per case: ms/step median and min over
``--steps`` steps after ``--warmup`` steps (the first call, which compiles, is timed
separately), analytic GFLOP/step (3x the forward FLOPs of the dense and conv layers:
forward, input gradient, weight gradient) and GFLOP/s at the median and at the min, the
peak RSS during the timed steps (the kernel's high-water mark is reset after warm-up)
and of the whole process (compilation included), the load average around the case.
numpy float32 GEMM GFLOP/s (2048^3) is measured at the start and at the end of the run.

    python benchmarks/bench_steps.py [--backends c numba jax] [--cases ff conv-fast conv-2015]
                                     [--torch-python .venv-torch/bin/python]

Also the first step of the default backend's feedforward and conv cases from empty compile
caches (``--no-cold`` skips it). Writes ``benchmarks/results/<date>.json`` and ``.md`` (the
table, the devices, the issue-#20 goals); ``--update-order`` writes the measured order of
the CPU backends to the package's ``graph/backend_order.json``, which ``auto`` follows.
The machine is shared: read the min columns, and compare rows of the same run only.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import set_threads, time_steps  # noqa: E402

CASES = {
    # name: (config, batch size, construction set of models.conv.CONSTRUCTIONS or None)
    "ff": ("week9", 1000, None),
    "conv-fast": ("conv", 128, "fast"),
    "conv-2015": ("conv", 128, "2015"),
}
#: the PyTorch case each PyTensor case is compared with
TORCH_PEER = {"ff": "ff", "conv-fast": "conv", "conv-2015": "conv"}
BACKENDS = ("c", "numba", "jax")
RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve()


def gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """numpy's float32 GEMM rate, the best of ``reps`` (the package's yardstick, :mod:`ift6266_vae.profiling`)."""
    from ift6266_vae.profiling import gemm_gflops as rates

    return rates(n, reps)["max"]


def build_case(case: str):
    """(model, config) of a case (the config's model section with the construction set)."""
    from ift6266_vae import config, models
    from ift6266_vae.models.conv import CONSTRUCTIONS

    cfg_name, _, construction = CASES[case]
    cfg = config.load(cfg_name)
    if construction is not None:
        cfg["model"].update(CONSTRUCTIONS[construction])
    return models.build(cfg["model"], seed=0), cfg


def run_case(case: str, backend: str, steps: int, warmup: int) -> dict:
    """Compile and time one case in this process."""
    import numpy as np

    from ift6266_vae.models.compiled import ModelFunctions

    t0 = time.perf_counter()
    bs = CASES[case][1]
    model, cfg = build_case(case)
    fns = ModelFunctions(model, backend, optim_config=cfg["optim"], batch_size=bs)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (bs, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((bs, model.code_size)).astype(np.float32)
    build_s = time.perf_counter() - t0
    res = time_steps(lambda: fns.train_step(x, eps), steps, warmup)
    gflop = 3 * model.forward_flops() * bs / 1e9
    from ift6266_vae.graph import backends

    res.update(case=case, backend=backend, batch_size=bs, gflop_per_step=gflop,
               compile_s=sum(fns.compile_seconds.values()),
               # what a run waits for before its first step is done: graph building, compile, step
               first_step_total_s=build_s + res["compile_and_first_step_s"],
               device=",".join(sorted(set(backends.jax_devices()))) if backend == "jax" else "cpu")
    return res


def versions() -> dict:
    import numpy
    import pytensor

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "pytensor": pytensor.__version__}
    for mod in ("numba", "jax", "jaxlib"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # the layout of show_config is not a stable API
        pass
    return out


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def _child(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: not finished after {timeout:.0f} s", "wall_s": timeout}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"error": lines[-1][:300], "wall_s": wall}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(wall_s=wall, load_before=load0, load_after=os.getloadavg()[0])
    return row


def _ratio(a, b):
    return None if a is None or b is None else a / b


def derive(res: dict) -> None:
    """GFLOP/s, % of GEMM, ratios to PyTorch, and the issue-#8 goals (in place)."""
    gemm = res["gemm_gflops"]
    torch = {r["case"]: r for r in res["rows"] if r.get("backend") == "pytorch" and "error" not in r}
    gflop = {r["case"]: r["gflop_per_step"] for r in res["rows"] if "gflop_per_step" in r}
    for r in res["rows"]:
        if "error" in r or r.get("kind") == "cold":
            continue
        if r["backend"] == "pytorch":  # same analytic FLOPs as the PyTensor model of that case
            r["gflop_per_step"] = gflop.get("ff" if r["case"] == "ff" else "conv-fast")
        g = r.get("gflop_per_step")
        if g:
            r["gflops_median"] = g / (r["ms_median"] / 1000)
            r["gflops_min"] = g / (r["ms_min"] / 1000)
            r["pct_gemm_min"] = 100 * r["gflops_min"] / gemm
        peer = torch.get(TORCH_PEER.get(r["case"], ""))
        if r["backend"] != "pytorch" and peer:
            r["x_pytorch_min"] = r["ms_min"] / peer["ms_min"]
            r["x_pytorch_median"] = r["ms_median"] / peer["ms_median"]

    def row(case, backend, kind="warm"):
        return next((r for r in res["rows"] if r["case"] == case and r["backend"] == backend
                     and r.get("kind", "warm") == kind and "error" not in r), None)

    def goal(name, r, value, limit):
        res["goals"].append({"goal": name, "backend": r and r["backend"], "value": value, "limit": limit,
                             "met": None if value is None else value <= limit})

    res["goals"] = []
    default = res["default_backend"]
    for case, kind, limit in (("ff", "feedforward", 0.8), ("conv-fast", "conv", 0.5)):
        r = row(case, default[kind])
        goal(f"{case} step on the default backend <= {limit}x PyTorch", r, r and r.get("x_pytorch_min"), limit)
    for case in ("ff", "conv-fast"):
        r = row(case, "numba")
        goal(f"{case} step on Numba (no JAX) <= 1.0x PyTorch", r, r and r.get("x_pytorch_min"), 1.0)
    r, t = row("conv-fast", default["conv"]), torch.get("conv")
    rss = _ratio(r and r.get("peak_rss_step_mb"), t and t.get("peak_rss_step_mb"))
    goal("conv step peak RSS on the default backend <= 1.2x PyTorch's", r, rss, 1.2)
    for case, kind in (("ff", "feedforward"), ("conv-fast", "conv")):
        r = row(case, default[kind], "cold")
        goal(f"{case} first step from cold caches on the default backend <= 20 s", r,
             r and r.get("first_step_total_s"), 20.0)


def auto_order(res: dict) -> dict:
    """The CPU backends of each model kind, fastest (min ms/step) first, from this run."""
    order = {}
    for case, kind in (("ff", "feedforward"), ("conv-fast", "conv")):
        rows = [r for r in res["rows"] if r["case"] == case and r["backend"] in BACKENDS
                and r.get("kind", "warm") == "warm" and "error" not in r]
        if {r["backend"] for r in rows} == set(BACKENDS):
            order[kind] = [r["backend"] for r in sorted(rows, key=lambda r: r["ms_min"])]
    if "feedforward" in order:
        order["default"] = order["feedforward"]  # the other kinds are MLPs like it
    return order


def _f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def markdown(res: dict) -> str:
    m, v = res["machine"], res["versions"]
    loads = [r[k] for r in res["rows"] for k in ("load_before", "load_after") if r.get(k) is not None]
    load = f"load average {min(loads):.1f}-{max(loads):.1f} around the cases" if loads else "load not recorded"
    lines = [
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores, {load}), "
        f"{res['threads']} threads per case (BLAS, OpenMP, Numba; each case pinned to {res['threads']} cores), float32. "
        f"numpy float32 GEMM (2048^3): {res['gemm_gflops']:.0f} GFLOP/s "
        f"(start {res['gemm_gflops_start']:.0f}, end {res['gemm_gflops_end']:.0f}). "
        f"Python {v['python']}, PyTensor {v['pytensor']}, numpy {v['numpy']}, numba {v.get('numba')}, "
        f"JAX {v.get('jax') or 'not installed'}, PyTorch {res.get('torch_version') or 'not available'}"
        f"{' (' + res['torch_note'] + ')' if res.get('torch_note') else ''}.",
        "",
        f"ms/step over {res['steps']} steps after {res['warmup']} warm-up steps; GFLOP/s and the "
        "ratio to PyTorch use the min (least disturbed by anything else on the machine); peak RSS = high-water "
        "mark during the timed steps (process peak incl. compilation in the JSON).",
        "",
        "| case | backend | batch | ms/step median | ms/step min | CPU ms/step min | x PyTorch (min) | "
        "x PyTorch (median) | GFLOP/step | GFLOP/s (min) | % of GEMM | peak RSS MB | 1st step s (total) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['backend']} | {CASES.get(r['case'], (0, '-'))[1] if r['case'] in CASES else '-'} "
                         f"| {r['error']} | | | | | | | | | |")
            continue
        if r.get("kind") == "cold":
            lines.append(f"| {r['case']} | {r['backend']} (cold caches) | {r['batch_size']} | | | | | | | | | | "
                         f"{r['compile_and_first_step_s']:.1f} ({r['first_step_total_s']:.1f}) |")
            continue
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['batch_size']} | {r['ms_median']:.0f} | {r['ms_min']:.0f} | "
            f"{_f(r.get('cpu_ms_min'))} | "
            f"{_f(r.get('x_pytorch_min'), '{:.2f}')} | {_f(r.get('x_pytorch_median'), '{:.2f}')} | "
            f"{_f(r.get('gflop_per_step'), '{:.1f}')} | {_f(r.get('gflops_min'), '{:.1f}')} | "
            f"{_f(r.get('pct_gemm_min'), '{:.0f} %')} | {_f(r.get('peak_rss_step_mb'))} | "
            f"{r['compile_and_first_step_s']:.1f} ({_f(r.get('first_step_total_s'), '{:.1f}')}) |")
    default = res["default_backend"]
    lines += ["", f"Default backend (`auto`) here: feedforward {default['feedforward']}, conv {default['conv']}; "
              f"JAX devices: {', '.join(res.get('jax_devices') or ['none'])}. Cold rows: first step with empty "
              "compile caches (graph building, compile and the step).", "",
              "Goals of issue #20 (ratios at the min, measured in this run):", ""]
    for g in res["goals"]:
        state = "not measured" if g["met"] is None else ("met" if g["met"] else f"NOT met (by {g['value'] / g['limit']:.2f}x)")
        lines.append(f"- {g['goal']}: {state} ({g['backend']}: {_f(g['value'], '{:.2f}')}; limit {g['limit']})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--torch-python", help="Python with torch (the Makefile's .venv-torch/bin/python)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--case-timeout", type=float, default=240.0, help="seconds per case (compile included)")
    p.add_argument("--budget", type=float, default=1080.0,
                   help="seconds for the whole run: later cases get what is left (default 18 min)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<date>.json)")
    p.add_argument("--no-cold", action="store_true", help="skip the first steps from empty compile caches")
    p.add_argument("--update-order", action="store_true",
                   help="write this run's fastest-first CPU order per model kind to the package's "
                        "graph/backend_order.json (what `auto` uses)")
    p.add_argument("--one", nargs=2, metavar=("CASE", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.one:  # child process: one case, JSON on stdout
        import logging

        logging.basicConfig(level=logging.WARNING)
        sys.stdout.write(json.dumps(run_case(args.one[0], args.one[1], args.steps, args.warmup)) + "\n")
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pytensor").setLevel(logging.WARNING)  # its compiler probing is not our output
    log = logging.getLogger("bench")
    t_start = time.perf_counter()
    res = {"date": dt.datetime.now().isoformat(timespec="seconds"), "threads": args.threads,
           "steps": args.steps, "warmup": args.warmup, "case_timeout_s": args.case_timeout,
           "machine": machine(), "versions": versions(), "rows": []}
    res["gemm_gflops_start"] = gemm_gflops()
    log.info("numpy GEMM: %.0f GFLOP/s", res["gemm_gflops_start"])

    from ift6266_vae.graph import backends

    res["jax_devices"] = backends.jax_devices()
    res["default_backend"] = {kind: backends.resolve("auto", kind) for kind in ("feedforward", "conv")}
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    torch_py = args.torch_python
    if torch_py and not Path(torch_py).exists():
        res["torch_note"] = f"no PyTorch venv at {torch_py} (make bench creates .venv-torch with python3.11)"
        torch_py = None
    elif not torch_py:
        res["torch_note"] = "no --torch-python given"
    done_torch = set()

    def timeout() -> float:
        return min(args.case_timeout, args.budget - (time.perf_counter() - t_start))

    def run(cmd, env=None) -> dict:
        left = timeout()
        if left < 30:
            return {"error": f"skipped: the run's {args.budget:.0f} s budget is spent"}
        return _child(cmd, left, env)

    for case in args.cases:
        peer = TORCH_PEER[case]
        if torch_py and peer not in done_torch:
            done_torch.add(peer)
            row = run([torch_py, str(HERE.parent / "torch_models.py"), "--one", peer, *common])
            row.setdefault("case", peer)
            row.setdefault("backend", "pytorch")
            res.setdefault("torch_version", row.get("torch"))
            log.info("%s pytorch: %s", peer, _brief(row))
            res["rows"].append(row)
        for backend in args.backends:
            if backend == "jax" and not backends.jax_available():
                row = {"case": case, "backend": backend, "error": "JAX not installed (pip install -e '.[jax]')"}
            else:
                row = run([sys.executable, str(HERE), "--one", case, backend, *common])
                row.setdefault("case", case)
                row.setdefault("backend", backend)
            log.info("%s %s: %s", case, backend, _brief(row))
            res["rows"].append(row)
    if not args.no_cold:  # a newcomer's first step: every compile cache empty
        import tempfile

        for case, kind in (("ff", "feedforward"), ("conv-fast", "conv")):
            if case not in args.cases:
                continue
            with tempfile.TemporaryDirectory(prefix="bench-cold-") as d:
                env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={d}/pytensor", "NUMBA_CACHE_DIR": f"{d}/numba",
                       "JAX_COMPILATION_CACHE_DIR": f"{d}/jax", "IFT6266_CACHE": f"{d}/ift6266"}
                backend = res["default_backend"][kind]
                row = run([sys.executable, str(HERE), "--one", case, backend, "--steps", "1", "--warmup", "0",
                           "--threads", str(args.threads)], env)
                row.update(case=case, backend=backend, kind="cold")
            log.info("%s %s, cold caches: %s", case, backend, _brief(row))
            res["rows"].append(row)
    res["gemm_gflops_end"] = gemm_gflops()
    res["gemm_gflops"] = max(res["gemm_gflops_start"], res["gemm_gflops_end"])
    res["wall_s"] = time.perf_counter() - t_start
    derive(res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"{dt.date.today().isoformat()}.json"
    res["auto_order"] = auto_order(res)
    from ift6266_vae.io import write_json, write_text  # atomic: an interrupted run leaves the old files whole

    write_json(out, res)
    write_text(out.with_suffix(".md"), markdown(res))
    if args.update_order and res["auto_order"]:
        order_file = backends.ORDER_FILE
        old = json.loads(order_file.read_text())
        new = {"measured": f"make bench of {res['date']} ({out.name})", "order": {**old["order"], **res["auto_order"]}}
        write_json(order_file, new)
        log.info("wrote the measured backend order to %s: %s", order_file, new["order"])
    log.info("\n%s\nwrote %s and .md (%.0f s)", markdown(res), out, res["wall_s"])
    return 0


def _brief(row: dict) -> str:
    if "error" in row:
        return row["error"]
    return (f"median {row['ms_median']:.0f} ms, min {row['ms_min']:.0f} ms, "
            f"compile+1st {row['compile_and_first_step_s']:.1f} s, load {row.get('load_before', 0):.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
