"""Gradient-based update rules (Lasagne style) for PyTensor.

Every rule is a small function ``rule(loss_or_grads, params, ...)`` returning a
:class:`collections.OrderedDict` that maps each shared variable -- the parameters *and*
the optimizer state the rule creates -- to its new symbolic value, ready to be passed as
``updates=`` to :func:`pytensor.function`.

``loss_or_grads`` is either a scalar loss (the gradients are then
``pytensor.grad(loss, params)``) or a list of gradient expressions, one per parameter.

Optimizer state (velocities, running averages) is stored in ``pytensor.shared`` zeros of
the parameter's dtype and shape (float32 for this package), named
``f"{param.name}.<slot>"`` (e.g. ``enc.dense1.W.velocity``) and tagged
``var.tag.optimizer_state = True`` so a checkpoint can find, save and restore it
(see :func:`optimizer_state`).

Learning rate and momentum may be python numbers or symbolic scalars (e.g. a shared
variable that a schedule changes between calls); either way they are cast to each
parameter's dtype, so a float32 model stays float32 even when
``pytensor.config.floatX`` is float64.

Rules
-----
``sgd``
    Plain gradient descent, ``p <- p - lr * g``.
``sgd_nesterov``
    SGD with Nesterov momentum in the Sutskever et al. (2013) / Bengio et al. (2013)
    reformulation (see :func:`sgd_nesterov`).
``rmsprop_nesterov``
    "Rescaling RMSProp with Nesterov momentum" of the 2015 project, with two variants:
    ``"as_published"`` (the 2015 behaviour) and ``"corrected"`` (the evidently intended
    rule); see :func:`rmsprop_nesterov`.
``adam``
    Adam (Kingma & Ba, 2015), the reference point of today's practice (not in 2015's code).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from ..rules import Choice, Float

log = logging.getLogger(__name__)

__all__ = [
    "OPTIMIZERS",
    "RMSPROP_VARIANTS",
    "adam",
    "get_optimizer",
    "optimizer_state",
    "rmsprop_nesterov",
    "sgd",
    "sgd_nesterov",
]

#: Variants of :func:`rmsprop_nesterov`.
RMSPROP_VARIANTS = ("as_published", "corrected")

ScalarLike = float | int | Variable


# --------------------------------------------------------------------------- helpers


def _as_scalar(value: ScalarLike, dtype: str, what: str) -> Variable:
    """Return ``value`` (python number or symbolic scalar) as a scalar of ``dtype``."""
    if isinstance(value, Variable):
        var = pt.as_tensor_variable(value)
        if var.ndim != 0:
            raise ValueError(f"{what} must be a scalar, got a {var.ndim}-d variable {var}")
        return var if var.dtype == dtype else pt.cast(var, dtype)
    return pt.constant(np.asarray(value, dtype=dtype))


def _check_params(params: Sequence[Variable]) -> list[SharedVariable]:
    params = list(params)
    if not params:
        raise ValueError("params is empty: an update rule needs at least one parameter")
    for p in params:
        if not isinstance(p, SharedVariable):
            raise ValueError(
                f"params must be pytensor shared variables; got {p!r} of type {type(p).__name__}"
            )
    return params


def _grads(loss_or_grads, params: list[SharedVariable]) -> list[Variable]:
    """Gradients of ``loss_or_grads`` w.r.t. ``params``, cast to each parameter's dtype."""
    if isinstance(loss_or_grads, (list, tuple)):
        grads = [pt.as_tensor_variable(g) for g in loss_or_grads]
        if len(grads) != len(params):
            raise ValueError(
                f"got {len(grads)} gradient expressions for {len(params)} parameters"
            )
    else:
        grads = pytensor.grad(loss_or_grads, params)
    out = []
    for p, g in zip(params, grads):
        if g.ndim != p.ndim:
            raise ValueError(
                f"gradient for {p.name!r} has {g.ndim} dimensions, the parameter {p.ndim}"
            )
        out.append(g if g.dtype == p.dtype else pt.cast(g, p.dtype))
    return out


def _state(param: SharedVariable, slot: str, index: int) -> SharedVariable:
    """A zero-initialised, named and tagged optimizer-state variable shaped like ``param``."""
    value = param.get_value(borrow=True)
    base = param.name if param.name else f"param{index}"
    if not param.name:
        log.warning("parameter %d has no name; its optimizer state is named %r", index, base)
    var = pytensor.shared(
        np.zeros(value.shape, dtype=value.dtype),
        name=f"{base}.{slot}",
        shape=param.type.shape,
    )
    var.tag.optimizer_state = True
    return var


def _nesterov(
    updates: OrderedDict,
    param: SharedVariable,
    step_grad: Variable,
    learning_rate: ScalarLike,
    momentum: ScalarLike,
    index: int,
) -> None:
    """Add the Nesterov-momentum updates of ``param`` along ``step_grad`` to ``updates``.

    Sutskever/Bengio reformulation, with ``m`` the *old* velocity (starts at 0)::

        m_new = mu * m - lr * g
        p_new = p + mu * mu * m - (1 + mu) * lr * g
    """
    dtype = param.dtype
    lr = _as_scalar(learning_rate, dtype, "learning_rate")
    mu = _as_scalar(momentum, dtype, "momentum")
    one = pt.constant(np.asarray(1.0, dtype=dtype))
    velocity = _state(param, "velocity", index)
    lr_g = lr * step_grad
    updates[velocity] = mu * velocity - lr_g
    updates[param] = param + mu * mu * velocity - (one + mu) * lr_g


