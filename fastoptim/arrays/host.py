"""Host arrays: what the optimizer needs to know about NumPy arrays, and the layout checks.

The bottom of ``fastoptim.arrays`` (it imports nothing above it). The optimizer
and the functional API talk to arrays only through an :class:`ArraySupport`:
:class:`HostArrays` here, ``device.DeviceArrays`` for CUDA device arrays; so the
same validation and state code serves the CPU and the GPU. Also here:
:func:`is_device_array` (the one test for "this is a CUDA array", which needs no
``numba.cuda``) and :func:`find_segment` (do these parameters tile one buffer?).
"""
from __future__ import annotations

import numpy as np

from .. import _validation as V


def is_device_array(x) -> bool:
    """A CUDA array: anything with ``__cuda_array_interface__`` (Numba, CuPy, torch),
    or a device array of Numba's CUDA simulator (which has no such interface but
    marks its class with ``__cuda_ndarray__``). Imports nothing: host code asks
    this before anything loads ``numba.cuda``."""
    if isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__cuda_array_interface__") or bool(getattr(type(x), "__cuda_ndarray__", False))


def is_array(x) -> bool:
    """A single array (host or device), as opposed to a list of them."""
    return isinstance(x, (np.ndarray, np.generic)) or is_device_array(x)


def root_of(a):
    """The NumPy array that owns the memory ``a`` views (``a`` itself when it owns it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def find_segment(params):
    """If ``params`` tile one C-contiguous buffer in order, return (root, start, flat_view).

    ``root`` is the base array they view, ``start`` the element offset of the
    first one in it, and ``flat_view`` a 1-D view over all of them. Returns None
    when they do not (different buffers, gaps, other dtypes, non-contiguous).
    """
    if not params or not all(isinstance(p, np.ndarray) for p in params):
        return None
    params = [p if type(p) is np.ndarray else p.view(np.ndarray) for p in params]
    dtype = params[0].dtype
    root = root_of(params[0])
    if not root.flags.c_contiguous:
        return None
    root_addr = root.__array_interface__["data"][0]
    expected = params[0].__array_interface__["data"][0]
    first = expected
    for p in params:
        if (p.dtype != dtype or not p.flags.c_contiguous or root_of(p) is not root
                or p.__array_interface__["data"][0] != expected):
            return None
        expected += p.nbytes
    start_byte = first - root_addr
    if start_byte % dtype.itemsize:
        return None
    flat = root.view(np.ndarray).reshape(-1).view(np.uint8)[start_byte:expected - root_addr].view(dtype)
    return root, start_byte // dtype.itemsize, flat


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
