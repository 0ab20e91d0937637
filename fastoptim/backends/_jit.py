"""Numba compile options, defined once so every CPU kernel is built the same way.

- ``cache=True``: compiled machine code is kept on disk; a warm start skips LLVM.
- ``error_model="numpy"``: division by zero gives inf/nan as NumPy does; the default
  "python" model inserts a check that stops the loop from vectorizing.
- no ``fastmath``: its ``nnan``/``ninf`` flags would change NaN/Inf results, and
  ``contract``/``arcp`` would round differently from the NumPy reference.
- ``nogil=True``: two optimizers can step concurrently from two threads.

Decorator options such as ``parallel`` are not part of Numba's cache key: two
builds of one Python function (serial and parallel) would share one cache
entry, and the second would silently load the first. ``serial_and_parallel``
therefore compiles two renamed copies of the function, each with its own
cache entry. (The cache is also keyed on the source file of the compiled
function only: after editing ``_math.py`` alone, clear ``__pycache__``.)
"""
import types

import numba

SERIAL = dict(cache=True, error_model="numpy", nogil=True)
PARALLEL = dict(SERIAL, parallel=True)

njit_inline = numba.njit(inline="always", **SERIAL)


def _renamed(func, suffix):
    """A copy of ``func`` whose qualified name (Numba's cache key) ends in ``suffix``."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__module__ = func.__module__
    copy.__doc__ = func.__doc__
    return copy


def serial_and_parallel(func, **extra):
    """(serial, parallel) builds of ``func``, cached separately; ``prange`` is
    a plain ``range`` in the serial one. ``extra`` adds jit options to both."""
    return (numba.njit(**dict(SERIAL, **extra))(_renamed(func, "_serial")),
            numba.njit(**dict(PARALLEL, **extra))(_renamed(func, "_parallel")))
