"""C backend: the kernels of ``kernels/fastoptim.c``, compiled by cffi at install time.

Importing this module fails with ImportError when the extension was not built
(no C compiler at install time); the dispatcher then leaves ``"c"`` out of
``available_backends()``. cffi's ``from_buffer`` accepts any dtype, so the
dispatcher checks dtype, contiguity and alignment before a call reaches here.
"""
from __future__ import annotations

import numpy as np

from fastoptim._ckernels import ffi, lib  # ImportError when not compiled

from . import _constants, _threads
from ._scalars import adam_scalars, lion_scalars, sgd_scalars

name = "c"


def stale_constants() -> list:
    """The shared constants (``_constants.py``) whose value in the compiled C kernels
    (``lib.FO_<NAME>``, from the generated ``kernels/fo_constants.h``) is not Python's."""
    return [key for key, value in vars(_constants).items()
            if key.isupper() and type(value) is int and getattr(lib, "FO_" + key, None) != value]


if stale_constants():  # built before _constants.py was edited: the kernels would disagree
    raise ImportError(f"stale C build: its {', '.join(stale_constants())} differ from "
                      "fastoptim/backends/_constants.py; rebuild it (pip install .)")
lib.fo_set_dispatch(_threads.PARALLEL_MIN, _threads.pool_max_bytes())  # the one thread policy

_C = {
    np.dtype(np.float32): ("float[]", lib.fo_sgd_f32, lib.fo_adam_f32),
    np.dtype(np.float64): ("double[]", lib.fo_sgd_f64, lib.fo_adam_f64),
}
_LION = {np.dtype(np.float32): lib.fo_lion_f32, np.dtype(np.float64): lib.fo_lion_f64}


def sgd(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=1.0):
    ctype, kernel, _ = _C[param.dtype]
    s = sgd_scalars(param.dtype, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, grad_scale=grad_scale)
    buf = ffi.NULL if momentum_buffer is None else ffi.from_buffer(ctype, momentum_buffer)
    kernel(ffi.from_buffer(ctype, param), ffi.from_buffer(ctype, grad), buf, param.shape[0],
           *s, bool(first_step), bool(nesterov), bool(maximize))


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
         eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=1.0):
    ctype, _, kernel = _C[param.dtype]
    s = adam_scalars(param.dtype, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                     grad_scale=grad_scale)
    vmax = ffi.NULL if max_exp_avg_sq is None else ffi.from_buffer(ctype, max_exp_avg_sq)
    kernel(ffi.from_buffer(ctype, param), ffi.from_buffer(ctype, grad),
           ffi.from_buffer(ctype, exp_avg), ffi.from_buffer(ctype, exp_avg_sq), vmax,
           param.shape[0], *s, bool(amsgrad), bool(maximize))


def lion(param, grad, exp_avg, *, lr, beta1, beta2, weight_decay, maximize, grad_scale=1.0):
    ctype = _C[param.dtype][0]
    s = lion_scalars(param.dtype, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                     grad_scale=grad_scale)
    _LION[param.dtype](ffi.from_buffer(ctype, param), ffi.from_buffer(ctype, grad),
                       ffi.from_buffer(ctype, exp_avg), param.shape[0], *s, bool(maximize))


def set_num_threads(n: int) -> None:
    """OpenMP threads of the calling thread; prefer ``fastoptim.set_num_threads``."""
    lib.fo_openmp_set_threads(n)


def set_dispatch(parallel_min: int, blocked_max_bytes: int) -> None:
    lib.fo_set_dispatch(parallel_min, blocked_max_bytes)


def max_threads() -> int:
    return lib.fo_openmp_max_threads()


# gradient norms and clipping (clip.py's operations, see backends/__init__): numba's, or
# numpy's without numba (no C kernels of their own; _reduce_c.py)
from ._reduce_c import all_finite, clamp_, norm_stats, scale_  # noqa: E402,F401
