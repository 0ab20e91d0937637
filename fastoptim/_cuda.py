"""CUDA device arrays: the one module that imports ``numba.cuda``.

Nothing here runs at ``import fastoptim``: ``_devices.device_support`` imports
this module only when it sees a device array, and the ``cuda`` backend when it
is asked for. Importing it never fails; :func:`is_available` says whether a GPU
(or Numba's CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``) can be used.

What lives here:

- :class:`DeviceArrays`: the device twin of ``_devices.HostArrays`` (checks,
  allocation, views, host copies), used by the optimizers and the functional API.
- Device arrays from elsewhere (CuPy arrays, torch CUDA tensors, anything with
  ``__cuda_array_interface__``) are wrapped zero-copy with
  ``cuda.as_cuda_array(x, sync=False)``: no stream synchronization per launch.
- The stream policy (:func:`set_stream`, :func:`use_stream`, :func:`get_stream`):
  every kernel, fill and copy fastoptim issues goes to the stream in effect,
  by default the CUDA default stream (the legacy stream 0, which is also
  torch's default stream and CuPy's null stream). Nothing here synchronizes
  the host except ``to_host`` (``state_dict``), which must return finished data.
- :func:`configured`: the launch configuration ``kernel[blocks, threads, stream]``
  for a size, built once per (kernel, size bucket, stream) and cached.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
import weakref
from typing import NamedTuple

import numpy as np

from ._devices import ArraySupport
from ._validation import FLOAT_DTYPES

try:  # numba is a hard dependency, but its CUDA part may be absent or broken
    import numba
    from numba import cuda

    SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
    _IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the installation
    cuda = None
    SIMULATOR = False
    _IMPORT_ERROR = exc

_NativeArray = ()  # Numba's own device array class (isinstance with () is always False)
if cuda is not None:
    try:
        if SIMULATOR:
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _NativeArray
        else:
            from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase as _NativeArray
    except ImportError:  # pragma: no cover - a numba-cuda that moved it: wrap via the CAI
        pass

# Launch geometry. Kernels are grid-stride loops, so any geometry gives the same
# result; these only set the speed. The simulator runs every CUDA thread as a
# Python thread (cost grows with the thread count, not the element count), so
# there a launch uses at most 2 blocks of one warp each.
THREADS = 32 if SIMULATOR else 256  # threads per block (fewer for tiny arrays, in warps of 32)
BLOCKS_PER_SM = 32  # grid cap per multiprocessor; the loop strides over the rest
GRID_LIMIT = None  # a fixed cap on the number of blocks (None: from the device)
_SIMULATOR_BLOCKS = 2


# ------------------------------------------------------------------ availability
INSTALL_HINT = ('install the CUDA extra matching your driver: pip install "fastoptim[cuda13]" '
                '(or "fastoptim[cuda12]"), which brings numba-cuda with its NVVM and nvrtc compilers')
_probe_result = None  # (ok, reason), once per process


def _driver_available() -> bool:
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - broken driver installs
        return False


def _run_probe():
    """Compile a one-line kernel and run it on one element; raise whatever goes wrong."""
    out = cuda.device_array(1, dtype=np.float32)
    _probe_kernel[1, 1](out, np.float32(3.0))
    value = out.copy_to_host()[0]
    if value != 6.0:
        raise RuntimeError(f"a test kernel computed {value} instead of 6.0")


def _probe():
    """(ok, reason): a GPU (or the simulator) that compiles and runs a kernel."""
    global _probe_result
    if _probe_result is None:
        if cuda is None:
            _probe_result = (False, f"numba.cuda cannot be imported ({_IMPORT_ERROR})")
        elif not _driver_available():
            reason = ""
            try:
                err = cuda.cuda_error()
                reason = f" ({' '.join(str(err).split())})" if err else ""
            except Exception:  # pragma: no cover
                pass
            _probe_result = (False, "numba.cuda found no usable NVIDIA GPU or driver" + reason
                             + "; " + INSTALL_HINT)
        else:
            try:
                _run_probe()
                _probe_result = (True, "")
            except Exception as exc:  # NVVM/nvrtc missing, unsupported GPU, ...
                detail = " ".join(f"{type(exc).__name__}: {exc}".split())
                if len(detail) > 300:
                    detail = detail[:300] + "..."
                _probe_result = (False, "a GPU was found but numba.cuda could not compile and run "
                                 f"a test kernel ({detail}); " + INSTALL_HINT)
    return _probe_result


def is_available() -> bool:
    """True when numba.cuda compiles and runs a test kernel here (on a GPU, or the simulator).

    The first call compiles and launches one tiny kernel (a driver alone is not
    enough: numba-cuda without its NVVM compiler finds the GPU but cannot
    compile); the answer is kept for the process.
    """
    return _probe()[0]


def why_unavailable() -> str:
    """Why :func:`is_available` is False ("" when it is True)."""
    return _probe()[1]


def _require():
    if not is_available():
        raise RuntimeError("CUDA is not available: " + why_unavailable())


# ---------------------------------------------------------------------- arrays
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


def current_device_id() -> int:
    """The ordinal of the current CUDA device (0 under the simulator)."""
    if SIMULATOR:
        return 0
    return int(cuda.get_current_device().id)


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


def is_device_array(x) -> bool:
    """A CUDA device array: Numba's (or the simulator's), or any CUDA Array Interface object."""
    if isinstance(x, np.ndarray):
        return False
    return isinstance(x, _NativeArray) or hasattr(x, "__cuda_array_interface__")


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


def as_device(x):
    """``x`` as a Numba device array, zero copy (no stream synchronization)."""
    if isinstance(x, _NativeArray):
        return x
    if SIMULATOR:
        raise TypeError(
            f"the CUDA simulator cannot use {type(x).__name__} arrays; use numba.cuda device arrays"
        )
    return cuda.as_cuda_array(x, sync=False)


def to_device(host, dtype=None):
    """A new device array holding a copy of the host array ``host``."""
    host = np.asarray(host, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
    return cuda.to_device(host, stream=get_stream())


def zeros(shape, dtype):
    out = cuda.device_array(shape, dtype=np.dtype(dtype))
    fill(out, 0)
    return out


def fill(a, value):
    """Set every element of a contiguous device array to ``value``, on the current stream."""
    flat = as_device(a).reshape(-1)
    n = flat.shape[0]
    if n:
        configured(_fill_kernel, n)(flat, flat.dtype.type(value))


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
        from .flat import find_segment as host_find_segment

        found = host_find_segment([p._ary for p in params])
        return None if found is None else _NativeArray(found[2])
    desc = {"shape": (n,), "strides": None, "typestr": dtype.str, "data": (low, False),
            "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=tuple(params), sync=False)


class DeviceArrays(ArraySupport):
    """CUDA device arrays: the device twin of ``_devices.HostArrays``.

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


