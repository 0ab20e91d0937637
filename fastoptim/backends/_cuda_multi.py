"""Many tensors in one CUDA launch: the pointer table and its kernels, and the device
functions every CUDA update kernel shares.

A device table holds, per tensor, the addresses of its param, grad and state
arrays, its length and its offset in the flat index space (``table``); each
thread of ``sgd_multi_kernel`` / ``adam_multi_kernel`` walks that space with a
grid stride and follows the table. The per-element math is ``_math``'s, the
same device functions as the one-array kernels of ``cuda_backend`` (which
prepares the scalars, the control buffers and the cells, and launches). The
simulator cannot dereference raw device addresses, so there (and only there)
``cuda_backend`` launches the per-tensor kernels instead.
"""
from __future__ import annotations

import math

import numpy as np

from ..arrays import device as _cuda
from . import _math

cuda = _cuda.cuda
_CACHE = not _cuda.SIMULATOR


def true_step_scalars_py(step, lerp_weight, one_minus_beta2, lr):
    """(-lr / (1 - beta1**step), sqrt(1 - beta2**step)) on the device, in the parameter's
    dtype, as 1 - beta**t = -expm1(t * log1p(-(1 - beta))) (accurate for small 1 - beta)."""
    bias_correction1 = -math.expm1(step * math.log1p(-lerp_weight))
    bias_correction2 = -math.expm1(step * math.log1p(-one_minus_beta2))
    return -(lr / bias_correction1), math.sqrt(bias_correction2)


true_step_scalars = cuda.jit(device=True, inline=True)(true_step_scalars_py)
sgd_update = cuda.jit(device=True, inline=True)(_math.sgd_update)
adam_update = cuda.jit(device=True, inline=True)(_math.adam_update)


# ---------------------------------------------------------------- the table
TABLE_COLUMNS = 8  # param, grad, state a, state b, state c, length, start offset, step cell
tables: dict = {}  # key (addresses and lengths) -> device table
TABLE_CACHE = 16


def address(x):
    """The device address of array ``x`` (torch, CuPy, Numba or any CAI object)."""
    data_ptr = getattr(x, "data_ptr", None)
    if callable(data_ptr):  # torch
        return int(data_ptr())
    if isinstance(x, _cuda._NativeArray) and not _cuda.SIMULATOR:
        return int(x.device_ctypes_pointer.value or 0)
    return _cuda._desc(x).ptr


def table(columns, lengths):
    """The device table for these arrays, rebuilt only when an address or a length changes."""
    key = (tuple(tuple(address(a) if a is not None else 0 for a in col) for col in columns),
           tuple(lengths))
    hit = tables.get(key)
    if hit is None:
        rows = np.zeros((len(lengths), TABLE_COLUMNS), dtype=np.int64)
        for c, col in enumerate(columns):
            rows[:, c if c < 5 else c + 2] = key[0][c]  # (a 6th column: the step cells)
        rows[:, 5] = lengths
        rows[:, 6] = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if lengths else []
        if len(tables) >= TABLE_CACHE:
            tables.pop(next(iter(tables)))
        hit = tables[key] = (_cuda.cuda.to_device(rows, stream=_cuda.get_stream()),
                             int(sum(lengths)))
    return hit


def nonempty(arrays):
    return [i for i, a in enumerate(arrays) if math.prod(a.shape) > 0]


# ---------------------------------------------------------------- the kernels
POINTER_KERNELS = _cuda.POINTER_KERNELS
_ptr = _cuda.raw_pointer


