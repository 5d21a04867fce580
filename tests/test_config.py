"""Tests of ift6266_vae.config: the 2015 defaults, validation errors naming keys, overrides."""

from __future__ import annotations

import copy
import json

import pytest

from ift6266_vae import config, models
from ift6266_vae.nn import optim
from ift6266_vae.models.feedforward import DEFAULTS as FF_DEFAULTS
from ift6266_vae.errors import UserError
from helpers import BACKEND, TINY_NET as TINY


@pytest.fixture(scope="module")
def week9():
    return config.load("week9")


# ----------------------------------------------------------------------- shipped configs


def test_week9_has_the_2015_values(week9):
    c = week9
    assert c["name"] == "week9"
    assert c["seed"] == 1234
    assert c["train"]["batch_size"] == 1000
    assert c["train"]["epochs"] == 500
    assert c["train"]["time_budget_minutes"] == 8
    o = c["optim"]
    assert o["name"] == "rmsprop_nesterov"
    assert o["variant"] == "as_published"
    assert o["learning_rate"] == 0.1
    assert o["momentum"] == 0.9
    assert o["divide_lr_by_batch"] is True
    # the rule's own defaults are filled in
    assert (o["decay"], o["rescale"], o["epsilon"]) == (0.9, 5.0, 1e-4)
    assert c["model"] == FF_DEFAULTS
    m = c["model"]
    assert m["encoder"] == [512, 512, 256] and m["code_size"] == 384 and m["decoder"] == [256, 512, 512]
    assert m["encoder_activations"] == ["relu", "relu", "tanh"]
    assert m["decoder_activations"] == ["linear", "relu", "relu"]
    assert m["output_activation"] == "hard_tanh" and m["bn_formula"] == "2015"
    assert m["decoder_variance"] == 0.5 and m["init_range"] == 0.1
    assert set(c) == {"name", "seed", "data", "model", "optim", "train"}


def test_week9_sgd_config(week9):
    c = config.load("week9-sgd")
    assert c["name"] == "week9-sgd"
    assert c["optim"]["name"] == "sgd_nesterov"
    assert "variant" not in c["optim"]
    assert c["optim"]["learning_rate"] == 0.1 and c["optim"]["momentum"] == 0.9
    assert c["model"] == week9["model"] and c["train"] == week9["train"]


def test_available_lists_the_shipped_configs():
    assert {"week9", "week9-sgd"} <= set(config.available())


def test_load_returns_a_fresh_copy(week9):
    a = config.load("week9")
    a["model"]["encoder"].append(1)
    assert config.load("week9")["model"]["encoder"] == [512, 512, 256]
    assert FF_DEFAULTS["encoder"] == [512, 512, 256]


def test_empty_config_gets_the_defaults():
    c = config.resolve({})
    assert c["name"] == "custom" and c["seed"] == 1234
    assert c["model"] == FF_DEFAULTS
    assert c["optim"]["name"] == "rmsprop_nesterov" and c["optim"]["variant"] == "as_published"
    assert c["train"]["batch_size"] == 1000


def test_load_from_a_json_path(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"model": TINY, "train": {"batch_size": 8}}))
    c = config.load(str(p))
    assert c["name"] == "mine"
    assert c["model"]["encoder"] == [16, 8] and c["model"]["output_activation"] == "hard_tanh"
    assert c["train"]["batch_size"] == 8 and c["train"]["epochs"] == 500


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="week9") as e:
        config.load("week99")
    assert "week99" in str(e.value)
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        config.load(str(p))


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize("user,key", [
    ({"epochs": 3}, "'epochs'"),
    ({"train": {"epoch": 3}}, "'train.epoch'"),
    ({"data": {"nme": "mnist"}}, "'data.nme'"),
    ({"model": {"encoders": [3]}}, "'model.encoders'"),
    ({"optim": {"lr": 0.1}}, "'optim.lr'"),
])
def test_unknown_key_is_a_user_error_naming_it(user, key):
    with pytest.raises(UserError) as e:
        config.resolve(user)
    assert key in str(e.value)
    assert "valid keys" in str(e.value)


