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
from .runs import run_or_reuse

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
    """Load a semi-supervised config and apply ``--labels`` / ``--variant`` and other overrides."""
    cfg = config_mod.load(name)
    if cfg["model"]["kind"] != "semisupervised" and (labels is not None or variant is not None):
        raise UserError(f"--labels and --variant apply to semi-supervised configs (e.g. week10), "
                        f"not to {cfg['name']!r} (model kind {cfg['model']['kind']!r})")
    if variant is not None and variant not in ("blog", "m2"):
        raise UserError(f"unknown semi-supervised variant {variant!r}; valid: blog, m2")
    return config_mod.apply_overrides(cfg, {"model.labels": labels, "model.variant": variant, **(overrides or {})})


def run_table(workdir, labels=TABLE_LABELS, seeds=(1, 2, 3), variants=("blog", "m2"),
              base_config: str = "week10", overrides: dict | None = None, reuse: bool = False) -> dict:
    """Train every (variant, labels, seed) and write ``table.md`` / ``table.json`` (test error
    mean ± standard deviation over seeds, next to the paper's numbers)."""
    workdir = Path(workdir)
    if not seeds:
        raise UserError("the table needs at least one seed")
    rows = []
    dataset = None
    for variant in variants:
        for n in labels:
            errs, runs = [], []
            for seed in seeds:
                cfg = week10_config(base_config, labels=n, variant=variant, overrides={"seed": seed, **(overrides or {})})
                dataset = data.resolve_name(cfg["data"]["name"])
                cfg["name"] = f"week10-{variant}-{n}-seed{seed}"
                run_dir = workdir / f"{variant}-{n}" / f"seed{seed}"
                log.info("table: %s with %d labels, seed %d", variant, n, seed)
                metrics = run_or_reuse(cfg, run_dir, reuse)
                errs.append(metrics["test_error"])
                runs.append({"seed": seed, "test_error": metrics["test_error"], "epochs": metrics["epochs_trained"],
                             "train_step_s": metrics["train_step_s"], "dir": str(run_dir)})
            e = 100 * np.asarray(errs)
            rows.append({"variant": variant, "labels": n, "mean": float(e.mean()),
                         "std": float(e.std(ddof=1)) if len(e) > 1 else 0.0, "n_seeds": len(e), "runs": runs})
    base = week10_config(base_config, overrides=overrides)
    table = {"dataset": dataset, "n_train": len(data.load(dataset, "train")[1]), "paper": PAPER,
             "budget_minutes": base["train"]["time_budget_minutes"], "rows": rows}
    write_json(workdir / "table.json", table)
    write_text(workdir / "table.md", table_markdown(table))
    return table


def table_markdown(table: dict) -> str:
    """The error table (percent), one row per variant, one column per label count."""
    counts = sorted({r["labels"] for r in table["rows"]})
    full = table["dataset"] == "mnist"
    lines = [
        f"Data: **{table['dataset']}** ({table['n_train']} training digits); "
        + ("the paper's numbers are for this data set (full MNIST, 50,000 training digits)." if full else
           "the paper's numbers are for the full MNIST (50,000 training digits), not this data set."),
        f"Test error (%), mean ± standard deviation over seeds; budget {table['budget_minutes']} min of update "
        "steps per run. Paper: no standard deviations copied.",
        "",
        "| model | data | " + " | ".join(f"{n} labels" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    by = {(r["variant"], r["labels"]): r for r in table["rows"]}
    for variant in dict.fromkeys(r["variant"] for r in table["rows"]):
        cells = []
        for n in counts:
            r = by.get((variant, n))
            if r is None:
                cells.append("-")
            elif r["n_seeds"] == 1:
                cells.append(f"{r['mean']:.2f} (1 seed)")
            else:
                cells.append(f"{r['mean']:.2f} ± {r['std']:.2f} ({r['n_seeds']} seeds)")
        lines.append(f"| {variant} (this package) | {table['dataset']} | " + " | ".join(cells) + " |")
    for name, vals in table["paper"].items():
        lines.append(f"| {name} (Kingma et al. 2014, Table 1) | mnist (50k) | "
                     + " | ".join(f"{vals[n]:.2f}" if n in vals else "-" for n in counts) + " |")
    return "\n".join(lines) + "\n"
