"""The models and the one registry from a model kind to everything that kind needs.

A new model is one file here (its symbolic graphs, on :class:`.base.VAEBase`), one line in
:data:`KINDS` and a config under ``ift6266_vae/configs/``. Each entry names the model
class, the class of its compiled functions (:mod:`.compiled`) and the training-loop hooks
that change what the loop does for that kind. Hooks live in :mod:`ift6266_vae.training`,
a layer above this one, so they are named by ``"module:Class"`` and imported by training
when it runs; nothing in this package imports training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import checkpoints
from ..errors import UserError
from .compiled import ModelFunctions, SSLFunctions
from .conv import ConvVAE
from .feedforward import FeedforwardVAE
from .semisupervised import SemiSupervisedVAE


@dataclass(frozen=True)
class ModelKind:
    model: type  # the symbolic model: ``model(config, seed)``
    functions: type  # its compiled functions: ``functions(model, backend, optim_config, batch_size)``
    hooks: str  # ``"module:Class"`` of its training-loop hooks (ift6266_vae.training)


_VAE_HOOKS = "ift6266_vae.training.hooks:TrainingHooks"

#: model kind -> what that kind needs
KINDS = {
    "feedforward": ModelKind(FeedforwardVAE, ModelFunctions, _VAE_HOOKS),
    "conv": ModelKind(ConvVAE, ModelFunctions, _VAE_HOOKS),
    "semisupervised": ModelKind(SemiSupervisedVAE, SSLFunctions,
                                "ift6266_vae.training.semisupervised:SemiSupervisedHooks"),
}


def kind_of(config: dict) -> ModelKind:
    """The registry entry of a ``model`` config section."""
    kind = config.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(KINDS)}")
    return KINDS[kind]


def build(config: dict, seed: int = 0):
    """Build the model named by ``config["kind"]`` (the ``model`` section of a run config);
    ``seed`` drives the weight initialisation."""
    return kind_of(config).model(config, seed=seed)


def load(checkpoint, backend: str | None = None) -> ModelFunctions:
    """The trained model of a checkpoint, ready to run on numpy arrays.

    Returns its compiled functions (:class:`.compiled.ModelFunctions`, or
    :class:`.compiled.SSLFunctions` for a semi-supervised checkpoint) with the inference
    BN statistics loaded; ``backend`` defaults to the one the run trained on. The run's
    config and checkpoint metadata are in ``.config`` and ``.meta``.
    """
    path = Path(checkpoint)
    meta = checkpoints.read_meta(path)
    cfg = meta["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or cfg["model"].get("kind") not in KINDS:
        raise UserError(f"{path} is not a VAE checkpoint of this package (no model config; a classifier "
                        "cache?); pass the checkpoint.h5 of a training run")
    model = build(cfg["model"], seed=cfg["seed"])
    meta.update(checkpoints.load_into(path, model))
    fns = kind_of(cfg["model"]).functions(model, backend or cfg["train"]["backend"])
    fns.config, fns.meta = cfg, meta
    return fns
