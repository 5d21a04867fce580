"""Thread counts of the compute libraries (BLAS, OpenMP, Numba, XLA).

They are read when a library starts its threads, so they must be set before numpy,
PyTensor or JAX is imported: this module uses the standard library only.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_env(threads: int) -> dict:
    """Environment of a process that computes with ``threads`` threads (BLAS, OpenMP, Numba;
    for one thread XLA's Eigen pool off)."""
    env = {var: str(threads) for var in THREAD_VARS}
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return env


def set_threads(n: int) -> None:
    """This process computes with ``n`` threads: :func:`thread_env` and the CPU affinity (what
    XLA sizes its pool by) on the first ``n`` usable cores."""
    if "numpy" in sys.modules:
        log.warning("%d threads: numpy is already loaded, its BLAS keeps its threads (the CPU affinity still "
                    "applies)", n)
    os.environ.update(thread_env(n))
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:n])