def _sgd_multi(table, total, ctrl, grad_scale, neg_lr, weight_decay, momentum,
               one_minus_dampening, has_weight_decay, has_momentum, first_step, nesterov,
               maximize, track_first):
    if ctrl[1] != 0:
        if track_first and first_step and cuda.grid(1) == 0:
            for r in range(table.shape[0]):  # no first step yet: the next real one is it
                cell = _ptr(table[r, 3], total)
                cell[0] = 1
        return
    grad_scale = grad_scale * ctrl[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    t = 0
    lo = table[0, 6]
    hi = lo + table[0, 5]
    p = _ptr(table[0, 0], neg_lr)
    g = _ptr(table[0, 1], neg_lr)
    b = _ptr(table[0, 2], neg_lr)
    first = first_step
    if track_first and not first_step:
        first = _ptr(table[0, 3], total)[0] != 0
    for i in range(start, total, stride):
        if i >= hi:
            while i >= hi:
                t += 1
                lo = table[t, 6]
                hi = lo + table[t, 5]
            p = _ptr(table[t, 0], neg_lr)
            g = _ptr(table[t, 1], neg_lr)
            b = _ptr(table[t, 2], neg_lr)
            if track_first and not first_step:
                first = _ptr(table[t, 3], total)[0] != 0
        j = i - lo
        x = p[j]
        if has_momentum and not first:
            p[j], b[j] = sgd_update(x, g[j], b[j], grad_scale, neg_lr, weight_decay, momentum,
                                     one_minus_dampening, has_weight_decay, True, False,
                                     nesterov, maximize)
        elif has_momentum:
            p[j], b[j] = sgd_update(x, g[j], x, grad_scale, neg_lr, weight_decay, momentum,
                                     one_minus_dampening, has_weight_decay, True, True,
                                     nesterov, maximize)
        else:
            p[j], _ = sgd_update(x, g[j], x, grad_scale, neg_lr, weight_decay, momentum,
                                  one_minus_dampening, has_weight_decay, False, False,
                                  nesterov, maximize)
    if track_first and not first_step:  # the last block done clears the pending cells
        cuda.syncthreads()  # every thread of this block is past its reads of the cells
        if cuda.threadIdx.x == 0:
            if cuda.atomic.add(table, (0, 4), 1) == cuda.gridDim.x - 1:
                for r in range(table.shape[0]):
                    cell = _ptr(table[r, 3], total)
                    if cell[0] != 0:
                        cell[0] = 0
                table[0, 4] = 0


def _adam_multi(table, total, ctrl, grad_scale, lerp_weight, lerp_complement, lerp_from_start,
                beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size, weight_decay,
                decay_factor, weight_decay_mode, amsgrad, maximize, attempted, lr):
    if ctrl[1] != 0:  # skipped on the device: count it in every tensor's step cell
        if cuda.grid(1) == 0:
            for r in range(table.shape[0]):
                cell = _ptr(table[r, 7], eps)
                cell[0] += 1
        return
    grad_scale = grad_scale * ctrl[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    t = 0
    lo = table[0, 6]
    hi = lo + table[0, 5]
    p = _ptr(table[0, 0], eps)
    g = _ptr(table[0, 1], eps)
    m = _ptr(table[0, 2], eps)
    v = _ptr(table[0, 3], eps)
    w = _ptr(table[0, 4], eps)
    nss = neg_step_size
    bc2 = bias_correction2_sqrt
    cell = _ptr(table[0, 7], eps)
    if cell[0] != 0:
        nss, bc2 = true_step_scalars(attempted - cell[0], lerp_weight, one_minus_beta2, lr)
    for i in range(start, total, stride):
        if i >= hi:
            while i >= hi:
                t += 1
                lo = table[t, 6]
                hi = lo + table[t, 5]
            p = _ptr(table[t, 0], eps)
            g = _ptr(table[t, 1], eps)
            m = _ptr(table[t, 2], eps)
            v = _ptr(table[t, 3], eps)
            w = _ptr(table[t, 4], eps)
            nss = neg_step_size
            bc2 = bias_correction2_sqrt
            cell = _ptr(table[t, 7], eps)
            if cell[0] != 0:
                nss, bc2 = true_step_scalars(attempted - cell[0], lerp_weight,
                                              one_minus_beta2, lr)
        j = i - lo
        if amsgrad:
            p[j], m[j], v[j], w[j] = adam_update(
                p[j], g[j], m[j], v[j], w[j], grad_scale, lerp_weight, lerp_complement,
                lerp_from_start, beta2, one_minus_beta2, bc2, eps,
                nss, weight_decay, decay_factor, weight_decay_mode, True, maximize)
        else:
            vj = v[j]
            p[j], m[j], v[j], _ = adam_update(
                p[j], g[j], m[j], vj, vj, grad_scale, lerp_weight, lerp_complement,
                lerp_from_start, beta2, one_minus_beta2, bc2, eps,
                nss, weight_decay, decay_factor, weight_decay_mode, False, maximize)


if POINTER_KERNELS:
    sgd_multi_kernel = cuda.jit(cache=_CACHE)(_sgd_multi)
    adam_multi_kernel = cuda.jit(cache=_CACHE)(_adam_multi)
