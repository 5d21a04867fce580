"""Sample quality: the Fréchet distance between classifier features of generated and real
digits ("FID on MNIST", with the package's own classifier, :mod:`.classifier`)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from ..errors import UserError
from ..models.compiled import ModelFunctions
from ..nn.layers import FLOATX

log = logging.getLogger(__name__)


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


def sample_quality(fns: ModelFunctions, classifier, n_samples: int, seed: int,
                   real_images: np.ndarray, batch_size: int = 1000, progress: bool = True) -> dict:
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
    batches = tqdm(range(0, n_samples, batch_size), desc="FID samples", unit="batch", leave=False,
                   disable=None if progress else True)
    samples = np.concatenate([fns.sample(eps=eps[s:s + batch_size]) for s in batches])
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
