"""``evaluate(checkpoint)``: test ELBO, importance-weighted bound and sample FID of a
trained VAE, written to ``evaluation.json`` next to its checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .. import data, models
from ..errors import UserError
from ..io import check_writable, write_json
from ..nn import costs
from .classifier import get_classifier
from .elbo import evaluate_elbo
from .fid import frechet_distance, sample_quality
from .iwae import iwae_bound

log = logging.getLogger(__name__)


def evaluate(checkpoint, iwae_k: int = 1000, fid_samples: int = 10_000, out=None,
                        backend: str | None = None, data_name: str | None = None, seed: int = 0,
                        classifier=None, iwae_examples: int | None = None,
                        iwae_batch_size: int = 100) -> dict:
    """Evaluate a trained checkpoint on its test split and write ``evaluation.json``.

    Loads the model from the config inside the checkpoint (inference BN statistics: the
    recomputed population ones when present) and the test split it was trained with (capped
    like training's when the config sets ``data.max_train_examples``), then computes

    * ``elbo``: the test ELBO of :func:`.elbo.evaluate_elbo` (same batch size
      and seed as training's final evaluation, so it matches ``metrics.json``);
    * ``iwae``: :func:`iwae_bound` with ``iwae_k`` samples (on the first
      ``iwae_examples`` test images when given; ``iwae_k=0`` skips it). For the default
      feedforward VAE on 1,000 test digits, k=1000 takes about 50 s on 2 CPU cores and
      k=5000 about 4 minutes; memory stays below 0.5 GB;
    * ``fid`` and ``samples``: :func:`sample_quality` with ``fid_samples`` samples
      against the real test digits, and ``fid_reference``: the same distance between as
      many real *training* digits and the test digits (the floor a perfect model would
      reach with this many samples); ``fid_samples=0`` skips them.

    ``classifier`` defaults to :func:`.classifier.get_classifier` of the
    checkpoint's data set (trained and cached on first use). ``data_name`` (optional)
    must name the data set the checkpoint was trained on. The JSON goes to ``out``
    (default ``<checkpoint dir>/evaluation.json``), atomically, and only after everything
    succeeded. Returns the dict written.
    """
    t_start = time.perf_counter()
    path = Path(checkpoint)
    if iwae_k < 0 or fid_samples < 0 or (0 < fid_samples < 2):
        raise UserError(f"iwae_k must be >= 0 and fid_samples 0 or >= 2, got {iwae_k} and {fid_samples}")
    if iwae_examples is not None and iwae_examples < 1:
        raise UserError(f"iwae_examples must be >= 1 (or None for every test digit), got {iwae_examples}")
    out = Path(out) if out is not None else path.parent / "evaluation.json"
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the JSON file to write")
    check_writable(out.parent, "the output folder")  # before minutes of evaluation that would have nowhere to go
    fns = models.load(path, backend)
    if fns.conditional:
        raise UserError(f"{path} is a semi-supervised (week-10) checkpoint; evaluate measures unconditional "
                        "VAEs: its test error, confusion matrix and ELBO are in the run's metrics.json")
    cfg, meta, model = fns.config, fns.meta, fns.model
    dataset = meta["dataset"]
    if data_name is not None:
        wanted = data.resolve_name(data_name)
        if wanted != dataset:
            raise UserError(f"{path} was trained on {dataset!r}, not on {wanted!r}; "
                            f"evaluate it with --data {dataset} (or omit it)")
    # the data set it was trained on, even if "auto" now resolves elsewhere
    _, splits = data.load_splits(dataset, cfg["data"]["max_train_examples"])
    x_test = splits["test"][0]
    seed_elbo = cfg["seed"] + 1  # as elbo.final_evaluation

    result = {
        "checkpoint": str(path),
        "dataset": dataset,
        "config_name": cfg.get("name"),
        "epoch": meta["epoch"],
        "bn_statistics": meta["bn_source"],
        "backend": fns.backend,
        "units": "nats per example (Gaussian decoder, variance "
                 f"{model.config.get('decoder_variance', costs.DECODER_VARIANCE)})",
        "n_test": int(len(x_test)),
        "seed": int(seed),
    }
    t0 = time.perf_counter()
    result["elbo"] = evaluate_elbo(fns, x_test, cfg["train"]["eval_batch_size"], seed_elbo)
    result["elbo"]["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("test ELBO %.2f ± %.2f", result["elbo"]["elbo"], result["elbo"]["elbo_se"])

    if iwae_k:
        x_iw = x_test[:iwae_examples] if iwae_examples else x_test
        result["iwae"] = iwae_bound(fns, x_iw, iwae_k, batch_size=iwae_batch_size, seed=seed)
        log.info("test IWAE bound (k=%d) %.2f ± %.2f (%.0f s)", iwae_k, result["iwae"]["iwae"],
                 result["iwae"]["iwae_se"], result["iwae"]["seconds"])
    else:
        result["iwae"] = None

    if fid_samples:
        if classifier is None:
            classifier = get_classifier(dataset, fns.backend)
        if getattr(classifier, "dataset", dataset) != dataset:
            raise UserError(f"the classifier was trained on {classifier.dataset!r}, the checkpoint on {dataset!r}")
        t0 = time.perf_counter()
        sq = sample_quality(fns, classifier, fid_samples, seed, x_test)
        x_train = splits["train"][0]
        ref = np.random.default_rng(seed).permutation(len(x_train))[:fid_samples]
        sq["fid_reference"] = frechet_distance(classifier.features(x_train[ref]), classifier.features(x_test))
        sq["n_reference"] = int(len(ref))
        sq["classifier"] = {"path": str(getattr(classifier, "path", "") or ""),
                            "test_accuracy": float(getattr(classifier, "test_accuracy", float("nan")))}
        sq["seconds"] = round(time.perf_counter() - t0, 3)
        result["fid"] = sq["fid"]
        result["samples"] = sq
        log.info("FID %.3f (real train vs test: %.3f), classifier confidence on samples %.3f",
                 sq["fid"], sq["fid_reference"], sq["confidence_mean"])
    else:
        result["fid"] = None
        result["samples"] = None

    result["seconds"] = round(time.perf_counter() - t_start, 3)
    write_json(out, result)
    return result
