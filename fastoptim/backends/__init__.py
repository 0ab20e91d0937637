"""Backend registry: every backend module exports ``sgd`` and ``adam`` with one signature.

    sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0)
    adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0)

``grad_scale`` multiplies the gradient before anything else (gradient clipping
folded into the update; 1.0 is an exact no-op).

Arrays are 1-D, contiguous, aligned, non-overlapping and of the parameter's dtype
(the callers in ``functional`` and ``optimizers`` check this before any kernel
runs); ``momentum_buffer`` / ``max_exp_avg_sq`` may be None when unused.

The gradient operations of ``fastoptim.clip`` (and of ``max_grad_norm`` /
``skip_nonfinite``) have one signature too:

    norm_stats(arrays, norm_type, check_finite=False) -> (stats, finite)
    all_finite(arrays) -> bool
    scale_(x, factor)
    clamp_(x, lo, hi)

``norm_stats``: per array, the statistic of torch's ``vector_norm`` before its
root (``_clip_math.mode``): the sum of ``x * x`` (norm_type 2), of ``|x|`` (1)
or of ``|x| ** p`` (other p), the terms in the array's dtype; ``max |x|``
(inf; 0 for an empty array), ``min |x|`` (-inf); the count of non-zeros (0).
NaN propagates into max and min. ``stats`` is a float64 NumPy array, one
entry per array; ``finite`` is whether every element of every array is
finite when ``check_finite``, else None. Sums are float64 on the CPU, in the
array's dtype on CUDA (as torch's). ``scale_`` multiplies ``x`` in place by
``factor`` (of x's dtype); ``clamp_`` is ``torch.clamp(x, lo, hi)`` in place
(NaN in x or a bound gives NaN, lo > hi gives hi). Host arrays may have any
shape and layout (the fast kernels read contiguous 1-D views); device arrays
are contiguous. The caller (``clip.py``) checks dtypes, writability, overlap
and empty arrays for the norms without an identity (min, negative p).
Backends are imported lazily, so ``import fastoptim`` stays cheap and a backend
that cannot load (no compiled C module, no GPU) is simply not available.
"""
from __future__ import annotations

import importlib
import warnings

REFERENCE = "numpy"
CPU_BACKENDS = ("numpy", "numba", "c")  # reference first
ALL_BACKENDS = CPU_BACKENDS + ("cuda",)
# backend="auto" on the CPU: the fastest one that loads (see README: numba and c
# both reach the memory-bandwidth floor; numba first, C is the fallback).
AUTO_CPU_ORDER = ("numba", "c", "numpy")

_MODULES = {
    "numpy": "fastoptim.backends.numpy_backend",
    "numba": "fastoptim.backends.numba_backend",
    "c": "fastoptim.backends.c_backend",
    "cuda": "fastoptim.backends.cuda_backend",
}
_loaded: dict = {}
_failed: dict = {}


def load(name: str):
    """The backend module ``name``; ValueError if unknown, RuntimeError if it cannot load here."""
    if name not in _MODULES:
        raise ValueError(
            f"Unknown backend: {name!r}; expected 'auto' or one of {', '.join(ALL_BACKENDS)}"
        )
    if name in _loaded:
        return _loaded[name]
    if name not in _failed:
        try:
            module = importlib.import_module(_MODULES[name])
            if not getattr(module, "usable", lambda: True)():
                raise ImportError(getattr(module, "why_unusable", lambda: "not usable")())
            _loaded[name] = module
            return module
        except ImportError as exc:
            _failed[name] = str(exc)
            if name == "c":
                warnings.warn(
                    "fastoptim's C kernels are not compiled in this installation "
                    f"({exc}); the 'c' backend is unavailable.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    raise RuntimeError(f"Backend {name!r} is not available on this machine: {_failed[name]}")


def is_available(name: str) -> bool:
    try:
        load(name)
        return True
    except (RuntimeError, ValueError):
        return False


def available_backends() -> list[str]:
    """Names of the backends that work on this machine, the NumPy reference first."""
    return [name for name in ALL_BACKENDS if is_available(name)]


def resolve(name: str, on_device: bool = False) -> str:
    """Turn ``"auto"`` into a concrete backend name and check that it is available."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, but got {type(name).__name__}")
    if name == "auto":
        if on_device:
            name = "cuda"
        else:
            name = next(n for n in AUTO_CPU_ORDER if is_available(n))
    load(name)
    return name
