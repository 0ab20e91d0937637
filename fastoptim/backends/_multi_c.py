"""C table kernels (``kernels/multi_tensor.c``): one call updates every row of a table.

Each row is run by the single-array C kernel (``fo_sgd_*``/``fo_adam_*``), so the
math, the vectorized code and the threads are those of one call per tensor.
Importing this module fails with ImportError when the C kernels were not built.
"""
from __future__ import annotations

import numpy as np

from fastoptim._ckernels import ffi, lib  # ImportError when not compiled

from ._multi_table import NCOL
from ._scalars import adam_scalars, sgd_scalars

if lib.fo_multi_table_ncol() != NCOL:
    raise ImportError("stale C build: its multi-tensor table layout differs from _multi_table.py")

_SGD = {np.dtype(np.float32): lib.fo_multi_sgd_f32, np.dtype(np.float64): lib.fo_multi_sgd_f64}
_ADAM = {np.dtype(np.float32): lib.fo_multi_adam_f32, np.dtype(np.float64): lib.fo_multi_adam_f64}


def _buffers(rows, bounds):
    # checked by the caller: rows int64 (n, NCOL) C-contiguous, bounds int64 1-D increasing
    return (ffi.from_buffer("int64_t[]", rows), ffi.from_buffer("int64_t[]", bounds),
            len(bounds) - 1)


def sgd(rows, bounds, dtype, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
        first_step, grad_scale=1.0):
    """SGD over the rows of the blocks ``bounds[b]:bounds[b + 1]`` of ``rows`` (all of
    ``dtype``; one block per OpenMP thread); keywords as ``backends.sgd``."""
    s = sgd_scalars(dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    _SGD[dtype](*_buffers(rows, bounds), *s, bool(first_step), bool(nesterov), bool(maximize))


def adam(rows, bounds, dtype, *, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
         decoupled_weight_decay, grad_scale=1.0):
    """Adam over the rows of the blocks ``bounds[b]:bounds[b + 1]`` of ``rows`` (all of
    ``dtype``; one block per OpenMP thread); keywords as ``backends.adam``."""
    s = adam_scalars(dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    _ADAM[dtype](*_buffers(rows, bounds), *s, bool(amsgrad), bool(maximize))
