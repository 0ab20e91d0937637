"""Numba CPU kernels of the gradient operations: norm statistics, the non-finite
check, scale and clamp (``numba_backend`` exports them; see ``backends/__init__``).

The per-element math is ``_clip_math``'s, compiled here with ``@njit``; the
compile options are ``_jit``'s (plus ``fastmath={"reassoc"}`` for the float64
sums: reassociation lets LLVM keep several partial sums and vectorize, ~5x
faster for float32; it changes their rounding only, not NaN/Inf behaviour).

- ``scale_`` and ``clamp_`` are range kernels built by ``_jit.kernel_pair`` and run
  by ``numba_backend.run``, the thread policy of the updates.
- Each reduction is a range kernel returning its partial statistic, run over
  fixed blocks of ``BLOCK`` elements (in parallel with ``prange`` above
  ``PARALLEL_MIN``, else serially), whose partials are then combined in block
  order. The order of every sum depends on the array's length alone, so a norm
  is bit-identical serial or parallel, for any thread count.

Arrays that are not 1-D-contiguous and aligned are read through a contiguous
copy (reductions) or handed to the NumPy reference (scale, clamp).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._parallel import note_parallel, parallel_guard, serial_only
from . import _clip_math, _jit, _reduce_numpy, _threads
from ._clip_math import COUNT, MAX_ABS, MIN_ABS, SUM_ABS, SUM_POW, SUM_SQ
from ._jit import PARALLEL, SERIAL, _renamed, kernel_pair

# The digest of a kernel's code that its cache name carries (see _jit.py); the ABI work
# renames _code_digest to code_digest (which also covers the functions a kernel calls).
_digest = getattr(_jit, "code_digest", None) or _jit._code_digest

BLOCK = 16384  # elements per partial statistic (a fixed order of the sums)
_SUMS = dict(SERIAL, fastmath={"reassoc"})

_square = numba.njit(**SERIAL)(_clip_math.square)
_magnitude = numba.njit(**SERIAL)(_clip_math.magnitude)
_abs_power = numba.njit(**SERIAL)(_clip_math.abs_power)
_is_nonzero = numba.njit(**SERIAL)(_clip_math.is_nonzero)
_is_nonfinite = numba.njit(**SERIAL)(_clip_math.is_nonfinite)
_scale = numba.njit(**SERIAL)(_clip_math.scale)
_clamp = numba.njit(**SERIAL)(_clip_math.clamp)
_nan_max = numba.njit(**SERIAL)(_clip_math.nan_max)
_nan_min = numba.njit(**SERIAL)(_clip_math.nan_min)


@numba.njit(**SERIAL)
def _add(a, b):
    return a + b


# Range kernels of the reductions: kernel(lo, hi, x, p) -> the statistic of x[lo:hi]
# (p, of x's dtype, is read by the p-norm only). Sums accumulate in float64.
def _sum_sq(lo, hi, x, p):
    x = x[lo:hi]
    s = 0.0
    for i in range(x.shape[0]):
        s += _square(x[i])
    return s


def _sum_abs(lo, hi, x, p):
    x = x[lo:hi]
    s = 0.0
    for i in range(x.shape[0]):
        s += _magnitude(x[i])
    return s


def _sum_pow(lo, hi, x, p):
    x = x[lo:hi]
    s = 0.0
    for i in range(x.shape[0]):
        s += _abs_power(x[i], p)
    return s


def _max_abs(lo, hi, x, p):
    x = x[lo:hi]
    m = 0.0
    nans = 0
    for i in range(x.shape[0]):
        v = _magnitude(x[i])
        m = max(m, v)
        nans += v != v  # max() would drop NaNs: count them instead
    return m if nans == 0 else math.nan


def _min_abs(lo, hi, x, p):
    x = x[lo:hi]
    m = math.inf
    nans = 0
    for i in range(x.shape[0]):
        v = _magnitude(x[i])
        m = min(m, v)
        nans += v != v
    return m if nans == 0 else math.nan


def _count(lo, hi, x, p):
    x = x[lo:hi]
    s = 0
    for i in range(x.shape[0]):
        s += _is_nonzero(x[i])
    return float(s)


def _nonfinite(lo, hi, x, p):
    x = x[lo:hi]
    s = 0
    for i in range(x.shape[0]):
        s += _is_nonfinite(x[i])
    return float(s)


def _blocks_template(x, p):
    # the statistic of each BLOCK-element block (prange: in parallel in the parallel
    # build), then the blocks' statistics combined in order
    n = x.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    partials = np.empty(blocks, dtype=np.float64)
    for b in numba.prange(blocks):
        lo = b * BLOCK
        partials[b] = KERNEL(lo, min(lo + BLOCK, n), x, p)  # noqa: F821
    total = INITIAL  # noqa: F821 (a global of each renamed copy)
    for b in range(blocks):
        total = COMBINE(total, partials[b])  # noqa: F821
    return total


def _reduction(range_kernel, combine, initial, options=SERIAL):
    """(serial, parallel) builds of ``_blocks_template`` over ``range_kernel``; both
    compute the same blocks in the same order, so their results are bit-identical."""
    kernel = numba.njit(**options)(_renamed(range_kernel, f"__{_digest(range_kernel)}"))
    suffix = f"__{range_kernel.__name__}_{_digest(_blocks_template, range_kernel)}"
    return tuple(
        numba.njit(**flags)(_renamed(_blocks_template, suffix + build, KERNEL=kernel,
                                     COMBINE=combine, INITIAL=initial))
        for build, flags in (("__serial", SERIAL), ("__parallel", PARALLEL)))


_REDUCTIONS = {
    SUM_SQ: _reduction(_sum_sq, _add, 0.0, _SUMS),
    SUM_ABS: _reduction(_sum_abs, _add, 0.0, _SUMS),
    SUM_POW: _reduction(_sum_pow, _add, 0.0, _SUMS),
    MAX_ABS: _reduction(_max_abs, _nan_max, 0.0),
    MIN_ABS: _reduction(_min_abs, _nan_min, math.inf),
    COUNT: _reduction(_count, _add, 0.0),
}
_NONFINITE = _reduction(_nonfinite, _add, 0.0)


# Range kernels of the in-place operations (see _jit.py): kernel(lo, hi, x, *scalars).
def _scale_range(lo, hi, x, factor):
    x = x[lo:hi]
    for i in range(x.shape[0]):
        x[i] = _scale(x[i], factor)


def _clamp_range(lo, hi, x, low, high):
    x = x[lo:hi]
    for i in range(x.shape[0]):
        x[i] = _clamp(x[i], low, high)


SCALE = kernel_pair(_scale_range)
CLAMP = kernel_pair(_clamp_range)


def _parallel(n) -> bool:
    """Whether a reduction over ``n`` elements runs in parallel (fastoptim's policy)."""
    return n >= _threads.PARALLEL_MIN and not serial_only() and _threads.parallel_threads() > 1


def _run_reduction(pair, x, p):
    if not _parallel(x.shape[0]):
        return pair[0](x, p)
    note_parallel("numba")
    with parallel_guard("numba"):
        threads = _threads.parallel_threads()
        if numba.get_num_threads() != threads:  # an OpenMP limit (threadpoolctl) changed it
            from . import load

            load("numba").set_threads(threads)
        return pair[1](x, p)


def _flat(x):
    """A 1-D contiguous, aligned view of ``x`` (a copy where there is none), for reading."""
    if type(x) is not np.ndarray:
        x = x.view(np.ndarray)  # np.matrix keeps 2-D under reshape
    if not (x.flags.c_contiguous and x.flags.aligned):
        x = np.ascontiguousarray(x)
    return x.reshape(-1)


def _statistic(x, mode_, norm_type):
    flat = _flat(x)
    with np.errstate(over="ignore"):  # a huge p rounds to inf in float32, as the reference's
        p = flat.dtype.type(norm_type)
    return float(_run_reduction(_REDUCTIONS[mode_], flat, p))


def _finite(x):
    flat = _flat(x)
    return _run_reduction(_NONFINITE, flat, flat.dtype.type(0)) == 0


def norm_stats(arrays, norm_type, check_finite=False):
    return _reduce_numpy.per_array(arrays, norm_type, check_finite, _statistic, _finite)


def all_finite(arrays):
    return all(_finite(x) for x in arrays)


def _in_place(pair, x, scalars, fallback):
    if not (x.flags.c_contiguous and x.flags.aligned):
        fallback(x, *scalars)
        return
    if x.size == 0:
        return
    from . import load

    note_parallel("numba")
    with parallel_guard("numba"):
        load("numba").run(pair, (x.view(np.ndarray).reshape(-1),), scalars)


def scale_(x, factor):
    _in_place(SCALE, x, (factor,), _reduce_numpy.scale_)


def clamp_(x, lo, hi):
    _in_place(CLAMP, x, (lo, hi), _reduce_numpy.clamp_)
