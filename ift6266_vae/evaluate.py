"""Evaluation beyond the ELBO: importance-weighted bound, Fréchet distance, sample quality.

* :func:`iwae_bound`: the importance-weighted bound of Burda et al. (2016),
  ``log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]``, ``z_i ~ q(z | x)``, with the
  BN population statistics, in nats per example (same units and decoder variance as the
  ELBO of :mod:`ift6266_vae.costs`). It is the ELBO at ``k = 1`` and tends to
  ``log p(x)`` as ``k`` grows.
* :func:`frechet_distance`: the FID formula between two sets of feature vectors.
* :func:`sample_quality`: samples from the prior judged by the data set's classifier
  (:mod:`ift6266_vae.classifier`): Fréchet distance of its penultimate-layer features to
  real test digits, mean confidence and class histogram.
* :func:`evaluate_checkpoint`: all of the above for a trained checkpoint, written to
  ``evaluation.json`` next to it.

Pixels are continuous in [0, 1] and the decoder a Gaussian, so the bounds are densities:
comparable across models of this package, not with binarized-MNIST numbers.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytensor.tensor as pt
import scipy.linalg

from . import checkpoints, costs, data, models, train
from .functions import ModelFunctions, image_input
from .layers import FLOATX
from .utils import UserError, write_json

log = logging.getLogger(__name__)

#: Largest number of (example, sample) rows one call of the compiled IWAE function
#: evaluates: 10,000 rows of the default feedforward VAE stay far below 1 GiB.
MAX_ROWS = 10_000


# ---------------------------------------------------------------------------- IWAE
def _log_weights_fn(fns: ModelFunctions):
    """Compiled ``(x (B, 1, 28, 28), eps (B, S, code)) -> log w (B, S)`` where
    ``log w = log p(x | z) + log p(z) - log q(z | x)``, ``z = mu + sigma * eps``,
    with the BN population statistics; cached on ``fns`` like its other functions."""
    def build():
        model = fns.model
        x = image_input()
        eps = pt.tensor3("eps", dtype=FLOATX)
        mu, log_sigma = model.encode(x, deterministic=True)
        b, s, d = eps.shape[0], eps.shape[1], eps.shape[2]
        mu_r = pt.repeat(mu, s, axis=0)  # (B * S, code), example-major like eps.reshape
        ls_r = pt.repeat(log_sigma, s, axis=0)
        z = model.sample_code(mu_r, ls_r, eps.reshape((b * s, d)))
        y = model.decode(z, deterministic=True)
        x_r = pt.repeat(x.flatten(2), s, axis=0)
        variance = model.config.get("decoder_variance", costs.DECODER_VARIANCE)
        log_w = (-costs.gaussian_nll(x_r, y, variance) + costs.standard_normal_log_density(z)
                 - costs.gaussian_log_density(z, mu_r, ls_r))
        return fns._compile("iwae_log_weights", [x, eps], log_w.reshape((b, s)))
    return fns._get("iwae_log_weights", build)


def _as_functions(fns_or_model, backend: str) -> ModelFunctions:
    if isinstance(fns_or_model, ModelFunctions):
        return fns_or_model
    return ModelFunctions(fns_or_model, backend)


def iwae_bound(fns_or_model, x: np.ndarray, k: int, batch_size: int = 100, seed: int = 0,
               backend: str = "auto", samples_per_call: int | None = None,
               per_example: bool = False) -> dict:
    """Importance-weighted bound ``log (1/k) sum_i p(x, z_i) / q(z_i | x)`` over ``x``.

    Parameters
    ----------
    fns_or_model : a :class:`ModelFunctions` (its backend is used) or a model.
    x : images (N, 1, 28, 28).
    k : importance samples per example (``>= 1``; 5,000 is the usual evaluation).
    batch_size : examples per compiled call; ``samples_per_call`` (default: as many as
        keep ``batch_size * samples_per_call <= MAX_ROWS``) bounds the samples per call,
        so memory does not grow with ``k``. The per-example log-sum-exp is accumulated
        across calls in float64.
    seed : example ``i`` draws its noise from ``numpy.random.default_rng((seed, i))``,
        so the result does not depend on ``batch_size`` or ``samples_per_call``.
    per_example : also return the per-example bounds (``"per_example"``, float64 array).

    Returns a dict (nats per example): ``iwae`` (mean bound) and ``iwae_se`` (standard
    error over examples); ``elbo`` and ``elbo_se``: the mean log weight, the Monte-Carlo
    ELBO of the same samples; ``ess_mean``: mean effective sample size
    ``(sum w)^2 / sum w^2`` (out of ``k``); ``k``, ``n``, ``seconds``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise UserError(f"the IWAE bound needs k >= 1 importance samples, got k={k!r}")
    x = np.asarray(x, dtype=FLOATX)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or len(x) == 0:
        raise UserError(f"iwae_bound needs images shaped (N, 1, 28, 28) with N >= 1, got {x.shape}")
    if batch_size <= 0:
        raise UserError(f"iwae_bound: batch_size must be >= 1, got {batch_size}")
    k = int(k)
    fns = _as_functions(fns_or_model, backend)
    fn = _log_weights_fn(fns)
    code = fns.model.code_size
    bs = min(int(batch_size), len(x))
    spc = samples_per_call or max(1, MAX_ROWS // bs)
    spc = max(1, min(int(spc), k))
    t0 = time.perf_counter()
    n = len(x)
    lse = np.empty(n)    # log sum_i w_i
    lse2 = np.empty(n)   # log sum_i w_i^2
    mean_lw = np.empty(n)
    for s in range(0, n, bs):
        xb = x[s:s + bs]
        gens = [np.random.default_rng((seed, i)) for i in range(s, s + len(xb))]
        acc = np.full(len(xb), -np.inf)
        acc2 = np.full(len(xb), -np.inf)
        total = np.zeros(len(xb))
        for j in range(0, k, spc):
            m = min(spc, k - j)
            eps = np.stack([g.standard_normal((m, code), dtype=np.float32) for g in gens])
            lw = np.asarray(fn(xb, eps), dtype=np.float64)
            acc = np.logaddexp(acc, _logsumexp(lw))
            acc2 = np.logaddexp(acc2, _logsumexp(2.0 * lw))
            total += lw.sum(axis=1)
        lse[s:s + len(xb)] = acc
        lse2[s:s + len(xb)] = acc2
        mean_lw[s:s + len(xb)] = total / k
    bound = lse - math.log(k)
    if not np.all(np.isfinite(bound)):
        raise FloatingPointError(f"non-finite IWAE bound for {int(np.sum(~np.isfinite(bound)))} examples")
    out = {
        "iwae": float(bound.mean()),
        "iwae_se": _se(bound),
        "elbo": float(mean_lw.mean()),
        "elbo_se": _se(mean_lw),
        "ess_mean": float(np.exp(2 * lse - lse2).mean()),
        "k": k,
        "n": n,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if per_example:
        out["per_example"] = bound
    return out


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(axis=1))


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


# ---------------------------------------------------------------------------- Fréchet distance
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 sqrtm(C_a C_b))`` between two feature sets
    (rows are examples), computed in float64.

    As in the reference FID code: when ``sqrtm`` is not finite, or has an imaginary part
    that is not negligible (singular covariances), it is retried with ``eps * I`` added
    to both covariances; the real part is kept; tiny negative results from rounding are
    clipped to 0.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise UserError(f"frechet_distance needs two (N, D) feature arrays of equal D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise UserError(f"frechet_distance needs at least 2 examples per set, got {len(a)} and {len(b)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UserError("frechet_distance: the features contain NaN or inf")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu_a - mu_b

    def sqrtm_prod(ca, cb):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return scipy.linalg.sqrtm(ca @ cb)

    def usable(m):
        if not np.all(np.isfinite(m)):
            return False
        return not np.iscomplexobj(m) or np.allclose(np.diagonal(m).imag, 0, atol=1e-3)

    covmean = sqrtm_prod(cov_a, cov_b)
    if not usable(covmean):
        log.debug("frechet_distance: singular product; adding %g to the covariance diagonals", eps)
        offset = np.eye(len(cov_a)) * eps
        covmean = sqrtm_prod(cov_a + offset, cov_b + offset)
        if not usable(covmean):
            raise FloatingPointError("frechet_distance: sqrtm of the covariance product failed even with an eps offset")
    covmean = np.real(covmean)
    d = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


# ---------------------------------------------------------------------------- samples
def sample_quality(fns: ModelFunctions, classifier, n_samples: int, seed: int,
                   real_images: np.ndarray, batch_size: int = 1000) -> dict:
    """Judge ``n_samples`` samples from the prior with ``classifier``.

    Codes ``eps ~ N(0, I)`` come from ``numpy.random.default_rng(seed)``; the decoder
    output (hard-tanh range [-1, 1]) is clipped to [0, 1], the pixel range of the data,
    before the classifier sees it. Returns ``fid`` (Fréchet distance between the
    classifier's penultimate-layer features of the samples and of ``real_images``),
    ``confidence_mean`` (mean max class probability on samples), ``class_histogram``
    (argmax counts, 10 classes), ``class_entropy`` (nats, of the normalised histogram;
    ``log 10 = 2.30`` when every digit is equally frequent), ``n_samples``, ``n_real``,
    ``seed``, ``n_features``.
    """
    if n_samples < 2:
        raise UserError(f"sample_quality needs at least 2 samples, got {n_samples}")
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_samples, fns.model.code_size)).astype(FLOATX)
    samples = np.concatenate([fns.sample(eps=eps[s:s + batch_size]) for s in range(0, n_samples, batch_size)])
    samples = np.clip(samples, 0.0, 1.0).astype(FLOATX)
    f_samples = classifier.features(samples)
    f_real = classifier.features(np.asarray(real_images, dtype=FLOATX))
    proba = classifier.predict_proba(samples)
    hist = np.bincount(proba.argmax(axis=1), minlength=proba.shape[1])
    p = hist / hist.sum()
    nz = p[p > 0]
    return {
        "fid": frechet_distance(f_samples, f_real),
        "confidence_mean": float(proba.max(axis=1).mean()),
        "class_histogram": [int(c) for c in hist],
        "class_entropy": float(-(nz * np.log(nz)).sum()),
        "n_samples": int(n_samples),
        "n_real": int(len(f_real)),
        "n_features": int(f_real.shape[1]),
        "seed": int(seed),
    }


