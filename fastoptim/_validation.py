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
# complex parameters are updated as pairs of reals (torch's view_as_real)
COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))
PARAM_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, but got {type(value).__name__}")
    return float(value)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, but got {type(value).__name__}")


def _tensor_hyper(name, value):
    """An array hyperparameter (torch's tensor lr): 1 element, real float dtype; its value."""
    if value.size != 1:
        raise ValueError(f"Tensor {name} must be 1-element")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} as an array must be float32 or float64, but got {value.dtype}")
    return float(value.reshape(-1)[0])


def hyper_value(value):
    """What a kernel gets for a hyperparameter: the value itself, or for an array (torch's
    tensor lr/betas) a NumPy scalar of its dtype, so that, as in torch, arithmetic
    with it happens in that dtype."""
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0]
    return value


def check_lr(lr):
    value = _tensor_hyper("lr", lr) if isinstance(lr, np.ndarray) else _real("lr", lr)
    if not value >= 0.0:
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


def check_betas(betas, one_allowed):
    """A pair (beta1, beta2), both floats or both 1-element arrays, each in [0, 1) (Adam:
    a beta of 1 zeroes its bias correction) or in [0, 1] (``one_allowed``: Lion)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), but got {betas!r}")
    arrays = [isinstance(b, np.ndarray) for b in betas]
    if arrays[0] != arrays[1]:
        raise ValueError("betas must be either both floats or both Tensors")
    for index, beta in enumerate(betas):
        value = (_tensor_hyper(f"betas[{index}]", beta) if arrays[index]
                 else _real(f"betas[{index}]", beta))
        if not (0.0 <= value <= 1.0 if one_allowed else 0.0 <= value < 1.0):
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                               decoupled_weight_decay):
    check_lr(lr)
    if not _real("eps", eps) >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    check_betas(betas, one_allowed=False)
    check_weight_decay(weight_decay)
    _flag("amsgrad", amsgrad)
    _flag("maximize", maximize)
    _flag("decoupled_weight_decay", decoupled_weight_decay)


def check_lion_hyperparameters(lr, betas, weight_decay, maximize):
    """Lion: lr >= 0, betas a pair in [0, 1] (both floats or both 1-element arrays)."""
    check_lr(lr)
    check_betas(betas, one_allowed=True)
    check_weight_decay(weight_decay)
    _flag("maximize", maximize)


def check_safety_options(skip_nonfinite, max_grad_norm):
    _flag("skip_nonfinite", skip_nonfinite)
    if max_grad_norm is not None and not _real("max_grad_norm", max_grad_norm) > 0.0:
        raise ValueError(f"Invalid max_grad_norm: {max_grad_norm} (must be > 0 or None)")


def step_value(step):
    """A step count as a Python float: a real number, or a 1-element real array (torch's
    tensor step); TypeError otherwise."""
    if isinstance(step, np.ndarray):
        if step.size != 1 or step.dtype.kind not in "uif":
            raise TypeError(f"step must be a number or a 1-element real array, but got an array "
                            f"of shape {step.shape} and dtype {step.dtype}")
        return float(step.reshape(-1)[0])
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Real):
        raise TypeError(f"step must be a number, but got {type(step).__name__}")
    return float(step)


def check_step(step):
    value = step_value(step)
    if not value >= 1:
        raise ValueError(f"Invalid step: {step} (the count including this step, starting at 1)")
    return value


def check_state_step(name, step):
    """An optimizer's stored step count: a finite number >= 0 (or a 1-element array).

    A CUDA optimizer's own counter (``_cuda.DeviceStep``) is checked by its host
    count of launched steps, which needs no wait for the GPU."""
    if getattr(type(step), "is_device_step", False):
        step = step.attempted
    try:
        value = step_value(step)
    except TypeError:
        raise TypeError(f"{name} must be a number or a 1-element real array, "
                        f"but got {type(step).__name__}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite count >= 0, but is {value}")
    if isinstance(step, np.ndarray) and not step.flags.writeable:
        raise ValueError(f"{name} is read-only; the step count is updated in place")


def _check_ndarray_kind(name, a, what):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a {what}, but got {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array: the kernels would update masked entries too; pass "
            "its .data (or np.ma.getdata(...)) to optimize every entry"
        )


def check_param(name, p, need_contiguous):
    """A parameter: a writeable, aligned float32/float64 (or complex64/128) NumPy array.

    ndarray subclasses (np.matrix, np.memmap) are updated through a plain
    ndarray view of their memory; masked arrays are refused.
    """
    _check_ndarray_kind(name, p, "NumPy float32/float64 array (or a CUDA device array)")
    if p.dtype not in PARAM_DTYPES:
        raise TypeError(f"{name} has dtype {p.dtype}; fastoptim optimizes float32 and float64 "
                        "arrays (and complex64/complex128 ones, as pairs of reals)")
    if p.dtype in COMPLEX_DTYPES and not p.flags.c_contiguous:
        raise ValueError(f"{name} is a complex array that is not C-contiguous; complex arrays "
                         "are updated through a real view, which needs contiguous memory")
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
    _check_ndarray_kind(name, g, "NumPy array")
    if g.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {g.dtype} but its parameter has dtype {p.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{name} has shape {g.shape} but its parameter has shape {p.shape}")
    if np.may_share_memory(g, p):
        raise ValueError(f"{name} shares memory with its parameter")


def check_state_array(name, a, p, need_contiguous):
    """A state array a step writes (``exp_avg``...): an array of its parameter's shape and
    dtype, writeable, aligned, and contiguous for the fast backends."""
    _check_ndarray_kind(name, a, "NumPy array of its parameter's shape and dtype")
    if a.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but its parameter has dtype {p.dtype}")
    if a.shape != p.shape:
        raise ValueError(f"{name} has shape {a.shape} but its parameter has shape {p.shape}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only; optimizer state is updated in place")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its itemsize")
    if (need_contiguous or a.dtype in COMPLEX_DTYPES) and not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; the kernels update state in place")


def host_span(a):
    """(start, stop) byte addresses of a NumPy array's memory."""
    bounds = np.lib.array_utils.byte_bounds if hasattr(np.lib, "array_utils") else np.byte_bounds
    return bounds(a)


_OVERLAP = "some parameters appear more than once or overlap in memory ({} and {})"


def check_no_overlap(named_spans, message=None):
    """ValueError if two (name, (start, stop)) spans overlap (a parameter given twice...)."""
    spans = sorted((lo, hi, name) for name, (lo, hi) in named_spans if hi > lo)
    hi_max, n_max = None, None
    for lo, hi, name in spans:  # the widest span so far: catches one inside an earlier one
        if hi_max is not None and lo < hi_max:
            raise ValueError((message or _OVERLAP).format(n_max, name))
        if hi_max is None or hi > hi_max:
            hi_max, n_max = hi, name


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
