"""The CUDA runtime: the one module that imports ``numba.cuda``.

Nothing here runs at ``import fastoptim``: ``arrays.device`` (the CUDA array
support, which everything else imports) is loaded only when a device array is
seen or the ``cuda`` backend is asked for. Importing it never fails;
:func:`is_available` says whether a GPU (or Numba's CUDA simulator,
``NUMBA_ENABLE_CUDASIM=1``) can be used.

What lives here (``arrays.device`` re-exports all of it, so callers use one
namespace for the CUDA side):

- availability: :func:`is_available`, :func:`why_unavailable` (a test kernel is
  compiled and run once per process).
- Device arrays from elsewhere (CuPy arrays, torch CUDA tensors, anything with
  ``__cuda_array_interface__``) are wrapped zero-copy by :func:`as_device`
  (``cuda.as_cuda_array(x, sync=False)``: no stream synchronization per launch);
  :func:`to_device`, :func:`zeros`, :func:`fill` make and set device arrays.
- The stream policy (:func:`set_stream`, :func:`use_stream`, :func:`get_stream`):
  every kernel, fill and copy fastoptim issues goes to the stream in effect,
  by default the CUDA default stream (the legacy stream 0, which is also
  torch's default stream and CuPy's null stream). Nothing here synchronizes
  the host.
- :func:`configured`: the launch configuration ``kernel[blocks, threads, stream]``
  for a size, built once per (kernel, size bucket, stream) and cached.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings

import numpy as np

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
def current_device_id() -> int:
    """The ordinal of the current CUDA device (0 under the simulator)."""
    if SIMULATOR:
        return 0
    return int(cuda.get_current_device().id)


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
            from numba.cuda import types as _types
            from numba.cuda.extending import intrinsic as _intrinsic
        except ImportError:  # numba's built-in CUDA target
            from numba.core import types as _types
            from numba.core.extending import intrinsic as _intrinsic

        @_intrinsic
        def raw_pointer(typingctx, address, like):
            ptr_type = _types.CPointer(like)

            def codegen(context, builder, sig, args):
                return builder.inttoptr(args[0], context.get_value_type(ptr_type))

            return ptr_type(address, like), codegen

        POINTER_KERNELS = True
    except Exception:  # pragma: no cover - a numba without the extension API
        raw_pointer = None
