"""CUDA device arrays: the device twin of ``host.HostArrays``, and the CUDA side's one namespace.

Loaded only when needed (``arrays.support.device_support`` when it sees a device
array, ``FlatParams(device="cuda")``, the ``cuda`` backend), so ``import
fastoptim`` never imports ``numba.cuda``. What lives here:

- :class:`DeviceArrays` (checks, allocation, views, host copies), used by the
  optimizers and the functional API; :class:`DeviceStep`, the step counter of a
  CUDA optimizer.
- array descriptors read from ``__cuda_array_interface__`` (``_desc``: address,
  shape, dtype, strides), the device that holds an array (:func:`device_id`),
  and the registry of ``FlatParams`` device buffers (views of one of them are
  one segment: one launch per group).

Every other name of the CUDA runtime (``configured``, the streams,
``is_available``, ``SIMULATOR``, ...) lives in ``cuda_runtime`` and is reached
through this module too (``device.configured``): callers import one module for
the CUDA side, and the runtime below it never imports this one.
"""
from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from .._validation import FLOAT_DTYPES
from . import cuda_runtime
from .cuda_runtime import (
    SIMULATOR,
    _NativeArray,
    as_device,
    cuda,
    current_device_id,
    fill,
    get_stream,
)
from .host import ArraySupport, find_segment, is_device_array

__all__ = ["DeviceArrays", "DeviceStep", "device_id", "is_device_array", "register_flat_buffer"]


