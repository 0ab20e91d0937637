"""The NumPy reference of the gradient operations (norm statistics, non-finite check,
scale, clamp): the oracle of the fast backends, as ``numpy_backend`` is for the updates.

Vectorized NumPy on arrays of any shape and layout (the fast backends want 1-D
contiguous ones and fall back to these otherwise). NaN and Inf propagate
silently. The per-element math is ``_clip_math``'s, in array form.
"""
from __future__ import annotations

import math

import numpy as np

from ._clip_math import COUNT, MAX_ABS, MIN_ABS, SUM_ABS, SUM_POW, SUM_SQ, mode


def _quiet():
    return np.errstate(all="ignore")


def statistic(x, mode_, norm_type):
    """One array's statistic: the float64 sum of its terms (sum modes; the terms in x's
    dtype), max/min |x| (NaN if any is NaN; max of an empty array 0) or the non-zero count."""
    with _quiet():
        if mode_ == SUM_SQ:
            return float(np.sum(np.square(x), dtype=np.float64))
        if mode_ == SUM_ABS:
            return float(np.sum(np.abs(x), dtype=np.float64))
        if mode_ == SUM_POW:
            return float(np.sum(np.abs(x) ** x.dtype.type(norm_type), dtype=np.float64))
        if mode_ == MAX_ABS:
            return float(np.max(np.abs(x))) if x.size else 0.0
        if mode_ == MIN_ABS:
            return float(np.min(np.abs(x)))
        assert mode_ == COUNT
        return float(np.count_nonzero(x))


def per_array(arrays, norm_type, check_finite, stat, finite):
    """``norm_stats`` from one-array functions ``stat(x, mode, norm_type)`` and
    ``finite(x)``: for ``norm_type > 0`` a finite statistic proves every element finite,
    so only a non-finite one (or another norm type) costs the separate check."""
    m = mode(norm_type)
    stats = np.empty(len(arrays), dtype=np.float64)
    ok = True
    for i, x in enumerate(arrays):
        stats[i] = s = stat(x, m, norm_type)
        if check_finite and ok and not (norm_type > 0 and math.isfinite(s)):
            ok = finite(x)
    return stats, (ok if check_finite else None)


def _finite(x):
    return bool(np.isfinite(x).all())


def norm_stats(arrays, norm_type, check_finite=False):
    return per_array(arrays, norm_type, check_finite, statistic, _finite)


def all_finite(arrays):
    return all(_finite(x) for x in arrays)


def scale_(x, factor):
    with _quiet():
        np.multiply(x, factor, out=x)


def clamp_(x, lo, hi):
    if lo != lo or hi != hi:
        x[...] = np.nan  # torch.clamp with a NaN bound
        return
    # x < lo ? lo : x, then x > hi ? hi : x (NaN stays, -0.0 stays), as torch
    np.copyto(x, lo, where=x < lo)
    np.copyto(x, hi, where=x > hi)
