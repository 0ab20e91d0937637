"""The C backend's gradient operations (norm statistics, non-finite check, scale,
clamp): there are no C kernels for them; they are the Numba backend's when it
loads, else the NumPy reference's (chosen at each call, through the registry).

So ``backend="c"`` can be passed through unchanged, and an optimizer on the C
backend clips by the same reduction as one on numba or numpy.
"""
from __future__ import annotations


def _ops():
    from . import is_available, load

    return load("numba") if is_available("numba") else load("numpy")


def norm_stats(arrays, norm_type, check_finite=False):
    return _ops().norm_stats(arrays, norm_type, check_finite)


def all_finite(arrays):
    return _ops().all_finite(arrays)


def scale_(x, factor):
    _ops().scale_(x, factor)


def clamp_(x, lo, hi):
    _ops().clamp_(x, lo, hi)
