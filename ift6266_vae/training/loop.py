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
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import checkpoints, data, models, plots
from .. import config as config_mod
from ..errors import TrainingDiverged, UserError
from ..evaluation.elbo import evaluate_elbo, final_evaluation, recompute_bn_statistics
from ..io import locked_dir, write_json, write_text
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


def finished_metrics(run_dir, cfg: dict) -> dict | None:
    """The metrics of the finished run in ``run_dir`` (``metrics.json`` is written last,
    atomically), or None: no or unreadable file (an interrupted run). A run of another config
    than ``cfg`` is refused (UserError naming the keys that differ, outside
    :data:`~ift6266_vae.config.RESUME_SAFE`) rather than reused in its place."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): the run counts as not finished", path, e)
        return None
    if not isinstance(metrics, dict):
        return None
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir} holds a finished run without a readable config.json ({e}); delete that "
                        "folder to run it again, or choose another --workdir") from None
    diff = config_mod.resume_differences(saved, cfg)
    if diff:
        raise UserError(f"{run_dir} holds a finished run of another config (it differs in {', '.join(diff)}); "
                        "delete that folder to run it again, or choose another --workdir")
    return metrics


def run_or_reuse(cfg: dict, run_dir, reuse: bool, **kwargs) -> dict:
    """The metrics of the run of ``cfg`` in ``run_dir``: with ``reuse``, a finished run's
    (refused if it ran another config), or an interrupted run (a checkpoint, no metrics)
    continued from its checkpoint; otherwise a new run (refused if the folder already holds
    one). What sweeps and the shared M1 of m1m2 runs use."""
    run_dir = Path(run_dir)
    if reuse:
        metrics = finished_metrics(run_dir, cfg)
        if metrics is not None:
            log.info("reusing the finished run in %s", run_dir)
            return metrics
    resume = reuse and (run_dir / "checkpoint.h5").exists()
    if resume:
        log.info("continuing the interrupted run in %s", run_dir)
    return train_and_evaluate(cfg, run_dir, resume=resume, **kwargs)


def hooks_for(cfg: dict) -> TrainingHooks:
    """The training hooks of the config's model kind (from the registry)."""
    module, _, cls = models.kind_of(cfg["model"]).hooks.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg)


