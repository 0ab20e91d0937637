"""Numba CPU backend: fused ``@njit`` loops, one pass over memory per step.

Arrays are 1-D, contiguous, of one dtype (checked by the dispatcher). Arrays of
at least ``PARALLEL_MIN`` elements run in a ``prange`` loop over all threads;
smaller ones in a serial loop, which avoids waking the thread pool (measured
crossover, see benchmarks/). Flags are run-time arguments, so each loop is
compiled once per dtype, on first use.
"""
from __future__ import annotations

import numba
import numpy as np

from . import _math
from ._jit import njit_inline, serial_and_parallel
from ._scalars import adam_scalars, sgd_scalars

name = "numba"
PARALLEL_MIN = 32768

_sgd_update = njit_inline(_math.sgd_update)
_adam_update = njit_inline(_math.adam_update)


# Memory accesses that depend on a flag stop the loop from vectorizing, so each
# loop is split on the flags that decide which arrays are read and written;
# flags that only select arithmetic stay run-time arguments of the shared update.

def _sgd_loop(param, grad, buf, grad_scale, neg_lr, weight_decay, momentum, one_minus_dampening,
              has_weight_decay, has_momentum, first_step, nesterov, maximize):
    if has_momentum and not first_step:
        for i in numba.prange(param.shape[0]):
            param[i], buf[i] = _sgd_update(param[i], grad[i], buf[i], grad_scale, neg_lr, weight_decay,
                                           momentum, one_minus_dampening, has_weight_decay,
                                           True, False, nesterov, maximize)
    elif has_momentum:  # first step: the buffer is written, not read
        for i in numba.prange(param.shape[0]):
            param[i], buf[i] = _sgd_update(param[i], grad[i], param[i], grad_scale, neg_lr, weight_decay,
                                           momentum, one_minus_dampening, has_weight_decay,
                                           True, True, nesterov, maximize)
    else:
        for i in numba.prange(param.shape[0]):
            param[i], _ = _sgd_update(param[i], grad[i], param[i], grad_scale, neg_lr, weight_decay,
                                      momentum, one_minus_dampening, has_weight_decay,
                                      False, False, nesterov, maximize)


def _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, lerp_weight,
               lerp_complement, lerp_from_start, beta2, one_minus_beta2,
               bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
               weight_decay_mode, amsgrad, maximize):
    if amsgrad:
        for i in numba.prange(param.shape[0]):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = _adam_update(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale, lerp_weight,
                lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, True, maximize)
    else:
        for i in numba.prange(param.shape[0]):
            param[i], exp_avg[i], exp_avg_sq[i], _ = _adam_update(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], exp_avg_sq[i], grad_scale, lerp_weight,
                lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, False, maximize)


_sgd_serial, _sgd_parallel = serial_and_parallel(_sgd_loop)
_adam_serial, _adam_parallel = serial_and_parallel(_adam_loop)


def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    buf = param if momentum_buffer is None else momentum_buffer  # unused without momentum
    kernel = _sgd_parallel if param.shape[0] >= PARALLEL_MIN else _sgd_serial
    kernel(param, grad, buf, *s, bool(first_step), bool(nesterov), bool(maximize))


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    vmax = exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq  # unused without amsgrad
    kernel = _adam_parallel if param.shape[0] >= PARALLEL_MIN else _adam_serial
    kernel(param, grad, exp_avg, exp_avg_sq, vmax, *s, bool(amsgrad),
           bool(maximize))


def set_num_threads(n: int) -> None:
    numba.set_num_threads(n)


def threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"
