"""Figures from arrays (no graph compilation here): image grids, interpolations, curves.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
nothing here touches matplotlib's global backend (notebooks keep theirs); :func:`save`
writes one atomically as PNG. Images are shown in [0, 1] (decoder outputs live in the
hard-tanh range [-1, 1] and are clipped for display).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .io import atomic_path

log = logging.getLogger(__name__)


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, 1, H, W) or (N, H, W) images into one 2-d array, row-major."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    n, h, w = imgs.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[i]
    return np.clip(out, 0.0, 1.0)


def save(fig: Figure, path) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    log.debug("wrote %s", path)
    return path


def save_npz(path, **arrays) -> Path:
    """``numpy.savez_compressed`` of ``arrays``, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def save_pngs(folder, images: np.ndarray) -> Path:
    """One 8-bit grayscale PNG per image of (N, 1, H, W) or (N, H, W) pixels in [0, 1]
    (``00000.png``, ...; ``round(255 v)``, the MNIST byte scale), written into a temporary
    folder renamed onto ``folder`` at the end."""
    from PIL import Image  # matplotlib's own dependency

    folder = Path(folder)
    imgs = np.asarray(images, dtype=np.float32)
    imgs = imgs[:, 0] if imgs.ndim == 4 else imgs
    bytes_ = np.rint(np.clip(imgs, 0.0, 1.0) * 255).astype(np.uint8)
    with atomic_path(folder) as tmp:
        tmp.unlink()
        tmp.mkdir()
        for i, img in enumerate(bytes_):
            Image.fromarray(img, mode="L").save(tmp / f"{i:05d}.png")
    return folder


def _subplots(*grid, **kw):
    fig = Figure(**kw)
    return fig, fig.subplots(*grid, squeeze=False) if grid else fig.subplots()


def image_grid(images: np.ndarray, title: str = "", ncols: int | None = None) -> Figure:
    """One grid of images."""
    grid = tile(images, ncols)
    fig, ax = _subplots(figsize=(max(3, grid.shape[1] / 40), max(3, grid.shape[0] / 40) + 0.4))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def interleave(a: np.ndarray, b: np.ndarray, ncols: int) -> np.ndarray:
    """Rows of ``a`` followed by the matching rows of ``b`` (sources above reconstructions)."""
    n = min(len(a), len(b))
    rows = []
    for s in range(0, n, ncols):
        rows += [a[s:s + ncols], b[s:s + ncols]]
    return np.concatenate(rows)


def interpolation_codes(endpoints: np.ndarray, steps: int = 48) -> np.ndarray:
    """Linear path through code space: ``steps`` points from each endpoint to the next.

    The 2015 figure: random Gaussian endpoints and 48 linear steps between consecutive
    endpoints. Returns ``(len(endpoints) - 1) * steps + 1`` codes.
    """
    e = np.asarray(endpoints, dtype=np.float32)
    t = np.linspace(0.0, 1.0, steps, endpoint=False, dtype=np.float32)[:, None]
    path = [e[i] + t * (e[i + 1] - e[i]) for i in range(len(e) - 1)]
    return np.concatenate(path + [e[-1:]])


