"""Constants and helpers shared by several test modules (``tests/`` is on ``sys.path``
through pytest's ``pythonpath`` setting in setup.cfg; import as ``from helpers import ...``)."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import numpy as np

#: The backend of value tests and tiny runs, where no particular linker is the subject: JAX
#: compiles fastest from a cold cache (tiny conv VAE train step: 7 s, against 82 s on the C
#: linker and 125 s on Numba; tiny week-10 runs: 22 s against 110 s on C). C and Numba are
#: tested where they are the subject (tests/graph/test_backends.py: every backend agrees per
#: model kind; the C rewrites; the C/VM profiler).
BACKEND = "jax"


def tiny_net(width: int, code: int) -> dict:
    """A feedforward network 784-(2 width)-width, code ``code``, width-(2 width) decoder,
    with the week-9 activation pattern, small enough to compile and run in seconds."""
    return {
        "kind": "feedforward",
        "encoder": [2 * width, width],
        "encoder_activations": ["relu", "tanh"],
        "code_size": code,
        "decoder": [width, 2 * width],
        "decoder_activations": ["linear", "relu"],
    }


#: for graph-level tests (784-16-8, code 4)
TINY_NET = tiny_net(8, 4)
#: for end-to-end runs and backend agreement (784-32-16, code 8)
TINY_RUN_NET = tiny_net(16, 8)


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random float32 images (N, 1, 28, 28) with pixels in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 28, 28)).astype("float32")


def once(shared_dir: Path, name: str, build) -> Path:
    """``shared_dir / name``, built by ``build(path)`` once per test run: the first worker to
    get here builds it under a lock, the others wait and reuse it."""
    path = shared_dir / name
    with open(shared_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".built").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            (path / ".built").touch()
    return path


def tiny_run(shared_dir: Path, name: str, cfg: dict):
    """``(workdir, metrics)`` of a finished tiny run, trained once per test run."""
    from ift6266_vae.training.loop import train_and_evaluate

    wd = once(shared_dir, name, lambda path: train_and_evaluate(cfg, path / "run"))
    return wd / "run", json.loads((wd / "run" / "metrics.json").read_text())


def kill_worker_once(cfg: dict, marker) -> list:
    """Callbacks (for ``sweep.Task.callbacks``) that end the process running the run during
    its epoch 2, after the checkpoint of epoch 1, the first time only (``marker`` is the
    file that remembers it): a Dask worker lost mid-run."""
    import os

    def cb(fns, rec, splits):
        if rec["epoch"] == 2 and not Path(marker).exists():
            Path(marker).touch()
            os._exit(1)

    return [cb]


def synthetic_profile(costs: dict, noise: float = 0.02, rounds: int = 7, seed: int = 0, ff_ms: float = 133.0,
                      overlap: float = 0.0, linkers: dict | None = None) -> dict:
    """A ``make profile`` result (as :func:`ift6266_vae.experiments.conv_ablation.ablation`
    returns it) from a table of costs instead of measurements: ``costs`` maps ``"base"`` (the
    fast graph, ms/step) and each construction of ``conv_ablation.FACTORS`` to the ms it adds
    (``"extra"``: the 2x-grid row's); ``overlap`` is taken off when the full-then-crop conv and
    the perforated upsampling are both on (the sub-pixel fusion they both drop). Each round
    scales every time by a common drift and an independent noise; ``linkers`` maps a linker to
    its (fast, all-2015) ms (C/VM: from the rows), analyzed like the real thing."""
    from ift6266_vae.experiments import conv_ablation as ca
    from ift6266_vae.experiments import conv_finding
    from ift6266_vae.profiling import spread

    rng = np.random.default_rng(seed)
    drift = 1 + 0.05 * np.sin(np.arange(rounds))

    def series(t, gflop, batch):
        ms = [float(v) for v in t * drift * (1 + noise * rng.standard_normal(rounds))]
        s = spread(ms)
        return {"ms": ms, "ms_spread": s, "ms_per_step": s["median"], "compile_s": 10.0, "gflop_model": gflop,
                "batch_size": batch, "ms_per_gflop": s["median"] / gflop}

    ff = series(ff_ms, 11.3, 1000)
    ff["summary"] = {"batch_size": 1000, "ms_per_call": ff["ms_per_step"], "gflop_model": 11.3,
                     "ms_per_gflop": ff["ms_per_gflop"]}
    rows = []
    for name, overrides in ca.default_rows().items():
        sub = ca.subset_of(overrides)
        t = costs["base"] + (sum(costs[f] for f in sub) if sub is not None else costs.get("extra", 100.0))
        if sub and {"full-then-crop conv", "perforated upsampling"} <= set(sub):
            t -= overlap
        row = {"name": name, "overrides": overrides, "subset": sub, **series(t, 28.2, 128)}
        row["ratio_to_ff"] = row["ms_per_gflop"] / ff["ms_per_gflop"]
        rows.append(row)
    ends = {"fast": rows[0]["name"], "2015": rows[-1]["name"]}
    out_linkers = {"c": {"feedforward": ff, "fast": rows[0], "2015": rows[-1]}}
    for linker, (fast, full) in (linkers or {}).items():
        out_linkers[linker] = {"feedforward": series(ff_ms / 2, 11.3, 1000), "fast": series(fast, 28.2, 128),
                               "2015": series(full, 28.2, 128)}
    out_linkers.setdefault("jax", {k: {"note": "backend 'jax' needs JAX, which is not installed: run pip"}
                                   for k in ("feedforward", "fast", "2015")})
    meta = {"date": "2026-12-01T10:00:00+00:00", "host": "testhost", "cpu": "AMD EPYC", "cores_usable": 2,
            "rounds": rounds, "rounds_requested": rounds, "warmup": 1, "seed": seed, "conv_batch": 128,
            "ff_batch": 1000, "gemm_start": spread([250.0, 248.0, 251.0, 249.0, 250.0]),
            "gemm_end": spread([247.0, 249.0, 250.0, 248.0, 246.0]), "loadavg_start": [0.5, 0.5, 0.5],
            "loadavg_end": [1.0, 0.7, 0.6], "versions": {"pytensor": "3.3.8"}, "thread_env": {}, "n_compiles": 22,
            "compile_s_timed_steps": 200.0, "wall_s": 600.0}
    res = {"meta": meta, "factors": ca.FACTORS, "bn_factors": list(ca.BN_FACTORS), "feedforward": ff, "rows": rows,
           "linkers": out_linkers, "ends": ends, "orders": []}
    res["analysis"] = conv_finding.analyze(res)
    return res
