"""Per-step scalars, computed once per call and rounded to the parameter's precision.

The kernels' argument order is defined here, once: every kernel, in every
language, takes its arrays, then the fields of ``SGDScalars`` / ``AdamScalars``
in field order, then the run-time flags ``SGD_FLAGS`` / ``ADAM_FLAGS`` in that
order (minus any flag a kernel fixes by being the variant it is), so the
backends can pass ``*scalars, *flags`` positionally. tests/test_abi.py pins the
Numba, C (headers and definitions) and CUDA signatures to these definitions.

torch evaluates ``1 - beta1``, ``lr / bias_correction1`` and friends in Python
(double precision) and each tensor op then rounds its scalar to the tensor's
dtype. Every backend calls these helpers so that all of them round the same
way, and none of them recomputes a loop invariant per element.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ._constants import DECAY_DECOUPLED, DECAY_L2, DECAY_NONE


class SGDScalars(NamedTuple):
    grad_scale: np.floating  # gradients are multiplied by this first (gradient clipping; 1 = off)
    neg_lr: np.floating  # -lr: the update is param + (-lr) * d_p
    weight_decay: np.floating  # L2 coefficient added to the gradient
    momentum: np.floating
    one_minus_dampening: np.floating
    has_weight_decay: bool
    has_momentum: bool


class AdamScalars(NamedTuple):
    grad_scale: np.floating  # gradients are multiplied by this first (gradient clipping; 1 = off)
    lerp_weight: np.floating  # 1 - beta1: torch updates exp_avg with lerp(exp_avg, grad, 1 - beta1)
    lerp_complement: np.floating  # 1 - (1 - beta1), used when lerp starts from the far end
    lerp_from_start: bool  # torch's lerp: weight < 0.5 -> start + w * (end - start)
    beta2: np.floating
    one_minus_beta2: np.floating
    bias_correction2_sqrt: np.floating  # sqrt(1 - beta2 ** step)
    eps: np.floating
    neg_step_size: np.floating  # -lr / (1 - beta1 ** step)
    weight_decay: np.floating
    decay_factor: np.floating  # 1 - lr * weight_decay (AdamW's decoupled decay)
    weight_decay_mode: int  # DECAY_NONE, DECAY_L2 or DECAY_DECOUPLED


# The run-time flags that follow the scalars in every kernel's arguments, in order.
SGD_FLAGS = ("first_step", "nesterov", "maximize")
ADAM_FLAGS = ("amsgrad", "maximize")


# Cached: a step over many tensors asks for the same scalars once per tensor.
# typed: an array lr arrives as a NumPy scalar (np.float32(0.5) == 0.5), and must
# not share an entry with the Python float, whose arithmetic is in double.
@functools.lru_cache(maxsize=1024, typed=True)
@np.errstate(over="ignore", invalid="ignore")  # a huge lr gives inf, silently, as in torch
def sgd_scalars(dtype, *, lr, momentum, dampening, weight_decay, grad_scale=1.0) -> SGDScalars:
    t = np.dtype(dtype).type
    return SGDScalars(
        grad_scale=t(grad_scale),
        neg_lr=t(-lr),
        weight_decay=t(weight_decay),
        momentum=t(momentum),
        one_minus_dampening=t(1 - dampening),
        has_weight_decay=weight_decay != 0,
        has_momentum=momentum != 0,
    )


@np.errstate(over="ignore", invalid="ignore")  # a huge lr gives inf, silently, as in torch
def _adam_scalars_exact(
    dtype, *, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, grad_scale=1.0
) -> AdamScalars:
    t = np.dtype(dtype).type
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    lerp_weight = t(1 - beta1)
    if weight_decay == 0:
        mode = DECAY_NONE
    else:
        mode = DECAY_DECOUPLED if decoupled_weight_decay else DECAY_L2
    return AdamScalars(
        grad_scale=t(grad_scale),
        lerp_weight=lerp_weight,
        lerp_complement=t(1) - lerp_weight,
        lerp_from_start=bool(abs(float(lerp_weight)) < 0.5),
        beta2=t(beta2),
        one_minus_beta2=t(1 - beta2),
        bias_correction2_sqrt=t(bias_correction2**0.5),  # ** 0.5 as torch, not math.sqrt
        eps=t(eps),
        neg_step_size=t(-(lr / bias_correction1)),
        weight_decay=t(weight_decay),
        decay_factor=t(1 - lr * weight_decay),
        weight_decay_mode=mode,
    )


_FINITE_MAX = {np.dtype(np.float32): float(np.finfo(np.float32).max),
               np.dtype(np.float64): float(np.finfo(np.float64).max)}


@functools.lru_cache(maxsize=1024, typed=True)
def _adam_fixed(dtype, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, grad_scale):
    """Adam's scalars at step 1, and what the two step-dependent ones are made from:
    (scalars, dtype's type, largest finite value of the dtype, or None when the
    inputs are not all Python numbers and every step takes the exact path)."""
    scalars = _adam_scalars_exact(dtype, step=1, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                  weight_decay=weight_decay,
                                  decoupled_weight_decay=decoupled_weight_decay,
                                  grad_scale=grad_scale)
    plain = all(type(x) in (float, int) for x in (lr, beta1, beta2))
    dtype = np.dtype(dtype)
    return scalars, dtype.type, _FINITE_MAX.get(dtype) if plain else None


def adam_scalars(
    dtype, *, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, grad_scale=1.0
) -> AdamScalars:
    """Adam's per-step scalars (see :class:`AdamScalars`), rounded as torch rounds them.

    Called once per step and group, with a new ``step`` each time: the scalars that do
    not depend on the step are cached, and the two that do (the bias corrections) are
    computed here in plain Python arithmetic, the same expressions as
    ``_adam_scalars_exact`` (which a test compares with this, and which handles the
    rare inputs: array hyperparameters, results outside the dtype's range)."""
    scalars, t, finite_max = _adam_fixed(dtype, lr, beta1, beta2, eps, weight_decay,
                                         decoupled_weight_decay, grad_scale)
    if finite_max is not None and type(step) in (float, int):
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        if bias_correction1 != 0:
            neg_step_size = -(lr / bias_correction1)
            if -finite_max <= neg_step_size <= finite_max:  # no overflow in the cast (nor NaN)
                return AdamScalars(scalars[0], scalars[1], scalars[2], scalars[3], scalars[4],
                                   scalars[5], t(bias_correction2**0.5), scalars[7],
                                   t(neg_step_size), scalars[9], scalars[10], scalars[11])
    return _adam_scalars_exact(dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                               weight_decay=weight_decay,
                               decoupled_weight_decay=decoupled_weight_decay,
                               grad_scale=grad_scale)
