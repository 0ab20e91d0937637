"""The bandwidth floor and Adam's compute bound: what the hardware allows a step.

The floor kernels read and write the same arrays as an optimizer step (same bytes
per element, same threads, same serial or parallel dispatch) and do no math; the
compute bound runs Adam's exact math with the data in L1.
"""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from fastoptim.backends import _pool, _threads
from fastoptim.backends import numba_backend as _nb
from fastoptim.backends._jit import kernel_pair

from .specs import BOUND_BLOCK_BYTES

# Same arrays, same bytes per element as the optimizer, a trivial add instead of the
# math (every array read is used, so nothing can be optimized away). Each is built
# twice: a plain prange loop, and the chunked, prefetching loop the numba backend
# runs (backends/_jit.py); the floor of a case is the faster of the two.

def _move2(lo, hi, p, g):
    p, g = p[lo:hi], g[lo:hi]
    for i in range(p.shape[0]):
        p[i] = p[i] + g[i]


def _move3(lo, hi, p, g, b):
    p, g, b = p[lo:hi], g[lo:hi], b[lo:hi]
    for i in range(p.shape[0]):
        b[i] = b[i] + g[i]
        p[i] = p[i] + g[i]


def _move4(lo, hi, p, g, m, v):
    p, g, m, v = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
    for i in range(p.shape[0]):
        m[i] = m[i] + g[i]
        v[i] = v[i] + g[i]
        p[i] = p[i] + g[i]


def _move5(lo, hi, p, g, m, v, w):
    p, g, m, v, w = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], w[lo:hi]
    for i in range(p.shape[0]):
        m[i] = m[i] + g[i]
        v[i] = v[i] + g[i]
        w[i] = w[i] + g[i]
        p[i] = p[i] + g[i]


FLOOR_VARIANTS = {"plain": "floor", "prefetch": "floor, prefetching",  # variant -> row label
                  "blocked": "floor, blocked"}
FLOOR_KERNELS = {  # arrays -> loop -> KernelPair (the "blocked" floor: either pair's .blocked)
    arrays: {"plain": kernel_pair(move, prefetching=False), "prefetch": kernel_pair(move)}
    for arrays, move in ((2, _move2), (3, _move3), (4, _move4), (5, _move5))
}


# The floor on a contestant's own arrays (``own_floor``): the same loops, each written
# array given back its own value (plus ``g - g``, +0 for a finite gradient), so the
# contestant's parameters and state stay as they were while the floor runs over the very
# memory the contestant's step does. Where an array lies in memory moves every kernel
# over it alike, by up to 10% on this machine (docs/benchmarks.md); the floor of the case
# runs on arrays of its own.

def _keep2(lo, hi, p, g):
    p, g = p[lo:hi], g[lo:hi]
    for i in range(p.shape[0]):
        p[i] = p[i] + (g[i] - g[i])


def _keep3(lo, hi, p, g, b):
    p, g, b = p[lo:hi], g[lo:hi], b[lo:hi]
    for i in range(p.shape[0]):
        zero = g[i] - g[i]
        b[i] = b[i] + zero
        p[i] = p[i] + zero


def _keep4(lo, hi, p, g, m, v):
    p, g, m, v = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
    for i in range(p.shape[0]):
        zero = g[i] - g[i]
        m[i] = m[i] + zero
        v[i] = v[i] + zero
        p[i] = p[i] + zero


def _keep5(lo, hi, p, g, m, v, w):
    p, g, m, v, w = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], w[lo:hi]
    for i in range(p.shape[0]):
        zero = g[i] - g[i]
        m[i] = m[i] + zero
        v[i] = v[i] + zero
        w[i] = w[i] + zero
        p[i] = p[i] + zero


OWN_FLOOR_KERNELS = {arrays: kernel_pair(keep) for arrays, keep in
                     ((2, _keep2), (3, _keep3), (4, _keep4), (5, _keep5))}


def own_floor(arrays):
    """``f()``: the no-math kernel over a contestant's own ``arrays`` (the parameter, the
    gradient, then the state arrays: every one but the gradient is written with the
    value it holds), dispatched as the backends dispatch a step of that size (serial,
    fastoptim's pool or the prefetching loop: ``numba_backend.run``)."""
    arrays = tuple(arrays)
    pair = OWN_FLOOR_KERNELS[len(arrays)]
    return lambda: _nb.run(pair, arrays, ())


def _parallel_min() -> int:
    return _threads.PARALLEL_MIN


def floor_kernel(arrays: int, n: int, variant: str = "prefetch"):
    """``f(*arrays)``: the no-math kernel for ``arrays`` arrays of ``n`` elements,
    serial below the thread policy's ``PARALLEL_MIN`` elements as the backends are.
    ``variant``: "plain" (a prange loop), "prefetch" (the backends' chunked loop) or
    "blocked" (the backends' loop for in-cache working sets: fastoptim's pool, in chunks,
    or one block per OpenMP thread without the C build)."""
    kernels = FLOOR_KERNELS[arrays]
    if n < _parallel_min() or _threads.parallel_threads() == 1:
        return lambda *a: kernels["plain"].run_serial(a, ())
    if variant == "blocked":
        pair, threads = kernels["prefetch"], _threads.parallel_threads()
        return lambda *a: _pool.run_in_cache(pair, a, (), threads)
    pair = kernels[variant]
    return lambda *a: pair.run_parallel(a, ())


# Adam's exact math (IEEE division and square root) with the data in L1: every thread
# updates its own block of BOUND_BLOCK_BYTES per array, over and over, with the numba
# backend's own serial Adam loop. What the arithmetic alone costs on this machine; a
# step cannot be faster than n elements at this rate, whatever the memory does.

_ADAM_SERIAL = _nb._ADAM.serial


@numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _adam_in_l1(p, g, m, v, scalars, threads, block, reps):
    for t in numba.prange(threads):
        lo = t * block
        hi = t * block + block
        for _ in range(reps):
            _ADAM_SERIAL(lo, hi, p, g, m, v, *scalars)


def adam_compute_bound(dtype, threads=None, repeat=5) -> float:
    """Seconds per element of Adam's math with the data in L1, all ``threads`` busy
    (the median of ``repeat`` measurements, each about 2 ms)."""
    from fastoptim.backends._scalars import adam_scalars

    dtype = np.dtype(dtype)
    threads = threads or _threads.parallel_threads()
    block = BOUND_BLOCK_BYTES // dtype.itemsize
    n = threads * block
    rng = np.random.default_rng(0)
    p = rng.random(n, dtype=dtype)
    g = (rng.random(n, dtype=dtype) - dtype.type(0.5)) * dtype.type(1e-2)
    m, v = np.zeros(n, dtype), np.full(n, 1e-6, dtype)
    scalars = (*adam_scalars(dtype, step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                             weight_decay=0, decoupled_weight_decay=False), False)
    _adam_in_l1(p, g, m, v, scalars, threads, block, 1)  # compile / load from cache
    reps = 64
    while True:
        t0 = time.perf_counter()
        _adam_in_l1(p, g, m, v, scalars, threads, block, reps)
        if time.perf_counter() - t0 > 1e-3 or reps > 2**20:
            break
        reps *= 2
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _adam_in_l1(p, g, m, v, scalars, threads, block, reps)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / (n * reps)
