r"""Gradient norms and clipping with the semantics of ``torch.nn.utils`` (torch 2.13).

    >>> import numpy as np
    >>> from fastoptim.clip import clip_grad_norm_, total_norm
    >>> grads = [np.array([3.0, 0.0], np.float32), np.array([4.0], np.float32)]
    >>> total_norm(grads)
    5.0
    >>> clip_grad_norm_(grads, max_norm=1.0)  # returns the norm before clipping
    5.0
    >>> grads[0]  # scaled by 1 / (5 + 1e-6), as torch does
    array([0.5999999, 0.       ], dtype=float32)

What torch does, and so what this module does:

* The total norm is the p-norm of the per-array p-norms, as if every gradient
  were concatenated into one vector (``torch.nn.utils.get_total_norm``). Each
  per-array norm is rounded to the array's dtype; the total is in the promoted
  dtype (float64 if any gradient is float64, else float32) and returned as a
  Python float.
* ``norm_type``: any real p (``p > 0``), ``inf`` (max abs), ``-inf`` (min abs),
  negative p, or ``0``. torch's 0-"norm" of the per-array counts of non-zeros is
  the number of **arrays** that hold a non-zero (NaN counts as non-zero).
  Strings such as ``"inf"`` are accepted, as torch's ``float(norm_type)`` does.
* NaN and Inf propagate: a NaN gradient gives a NaN norm (except for the
  0-norm), an Inf one an Inf norm (or 0 for negative p). As in torch, squares
  are formed in the gradient's dtype, so float32 values above ~1.8e19 overflow
  to an infinite 2-norm, and the sums round to the dtype before the root.
  Sums are accumulated in float64 (torch accumulates float32 sums in float32),
  so results agree with torch to ~1e-6 relative in float32, ~1e-15 in float64,
  not bit for bit.
* ``clip_grad_norm_`` scales every gradient in place by
  ``clamp(max_norm / (total_norm + 1e-6), max=1)``, computed as torch does: in
  the total norm's dtype, as ``reciprocal(total_norm + 1e-6) * max_norm``; each
  gradient is multiplied by that coefficient rounded to its own dtype. Given the
  same total norm, the clipped gradients are bit-identical to torch's. A
  negative or NaN ``max_norm`` is accepted, as torch does (the gradients are
  then flipped or become NaN). With ``error_if_nonfinite=True`` a NaN/Inf total
  norm raises torch's ``RuntimeError`` and the gradients are left unchanged.
* ``clip_grad_value_`` clamps in place to ``[-clip_value, clip_value]``
  (NaN gradients stay NaN; a NaN ``clip_value`` makes every gradient NaN).

Differences from torch (all on degenerate inputs): an empty array contributes 0
to the ``inf`` norm (torch raises because max has no identity); ``-inf`` and
negative-p norms of an empty array raise ``ValueError`` (torch: RuntimeError).

Gradients may be a list (``None`` entries are skipped, like a missing
``.grad``), a single array, a dict (its values) or ``FlatParams.grads`` (the
whole ``.buffer`` is read or scaled in one call). They must be float32/float64
NumPy arrays, or C-contiguous complex64/complex128 ones, read and scaled as their
pairs of reals (``TypeError`` otherwise, naming the argument); the clipping
functions update them in place, so read-only arrays raise ``ValueError``. CUDA
device arrays (anything with ``__cuda_array_interface__``) are reduced and
scaled on the device (``backends/_reduce_cuda.py``: sums in the gradient's dtype,
as torch, in a fixed order, so norms are bit-reproducible); these functions return a
Python float, so they copy the per-block partial sums back (one wait for the
GPU). An optimizer's ``max_grad_norm`` keeps the norm on the device instead.

Arguments follow torch's positional order (``clip_grad_norm_(grads, max_norm,
norm_type, error_if_nonfinite, foreach)``, ``get_total_norm(grads, norm_type,
error_if_nonfinite, foreach)``); ``foreach`` (None, False or True) changes nothing
here, and ``backend`` is keyword-only.

Backends: this module holds torch's semantics only (arguments, the per-array
and total norms' rounding and roots, the coefficient, ``error_if_nonfinite``);
the reductions, the non-finite check, the scaling and the clamp are the
backend's operations (``norm_stats``, ``all_finite``, ``scale_``, ``clamp_``,
see ``fastoptim/backends/__init__.py``), picked by ``backends.resolve`` as for
an optimizer step: ``"auto"`` (numba, else c, else numpy; ``"cuda"`` for device
arrays), ``"numba"`` (float64 sums over fixed blocks, in parallel for large
arrays, bit-identical for any thread count), ``"numpy"`` (the reference) or
``"c"`` (numba's operations, numpy's without numba: there are no C reduction
kernels), so an optimizer's ``backend`` can be passed through unchanged.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _validation as V
from . import backends
from .arrays import FlatGradDict, FlatGrads, is_device_array
from .backends._clip_math import COUNT, MIN_ABS, SUM_ABS, SUM_POW, SUM_SQ
from .backends._clip_math import mode as _mode

__all__ = [
    "total_norm", "get_total_norm", "norm_and_finite", "clip_grad_norm_",
    "clip_grads_with_norm_", "clip_grad_value_", "clip_coef",
]

EPS = 1e-6  # torch's clip_grad_norm_ adds this to the norm before dividing

_NONFINITE_MESSAGE = (
    "The total norm of order {} for gradients from `parameters` is non-finite, so it cannot "
    "be clipped. To disable this error and scale the gradients by the non-finite norm anyway, "
    "set `error_if_nonfinite=False`"
)


# --------------------------------------------------------------------------- arguments
def _norm_type(norm_type) -> float:
    if isinstance(norm_type, (bool, np.bool_)):
        raise TypeError("norm_type must be a real number or 'inf', but got bool")
    if isinstance(norm_type, str):
        try:
            p = float(norm_type)
        except ValueError:
            raise ValueError(f"Invalid norm_type: {norm_type!r} (a real number or 'inf')") from None
    elif isinstance(norm_type, numbers.Real):
        p = float(norm_type)
    else:
        raise TypeError(f"norm_type must be a real number or 'inf', but got {type(norm_type).__name__}")
    if math.isnan(p):
        raise ValueError("Invalid norm_type: nan")
    return p


def _real(name, value) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return V._real(name, value)


class _Grads:
    """The gradients of one call, checked: host NumPy arrays or device arrays, never mixed."""

    __slots__ = ("arrays", "labels", "views", "on_device")

    def __init__(self, grads, *, writable, argname="grads"):
        self.views = None  # FlatParams.grads: the per-parameter views, for per-array norms
        buffer = getattr(grads, "buffer", None)
        if isinstance(grads, (FlatGrads, FlatGradDict)) and (
                isinstance(buffer, np.ndarray) or is_device_array(buffer)):
            self.views = list(grads.values() if isinstance(grads, dict) else grads)
            items = [(f"{argname}.buffer", grads.buffer)]
        elif isinstance(grads, np.ndarray) or is_device_array(grads):
            items = [(argname, grads)]
        elif isinstance(grads, dict):
            items = [(f"{argname}[{k!r}]", g) for k, g in grads.items()]
        elif grads is None or isinstance(grads, (str, bytes, numbers.Number)):
            raise TypeError(
                f"{argname} must be an array, a list or dict of arrays, or FlatParams.grads, "
                f"but got {type(grads).__name__}"
            )
        else:
            try:
                grads = list(grads)
            except TypeError:
                raise TypeError(
                    f"{argname} must be an array, a list or dict of arrays, or FlatParams.grads, "
                    f"but got {type(grads).__name__}"
                ) from None
            items = [(f"{argname}[{i}]", g) for i, g in enumerate(grads)]
        items = [(name, g) for name, g in items if g is not None]
        flags = [is_device_array(g) for _, g in items]
        self.on_device = bool(items) and flags[0]
        if any(f != self.on_device for f in flags):
            raise ValueError(f"{argname} mixes host NumPy arrays and CUDA device arrays")
        if self.on_device:
            from .arrays import device as _cuda

            for name, g in items:
                d = _cuda._desc(g)
                if d.dtype not in V.FLOAT_DTYPES:
                    raise TypeError(f"{name} has dtype {d.dtype}; fastoptim handles float32 and float64 gradients")
                if writable and d.readonly:
                    raise ValueError(f"{name} is read-only; gradients are clipped in place")
                if d.strides is not None:
                    raise ValueError(f"{name} is not C-contiguous; pass a contiguous device array")
            self.arrays = [_cuda.as_device(g) for _, g in items]
        else:
            for k, (name, g) in enumerate(items):
                if (isinstance(g, np.ndarray) and g.dtype in V.COMPLEX_DTYPES
                        and g.flags.c_contiguous):  # complex: its real pairs (torch's norm)
                    items[k] = (name, g := g.view(np.ndarray).reshape(-1).view(
                        np.dtype(f"f{g.dtype.itemsize // 2}")))
                if isinstance(g, np.generic) and not writable:
                    items[k] = (name, g := np.asarray(g))  # a NumPy scalar, read as a 0-d array
                if isinstance(g, np.generic):
                    raise TypeError(
                        f"{name} is a NumPy scalar, not an array: it cannot be clipped in place"
                    )
                if not isinstance(g, np.ndarray):
                    raise TypeError(
                        f"{name} must be a NumPy float32/float64 array (or a CUDA device array), "
                        f"but got {type(g).__name__}"
                    )
                if g.dtype not in V.FLOAT_DTYPES:
                    raise TypeError(f"{name} has dtype {g.dtype}; fastoptim handles float32 and float64 gradients")
                if writable and not g.flags.writeable:
                    raise ValueError(f"{name} is read-only; gradients are clipped in place")
            self.arrays = [g for _, g in items]
        self.labels = [name for name, _ in items]

    def dtype(self, i):
        a = self.arrays[i]
        return a.dtype if isinstance(a, np.ndarray) else np.dtype(a.dtype)

    def result_dtype(self):
        if any(self.dtype(i) == np.float64 for i in range(len(self.arrays))):
            return np.dtype(np.float64)
        return np.dtype(np.float32)


def _backend(backend, on_device):
    """The backend module whose operations (``norm_stats``, ``all_finite``, ``scale_``,
    ``clamp_``: see ``backends/__init__``) reduce and scale these gradients."""
    if isinstance(backend, str) and backend in backends.ALL_BACKENDS and (
            on_device != (backend == "cuda")):
        raise ValueError(
            f"backend {backend!r} cannot handle "
            + ("CUDA device arrays" if on_device else "host NumPy arrays")
        )
    return backends.load(backends.resolve(backend, on_device))


def _quiet():
    return np.errstate(all="ignore")


# ----------------------------------------------------------------------- the norm
def _root(s, p, mode, dtype):
    """torch's finish of vector_norm: the sums rounded to ``dtype``, then the 1/p power in ``dtype``."""
    t = dtype.type
    with _quiet():
        s = np.asarray(s, dtype=np.float64).astype(dtype)
        if mode == SUM_SQ:
            return np.sqrt(s)
        if mode == SUM_ABS:
            return s
        if mode == SUM_POW:
            return s ** t(1.0 / p)
        return s  # max/min abs and counts are exact in the dtype


