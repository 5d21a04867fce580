"""Week 10: what the semi-supervised models change in the training loop.

The model (symbolic graphs) is :mod:`ift6266_vae.models.semisupervised`, its compiled
functions :class:`ift6266_vae.models.compiled.SSLFunctions`. :class:`SemiSupervisedHooks`
is what changes in :func:`ift6266_vae.training.loop.train_and_evaluate` (the registry
names it for ``model.kind: semisupervised``): the labeled subset
(:func:`ift6266_vae.data.labeled_subset`, from the training split only, balanced,
deterministic per seed), minibatches of ``model.labeled_per_batch`` labeled and
``train.batch_size - labeled_per_batch`` unlabeled examples (an epoch is one pass over
the unlabeled examples; the labeled ones are cycled through in fresh permutations), the
validation error after every epoch, and the final test error, confusion matrix and
figures. Everything else (optimizer, BN population statistics recomputed after training,
the three-way BN report, checkpoints, resume, time budget) is the package's loop.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .. import checkpoints, data, plots
from .. import config as config_mod
from ..errors import UserError
from ..io import file_lock
from ..models.compiled import SSLFunctions
from ..models.semisupervised import N_CLASSES, VARIANTS, default_alpha, m1_config
from ..nn.layers import FLOATX
from .hooks import TrainingHooks, save_grid
from .loop import run_or_reuse

log = logging.getLogger(__name__)

#: what the test ELBO of metrics.json is, per variant
ELBO_NOTES = {
    "m2": "m2: the ELBO of an unlabeled digit, label marginalised (a bound on log p(x))",
    "blog": "blog: minus the blogged cost with the label part of the code set to Y' (no KL on it: not a bound "
            "on log p(x))",
    "m1m2": "m1m2: M2's bound on M1's features of an unlabeled digit, label marginalised (a bound on the "
            "density of the features, not of the images)",
}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = N_CLASSES) -> np.ndarray:
    """Counts ``m[true, predicted]``."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


