"""Costs of the VAEs, as symbolic PyTensor expressions.

The 2015 cost (per minibatch *sums*, not means)::

    cost_2015 = sum((x - y)^2) + KL,   KL = -0.5 * sum(2 log_sigma - exp(2 log_sigma) - mu^2 + 1)

The squared error is, up to a constant, the negative log-likelihood of a Gaussian
decoder ``p(x | z) = N(x; y, s^2 I)`` with variance ``s^2 = 1/2``::

    -log N(x; y, s^2) = (x - y)^2 / (2 s^2) + 0.5 * log(2 pi s^2)
                      = (x - y)^2 + 0.5 * log(pi)            for s^2 = 1/2

So for D pixels per example, ``-ELBO = cost_2015 + D * 0.5 * log(pi)`` (per example,
in nats), and the package reports the ELBO of the 2015 model in nats with the stated
variance ``DECODER_VARIANCE = 0.5``: optimising the 2015 cost *is* maximising that
ELBO. (Pixels are continuous values in [0, 1], so this is a density; it is comparable
across models of this package, not with the discrete-likelihood numbers of binarized
MNIST papers.)
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

#: Variance of the Gaussian decoder implied by the 2015 squared error.
DECODER_VARIANCE = 0.5


def _flat(x):
    return x.flatten(2) if x.ndim > 2 else x


def squared_error(x, y):
    """Per-example ``sum((x - y)^2)`` over all pixels; shape (N,)."""
    return pt.sum(pt.sqr(_flat(x) - _flat(y)), axis=1)


def gaussian_nll(x, y, variance: float = DECODER_VARIANCE):
    """Per-example ``-log N(x; y, variance * I)`` in nats; shape (N,)."""
    x, y = _flat(x), _flat(y)
    v = np.asarray(variance, dtype=x.dtype)
    const = np.asarray(0.5 * np.log(2 * np.pi * variance), dtype=x.dtype)
    return pt.sum(pt.sqr(x - y) / (2 * v) + const, axis=1)


def bernoulli_nll(x, logits):
    """Per-example binary cross-entropy ``-sum(x log p + (1 - x) log(1 - p))``, ``p =
    sigmoid(logits)``, of intensities ``x`` in [0, 1] (Kingma et al.'s decoder for MNIST);
    computed from the logits as ``sum(softplus(a) - x a)``; shape (N,)."""
    x, a = _flat(x), _flat(logits)
    return pt.sum(pt.softplus(a) - x * a, axis=1)


def gaussian_kl(mu, log_sigma):
    """Per-example analytic ``KL(N(mu, sigma^2) || N(0, I))``; shape (N,).

    Written as the 2015 code did: ``-0.5 * sum(2 log_sigma - exp(2 log_sigma) - mu^2 + 1)``.
    """
    return -0.5 * pt.sum(2 * log_sigma - pt.exp(2 * log_sigma) - pt.sqr(mu) + 1, axis=1)


def gaussian_log_density(z, mu, log_sigma):
    """Per-example ``log N(z; mu, diag(sigma^2))``; shape (N,). Used by the IWAE bound."""
    c = np.asarray(0.5 * np.log(2 * np.pi), dtype=z.dtype)
    return pt.sum(-0.5 * pt.sqr((z - mu) / pt.exp(log_sigma)) - log_sigma - c, axis=1)


def standard_normal_log_density(z):
    c = np.asarray(0.5 * np.log(2 * np.pi), dtype=z.dtype)
    return pt.sum(-0.5 * pt.sqr(z) - c, axis=1)


def vae_costs(x, y, mu, log_sigma, variance: float = DECODER_VARIANCE, kl_weight=None):
    """All cost terms of a Gaussian VAE for one minibatch.

    Returns a dict of symbolic values:

    * ``loss``: the training objective, the minibatch sum ``sum(se) / (2 variance) + sum(kl)``:
      exactly the 2015 cost ``sum(se) + sum(kl)`` at the default variance 1/2, and
      ``-sum(elbo)`` minus a constant in general; with ``kl_weight`` (KL warm-up, a symbolic
      scalar) the KL term is ``kl_weight * sum(kl)``;
    * ``nll``, ``kl``: per-example Gaussian NLL (nats, given ``variance``) and KL;
    * ``elbo``: per-example ELBO in nats, ``-(nll + kl)``.
    """
    se = squared_error(x, y)
    kl = gaussian_kl(mu, log_sigma)
    nll = gaussian_nll(x, y, variance)
    return {
        "loss": pt.sum(se) * np.asarray(1.0 / (2 * variance), dtype=se.dtype)
        + (pt.sum(kl) if kl_weight is None else kl_weight * pt.sum(kl)),
        "se": se,
        "nll": nll,
        "kl": kl,
        "elbo": -(nll + kl),
    }
