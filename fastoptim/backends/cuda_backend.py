"""CUDA backend: one fused ``@cuda.jit`` kernel per optimizer, one pass over memory.

The per-element math is ``_math.sgd_update`` / ``_math.adam_update``, the very
functions the Numba CPU backend compiles, here compiled as CUDA device
functions: the CPU and GPU backends cannot drift apart. Kernels are grid-stride
loops over 1-D contiguous device arrays, compiled once per dtype (float32,
float64) on first use (and cached on disk); every flag is a run-time argument.
As on the CPU, the loop is split on the flags that decide which arrays are
read and written (momentum, first step, amsgrad).

No host-device synchronization happens inside a step: the per-step scalars
(bias corrections, ...) come from ``_scalars`` on the host and travel as kernel
arguments; the step counter stays on the host. The launch configuration
``kernel[blocks, threads, stream]`` is built once per (size bucket, stream) and
cached (``fastoptim._cuda.configured``).

Streams
-------
Every launch (and fastoptim's own fills and copies) goes to the stream in
effect, by default the CUDA default stream (legacy stream 0: torch's default
stream and CuPy's null stream, so work queued there by either is ordered
before the step without any synchronization). To use another stream::

    from fastoptim.backends import cuda_backend
    cuda_backend.set_stream(s)          # from now on (None: back to the default)
    with cuda_backend.use_stream(s):    # inside the block only (this thread / task)
        opt.step(grads)

``s`` may be a ``numba.cuda.stream()``, a ``torch.cuda.Stream``, a
``cupy.cuda.Stream`` or a raw ``cudaStream_t`` (int). The caller orders work
across streams (for example, gradients computed on another stream must be
finished, or that stream made the current one here, before ``step``).
"""
from __future__ import annotations

import numpy as np

from .. import _cuda
from . import _math
from ._scalars import adam_scalars, sgd_scalars

if _cuda.cuda is None:  # the registry reports this backend as unavailable
    raise ImportError(_cuda.why_unavailable())

cuda = _cuda.cuda
name = "cuda"

set_stream = _cuda.set_stream
get_stream = _cuda.get_stream
use_stream = _cuda.use_stream


def usable() -> bool:
    return _cuda.is_available()


def why_unusable() -> str:
    return _cuda.why_unavailable()


_sgd_update = cuda.jit(device=True, inline=True)(_math.sgd_update)
_adam_update = cuda.jit(device=True, inline=True)(_math.adam_update)

_CACHE = not _cuda.SIMULATOR


@cuda.jit(cache=_CACHE)
def _sgd_kernel(param, grad, buf, grad_scale, neg_lr, weight_decay, momentum,
                one_minus_dampening, has_weight_decay, has_momentum, first_step, nesterov,
                maximize):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = param.shape[0]
    if has_momentum and not first_step:
        for i in range(start, n, stride):
            param[i], buf[i] = _sgd_update(param[i], grad[i], buf[i], grad_scale, neg_lr,
                                           weight_decay, momentum, one_minus_dampening,
                                           has_weight_decay, True, False, nesterov, maximize)
    elif has_momentum:  # first step: the buffer is written, not read
        for i in range(start, n, stride):
            p = param[i]
            param[i], buf[i] = _sgd_update(p, grad[i], p, grad_scale, neg_lr, weight_decay,
                                           momentum, one_minus_dampening, has_weight_decay,
                                           True, True, nesterov, maximize)
    else:
        for i in range(start, n, stride):
            p = param[i]
            param[i], _ = _sgd_update(p, grad[i], p, grad_scale, neg_lr, weight_decay,
                                      momentum, one_minus_dampening, has_weight_decay,
                                      False, False, nesterov, maximize)


@cuda.jit(cache=_CACHE)
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, lerp_weight,
                 lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                 bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                 weight_decay_mode, amsgrad, maximize):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = param.shape[0]
    if amsgrad:
        for i in range(start, n, stride):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = _adam_update(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale,
                lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, True, maximize)
    else:
        for i in range(start, n, stride):
            v = exp_avg_sq[i]
            param[i], exp_avg[i], exp_avg_sq[i], _ = _adam_update(
                param[i], grad[i], exp_avg[i], v, v, grad_scale,
                lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                weight_decay_mode, False, maximize)


def _configured(kernel, n):
    """The cached launcher for ``n`` elements on the current stream (tests wrap this)."""
    return _cuda.configured(kernel, n)


def _check_device(param):
    if isinstance(param, np.ndarray):
        raise TypeError("the cuda backend updates CUDA device arrays, not host NumPy arrays")


def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    _check_device(param)
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    n = param.shape[0]
    if n == 0:
        return
    buf = param if momentum_buffer is None else momentum_buffer  # unused without momentum
    _configured(_sgd_kernel, n)(param, grad, buf, *s, bool(first_step), bool(nesterov),
                                bool(maximize))


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    _check_device(param)
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    n = param.shape[0]
    if n == 0:
        return
    vmax = exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq  # unused without amsgrad
    _configured(_adam_kernel, n)(param, grad, exp_avg, exp_avg_sq, vmax, *s, bool(amsgrad),
                                 bool(maximize))
