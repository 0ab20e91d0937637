"""Numba table kernels: one call updates every row of a multi-tensor table.

A row holds the data addresses and the length of one parameter's arrays
(``_multi_table``). Each kernel walks the rows ``lo <= r < hi`` and, for each,
makes 1-D views of the addresses (``numba.carray`` over a pointer made by
``_pointer``) and runs the same per-element update as the single-array kernels
(``_math.py``, with the same scalars from ``_scalars.py``), so the results are
bit-identical to theirs and to the NumPy reference. The rows of one call share
one dtype (the ``like`` scalar's type picks it) and one set of scalars; skipped
rows (``N <= 0``) are left alone.

``bounds`` splits the rows into blocks of about equal element counts (the caller,
``fastoptim._plain_list``, follows fastoptim's thread policy): one block runs
serially on the calling thread, several run one per thread (``prange``). Every
row is small: the caller runs tensors above the parallel crossover through the
parallel single-array kernels instead.
"""
from __future__ import annotations

import numba
from numba import types as nbtypes
from numba.extending import intrinsic

from . import _math, _pool, _threads
from ._jit import njit_parallel, njit_serial  # cached under digests of code and callees
from ._multi_table import COL_GRAD, COL_N, COL_PARAM, COL_STATE0
from ._scalars import adam_scalars, sgd_scalars

_sgd_update = njit_serial(_math.sgd_update)
_adam_update = njit_serial(_math.adam_update)


@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to elements of ``like``'s type (float32/64)."""
    if not (isinstance(address, nbtypes.Integer) and isinstance(like, nbtypes.Float)):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return nbtypes.CPointer(like)(address, like), codegen


@njit_serial
def _view(rows, r, column, n, like):
    return numba.carray(_pointer(rows[r, column], like), n)


@njit_serial
def _sgd_rows(rows, lo, hi, grad_scale, neg_lr, weight_decay, momentum, one_minus_dampening,
              has_weight_decay, has_momentum, first_step, nesterov, maximize):
    for r in range(lo, hi):
        n = rows[r, COL_N]
        if n <= 0:
            continue
        param = _view(rows, r, COL_PARAM, n, grad_scale)
        grad = _view(rows, r, COL_GRAD, n, grad_scale)
        if has_momentum:
            buf = _view(rows, r, COL_STATE0, n, grad_scale)
            for i in range(n):
                p, b = _sgd_update(param[i], grad[i], buf[i], grad_scale, neg_lr,
                                   weight_decay, momentum, one_minus_dampening,
                                   has_weight_decay, True, first_step, nesterov, maximize)
                buf[i] = b  # state first, parameter last, as numba_backend's loops
                param[i] = p
        else:
            for i in range(n):
                param[i], _ = _sgd_update(param[i], grad[i], param[i], grad_scale, neg_lr,
                                          weight_decay, momentum, one_minus_dampening,
                                          has_weight_decay, False, False, nesterov, maximize)


@njit_serial
def _adam_rows(rows, lo, hi, grad_scale, lerp_weight, lerp_complement, lerp_from_start, beta2,
               one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size, weight_decay,
               decay_factor, weight_decay_mode, amsgrad, maximize):
    for r in range(lo, hi):
        n = rows[r, COL_N]
        if n <= 0:
            continue
        param = _view(rows, r, COL_PARAM, n, grad_scale)
        grad = _view(rows, r, COL_GRAD, n, grad_scale)
        exp_avg = _view(rows, r, COL_STATE0, n, grad_scale)
        exp_avg_sq = _view(rows, r, COL_STATE0 + 1, n, grad_scale)
        if amsgrad:
            vmax = _view(rows, r, COL_STATE0 + 2, n, grad_scale)
            for i in range(n):
                p, m, v, w = _adam_update(
                    param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax[i], grad_scale,
                    lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                    bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                    weight_decay_mode, True, maximize)
                exp_avg[i] = m
                exp_avg_sq[i] = v
                vmax[i] = w
                param[i] = p
        else:
            for i in range(n):
                p, m, v, _ = _adam_update(
                    param[i], grad[i], exp_avg[i], exp_avg_sq[i], exp_avg_sq[i], grad_scale,
                    lerp_weight, lerp_complement, lerp_from_start, beta2, one_minus_beta2,
                    bias_correction2_sqrt, eps, neg_step_size, weight_decay, decay_factor,
                    weight_decay_mode, False, maximize)
                exp_avg[i] = m
                exp_avg_sq[i] = v
                param[i] = p


@njit_parallel
def _sgd_blocks(rows, bounds, scalars):
    for b in numba.prange(bounds.shape[0] - 1):
        _sgd_rows(rows, bounds[b], bounds[b + 1], *scalars)


@njit_parallel
def _adam_blocks(rows, bounds, scalars):
    for b in numba.prange(bounds.shape[0] - 1):
        _adam_rows(rows, bounds[b], bounds[b + 1], *scalars)


def _run(rows_kernel, blocks_kernel, rows, bounds, args):
    """One block on the calling thread; several on fastoptim's pool (one block per chunk,
    claimed by whichever thread is free), or one per OpenMP thread without the C build."""
    if len(bounds) == 2:
        rows_kernel(rows, int(bounds[0]), int(bounds[1]), *args)
    elif _pool.available():
        _pool.pooled_table(rows_kernel).run(rows, bounds, args, _threads.parallel_threads())
    else:
        blocks_kernel(rows, bounds, args)


def sgd(rows, bounds, dtype, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
        first_step, grad_scale=1.0):
    """SGD over the rows of the blocks ``bounds[b]:bounds[b + 1]`` of ``rows`` (all of
    ``dtype``); keywords as ``backends.sgd``."""
    s = sgd_scalars(dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    args = (*s, bool(first_step), bool(nesterov), bool(maximize))
    _run(_sgd_rows, _sgd_blocks, rows, bounds, args)


def adam(rows, bounds, dtype, *, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
         decoupled_weight_decay, grad_scale=1.0):
    """Adam over the rows of the blocks ``bounds[b]:bounds[b + 1]`` of ``rows`` (all of
    ``dtype``); keywords as ``backends.adam``."""
    s = adam_scalars(dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    args = (*s, bool(amsgrad), bool(maximize))
    _run(_adam_rows, _adam_blocks, rows, bounds, args)
