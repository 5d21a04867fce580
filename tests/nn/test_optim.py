"""Tests of ift6266_vae.optim against independent numpy implementations of the rules."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from ift6266_vae.nn import optim

MODE = pytensor.compile.mode.get_mode("CVM")
SHAPES = {"enc.W": (3, 2), "enc.b": (2,), "dec.s": ()}
RTOL, ATOL = 1e-5, 1e-6
N_STEPS = 6


# ----------------------------------------------------------------- numpy references


def ref_nesterov(p, m, g, lr, mu):
    """One Nesterov step in the Sutskever/Bengio form; returns (p_new, m_new)."""
    return p + mu * mu * m - (1.0 + mu) * lr * g, mu * m - lr * g


class RefRMSProp:
    """Rescaling RMSProp + Nesterov momentum, in float64 numpy."""

    def __init__(self, params, variant, lr, mu=0.9, decay=0.9, rescale=5.0, eps=1e-4):
        self.p = [np.asarray(x, dtype=np.float64).copy() for x in params]
        self.m = [np.zeros_like(x) for x in self.p]
        self.r = [np.zeros_like(x) for x in self.p]
        self.a = [np.zeros_like(x) for x in self.p]
        self.variant, self.lr, self.mu = variant, lr, mu
        self.decay, self.rescale, self.eps = decay, rescale, eps

    def effective_grads(self, grads):
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        with np.errstate(invalid="ignore", over="ignore"):
            total = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
        n = np.sqrt(total)
        if not np.isfinite(n):
            return [0.1 * p for p in self.p]
        factor = self.rescale / max(self.rescale, n)
        return [g * factor for g in grads]

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        d = self.decay
        for i, g in enumerate(self.effective_grads(grads)):
            self.r[i] = d * self.r[i] + (1 - d) * g**2
            self.a[i] = d * self.a[i] + (1 - d) * g
            rms = np.maximum(np.sqrt(self.r[i] - self.a[i] ** 2), self.eps)
            direction = g if self.variant == "as_published" else g / rms
            self.p[i], self.m[i] = ref_nesterov(self.p[i], self.m[i], direction, lr, self.mu)


# ----------------------------------------------------------------- helpers


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    values = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    params = [pytensor.shared(v.copy(), name=n) for n, v in values.items()]
    return params, [v.astype(np.float64) for v in values.values()]


def grad_inputs(params):
    return [pt.tensor(dtype="float32", shape=(None,) * p.ndim, name=f"g_{p.name}") for p in params]


def random_grads(rng, scale=1.0):
    return [(scale * rng.normal(size=s)).astype(np.float32) for s in SHAPES.values()]


def compile_with_grads(rule, params, **kwargs):
    gs = grad_inputs(params)
    updates = rule(gs, params, **kwargs)
    return pytensor.function(gs, [], updates=updates, mode=MODE), updates


def quadratic_loss(params, coefs):
    """sum_i 0.5 * sum(c_i * p_i**2); its gradient is c_i * p_i."""
    return pt.add(*[0.5 * pt.sum(np.float32(c) * pt.sqr(p)) for p, c in zip(params, coefs)])


def values(params):
    return [p.get_value() for p in params]


def assert_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------- sgd / sgd_nesterov


def test_sgd_nesterov_matches_numpy_random_grads():
    params, ref_p = make_params(1)
    f, updates = compile_with_grads(optim.sgd_nesterov, params, learning_rate=0.05, momentum=0.8)
    ref_m = [np.zeros_like(p) for p in ref_p]
    rng = np.random.default_rng(11)
    for _ in range(N_STEPS):
        grads = random_grads(rng)
        f(*grads)
        for i, g in enumerate(grads):
            ref_p[i], ref_m[i] = ref_nesterov(ref_p[i], ref_m[i], g.astype(np.float64), 0.05, 0.8)
    assert_close(values(params), ref_p)
    velocities = [v for v in updates if v.name.endswith(".velocity")]
    assert_close([v.get_value() for v in velocities], ref_m)


def test_sgd_nesterov_loss_input_quadratic_matches_numpy_and_grad_list():
    coefs = [0.5, 2.0, 1.5]
    params, ref_p = make_params(2)
    updates = optim.sgd_nesterov(quadratic_loss(params, coefs), params, learning_rate=0.1)
    f = pytensor.function([], [], updates=updates, mode=MODE)
    # same problem through the gradient-list input
    params2, _ = make_params(2)
    f2 = pytensor.function(
        [],
        [],
        updates=optim.sgd_nesterov(
            [np.float32(c) * p for p, c in zip(params2, coefs)], params2, 0.1
        ),
        mode=MODE,
    )
    ref_m = [np.zeros_like(p) for p in ref_p]
    for _ in range(N_STEPS):
        f()
        f2()
        for i, c in enumerate(coefs):
            ref_p[i], ref_m[i] = ref_nesterov(ref_p[i], ref_m[i], c * ref_p[i], 0.1, 0.9)
    assert_close(values(params), ref_p)
    assert_close(values(params2), ref_p)


def test_sgd_plain_matches_numpy():
    params, ref_p = make_params(3)
    f, updates = compile_with_grads(optim.sgd, params, learning_rate=0.3)
    assert optim.optimizer_state(updates) == []
    rng = np.random.default_rng(3)
    for _ in range(N_STEPS):
        grads = random_grads(rng)
        f(*grads)
        ref_p = [p - 0.3 * g for p, g in zip(ref_p, grads)]
    assert_close(values(params), ref_p)


def test_symbolic_learning_rate_float64_shared():
    # a float64 shared learning rate (a schedule) must not upcast the float32 updates
    lr = pytensor.shared(np.float64(0.1), name="lr")
    params, ref_p = make_params(4)
    f, _ = compile_with_grads(optim.sgd_nesterov, params, learning_rate=lr)
    ref_m = [np.zeros_like(p) for p in ref_p]
    rng = np.random.default_rng(4)
    for step in range(N_STEPS):
        lr.set_value(np.float64(0.1 / (1 + step)))
        grads = random_grads(rng)
        f(*grads)
        for i, g in enumerate(grads):
            ref_p[i], ref_m[i] = ref_nesterov(ref_p[i], ref_m[i], g, 0.1 / (1 + step), 0.9)
    assert_close(values(params), ref_p)


# ----------------------------------------------------------------- rmsprop_nesterov


@pytest.mark.parametrize("variant", optim.RMSPROP_VARIANTS)
def test_rmsprop_matches_numpy_random_grads(variant):
    params, ref_p = make_params(5)
    lr = pytensor.shared(np.float32(0.01), name="lr")
    f, updates = compile_with_grads(
        optim.rmsprop_nesterov, params, learning_rate=lr, variant=variant
    )
    ref = RefRMSProp(ref_p, variant, lr=0.01)
    rng = np.random.default_rng(55)
    # alternate gradient scales so the rescaling is active on some steps only
    for step, scale in enumerate([0.5, 300.0, 1.0, 50.0, 0.1, 1000.0, 2.0, 0.3]):
        lr.set_value(np.float32(0.01 * 0.9**step))
        grads = random_grads(rng, scale)
        f(*grads)
        ref.step(grads, lr=0.01 * 0.9**step)
    assert_close(values(params), ref.p)
    state = {v.name: v.get_value() for v in optim.optimizer_state(updates)}
    for i, name in enumerate(SHAPES):
        np.testing.assert_allclose(state[f"{name}.velocity"], ref.m[i], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(state[f"{name}.mean_square"], ref.r[i], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(state[f"{name}.mean"], ref.a[i], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("variant", optim.RMSPROP_VARIANTS)
def test_rmsprop_loss_input_quadratic_matches_numpy(variant):
    coefs = [0.5, 20.0, 3.0]  # the large coefficient makes early gradients rescaled
    params, ref_p = make_params(6)
    updates = optim.rmsprop_nesterov(
        quadratic_loss(params, coefs), params, learning_rate=0.02, variant=variant
    )
    f = pytensor.function([], [], updates=updates, mode=MODE)
    ref = RefRMSProp(ref_p, variant, lr=0.02)
    for _ in range(N_STEPS):
        f()
        ref.step([c * p for p, c in zip(ref.p, coefs)])
    assert_close(values(params), ref.p)


def test_rmsprop_variants_differ():
    results = {}
    for variant in optim.RMSPROP_VARIANTS:
        params, _ = make_params(7)
        f, _ = compile_with_grads(
            optim.rmsprop_nesterov, params, learning_rate=0.01, variant=variant
        )
        rng = np.random.default_rng(7)
        for _ in range(3):
            f(*random_grads(rng))
        results[variant] = values(params)
    assert not np.allclose(results["as_published"][0], results["corrected"][0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("variant", optim.RMSPROP_VARIANTS)
def test_rmsprop_non_finite_gradient_uses_decay_step(variant, bad):
    params, ref_p = make_params(8)
    lr, mu, d, eps = 0.05, 0.9, 0.9, 1e-4
    f, _ = compile_with_grads(optim.rmsprop_nesterov, params, learning_rate=lr, variant=variant)
    ref = RefRMSProp(ref_p, variant, lr=lr)
    rng = np.random.default_rng(8)
    for _ in range(2):  # build up non-zero state first
        grads = random_grads(rng)
        f(*grads)
        ref.step(grads)
    before = [p.copy() for p in ref.p]
    grads = random_grads(rng)
    grads[1][0] = bad  # one poisoned entry poisons the total norm
    f(*grads)
    # expected step, written out explicitly on g = 0.1 * p (not rescaled)
    for i, p in enumerate(before):
        g = 0.1 * p
        r = d * ref.r[i] + (1 - d) * g**2
        a = d * ref.a[i] + (1 - d) * g
        direction = g if variant == "as_published" else g / np.maximum(np.sqrt(r - a**2), eps)
        expected, _ = ref_nesterov(p, ref.m[i], direction, lr, mu)
        got = params[i].get_value()
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def _first_step_direction(params, grads, variant="as_published", lr=0.1, mu=0.9):
    """Effective gradient of a first (zero-velocity) step: p_new = p - (1+mu)*lr*g_eff."""
    before = values(params)
    f, _ = compile_with_grads(
        optim.rmsprop_nesterov, params, learning_rate=lr, momentum=mu, variant=variant
    )
    f(*grads)
    return [(b - a) / ((1 + mu) * lr) for b, a in zip(before, values(params))]


def test_rmsprop_rescaling_inactive_for_small_norm():
    params, _ = make_params(9)
    rng = np.random.default_rng(9)
    grads = random_grads(rng, 1.0)
    n = np.sqrt(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)))
    assert n < 5.0
    for got, g in zip(_first_step_direction(params, grads), grads):
        np.testing.assert_allclose(got, g, rtol=1e-4, atol=1e-5)


def test_rmsprop_rescaling_active_for_large_norm():
    params, _ = make_params(10)
    grads = [np.full(s, 5000.0 / np.sqrt(9.0), dtype=np.float32) for s in SHAPES.values()]
    # 9 entries -> total norm 5000 -> n = sqrt(5000) ~ 70.7 -> factor 5 / 70.7
    total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    np.testing.assert_allclose(total, 5000.0, rtol=1e-6)
    factor = 5.0 / np.sqrt(total)
    got = _first_step_direction(params, grads)
    for gd, g in zip(got, grads):
        # the same factor for every parameter: the norm is the total norm
        np.testing.assert_allclose(gd, g * factor, rtol=1e-4)
        assert np.all(np.abs(gd) < np.abs(g))


# ----------------------------------------------------------------- adam


def test_adam_first_step_by_hand():
    """One step from zero moments, worked by hand: m = 0.1 g, v = 0.001 g^2, the bias
    corrections give m_hat = g and v_hat = g^2, so p moves by lr * g / (|g| + eps)."""
    p = pytensor.shared(np.array([1.0, -2.0, 0.5], dtype=np.float32), name="w")
    g = pt.vector("g", dtype="float32")
    f = pytensor.function([g], [], updates=optim.adam([g], [p], learning_rate=0.1), mode=MODE)
    f(np.array([0.5, -4.0, 0.0], dtype=np.float32))
    # 1 - 0.1 * 0.5 / (0.5 + 1e-8); -2 - 0.1 * (-4) / (4 + 1e-8); a zero gradient does not move
    np.testing.assert_allclose(p.get_value(), [0.9, -1.9, 0.5], rtol=1e-6)


def test_adam_matches_the_reference_formula_over_steps():
    params, ref_p = make_params(21)
    f, updates = compile_with_grads(optim.adam, params, learning_rate=0.01, beta1=0.8, beta2=0.95, epsilon=1e-6)
    rng = np.random.default_rng(22)
    m = [np.zeros_like(q) for q in ref_p]
    v = [np.zeros_like(q) for q in ref_p]
    for t in range(1, N_STEPS + 1):
        gs = random_grads(rng)
        f(*gs)
        for i, g in enumerate(gs):
            m[i] = 0.8 * m[i] + 0.2 * g
            v[i] = 0.95 * v[i] + 0.05 * g.astype(np.float64) ** 2
            ref_p[i] = ref_p[i] - 0.01 * (m[i] / (1 - 0.8 ** t)) / (np.sqrt(v[i] / (1 - 0.95 ** t)) + 1e-6)
    assert_close(values(params), ref_p)
    state = {v.name: v for v in optim.optimizer_state(updates)}
    assert state["adam.t"].get_value() == N_STEPS
    assert sorted(state) == sorted(["adam.t"] + [f"{n}.{s}" for n in SHAPES for s in ("adam_m", "adam_v")])


# ----------------------------------------------------------------- state, registry, errors


@pytest.mark.parametrize(
    "rule, slots",
    [
        (optim.sgd_nesterov, ["velocity"]),
        (optim.rmsprop_nesterov, ["mean_square", "mean", "velocity"]),
    ],
)
def test_state_variables_named_tagged_zero_float32(rule, slots):
    params, _ = make_params(11)
    updates = rule(grad_inputs(params), params, learning_rate=0.1)
    state = optim.optimizer_state(updates)
    assert sorted(v.name for v in state) == sorted(f"{n}.{s}" for n in SHAPES for s in slots)
    by_name = {p.name: p for p in params}
    for v in state:
        assert v.tag.optimizer_state is True
        value = v.get_value()
        assert value.dtype == np.float32
        assert value.shape == by_name[v.name.rsplit(".", 1)[0]].get_value().shape
        assert not value.any()
    for p in params:
        assert p in updates
        assert not getattr(p.tag, "optimizer_state", False)
    assert set(updates) == set(params) | set(state)
    assert all(updates[v].dtype == "float32" for v in updates)


def test_get_optimizer_registry_and_partial():
    assert set(optim.OPTIMIZERS) >= {"sgd_nesterov", "rmsprop_nesterov"}
    assert optim.get_optimizer("sgd_nesterov").func is optim.sgd_nesterov
    rule = optim.get_optimizer("rmsprop_nesterov", variant="corrected", momentum=0.5)
    params, ref_p = make_params(12)
    f = pytensor.function(
        [], [], updates=rule([np.float32(2.0) * p for p in params], params, learning_rate=0.01),
        mode=MODE,
    )
    ref = RefRMSProp(ref_p, "corrected", lr=0.01, mu=0.5)
    for _ in range(N_STEPS):
        f()
        ref.step([2.0 * p for p in ref.p])
    assert_close(values(params), ref.p)


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match="rmsprop_nesterov.*sgd_nesterov"):
        optim.get_optimizer("lbfgs")
    with pytest.raises(ValueError, match="as_published, corrected"):
        optim.get_optimizer("rmsprop_nesterov", variant="fixed")
    with pytest.raises(ValueError, match="beta1"):
        optim.get_optimizer("sgd_nesterov", beta1=0.9)
    params, _ = make_params(13)
    with pytest.raises(ValueError, match="as_published, corrected"):
        optim.rmsprop_nesterov(grad_inputs(params), params, 0.1, variant="fixed")


def test_bad_inputs_raise_value_error():
    params, _ = make_params(14)
    with pytest.raises(ValueError, match="3 parameters"):
        optim.sgd_nesterov(grad_inputs(params)[:2], params, 0.1)
    with pytest.raises(ValueError, match="shared"):
        optim.sgd_nesterov(grad_inputs(params), [pt.vector("x")], 0.1)
    with pytest.raises(ValueError, match="scalar"):
        optim.sgd_nesterov(grad_inputs(params), params, pt.vector("lr"))