@pytest.mark.parametrize("user,key", [
    ({"seed": "1"}, "'seed'"),
    ({"name": 3}, "'name'"),
    ({"train": {"batch_size": "1000"}}, "'train.batch_size'"),
    ({"train": {"batch_size": 10.0}}, "'train.batch_size'"),
    ({"train": {"epochs": True}}, "'train.epochs'"),
    ({"train": {"progress": 1}}, "'train.progress'"),
    ({"model": {"encoder": 512}}, "'model.encoder'"),
    ({"model": {"bn_formula": 2015}}, "'model.bn_formula'"),
    ({"optim": {"learning_rate": "0.1"}}, "'optim.learning_rate'"),
    ({"optim": {"variant": 1}}, "'optim.variant'"),
    ({"train": 5}, "'train'"),
    ({"data": [1]}, "'data'"),
])
def test_wrong_type_is_a_user_error_naming_the_key(user, key):
    with pytest.raises(UserError) as e:
        config.resolve(user)
    assert key in str(e.value)


@pytest.mark.parametrize("user,key", [
    ({"model": "feedforward"}, "'model'"),
    ({"optim": "sgd_nesterov"}, "'optim'"),
])
def test_wrong_type_of_model_or_optim_section_is_a_user_error(user, key):
    """BUG (config.py, resolve): ``user.get("model", {}).get("kind", ...)`` (and the same for
    ``optim``) runs before ``_merge`` checks the section is a dict, so a non-object section
    raises AttributeError instead of the UserError the other sections give."""
    with pytest.raises(UserError) as e:
        config.resolve(user)
    assert key in str(e.value)


def test_numbers_accept_ints_for_floats_and_none_for_optional():
    c = config.resolve({"optim": {"learning_rate": 1}, "train": {"time_budget_minutes": 2.5},
                        "data": {"max_train_examples": 100}})
    assert c["optim"]["learning_rate"] == 1
    assert c["train"]["time_budget_minutes"] == 2.5
    assert c["data"]["max_train_examples"] == 100
    assert config.resolve({"train": {"time_budget_minutes": None}})["train"]["time_budget_minutes"] is None


@pytest.mark.parametrize("train", [{"batch_size": 0}, {"batch_size": -5}, {"epochs": -1}])
def test_bad_train_values(train):
    (key,) = train
    with pytest.raises(UserError, match=f"train.{key}"):
        config.resolve({"train": train})


def test_not_an_object():
    with pytest.raises(UserError, match="JSON object"):
        config.resolve([1, 2])


def test_unknown_model_kind_lists_valid():
    with pytest.raises(UserError, match="model.kind") as e:
        config.resolve({"model": {"kind": "no_such_kind"}})
    assert "no_such_kind" in str(e.value)
    for kind in models.KINDS:
        assert kind in str(e.value)


def test_unknown_optimizer_lists_valid():
    with pytest.raises(UserError, match="optim.name") as e:
        config.resolve({"optim": {"name": "lbfgs"}})
    assert "lbfgs" in str(e.value)
    for name in optim.OPTIMIZERS:
        assert name in str(e.value)


# ----------------------------------------------------------------------- optimizer-specific keys


def test_rmsprop_specific_keys_accepted():
    c = config.resolve({"optim": {"name": "rmsprop_nesterov", "variant": "corrected", "decay": 0.95,
                                  "rescale": 3.0, "epsilon": 1e-3}})
    o = c["optim"]
    assert (o["variant"], o["decay"], o["rescale"], o["epsilon"]) == ("corrected", 0.95, 3.0, 1e-3)


