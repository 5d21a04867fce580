"""Training: ``train_and_evaluate(config, workdir)``, the one entry point.

The loop: shuffle (seeded), minibatches of ``train.batch_size`` (the incomplete last
batch is dropped, as BN statistics of a tiny batch are meaningless), one compiled
update per batch with a tqdm bar showing the loss, validation ELBO each epoch with
population BN statistics, checkpoints (atomic, HDF5) and figures on a cadence.

After training, the BN population statistics are recomputed exactly over the training
set (:func:`recompute_bn_statistics`) and the test ELBO is reported three ways: batch
statistics (the only option in 2015), running averages, recomputed population statistics.

Everything a run needs to be reproduced is saved next to its results: ``config.json``
(resolved, with defaults), ``checkpoint.h5`` (with the config, RNG state and history),
``metrics.json``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import checkpoints, data, models, plots
from .functions import ModelFunctions
from .layers import FLOATX
from .utils import UserError, write_json

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------- data
def load_splits(cfg: dict):
    name = data.resolve_name(cfg["data"]["name"])
    splits = {s: data.load(name, s) for s in ("train", "valid", "test")}
    cap = cfg["data"]["max_train_examples"]
    if cap:
        splits = {s: (x[:cap], y[:cap]) for s, (x, y) in splits.items()}
    bs = cfg["train"]["batch_size"]
    if bs > len(splits["train"][0]):
        raise UserError(
            f"config key 'train.batch_size' ({bs}) is larger than the training set "
            f"({len(splits['train'][0])} examples of {name}); lower it"
        )
    return name, splits


# ---------------------------------------------------------------------------- evaluation
def evaluate_elbo(fns: ModelFunctions, x: np.ndarray, batch_size: int, seed: int,
                  deterministic: bool = True) -> dict:
    """Mean ELBO / NLL / KL (nats per example) over ``x`` with fixed eps, and the ELBO's standard error."""
    rng = np.random.default_rng(seed)
    n = len(x)
    if not deterministic:  # batch statistics: only full batches are meaningful
        n = (n // batch_size) * batch_size or n
    vals = []
    for s in range(0, n, batch_size):
        xb = x[s:s + batch_size]
        eps = rng.standard_normal((len(xb), fns.model.code_size)).astype(FLOATX)
        vals.append(np.stack(fns.elbo(xb, eps, deterministic=deterministic), axis=1))
    v = np.concatenate(vals)
    return {
        "elbo": float(v[:, 0].mean()),
        "elbo_se": float(v[:, 0].std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0,
        "nll": float(v[:, 1].mean()),
        "kl": float(v[:, 2].mean()),
        "n": int(len(v)),
    }


def recompute_bn_statistics(fns: ModelFunctions, x: np.ndarray, batch_size: int, seed: int) -> None:
    """Set every BN layer's population statistics to their exact training-set values.

    Following Ioffe & Szegedy (2015, Alg. 2): run the training-mode network over the
    training set in minibatches of the training batch size, and set
    ``mean = E_B[mean_B]`` and ``var = m / (m - 1) * E_B[var_B]`` (unbiased).
    """
    rng = np.random.default_rng(seed)
    sums: dict = {}
    nb = 0
    n = (len(x) // batch_size) * batch_size
    for s in range(0, n, batch_size):
        xb = x[s:s + batch_size]
        eps = rng.standard_normal((len(xb), fns.model.code_size)).astype(FLOATX)
        for layer, m, v in fns.bn_batch_stats(xb, eps):
            acc = sums.setdefault(layer.name, [layer, 0.0, 0.0])
            acc[1] = acc[1] + m
            acc[2] = acc[2] + v
        nb += 1
    if nb == 0:
        raise UserError(f"cannot recompute BN statistics: fewer than {batch_size} training examples")
    corr = batch_size / max(batch_size - 1, 1)
    for layer, m, v in sums.values():
        layer.mean.set_value((m / nb).astype(FLOATX))
        layer.var.set_value((v / nb * corr).astype(FLOATX))


# ---------------------------------------------------------------------------- figures
def write_figures(fns: ModelFunctions, x_src: np.ndarray, workdir: Path, seed: int, tag: str = "") -> list[Path]:
    """The week-9 figures: sources, reconstructions, samples from a fixed eps, interpolations."""
    rng = np.random.default_rng(seed)  # the same eps every time: samples are comparable across epochs
    suffix = f"_{tag}" if tag else ""
    ncols = 10
    src = x_src[:50]
    rec = fns.reconstruct(src)
    eps = rng.standard_normal((100, fns.model.code_size)).astype(FLOATX)
    samples = fns.sample(eps=eps)
    ends = rng.standard_normal((5, fns.model.code_size)).astype(FLOATX)
    path = fns.decode(plots.interpolation_codes(ends, 48))
    fig = workdir / "figures"
    return [
        plots.image_grid(src, fig / f"sources{suffix}.png", "source digits", ncols),
        plots.image_grid(plots.interleave(src, rec, ncols), fig / f"reconstructions{suffix}.png",
                         "sources (odd rows) and reconstructions (even rows)", ncols),
        plots.image_grid(samples, fig / f"samples{suffix}.png", "samples from a fixed eps ~ N(0, I)", ncols),
        plots.image_grid(path, fig / f"interpolations{suffix}.png",
                         "code-space path: 5 random endpoints, 48 linear steps each", 16),
    ]


# ---------------------------------------------------------------------------- hooks
class TrainingHooks:
    """What a model family may change in the loop; this default trains an unsupervised VAE.

    ``functions`` builds the compiled functions (``splits``: the loaded data);
    ``n_batches`` and ``epoch_batches`` give one epoch's ``fns.train_step`` arguments
    (every random draw comes from the loop's ``rng``, so a resumed run continues
    exactly); ``callbacks`` adds per-epoch evaluations; ``figures`` writes the figures;
    ``finish`` adds to the final metrics.
    The semi-supervised models use :class:`ift6266_vae.semisupervised.SemiSupervisedHooks`.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def functions(self, model, splits: dict) -> ModelFunctions:
        t = self.cfg["train"]
        return ModelFunctions(model, t["backend"], optim_config=self.cfg["optim"], batch_size=t["batch_size"])

    def n_batches(self, splits: dict) -> int:
        return len(splits["train"][0]) // self.cfg["train"]["batch_size"]

    def epoch_batches(self, splits: dict, rng: np.random.Generator, model):
        x, bs = splits["train"][0], self.cfg["train"]["batch_size"]
        perm = rng.permutation(len(x))
        for b in range(self.n_batches(splits)):
            yield x[perm[b * bs:(b + 1) * bs]], rng.standard_normal((bs, model.code_size)).astype(FLOATX)

    def callbacks(self) -> list:
        return []

    def figures(self, fns, splits: dict, workdir: Path, seed: int, tag: str = "") -> list[Path]:
        return write_figures(fns, splits["test"][0], workdir, seed, tag)

    def finish(self, fns, splits: dict, workdir: Path, metrics: dict) -> dict:
        return {}


def hooks_for(cfg: dict) -> TrainingHooks:
    if cfg["model"]["kind"] == "semisupervised":
        from .semisupervised import SemiSupervisedHooks

        return SemiSupervisedHooks(cfg)
    return TrainingHooks(cfg)


# ---------------------------------------------------------------------------- the loop
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
    metrics = final_evaluation(fns, splits, cfg, workdir, dataset)
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
        plots.learning_curves(history, workdir / "figures" / "learning_curve.png", cfg["name"])
    hooks.figures(fns, splits, workdir, cfg["seed"] + 2)
    return metrics


def final_evaluation(fns: ModelFunctions, splits: dict, cfg: dict, workdir: Path, dataset: str) -> dict:
    """Test/valid/train ELBO with batch, running-average and recomputed population BN statistics."""
    tcfg = cfg["train"]
    ebs, bs, seed = tcfg["eval_batch_size"], tcfg["batch_size"], cfg["seed"] + 1
    x_tr, x_va, x_te = (splits[s][0] for s in ("train", "valid", "test"))
    mcfg = fns.model.config
    decoder = ("Bernoulli decoder" if mcfg.get("likelihood") == "bernoulli"
               else f"Gaussian decoder, variance {mcfg.get('decoder_variance')}")
    out = {"dataset": dataset, "config_name": cfg["name"], "units": f"nats per example ({decoder})", "bn": {}}
    out["bn"]["batch_statistics"] = {"test": evaluate_elbo(fns, x_te, bs, seed, deterministic=False)}
    out["bn"]["running_average"] = {"test": evaluate_elbo(fns, x_te, ebs, seed)}
    if tcfg["recompute_bn"]:
        recompute_bn_statistics(fns, x_tr, bs, cfg["seed"] + 3)
        out["bn"]["recomputed"] = {"test": evaluate_elbo(fns, x_te, ebs, seed)}
    final = "recomputed" if tcfg["recompute_bn"] else "running_average"
    out["bn_used"] = final
    out["train"] = evaluate_elbo(fns, x_tr, ebs, seed)
    out["valid"] = evaluate_elbo(fns, x_va, ebs, seed)
    out["test"] = evaluate_elbo(fns, x_te, ebs, seed)
    return out

