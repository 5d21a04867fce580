"""The ``sweep`` command: a grid of runs over seeds and config values, run as one sweep
(:mod:`.sweep`), and the table of their final metrics.

``--set key=v1,v2`` gives a key its values (each read like a ``--set`` value: JSON, else
text; JSON lists stay whole: ``model.encoder=[64,32],[32,16]``); a key with one value
applies to every run. Each grid point has its folder, ``<key>=<value>+.../seed<S>``
(``seed<S>`` alone for no grid keys), so a sweep run again with ``reuse`` finds its runs.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from .. import config as config_mod
from ..errors import UserError
from ..io import write_json, write_text
from .sweep import Task, run_sweep

def parse_grid(items) -> dict[str, list]:
    """``--set key=v1,v2,...`` items as ``{key: [values]}``."""
    grid = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        try:
            values = json.loads(f"[{text}]")
        except ValueError:
            values = [config_mod.parse_value(v) for v in text.split(",")]
        if not sep or not key.strip() or not values:
            raise UserError(f"--set {item!r}: expected key.path=value[,value...], e.g. --set optim.learning_rate=0.1,0.01")
        grid[key.strip()] = values
    return grid


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _folder(value) -> str:
    return re.sub(r"[^\w.,=+-]", "_", _value(value))


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def grid_tasks(config_name: str, workdir, seeds=None, grid: dict | None = None) -> list[Task]:
    """One task per point of ``grid`` x ``seeds`` (default: the config's seed), each config
    checked (a bad key or value is a :class:`UserError` before anything runs)."""
    workdir, grid = Path(workdir), grid or {}
    if "seed" in grid:
        raise UserError("give the seeds with --seeds, not --set seed=...")
    base = config_mod.load(config_name)
    varied = [k for k, vs in grid.items() if len(vs) > 1]
    tasks = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        folder = "+".join(f"{k}={_folder(point[k])}" for k in varied)
        for seed in seeds or [base["seed"]]:
            cfg = config_mod.apply_overrides(base, {**point, "seed": seed}, keep_none=True)
            run_id = f"{folder}/seed{seed}" if folder else f"seed{seed}"
            cfg["name"] = f"{base['name']}-{run_id.replace('/', '-')}"
            tasks.append(Task(run_id, cfg, workdir / run_id))
    if len({t.run_dir for t in tasks}) < len(tasks):
        raise UserError("two grid points would share a run folder; give each --set key distinct values")
    return tasks


def run_grid(config_name: str, workdir, seeds=None, grid: dict | None = None, reuse: bool = False,
             scheduler: str | None = None, workers: int | None = None) -> dict:
    """Run the grid as one sweep and write ``table.json`` / ``table.md`` in ``workdir``."""
    tasks = grid_tasks(config_name, workdir, seeds, grid)
    varied = [k for k, vs in (grid or {}).items() if len(vs) > 1]
    results = run_sweep(tasks, reuse, scheduler, workers, desc=f"sweep of {config_name}")
    rows = []
    for t in tasks:
        rec, m = results[t.id], results[t.id]["metrics"] or {}
        rows.append({"run": t.id, "dir": str(t.run_dir), "seed": t.config["seed"],
                     "values": {k: _get(t.config, k) for k in varied},
                     "epochs": m.get("epochs_trained"), "test_elbo": (m.get("test") or {}).get("elbo"),
                     "test_error": m.get("test_error"), "error": rec["error"]})
    table = {"config": config_name, "keys": varied, "rows": rows}
    write_json(Path(workdir) / "table.json", table)
    write_text(Path(workdir) / "table.md", table_markdown(table))
    return table


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table_markdown(table: dict) -> str:
    """One row per run: its grid values and seed, epochs, test ELBO (nats), test error (%,
    when the model predicts labels), and ``finished`` or the run's error."""
    rows, keys = table["rows"], table["keys"]
    errors = any(r["test_error"] is not None for r in rows)
    failed = sum(r["error"] is not None for r in rows)
    head = [*keys, "seed", "epochs", "test ELBO", *(["test error (%)"] if errors else []), "status"]
    lines = [f"Sweep of config **{table['config']}**: {len(rows)} runs, {len(rows) - failed} finished, {failed} failed.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_value(r["values"][k]) for k in keys] + [str(r["seed"]), _fmt(r["epochs"], "d"),
                                                         _fmt(r["test_elbo"], ".2f")]
        if errors:
            cells.append(_fmt(None if r["test_error"] is None else 100 * r["test_error"], ".2f"))
        cells.append("finished" if r["error"] is None else r["error"].replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