class SemiSupervisedHooks(TrainingHooks):
    """The week-10 changes to the training loop (see the module docstring)."""

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        m, bs = cfg["model"], cfg["train"]["batch_size"]
        if m["variant"] not in VARIANTS:
            raise UserError(f"config key 'model.variant': unknown variant {m['variant']!r}; valid: {', '.join(VARIANTS)}")
        self.n_labels = int(m["labels"])
        self.label_seed = cfg["seed"] if m["label_seed"] is None else int(m["label_seed"])
        lpb = int(m["labeled_per_batch"])
        if not 0 <= lpb <= bs:
            raise UserError(f"config key 'model.labeled_per_batch' ({lpb}) must lie in 0..train.batch_size ({bs})")
        if self.n_labels > 0 and lpb == 0:
            raise UserError("config key 'model.labeled_per_batch' is 0 but labels are given; use at least 1")
        self.labeled_per_batch = lpb if self.n_labels else 0
        self._split = None

    # the labeled subset ---------------------------------------------------
    def split(self, splits: dict):
        """``(labeled indices, unlabeled indices)`` of the training split (computed once)."""
        if self._split is None:
            y = splits["train"][1]
            lab = data.labeled_subset(y, self.n_labels, self.label_seed, bool(self.cfg["model"]["balanced"]))
            unl = np.setdiff1d(np.arange(len(y)), lab)
            self._split = (lab, unl)
            log.info("semi-supervised: %d labeled (%s), %d unlabeled training examples; batches of %d labeled + %d "
                     "unlabeled", len(lab), "balanced" if self.cfg["model"]["balanced"] else "not balanced",
                     len(unl), *self._batch_parts())
        return self._split

    def _batch_parts(self):
        bs = self.cfg["train"]["batch_size"]
        if self._split is not None and len(self._split[1]) == 0:  # every example labeled
            return bs, 0
        return self.labeled_per_batch, bs - self.labeled_per_batch

    def ce_weight(self, n_train: int) -> float:
        """Cross-entropy weight per labeled row: blog ``alpha`` (1); m2 ``alpha / N_labeled``
        with ``alpha = 0.1 * N`` (Kingma et al.'s ``J + alpha * E_labeled[-log q(y|x)]``)."""
        alpha = default_alpha(self.cfg["model"], n_train)
        if self.cfg["model"]["variant"] == "blog":
            return alpha
        return alpha / max(self.n_labels, 1)

    # TrainingHooks ---------------------------------------------------------
    def prepare(self, workdir: Path) -> None:
        """m1m2: M1 must be trained first (once per run folder tree: the runs of a label-count
        sweep share it through ``model.m1_checkpoint``). The first run that needs it trains it;
        the others wait, then reuse it (refused if it was trained with another M1 config)."""
        m = self.cfg["model"]
        if m["variant"] != "m1m2":
            return
        self.m1_path = Path(m["m1_checkpoint"]) if m["m1_checkpoint"] else workdir / "m1" / "checkpoint.h5"
        m1_dir = self.m1_path.parent
        m1_dir.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(m1_dir.with_name(m1_dir.name + ".lock"), "the M1 folder", wait=True):
            log.info("m1m2: M1 in %s", m1_dir)
            run_or_reuse(self.m1_run_config(), m1_dir, reuse=True)

    def m1_run_config(self) -> dict:
        """The run config of M1: the feedforward VAE of ``m1_config``, trained on every training
        digit with this run's data, optimizer and training budget (no labels involved)."""
        cfg = self.cfg
        train = {k: v for k, v in cfg["train"].items() if k not in ("early_stopping", "kl_warmup_epochs")}
        return config_mod.resolve({"name": "m1", "seed": cfg["seed"], "data": cfg["data"],
                                   "model": m1_config(cfg["model"]), "optim": cfg["optim"], "train": train})

    def functions(self, model, splits: dict) -> SSLFunctions:
        t = self.cfg["train"]
        self.split(splits)
        if model.m1 is not None:  # M1's weights and population BN statistics, frozen under M2
            checkpoints.load_into(self.m1_path, model.m1)
        # N, the number of training examples (after max_train_examples), sets m2's alpha
        return SSLFunctions(model, t["backend"], optim_config=self.cfg["optim"], batch_size=t["batch_size"],
                            kl_warmup=t["kl_warmup_epochs"] > 0, ce_weight=self.ce_weight(len(splits["train"][1])))

    def n_batches(self, splits: dict) -> int:
        lab, unl = self.split(splits)
        n_l, n_u = self._batch_parts()
        if n_u == 0:
            return len(lab) // n_l
        return len(unl) // n_u

    def epoch_batches(self, splits: dict, rng: np.random.Generator, model):
        x, y = splits["train"]
        lab, unl = self.split(splits)
        n_l, n_u = self._batch_parts()
        nb = self.n_batches(splits)
        perm_u = rng.permutation(unl) if n_u else unl
        if n_l:
            reps = math.ceil(nb * n_l / len(lab))
            perm_l = np.concatenate([rng.permutation(lab) for _ in range(reps)])
        else:
            perm_l = lab
        for b in range(nb):
            il = perm_l[b * n_l:(b + 1) * n_l]
            iu = perm_u[b * n_u:(b + 1) * n_u]
            eps = rng.standard_normal((n_l + n_u, model.code_size)).astype(FLOATX)
            yield x[il], y[il], x[iu], eps

    def callbacks(self) -> list:
        def valid_error(fns, rec, splits):
            xv, yv = splits["valid"]
            err = float(np.mean(fns.predict(xv) != yv))
            log.info("  valid error %.2f %%  (labeled cross-entropy %.3f)", 100 * err, fns.last_ce)
            return {"valid_error": err, "train_labeled_ce": fns.last_ce}
        return [valid_error]

    def figures(self, fns, splits: dict, workdir: Path, seed: int, tag: str = "") -> list[Path]:
        rng = np.random.default_rng(seed)
        suffix = f"_{tag}" if tag else ""
        fig = workdir / "figures"
        eps = rng.standard_normal((10, fns.model.code_size)).astype(FLOATX)
        grid = np.concatenate([fns.generate(c, 10, eps=eps) for c in range(N_CLASSES)])
        out = [save_grid(fig / f"class_conditional{suffix}.png", grid,
                         "row c: label clamped to c; column: one prior code", 10)]
        if tag:
            return out
        xt, yt = splits["test"]
        src = np.concatenate([xt[yt == c][:1] for c in range(N_CLASSES)])
        ana = fns.analogies(src)
        rows = np.concatenate([np.concatenate([src[i:i + 1], ana[10 * i:10 * (i + 1)]]) for i in range(len(src))])
        out.append(save_grid(fig / "analogies.png", rows,
                             "column 1: test digit; columns 2-11: its code decoded with labels 0-9", 11))
        rec = fns.reconstruct(xt[:50])
        out.append(save_grid(fig / "reconstructions.png", plots.interleave(xt[:50], rec, 10),
                             "sources (odd rows) and reconstructions (even rows)", 10))
        cm = confusion_matrix(yt, fns.predict(xt))
        out.append(plots.save(plots.confusion_matrix(cm, f"{self.cfg['model']['variant']}, {self.n_labels} labels: "
                                                         f"test error {100 * (1 - np.trace(cm) / cm.sum()):.2f} %"),
                              fig / "confusion.png"))
        return out

    best = ("valid_error", "lower")  # best-by-validation, as Kingma et al.'s code reported

    def best_metrics(self, fns, splits: dict) -> dict:
        return {f"{s}_error": float(np.mean(fns.predict(splits[s][0]) != splits[s][1])) for s in ("test", "valid")}

    def finish(self, fns, splits: dict, workdir: Path, metrics: dict) -> dict:
        lab, unl = self.split(splits)
        xt, yt = splits["test"]
        pred = fns.predict(xt)
        cm = confusion_matrix(yt, pred)
        xl, yl = splits["train"][0][lab], splits["train"][1][lab]
        n_l, n_u = self._batch_parts()
        out = {
            "variant": self.cfg["model"]["variant"],
            "labels": self.n_labels,
            "label_seed": self.label_seed,
            "balanced": bool(self.cfg["model"]["balanced"]),
            "labeled_indices": lab.tolist(),
            "batch": {"labeled": n_l, "unlabeled": n_u},
            "ce_weight_per_labeled_example": fns.ce_weight,
            "test_error": float(np.mean(pred != yt)),
            "valid_error": float(np.mean(fns.predict(splits["valid"][0]) != splits["valid"][1])),
            "labeled_train_error": float(np.mean(fns.predict(xl) != yl)) if len(lab) else None,
            "unlabeled_train_error": float(np.mean(fns.predict(splits["train"][0][unl]) != splits["train"][1][unl]))
            if len(unl) else None,
            "confusion_matrix": cm.tolist(),
            "confusion_axes": "rows: true class, columns: predicted class (test split)",
            "elbo_note": ELBO_NOTES[self.cfg["model"]["variant"]],
        }
        if self.cfg["model"]["check_samples"]:
            out["class_conditional_samples"] = self._check_samples(fns, metrics["dataset"])
        log.info("%s, %d labels: test error %.2f %%", out["variant"], self.n_labels, 100 * out["test_error"])
        return out

    def _check_samples(self, fns, dataset: str) -> dict:
        """Which class the package's classifier sees in 100 samples generated per clamped label."""
        from ..evaluation.classifier import get_classifier

        clf = get_classifier(dataset, backend=self.cfg["train"]["backend"], progress=False)
        rng = np.random.default_rng(self.cfg["seed"] + 7)
        hits = []
        for c in range(N_CLASSES):
            imgs = np.clip(fns.generate(c, 100, seed=rng), 0.0, 1.0)
            hits.append(float(np.mean(clf.predict(imgs) == c)))
        return {"per_class": hits, "mean": float(np.mean(hits)), "n_per_class": 100,
                "note": "fraction of the samples of each clamped label that the package classifier "
                        f"(test accuracy {clf.test_accuracy:.3f}) assigns to that label"}
