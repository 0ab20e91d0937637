"""The per-element math of gradient norms and clipping, written once for Numba.

Plain Python functions on scalars, as ``_math.py`` is for the updates:
``_reduce_numba`` compiles them with ``@njit`` for the CPU loops and
``_reduce_cuda`` as CUDA device functions, so the CPU and GPU reductions,
scales and clamps cannot drift apart. The NumPy reference (``_reduce_numpy``)
spells the same math with array operations.

The norm types reduce in one of six modes (``mode``); every backend's
``norm_stats`` returns, per array, the statistic of its mode before torch's
root (``clip.py`` rounds and roots it as torch does).
"""
import math

# the statistic of each norm type (torch's vector_norm before the root)
SUM_SQ, SUM_ABS, SUM_POW, MAX_ABS, MIN_ABS, COUNT = range(6)


def mode(norm_type: float) -> int:
    """The reduction mode of a norm type (a float, NaN already refused)."""
    if norm_type == 2.0:
        return SUM_SQ
    if norm_type == 1.0:
        return SUM_ABS
    if norm_type == math.inf:
        return MAX_ABS
    if norm_type == -math.inf:
        return MIN_ABS
    if norm_type == 0.0:
        return COUNT
    return SUM_POW


def square(v):
    """The 2-norm's term, in v's dtype (float32 overflows above ~1.8e19, as torch's)."""
    return v * v


def magnitude(v):
    """The term of the 1-norm and of the max/min-abs norms."""
    return abs(v)


def abs_power(v, p):
    """The p-norm's term ``|v| ** p``, with ``p`` of v's dtype (the power in v's precision)."""
    return abs(v) ** p


def is_nonzero(v):
    """1 for a non-zero (NaN included: torch's 0-norm counts it), else 0."""
    return 1 if v != 0 else 0


def is_nonfinite(v):
    """1 for NaN or +-Inf, else 0."""
    return 0 if abs(v) < math.inf else 1


def nan_max(a, b):
    """max that propagates NaN (Python's max drops it when it comes first)."""
    if a != a or b != b:
        return a + b
    return a if a >= b else b


def nan_min(a, b):
    """min that propagates NaN."""
    if a != a or b != b:
        return a + b
    return a if a <= b else b


def scale(v, factor):
    """One element of ``clip_grad_norm_``'s scaling (factor already in v's dtype)."""
    return v * factor


def clamp(v, lo, hi):
    """One element of ``torch.clamp(v, lo, hi)``: NaN in v, lo or hi gives NaN; lo > hi
    gives hi; -0.0 stays -0.0."""
    if v < lo or lo != lo:
        v = lo
    if v > hi or hi != hi:
        v = hi
    return v
