"""Checks shared by the optimizers and the functional API.

Every check runs before anything is written, so a rejected call changes no
parameter and no state. Messages follow torch where torch has one.
"""
from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, but got {type(value).__name__}")
    return float(value)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, but got {type(value).__name__}")


def check_lr(lr):
    if not _real("lr", lr) >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_weight_decay(weight_decay):
    if not _real("weight_decay", weight_decay) >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, maximize):
    check_lr(lr)
    if not _real("momentum", momentum) >= 0.0:
        raise ValueError(f"Invalid momentum value: {momentum}")
    if not math.isfinite(_real("dampening", dampening)):
        raise ValueError(f"Invalid dampening value: {dampening}")
    check_weight_decay(weight_decay)
    _flag("nesterov", nesterov)
    _flag("maximize", maximize)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                               decoupled_weight_decay):
    check_lr(lr)
    if not _real("eps", eps) >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), but got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= _real(f"betas[{index}]", beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
    check_weight_decay(weight_decay)
    _flag("amsgrad", amsgrad)
    _flag("maximize", maximize)
    _flag("decoupled_weight_decay", decoupled_weight_decay)


def check_safety_options(skip_nonfinite, max_grad_norm):
    _flag("skip_nonfinite", skip_nonfinite)
    if max_grad_norm is not None and not _real("max_grad_norm", max_grad_norm) > 0.0:
        raise ValueError(f"Invalid max_grad_norm: {max_grad_norm} (must be > 0 or None)")


def check_step(step):
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Real):
        raise TypeError(f"step must be a number, but got {type(step).__name__}")
    if not step >= 1:
        raise ValueError(f"Invalid step: {step} (the count including this step, starting at 1)")


def check_param(name, p, need_contiguous):
    """A parameter: a writeable, aligned float32/float64 NumPy array."""
    if not isinstance(p, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy float32/float64 array (or a CUDA device array), "
            f"but got {type(p).__name__}"
        )
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {p.dtype}; fastoptim optimizes float32 and float64 arrays")
    if not p.flags.writeable:
        raise ValueError(f"{name} is read-only; parameters are updated in place")
    if not p.flags.aligned:
        raise ValueError(f"{name} is not aligned to its itemsize")
    if need_contiguous and not p.flags.c_contiguous:
        raise ValueError(
            f"{name} is not C-contiguous; the fast backends update contiguous arrays in place "
            "(pass np.ascontiguousarray(...) and use that array, or backend='numpy')"
        )


def check_grad(name, g, p):
    """A gradient for parameter ``p``: same shape and dtype, not sharing its memory."""
    if not isinstance(g, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, but got {type(g).__name__}")
    if g.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {g.dtype} but its parameter has dtype {p.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{name} has shape {g.shape} but its parameter has shape {p.shape}")
    if np.may_share_memory(g, p):
        raise ValueError(f"{name} shares memory with its parameter")


def host_span(a):
    """(start, stop) byte addresses of a NumPy array's memory."""
    bounds = np.lib.array_utils.byte_bounds if hasattr(np.lib, "array_utils") else np.byte_bounds
    return bounds(a)


def check_no_overlap(named_spans):
    """ValueError if two (name, (start, stop)) spans overlap (a parameter given twice...)."""
    spans = sorted((lo, hi, name) for name, (lo, hi) in named_spans if hi > lo)
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise ValueError(
                f"some parameters appear more than once or overlap in memory ({n1} and {n2})"
            )


def check_reads_disjoint(read_spans, write_spans):
    """ValueError if an array that is only read (a gradient) overlaps one that is written.

    ``write_spans`` must be disjoint already (check_no_overlap); then a read span
    overlaps a write span iff the last write starting before its end reaches past
    its start: one binary search per read.
    """
    writes = sorted((lo, hi, name) for name, (lo, hi) in write_spans if hi > lo)
    starts = [w[0] for w in writes]
    for name, (lo, hi) in read_spans:
        j = bisect.bisect_left(starts, hi) - 1
        if hi > lo and j >= 0 and writes[j][1] > lo:
            raise ValueError(f"{name} shares memory with {writes[j][2]}, which step() writes")
