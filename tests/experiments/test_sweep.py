"""ift6266_vae.experiments.sweep: runs as tasks on a 2-worker local Dask cluster give the
numbers of the same runs done one after another with the same thread count; a failing run
is reported and the others finish; a lost worker's run is run again from its checkpoint;
a second sweep reuses what finished."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import kill_worker_once
from ift6266_vae import checkpoints
from ift6266_vae.errors import UserError
from ift6266_vae.experiments import sweep
from ift6266_vae.threads import thread_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(embedded_data):
    """The sweeps' default cluster, started once for the module: 2 workers x 1 thread."""
    with sweep.local_cluster(2, dashboard=False) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, tiny_config):
    """Two tiny runs (seeds 1 and 2) and one that fails (a batch larger than the data)."""
    root = tmp_path_factory.mktemp("sweep")
    cfgs = {"seed1": {**tiny_config(), "seed": 1}, "seed2": {**tiny_config(), "seed": 2},
            "too-big-batch": tiny_config(batch_size=1000)}
    return [sweep.Task(name, cfg, root / name) for name, cfg in cfgs.items()]


@pytest.fixture(scope="module")
def swept(cluster, tasks):
    return sweep.run_sweep(tasks, scheduler=cluster.scheduler_address)


def _serial(runs):
    """The runs one after another in a new process computing on one core, like each worker."""
    code = ("import json, os, sys\n"
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from ift6266_vae.training.loop import run_or_reuse\n"
            "for cfg, run_dir in json.load(sys.stdin):\n"
            "    run_or_reuse(cfg, run_dir, reuse=False)\n")
    subprocess.run([sys.executable, "-c", code], input=json.dumps([[t.config, str(d)] for t, d in runs]),
                   text=True, cwd=REPO, env={**os.environ, **thread_env(1)}, check=True, timeout=300)
    return [json.loads((d / "metrics.json").read_text()) for t, d in runs]


def _history(run_dir):
    return checkpoints.read_meta(Path(run_dir) / "checkpoint.h5")["history"]


def test_the_workers_compute_on_their_own_core(cluster):
    from distributed import Client

    with Client(cluster) as client:
        seen = client.run(lambda: (sorted(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"],
                                   __import__("ift6266_vae").__file__, os.environ.get("MALLOC_TRIM_THRESHOLD_")))
    cpus = [c for c, _, _, _ in seen.values()]
    assert all(len(c) == 1 for c in cpus) and {t for _, t, _, _ in seen.values()} == {"1"}
    if sweep.cores() >= 2:
        assert cpus[0] != cpus[1]
    assert {Path(f).parent.parent for _, _, f, _ in seen.values()} == {REPO}  # this checkout's package
    # glibc keeps its dynamic mmap threshold (Dask's nanny would set a trim threshold)
    assert {m for _, _, _, m in seen.values()} == {os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def test_a_sweep_gives_the_numbers_of_serial_runs(swept, tasks, tmp_path):
    good = tasks[:2]
    serial = _serial([(t, tmp_path / t.id) for t in good])
    for t, ref in zip(good, serial):
        rec = swept[t.id]
        assert rec["error"] is None and not rec["reused"]
        m = rec["metrics"]
        assert m["epochs_trained"] == ref["epochs_trained"] == 2
        np.testing.assert_allclose(m["test"]["elbo"], ref["test"]["elbo"], rtol=1e-6)
        np.testing.assert_allclose([h["valid_elbo"] for h in _history(t.run_dir)],
                                   [h["valid_elbo"] for h in _history(tmp_path / t.id)], rtol=1e-6)
    assert swept["seed1"]["metrics"]["test"]["elbo"] != swept["seed2"]["metrics"]["test"]["elbo"]


def test_a_failing_run_is_reported_and_the_others_finish(swept):
    assert list(swept) == ["seed1", "seed2", "too-big-batch"]
    err = swept["too-big-batch"]["error"]
    assert err.startswith("UserError: ") and "batch_size" in err and "\n" not in err
    assert swept["too-big-batch"]["metrics"] is None
    assert all(swept[k]["metrics"] is not None for k in ("seed1", "seed2"))


def test_a_second_sweep_reuses_the_finished_runs(swept, tasks, cluster):
    with pytest.raises(UserError, match="already holds a run .and 1 more.; keep and continue them with --reuse"):
        sweep.run_sweep(tasks, scheduler=cluster.scheduler_address)
    stamps = {t.id: (t.run_dir / "metrics.json").stat().st_mtime_ns for t in tasks[:2]}
    again = sweep.run_sweep(tasks, reuse=True, scheduler=cluster.scheduler_address)
    assert [again[t.id]["reused"] for t in tasks] == [True, True, False]
    assert {k: again[k]["metrics"] for k in stamps} == {k: swept[k]["metrics"] for k in stamps}
    assert stamps == {t.id: (t.run_dir / "metrics.json").stat().st_mtime_ns for t in tasks[:2]}
    assert again["too-big-batch"]["error"] == swept["too-big-batch"]["error"]


def test_a_lost_worker_s_run_continues_from_its_checkpoint(swept, tasks, cluster, tmp_path):
    marker = tmp_path / "killed"
    task = sweep.Task("killed", tasks[0].config, tmp_path / "run",
                      callbacks=functools.partial(kill_worker_once, marker=marker))
    rec = sweep.run_sweep([task], scheduler=cluster.scheduler_address)["killed"]
    assert marker.exists(), "the worker was not killed"
    assert rec["error"] is None and rec["metrics"]["epochs_trained"] == 2
    # resumed from epoch 1: the numbers of the run that was never interrupted
    np.testing.assert_allclose(rec["metrics"]["test"]["elbo"], swept["seed1"]["metrics"]["test"]["elbo"], rtol=1e-5)


def test_a_scheduler_that_does_not_answer_is_one_line_and_starts_nothing(tmp_path, tiny_config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nobody listens there
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=f"no Dask scheduler answers at tcp://127.0.0.1:{port}"):
        sweep.run_sweep([sweep.Task("a", tiny_config(), tmp_path / "a")], scheduler=f"tcp://127.0.0.1:{port}",
                        connect_timeout=2)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match="--workers"):
        sweep.run_sweep([], scheduler="tcp://127.0.0.1:1", workers=2)
