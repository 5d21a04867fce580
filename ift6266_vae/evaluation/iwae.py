"""The importance-weighted bound of Burda et al. (2016).

``log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]``, ``z_i ~ q(z | x)``, with the BN
population statistics, in nats per example (same units and decoder variance as the
ELBO of :mod:`ift6266_vae.nn.costs`). It is the ELBO at ``k = 1`` and tends to
``log p(x)`` as ``k`` grows. Pixels are continuous in [0, 1] and the decoder a Gaussian,
so the bounds are densities: comparable across models of this package, not with
binarized-MNIST numbers.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytensor.tensor as pt
from tqdm.auto import tqdm

from ..errors import UserError
from ..models.compiled import ModelFunctions, image_input
from ..nn import costs
from ..nn.layers import FLOATX


#: Largest number of (example, sample) rows one call of the compiled IWAE function
#: evaluates: 10,000 rows of the default feedforward VAE stay far below 1 GiB.
MAX_ROWS = 10_000


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
               per_example: bool = False, progress: bool = True) -> dict:
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
    for s in tqdm(range(0, n, bs), desc=f"IWAE bound, k={k}", unit="batch", leave=False,
                  disable=None if progress else True):  # None: off when not a terminal
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
