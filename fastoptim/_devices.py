"""Where arrays live: host NumPy arrays here, CUDA device arrays in ``_cuda``.

The optimizer and the functional API talk to arrays only through one of these
objects, so the same validation and state code serves the CPU and the GPU.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from . import _validation as V
from .flat import find_segment


def is_device_array(x) -> bool:
    """A CUDA array: anything with ``__cuda_array_interface__`` (Numba, CuPy, torch),
    or a device array of Numba's CUDA simulator (which has no such interface)."""
    if isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__cuda_array_interface__") or bool(getattr(type(x), "__cuda_ndarray__", False))


def is_array(x) -> bool:
    """A single array (host or device), as opposed to a list of them."""
    return isinstance(x, (np.ndarray, np.generic)) or is_device_array(x)


class ArraySupport:
    """What the optimizer needs to know about arrays; subclasses say where they live."""

    on_device = False

    def span(self, a):
        raise NotImplementedError

    def check_no_overlap(self, named_arrays, message=None):
        V.check_no_overlap([(name, self.span(a)) for name, a in named_arrays], message)

    def check_state(self, name, a, param, contiguous):
        """A state array a step will write: checked like a parameter, and of the
        parameter's shape and dtype."""
        self.check_param(name, a, contiguous)
        if tuple(a.shape) != tuple(param.shape) or np.dtype(a.dtype) != np.dtype(param.dtype):
            raise ValueError(f"{name} must have the shape and dtype of its parameter "
                             f"({tuple(param.shape)}, {np.dtype(param.dtype)})")

    @staticmethod
    def real_view(a):
        return a

    def check_reads_disjoint(self, reads, writes):
        V.check_reads_disjoint([(n, self.span(a)) for n, a in reads],
                               [(n, self.span(a)) for n, a in writes])


class HostArrays(ArraySupport):
    """NumPy arrays in host memory."""

    check_param = staticmethod(V.check_param)
    check_state = staticmethod(V.check_state_array)
    find_segment = staticmethod(find_segment)
    span = staticmethod(V.host_span)

    @staticmethod
    def real_view(a):
        """A plain ndarray view of ``a`` (np.matrix, np.memmap...); complex arrays
        (C-contiguous, checked) as a flat view of their real pairs."""
        if type(a) is not np.ndarray:
            a = a.view(np.ndarray)
        if a.dtype.kind == "c":
            a = a.reshape(-1).view(np.dtype(f"f{a.dtype.itemsize // 2}"))
        return a

    @staticmethod
    def check_grad(name, grad, param):
        """Check a gradient and return it ready for a kernel (contiguous)."""
        if isinstance(grad, np.generic):  # a NumPy scalar for a 0-d parameter
            grad = np.asarray(grad)
        V.check_grad(name, grad, param)
        if not param.flags.writeable:
            raise ValueError(f"the parameter of {name} has become read-only; it is updated in place")
        if not grad.flags.c_contiguous or not grad.flags.aligned:
            grad = np.ascontiguousarray(grad)  # read-only input: a contiguous copy is safe
        return grad

    @staticmethod
    def alloc(like, init):
        return np.zeros(like.shape, like.dtype) if init == "zeros" else np.empty(like.shape, like.dtype)

    @staticmethod
    def ravel(a):
        return a.reshape(-1)

    @staticmethod
    def kernel_views(arrays):
        """1-D views of the arrays one kernel call touches, or the arrays themselves
        when one of them is strided: only the (elementwise) NumPy reference accepts
        those, and a reshape would silently copy them."""
        real = HostArrays.real_view
        if all(a is None or a.flags.c_contiguous for a in arrays):
            return [None if a is None else real(a).reshape(-1) for a in arrays]
        return [None if a is None else real(a) for a in arrays]

    @staticmethod
    def step_counter(value=0.0):
        return np.array(value, dtype=np.float32)

    @staticmethod
    def to_host(a):
        return np.array(a, copy=True)

    @staticmethod
    def copy_into(dst, src):
        dst[...] = np.asarray(src, dtype=dst.dtype)


HOST = HostArrays()


def check_backend_fits(backend, on_device):
    """Only the cuda backend updates device arrays, and only it needs them."""
    if on_device != (backend == "cuda"):
        raise ValueError(
            f"backend {backend!r} cannot update "
            + ("CUDA device arrays" if on_device else "host NumPy arrays")
        )


def device_support(arrays, names=None):
    """The array support for ``arrays``: all on the host, or all on one CUDA device."""
    flags = [is_device_array(a) for a in arrays]
    if any(flags):
        if not all(flags):
            first_host = flags.index(False)
            label = names[first_host] if names else "an array"
            raise ValueError(
                f"{label} is a host array but others are CUDA device arrays; "
                "all parameters of one optimizer must live in the same place"
            )
        from . import _cuda

        return _cuda.DeviceArrays()
    return HOST


# ------------------------------------------------------------------ threads and fork
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
