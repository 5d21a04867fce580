"""One sweep runner: independent training runs as tasks on a ``dask.distributed`` cluster.

A sweep is a list of :class:`Task` (run id, config, run folder). Each task calls
:func:`~ift6266_vae.training.loop.run_or_reuse` with ``reuse=True`` in a worker, so it can
run any number of times: a finished run is reused, an interrupted one (a lost worker, Ctrl-C) continues from
its checkpoint. A task never raises: a failing run comes back as an error record (the
exception's type and one line) and the other runs go on.

Where the runs go:

* an embedded ``LocalCluster`` (default): ``workers`` processes (default: one per core),
  each running one run at a time with its share of the cores: the BLAS, OpenMP and Numba
  thread counts are in the worker's environment before it imports numpy, XLA's Eigen pool
  is off for one thread, and the worker process is pinned to its cores (XLA sizes its
  pool by the process's CPU affinity);
* an existing cluster (``scheduler``: the address of a ``dask scheduler``), whose workers
  have the package and the data, and see the run folders at the same path.

A lost worker's task is run again by the scheduler (up to its
``distributed.scheduler.allowed-failures``, 3 by default; then the run's error is
``KilledWorker``): being resumable, it continues from the run's last checkpoint. (Dask's
``retries`` are for exceptions a task raises, which these tasks return instead.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..errors import UserError
from ..threads import thread_env
from ..training.loop import finished_metrics, run_or_reuse

log = logging.getLogger(__name__)

#: the Dask config key whose value None keeps the nanny from setting MALLOC_TRIM_THRESHOLD_
NO_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
INSTALL = "pip install 'dask[distributed]'"  # a dependency of the package: a broken environment


@dataclass(frozen=True)
class Task:
    """One run of a sweep. ``callbacks``: a module-level function (or a ``functools.partial``
    of one) called in the worker with the config, returning the run's callbacks; built
    there, so nothing compiled is shipped to workers, and not at all for a finished run."""

    id: str
    config: dict
    run_dir: Path
    callbacks: Callable[[dict], list] | None = None

    def __post_init__(self):
        object.__setattr__(self, "run_dir", Path(self.run_dir))


def run_task(task: Task) -> dict:
    """Run (or reuse) one task where it is called: ``{"metrics", "error", "reused", "seconds"}``."""
    t0 = time.perf_counter()
    try:
        metrics = finished_metrics(task.run_dir, task.config)
        reused = metrics is not None
        if not reused:
            callbacks = task.callbacks(task.config) if task.callbacks is not None else ()
            metrics = run_or_reuse(task.config, task.run_dir, reuse=True, callbacks=callbacks)
        return {"metrics": metrics, "error": None, "reused": reused, "seconds": time.perf_counter() - t0}
    except Exception as e:  # a failing run is a row of the table, not the end of the sweep
        log.debug("run %s failed", task.id, exc_info=True)
        return _failed(e)


def _failed(e: BaseException) -> dict:
    return {"metrics": None, "error": f"{type(e).__name__}: {' '.join(str(e).split()) or repr(e)}",
            "reused": False, "seconds": None}


def run_sweep(tasks, reuse: bool = False, scheduler: str | None = None, workers: int | None = None,
              desc: str = "sweep", connect_timeout: float = 10.0) -> dict[str, dict]:
    """Run every task on the cluster; returns ``{task id: record}`` in the tasks' order, a
    record being :func:`run_task`'s (``metrics`` None and ``error`` set for a failed run).

    ``reuse``: keep the finished runs and continue the interrupted ones; without it, run
    folders that already hold a run are refused before anything starts.
    ``scheduler``: the address of an existing cluster's scheduler (one that does not answer
    within ``connect_timeout`` seconds is a :class:`UserError`, nothing is started);
    otherwise an embedded local cluster of ``workers`` processes (default: one per core).
    Ctrl-C stops the sweep: finished runs are kept in their folders, interrupted ones
    continue from their checkpoints when the sweep is run again with ``reuse``."""
    tasks = list(tasks)
    for what in ("id", "run_dir"):
        values = [getattr(t, what) for t in tasks]
        if len(set(values)) != len(values):
            raise ValueError(f"the sweep's tasks must have distinct {what}s")
    held = [t.run_dir for t in tasks if (t.run_dir / "checkpoint.h5").exists() or (t.run_dir / "metrics.json").exists()]
    if held and not reuse:
        raise UserError(f"{held[0]} already holds a run" + (f" (and {len(held) - 1} more)" if len(held) > 1 else "")
                        + "; keep and continue them with --reuse, or choose another --workdir")
    if scheduler is not None and workers is not None:
        raise UserError("--workers sizes the local cluster; an existing cluster (--scheduler) has its own workers")
    records: dict[str, dict] = {}
    with _client(scheduler, workers, connect_timeout) as client, logging_redirect_tqdm(), \
            tqdm(total=len(tasks), desc=desc, unit="run") as bar:
        from distributed import wait

        futures = {client.submit(run_task, t, pure=False): t for t in tasks}
        pending = set(futures)
        try:
            while pending:
                try:
                    done, pending = wait(pending, timeout=2, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = ()
                for future in done:
                    task = futures[future]
                    records[task.id] = rec = _record(future)
                    log.info("run %s: %s", task.id, _summary(rec))
                    bar.update()
                failed = sum(r["error"] is not None for r in records.values())
                bar.set_postfix_str(f"finished {len(records) - failed}, running {_running(client, pending)}, "
                                    f"failed {failed}")
        except KeyboardInterrupt:
            log.warning("interrupted: the %d finished runs are kept; the others continue from their checkpoints "
                        "when the sweep is run again with --reuse", len(records))
            client.cancel(list(pending))
            raise
    return {t.id: records[t.id] for t in tasks}


def _record(future) -> dict:
    if future.status == "finished":
        return future.result()
    # not run by run_task: e.g. a worker without the package, or KilledWorker
    exc = future.exception() if future.status == "error" else RuntimeError(f"task {future.status}")
    return _failed(exc)


def _summary(rec: dict) -> str:
    if rec["error"] is not None:
        return f"failed: {rec['error']}"
    m = rec["metrics"]
    parts = [f"epochs {m.get('epochs_trained')}"]
    if isinstance(m.get("test"), dict) and m["test"].get("elbo") is not None:
        parts.append(f"test ELBO {m['test']['elbo']:.2f}")
    if m.get("test_error") is not None:
        parts.append(f"test error {100 * m['test_error']:.2f} %")
    return ("reused: " if rec["reused"] else f"finished in {rec['seconds'] / 60:.1f} min: ") + ", ".join(parts)


def _running(client, pending) -> int:
    """Runs being executed now: per worker, its tasks in processing up to its thread count."""
    try:
        processing, nthreads = client.processing(), client.nthreads()
    except Exception:  # progress only: never fail the sweep for it
        return 0
    keys = {f.key for f in pending}
    return sum(min(len(keys.intersection(ks)), nthreads.get(w, 1)) for w, ks in processing.items())


# ---------------------------------------------------------------------------- the cluster
def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_process(cpus) -> None:
    """Pin every thread of this process (and so the threads they start) to ``cpus`` (Linux)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def dask_setup(worker) -> None:
    """Preload of the local cluster's workers (``preload=[this module]``): worker ``i`` of
    ``t`` threads (``OMP_NUM_THREADS``, set by :func:`local_cluster`) pins itself to the
    ``t`` cores after those of workers ``0..i-1``."""
    if hasattr(os, "sched_setaffinity") and isinstance(worker.name, int):
        threads, cpus = int(os.environ["OMP_NUM_THREADS"]), sorted(os.sched_getaffinity(0))
        pin_process({cpus[(worker.name * threads + j) % len(cpus)] for j in range(threads)})


