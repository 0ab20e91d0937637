"""Numba CPU backend: fused ``@njit`` loops, one pass over memory per step.

Arrays are 1-D, contiguous, of one dtype (checked by the dispatcher). How a call
runs is fastoptim's thread policy (``_threads.mode``): below ``PARALLEL_MIN``
elements a serial loop on the calling thread (no wake-up); for working sets that
fit in the last-level cache, and beyond it where ``_threads.PREFETCH_LOOP`` is off,
fastoptim's pool (``_pool.py``: the C pool runs the serial range kernel in chunks; one
block per OpenMP thread without the C build); above, where it is on, the chunked
``prange`` loop that prefetches ahead (``_jit.kernel_pair``).
Flags are run-time arguments, so each loop is compiled once per dtype, on first use.
"""
from __future__ import annotations

import numba

from .._parallel import serial_only
from . import _math, _pool, _threads
from ._jit import KernelPair, kernel_pair, njit_serial
from ._scalars import adam_scalars, lion_scalars, sgd_scalars

name = "numba"

# The per-element updates are ordinary jitted functions, not inlined into the
# loops at the Numba IR level: LLVM still inlines and vectorizes them, and one
# compiled update serves the serial and the parallel kernel, which halves the
# cold compile time (measured: 0.74 s vs 1.38 s for the parallel Adam loop).
# Each is compiled under a name carrying the digest of its code and constants (_jit).
_sgd_update = njit_serial(_math.sgd_update)
_adam_update = njit_serial(_math.adam_update)
_lion_update = njit_serial(_math.lion_update)


# Range kernels (see _jit.py): kernel(lo, hi, *arrays, *scalars), each looping over its
# arrays' [lo:hi] slices from 0 (an index that starts at 0 keeps the loop vectorized).
# Each element's state is stored before its parameter, as the C loop stores them: Numba
# cannot prove the arrays distinct, so LLVM keeps the stores in this order, and with the
# parameter stored first the loop ran 1.3-1.4x slower than C's on the same arrays in the
# benchmark's process (16M Adam on the pool, AMD EPYC; with the state first, 1.0-1.2x),
# while the two orders time the same in a fresh process.
# Memory accesses that depend on a flag stop a loop from vectorizing, so there is
# one kernel per set of arrays read and written (momentum or not, AMSGrad or not);
# flags that only select arithmetic stay run-time arguments of the shared update.
# A step compiles only the kernel it runs, and every later step of the same
# optimizer runs that same kernel (nothing new compiles on step 2).

def _sgd(lo, hi, param, grad, grad_scale, neg_lr, weight_decay, momentum, one_minus_dampening,
         has_weight_decay, has_momentum, nesterov, maximize):
    param, grad = param[lo:hi], grad[lo:hi]
    for i in range(param.shape[0]):
        param[i], _ = _sgd_update(param[i], grad[i], param[i], grad_scale, neg_lr, weight_decay,
                                  momentum, one_minus_dampening, has_weight_decay,
                                  False, False, nesterov, maximize)


def _sgd_momentum(lo, hi, param, grad, buf, grad_scale, neg_lr, weight_decay, momentum,
                  one_minus_dampening, has_weight_decay, has_momentum, first_step, nesterov,
                  maximize):
    # On the first step the buffer is uninitialised: it is loaded (a loop-invariant
    # select keeps the loop vectorized) but its value is never used.
    param, grad, buf = param[lo:hi], grad[lo:hi], buf[lo:hi]
    for i in range(param.shape[0]):
        p, b = _sgd_update(param[i], grad[i], buf[i], grad_scale, neg_lr, weight_decay,
                           momentum, one_minus_dampening, has_weight_decay, True, first_step,
                           nesterov, maximize)
        buf[i] = b  # the state first, the parameter last: see the note above
        param[i] = p


def _adam(lo, hi, param, grad, exp_avg, exp_avg_sq, grad_scale, lerp_weight, lerp_complement,
          lerp_from_start, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size,
          weight_decay, decay_factor, weight_decay_mode, maximize):
    param, grad, exp_avg, exp_avg_sq = (param[lo:hi], grad[lo:hi], exp_avg[lo:hi],
                                        exp_avg_sq[lo:hi])
    for i in range(param.shape[0]):
        p, m, v, _ = _adam_update(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], exp_avg_sq[i], grad_scale, lerp_weight,
            lerp_complement, lerp_from_start, beta2, one_minus_beta2,
            bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
            weight_decay_mode, False, maximize)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p


