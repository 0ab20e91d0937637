"""Gradient statistics on the GPU, in a fixed order, the optimizer's device-side clip
factor, and the CUDA backend's gradient operations (``norm_stats``, ``all_finite``,
``scale_``, ``clamp_``: see ``backends/__init__``; ``cuda_backend`` exports them).

Two passes, no atomics, so every result is bit-reproducible run to run on one
device (the order depends only on the array sizes and the launch geometry,
which are fixed):

1. ``stats`` (one launch per gradient array): each block reduces a grid-stride
   slice of the array in a shared-memory tree and writes one row of partial
   results, ``partials[base + block] = (sum of terms, max |x|, min |x|, NaN
   count, non-finite count, non-zero count)``. It computes in the array's own
   dtype: the float32 kernel has no float64 instruction (the CI compile test
   checks its PTX), as torch's float32 norms accumulate in float32.
2. Either the host reads the partials back and finishes the norm as
   ``clip.py`` does on the CPU (``norm_stats`` below, behind ``clip.total_norm``
   and friends, which return a Python float and so wait for the GPU once), or ``finalize`` (one block)
   finishes the 2-norm on the device for an optimizer step with
   ``max_grad_norm`` / ``skip_nonfinite``: it writes the norm, torch's clip
   factor and the skip flag into a small persistent device buffer, and the
   update kernels read the factor and the flag there. Nothing is copied back
   until someone asks for ``last_grad_norm``.
"""
from __future__ import annotations

import math

import numpy as np

from ..arrays import device as _cuda
from . import _clip_math
from ._clip_math import MAX_ABS, MIN_ABS, SUM_ABS, SUM_POW, SUM_SQ
from ._cuda_multi import address

cuda = _cuda.cuda

STAT_COLUMNS = 6  # sum of terms, max |x|, min |x|, NaN count, non-finite count, non-zero count
STAT_THREADS = 256  # threads per block (a power of two: the tree halves it)
FINAL_THREADS = 256
if _cuda.SIMULATOR:  # the simulator runs a Python thread per CUDA thread
    STAT_THREADS = FINAL_THREADS = 32
_SHARED = 256  # shared-array length (>= any block size used)
MODE_SUM_SQ, MODE_SUM_ABS, MODE_SUM_POW, MODE_OTHER = 0, 1, 2, 3
EPS = 1e-6  # torch's clip_grad_norm_ epsilon (clip.EPS)

# the per-element math shared with the Numba CPU kernels (_clip_math), as device functions
_square = cuda.jit(device=True, inline=True)(_clip_math.square)
_abs_power = cuda.jit(device=True, inline=True)(_clip_math.abs_power)
_scale = cuda.jit(device=True, inline=True)(_clip_math.scale)
_clamp = cuda.jit(device=True, inline=True)(_clip_math.clamp)