def learning_curves(history: list[dict], title: str = "") -> Figure:
    """Train and validation ELBO (nats/example) and the KL against epoch."""
    fig, (axes,) = _subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in history]
    for key, label in (("train_elbo", "train ELBO (batch BN)"), ("valid_elbo", "valid ELBO (population BN)")):
        vals = [h.get(key) for h in history]
        if any(v is not None for v in vals):
            axes[0].plot(ep, vals, label=label)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("ELBO (nats / example)")
    axes[0].legend()
    kl = [h.get("train_kl") for h in history]
    axes[1].plot(ep, kl, color="C2")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("KL (nats / example)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def study_curves(curves: dict[str, list[dict]], targets: dict) -> Figure:
    """Validation ELBO and FID of each variant against training time (week-11 study)."""
    fig, (axes,) = _subplots(1, 2, figsize=(11, 4))
    for i, (name, hist) in enumerate(curves.items()):
        t = [h["train_s"] / 60 for h in hist]
        axes[0].plot(t, [h["valid_elbo"] for h in hist], label=name, color=f"C{i}")
        fh = [h for h in hist if "fid" in h]
        axes[1].plot([h["train_s"] / 60 for h in fh], [h["fid"] for h in fh], "o-", label=name, color=f"C{i}")
    axes[0].axhline(targets["elbo"], ls="--", color="gray", label="target")
    axes[1].axhline(targets["fid"], ls="--", color="gray", label="target")
    axes[0].set(xlabel="training time (min, update steps only)", ylabel="valid ELBO (nats / example)")
    axes[1].set(xlabel="training time (min, update steps only)", ylabel="FID (classifier features)", yscale="log")
    lo = min((h["valid_elbo"] for hist in curves.values() for h in hist), default=-1000)
    axes[0].set_ylim(max(lo, -1000), None)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ablation_bars(rows: list[dict], ff_ms_per_gflop: float) -> Figure:
    """ms per GFLOP of each conv graph of the profiling ablation, against the feedforward's;
    rows with an ``ms_spread`` (quartiles over rounds) get it as whiskers."""
    fig, ax = _subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    names = [r["name"] for r in rows]
    values = [r["ms_per_gflop"] for r in rows]
    err = None
    if all("ms_spread" in r and "gflop_model" in r for r in rows):
        err = np.array([[v - r["ms_spread"]["q1"] / r["gflop_model"], r["ms_spread"]["q3"] / r["gflop_model"] - v]
                        for v, r in zip(values, rows)]).T.clip(0)
    ax.barh(names, values, xerr=err, color="C0", capsize=3)
    ax.axvline(ff_ms_per_gflop, color="C3", ls="--", label="feedforward VAE")
    ax.invert_yaxis()
    ax.set_xlabel("ms per GFLOP of a train step (C/VM linker; whiskers: interquartile range over rounds)")
    ax.legend()
    fig.tight_layout()
    return fig


def attribution_bars(factors: dict, gap: float) -> Figure:
    """Each construction's effect switched on from the fast graph, switched off from the
    all-2015 graph, and its share of the gap (ms per step, whiskers: 90 % bootstrap interval).
    ``factors``: name -> {"on"|"off"|"shapley": {"ms": {"value", "lo", "hi"}}}."""
    fig, ax = _subplots(figsize=(9, 0.9 * len(factors) + 1.5))
    y = np.arange(len(factors))
    for i, (key, label) in enumerate((("on", "on from the fast graph"), ("off", "off from the all-2015 graph"),
                                      ("shapley", "share of the gap"))):
        q = [factors[f][key]["ms"] for f in factors]
        v = np.array([d["value"] for d in q])
        err = np.array([[d["value"] - d["lo"] for d in q], [d["hi"] - d["value"] for d in q]]).clip(0)
        ax.barh(y + (i - 1) * 0.27, v, height=0.27, xerr=err, capsize=2, color=f"C{i}", label=label)
    ax.set_yticks(y, list(factors))
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"ms per conv train step (gap all 2015 - fast: {gap:.0f} ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def op_time_bars(censuses: dict[str, list[dict]], top: int = 8) -> Figure:
    """Time per op class (ms per step) for each profiled graph."""
    fig, axes = _subplots(1, len(censuses), figsize=(6 * len(censuses), 4))
    for ax, (name, rows) in zip(axes[0], censuses.items()):
        rows = rows[:top]
        err = None
        if all("ms_min" in r for r in rows):
            err = np.array([[r["ms"] - r["ms_min"] for r in rows], [r["ms_max"] - r["ms"] for r in rows]]).clip(0)
        ax.barh([r["op"] for r in rows], [r["ms"] for r in rows], xerr=err, capsize=2, color="C1")
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("ms per step (whiskers: fastest and slowest profiled call)")
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, title: str = "") -> Figure:
    """A confusion matrix (rows: true class, columns: predicted class) with its counts."""
    cm = np.asarray(cm)
    n = cm.shape[0]
    fig, ax = _subplots(figsize=(5.2, 4.6))
    im = ax.imshow(cm, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
