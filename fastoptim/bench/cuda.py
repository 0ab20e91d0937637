"""GPU benchmark of fastoptim's cuda backend against hardware references and torch.

    fastoptim bench --device cuda                      # SGD, Adam, AdamW fp32 at 1e8 and 1e9
    python -m fastoptim.bench.cuda --sizes 1e8 --repeat 50 --many 100x1024

What is timed (CUDA events on the stream the work runs on, median of ``repeat``):

- ``device-to-device copy``: ``dst.copy_to_device(src)`` of one array of the
  same size, in the same run: the hardware reference. ``of copy`` is a row's
  bandwidth (bytes its update must move / time) as a fraction of the copy's
  (bytes read + written / time); 1.0 means "as fast as a copy".
- ``fastoptim cuda``: one optimizer step over one device array
  (Python overhead included); ``floor``: a trivial Numba kernel reading and
  writing the same bytes (Adam fp32: 28 B/element), for comparison.
- ``torch fused`` / ``torch foreach`` on CUDA tensors of the same size, when
  torch with CUDA is importable.
- many small tensors (default 100 x 1024): host microseconds per step (the
  wall time of the ``step`` call; the GPU work is asynchronous) as a plain
  list through the optimizer, as one pointer-table launch (``adam_multi`` /
  ``sgd_multi`` of the backend), as ``FlatParams(device="cuda")``, and torch
  fused / foreach on the same tensors.
- ``waited``: whether a step waited for the GPU: a 20 ms busy kernel is
  queued first; if it has finished when ``step`` returns, the step blocked.

Sizes are clamped to fit the free GPU memory. Without a GPU (or under the CUDA
simulator) it stops with a one-line message, not a traceback.
``run_cuda_bench(...)`` returns the rows as a list of dicts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from .specs import OPTIMIZERS  # the CPU run's table: same classes, arguments and bytes

DEFAULT_SIZES = (10**8, 10**9)
QUICK_SIZES = (10**7,)
DEFAULT_MANY = (100, 1024)
QUICK_MANY = (100, 1024)
SPIN_NS = 20_000_000  # the busy kernel of the "waited on the GPU" check (20 ms)
DEFAULT_REPEAT = 20
QUICK_REPEAT = 5
WARMUP = 3
MEMORY_FRACTION = 0.8  # at most this share of the free memory for one case (and its peers)

class CudaUnavailable(RuntimeError):
    """No GPU to benchmark on (the message says why)."""


class BenchInputError(ValueError, RuntimeError):
    """A bad argument (a RuntimeError too, so command-line callers print it cleanly)."""


def parse_size(text) -> int:
    """10**8, "1e8", "100M", "64K", "1G" -> int."""
    if isinstance(text, (int, np.integer)):
        return int(text)
    t = str(text).strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = int(round(float(t) * scale))
    except ValueError:
        raise BenchInputError(f"bad size {text!r}: expected a count such as 4096, 1e8, 256K or 16M") from None
    if value < 1:
        raise BenchInputError(f"bad size {text!r}: must be at least 1 element")
    return value


def parse_many(many):
    if many is None or (isinstance(many, str) and many.strip().lower() in ("none", "off", "0", "")):
        return None
    if isinstance(many, str):
        if many == "default":
            return DEFAULT_MANY
        count, sep, size = many.lower().partition("x")
        if not sep:
            raise BenchInputError(f"bad many {many!r}: expected COUNTxSIZE such as 1000x1024")
        return parse_size(count), parse_size(size)
    count, size = many
    return int(count), int(size)


def _cuda_modules(allow_simulator):
    from fastoptim.arrays import device as _cuda

    if not _cuda.is_available():
        raise CudaUnavailable(_cuda.why_unavailable())
    if _cuda.SIMULATOR and not allow_simulator:
        raise CudaUnavailable(
            "the Numba CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1): there is no GPU to time"
        )
    from fastoptim.backends import cuda_backend

    return _cuda, cuda_backend, _cuda.cuda


def _torch_cuda():
    try:
        import torch
    except Exception:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:
        return None


# Floor kernels: read `reads` arrays, write back all but the gradient, trivial math.
# Module-level functions over the module-level name `cuda` (set on first use),
# so that numba and its simulator both resolve `cuda.grid` inside them.
cuda = None


def _r2w1(p, g):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        p[i] = p[i] + g[i]


def _r3w2(p, g, b):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = g[i]
        p[i] = p[i] + x
        b[i] = b[i] + x


def _r4w3(p, g, m, v):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = g[i]
        p[i] = p[i] + x
        m[i] = m[i] + x
        v[i] = v[i] + x


def _r5w4(p, g, m, v, w):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        x = g[i]
        p[i] = p[i] + x
        m[i] = m[i] + x
        v[i] = v[i] + x
        w[i] = w[i] + x


def _spin(ns):
    cuda.nanosleep(1000)
    for _ in range(ns // 1000):
        cuda.nanosleep(1000)


_floors = {}
_spinner = []


def _waited(_cuda, cuda, stream, fn):
    """Did ``fn()`` wait for the GPU? Queue a 20 ms busy kernel, call fn, then ask whether the
    busy kernel has already finished (it can only have if fn blocked until it did).
    None under the simulator (no real concurrency)."""
    if _cuda.SIMULATOR:
        return None
    if not _spinner:
        _spinner.append(cuda.jit(_spin))
    spin = _spinner[0]
    spin[1, 1, stream](1000)  # compile and warm up
    cuda.synchronize()
    done = cuda.event()
    spin[1, 1, stream](SPIN_NS)
    done.record(stream)
    t0 = time.perf_counter()
    fn()
    host_s = time.perf_counter() - t0
    finished = done.query()
    cuda.synchronize()
    return bool(finished) and host_s < SPIN_NS / 1e9 * 2


def _floor_kernels(numba_cuda):
    global cuda
    cuda = numba_cuda
    if not _floors:
        _floors.update({2: cuda.jit(_r2w1), 3: cuda.jit(_r3w2), 4: cuda.jit(_r4w3),
                        5: cuda.jit(_r5w4)})
    return _floors


def _time_events(cuda, stream, fn, repeat, warmup=WARMUP):
    """Median milliseconds of fn() between two CUDA events on ``stream``, and its wall time."""
    for _ in range(warmup):
        fn()
    device_ms, wall_ms = [], []
    for _ in range(repeat):
        start, end = cuda.event(), cuda.event()
        t0 = time.perf_counter()
        start.record(stream)
        fn()
        end.record(stream)
        t1 = time.perf_counter()
        end.synchronize()
        device_ms.append(start.elapsed_time(end))
        wall_ms.append((t1 - t0) * 1e3)
    return statistics.median(device_ms), statistics.median(wall_ms)


def _time_torch(torch, fn, repeat, warmup=WARMUP):
    for _ in range(warmup):
        fn()
    device_ms, wall_ms = [], []
    stream = torch.cuda.current_stream()
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record(stream)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        end.record(stream)
        end.synchronize()
        device_ms.append(start.elapsed_time(end))
        wall_ms.append((t1 - t0) * 1e3)
    return statistics.median(device_ms), statistics.median(wall_ms)


def _free_bytes(_cuda, cuda):
    if _cuda.SIMULATOR:
        return 1 << 40
    ctx = cuda.current_context()
    try:
        ctx.deallocations.clear()  # Numba frees device memory lazily: release it now
    except Exception:
        pass
    return ctx.get_memory_info().free


def _row(case, impl, elements, tensors, ms, bytes_per_element, floor_ms=None, wall_ms=None,
         dtype="float32", note="", copy=None, waited=None):
    """One result. ``copy``: (ms, bytes) of the same-run device-to-device copy; ``of_copy``
    is this row's bandwidth as a fraction of the copy's (1.0: as fast as a copy)."""
    seconds = ms / 1e3
    gbps = elements * bytes_per_element / seconds / 1e9 if seconds > 0 else float("nan")
    of_copy = None
    if copy is not None and copy[0] > 0 and seconds > 0:
        of_copy = gbps / (copy[1] / (copy[0] / 1e3) / 1e9)
    return {
        "case": case, "impl": impl, "elements": int(elements), "tensors": int(tensors),
        "dtype": dtype, "ms": ms, "wall_ms": wall_ms,
        "host_us": None if wall_ms is None else wall_ms * 1e3, "GBps": gbps,
        "bytes_per_element": bytes_per_element,
        "vs_floor": (ms / floor_ms) if floor_ms else None, "of_copy": of_copy,
        "waited_on_gpu": waited, "note": note,
    }


def run_cuda_bench(sizes=None, repeat=None, many="default", optimizers=("adam",),
                   dtype="float32", peers=True, quick=False, console=None,
                   allow_simulator=False):
    """Time fastoptim's cuda backend; return one dict per (case, implementation).

    Args:
        sizes: single-tensor sizes in elements (ints or "1e8" / "100M" strings);
            default 1e8 and 1e9 (quick: 1e7), each clamped to fit the free memory.
        repeat: timed repeats per measurement (median reported); default 20 (quick: 5).
        many: (count, size) or "COUNTxSIZE" for the many-small-tensors case;
            "default" (1000x1024, quick: 100x1024) or None to skip.
        optimizers: any of "adam", "adamw", "amsgrad", "sgd" (momentum), "sgd-plain".
        dtype: "float32" or "float64".
        peers: also time torch.optim on CUDA when importable.
        console: print the table to this file-like object (or a rich Console).
        allow_simulator: run under Numba's CUDA simulator (smoke tests; times are meaningless).

    Raises:
        CudaUnavailable (a RuntimeError) when there is no GPU; BenchInputError (a
        ValueError and a RuntimeError) for a bad argument.
    """
    _cuda, cuda_backend, cuda = _cuda_modules(allow_simulator)
    import fastoptim

    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise BenchInputError(f"dtype must be float32 or float64, got {dtype}")
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    sizes = [parse_size(s) for s in sizes]
    repeat = int(repeat) if repeat else (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    if many == "default" and quick:
        many = QUICK_MANY
    many = parse_many(many)
    optimizers = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise BenchInputError(f"unknown optimizer {name!r}: "
                                  f"expected one of {', '.join(OPTIMIZERS)}")
    torch = _torch_cuda() if peers else None
    floors = _floor_kernels(cuda)
    stream = _cuda.get_stream()
    itemsize = dtype.itemsize
    results = []

    for opt_name in optimizers:
        spec = OPTIMIZERS[opt_name]
        kwargs, reads = spec.kwargs, spec.arrays
        bpe = spec.streams * itemsize
        cls = getattr(fastoptim, spec.cls)
        for requested in sizes:
            free = _free_bytes(_cuda, cuda)
            # the floor's arrays (params, grads, state) plus the optimizer's own state
            fit = int(free * MEMORY_FRACTION // ((2 * reads - 2) * itemsize))
            n = max(1, min(requested, fit))
            note = f"clamped from {requested:,} to fit GPU memory" if n < requested else ""
            case = f"{opt_name} 1x{n:,}"
            arrays = [_cuda.zeros((n,), dtype) for _ in range(reads)]
            p, g = arrays[0], arrays[1]
            _cuda.fill(g, 1e-3)
            opt = cls([p], backend="cuda", **kwargs)
            ms, wall = _time_events(cuda, stream, lambda: opt.step([g]), repeat)
            floor_kernel = floors[reads]
            launcher = _cuda.configured(floor_kernel, n, stream)
            floor_ms, floor_wall = _time_events(cuda, stream, lambda: launcher(*arrays), repeat)
            src, dst = arrays[1], arrays[0]
            copy_ms, _ = _time_events(cuda, stream,
                                      lambda: dst.copy_to_device(src, stream=stream), repeat)
            copy = (copy_ms, 2 * n * itemsize)
            waited = _waited(_cuda, cuda, stream, lambda: opt.step([g]))
            results.append(_row(case, "device-to-device copy (reference)", n, 1, copy_ms,
                                2 * itemsize, floor_ms, None, dtype.name, note, copy=copy))
            results.append(_row(case, "floor (same bytes, trivial kernel)", n, 1, floor_ms,
                                bpe, floor_ms, floor_wall, dtype.name, note, copy=copy))
            results.append(_row(case, "fastoptim cuda", n, 1, ms, bpe, floor_ms, wall,
                                dtype.name, note, copy=copy, waited=waited))
            opt = arrays = p = g = None  # free the device memory (the lambdas above are done)
            _free_bytes(_cuda, cuda)  # hand Numba's memory back before torch allocates its own
            if torch is not None:
                results.extend(_torch_rows(torch, case, opt_name, n, 1, dtype, bpe, floor_ms,
                                           repeat, note, copy=copy))

        if many is not None:
            results.extend(_many_rows(_cuda, cuda_backend, cuda, fastoptim, cls, opt_name, kwargs,
                                      many, dtype, reads, bpe, floors, stream, repeat, torch))
    if console is not None:
        print_table(results, console)
    return results


def _many_rows(_cuda, cuda_backend, cuda, fastoptim, cls, opt_name, kwargs, many, dtype, reads,
               bpe, floors, stream, repeat, torch):
    """count x size tensors: host time per step as a plain list, FlatParams, the one-launch
    pointer-table call, and torch fused / foreach on the same tensors."""
    count, size = many
    n = count * size
    case = f"{opt_name} {count}x{size:,}"
    rows = []
    # a plain list of separate device arrays, through the optimizer
    params = [_cuda.zeros((size,), dtype) for _ in range(count)]
    grads = [_cuda.zeros((size,), dtype) for _ in range(count)]
    for g in grads:
        _cuda.fill(g, 1e-3)
    opt = cls(params, backend="cuda", **kwargs)
    ms, wall = _time_events(cuda, stream, lambda: opt.step(grads), repeat)
    waited = _waited(_cuda, cuda, stream, lambda: opt.step(grads))
    rows.append(_row(case, "fastoptim cuda, plain list (optimizer)", n, count, ms, bpe, None,
                     wall, dtype.name, waited=waited))
    # the same tensors through the one-launch pointer-table call of the backend
    multi = _multi_call(cuda_backend, opt_name, kwargs, params, grads, opt)
    if multi is not None:
        ms, wall = _time_events(cuda, stream, multi, repeat)
        rows.append(_row(case, "fastoptim cuda, plain list, one launch (backend call)", n, count,
                         ms, bpe, None, wall, dtype.name,
                         note="" if not _cuda.SIMULATOR else "simulator: per-tensor"))
    opt = params = grads = None  # free the device memory
    host = [np.zeros(size, dtype) for _ in range(count)]
    flat = fastoptim.FlatParams(host, device="cuda")
    _cuda.fill(flat.grad_buffer, 1e-3)
    opt = cls(flat.params, backend="cuda", **kwargs)
    ms, wall = _time_events(cuda, stream, lambda: opt.step(flat.grads), repeat)
    waited = _waited(_cuda, cuda, stream, lambda: opt.step(flat.grads))
    state = [flat.buffer, flat.grad_buffer] + [_cuda.zeros((n,), dtype) for _ in range(reads - 2)]
    launcher = _cuda.configured(floors[reads], n, stream)
    floor_ms, floor_wall = _time_events(cuda, stream, lambda: launcher(*state), repeat)
    rows.append(_row(case, "floor (same bytes, one flat kernel)", n, count, floor_ms,
                     bpe, floor_ms, floor_wall, dtype.name))
    rows.append(_row(case, "fastoptim cuda, FlatParams (one launch)", n, count, ms,
                     bpe, floor_ms, wall, dtype.name, waited=waited))
    opt = flat = state = None  # free the device memory
    _free_bytes(_cuda, cuda)
    if torch is not None:
        rows.extend(_torch_rows(torch, case, opt_name, size, count, dtype, bpe, floor_ms,
                                repeat, ""))
    return rows


def _multi_call(cuda_backend, opt_name, kwargs, params, grads, opt):
    """A closure calling adam_multi / sgd_multi on the optimizer's own (allocated) state."""
    state = [opt.state.get(i, {}) for i in range(len(params))]
    if opt_name in ("adam", "adamw", "amsgrad"):
        amsgrad = bool(kwargs.get("amsgrad"))
        m = [s["exp_avg"] for s in state]
        v = [s["exp_avg_sq"] for s in state]
        w = [s["max_exp_avg_sq"] for s in state] if amsgrad else None
        kw = dict(step=10.0, lr=kwargs["lr"], beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=kwargs.get("weight_decay", 0.0), amsgrad=amsgrad,
                  maximize=False, decoupled_weight_decay=opt_name == "adamw")
        return lambda: cuda_backend.adam_multi(params, grads, m, v, w, **kw)
    momentum = kwargs.get("momentum", 0)
    bufs = [s["momentum_buffer"] for s in state] if momentum else None
    return lambda: cuda_backend.sgd_multi(params, grads, bufs, lr=kwargs["lr"],
                                          momentum=momentum, dampening=0, weight_decay=0,
                                          nesterov=False, maximize=False, first_step=False)