def stat_blocks(n: int) -> int:
    """Blocks of the stats kernel for ``n`` > 0 elements: a power of two, fixed per (n, device)."""
    blocks = -(-n // STAT_THREADS)
    return min(1 << (blocks.bit_length() - 1), _cuda.max_blocks())


def _make_stats(dt):
    def stats(x, mode, p, partials, base):
        s_sum = cuda.shared.array(_SHARED, dt)
        s_max = cuda.shared.array(_SHARED, dt)
        s_min = cuda.shared.array(_SHARED, dt)
        s_nan = cuda.shared.array(_SHARED, dt)
        s_bad = cuda.shared.array(_SHARED, dt)
        s_nz = cuda.shared.array(_SHARED, dt)
        tid = cuda.threadIdx.x
        zero = dt(0)
        one = dt(1)
        inf = dt(math.inf)
        acc = zero
        hi = zero
        lo = inf
        nans = zero
        bad = zero
        nonzero = zero
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            a = abs(v)
            if mode == 0:
                acc += _square(v)
            elif mode == 1:
                acc += a
            elif mode == 2:
                acc += _abs_power(v, p)
            if a != a:
                nans += one
            else:
                hi = max(hi, a)
                lo = min(lo, a)
            if not a < inf:
                bad += one
            if v != zero:
                nonzero += one
        s_sum[tid] = acc
        s_max[tid] = hi
        s_min[tid] = lo
        s_nan[tid] = nans
        s_bad[tid] = bad
        s_nz[tid] = nonzero
        cuda.syncthreads()
        half = cuda.blockDim.x // 2
        while half > 0:
            if tid < half:
                s_sum[tid] += s_sum[tid + half]
                s_max[tid] = max(s_max[tid], s_max[tid + half])
                s_min[tid] = min(s_min[tid], s_min[tid + half])
                s_nan[tid] += s_nan[tid + half]
                s_bad[tid] += s_bad[tid + half]
                s_nz[tid] += s_nz[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            row = base + cuda.blockIdx.x
            partials[row, 0] = s_sum[0]
            partials[row, 1] = s_max[0]
            partials[row, 2] = s_min[0]
            partials[row, 3] = s_nan[0]
            partials[row, 4] = s_bad[0]
            partials[row, 5] = s_nz[0]

    return stats


def _make_finalize(rt):
    """The device finish of the 2-norm over arrays whose partials sit in ``p32`` (float32
    arrays) or ``p64`` (float64 arrays), in result dtype ``rt`` (float32 unless a gradient
    is float64; then ``p64`` is float64, else a float32 placeholder and no float64 code runs).

    ``table[k] = (is_float64, base row, rows)``; writes ``ctrl = [norm, coef, skip, bad]``
    in ``rt`` and ``ctrl32 = [coef, skip]`` in float32 (what float32 update kernels read).
    """

    def finalize(p32, p64, table, max_norm, clip, skip_nonfinite, ctrl, ctrl32):
        s32 = cuda.shared.array(_SHARED, np.float32)
        s64 = cuda.shared.array(_SHARED, rt)
        s_bad = cuda.shared.array(_SHARED, np.float32)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        total = rt(0)
        bad = np.float32(0)
        for k in range(table.shape[0]):
            wide = table[k, 0]
            base = table[k, 1]
            rows = table[k, 2]
            a32 = np.float32(0)
            a64 = rt(0)
            b = np.float32(0)
            for j in range(tid, rows, threads):
                if wide:
                    a64 += p64[base + j, 0]
                    if p64[base + j, 4] > 0:
                        b += np.float32(1)
                else:
                    a32 += p32[base + j, 0]
                    if p32[base + j, 4] > 0:
                        b += np.float32(1)
            s32[tid] = a32
            s64[tid] = a64
            s_bad[tid] = b
            cuda.syncthreads()
            half = threads // 2
            while half > 0:
                if tid < half:
                    s32[tid] += s32[tid + half]
                    s64[tid] += s64[tid + half]
                    s_bad[tid] += s_bad[tid + half]
                cuda.syncthreads()
                half //= 2
            if tid == 0:
                # torch: each array's norm in its own dtype, then the norm of the norms
                if wide:
                    norm_k = rt(math.sqrt(s64[0]))
                else:
                    norm_k = rt(math.sqrt(s32[0]))
                total += norm_k * norm_k
                bad += s_bad[0]
            cuda.syncthreads()
        if tid == 0:
            norm = rt(math.sqrt(total))
            coef = rt(1)
            if clip:
                coef = (rt(1) / (norm + rt(EPS))) * max_norm  # torch: reciprocal, then multiply
                if coef > rt(1):  # clamp(max=1) keeps NaN
                    coef = rt(1)
            skip = rt(0)
            if skip_nonfinite and bad > np.float32(0):
                skip = rt(1)
            ctrl[0] = norm
            ctrl[1] = coef
            ctrl[2] = skip
            ctrl[3] = rt(bad)
            ctrl[4] += skip
            ctrl32[0] = np.float32(coef)
            ctrl32[1] = np.float32(skip)

    return finalize


CHUNK = 4096  # elements per chunk of the pointer-table statistics kernel


def _make_stats_chunks(dt):
    """Sum of squares and non-finite count of many arrays in one launch: ``chunks[c] =
    (device address, start, count)``; block b reduces chunks b, b + grid, ... and writes
    row c of ``partials`` (columns 0 and 4, as ``stats``), in a fixed order."""

    def stats_chunks(chunks, partials, like):
        s_sum = cuda.shared.array(_SHARED, dt)
        s_bad = cuda.shared.array(_SHARED, dt)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        inf = dt(math.inf)
        for c in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
            x = _cuda.raw_pointer(chunks[c, 0], like)
            start = chunks[c, 1]
            count = chunks[c, 2]
            acc = dt(0)
            bad = dt(0)
            for i in range(tid, count, threads):
                v = x[start + i]
                acc += _square(v)
                if not abs(v) < inf:
                    bad += dt(1)
            s_sum[tid] = acc
            s_bad[tid] = bad
            cuda.syncthreads()
            half = threads // 2
            while half > 0:
                if tid < half:
                    s_sum[tid] += s_sum[tid + half]
                    s_bad[tid] += s_bad[tid + half]
                cuda.syncthreads()
                half //= 2
            if tid == 0:
                partials[c, 0] = s_sum[0]
                partials[c, 4] = s_bad[0]
            cuda.syncthreads()

    return stats_chunks


def _make_scale(dt):
    def scale_by(x, ctrl):
        c = ctrl[0]
        if ctrl[1] != dt(0):
            return
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            x[i] *= c

    return scale_by


_CACHE = not _cuda.SIMULATOR
_kernels: dict = {}
_MAKERS = {"stats": _make_stats, "finalize": _make_finalize, "scale": _make_scale,
           "stats_chunks": _make_stats_chunks}


def kernel(kind, dtype):
    """The compiled kernel ``kind`` ("stats", "finalize", "scale") for ``dtype`` (cached)."""
    dtype = np.dtype(dtype)
    key = (kind, dtype)
    hit = _kernels.get(key)
    if hit is None:
        dt = np.float32 if dtype == np.float32 else np.float64
        make = _MAKERS[kind]
        hit = _kernels[key] = cuda.jit(cache=_CACHE)(make(dt))
    return hit


def python_functions():
    """(name, dtype, Python function) of every kernel here, for the CI compile check."""
    return [(f"{kind}_{np.dtype(dt).name}", np.dtype(dt), _MAKERS[kind](dt))
            for kind in _MAKERS for dt in (np.float32, np.float64)]


_launchers: dict = {}


def launch(kern, blocks, threads):
    """``kern[blocks, threads, stream]`` on the current stream, cached by stream."""
    stream = _cuda.get_stream()
    key = (id(kern), blocks, threads, id(stream) if stream else 0)
    hit = _launchers.get(key)
    if hit is None:
        if len(_launchers) > 256:
            _launchers.clear()
        hit = _launchers[key] = (kern, stream, _cuda._configure(kern, blocks, threads, stream))
    return hit[2]


# ------------------------------------------------------------ statistics to host
def partial_stats(arrays, mode, p):
    """Launch the stats kernel over every array; return (partials per dtype, rows per array).

    ``rows[k] = (dtype, base, count)``: array k's partial rows.
    """
    rows = []
    counts = {}
    flats = []
    for x in arrays:
        flat = _cuda.DeviceArrays.ravel(x)
        n = flat.shape[0]
        dtype = np.dtype(flat.dtype)
        b = stat_blocks(n) if n else 0
        rows.append((dtype, counts.get(dtype, 0), b))
        counts[dtype] = counts.get(dtype, 0) + b
        flats.append(flat)
    partials = {dt: cuda.device_array((max(c, 1), STAT_COLUMNS), dtype=dt) for dt, c in counts.items()}
    for flat, (dtype, base, b) in zip(flats, rows):
        if b:
            launch(kernel("stats", dtype), b, STAT_THREADS)(flat, mode, dtype.type(p),
                                                            partials[dtype], base)
    return partials, rows


def host_stats(arrays, mode, p):
    """Per-array statistics on the host, reduced from the partials in a fixed order.

    Returns a (len(arrays), 6) float64 array of (sum, max, min, NaN count,
    non-finite count, non-zero count); empty arrays give (0, 0, inf, 0, 0, 0).
    One copy back per dtype: this waits for the GPU.
    """
    partials, rows = partial_stats(arrays, mode, p)
    stream = _cuda.get_stream()
    host = {}
    for dt, buf in partials.items():
        host[dt] = buf.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    out = np.zeros((len(arrays), STAT_COLUMNS), dtype=np.float64)
    out[:, 2] = np.inf
    for k, (dt, base, b) in enumerate(rows):
        if not b:
            continue
        block = host[dt][base:base + b]
        with np.errstate(all="ignore"):
            out[k, 0] = float(np.sum(block[:, 0], dtype=dt))  # the dtype of the array, in order
            out[k, 1] = float(np.max(block[:, 1]))
            out[k, 2] = float(np.min(block[:, 2]))
            out[k, 3:] = np.sum(block[:, 3:], axis=0, dtype=np.float64)
    return out


# ------------------------------------------------------- the optimizer's control
class GradControl:
    """The device buffers of one optimizer's ``max_grad_norm`` / ``skip_nonfinite`` pass.

    Persistent: built for one gradient layout (sizes and dtypes) and reused
    while it holds. ``ctrl`` (result dtype) holds ``[norm, coef, skip,
    non-finite count]`` and ``ctrl32`` (float32) ``[coef, skip]``; the update
    kernels of float64 parameters read ``ctrl[1:3]``, those of float32 ones
    ``ctrl32``.
    """

    def __init__(self, layout):
        self.layout = layout
        self.result = np.dtype(np.float64 if any(dt == np.float64 for _, dt in layout)
                               else np.float32)
        # many arrays: one pointer-table launch per dtype over CHUNK-element chunks;
        # one array (or the simulator, which cannot follow raw pointers): per-array blocks
        self.chunked = _cuda.POINTER_KERNELS and not _cuda.SIMULATOR and len(layout) > 1
        self._chunk_tables = {}
        counts = {np.dtype(np.float32): 0, np.dtype(np.float64): 0}
        table = []
        self.rows = []
        for n, dt in layout:
            b = (-(-n // CHUNK) if self.chunked else stat_blocks(n)) if n else 0
            self.rows.append((dt, counts[dt], b))
            table.append((int(dt == np.float64), counts[dt], b))
            counts[dt] += b
        self.p32 = cuda.device_array((max(counts[np.dtype(np.float32)], 1), STAT_COLUMNS),
                                     dtype=np.float32)
        if self.result == np.float64:
            self.p64 = cuda.device_array((max(counts[np.dtype(np.float64)], 1), STAT_COLUMNS),
                                         dtype=np.float64)
        else:
            self.p64 = self.p32  # a placeholder of the right type: no float64 array exists
        host_table = np.array(table or [(0, 0, 0)], dtype=np.int64).reshape(-1, 3)
        stream = _cuda.get_stream()
        self.table = cuda.to_device(host_table, stream=stream)
        self.ntable = len(table)
        # [norm, coef, skip, non-finite count, steps skipped since this buffer was made]
        self.ctrl = cuda.to_device(np.array([0, 1, 0, 0, 0], dtype=self.result), stream=stream)
        self.skip_nonfinite = False
        self.skipped_base = None  # the optimizer's skipped_steps when the count began here
        self.ctrl32 = cuda.to_device(np.array([1, 0], dtype=np.float32), stream=stream)
        self._wide_view = None

    def _chunks(self, flats, dtype):
        """The device chunk table of this dtype's arrays, cached by their addresses."""
        picked = [(f, row) for f, row in zip(flats, self.rows) if row[0] == dtype and row[2]]
        key = tuple(address(f) for f, _ in picked)
        hit = self._chunk_tables.get(key)
        if hit is None:
            rows = []
            for (f, (_, base, b)), ptr in zip(picked, key):
                n = int(f.shape[0])
                for c in range(b):
                    start = c * CHUNK
                    rows.append((ptr, start, min(CHUNK, n - start)))
            if len(self._chunk_tables) > 8:
                self._chunk_tables.clear()
            host = np.array(rows, dtype=np.int64).reshape(-1, 3)
            hit = self._chunk_tables[key] = cuda.to_device(host, stream=_cuda.get_stream())
        return hit

    def run(self, flats, max_norm, skip_nonfinite):
        """Queue the stats and finalize kernels for this step's gradients (no host wait)."""
        if self.chunked:
            for dt in {row[0] for row in self.rows if row[2]}:
                chunks = self._chunks(flats, dt)
                partials = self.p64 if dt == np.float64 else self.p32
                blocks = min(chunks.shape[0], _cuda.max_blocks())
                launch(kernel("stats_chunks", dt), blocks, STAT_THREADS)(chunks, partials,
                                                                         dt.type(0))
        else:
            for flat, (dt, base, b) in zip(flats, self.rows):
                if b:
                    partials = self.p64 if dt == np.float64 else self.p32
                    launch(kernel("stats", dt), b, STAT_THREADS)(
                        flat, MODE_SUM_SQ, dt.type(2.0), partials, base)
        self.skip_nonfinite = bool(skip_nonfinite)
        rt = self.result.type
        clip = max_norm is not None
        launch(kernel("finalize", self.result), 1, FINAL_THREADS)(
            self.p32, self.p64, self.table, rt(max_norm if clip else 1.0), clip,
            bool(skip_nonfinite), self.ctrl, self.ctrl32)

    def for_dtype(self, dtype):
        """The ``[coef, skip]`` buffer the update kernel of ``dtype`` reads."""
        if np.dtype(dtype) == np.float32:
            return self.ctrl32
        if self._wide_view is None:
            self._wide_view = self.ctrl[1:3]
        return self._wide_view

    def _host(self):
        cuda.synchronize()  # the step may have run on any stream (use_stream, torch's)
        return self.ctrl.copy_to_host()

    def read_skips(self):
        """Steps skipped on the device since this buffer was made (waits for the GPU)."""
        return float(self._host()[4])

    def read(self):
        """(norm, non-finite count, skip flag) copied to the host: waits for the GPU."""
        host = self._host()
        return float(host[0]), float(host[3]), bool(host[2])


_constants: dict = {}
_zero_cells: dict = {}


def zero_cell(dtype):
    """A persistent one-element 0 of ``dtype``: the skipped-step cell of a counter that has
    none (read by the Adam kernels, written only when a step is skipped, which cannot
    happen without a cell of its own)."""
    key = (_cuda.current_device_id(), np.dtype(dtype))
    hit = _zero_cells.get(key)
    if hit is None:
        hit = _zero_cells[key] = cuda.to_device(np.zeros(1, dtype=np.dtype(dtype)))
    return hit


def no_control(dtype):
    """A persistent ``[1, 0]`` buffer (factor 1, no skip) of ``dtype`` on the current device."""
    key = (_cuda.current_device_id(), np.dtype(dtype))
    hit = _constants.get(key)
    if hit is None:
        hit = _constants[key] = cuda.to_device(np.array([1, 0], dtype=np.dtype(dtype)))
    return hit


# ------------------------------------------------- the gradient operations (clip.py)
def _scale_grid(x, factor):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[i] = _scale(x[i], factor)


def _clamp_grid(x, lo, hi):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[i] = _clamp(x[i], lo, hi)


_scale_kernel = cuda.jit(cache=_CACHE)(_scale_grid)
_clamp_kernel = cuda.jit(cache=_CACHE)(_clamp_grid)
_DEVICE_MODES = {SUM_SQ: MODE_SUM_SQ, SUM_ABS: MODE_SUM_ABS, SUM_POW: MODE_SUM_POW}


def norm_stats(arrays, norm_type, check_finite=False):
    """One stats launch per array, one copy back per dtype (a wait for the GPU); the
    sums in each array's dtype, in a fixed order. Finiteness comes with the same pass."""
    m = _clip_math.mode(norm_type)
    host = host_stats(arrays, _DEVICE_MODES.get(m, MODE_OTHER), norm_type)
    nan = host[:, 3] > 0
    if m in _DEVICE_MODES:
        stats = host[:, 0]
    elif m == MAX_ABS:
        stats = np.where(nan, np.nan, host[:, 1])
    elif m == MIN_ABS:
        stats = np.where(nan, np.nan, host[:, 2])
    else:
        stats = host[:, 5]
    finite = bool((host[:, 4] == 0).all()) if check_finite else None
    return np.ascontiguousarray(stats, dtype=np.float64), finite


def all_finite(arrays):
    return bool((host_stats(arrays, MODE_OTHER, 2.0)[:, 4] == 0).all())


def _in_place(kern, x, *scalars):
    flat = _cuda.DeviceArrays.ravel(x)
    if flat.shape[0]:
        _cuda.configured(kern, flat.shape[0])(flat, *scalars)


def scale_(x, factor):
    _in_place(_scale_kernel, x, factor)


def clamp_(x, lo, hi):
    _in_place(_clamp_kernel, x, lo, hi)
