"""The NumPy reference backend: the oracle for every fast backend.

Vectorized, in place, in the parameter's precision, with torch's order of
operations (``torch/optim/sgd.py`` and ``adam.py``, single-tensor path). One
scratch array per call; no per-element Python. NaN and Inf propagate
silently, as in torch (no RuntimeWarnings).
"""
from __future__ import annotations

import numpy as np

from ._scalars import DECAY_DECOUPLED, DECAY_L2, adam_scalars, sgd_scalars

name = "numpy"


_quiet = np.errstate(invalid="ignore", divide="ignore", over="ignore")


@_quiet
def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    d_p = grad * s.grad_scale if grad_scale != 1 else grad.copy()  # gradient clipping
    if maximize:
        np.negative(d_p, out=d_p)
    if s.has_weight_decay:
        d_p += s.weight_decay * param  # L2: weight decay goes into the gradient
    if s.has_momentum:
        if first_step:
            momentum_buffer[...] = d_p  # the first buffer is the gradient itself (no dampening)
        else:
            momentum_buffer *= s.momentum
            momentum_buffer += s.one_minus_dampening * d_p
        if nesterov:
            d_p += s.momentum * momentum_buffer
        else:
            d_p[...] = momentum_buffer
    d_p *= s.neg_lr
    param += d_p


@_quiet
def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    g = grad * s.grad_scale if grad_scale != 1 else grad  # gradient clipping
    if maximize:
        g = np.negative(g)
    if s.weight_decay_mode == DECAY_L2:
        g = g + s.weight_decay * param  # Adam: L2 regularization through the gradient
    elif s.weight_decay_mode == DECAY_DECOUPLED:
        param *= s.decay_factor  # AdamW: decay the weights themselves, before the moments
    # first moment: exp_avg.lerp_(g, 1 - beta1)
    scratch = np.subtract(g, exp_avg)
    if s.lerp_from_start:
        scratch *= s.lerp_weight
        exp_avg += scratch
    else:
        scratch *= s.lerp_complement
        np.subtract(g, scratch, out=exp_avg)
    # second moment: exp_avg_sq * beta2 + (1 - beta2) * g * g
    exp_avg_sq *= s.beta2
    np.multiply(s.one_minus_beta2, g, out=scratch)
    scratch *= g
    exp_avg_sq += scratch
    if amsgrad:  # keep the running max of the raw second moment (NaN propagates)
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    else:
        second_moment = exp_avg_sq
    # denom = sqrt(v) / sqrt(bias_correction2) + eps
    np.sqrt(second_moment, out=scratch)
    scratch /= s.bias_correction2_sqrt
    scratch += s.eps
    # param += (-step_size * exp_avg) / denom
    np.divide(s.neg_step_size * exp_avg, scratch, out=scratch)
    param += scratch


# gradient norms and clipping (clip.py's operations, see backends/__init__): _reduce_numpy.py
from ._reduce_numpy import all_finite, clamp_, norm_stats, scale_  # noqa: E402,F401
