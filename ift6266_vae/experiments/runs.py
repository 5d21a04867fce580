"""What every sweep of runs shares: a finished run is reused, an interrupted one continued.

A run is finished when its ``metrics.json`` can be read (it is written last, atomically;
:func:`~ift6266_vae.training.loop.finished_metrics`), and is reused only for its own config;
a run folder with a checkpoint but no readable ``metrics.json`` was interrupted and is
resumed from its checkpoint (:func:`ift6266_vae.training.loop.train_and_evaluate` refuses
the resume if the config changed in more than its budget).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..training import loop

log = logging.getLogger(__name__)


def run_or_reuse(cfg: dict, run_dir, reuse: bool, **kwargs) -> dict:
    """The metrics of the run of ``cfg`` in ``run_dir``: with ``reuse``, a finished run's
    (refused if it ran another config), or an interrupted run continued from its checkpoint;
    otherwise a new run (refused if the folder already holds one)."""
    run_dir = Path(run_dir)
    if reuse:
        metrics = loop.finished_metrics(run_dir, cfg)
        if metrics is not None:
            log.info("reusing the finished run in %s", run_dir)
            return metrics
    resume = reuse and (run_dir / "checkpoint.h5").exists()
    if resume:
        log.info("continuing the interrupted run in %s", run_dir)
    return loop.train_and_evaluate(cfg, run_dir, resume=resume, **kwargs)
