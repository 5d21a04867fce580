"""Deterministic splits: the stratified train/valid/test split of a data set that has
none, and the labeled subset of a semi-supervised run."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .cache import N_CLASSES, SPLITS

SPLIT_SEED = 2015


def largest_remainder(total: int, weights) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (largest-remainder
    rounding; ties go to the lower index)."""
    w = np.asarray(weights, dtype=np.int64)
    s = int(w.sum())
    if s <= 0:
        return np.zeros_like(w)
    base = (total * w) // s
    rem = (total * w) % s
    short = total - int(base.sum())
    order = np.argsort(-rem, kind="stable")
    base[order[:short]] += 1
    return base


def stratified_split(labels: np.ndarray, rng: np.random.Generator) -> dict:
    """Indices of a stratified train/valid/test split of ``labels`` (see the module doc):
    valid and test each get ``N // 10`` items, allocated per class by largest remainder."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    counts = np.bincount(labels, minlength=N_CLASSES)
    n_valid_c = largest_remainder(n // 10, counts)
    n_test_c = largest_remainder(n // 10, counts)
    n_train_c = counts - n_valid_c - n_test_c
    if (n_train_c < 0).any():
        raise UserError(f"too few images per class to split: {counts.tolist()}")
    parts = {s: [] for s in SPLITS}
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)[rng.permutation(counts[c])]
        a, b = n_train_c[c], n_train_c[c] + n_valid_c[c]
        parts["train"].append(idx[:a])
        parts["valid"].append(idx[a:b])
        parts["test"].append(idx[b:])
    return {s: rng.permutation(np.concatenate(parts[s])) for s in SPLITS}



def labeled_subset(labels: np.ndarray, n_labels: int, seed: int, balanced: bool = True,
                   n_classes: int = N_CLASSES) -> np.ndarray:
    """Indices (sorted) of the ``n_labels`` examples whose labels a semi-supervised run may use.

    Deterministic per ``seed``: ``numpy.random.default_rng(seed)`` permutes the indices of
    class 0, 1, ..., 9 in turn and each class contributes the first ``n_labels // 10`` of
    its permutation (``balanced``), or one permutation of all indices gives the first
    ``n_labels`` (not balanced). Call it on the *training* labels only.
    """
    labels = np.asarray(labels)
    n = int(labels.shape[0])
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or n_labels < 0:
        raise UserError(f"the number of labels must be a non-negative integer, got {n_labels!r}")
    if n_labels > n:
        raise UserError(f"asked for {n_labels} labeled examples but the training split has only {n}; "
                        f"use at most {n} labels")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise UserError(f"labels must lie in 0-{n_classes - 1}, found {sorted(set(bad.tolist()))[:5]}; "
                        "check the data set")
    rng = np.random.default_rng(seed)
    if not balanced:
        return np.sort(rng.permutation(n)[:n_labels])
    if n_labels % n_classes:
        raise UserError(f"{n_labels} labels cannot be balanced over {n_classes} classes; "
                        f"use a multiple of {n_classes} (e.g. {max(n_classes, n_labels // n_classes * n_classes)})")
    per = n_labels // n_classes
    picked = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per:
            raise UserError(f"class {c} has only {len(idx)} training examples, fewer than the {per} per class "
                            f"that {n_labels} balanced labels need; use fewer labels")
        picked.append(idx[rng.permutation(len(idx))[:per]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