# --------------------------------------------------------------------------- rules


def sgd(loss_or_grads, params: Sequence[SharedVariable], learning_rate: ScalarLike) -> OrderedDict:
    """Plain stochastic gradient descent: ``p_new = p - lr * g``. No state."""
    params = _check_params(params)
    grads = _grads(loss_or_grads, params)
    updates: OrderedDict = OrderedDict()
    for p, g in zip(params, grads):
        updates[p] = p - _as_scalar(learning_rate, p.dtype, "learning_rate") * g
    return updates


def sgd_nesterov(
    loss_or_grads,
    params: Sequence[SharedVariable],
    learning_rate: ScalarLike,
    momentum: ScalarLike = 0.9,
) -> OrderedDict:
    """SGD with Nesterov momentum (Sutskever/Bengio reformulation), as in the 2015 code.

    For each parameter ``p`` with gradient ``g`` and velocity ``m`` (state
    ``f"{p.name}.velocity"``, starts at 0)::

        m_new = mu * m - lr * g
        p_new = p + mu * mu * m - (1 + mu) * lr * g      # m is the OLD velocity

    Returns an ``OrderedDict`` with the updates of the parameters and of the velocities.
    """
    params = _check_params(params)
    grads = _grads(loss_or_grads, params)
    updates: OrderedDict = OrderedDict()
    for i, (p, g) in enumerate(zip(params, grads)):
        _nesterov(updates, p, g, learning_rate, momentum, i)
    return updates


def _check_variant(variant: str) -> None:
    if variant not in RMSPROP_VARIANTS:
        raise ValueError(
            f"unknown rmsprop_nesterov variant {variant!r}; valid variants: "
            + ", ".join(RMSPROP_VARIANTS)
        )


def rmsprop_nesterov(
    loss_or_grads,
    params: Sequence[SharedVariable],
    learning_rate: ScalarLike,
    momentum: ScalarLike = 0.9,
    decay: float = 0.9,
    rescale: float = 5.0,
    epsilon: float = 1e-4,
    variant: str = "as_published",
) -> OrderedDict:
    """Rescaling RMSProp with Nesterov momentum (the 2015 project's default optimizer).

    1. **Rescaling.** With ``n = sqrt(sum over all params of sum(g**2))`` the total
       gradient norm, the 2015 code then takes ``n = sqrt(n)`` (sic: the square root of
       the norm, kept as published) and multiplies every gradient by
       ``rescale / max(rescale, n)``; gradients are left untouched while ``n <= rescale``.
    2. **Non-finite guard.** If ``n`` is NaN or inf, every gradient is replaced by
       ``0.1 * param`` (a small weight decay step instead of a poisoned update); the
       replacement is not rescaled.
    3. **Running averages** (state ``f"{p.name}.mean_square"`` and ``f"{p.name}.mean"``,
       both start at 0), with ``g`` the gradient after steps 1-2::

           r_new = decay * r + (1 - decay) * g**2
           a_new = decay * a + (1 - decay) * g
           rms   = max(sqrt(r_new - a_new**2), epsilon)

       ``r_new - a_new**2`` is mathematically non-negative; it is clamped at 0 before
       the square root so float rounding cannot produce NaN (identical otherwise).
    4. **Step**: the Nesterov-momentum step of :func:`sgd_nesterov` (same helper,
       velocity state ``f"{p.name}.velocity"``) along

       * ``variant="as_published"`` (default; **the 2015 behaviour**): the rescaled raw
         gradient ``g``. ``rms`` is computed but *not used*, so the rule is in effect
         norm-rescaled Nesterov SGD; the running averages are still updated because they
         are state (and a checkpoint of either variant has the same variables).
       * ``variant="corrected"`` (**deviation from the 2015 code**, the evidently
         intended rule): ``g / rms``.

    Returns an ``OrderedDict`` updating the parameters, the velocities and both running
    averages.
    """
    _check_variant(variant)
    params = _check_params(params)
    grads = _grads(loss_or_grads, params)

    # Norm in the widest parameter dtype (float32 for this package).
    norm_dtype = pytensor.scalar.upcast(*[p.dtype for p in params])
    sq_sum = pt.add(*[pt.sum(pt.sqr(pt.cast(g, norm_dtype))) for g in grads])
    norm = pt.sqrt(pt.sqrt(sq_sum))  # sqrt of the total norm, as published
    not_finite = pt.or_(pt.isnan(norm), pt.isinf(norm))
    rescale_c = pt.constant(np.asarray(rescale, dtype=norm_dtype))
    scale = rescale_c / pt.maximum(rescale_c, norm)

    updates: OrderedDict = OrderedDict()
    for i, (p, g) in enumerate(zip(params, grads)):
        dtype = p.dtype

        def c(x, dtype=dtype):
            return pt.constant(np.asarray(x, dtype=dtype))

        g = pt.switch(not_finite, c(0.1) * p, g * pt.cast(scale, dtype))

        mean_square = _state(p, "mean_square", i)
        mean = _state(p, "mean", i)
        r_new = c(decay) * mean_square + c(1.0 - decay) * pt.sqr(g)
        a_new = c(decay) * mean + c(1.0 - decay) * g
        updates[mean_square] = r_new
        updates[mean] = a_new
        rms = pt.maximum(pt.sqrt(pt.maximum(r_new - pt.sqr(a_new), c(0.0))), c(epsilon))

        step_grad = g if variant == "as_published" else g / rms
        _nesterov(updates, p, step_grad, learning_rate, momentum, i)
    return updates