def _stats(g: _Grads, mode, p, ops, want_finite):
    """Per-array statistics (float64 array) and whether every element is finite."""
    if mode == MIN_ABS or (mode == SUM_POW and p < 0):
        for i, x in enumerate(g.arrays):
            if _size(x) == 0:  # torch: min has no identity
                raise ValueError(_empty_message(p, g.labels[i]))
    return ops.norm_stats(g.arrays, p, want_finite)


def _empty_message(p, label):
    return (f"cannot compute the {p} norm of {label}: it is empty and the operation "
            "does not have an identity")


def _total(g: _Grads, p, ops, want_finite):
    """(total norm as a float, its dtype, all elements finite)."""
    if not g.arrays:
        return 0.0, np.dtype(np.float32), True
    mode = _mode(p)
    if g.views is not None and (p <= 0 or mode == MIN_ABS):
        # FlatParams.grads: these norms depend on the per-parameter split
        per_view = _Grads.__new__(_Grads)
        per_view.arrays, per_view.views, per_view.on_device = g.views, None, g.on_device
        per_view.labels = [f"{g.labels[0]}[{i}]" for i in range(len(g.views))]
        return _total(per_view, p, ops, want_finite)
    stats, finite = _stats(g, mode, p, ops, want_finite)
    result = g.result_dtype()
    # per-array norms, each rounded to its array's dtype, as torch's per-tensor norms
    dtypes = [g.dtype(i) for i in range(len(g.arrays))]
    norms = np.empty(len(stats), dtype=result)
    for dtype in set(dtypes):
        sel = np.fromiter((d == dtype for d in dtypes), dtype=bool, count=len(dtypes))
        norms[sel] = _root(stats[sel], p, mode, dtype)
    # the norm of the vector of norms, in the result dtype (torch.stack + vector_norm)
    total = _root(backends.load("numpy").norm_stats([norms], p)[0][0], p, mode, result)
    if mode == COUNT:
        total = result.type(total)
    return float(total), result, finite