class Run:
    """One training run in its folder: the state the loop carries from epoch to epoch.

    ``train_and_evaluate`` is ``start`` (fresh or resumed), ``train`` (the epochs) and
    ``finish`` (final evaluation, metrics, figures), holding the folder's lock throughout.
    """

    def __init__(self, cfg: dict, workdir: Path, hooks: TrainingHooks, callbacks):
        self.cfg, self.tcfg, self.workdir = cfg, cfg["train"], workdir
        self.hooks = hooks
        self.callbacks = [*callbacks, *hooks.callbacks()]
        self.ckpt_path = workdir / "checkpoint.h5"
        self.best_path = workdir / "best.h5"
        self.history_path = workdir / "history.jsonl"
        self.best_key, self.best_better = hooks.best
        self.history: list[dict] = []
        self.epoch = 0
        self.saved_epoch: int | None = None  # the epoch of the checkpoint on disk, if any
        self.first_step_s = None
        self.stop_reason = "epochs"

    # ------------------------------------------------------------------ start
    def start(self, resume: bool) -> None:
        cfg = self.cfg
        meta = None
        if self.ckpt_path.exists():
            if not resume:
                raise UserError(f"{self.ckpt_path} exists; continue it (train --resume; week10-table and study: "
                                "--reuse) or choose another --workdir")
            meta = checkpoints.read_meta(self.ckpt_path)
            diff = config_mod.resume_differences(meta["config"], cfg)
            if diff:
                raise UserError(f"cannot resume {self.ckpt_path}: the config differs in {', '.join(diff)} (only "
                                f"{', '.join(sorted(config_mod.RESUME_SAFE))} may change); use the run's own "
                                "config.json or another --workdir")
        else:  # a new run: nothing of an earlier attempt that left no checkpoint may describe it
            if resume:
                log.info("nothing to resume in %s: starting a new run", self.workdir)
            for path in (self.workdir / "config.json", self.workdir / "metrics.json", self.history_path, self.best_path):
                path.unlink(missing_ok=True)
        self.hooks.prepare(self.workdir)
        self.dataset, self.splits = load_splits(cfg)
        self.model = models.build(cfg["model"], seed=cfg["seed"])
        self.fns = self.hooks.functions(self.model, self.splits)
        self.rng = np.random.default_rng(cfg["seed"])
        if meta is not None:
            loaded = checkpoints.load_into(self.ckpt_path, self.model, self.fns.optimizer_state, bn_source="running")
            if loaded["dataset"] != self.dataset:
                raise UserError(f"{self.ckpt_path} was trained on {loaded['dataset']!r}, this config loads "
                                f"{self.dataset!r}")
            self.rng.bit_generator.state = loaded["rng_state"]
            self.history = loaded["history"]
            self.epoch = self.saved_epoch = loaded["epoch"]
            # the epochs after the checkpoint are trained again: the history file restarts from it
            write_text(self.history_path, "".join(json.dumps(rec) + "\n" for rec in self.history))
            log.info("resuming %s at epoch %d", self.ckpt_path, self.epoch)

    # ------------------------------------------------------------------ the epochs
    @property
    def train_s(self) -> float:
        return self.history[-1]["train_s"] if self.history else 0.0

    def _over_budget(self, train_s: float) -> bool:
        budget = self.tcfg["time_budget_minutes"]
        return budget is not None and train_s >= budget * 60

    def train(self) -> None:
        tcfg = self.tcfg
        self.fns.compile_train()
        self.t_start = time.perf_counter()
        self.wall_before = self.history[-1]["wall_s"] if self.history else 0.0
        if self._over_budget(self.train_s):  # resumed after the budget was spent: evaluate only
            self.stop_reason = "time_budget"
            return
        for epoch in range(self.epoch + 1, tcfg["epochs"] + 1):
            self.epoch = epoch
            rec = self._epoch(epoch)
            with open(self.history_path, "a") as f:  # followable while the run goes: one line per epoch
                f.write(json.dumps(rec) + "\n")
            best_epoch = self.best_epoch()
            if best_epoch == epoch:
                checkpoints.save(self.best_path, self.model, config=self.cfg, epoch=epoch, history=self.history,
                                 dataset=self.dataset)
            last = epoch == tcfg["epochs"]
            if self._over_budget(rec["train_s"]):
                self.stop_reason = "time_budget"
                log.info("time budget of %.3g min reached after epoch %d", tcfg["time_budget_minutes"], epoch)
            patience = tcfg["early_stopping"]
            if patience and epoch - best_epoch >= patience:
                self.stop_reason = "early_stopping"
                log.info("early stopping: no better %s for %d epochs (best: epoch %d)", self.best_key, patience,
                         best_epoch)
            stop = self.stop_reason != "epochs"
            if tcfg["checkpoint_every"] and (epoch % tcfg["checkpoint_every"] == 0 or last or stop):
                self.save()
            if tcfg["figures_every"] and epoch % tcfg["figures_every"] == 0 and not last:
                self.hooks.figures(self.fns, self.splits, self.workdir, self.cfg["seed"] + 2, tag=f"epoch{epoch:04d}")
            if stop:
                break

    def best_epoch(self) -> int | None:
        """The epoch of the history with the best ``best_key`` (the first of ties)."""
        sign = 1.0 if self.best_better == "higher" else -1.0
        scored = [(sign * h[self.best_key], -h["epoch"]) for h in self.history if h.get(self.best_key) is not None]
        return -max(scored)[1] if scored else None

    def kl_weight(self, epoch: int) -> float:
        """The KL weight of ``epoch`` (1-based) under warm-up: ``(epoch - 1) / N`` for the first
        ``N = train.kl_warmup_epochs`` epochs, then 1 (a function of the epoch alone, so a
        resumed run continues the schedule)."""
        n = self.tcfg["kl_warmup_epochs"]
        return 1.0 if n == 0 else min(1.0, (epoch - 1) / n)

    def _epoch(self, epoch: int) -> dict:
        tcfg, fns = self.tcfg, self.fns
        train_s = self.train_s
        if fns.kl_weight is not None:
            fns.kl_weight.set_value(np.float32(self.kl_weight(epoch)))
        n_batches = self.hooks.n_batches(self.splits)
        sums = np.zeros(3)
        bar = tqdm(self.hooks.epoch_batches(self.splits, self.rng, self.model), total=n_batches,
                   desc=f"epoch {epoch}/{tcfg['epochs']}", leave=False, unit="batch",
                   disable=None if tcfg["progress"] else True)  # None: off when not a TTY
        for b, args in enumerate(bar):
            t_step = time.perf_counter()
            loss, nll, kl = fns.train_step(*args)
            if self.first_step_s is None:  # Numba and JAX compile on the first call: not a step's cost
                self.first_step_s = time.perf_counter() - t_step
            else:
                train_s += time.perf_counter() - t_step
            if not (math.isfinite(loss) and math.isfinite(nll) and math.isfinite(kl)):
                self._diverged(f"the loss became {loss} at epoch {epoch}, batch {b + 1}")
            sums += (loss, nll, kl)
            bar.set_postfix(loss=f"{loss:.1f}", kl=f"{kl:.1f}")
        bar.close()
        bad = [v.name for v in self.model.params + self.model.bn_state
               if not np.all(np.isfinite(v.get_value(borrow=True)))]
        if bad:  # the last step's update: its loss was computed before it
            self._diverged(f"after epoch {epoch}, {len(bad)} parameter arrays hold NaN or inf ({', '.join(bad[:3])})")
        valid = evaluate_elbo(fns, self.splits["valid"][0], tcfg["eval_batch_size"], self.cfg["seed"] + 1)
        if not math.isfinite(valid["elbo"]):
            self._diverged(f"the validation ELBO became {valid['elbo']} after epoch {epoch}")
        wall = self.wall_before + time.perf_counter() - self.t_start
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
        if fns.kl_weight is not None:
            rec["kl_weight"] = self.kl_weight(epoch)
        for cb in self.callbacks:
            rec.update(cb(fns, rec, self.splits) or {})
        self.history.append(rec)
        log.info("epoch %d  train loss %.2f  train ELBO %.2f  KL %.2f  valid ELBO %.2f  (%.0f s)",
                 epoch, rec["train_loss"], rec["train_elbo"], rec["train_kl"], rec["valid_elbo"], wall)
        return rec

    def _diverged(self, what: str):
        kept = (f"the last good checkpoint {self.ckpt_path} (epoch {self.saved_epoch}) is kept"
                if self.saved_epoch is not None else "no checkpoint was written")
        raise TrainingDiverged(f"training diverged: {what}; {kept}. Lower optim.learning_rate or use another "
                               "optimizer")

    # ------------------------------------------------------------------ saving
    def save(self, bn_population: dict | None = None) -> None:
        """The checkpoint of this epoch, then the config that describes it (mid-training
        checkpoints hold the running BN averages only)."""
        checkpoints.save(self.ckpt_path, self.model, self.fns.optimizer_state, config=self.cfg, epoch=self.epoch,
                         rng_state=self.rng.bit_generator.state, history=self.history, dataset=self.dataset,
                         bn_population=bn_population)
        write_json(self.workdir / "config.json", self.cfg)
        self.saved_epoch = self.epoch
        if self.history:
            plots.save(plots.learning_curves(self.history, self.cfg["name"]), self.workdir / "figures" / "learning_curve.png")

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        fns, model, history = self.fns, self.model, self.history
        running = {v: v.get_value() for v in model.bn_state}
        metrics = final_evaluation(fns, self.splits, self.cfg, self.dataset)
        metrics.update(epochs_trained=self.epoch, stop_reason=self.stop_reason,
                       train_wall_s=history[-1]["wall_s"] if history else 0.0,
                       train_step_s=self.train_s, first_step_s=self.first_step_s,
                       compile_s=fns.compile_seconds, backend=fns.backend)
        # The checkpoint keeps the running averages (so --resume continues exactly) and,
        # beside them, the recomputed population statistics that inference uses.
        population = {v.name: v.get_value() for v in model.bn_state}
        for v, val in running.items():
            v.set_value(val)
        self.save(bn_population=population if self.tcfg["recompute_bn"] else None)
        for v in model.bn_state:
            v.set_value(population[v.name])
        metrics.update(self.hooks.finish(fns, self.splits, self.workdir, metrics))
        self.hooks.figures(fns, self.splits, self.workdir, self.cfg["seed"] + 2)
        if self.best_path.exists():
            metrics["best"] = self._evaluate_best()
        write_json(self.workdir / "metrics.json", metrics)  # last: its presence means the run finished
        return metrics

    def _evaluate_best(self) -> dict:
        """The test numbers of the best epoch's model (BN statistics recomputed like the final
        model's, and saved in ``best.h5``); the final model is restored after."""
        model, fns, tcfg = self.model, self.fns, self.tcfg
        final = {v: v.get_value() for v in model.params + model.bn_state}
        meta = checkpoints.load_into(self.best_path, model, bn_source="running")
        population = None
        if tcfg["recompute_bn"]:
            recompute_bn_statistics(fns, self.splits["train"][0], tcfg["batch_size"], self.cfg["seed"] + 3)
            population = {v.name: v.get_value() for v in model.bn_state}
        out = {"epoch": meta["epoch"], "chosen_by": f"{self.best_key} ({self.best_better} is better)",
               self.best_key: next(h[self.best_key] for h in self.history if h["epoch"] == meta["epoch"]),
               "test": evaluate_elbo(fns, self.splits["test"][0], tcfg["eval_batch_size"], self.cfg["seed"] + 1),
               **self.hooks.best_metrics(fns, self.splits)}
        if population is not None:  # best.h5 for inference: the recomputed statistics beside the running ones
            checkpoints.load_into(self.best_path, model, bn_source="running")
            checkpoints.save(self.best_path, model, config=self.cfg, epoch=meta["epoch"], history=meta["history"],
                             dataset=self.dataset, bn_population=population)
        for v, val in final.items():
            v.set_value(val)
        return out


def train_and_evaluate(config: dict, workdir, resume: bool = False, callbacks=(), hooks=None) -> dict:
    """Train the model described by ``config`` and write results under ``workdir``.

    One run per folder at a time: the folder is locked for the whole run (a second run on
    it is refused, naming the first one's pid). ``resume`` continues the checkpoint in
    ``workdir`` if the config equals the checkpoint's but for :data:`~ift6266_vae.config.RESUME_SAFE`
    keys; ``config.json`` is written with each checkpoint, never ahead of it. A loss,
    parameter or validation ELBO that becomes NaN or infinite stops the run with
    :class:`~ift6266_vae.errors.TrainingDiverged`; nothing non-finite is ever saved.

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
    with locked_dir(workdir) as folder:
        run = Run(cfg, folder, hooks if hooks is not None else hooks_for(cfg), callbacks)
        run.start(resume)
        run.train()
        return run.finish()
