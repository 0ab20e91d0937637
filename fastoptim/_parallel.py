"""Parallel kernels, threads and fork: when a step may run Numba's or the C kernels' threads.

(Moved out of the old ``_devices`` module, which also held the array support now
in ``fastoptim.arrays``.) Imports nothing of fastoptim: the backends, the
optimizers and clipping ask it, never the other way round.
"""
from __future__ import annotations

import contextlib
import os
import threading

# Numba's ``workqueue`` threading layer (its fallback where neither OpenMP nor TBB
# loads) is not thread-safe: two parallel kernels launched at once from two
# threads abort the process ("Concurrent access has been detected"). Until a
# parallel kernel has run, the layer is unknown, so steps on the numba backend
# take this lock until then, and for good if the layer turns out to be workqueue.
_PARALLEL_LOCK = threading.RLock()
_layer = None  # Numba's threading layer once known


def _numba_layer():
    global _layer
    if _layer is None:
        import sys

        numba = sys.modules.get("numba")
        if numba is not None:
            try:
                _layer = numba.threading_layer()
            except ValueError:  # no parallel kernel has run yet
                pass
    return _layer


def parallel_guard(backend="numba"):
    """A context for a step on ``backend``: the process-wide lock where Numba's
    threading layer needs it (workqueue, or not chosen yet), else nothing."""
    if backend == "numba" and _numba_layer() in (None, "workqueue"):
        return _PARALLEL_LOCK
    return contextlib.nullcontext()


# fork() after a parallel step: GNU OpenMP (the C kernels, Numba's omp layer) cannot run
# a parallel region in a child forked from a process that has run one (the child
# hangs, or Numba kills it). Such a child therefore runs the serial kernels: the
# same results, one thread. The spawn and forkserver start methods keep parallelism.
_parallel_used = set()  # the backends that may have run parallel kernels in this process
_serial_only = False  # True in a child forked after a parallel step


def note_parallel(backend):
    """Record that ``backend`` may run its parallel kernels in this process."""
    if backend in ("numba", "c") and backend not in _parallel_used:
        _parallel_used.add(backend)


def serial_only() -> bool:
    """True in a process forked after a parallel step: run serial kernels only."""
    return _serial_only


def _after_fork_in_child():
    global _PARALLEL_LOCK, _serial_only
    _PARALLEL_LOCK = threading.RLock()  # a lock held by a parent's thread would never free
    if _parallel_used:
        _serial_only = True
        import sys

        c_backend = sys.modules.get("fastoptim.backends.c_backend")
        if c_backend is not None:
            try:
                c_backend.set_num_threads(1)  # one thread: no OpenMP team is started
            except Exception:  # pragma: no cover - nothing else to do in a fork hook
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
