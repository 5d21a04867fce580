"""The checked range or choice list of every config value, in one place.

A config section declares one rule per key next to its defaults (``config.py`` for the
data / train / optim sections, each model class's ``RULES`` beside its ``DEFAULTS``,
``nn.optim.RULES`` for the update rules' arguments). :func:`ift6266_vae.config.resolve`
applies them to config files, ``--set`` overrides and CLI flags alike, so a bad value
gets the same one-line error whichever way it came in::

    config key 'optim.learning_rate': must be > 0, got -0.1
"""

from __future__ import annotations

import math

from .errors import UserError


class Rule:
    """Checks one value; ``check(key, value)`` returns it or raises a one-line UserError."""

    optional = False

    def check(self, key: str, value):
        if value is None:
            if self.optional:
                return None
            raise UserError(f"config key '{key}': a value is required ({self.describe()}), got null")
        return self._check(key, value)

    def _fail(self, key: str, value, what: str):
        raise UserError(f"config key '{key}': {what}, got {value!r}")

    def describe(self) -> str:  # pragma: no cover - every rule overrides it
        raise NotImplementedError


class Int(Rule):
    def __init__(self, min: int | None = None, max: int | None = None, optional: bool = False, odd: bool = False):
        self.min, self.max, self.optional, self.odd = min, max, optional, odd

    def describe(self):
        parts = ["an integer"]
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        if self.odd:
            parts.append("odd")
        return " ".join(parts)

    def _check(self, key, value):
        bad = (not isinstance(value, int) or isinstance(value, bool)
               or (self.min is not None and value < self.min) or (self.max is not None and value > self.max)
               or (self.odd and value % 2 == 0))
        if bad:
            self._fail(key, value, f"must be {self.describe()}")
        return value


class Float(Rule):
    """A finite number; ``gt``/``ge``/``lt``/``le`` bound it (ints are accepted)."""

    def __init__(self, gt=None, ge=None, lt=None, le=None, optional: bool = False):
        self.gt, self.ge, self.lt, self.le, self.optional = gt, ge, lt, le, optional

    def describe(self):
        bounds = [f"{op} {v}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if v is not None]
        return "a number" + (" " + " and ".join(bounds) if bounds else "")

    def _check(self, key, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                  and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))
        if not ok:
            self._fail(key, value, f"must be {self.describe()}")
        return value


class Bool(Rule):
    def describe(self):
        return "true or false"

    def _check(self, key, value):
        if not isinstance(value, bool):
            self._fail(key, value, "must be true or false")
        return value


class Str(Rule):
    def __init__(self, optional: bool = False):
        self.optional = optional

    def describe(self):
        return "a string"

    def _check(self, key, value):
        if not isinstance(value, str) or not value:
            self._fail(key, value, "must be a non-empty string")
        return value


class Choice(Rule):
    def __init__(self, *choices, optional: bool = False):
        self.choices, self.optional = tuple(choices), optional

    def describe(self):
        return "one of " + ", ".join(map(str, self.choices))

    def _check(self, key, value):
        if not isinstance(value, str) or value not in self.choices:
            self._fail(key, value, f"must be {self.describe()}")
        return value


class ListOf(Rule):
    """A list whose every item passes ``item``; ``length`` fixes its length."""

    def __init__(self, item: Rule, length: int | None = None, min_length: int = 0, optional: bool = False):
        self.item, self.length, self.min_length, self.optional = item, length, min_length, optional

    def describe(self):
        n = f"{self.length} " if self.length is not None else ""
        return f"a list of {n}items, each {self.item.describe()}"

    def _check(self, key, value):
        if (not isinstance(value, list) or (self.length is not None and len(value) != self.length)
                or len(value) < self.min_length):
            self._fail(key, value, f"must be {self.describe()}")
        return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]


def check_section(section: str, values: dict, rules: dict) -> dict:
    """Every key of ``values`` checked by its rule (a key without a rule is a bug here)."""
    missing = sorted(set(values) - set(rules))
    if missing:
        raise KeyError(f"no rule for config keys {', '.join(f'{section}.{k}' for k in missing)}")
    return {k: rules[k].check(f"{section}.{k}" if section else k, v) for k, v in values.items()}
