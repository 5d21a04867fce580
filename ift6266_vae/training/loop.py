"""Training: ``train_and_evaluate(config, workdir)``, the one entry point.

The loop: shuffle (seeded), minibatches of ``train.batch_size`` (the incomplete last
batch is dropped, as BN statistics of a tiny batch are meaningless), one compiled
update per batch with a tqdm bar showing the loss, validation ELBO each epoch with
population BN statistics, checkpoints (atomic, HDF5) and figures on a cadence. What a
model kind changes (batches, per-epoch evaluations, figures, final metrics) comes from
its hooks (:mod:`.hooks`, named by the registry :data:`ift6266_vae.models.KINDS`).

After training, the BN population statistics are recomputed exactly over the training
set and the test ELBO is reported three ways (:mod:`ift6266_vae.evaluation.elbo`).

Everything a run needs to be reproduced is saved next to its results: ``config.json``
(resolved, with defaults), ``checkpoint.h5`` (with the config, RNG state and history),
``metrics.json``.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import checkpoints, data, models, plots
from ..errors import TrainingDiverged, UserError
from ..evaluation.elbo import evaluate_elbo, final_evaluation
from ..io import write_json
from .hooks import TrainingHooks

log = logging.getLogger(__name__)


def load_splits(cfg: dict):
    """``(data set name, splits)`` of a run config, checking the batch size fits."""
    name, splits = data.load_splits(cfg["data"]["name"], cfg["data"]["max_train_examples"])
    bs = cfg["train"]["batch_size"]
    if bs > len(splits["train"][0]):
        raise UserError(
            f"config key 'train.batch_size' ({bs}) is larger than the training set "
            f"({len(splits['train'][0])} examples of {name}); lower it"
        )
    return name, splits


def hooks_for(cfg: dict) -> TrainingHooks:
    """The training hooks of the config's model kind (from the registry)."""
    module, _, cls = models.kind_of(cfg["model"]).hooks.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg)


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def train_and_evaluate(config: dict, workdir, resume: bool = False, callbacks=(), hooks=None) -> dict:
    """Train the model described by ``config`` and write results under ``workdir``.

    ``callbacks``: functions ``cb(fns, record, splits) -> dict | None`` called after each
    epoch's validation; what they return is added to that epoch's history record (the
    week-11 study measures FID this way). Their time is excluded from ``train_s``, the
    time spent in update steps, which the time budget and the study's curves use;
    ``wall_s`` is everything. ``train_s`` also leaves out the process's first update
    step, whose time (on Numba and JAX mostly just-in-time compilation, 20-40 s for a VAE
    step when the disk cache is cold) is reported apart as ``first_step_s``.

    ``hooks``: a :class:`TrainingHooks` (default: :func:`hooks_for` the model kind).

    Returns the metrics dict also written to ``workdir/metrics.json``.
    """
    cfg = copy.deepcopy(config)
    workdir = Path(workdir)
    tcfg = cfg["train"]
    ckpt_path = workdir / "checkpoint.h5"
    if not resume and ckpt_path.exists():
        raise UserError(f"{ckpt_path} exists; pass --resume to continue it or choose another --workdir")

    dataset, splits = load_splits(cfg)
    hooks = hooks if hooks is not None else hooks_for(cfg)
    callbacks = [*callbacks, *hooks.callbacks()]
    model = models.build(cfg["model"], seed=cfg["seed"])
    fns = hooks.functions(model, splits)
    rng = np.random.default_rng(cfg["seed"])
    history: list[dict] = []
    start_epoch = 0
    if resume:
        meta = checkpoints.load_into(ckpt_path, model, fns.optimizer_state, bn_source="running")
        if meta["dataset"] != dataset:
            raise UserError(f"{ckpt_path} was trained on {meta['dataset']!r}, this config loads {dataset!r}")
        rng.bit_generator.state = meta["rng_state"]
        history = meta["history"]
        start_epoch = meta["epoch"]
        log.info("resuming %s at epoch %d", ckpt_path, start_epoch)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", cfg)

    def save(epoch, bn_population=None):  # mid-training checkpoints: running averages only
        checkpoints.save(ckpt_path, model, fns.optimizer_state, config=cfg, epoch=epoch,
                         rng_state=_rng_state(rng), history=history, dataset=dataset,
                         bn_population=bn_population)

    budget = tcfg["time_budget_minutes"]
    fns.compile_train()
    t_start = time.perf_counter()
    elapsed_before = history[-1]["wall_s"] if history else 0.0
    train_s = history[-1]["train_s"] if history else 0.0
    n_batches = hooks.n_batches(splits)
    first_step_s = None
    epoch = start_epoch
    stop_reason = "epochs"
    for epoch in range(start_epoch + 1, tcfg["epochs"] + 1):
        sums = np.zeros(3)
        bar = tqdm(hooks.epoch_batches(splits, rng, model), total=n_batches, desc=f"epoch {epoch}/{tcfg['epochs']}",
                   leave=False, disable=None if tcfg["progress"] else True, unit="batch")  # None: off when not a TTY
        for b, args in enumerate(bar):
            t_step = time.perf_counter()
            loss, nll, kl = fns.train_step(*args)
            if first_step_s is None:  # Numba and JAX compile on the first call: not a step's cost
                first_step_s = time.perf_counter() - t_step
            else:
                train_s += time.perf_counter() - t_step
            if not (math.isfinite(loss) and math.isfinite(nll) and math.isfinite(kl)):
                raise TrainingDiverged(
                    f"loss became {loss} at epoch {epoch}, batch {b + 1}; the last good checkpoint "
                    f"{ckpt_path} is kept: lower optim.learning_rate or use another optimizer"
                )
            sums += (loss, nll, kl)
            bar.set_postfix(loss=f"{loss:.1f}", kl=f"{kl:.1f}")
        bar.close()
        valid = evaluate_elbo(fns, splits["valid"][0], tcfg["eval_batch_size"], cfg["seed"] + 1)
        wall = elapsed_before + time.perf_counter() - t_start
        rec = {
            "epoch": epoch,
            "wall_s": round(wall, 3),
            "train_s": round(train_s, 3),
            "train_loss": sums[0] / n_batches,
            "train_elbo": -(sums[1] + sums[2]) / n_batches,
            "train_kl": sums[2] / n_batches,
            "valid_elbo": valid["elbo"],
            "valid_kl": valid["kl"],
        }
        for cb in callbacks:
            rec.update(cb(fns, rec, splits) or {})
        history.append(rec)
        log.info("epoch %d  train loss %.2f  train ELBO %.2f  KL %.2f  valid ELBO %.2f  (%.0f s)",
                 epoch, rec["train_loss"], rec["train_elbo"], rec["train_kl"], rec["valid_elbo"], wall)
        last = epoch == tcfg["epochs"]
        over_budget = budget is not None and train_s >= budget * 60
        if over_budget:
            stop_reason = "time_budget"
        if tcfg["checkpoint_every"] and (epoch % tcfg["checkpoint_every"] == 0 or last or over_budget):
            save(epoch)
        if tcfg["figures_every"] and epoch % tcfg["figures_every"] == 0 and not last:
            hooks.figures(fns, splits, workdir, cfg["seed"] + 2, tag=f"epoch{epoch:04d}")
        if over_budget:
            log.info("time budget of %.3g min reached after epoch %d", budget, epoch)
            break

    running = {v: v.get_value() for v in model.bn_state}
    metrics = final_evaluation(fns, splits, cfg, dataset)
    metrics.update(epochs_trained=epoch, stop_reason=stop_reason,
                   train_wall_s=history[-1]["wall_s"] if history else 0.0,
                   train_step_s=history[-1]["train_s"] if history else 0.0,
                   first_step_s=first_step_s, compile_s=fns.compile_seconds)
    # The checkpoint keeps the running averages (so --resume continues exactly) and,
    # beside them, the recomputed population statistics that inference uses.
    population = {v.name: v.get_value() for v in model.bn_state}
    for v, val in running.items():
        v.set_value(val)
    save(epoch, bn_population=population if tcfg["recompute_bn"] else None)
    for v in model.bn_state:
        v.set_value(population[v.name])
    metrics.update(hooks.finish(fns, splits, workdir, metrics))
    write_json(workdir / "metrics.json", metrics)
    if history:
        plots.save(plots.learning_curves(history, cfg["name"]), workdir / "figures" / "learning_curve.png")
    hooks.figures(fns, splits, workdir, cfg["seed"] + 2)
    return metrics
