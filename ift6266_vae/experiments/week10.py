"""Week 10's label-count table: semi-supervised test error against the number of labels,
over seeds, next to Kingma et al. (2014)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from .. import config as config_mod
from .. import data
from ..errors import UserError
from ..io import write_json, write_text
from ..models.semisupervised import VARIANTS
from .sweep import Task, run_sweep

log = logging.getLogger(__name__)


#: Kingma et al. (2014), Table 1: MNIST test error (%) with 100 / 600 / 1000 / 3000 labels,
#: on the full MNIST (50,000 training digits).
PAPER = {
    "M2": {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92},
    "M1+M2": {100: 3.33, 600: 2.59, 1000: 2.40, 3000: 2.18},
}
TABLE_LABELS = (100, 600, 1000, 3000)


def week10_config(name: str = "week10", labels: int | None = None, variant: str | None = None,
                  overrides: dict | None = None) -> dict:
    """Load a semi-supervised config and apply ``--labels`` / ``--variant`` (None: the config's)
    and the dotted ``overrides`` (a value None sets null)."""
    cfg = config_mod.load(name)
    if cfg["model"]["kind"] != "semisupervised" and (labels is not None or variant is not None):
        raise UserError(f"--labels and --variant apply to semi-supervised configs (e.g. week10), "
                        f"not to {cfg['name']!r} (model kind {cfg['model']['kind']!r})")
    if variant is not None and variant not in VARIANTS:
        raise UserError(f"unknown semi-supervised variant {variant!r}; valid: {', '.join(VARIANTS)}")
    cfg = config_mod.apply_overrides(cfg, {"model.labels": labels, "model.variant": variant})
    return config_mod.apply_overrides(cfg, overrides or {}, keep_none=True)


def run_table(workdir, labels=TABLE_LABELS, seeds=(1, 2, 3), variants=VARIANTS,
              base_config: str = "week10", overrides: dict | None = None, reuse: bool = False,
              scheduler: str | None = None, workers: int | None = None) -> dict:
    """Train every (variant, labels, seed) as one sweep (:func:`~.sweep.run_sweep`: on a local
    Dask cluster of ``workers`` processes, or on the cluster of ``scheduler``) and write
    ``table.md`` / ``table.json``: the test error, mean ± standard deviation over the seeds
    that finished, of the final model and of the model of the best epoch by validation
    error (``best.h5``, what Kingma et al.'s code reported), next to the paper's numbers.
    A failed run is listed with its error."""
    workdir = Path(workdir)
    if not seeds:
        raise UserError("the table needs at least one seed")
    tasks, dataset = [], None
    for variant in variants:
        for n in labels:
            for seed in seeds:
                cfg = week10_config(base_config, labels=n, variant=variant, overrides={"seed": seed, **(overrides or {})})
                if variant == "m1m2":  # one M1 per seed, shared by every label count (trained by the first run)
                    cfg["model"]["m1_checkpoint"] = str(workdir / "m1" / f"seed{seed}" / "checkpoint.h5")
                dataset = data.resolve_name(cfg["data"]["name"])
                cfg["name"] = f"week10-{variant}-{n}-seed{seed}"
                tasks.append(Task(f"{variant}-{n}/seed{seed}", cfg, workdir / f"{variant}-{n}" / f"seed{seed}"))
    results = run_sweep(tasks, reuse, scheduler, workers, desc="week-10 table")
    rows = []
    for variant in variants:
        for n in labels:
            runs = []
            for seed in seeds:
                rec = results[f"{variant}-{n}/seed{seed}"]
                run = {"seed": seed, "dir": str(workdir / f"{variant}-{n}" / f"seed{seed}")}
                metrics = rec["metrics"]
                if metrics is None:
                    runs.append({**run, "error": rec["error"]})
                    continue
                best = metrics.get("best") or {}
                runs.append({**run, "test_error": metrics["test_error"], "epochs": metrics["epochs_trained"],
                             "best_test_error": best.get("test_error"), "best_epoch": best.get("epoch"),
                             "train_step_s": metrics["train_step_s"]})
            done = [r for r in runs if "error" not in r]
            row = {"variant": variant, "labels": n, "n_seeds": len(done), "runs": runs,
                   **_mean_std([r["test_error"] for r in done])}
            if done and all(r["best_test_error"] is not None for r in done):
                row["best"] = _mean_std([r["best_test_error"] for r in done])
            rows.append(row)
    base = week10_config(base_config, overrides=overrides)
    table = {"dataset": dataset, "n_train": len(data.load(dataset, "train")[1]), "paper": PAPER,
             "budget_minutes": base["train"]["time_budget_minutes"], "rows": rows}
    write_json(workdir / "table.json", table)
    write_text(workdir / "table.md", table_markdown(table))
    return table


def _mean_std(errors) -> dict:
    """Mean and standard deviation (percent) of the errors; None for no errors."""
    if not errors:
        return {"mean": None, "std": None}
    e = 100 * np.asarray(errors, dtype=float)
    return {"mean": float(e.mean()), "std": float(e.std(ddof=1)) if len(e) > 1 else 0.0}


def _cell(r: dict | None, n_seeds: int) -> str:
    if r is None or r["mean"] is None:
        return "-"
    return f"{r['mean']:.2f} (1 seed)" if n_seeds == 1 else f"{r['mean']:.2f} ± {r['std']:.2f} ({n_seeds} seeds)"


def table_markdown(table: dict) -> str:
    """The error table (percent), one row per variant, one column per label count."""
    counts = sorted({r["labels"] for r in table["rows"]})
    full = table["dataset"] == "mnist"
    lines = [
        f"Data: **{table['dataset']}** ({table['n_train']} training digits); "
        + ("the paper's numbers are for this data set (full MNIST, 50,000 training digits)." if full else
           "the paper's numbers are for the full MNIST (50,000 training digits), not this data set."),
        f"Test error (%), mean ± standard deviation over seeds; budget {table['budget_minutes']} min of update "
        "steps per run; *final*: the model at the end of training, *best*: the epoch of least validation "
        "error. Paper: no standard deviations copied.",
        "",
        "| model | data | " + " | ".join(f"{n} labels" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    by = {(r["variant"], r["labels"]): r for r in table["rows"]}
    for variant in dict.fromkeys(r["variant"] for r in table["rows"]):
        rows = [by.get((variant, n)) for n in counts]
        lines.append(f"| {variant} (this package, final) | {table['dataset']} | "
                     + " | ".join(_cell(r, r["n_seeds"] if r else 0) for r in rows) + " |")
        if any(r and "best" in r for r in rows):
            lines.append(f"| {variant} (this package, best by validation) | {table['dataset']} | "
                         + " | ".join(_cell(r.get("best") if r else None, r["n_seeds"] if r else 0) for r in rows) + " |")
    for name, vals in table["paper"].items():
        lines.append(f"| {name} (Kingma et al. 2014, Table 1) | mnist (50k) | "
                     + " | ".join(f"{vals[n]:.2f}" if n in vals else "-" for n in counts) + " |")
    failed = [(r, run) for r in table["rows"] for run in r["runs"] if "error" in run]
    if failed:
        lines += ["", "Failed runs (not in the means; `--reuse` runs them again):", ""]
        lines += [f"- {r['variant']}, {r['labels']} labels, seed {run['seed']}: {run['error']}" for r, run in failed]
    return "\n".join(lines) + "\n"
