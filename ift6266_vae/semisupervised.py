"""Week 10: training, inference and figures of the semi-supervised VAEs, and the label-count table.

The model (symbolic graphs) is :mod:`ift6266_vae.models.semisupervised`. Here:

* :class:`SSLFunctions`: its compiled counterparts on numpy arrays, ``train_step(x_l,
  y_l, x_u, eps)``, ``predict`` / ``predict_proba``, ``generate(label, n)`` (the label
  clamped), ``analogies`` (encode a digit, decode it with every label), plus everything
  :class:`~ift6266_vae.functions.ModelFunctions` offers (``elbo`` and ``bn_batch_stats``
  on unlabeled batches).
* :class:`SemiSupervisedHooks`: what changes in the loop of
  :func:`ift6266_vae.train.train_and_evaluate` (which picks it for ``model.kind:
  semisupervised``): the labeled subset (:func:`ift6266_vae.data.labeled_subset`, from the
  training split only, balanced, deterministic per seed), minibatches of
  ``model.labeled_per_batch`` labeled and ``train.batch_size - labeled_per_batch``
  unlabeled examples (an epoch is one pass over the unlabeled examples; the labeled ones
  are cycled through in fresh permutations), the validation error after every epoch,
  and the final test error, confusion matrix and figures.
* :func:`run_table`: error against the number of labels, over seeds, next to the paper.

Everything else (optimizer, BN population statistics recomputed after training, the
three-way BN report, checkpoints, resume, time budget) is the package's loop, unchanged.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytensor.tensor as pt

from . import config as config_mod
from . import data, plots, train
from .functions import ModelFunctions, image_input
from .layers import FLOATX
from .models.semisupervised import N_CLASSES, VARIANTS, default_alpha
from .utils import UserError, atomic_path, write_json

log = logging.getLogger(__name__)

#: Kingma et al. (2014), Table 1: MNIST test error (%) with 100 / 600 / 1000 / 3000 labels,
#: on the full MNIST (50,000 training digits).
PAPER = {
    "M2": {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92},
    "M1+M2": {100: 3.33, 600: 2.59, 1000: 2.40, 3000: 2.18},
}
TABLE_LABELS = (100, 600, 1000, 3000)


def _labels_input(name: str = "y"):
    return pt.vector(name, dtype="int64")


class SSLFunctions(ModelFunctions):
    """Compiled functions of a :class:`~ift6266_vae.models.semisupervised.SemiSupervisedVAE`.

    ``ce_weight`` multiplies the summed cross-entropy of the labeled rows in the training
    objective (:meth:`SemiSupervisedHooks.ce_weight`). Labels passed to ``decode`` may be
    integer classes ``(N,)`` or rows of class probabilities ``(N, 10)``.
    """

    def __init__(self, model, backend: str = "auto", optim_config: dict | None = None,
                 batch_size: int | None = None, ce_weight: float = 1.0):
        self.ce_weight = float(ce_weight)
        self.last_ce = float("nan")
        super().__init__(model, backend, optim_config, batch_size)

    # ------------------------------------------------------------------ training
    def _inputs(self):
        return image_input("x_l"), _labels_input("y_l"), image_input("x_u"), pt.matrix("eps", dtype=FLOATX)

    def _build_train(self):
        from collections import OrderedDict

        from . import optim
        from .layers import bn_running_updates

        cfg = dict(self.optim_config)
        name, lr = cfg.pop("name"), cfg.pop("learning_rate")
        if cfg.pop("divide_lr_by_batch"):
            if not self.batch_size:
                raise ValueError("divide_lr_by_batch needs the batch size")
            lr = lr / self.batch_size
        x_l, y_l, x_u, eps = self._inputs()
        out = self.model.ssl_loss(x_l, y_l, x_u, eps, deterministic=False, ce_weight=self.ce_weight)
        updates = OrderedDict(optim.get_optimizer(name)(out["loss"], self.model.params, np.float32(lr), **cfg))
        bn_upd = bn_running_updates(out["bn_stats"])
        updates.update(bn_upd)
        params = set(self.model.params)
        self.optimizer_state = [v for v in updates if v not in params and v not in bn_upd]
        n = pt.cast(eps.shape[0], FLOATX)
        n_l = pt.maximum(pt.cast(x_l.shape[0], FLOATX), np.float32(1))
        outputs = [out["loss"] / n, pt.mean(out["nll"]), pt.mean(out["kl"]), pt.sum(out["ce"]) / n_l]
        self._train_graph = ([x_l, y_l, x_u, eps], outputs, updates)

    def train_step(self, x_l, y_l, x_u, eps):
        """One update on ``n_l`` labeled and ``n_u`` unlabeled images (``eps``: ``n_l + n_u``
        rows, labeled first); returns (objective per example, mean NLL, mean KL) and keeps
        the labeled cross-entropy in ``last_ce``."""
        loss, nll, kl, ce = (float(v) for v in self.compile_train()(x_l, np.asarray(y_l, np.int64), x_u, eps))
        self.last_ce = ce
        return [loss, nll, kl]

    def ssl_costs(self, x_l, y_l, x_u, eps, deterministic: bool = True) -> dict:
        """Per-example ``elbo``, ``nll``, ``kl``, ``ce`` and the objective ``loss`` of a mixed batch."""
        def build():
            ins = self._inputs()
            out = self.model.ssl_loss(*ins, deterministic=deterministic, ce_weight=self.ce_weight)
            keys = ["loss", "elbo", "nll", "kl", "ce"]
            fn = self._compile(f"ssl_costs[{deterministic}]", list(ins), [out[k] for k in keys])
            return keys, fn
        keys, fn = self._get(("ssl_costs", deterministic), build)
        return dict(zip(keys, fn(x_l, np.asarray(y_l, np.int64), x_u, eps)))

    # ------------------------------------------------------------------ inference
    def predict_proba(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """``q(y|x)`` with population BN statistics, (N, 10)."""
        def build():
            xs = image_input()
            return self._compile("predict_proba", [xs], pt.special.softmax(self.model.classify(xs, True), axis=1))
        fn = self._get("predict_proba", build)
        return np.concatenate([fn(x[s:s + batch_size]) for s in range(0, len(x), batch_size)]) if len(x) else \
            np.zeros((0, N_CLASSES), FLOATX)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted classes (int64, (N,))."""
        return self.predict_proba(x, batch_size).argmax(axis=1).astype(np.int64)

    def _label_rows(self, labels, n: int) -> np.ndarray:
        lab = np.asarray(labels)
        if lab.ndim == 2:
            if lab.shape != (n, N_CLASSES):
                raise ValueError(f"label rows must have shape ({n}, {N_CLASSES}), got {lab.shape}")
            return lab.astype(FLOATX)
        lab = np.broadcast_to(lab, (n,)).astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= N_CLASSES):
            raise UserError(f"labels must lie in 0-{N_CLASSES - 1}, got {sorted(set(lab.tolist()))[:5]}")
        return np.eye(N_CLASSES, dtype=FLOATX)[lab]

    def encode(self, x: np.ndarray, labels=None):
        """``(mu, log_sigma)`` with population BN statistics. For m2 the encoder needs a label:
        ``labels`` (classes or probability rows), by default the predicted class."""
        if self.model.variant == "blog":  # q(z|x): the label does not enter the encoder
            def build():
                xs = image_input()
                return self._compile("encode", [xs], list(self.model.encode(xs, None, deterministic=True)))
            return self._get("encode", build)(x)

        def build():
            xs, ys = image_input(), pt.matrix("y", dtype=FLOATX)
            return self._compile("encode", [xs, ys], list(self.model.encode(xs, ys, deterministic=True)))
        if labels is None:
            labels = self.predict(x)
        return self._get("encode", build)(x, self._label_rows(labels, len(x)))

    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        """Images (N, 1, 28, 28) from codes and labels (classes or probability rows; required)."""
        if labels is None:
            raise ValueError("the semi-supervised decoder needs labels: decode(z, labels)")
        def build():
            zs, ys = pt.matrix("z", dtype=FLOATX), pt.matrix("y", dtype=FLOATX)
            return self._compile("decode", [zs, ys], self.model.decode(zs, ys, deterministic=True))
        z = np.asarray(z, dtype=FLOATX)
        return self._get("decode", build)(z, self._label_rows(labels, len(z)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean with the classifier's label (m2: predicted class; blog:
        ``Y'``, as in training)."""
        if self.model.variant == "m2":
            lab = self.predict(x)
            return self.decode(self.encode(x, lab)[0], lab)
        return self.decode(self.encode(x)[0], self.predict_proba(x))

    def sample(self, n: int | None = None, rng: np.random.Generator | None = None,
               eps: np.ndarray | None = None, labels=None) -> np.ndarray:
        """Decode prior codes with the given labels (default: classes drawn uniformly)."""
        if eps is None:
            eps = rng.standard_normal((n, self.model.code_size)).astype(FLOATX)
        if labels is None:
            labels = (rng or np.random.default_rng(0)).integers(0, N_CLASSES, len(eps))
        return self.decode(eps, labels)

    def generate(self, label: int, n: int, rng: np.random.Generator | None = None,
                 eps: np.ndarray | None = None) -> np.ndarray:
        """``n`` images of class ``label``: prior codes decoded with the label clamped."""
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < N_CLASSES:
            raise UserError(f"label must be a class in 0-{N_CLASSES - 1}, got {label!r}")
        if eps is None:
            eps = (rng or np.random.default_rng(0)).standard_normal((n, self.model.code_size)).astype(FLOATX)
        return self.decode(eps, np.full(len(eps), int(label)))

    def analogies(self, x: np.ndarray, labels=None) -> np.ndarray:
        """Style transfer: each digit's posterior-mean code decoded with every label.

        Returns ``(len(x) * 10, 1, 28, 28)``, row-major: row ``i`` holds digit ``i``'s
        code decoded with labels 0..9. The m2 encoder reads ``labels`` (default: the
        predicted classes)."""
        n = len(x)
        mu, _ = self.encode(x, labels)
        z = np.repeat(mu, N_CLASSES, axis=0)
        lab = np.tile(np.arange(N_CLASSES), n)
        return self.decode(z, lab)


# ---------------------------------------------------------------------------- training hooks
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = N_CLASSES) -> np.ndarray:
    """Counts ``m[true, predicted]``."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


class SemiSupervisedHooks(train.TrainingHooks):
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
    def functions(self, model, splits: dict) -> SSLFunctions:
        t = self.cfg["train"]
        self.split(splits)
        # N, the number of training examples (after max_train_examples), sets m2's alpha
        return SSLFunctions(model, t["backend"], optim_config=self.cfg["optim"], batch_size=t["batch_size"],
                            ce_weight=self.ce_weight(len(splits["train"][1])))

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
        out = [plots.image_grid(grid, fig / f"class_conditional{suffix}.png",
                                "row c: label clamped to c; column: one prior code", 10)]
        if tag:
            return out
        xt, yt = splits["test"]
        src = np.concatenate([xt[yt == c][:1] for c in range(N_CLASSES)])
        ana = fns.analogies(src)
        rows = np.concatenate([np.concatenate([src[i:i + 1], ana[10 * i:10 * (i + 1)]]) for i in range(len(src))])
        out.append(plots.image_grid(rows, fig / "analogies.png",
                                    "column 1: test digit; columns 2-11: its code decoded with labels 0-9", 11))
        rec = fns.reconstruct(xt[:50])
        out.append(plots.image_grid(plots.interleave(xt[:50], rec, 10), fig / "reconstructions.png",
                                    "sources (odd rows) and reconstructions (even rows)", 10))
        cm = confusion_matrix(yt, fns.predict(xt))
        out.append(plots.confusion_matrix(cm, fig / "confusion.png",
                                          f"{self.cfg['model']['variant']}, {self.n_labels} labels: "
                                          f"test error {100 * (1 - np.trace(cm) / cm.sum()):.2f} %"))
        return out

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
            "elbo_note": ("m2: the ELBO of an unlabeled digit, label marginalised (a bound on log p(x))"
                          if self.cfg["model"]["variant"] == "m2" else
                          "blog: minus the blogged cost with the label part of the code set to Y' "
                          "(no KL on it: not a bound on log p(x))"),
        }
        if self.cfg["model"]["check_samples"]:
            out["class_conditional_samples"] = self._check_samples(fns, metrics["dataset"])
        log.info("%s, %d labels: test error %.2f %%", out["variant"], self.n_labels, 100 * out["test_error"])
        return out

    def _check_samples(self, fns, dataset: str) -> dict:
        """Which class the package's classifier sees in 100 samples generated per clamped label."""
        from .classifier import get_classifier

        clf = get_classifier(dataset, backend=self.cfg["train"]["backend"], progress=False)
        rng = np.random.default_rng(self.cfg["seed"] + 7)
        hits = []
        for c in range(N_CLASSES):
            imgs = np.clip(fns.generate(c, 100, rng=rng), 0.0, 1.0)
            hits.append(float(np.mean(clf.predict(imgs) == c)))
        return {"per_class": hits, "mean": float(np.mean(hits)), "n_per_class": 100,
                "note": "fraction of the samples of each clamped label that the package classifier "
                        f"(test accuracy {clf.test_accuracy:.3f}) assigns to that label"}


# ---------------------------------------------------------------------------- configs and CLI
def week10_config(name: str = "week10", labels: int | None = None, variant: str | None = None,
                  overrides: dict | None = None) -> dict:
    """Load a semi-supervised config and apply ``--labels`` / ``--variant`` and other overrides."""
    cfg = config_mod.load(name)
    if cfg["model"]["kind"] != "semisupervised" and (labels is not None or variant is not None):
        raise UserError(f"--labels and --variant apply to semi-supervised configs (e.g. week10), "
                        f"not to {cfg['name']!r} (model kind {cfg['model']['kind']!r})")
    if variant is not None and variant not in ("blog", "m2"):
        raise UserError(f"unknown semi-supervised variant {variant!r}; valid: blog, m2")
    return config_mod.apply_overrides(cfg, {"model.labels": labels, "model.variant": variant, **(overrides or {})})


# ---------------------------------------------------------------------------- the label-count table
def run_table(workdir, labels=TABLE_LABELS, seeds=(1, 2, 3), variants=("blog", "m2"),
              base_config: str = "week10", overrides: dict | None = None, reuse: bool = False) -> dict:
    """Train every (variant, labels, seed) and write ``table.md`` / ``table.json`` (test error
    mean ± standard deviation over seeds, next to the paper's numbers)."""
    workdir = Path(workdir)
    if not seeds:
        raise UserError("the table needs at least one seed")
    rows = []
    dataset = None
    for variant in variants:
        for n in labels:
            errs, runs = [], []
            for seed in seeds:
                cfg = week10_config(base_config, labels=n, variant=variant, overrides={"seed": seed, **(overrides or {})})
                dataset = data.resolve_name(cfg["data"]["name"])
                cfg["name"] = f"week10-{variant}-{n}-seed{seed}"
                run_dir = workdir / f"{variant}-{n}" / f"seed{seed}"
                if reuse and (run_dir / "metrics.json").exists():
                    log.info("table: reusing the finished run in %s", run_dir)
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                else:
                    log.info("table: training %s with %d labels, seed %d", variant, n, seed)
                    metrics = train.train_and_evaluate(cfg, run_dir)
                errs.append(metrics["test_error"])
                runs.append({"seed": seed, "test_error": metrics["test_error"], "epochs": metrics["epochs_trained"],
                             "train_step_s": metrics["train_step_s"], "dir": str(run_dir)})
            e = 100 * np.asarray(errs)
            rows.append({"variant": variant, "labels": n, "mean": float(e.mean()),
                         "std": float(e.std(ddof=1)) if len(e) > 1 else 0.0, "n_seeds": len(e), "runs": runs})
    base = week10_config(base_config, overrides=overrides)
    table = {"dataset": dataset, "n_train": len(data.load(dataset, "train")[1]), "paper": PAPER,
             "budget_minutes": base["train"]["time_budget_minutes"], "rows": rows}
    write_json(workdir / "table.json", table)
    with atomic_path(workdir / "table.md") as tmp:
        tmp.write_text(table_markdown(table))
    return table


def table_markdown(table: dict) -> str:
    """The error table (percent), one row per variant, one column per label count."""
    counts = sorted({r["labels"] for r in table["rows"]})
    full = table["dataset"] == "mnist"
    lines = [
        f"Data: **{table['dataset']}** ({table['n_train']} training digits); "
        + ("the paper's numbers are for this data set (full MNIST, 50,000 training digits)." if full else
           "the paper's numbers are for the full MNIST (50,000 training digits), not this data set."),
        f"Test error (%), mean ± standard deviation over seeds; budget {table['budget_minutes']} min of update "
        "steps per run. Paper: no standard deviations copied.",
        "",
        "| model | data | " + " | ".join(f"{n} labels" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    by = {(r["variant"], r["labels"]): r for r in table["rows"]}
    for variant in dict.fromkeys(r["variant"] for r in table["rows"]):
        cells = []
        for n in counts:
            r = by.get((variant, n))
            if r is None:
                cells.append("-")
            elif r["n_seeds"] == 1:
                cells.append(f"{r['mean']:.2f} (1 seed)")
            else:
                cells.append(f"{r['mean']:.2f} ± {r['std']:.2f} ({r['n_seeds']} seeds)")
        lines.append(f"| {variant} (this package) | {table['dataset']} | " + " | ".join(cells) + " |")
    for name, vals in table["paper"].items():
        lines.append(f"| {name} (Kingma et al. 2014, Table 1) | mnist (50k) | "
                     + " | ".join(f"{vals[n]:.2f}" if n in vals else "-" for n in counts) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["SSLFunctions", "SemiSupervisedHooks", "confusion_matrix", "run_table", "table_markdown",
           "week10_config", "PAPER"]