# ---------------------------------------------------------------------------- checkpoints
def evaluate_checkpoint(checkpoint, iwae_k: int = 1000, fid_samples: int = 10_000, out=None,
                        backend: str | None = None, data_name: str | None = None, seed: int = 0,
                        classifier=None, iwae_examples: int | None = None,
                        iwae_batch_size: int = 100) -> dict:
    """Evaluate a trained checkpoint on its test split and write ``evaluation.json``.

    Loads the model from the config inside the checkpoint (inference BN statistics: the
    recomputed population ones when present) and the test split it was trained with (capped
    like training's when the config sets ``data.max_train_examples``), then computes

    * ``elbo``: the test ELBO of :func:`ift6266_vae.train.evaluate_elbo` (same batch size
      and seed as training's final evaluation, so it matches ``metrics.json``);
    * ``iwae``: :func:`iwae_bound` with ``iwae_k`` samples (on the first
      ``iwae_examples`` test images when given; ``iwae_k=0`` skips it). For the default
      feedforward VAE on 1,000 test digits, k=1000 takes about 50 s on 2 CPU cores and
      k=5000 about 4 minutes; memory stays below 0.5 GB;
    * ``fid`` and ``samples``: :func:`sample_quality` with ``fid_samples`` samples
      against the real test digits, and ``fid_reference``: the same distance between as
      many real *training* digits and the test digits (the floor a perfect model would
      reach with this many samples); ``fid_samples=0`` skips them.

    ``classifier`` defaults to :func:`ift6266_vae.classifier.get_classifier` of the
    checkpoint's data set (trained and cached on first use). ``data_name`` (optional)
    must name the data set the checkpoint was trained on. The JSON goes to ``out``
    (default ``<checkpoint dir>/evaluation.json``), atomically, and only after everything
    succeeded. Returns the dict written.
    """
    t_start = time.perf_counter()
    path = Path(checkpoint)
    meta = checkpoints.read_meta(path)
    cfg = meta["config"]
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise UserError(f"{path} is not a VAE checkpoint (no model config; a classifier cache?); "
                        "pass the checkpoint.h5 of a training run")
    if cfg["model"].get("kind") == "semisupervised":
        raise UserError(f"{path} is a semi-supervised (week-10) checkpoint; evaluate measures unconditional "
                        "VAEs: its test error, confusion matrix and ELBO are in the run's metrics.json")
    dataset = meta["dataset"]
    if data_name is not None:
        wanted = data.resolve_name(data_name)
        if wanted != dataset:
            raise UserError(f"{path} was trained on {dataset!r}, not on {wanted!r}; "
                            f"evaluate it with --data {dataset} (or omit it)")
    if iwae_k < 0 or fid_samples < 0 or (0 < fid_samples < 2):
        raise UserError(f"iwae_k must be >= 0 and fid_samples 0 or >= 2, got {iwae_k} and {fid_samples}")
    model = models.build(cfg["model"], seed=cfg["seed"])
    load_meta = checkpoints.load_into(path, model)
    backend = backend or cfg["train"]["backend"]
    fns = ModelFunctions(model, backend)
    run_cfg = copy.deepcopy(cfg)
    run_cfg["data"]["name"] = dataset  # what it was trained on, even if "auto" now resolves elsewhere
    _, splits = train.load_splits(run_cfg)
    x_test = splits["test"][0]
    seed_elbo = cfg["seed"] + 1  # as train.final_evaluation

    result = {
        "checkpoint": str(path),
        "dataset": dataset,
        "config_name": cfg.get("name"),
        "epoch": meta["epoch"],
        "bn_statistics": load_meta["bn_source"],
        "backend": fns.backend,
        "units": "nats per example (Gaussian decoder, variance "
                 f"{model.config.get('decoder_variance', costs.DECODER_VARIANCE)})",
        "n_test": int(len(x_test)),
        "seed": int(seed),
    }
    t0 = time.perf_counter()
    result["elbo"] = train.evaluate_elbo(fns, x_test, cfg["train"]["eval_batch_size"], seed_elbo)
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
            from .classifier import get_classifier

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
    out = Path(out) if out is not None else path.parent / "evaluation.json"
    write_json(out, result)
    return result