def _size(x):
    return x.size if isinstance(x, np.ndarray) else int(np.prod(x.shape))


# ----------------------------------------------------------------------- public API
def _check_foreach(foreach):
    """torch's ``foreach`` switch: None, False or True, all the same here (one implementation)."""
    if foreach is not None and not isinstance(foreach, (bool, np.bool_)):
        raise TypeError(f"foreach must be a bool or None, but got {type(foreach).__name__}")


def total_norm(grads, norm_type=2.0, error_if_nonfinite=False, foreach=None, *,
               backend="auto") -> float:
    """The total ``norm_type``-norm of ``grads``, as ``torch.nn.utils.get_total_norm``
    (torch's argument order: ``error_if_nonfinite`` third, ``foreach`` fourth).

    Args:
        grads: an array, a list/tuple/iterable of arrays (``None`` entries are
            skipped), a dict of arrays, or ``FlatParams.grads``.
        norm_type: p (float), ``inf``/``"inf"``, ``-inf`` or 0 (see the module doc).
        error_if_nonfinite: raise torch's ``RuntimeError`` if the norm is NaN/Inf.
        foreach: torch's implementation switch; None, False and True all give
            the same result here.
        backend (keyword): "auto", "numba", "numpy", "c" (numba's kernels) or "cuda".

    Returns:
        The norm as a Python float (0.0 for no gradients), rounded to float32
        unless a gradient is float64.
    """
    p = _norm_type(norm_type)
    V._flag("error_if_nonfinite", error_if_nonfinite)
    _check_foreach(foreach)
    g = _Grads(grads, writable=False)
    norm, _, _ = _total(g, p, _backend(backend, g.on_device), False)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(_NONFINITE_MESSAGE.format(p))
    return norm