def _amsgrad(lo, hi, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, lerp_weight,
             lerp_complement, lerp_from_start, beta2, one_minus_beta2, bias_correction2_sqrt,
             eps, neg_step_size, weight_decay, decay_factor, weight_decay_mode, maximize):
    param, grad, exp_avg = param[lo:hi], grad[lo:hi], exp_avg[lo:hi]
    exp_avg_sq, max_exp_avg_sq = exp_avg_sq[lo:hi], max_exp_avg_sq[lo:hi]
    for i in range(param.shape[0]):
        p, m, v, vmax = _adam_update(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale, lerp_weight,
            lerp_complement, lerp_from_start, beta2, one_minus_beta2,
            bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
            weight_decay_mode, True, maximize)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        max_exp_avg_sq[i] = vmax
        param[i] = p


def _lion(lo, hi, param, grad, exp_avg, grad_scale, neg_lr, beta1, one_minus_beta1, beta2,
          one_minus_beta2, decay_factor, has_weight_decay, maximize):
    param, grad, exp_avg = param[lo:hi], grad[lo:hi], exp_avg[lo:hi]
    for i in range(param.shape[0]):
        p, m = _lion_update(param[i], grad[i], exp_avg[i], grad_scale, neg_lr, beta1,
                            one_minus_beta1, beta2, one_minus_beta2, decay_factor,
                            has_weight_decay, maximize)
        exp_avg[i] = m
        param[i] = p


_SGD = kernel_pair(_sgd)
_SGD_MOMENTUM = kernel_pair(_sgd_momentum)
_ADAM = kernel_pair(_adam)
_AMSGRAD = kernel_pair(_amsgrad)
_LION = kernel_pair(_lion)


_threads_now = [numba.config.NUMBA_NUM_THREADS]  # what numba.set_num_threads last got


def set_threads(n: int) -> None:
    numba.set_num_threads(n)
    _threads_now[0] = n


def run(kernel: KernelPair, arrays: tuple, scalars: tuple) -> None:
    """Run ``kernel`` over ``arrays`` (1-D, contiguous, one dtype, one length) as the
    thread policy says: serial, one block per thread, or the chunked prefetching loop."""
    n = arrays[0].shape[0]
    if n < _threads.PARALLEL_MIN or serial_only():  # serial in a forked child
        kernel.run_serial(arrays, scalars)
        return
    threads = _threads.parallel_threads()
    if threads == 1:
        kernel.run_serial(arrays, scalars)
        return
    if threads != _threads_now[0]:  # an OpenMP limit (threadpoolctl) changed it
        set_threads(threads)
    if _threads.mode(n, arrays[0].itemsize * len(arrays)) == _threads.BLOCKED:  # the pool
        _pool.run_in_cache(kernel, arrays, scalars, threads)
    else:
        kernel.run_parallel(arrays, scalars)


def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    if momentum_buffer is None:
        run(_SGD, (param, grad), (*s, bool(nesterov), bool(maximize)))
    else:
        run(_SGD_MOMENTUM, (param, grad, momentum_buffer),
            (*s, bool(first_step), bool(nesterov), bool(maximize)))


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    if amsgrad:
        run(_AMSGRAD, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), (*s, bool(maximize)))
    else:
        run(_ADAM, (param, grad, exp_avg, exp_avg_sq), (*s, bool(maximize)))


def lion(param, grad, exp_avg, *, lr, beta1, beta2, weight_decay, maximize, grad_scale=1.0):
    s = lion_scalars(param.dtype, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                     grad_scale=grad_scale)
    run(_LION, (param, grad, exp_avg), (*s, bool(maximize)))


def set_num_threads(n: int) -> None:
    """Prefer ``fastoptim.set_num_threads``, which sets every backend."""
    set_threads(n)


def threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


# gradient norms and clipping (clip.py's operations, see backends/__init__): _reduce_numba.py
from ._reduce_numba import all_finite, clamp_, norm_stats, scale_  # noqa: E402,F401