def adam(
    loss_or_grads,
    params: Sequence[SharedVariable],
    learning_rate: ScalarLike = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
) -> OrderedDict:
    """Adam (Kingma & Ba, 2015, Algorithm 1), a modern reference point, not a 2015 rule.

    With ``t`` the number of updates so far (state ``adam.t``, starts at 0) and, per
    parameter, the first and second moment estimates ``m`` and ``v`` (states
    ``f"{p.name}.adam_m"`` and ``f"{p.name}.adam_v"``, start at 0)::

        t_new = t + 1
        m_new = beta1 * m + (1 - beta1) * g
        v_new = beta2 * v + (1 - beta2) * g**2
        p_new = p - lr * (m_new / (1 - beta1**t_new)) / (sqrt(v_new / (1 - beta2**t_new)) + epsilon)
    """
    params = _check_params(params)
    grads = _grads(loss_or_grads, params)
    updates: OrderedDict = OrderedDict()
    dtype = pytensor.scalar.upcast(*[p.dtype for p in params])
    t = pytensor.shared(np.asarray(0.0, dtype=dtype), name="adam.t")
    t.tag.optimizer_state = True
    t_new = t + np.asarray(1.0, dtype=dtype)
    updates[t] = t_new
    for i, (p, g) in enumerate(zip(params, grads)):
        def c(x, dtype=p.dtype):
            return pt.constant(np.asarray(x, dtype=dtype))

        m, v = _state(p, "adam_m", i), _state(p, "adam_v", i)
        m_new = c(beta1) * m + c(1.0 - beta1) * g
        v_new = c(beta2) * v + c(1.0 - beta2) * pt.sqr(g)
        tt = pt.cast(t_new, p.dtype)
        m_hat = m_new / (c(1.0) - c(beta1) ** tt)
        v_hat = v_new / (c(1.0) - c(beta2) ** tt)
        updates[m], updates[v] = m_new, v_new
        updates[p] = p - _as_scalar(learning_rate, p.dtype, "learning_rate") * m_hat / (pt.sqrt(v_hat) + c(epsilon))
    return updates


# --------------------------------------------------------------------------- registry

#: Name -> update rule.
OPTIMIZERS: dict[str, Callable[..., OrderedDict]] = {
    "sgd": sgd,
    "sgd_nesterov": sgd_nesterov,
    "rmsprop_nesterov": rmsprop_nesterov,
    "adam": adam,
}


#: The checked range of every keyword argument of the rules above, by name (a config's
#: ``optim`` section is validated with these).
RULES = {
    "momentum": Float(ge=0, lt=1),
    "decay": Float(ge=0, lt=1),
    "rescale": Float(gt=0),
    "epsilon": Float(gt=0),
    "variant": Choice(*RMSPROP_VARIANTS),
    "beta1": Float(ge=0, lt=1),
    "beta2": Float(ge=0, lt=1),
}


def get_optimizer(name: str, **kwargs) -> Callable[..., OrderedDict]:
    """Return the update rule ``name`` with ``kwargs`` bound (a :func:`functools.partial`).

    Call the result as ``rule(loss_or_grads, params, ...)``; e.g.
    ``get_optimizer("rmsprop_nesterov", variant="corrected")(loss, params,
    learning_rate=lr)``. Unknown names, unknown keyword arguments and unknown
    ``variant`` values raise :class:`ValueError` here, before any graph is built.
    """
    try:
        rule = OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown optimizer {name!r}; valid optimizers: " + ", ".join(sorted(OPTIMIZERS))
        ) from None
    sig = inspect.signature(rule)
    bad = [k for k in kwargs if k not in sig.parameters or k in ("loss_or_grads", "params")]
    if bad:
        valid = [k for k in sig.parameters if k not in ("loss_or_grads", "params")]
        raise ValueError(
            f"optimizer {name!r} got unknown argument(s) {', '.join(bad)}; "
            f"valid: {', '.join(valid)}"
        )
    if "variant" in kwargs:
        _check_variant(kwargs["variant"])
    return functools.partial(rule, **kwargs)


def optimizer_state(updates) -> list[SharedVariable]:
    """The optimizer-state shared variables (tagged ``optimizer_state``) among ``updates``' keys.

    A checkpoint saves and restores these together with the parameters.
    """
    return [v for v in updates if getattr(v.tag, "optimizer_state", False)]
