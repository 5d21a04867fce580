"""Constants and helpers shared by several test modules (``tests/`` is on ``sys.path``
through ``tests/conftest.py``; import as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np

def tiny_net(width: int, code: int) -> dict:
    """A feedforward network 784-(2 width)-width, code ``code``, width-(2 width) decoder,
    with the week-9 activation pattern, small enough to compile and run in seconds."""
    return {
        "kind": "feedforward",
        "encoder": [2 * width, width],
        "encoder_activations": ["relu", "tanh"],
        "code_size": code,
        "decoder": [width, 2 * width],
        "decoder_activations": ["linear", "relu"],
    }


#: for graph-level tests (784-16-8, code 4)
TINY_NET = tiny_net(8, 4)
#: for end-to-end runs and backend agreement (784-32-16, code 8)
TINY_RUN_NET = tiny_net(16, 8)


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random float32 images (N, 1, 28, 28) with pixels in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 28, 28)).astype("float32")
