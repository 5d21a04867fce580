"""What a model family may change in the training loop, and the default for the VAEs.

:class:`TrainingHooks` is the unsupervised VAEs' (feedforward and conv): one batch of
images per update, the week-9 figures. The registry (:data:`ift6266_vae.models.KINDS`)
names the hooks of each model kind; the semi-supervised ones are
:class:`ift6266_vae.training.semisupervised.SemiSupervisedHooks`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots
from ..models import kind_of
from ..models.compiled import ModelFunctions
from ..nn.layers import FLOATX


def write_figures(fns: ModelFunctions, x_src: np.ndarray, workdir: Path, seed: int, tag: str = "") -> list[Path]:
    """The week-9 figures: sources, reconstructions, samples from a fixed eps, interpolations."""
    rng = np.random.default_rng(seed)  # the same eps every time: samples are comparable across epochs
    suffix = f"_{tag}" if tag else ""
    ncols = 10
    src = x_src[:50]
    rec = fns.reconstruct(src)
    eps = rng.standard_normal((100, fns.model.code_size)).astype(FLOATX)
    samples = fns.sample(eps=eps)
    ends = rng.standard_normal((5, fns.model.code_size)).astype(FLOATX)
    path = fns.decode(plots.interpolation_codes(ends, 48))
    fig = workdir / "figures"
    return [
        save_grid(fig / f"sources{suffix}.png", src, "source digits", ncols),
        save_grid(fig / f"reconstructions{suffix}.png", plots.interleave(src, rec, ncols),
                  "sources (odd rows) and reconstructions (even rows)", ncols),
        save_grid(fig / f"samples{suffix}.png", samples, "samples from a fixed eps ~ N(0, I)", ncols),
        save_grid(fig / f"interpolations{suffix}.png", path,
                  "code-space path: 5 random endpoints, 48 linear steps each", 16),
    ]


def save_grid(path: Path, images: np.ndarray, title: str, ncols: int) -> Path:
    """An image grid written as a PNG (atomically)."""
    return plots.save(plots.image_grid(images, title, ncols), path)


class TrainingHooks:
    """What a model family may change in the loop; this default trains an unsupervised VAE.

    ``functions`` builds the compiled functions (``splits``: the loaded data);
    ``n_batches`` and ``epoch_batches`` give one epoch's ``fns.train_step`` arguments
    (every random draw comes from the loop's ``rng``, so a resumed run continues
    exactly); ``callbacks`` adds per-epoch evaluations; ``figures`` writes the figures;
    ``finish`` adds to the final metrics. ``best`` names the history key that picks the
    best epoch (``best.h5``, early stopping) and whether higher is better; ``best_metrics``
    adds to the best epoch's test numbers.
    """

    best = ("valid_elbo", "higher")

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def prepare(self, workdir: Path) -> None:
        """What must exist before the model is built (e.g. a pre-trained part); nothing here."""

    def functions(self, model, splits: dict) -> ModelFunctions:
        t = self.cfg["train"]
        return kind_of(self.cfg["model"]).functions(model, t["backend"], optim_config=self.cfg["optim"],
                                                    batch_size=t["batch_size"],
                                                    kl_warmup=t["kl_warmup_epochs"] > 0)

    def n_batches(self, splits: dict) -> int:
        return len(splits["train"][0]) // self.cfg["train"]["batch_size"]

    def epoch_batches(self, splits: dict, rng: np.random.Generator, model):
        x, bs = splits["train"][0], self.cfg["train"]["batch_size"]
        perm = rng.permutation(len(x))
        for b in range(self.n_batches(splits)):
            yield x[perm[b * bs:(b + 1) * bs]], rng.standard_normal((bs, model.code_size)).astype(FLOATX)

    def callbacks(self) -> list:
        return []

    def figures(self, fns, splits: dict, workdir: Path, seed: int, tag: str = "") -> list[Path]:
        return write_figures(fns, splits["test"][0], workdir, seed, tag)

    def finish(self, fns, splits: dict, workdir: Path, metrics: dict) -> dict:
        return {}

    def best_metrics(self, fns, splits: dict) -> dict:
        return {}
