"""Model registry: a new model is one file here plus one line in ``MODELS``."""

from __future__ import annotations

from .conv import ConvVAE
from .feedforward import FeedforwardVAE
from .semisupervised import SemiSupervisedVAE

MODELS = {
    "feedforward": FeedforwardVAE,
    "conv": ConvVAE,
    "semisupervised": SemiSupervisedVAE,
}


def build(config: dict, seed: int = 0):
    """Build the model named by ``config["kind"]`` (the ``model`` section of a run config);
    ``seed`` drives the weight initialisation."""
    kind = config.get("kind")
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(MODELS)}")
    return MODELS[kind](config, seed=seed)