get_total_norm = total_norm  # torch's name


def norm_and_finite(grads, norm_type=2.0, backend="auto"):
    """``(total_norm(grads, norm_type), every element of every gradient is finite)``.

    One read of the gradients for ``p > 0`` and ``inf`` (a finite norm proves
    every element finite; only a non-finite norm costs a second look); other
    norm types check finiteness in a separate pass. An overflowing norm of
    finite values (float32 entries above ~1.8e19 squared) is ``(inf, True)``.
    """
    p = _norm_type(norm_type)
    g = _Grads(grads, writable=False)
    norm, _, finite = _total(g, p, _backend(backend, g.on_device), True)
    return norm, finite


def clip_coef(max_norm, total_norm, dtype=np.float32):
    """torch's clipping factor ``clamp(max_norm / (total_norm + 1e-6), max=1)`` in ``dtype``.

    Computed as torch evaluates it (``Tensor.__rtruediv__`` is a reciprocal
    then a multiply), in ``dtype`` (the total norm's: float64 if any gradient
    is float64, else float32). Returned as a NumPy scalar of ``dtype``; a NaN
    total norm or ``max_norm`` gives NaN, an infinite norm 0.
    """
    t = np.dtype(dtype).type
    with _quiet():
        coef = (t(1.0) / (t(total_norm) + t(EPS))) * t(max_norm)
    return coef if not coef > 1 else t(1.0)  # torch.clamp(max=1) keeps NaN


