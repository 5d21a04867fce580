"""Constants and helpers shared by several test modules (``tests/`` is on ``sys.path``
through ``tests/conftest.py``; import as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np

#: A feedforward network small enough to compile and run in seconds (784-16-8, code 4).
TINY_NET = {
    "kind": "feedforward",
    "encoder": [16, 8],
    "encoder_activations": ["relu", "tanh"],
    "code_size": 4,
    "decoder": [8, 16],
    "decoder_activations": ["linear", "relu"],
}


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random float32 images (N, 1, 28, 28) with pixels in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 28, 28)).astype("float32")
