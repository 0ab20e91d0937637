"""Numba compile options, defined once so every CPU kernel is built the same way.

- ``cache=True``: compiled machine code is kept on disk; a warm start skips LLVM.
- ``error_model="numpy"``: division by zero gives inf/nan as NumPy does; the default
  "python" model inserts a check that stops the loop from vectorizing.
- no ``fastmath``: its ``nnan``/``ninf`` flags would change NaN/Inf results, and
  ``contract``/``arcp`` would round differently from the NumPy reference.
- ``nogil=True``: two optimizers can step concurrently from two threads.
Decorator options are not part of Numba's cache key: never switch them at run time.
"""
import numba

SERIAL = dict(cache=True, error_model="numpy", nogil=True)
PARALLEL = dict(SERIAL, parallel=True)

njit_inline = numba.njit(inline="always", **SERIAL)
njit_serial = numba.njit(**SERIAL)
njit_parallel = numba.njit(**PARALLEL)