def _scale(g: _Grads, coef, ops):
    for x in g.arrays:  # the coefficient rounded to each gradient's dtype, as torch
        ops.scale_(x, np.dtype(x.dtype).type(coef))


def _check_no_overlap(g: _Grads):
    from .arrays import device_support

    try:
        device_support(g.arrays).check_no_overlap(list(zip(g.labels, g.arrays)))
    except ValueError:
        raise ValueError(
            "some gradients appear more than once or overlap in memory; clipping would "
            "scale the shared memory twice"
        ) from None


def clip_grads_with_norm_(grads, max_norm, total_norm, foreach=None, *, backend="auto") -> None:
    """Scale ``grads`` in place by :func:`clip_coef` of a precomputed total norm
    (``torch.nn.utils.clip_grads_with_norm_``, same argument order)."""
    _check_foreach(foreach)
    max_norm = _real("max_norm", max_norm)
    total_norm_ = _real("total_norm", total_norm)
    g = _Grads(grads, writable=True)
    ops = _backend(backend, g.on_device)
    if not g.arrays:
        return
    _check_no_overlap(g)
    coef = clip_coef(max_norm, total_norm_, g.result_dtype())
    if coef != 1:  # multiplying by exactly 1 changes no bit: skip the pass
        _scale(g, coef, ops)


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None, *,
                    backend="auto") -> float:
    """Clip the total norm of ``grads`` to ``max_norm`` in place; return the total norm
    before clipping (``torch.nn.utils.clip_grad_norm_``).

    Every gradient is multiplied by ``min(max_norm / (total_norm + 1e-6), 1)``
    (see :func:`clip_coef`), so gradients are only ever scaled down. With
    ``error_if_nonfinite=True``, a NaN/Inf total norm raises ``RuntimeError``
    (torch's message) and no gradient is changed; otherwise, as in torch, a NaN
    norm makes every gradient NaN and an Inf norm zeroes the finite entries.
    Everything is checked before any gradient is written.

    Args:
        grads: an array, a list/tuple of arrays (``None`` skipped), a dict of
            arrays or ``FlatParams.grads`` (scaled through ``.buffer`` in one call).
            Writable float32/float64 arrays, no two sharing memory.
        max_norm (float): the largest allowed total norm.
        norm_type: as :func:`total_norm`.
        error_if_nonfinite (bool): raise instead of clipping by a NaN/Inf norm.
        foreach: torch's implementation switch (None, False or True: the same here).
        backend (keyword): "auto", "numba", "numpy", "c" or "cuda".
    """
    _check_foreach(foreach)
    max_norm = _real("max_norm", max_norm)
    p = _norm_type(norm_type)
    V._flag("error_if_nonfinite", error_if_nonfinite)
    g = _Grads(grads, writable=True)
    ops = _backend(backend, g.on_device)
    if not g.arrays:
        return 0.0
    _check_no_overlap(g)
    norm, result, _ = _total(g, p, ops, False)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(_NONFINITE_MESSAGE.format(p))
    coef = clip_coef(max_norm, norm, result)
    if coef != 1:
        _scale(g, coef, ops)
    return norm


def clip_grad_value_(grads, clip_value, foreach=None, *, backend="auto") -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``
    (``torch.nn.utils.clip_grad_value_``, same argument order).

    NaN entries stay NaN; a negative ``clip_value`` sets everything to
    ``clip_value`` and a NaN one sets everything to NaN, as ``torch.clamp`` does.
    """
    _check_foreach(foreach)
    clip_value = _real("clip_value", clip_value)
    g = _Grads(grads, writable=True)
    ops = _backend(backend, g.on_device)
    for x in g.arrays:
        t = np.dtype(x.dtype).type
        ops.clamp_(x, t(-clip_value), t(clip_value))
