"""The ELBO of a model on a data split, and the batch-norm statistics inference uses.

* :func:`evaluate_elbo`: mean ELBO / NLL / KL (nats per example) with fixed eps;
* :func:`recompute_bn_statistics`: every BN layer's population statistics set to their
  exact training-set values after training (Ioffe & Szegedy 2015, Alg. 2);
* :func:`final_evaluation`: the test ELBO three ways, by the BN statistics used at
  inference: batch statistics (the only option in 2015), running averages, recomputed.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UserError
from ..models.compiled import ModelFunctions
from ..nn.layers import FLOATX


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



def final_evaluation(fns: ModelFunctions, splits: dict, cfg: dict, dataset: str) -> dict:
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