@pytest.mark.parametrize("key,value", [("variant", "corrected"), ("decay", 0.9), ("rescale", 5.0)])
def test_rmsprop_keys_rejected_for_sgd_nesterov(key, value):
    with pytest.raises(UserError) as e:
        config.resolve({"optim": {"name": "sgd_nesterov", key: value}})
    assert f"'optim.{key}'" in str(e.value)


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_resolved_optim_section_builds_a_train_step_for_every_optimizer(name):
    """Every optimizer that config validation accepts must be usable by training.

    ModelFunctions passes every optim key except name / learning_rate / divide_lr_by_batch
    to the update rule, so the resolved section may only hold keys the rule accepts.
    Only the symbolic graph is built here (train_step compiles lazily).

    BUG for ``sgd`` (config.py, resolve: ``odefaults = {**DEFAULTS["optim"], ...}``): the
    generic default ``momentum`` is merged into every optimizer's section, but ``optim.sgd``
    takes no ``momentum``, so a config with ``optim.name = "sgd"`` validates and then
    training fails with ``TypeError: sgd() got an unexpected keyword argument 'momentum'``.
    """
    from ift6266_vae.models.compiled import ModelFunctions

    cfg = config.resolve({"model": TINY, "optim": {"name": name}})
    extra = {k: v for k, v in cfg["optim"].items() if k not in ("name", "learning_rate", "divide_lr_by_batch")}
    optim.get_optimizer(name, **extra)  # ValueError names any key the rule does not take
    model = models.build(cfg["model"], seed=0)
    fns = ModelFunctions(model, BACKEND, optim_config=cfg["optim"], batch_size=4)
    assert len(fns.optimizer_state) >= (len(model.params) if name != "sgd" else 0)


# ----------------------------------------------------------------------- overrides


def test_apply_overrides_with_dotted_keys(week9):
    before = copy.deepcopy(week9)
    c = config.apply_overrides(week9, {"train.epochs": 3, "train.backend": "c", "seed": 9,
                                       "model.code_size": 8, "optim.variant": "corrected",
                                       "data.name": None})
    assert c["train"]["epochs"] == 3 and c["train"]["backend"] == "c"
    assert c["seed"] == 9 and c["model"]["code_size"] == 8 and c["optim"]["variant"] == "corrected"
    assert c["data"]["name"] == "auto"  # None means "not given"
    assert c["train"]["batch_size"] == 1000 and c["name"] == "week9"
    assert week9 == before  # the input is not modified


def test_apply_overrides_validates(week9):
    with pytest.raises(UserError, match="'train.epoch'"):
        config.apply_overrides(week9, {"train.epoch": 3})
    with pytest.raises(UserError, match="'train.epochs'"):
        config.apply_overrides(week9, {"train.epochs": "3"})
    with pytest.raises(UserError, match="'model.kind'"):
        config.apply_overrides(week9, {"model.kind": "no_such_kind"})


@pytest.mark.parametrize("key,value", [("optim.name", "sgd_nesterov"), ("model.kind", "conv")])
def test_apply_overrides_can_switch_optimizer_or_model_kind(week9, key, value):
    """BUG (config.py, apply_overrides / resolve): a *resolved* config carries every default
    key of its optimizer (``variant``, ``decay``, ``rescale``, ``epsilon`` for
    rmsprop_nesterov) and of its model kind (``encoder``, ... for feedforward); overriding
    ``optim.name`` or ``model.kind`` keeps them, and re-validation then rejects them
    (``config key 'optim.decay' does not exist``). Switching week9 to sgd_nesterov by
    override should give the sgd_nesterov section of week9-sgd; switching the model kind
    should give that kind's defaults."""
    c = config.apply_overrides(week9, {key: value})
    if key == "optim.name":
        assert c["optim"] == config.load("week9-sgd")["optim"]
    else:
        assert c["model"] == models.KINDS[value].model.DEFAULTS


@pytest.mark.parametrize("name", ["conv", "week10"])
def test_configs_differ_from_their_as_published_twin_only_in_the_named_optimizer_deviation(name):
    cfg, faithful = config.load(name), config.load(f"{name}-as-published")
    assert cfg["optim"]["variant"] == "corrected" and faithful["optim"]["variant"] == "as_published"
    for c in (cfg, faithful):
        c.pop("name")
        c["optim"].pop("variant")
    assert cfg == faithful


def test_conv_config_keeps_the_2015_learning_rate_and_batch():
    conv = config.load("conv")
    assert conv["optim"]["learning_rate"] == 0.01 and conv["train"]["batch_size"] == 128