def _torch_rows(torch, case, opt_name, size, count, dtype, bpe, floor_ms, repeat, note,
                copy=None):
    spec = OPTIMIZERS[opt_name]
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    params = [torch.zeros(size, dtype=tdtype, device="cuda") for _ in range(count)]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    rows = []
    for mode in ("fused", "foreach"):
        try:
            opt = getattr(torch.optim, spec.cls)(params, **{mode: True}, **spec.kwargs)
            ms, wall = _time_torch(torch, opt.step, repeat)
        except Exception as exc:  # an old torch without fused SGD, say
            rows.append(_row(case, f"torch {mode}", size * count, count, float("nan"), bpe,
                             floor_ms, None, dtype.name, f"failed: {exc}", copy=copy))
            continue
        rows.append(_row(case, f"torch {mode}", size * count, count, ms, bpe, floor_ms, wall,
                         dtype.name, note, copy=copy))
        del opt
    del params
    torch.cuda.empty_cache()
    return rows


def print_table(results, out=None):
    out = sys.stdout if out is None else out
    write = out.print if hasattr(out, "print") and not hasattr(out, "write") else (
        lambda s: print(s, file=out))
    header = (f"{'case':<22} {'implementation':<54} {'ms':>9} {'GB/s':>8} {'of copy':>8} "
              f"{'host us':>9} {'waited':>6}  note")
    write(header)
    write("-" * len(header))
    for r in results:
        frac = f"{r['of_copy']:.2f}" if r.get("of_copy") else ""
        host = f"{r['host_us']:.1f}" if r.get("host_us") is not None else ""
        waited = {None: "", True: "YES", False: "no"}[r.get("waited_on_gpu")]
        write(f"{r['case']:<22} {r['impl']:<54} {r['ms']:>9.3f} {r['GBps']:>8.1f} {frac:>8} "
              f"{host:>9} {waited:>6}  {r['note']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated sizes (default 1e8,1e9)")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--many", default="default", help="COUNTxSIZE or none (default 1000x1024)")
    parser.add_argument("--optimizers", default="adam",
                        help="comma-separated: " + ", ".join(OPTIMIZERS))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",") if args.sizes else None
    try:
        run_cuda_bench(sizes=sizes, repeat=args.repeat, many=args.many,
                       optimizers=args.optimizers.split(","), dtype=args.dtype,
                       peers=args.peers, quick=args.quick, console=sys.stdout)
    except CudaUnavailable as exc:
        print(f"bench_cuda: no GPU to benchmark: {exc}", file=sys.stderr)
        return 2
    except BenchInputError as exc:
        print(f"bench_cuda: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
