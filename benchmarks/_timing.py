"""Timing and memory helpers shared by ``bench_steps.py`` (PyTensor, Python 3.12) and
``torch_models.py`` (PyTorch, run under its own Python 3.11 venv): standard library only.
That venv has no ift6266_vae, so ``set_threads`` here mirrors ``ift6266_vae/threads.py``
(which the package's own processes use) and cannot import it.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def set_threads(n: int) -> None:
    """Thread count for BLAS, OpenMP (PyTorch) and Numba; must run before numpy, numba or
    torch is imported. XLA (JAX) has no thread-count setting: its CPU pool has one thread
    per core of the process's CPU affinity, so ``bench_steps.py`` pins each case to
    ``n`` cores (``os.sched_setaffinity``) as well."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > n:
            os.sched_setaffinity(0, cpus[:n])


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_steps(step, steps: int, warmup: int) -> dict:
    """Call ``step()`` once (compile + first step), ``warmup`` more times, then ``steps``
    timed times. ``step`` must block until its results are computed.

    Returns ms/step median and min (wall clock, and process CPU time), the first call's seconds, the process's peak RSS
    (everything, compilation included) and the peak RSS during the timed steps alone
    (the high-water mark is reset after the warm-up; ``None`` where /proc does not allow it).
    """
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    can_reset = reset_peak_rss()
    ts, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    hwm = _status_kb("VmHWM") if can_reset else None
    return {
        "steps": steps, "warmup": warmup,
        "ms_median": 1000 * statistics.median(ts), "ms_min": 1000 * min(ts),
        "ms_all": [round(1000 * t, 2) for t in ts],
        # process CPU time (all threads) per step: with 1 thread, insensitive to other jobs
        "cpu_ms_median": 1000 * statistics.median(cpu), "cpu_ms_min": 1000 * min(cpu),
        "compile_and_first_step_s": first,
        "peak_rss_step_mb": None if hwm is None else hwm / 1024,
        "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