@contextlib.contextmanager
def local_cluster(workers: int | None = None, dashboard: bool = True):
    """An embedded ``LocalCluster`` of ``workers`` processes (default: one per core), each
    running one run at a time with ``cores // workers`` threads pinned to its own cores.
    Its workers use this process's data folder and show no progress bars of their own.
    ``dashboard``: its web server (and dashboard, with bokeh) on Dask's usual port 8787;
    False: on any free port."""
    import dask.config
    from distributed import LocalCluster

    from .. import data

    n = workers or cores()
    threads = max(1, cores() // n)
    # the spawned workers inherit this environment (also when a lost worker is restarted):
    # thread counts must be set before a worker imports numpy, which distributed does first
    env = {**thread_env(threads), data.DATA_ENV: str(data.default_data_dir().resolve()), "TQDM_DISABLE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers (memory returned to the OS
        # early), which also fixes glibc's mmap threshold at 128 KiB: measured 2.1-2.4x fewer
        # M1 updates per time budget, 7x the system time (docs/sweeps.md)
        with dask.config.set({NO_MALLOC_TRIM: None}), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, preload=[__name__],
                             dashboard_address=":8787" if dashboard else ":0", silence_logs=logging.WARNING) as cluster:
            log.info("local Dask cluster: %d workers x %d thread%s", n, threads, "s" if threads > 1 else "")
            yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _client(scheduler, workers, connect_timeout):
    try:
        from distributed import Client
    except ImportError:
        raise UserError(f"sweeps run on Dask, which is not installed: {INSTALL}") from None
    with contextlib.ExitStack() as stack:
        local = scheduler is None
        if local:
            scheduler = stack.enter_context(local_cluster(workers))
        try:
            client = stack.enter_context(Client(scheduler, timeout=connect_timeout))
        except Exception as e:  # refused, timed out, a bad address, or not a Dask scheduler
            raise UserError(f"no Dask scheduler answers at {scheduler} ({' '.join(str(e).split())}); start one "
                            "(`dask scheduler`) or check the address") from None
        if not local:
            threads = client.nthreads()
            log.info("Dask cluster at %s: %d workers, %d threads%s", scheduler, len(threads), sum(threads.values()),
                     "" if threads else " (the runs wait for workers to join)")
        if client.scheduler_info().get("services", {}).get("dashboard"):
            log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
