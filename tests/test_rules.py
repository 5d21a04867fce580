"""ift6266_vae.rules: every config key has a checked range or choice, one message format."""

from __future__ import annotations

import math

import pytest

from ift6266_vae import config, models
from ift6266_vae.errors import UserError
from ift6266_vae.nn import optim
from ift6266_vae.rules import Bool, Choice, Float, Int, ListOf, Str, check_section


@pytest.mark.parametrize("rule,good,bad", [
    (Int(min=1), [1, 7], [0, -1, 1.5, True, "3", None]),
    (Int(min=1, odd=True), [1, 3], [2, 4]),
    (Int(optional=True), [None, -3], ["a"]),
    (Float(gt=0), [0.1, 3], [0, -1, math.nan, math.inf, True, "1"]),
    (Float(ge=0, lt=1), [0, 0.9], [1, -0.01]),
    (Bool(), [True, False], [0, 1, "true", None]),
    (Str(), ["week9"], ["", 3]),
    (Choice("a", "b"), ["a"], ["c", None, 1]),
    (ListOf(Int(min=1), length=2), [[1, 2]], [[1], [1, 0], "12", (1, 2)]),
])
def test_rules_accept_and_refuse(rule, good, bad):
    for v in good:
        assert rule.check("k", v) == v
    for v in bad:
        with pytest.raises(UserError) as err:
            rule.check("section.k", v)
        msg = str(err.value)
        shown = "null" if v is None else repr(v)  # as JSON names it
        item = isinstance(v, list) and len(v) == 2  # a bad item is named by its index: section.k[1]
        assert msg.startswith("config key 'section.k[1]'" if item else "config key 'section.k'")
        assert msg.endswith(f"got {v[1]!r}" if item else f"got {shown}") and "\n" not in msg


def test_every_key_of_every_section_has_a_rule():
    for kind, entry in models.KINDS.items():
        assert set(entry.model.DEFAULTS) == set(entry.model.RULES), kind
        config.resolve({"model": {"kind": kind}})  # the defaults pass their own rules
    for name, rule in optim.OPTIMIZERS.items():
        cfg = config.resolve({"optim": {"name": name}})
        assert set(cfg["optim"]) <= set(config.RULES["optim"]) | set(optim.RULES), name
    assert set(config.DEFAULTS["train"]) == set(config.RULES["train"])
    assert set(config.DEFAULTS["data"]) == set(config.RULES["data"])
    for name in config.available():  # the shipped configs
        config.load(name)


def test_a_key_without_a_rule_is_a_programming_error():
    with pytest.raises(KeyError, match="model.new_key"):
        check_section("model", {"new_key": 1}, {})