# --------------------------------------------------------------------- streams
_global_stream = 0  # 0: the CUDA default stream
_external_streams: dict = {}  # cudaStream_t handle -> numba external stream
_context_stream = contextvars.ContextVar("fastoptim_cuda_stream", default=None)


def _as_stream(stream):
    """A launchable stream: 0 (the default stream) or a Numba stream."""
    if stream is None or (isinstance(stream, (int, np.integer)) and int(stream) == 0):
        return 0
    if type(stream).__module__.startswith("numba"):
        return stream  # numba's cuda.stream(), cuda.default_stream(), external_stream()
    if hasattr(stream, "__cuda_stream__"):  # CUDA stream protocol: (version, handle)
        protocol = stream.__cuda_stream__
        handle = (protocol() if callable(protocol) else protocol)[1]
    elif hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        handle = stream.cuda_stream
    elif hasattr(stream, "ptr"):  # cupy.cuda.Stream
        handle = stream.ptr
    elif isinstance(stream, (int, np.integer)):
        handle = stream
    else:
        raise TypeError(
            "stream must be None, a numba.cuda stream, a torch.cuda.Stream, a cupy.cuda.Stream "
            f"or a raw cudaStream_t handle (int), but got {type(stream).__name__}"
        )
    handle = int(handle)
    if handle == 0:
        return 0
    if SIMULATOR:
        raise TypeError("the CUDA simulator only supports numba.cuda streams")
    # one numba object per handle: the launch caches are keyed by the stream object
    hit = _external_streams.get(handle)
    if hit is None:
        if len(_external_streams) > 64:
            _external_streams.clear()
        hit = _external_streams[handle] = cuda.external_stream(handle)
    return hit