def __getattr__(name):
    """The rest of the CUDA runtime (``device.configured``, ``device.set_stream``...)."""
    try:
        return getattr(cuda_runtime, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def device_id(x):
    """The CUDA device ordinal that holds ``x``, or None when it cannot be told cheaply."""
    dev = getattr(x, "device", None)
    index = getattr(dev, "index", None)  # torch.device
    if isinstance(index, int):
        return index
    ident = getattr(dev, "id", None)  # cupy.cuda.Device
    if isinstance(ident, int):
        return ident
    gpu_data = getattr(x, "gpu_data", None)  # numba device arrays (not the simulator's)
    context = getattr(gpu_data, "context", None)
    ident = getattr(getattr(context, "device", None), "id", None)
    return ident if isinstance(ident, int) else None


class _Desc(NamedTuple):
    ptr: int
    shape: tuple
    dtype: np.dtype
    strides: tuple | None  # None: C-contiguous
    readonly: bool

    @property
    def size(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def span(self):
        """(low, high) byte addresses of the memory the array can touch."""
        if self.strides is None:
            return self.ptr, self.ptr + self.nbytes
        low = high = self.ptr
        for n, st in zip(self.shape, self.strides):
            if n > 1:
                if st < 0:
                    low += (n - 1) * st
                else:
                    high += (n - 1) * st
        return low, high + self.dtype.itemsize


def _c_strides(shape, itemsize, strides) -> bool:
    expected = itemsize
    for n, st in zip(reversed(shape), reversed(strides)):
        if n > 1 and st != expected:
            return False
        expected *= n
    return True


def _desc(x) -> _Desc:
    if SIMULATOR and isinstance(x, _NativeArray):
        a = x._ary  # the simulator keeps device arrays in host memory
        contiguous = a.flags.c_contiguous
        return _Desc(a.__array_interface__["data"][0], tuple(a.shape), a.dtype,
                     None if contiguous else tuple(a.strides), not a.flags.writeable)
    cai = x.__cuda_array_interface__
    shape = tuple(int(n) for n in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        strides = tuple(int(s) for s in strides)
        if _c_strides(shape, dtype.itemsize, strides):
            strides = None
    ptr, readonly = cai["data"]
    return _Desc(int(ptr or 0), shape, dtype, strides, bool(readonly))


# Parameter buffers made by FlatParams(device="cuda"): views into one of them
# resolve to it as their root, which lets the optimizer take the one-call path.
_flat_roots: list = []


def register_flat_buffer(buffer):
    """Remember a 1-D parameter buffer (weakly) so views of it are recognized as one segment."""
    d = _desc(buffer)
    low, high = d.span()
    _flat_roots[:] = [r for r in _flat_roots if r[0]() is not None]
    _flat_roots.append((weakref.ref(buffer), low, high, d.dtype))


def _registered_root(low, high, dtype):
    for ref, rlow, rhigh, rdtype in _flat_roots:
        root = ref()
        if (root is not None and rdtype == dtype and rlow <= low and high <= rhigh
                and (low - rlow) % dtype.itemsize == 0):
            return root, (low - rlow) // dtype.itemsize
    return None, 0


def _view_range(params, low, n, dtype):
    """A 1-D device array over ``n`` elements at address ``low`` (the params' bytes)."""
    if SIMULATOR:
        found = find_segment([p._ary for p in params])  # the simulator's arrays are host arrays
        return None if found is None else _NativeArray(found[2])
    desc = {"shape": (n,), "strides": None, "typestr": dtype.str, "data": (low, False),
            "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=tuple(params), sync=False)


class DeviceArrays(ArraySupport):
    """CUDA device arrays: the device twin of ``host.HostArrays``.

    Parameters and state stay on the device; only ``to_host`` (``state_dict``)
    copies back, and only it waits for the GPU. State arrays are allocated by
    Numba (``cuda.device_array``) on the current device.
    """

    on_device = True

    @staticmethod
    def check_param(name, p, need_contiguous):
        if not is_device_array(p):
            raise TypeError(
                f"{name} must be a CUDA device array like the other parameters, "
                f"but got {type(p).__name__}"
            )
        d = _desc(p)
        if d.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {d.dtype}; fastoptim optimizes float32 and float64 arrays")
        if not need_contiguous:
            raise ValueError(
                f"{name} is a CUDA device array: only backend 'cuda' (or 'auto') updates device arrays"
            )
        if d.readonly:
            raise ValueError(f"{name} is read-only; parameters are updated in place")
        if d.ptr % d.dtype.itemsize:
            raise ValueError(f"{name} is not aligned to its itemsize")
        if d.strides is not None:
            raise ValueError(
                f"{name} is not C-contiguous; the cuda backend updates contiguous arrays in place "
                "(make a contiguous copy and optimize that array)"
            )
        where = device_id(p)
        current = current_device_id()
        if where is not None and where != current:
            raise ValueError(
                f"{name} is on CUDA device {where} but the current CUDA device is {current}: "
                "fastoptim allocates the optimizer state and launches on the current device. "
                f"Make device {where} current first (numba.cuda.select_device({where}) or "
                f"torch.cuda.set_device({where})), and keep all parameters of one optimizer "
                "on one device"
            )

    @staticmethod
    def check_grad(name, grad, param):
        """Check a gradient; return it as a Numba device array (zero copy) for the kernel."""
        if not is_device_array(grad):
            raise TypeError(
                f"{name} is a host {type(grad).__name__} but its parameter is a CUDA device "
                "array; gradients must be on the same device (copy with numba.cuda.to_device)"
            )
        g, p = _desc(grad), _desc(param)
        if g.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {g.dtype} but its parameter has dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{name} has shape {g.shape} but its parameter has shape {p.shape}")
        if g.strides is not None:
            raise ValueError(f"{name} is not C-contiguous; pass a contiguous gradient")
        if g.ptr % g.dtype.itemsize:
            raise ValueError(f"{name} is not aligned to its itemsize")
        if _spans_overlap(g, p):
            raise ValueError(f"{name} shares memory with its parameter")
        gd, pd = device_id(grad), device_id(param)
        if gd is not None and pd is not None and gd != pd:
            raise ValueError(f"{name} is on CUDA device {gd} but its parameter is on device {pd}")
        return as_device(grad)

    @staticmethod
    def span(a):
        return _desc(a).span()

    @staticmethod
    def find_segment(params):
        """If ``params`` tile one stretch of device memory in order: (root, start, flat view).

        ``root`` is the FlatParams buffer they view when there is one (so
        ``Optimizer`` can match ``FlatParams.grads``), else the flat view itself.
        """
        if not params or not all(is_device_array(p) for p in params):
            return None
        descs = [_desc(p) for p in params]
        dtype = descs[0].dtype
        low = expected = descs[0].ptr
        for d in descs:
            if d.dtype != dtype or d.strides is not None or d.ptr != expected:
                return None
            expected += d.nbytes
        if not low or low % dtype.itemsize:
            return None
        n = (expected - low) // dtype.itemsize
        root, start = _registered_root(low, expected, dtype)
        if root is not None:
            return root, start, as_device(root).reshape(-1)[start:start + n]
        flat = _view_range(params, low, n, dtype)
        return None if flat is None else (flat, 0, flat)

    @staticmethod
    def alloc(like, init):
        d = _desc(like)
        out = cuda.device_array(d.shape, dtype=d.dtype)
        # always zeroed (one fill per allocation): a momentum buffer whose first step
        # is skipped on the device (skip_nonfinite) then holds 0, not garbage
        fill(out, 0)
        return out

    @classmethod
    def kernel_views(cls, arrays):
        return [None if a is None else cls.ravel(a) for a in arrays]

    @staticmethod
    def ravel(a):
        a = as_device(a)
        return a if a.ndim == 1 else a.reshape(-1)

    @staticmethod
    def step_counter(value=0.0):
        return DeviceStep(value)

    @staticmethod
    def to_host(a):
        if isinstance(a, np.ndarray):
            return np.array(a, copy=True)
        if isinstance(a, DeviceStep):
            return np.asarray(float(a), dtype=np.float32)
        d = as_device(a)
        # the steps that wrote ``a`` may have run on any stream (use_stream, torch's or
        # CuPy's non-blocking streams): wait for all the device's work, then copy
        cuda.synchronize()
        return d.copy_to_host()

    @staticmethod
    def copy_into(dst, src):
        dst = as_device(dst)
        if is_device_array(src) and _desc(src).dtype == dst.dtype:
            dst.copy_to_device(as_device(src).reshape(dst.shape), stream=get_stream())
            return
        if is_device_array(src):
            src = DeviceArrays.to_host(src)
        host = np.asarray(np.asarray(src, dtype=dst.dtype).reshape(dst.shape), order="C")
        dst.copy_to_device(host, stream=get_stream())


class DeviceStep:
    """The step counter of one parameter (or flat group) of a CUDA optimizer.

    ``attempted`` counts the steps launched, on the host. When ``skip_nonfinite``
    skips a step on the device (the host does not wait to find out), the update
    kernel adds 1 to ``cell`` (a one-element device array of the parameter's
    dtype, made on the first such launch); the true step is ``attempted - cell``.
    While ``cell`` is 0 the kernels use the host's exactly rounded per-step
    scalars; after a skip they recompute the bias corrections on the device.
    ``float(step)`` is the true step: it waits for the GPU only once a cell exists.
    """

    __slots__ = ("attempted", "cell")
    is_device_step = True  # _validation.check_state_step reads ``attempted``, no GPU wait

    def __init__(self, value=0.0):
        self.attempted = float(value)
        self.cell = None

    def __iadd__(self, k):
        self.attempted += float(k)
        return self

    def skipped(self) -> float:
        """Steps skipped on the device (copies the count back: waits for the GPU)."""
        if self.cell is None:
            return 0.0
        cuda.synchronize()
        return float(self.cell.copy_to_host()[0])

    def ensure_cell(self, dtype):
        if self.cell is None:
            self.cell = cuda.device_array(1, dtype=np.dtype(dtype))
            fill(self.cell, 0)
        return self.cell

    def copy(self):
        new = DeviceStep(self.attempted)
        if self.cell is not None:
            new.cell = cuda.device_array(1, dtype=self.cell.dtype)
            new.cell.copy_to_device(self.cell, stream=get_stream())
        return new

    def __float__(self):
        return self.attempted - self.skipped()

    def __int__(self):
        return int(float(self))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(float(self), dtype=dtype or np.float32)

    def __repr__(self):
        return f"DeviceStep({float(self)})"


def _spans_overlap(a: _Desc, b: _Desc) -> bool:
    if not a.size or not b.size:
        return False
    alo, ahi = a.span()
    blo, bhi = b.span()
    return alo < bhi and blo < ahi