def set_stream(stream=None):
    """Run fastoptim's kernels and copies on ``stream`` from now on (None: the default stream)."""
    global _global_stream
    _global_stream = _as_stream(stream)


def get_stream():
    """The stream in effect: 0 (the CUDA default stream) or a numba.cuda stream."""
    s = _context_stream.get()
    return _global_stream if s is None else s


@contextlib.contextmanager
def use_stream(stream):
    """``with use_stream(s):`` run fastoptim's work on ``s`` inside the block (this thread/task)."""
    token = _context_stream.set(_as_stream(stream))
    try:
        yield get_stream()
    finally:
        _context_stream.reset(token)


# ------------------------------------------------------------------- launching
_max_blocks = None
_grids: dict = {}  # n -> (blocks, threads)
_launchers: dict = {}  # (kernel id, blocks, threads, stream id) -> (kernel, stream, launcher)


def max_blocks() -> int:
    global _max_blocks
    if GRID_LIMIT is not None:
        return int(GRID_LIMIT)
    if _max_blocks is None:
        if SIMULATOR:
            _max_blocks = _SIMULATOR_BLOCKS
        else:
            sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
            _max_blocks = max(1, int(sms) * BLOCKS_PER_SM)
    return _max_blocks


def grid(n: int):
    """(blocks, threads) for ``n`` > 0 elements.

    The block count is a power of two (rounded down: the grid-stride loop
    covers the rest, and no thread idles), at most ``max_blocks()``, so a few
    size buckets share each cached launch configuration.
    """
    limit = max_blocks()
    hit = _grids.get(n)
    if hit is not None and hit[2] == limit:
        return hit[0], hit[1]
    threads = THREADS if n >= THREADS else max(32, -(-n // 32) * 32)
    blocks = -(-n // threads)
    blocks = min(1 << (blocks.bit_length() - 1), limit)
    if len(_grids) > 4096:
        _grids.clear()
    _grids[n] = (blocks, threads, limit)
    return blocks, threads


def configured(kernel, n: int, stream=None):
    """``kernel[blocks, threads, stream]`` for ``n`` elements (n > 0), cached."""
    if stream is None:
        stream = get_stream()
    blocks, threads = grid(n)
    key = (id(kernel), blocks, threads, id(stream) if stream else 0)
    hit = _launchers.get(key)
    if hit is None:
        if len(_launchers) > 256:
            _launchers.clear()
        hit = _launchers[key] = (kernel, stream, _configure(kernel, blocks, threads, stream))
    return hit[2]


def _configure(kernel, blocks, threads, stream):
    if SIMULATOR:  # the simulator's kernel[...] reconfigures the kernel object itself
        return lambda *args: kernel[blocks, threads, stream](*args)
    with warnings.catch_warnings():
        # small arrays launch few blocks on purpose: no low-occupancy warning
        warnings.filterwarnings("ignore", message="Grid size")
        return kernel[blocks, threads, stream]


if cuda is not None:

    @cuda.jit(cache=not SIMULATOR)
    def _fill_kernel(a, value):
        for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
            a[i] = value

    @cuda.jit(cache=not SIMULATOR)
    def _probe_kernel(out, x):
        out[0] = x + x


# Raw device pointers inside kernels: ``raw_pointer(address, like)`` is a typed
# pointer (``like``'s dtype) to an int64 device address, for the pointer-table
# kernels (one launch over many separate arrays). The simulator cannot
# dereference device addresses: there POINTER_KERNELS is False and nothing uses it.
POINTER_KERNELS = False
raw_pointer = None
if cuda is not None and not SIMULATOR:
    try:
        try:
            from numba.cuda.extending import intrinsic as _intrinsic
            from numba.cuda import types as _types
        except ImportError:  # numba's built-in CUDA target
            from numba.core.extending import intrinsic as _intrinsic
            from numba.core import types as _types

        @_intrinsic
        def raw_pointer(typingctx, address, like):
            ptr_type = _types.CPointer(like)

            def codegen(context, builder, sig, args):
                return builder.inttoptr(args[0], context.get_value_type(ptr_type))

            return ptr_type(address, like), codegen

        POINTER_KERNELS = True
    except Exception:  # pragma: no cover - a numba without the extension API
        raw_pointer = None
