"""``fastoptim bench``: how much faster than what you have, how close to what the hardware allows.

An optimizer step is memory-bandwidth bound, so every case is measured against a
*floor* taken in the same run: a Numba kernel that reads and writes the same
arrays as the optimizer (same bytes per element, same threads, same serial or
parallel dispatch) and does no math. Each contestant is then one row of a table:

- ``floor`` and ``floor, prefetching``: two such kernels, a plain ``prange`` loop
  and the chunked, prefetching loop the numba backend runs; the faster of the two
  is the bandwidth floor (SGD+momentum 20 B/element in fp32, Adam/AdamW 28 B,
  AMSGrad 36 B, plain SGD 12 B) that "of floor" divides by;
- ``numpy``: the NumPy reference backend, and every available fast backend
  (``numba``, ``c``), each through the optimizer classes a user calls. The first
  ``CHECK_STEPS`` steps of each fast backend are compared with the reference
  (``assert_allclose``, rtol 1e-6 in fp32, 1e-12 in fp64) BEFORE it is timed: a
  mismatch is reported, never timed;
- peers, when importable: ``torch.optim`` (for-loop, foreach, fused) and DeepSpeed's
  ``DeepSpeedCPUAdam``.

Time per step is the median of ``repeat`` repeats after a warm-up that also pays
first-touch page faults and JIT compilation. The cases: one large tensor, one
medium tensor, and a model-like set of many small tensors, stepped both through
``FlatParams`` (one kernel call per step) and as a plain list (one call per tensor).

    >>> from fastoptim import bench
    >>> report = bench.run(optimizers=["adam"], sizes=[4096], many=None, repeat=2,
    ...                    peers=False, console=None)      # doctest: +SKIP
    >>> report.write_json("bench.json")                      # doctest: +SKIP

``python -m fastoptim bench --help`` lists the command-line options (``fastoptim.cli``).
"""
from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numba
import numpy as np

import fastoptim
from fastoptim import backends as _backends
from fastoptim.backends import _threads
from fastoptim.backends._jit import kernel_pair

__all__ = [
    "OPTIMIZERS", "DEFAULT_OPTIMIZERS", "run", "run_latency", "run_crossover", "run_device",
    "parse_size", "parse_many", "format_size", "Report", "Result", "print_report", "plot",
    "machine_info", "BenchError",
]

# --------------------------------------------------------------------------- settings
# one large tensor; one of the many-tensor case's 1M elements (FlatParams against one
# tensor, in the same run); one medium tensor
DEFAULT_SIZES = (16 * 2**20, 2 * 2**20, 2**20, 256 * 2**10, 64 * 2**10)
# the in-cache regime (issue 13): float64 at these sizes in the default run, and a
# FlatParams case whose total lies in it
IN_CACHE_F64_SIZES = (2**20, 256 * 2**10)
IN_CACHE_FLAT = (256, 1024)  # 256 tensors x 1K = 256K elements, one FlatParams call
IN_CACHE_RANGE = (64 * 2**10, 2 * 2**20)
# every torch peer at these sizes; the default run's other cases time torch fused only
FULL_PEER_SIZES = (16 * 2**20, 2**20, 256 * 2**10)
BOUND_BLOCK_BYTES = 4096  # per array and thread: 4 arrays x 4 KiB stay in L1
DEFAULT_MANY = (1000, 1024)  # a model-like set: 1000 tensors of 1024 elements
QUICK_SIZES = (2**20, 64 * 2**10)
QUICK_MANY = (100, 1024)
DEFAULT_REPEAT, QUICK_REPEAT = 10, 5
CHECK_STEPS = 3  # steps compared with the NumPy reference before timing
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
WARMUP_S, QUICK_WARMUP_S = 0.1, 0.02  # minimum warm-up after the checked steps
WARMUP_MIN_STEPS = 2
MIN_REPEAT_S = 2e-3  # a repeat times enough consecutive steps to last this long
CONTESTANT_BUDGET_S, QUICK_CONTESTANT_BUDGET_S = 2.0, 0.5  # timed seconds per contestant...
MIN_REPEATS = 3  # ...after at least this many repeats: a very slow row gets fewer repeats
DEFAULT_BUDGET_S = 120.0  # the default run adds --latency only if it fits in this
LATENCY_COST_S = 6.0  # rough cost of the latency measurement per optimizer
LATENCY_GOAL_S = {"cold": 2.0, "warm": 0.5}
CROSSOVER_SIZES = tuple(2**k for k in range(10, 21))  # 1K .. 1M elements


class BenchError(ValueError):
    """A bad benchmark request (unknown optimizer or backend, bad size): exit code 2."""


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer configuration, identical for fastoptim and the peers."""

    name: str
    label: str
    cls: str  # class name in fastoptim and in torch.optim
    kwargs: dict
    arrays: int  # arrays the step reads (param, grad, state...); all but grad are written

    @property
    def streams(self) -> int:  # array passes per element: reads + writes
        return 2 * self.arrays - 1


OPTIMIZERS = {
    spec.name: spec
    for spec in (
        OptimizerSpec("sgd", "SGD (momentum 0.9)", "SGD", dict(lr=1e-2, momentum=0.9), 3),
        OptimizerSpec("adam", "Adam", "Adam", dict(lr=1e-3), 4),
        OptimizerSpec("adamw", "AdamW", "AdamW", dict(lr=1e-3, weight_decay=1e-2), 4),
        OptimizerSpec("sgd-plain", "SGD (no momentum)", "SGD", dict(lr=1e-2), 2),
        OptimizerSpec("amsgrad", "Adam (amsgrad)", "Adam", dict(lr=1e-3, amsgrad=True), 5),
    )
}
DEFAULT_OPTIMIZERS = ("sgd", "adam", "adamw")
TORCH_PEERS = (  # key, label, torch.optim keyword
    ("torch-forloop", "torch for-loop", dict(foreach=False)),
    ("torch-foreach", "torch foreach", dict(foreach=True)),
    ("torch-fused", "torch fused", dict(fused=True)),
)
DEEPSPEED = "deepspeed-cpuadam"


# --------------------------------------------------------------------------- parsing
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text) -> int:
    """``"16M"`` -> 16777216, ``"256K"`` -> 262144, ``"1000"`` -> 1000 (K = 1024)."""
    if isinstance(text, (int, np.integer)):
        value = int(text)
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise BenchError(f"bad size {text!r}: expected a count such as 4096, 256K or 16M")
        exact = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
        if exact != int(exact):
            raise BenchError(f"bad size {text!r}: not a whole number of elements")
        value = int(exact)
    if value < 1:
        raise BenchError(f"bad size {text!r}: must be at least 1 element")
    return value


def parse_many(text):
    """``"1000x1024"`` -> (1000, 1024); ``"none"`` or ``"0"`` -> None (skip that case)."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        count, size = text
        return parse_size(count), parse_size(size)
    if str(text).strip().lower() in ("", "0", "none", "off"):
        return None
    parts = str(text).lower().split("x")
    if len(parts) != 2:
        raise BenchError(f"bad --many {text!r}: expected COUNTxSIZE such as 1000x1024")
    return parse_size(parts[0]), parse_size(parts[1])


def format_size(n: int) -> str:
    for suffix, unit in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _format_time(seconds) -> str:
    """Three significant digits: 1.23 s, 45.6 ms, 789 µs."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {unit}"


def _check_names(kind, names, known):
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(
            f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}; "
            f"expected one of {', '.join(known)}"
        )


def resolve_backends(names=None) -> list:
    """The CPU backends to time, the NumPy reference first; BenchError if one cannot run."""
    if names is None:
        return [b for b in _backends.CPU_BACKENDS if _backends.is_available(b)]
    names = list(dict.fromkeys(names))
    if "cuda" in names:
        raise BenchError("the cuda backend is benchmarked with --device cuda, not --backends")
    _check_names("backend", names, _backends.CPU_BACKENDS)
    for name in names:
        try:
            _backends.load(name)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
    return [b for b in _backends.CPU_BACKENDS if b in names]


# --------------------------------------------------------------------------- floor kernels
# Same arrays, same bytes per element as the optimizer, a trivial add instead of the
# math (every array read is used, so nothing can be optimized away). Each is built
# twice: a plain prange loop, and the chunked, prefetching loop the numba backend
# runs (backends/_jit.py); the floor of a case is the faster of the two.

def _move2(lo, hi, p, g):
    for i in range(lo, hi):
        p[i] = p[i] + g[i]


def _move3(lo, hi, p, g, b):
    for i in range(lo, hi):
        b[i] = b[i] + g[i]
        p[i] = p[i] + g[i]


def _move4(lo, hi, p, g, m, v):
    for i in range(lo, hi):
        m[i] = m[i] + g[i]
        v[i] = v[i] + g[i]
        p[i] = p[i] + g[i]


def _move5(lo, hi, p, g, m, v, w):
    for i in range(lo, hi):
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


def _parallel_min() -> int:
    return _threads.PARALLEL_MIN


def floor_kernel(arrays: int, n: int, variant: str = "prefetch"):
    """``f(*arrays)``: the no-math kernel for ``arrays`` arrays of ``n`` elements,
    serial below the thread policy's ``PARALLEL_MIN`` elements as the backends are.
    ``variant``: "plain" (a prange loop), "prefetch" (the backends' chunked loop) or
    "blocked" (one block per thread, the backends' loop for in-cache working sets)."""
    kernels = FLOOR_KERNELS[arrays]
    if n < _parallel_min() or _threads.parallel_threads() == 1:
        return lambda *a: kernels["plain"].run_serial(a, ())
    if variant == "blocked":
        pair, threads = kernels["prefetch"], _threads.parallel_threads()
        return lambda *a: pair.run_blocked(a, (), threads)
    pair = kernels[variant]
    return lambda *a: pair.run_parallel(a, ())


# --------------------------------------------------------------------------- compute bound
# Adam's exact math (IEEE division and square root) with the data in L1: every thread
# updates its own block of BOUND_BLOCK_BYTES per array, over and over, with the numba
# backend's own serial Adam loop. What the arithmetic alone costs on this machine; a
# step cannot be faster than n elements at this rate, whatever the memory does.
from fastoptim.backends import numba_backend as _nb  # noqa: E402

_ADAM_SERIAL = _nb._ADAM.serial


@numba.njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _adam_in_l1(p, g, m, v, scalars, threads, block, reps):
    for t in numba.prange(threads):
        lo = np.uint64(t * block)
        hi = np.uint64(t * block + block)
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


# --------------------------------------------------------------------------- results
@dataclass
class Result:
    """One row: a contestant on one case. Times in seconds; None when not timed."""

    optimizer: str
    case: str  # "16M", "256K", "1000x1024"
    mode: str  # "single", "flat", "list" (fastoptim), "tensors" (peers), "floor"
    n_elements: int
    n_tensors: int
    dtype: str
    contestant: str  # "floor", "numpy", "numba", "c", "torch-fused", ...
    label: str
    kind: str  # "floor", "bound" (Adam's compute bound), "reference", "fastoptim", "peer"
    check: str  # "ok", "reference", "peer", "n/a", "mismatch", "error"
    detail: str = ""
    time_s: Optional[float] = None  # median time per step
    times_s: list = field(default_factory=list)  # every repeat, per step
    repeats: int = 0
    inner: int = 0  # steps per repeat
    schedule: str = ""  # "interleaved" (repeats alternate between contestants) or "sequential"
    busy_cpus: Optional[float] = None  # CPUs other processes used while this case ran
    bytes_per_element: int = 0
    gb_per_s: Optional[float] = None
    fraction_of_floor: Optional[float] = None
    speedup_vs_numpy: Optional[float] = None
    speedup_vs_best_torch: Optional[float] = None

    @property
    def timed(self) -> bool:
        return self.time_s is not None


@dataclass
class Report:
    """Everything one run measured; ``to_dict()`` is the ``--json`` document."""

    machine: dict
    settings: dict
    results: list = field(default_factory=list)
    latency: Optional[list] = None
    crossover: Optional[dict] = None
    loop: Optional[dict] = None  # fastoptim.bench_loop.run()'s document
    goals: dict = field(default_factory=dict)  # kernel_goals(), the loop's goals
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "schema": "fastoptim-bench/1",
            "machine": self.machine,
            "settings": self.settings,
            "results": [dataclasses.asdict(r) for r in self.results],
            "latency": self.latency,
            "crossover": self.crossover,
            "loop": self.loop,
            "goals": self.goals,
            "wall_time_s": self.wall_time_s,
        }

    def write_json(self, path) -> None:
        text = json.dumps(self.to_dict(), indent=2, default=_json_default)
        if str(path) == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(path, "w") as f:
                f.write(text + "\n")

    def table_rows(self, optimizer, case, mode):
        """The rows of one table: floor, fastoptim rows of ``mode``, the peers of the case."""
        rows = [r for r in self.results if r.optimizer == optimizer and r.case == case]
        return ([r for r in rows if r.kind == "floor"]
                + [r for r in rows if r.kind == "bound" and mode == "single"]
                + [r for r in rows if r.kind in ("reference", "fastoptim") and r.mode == mode]
                + [r for r in rows if r.kind == "peer"])


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # not installed (or metadata missing)
        return None


def machine_info(threads=None) -> dict:
    """CPU, cores, thread layers and library versions, for the header and ``--json``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": _numba_threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else _version("torch"),
        "deepspeed": _version("deepspeed"),
        "fastoptim": fastoptim.__version__,
        "backends_available": _backends.available_backends(),
        "threads": threads if threads is not None else numba.get_num_threads(),
    }
    if "c" in info["backends_available"]:
        info["c_openmp_threads"] = _backends.load("c").max_threads()
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _system_busy_seconds():
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class CpuMeter:
    """How many CPUs *other* processes kept busy between ``start()`` and ``stop()``.

    System busy time minus this process's own CPU time (every thread: numba, OpenMP,
    torch), over the wall time. A parallel kernel waits at its barrier for its slowest
    thread: while another process holds a core, multi-threaded timings inflate.
    """

    def start(self):
        self.t0 = time.perf_counter()
        self.busy0 = _system_busy_seconds()
        self.own0 = time.process_time()
        return self

    def stop(self):
        """Average CPUs used by other processes (None where unknown)."""
        busy1 = _system_busy_seconds()
        wall = time.perf_counter() - self.t0
        if self.busy0 is None or busy1 is None or wall <= 0:
            return None
        others = (busy1 - self.busy0) - (time.process_time() - self.own0)
        return round(max(0.0, others / wall), 2)


def busy_cpus(interval=0.25):
    """CPUs kept busy by other processes while this one sleeps ``interval`` s, or None."""
    meter = CpuMeter().start()
    time.sleep(interval)
    return meter.stop()


def _numba_threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return "not initialised"


class _Threads:
    """Set numba, C OpenMP and torch threads for the run; restore them afterwards."""

    def __init__(self, threads, torch):
        self.threads, self.torch = threads, torch
        self.saved = {}

    def __enter__(self):
        n = self.threads
        self.saved["fastoptim"] = _threads.parallel_threads()
        _threads.set_num_threads(n)  # numba and C, through the one thread policy
        if self.torch is not None:
            self.saved["torch"] = self.torch.get_num_threads()
            self.torch.set_num_threads(n)
        return self

    def __exit__(self, *exc):
        _threads.set_num_threads(self.saved["fastoptim"])
        if "torch" in self.saved:
            self.torch.set_num_threads(self.saved["torch"])


def check_threads(threads) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    threads = int(threads)
    if not 1 <= threads <= limit:
        raise BenchError(
            f"--threads {threads}: must be between 1 and {limit} "
            "(NUMBA_NUM_THREADS; set that environment variable to allow more)"
        )
    return threads


# --------------------------------------------------------------------------- timing
def _warm_up(step, warmup_s) -> int:
    """Step until the warm-up is paid (page faults, JIT, caches, clocks); return the number of
    consecutive steps one timed repeat should take (at least ``MIN_REPEAT_S``)."""
    start, steps, last = time.perf_counter(), 0, []
    while True:
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        last.append(t1 - t0)
        steps += 1
        if (steps >= WARMUP_MIN_STEPS and t1 - start >= warmup_s) or steps >= 10000:
            break
    estimate = statistics.median(last[-5:])
    return max(1, min(10000, math.ceil(MIN_REPEAT_S / max(estimate, 1e-9))))


def _time_repeat(step, inner) -> float:
    """Seconds per step over ``inner`` consecutive steps."""
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return (time.perf_counter() - t0) / inner


class _NoGC:
    """Garbage collection off while timing (as timeit does)."""

    def __enter__(self):
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    key: str  # "16M" or "1000x1024"
    sizes: tuple  # elements per tensor
    modes: tuple  # ("single",) or ("flat", "list")
    all_peers: bool = True  # False: of the torch peers only torch fused (the extra cases)

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def title(self, mode) -> str:
        if mode == "single":
            return f"one tensor of {format_size(self.n)} elements"
        count, size = len(self.sizes), self.sizes[0]
        if mode == "flat":
            return (f"{count} tensors x {format_size(size)} via FlatParams "
                    "(one kernel call per step)")
        return (f"{count} tensors x {format_size(size)} as a plain list (checked every step, "
                "one table-kernel call)")


def make_cases(sizes, many, flat=None, suffix="", all_peers=lambda n: True) -> list:
    """Single-tensor cases, the many-tensors case (FlatParams and plain list) and a
    FlatParams-only case; ``suffix`` tags the keys (the float64 pass: " f64");
    ``all_peers(n)``: whether a single-tensor case of ``n`` elements gets every torch peer."""
    cases = [Case(format_size(n) + suffix, (n,), ("single",), all_peers(n)) for n in sizes]
    if many is not None:
        count, size = many
        cases.append(Case(f"{count}x{format_size(size)}{suffix}", (size,) * count,
                          ("flat", "list")))
    if flat is not None:
        count, size = flat
        cases.append(Case(f"{count}x{format_size(size)}{suffix}", (size,) * count, ("flat",),
                          False))
    return cases


class BenchData:
    """Initial parameters and gradients per (total size, dtype), reused by every contestant."""

    def __init__(self, dtype):
        self.dtype = dtype
        self._cache = {}

    def __call__(self, n):
        if n not in self._cache:
            self._cache.clear()  # keep one size in memory at a time
            rng = np.random.default_rng(n)
            param = rng.random(n, dtype=self.dtype)
            param -= 0.5
            grad = rng.random(n, dtype=self.dtype)
            grad -= 0.5
            grad *= 1e-2
            self._cache[n] = (param, grad)
        return self._cache[n]


def _bounds(sizes):
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def setup_fastoptim(spec, case, mode, data, backend):
    """(optimizer, params, step function) for one fastoptim contestant on fresh copies."""
    param0, grad = data(case.n)
    cls = getattr(fastoptim, spec.cls)
    bounds = _bounds(case.sizes)
    if mode == "single":
        params, grads = [param0.copy()], [grad]
    elif mode == "flat":
        flat = fastoptim.FlatParams([param0[a:b] for a, b in bounds])
        flat.grad_buffer[...] = grad
        params, grads = flat.params, flat.grads
    else:  # separate arrays: one kernel call per tensor
        params = [param0[a:b].copy() for a, b in bounds]
        grads = [grad[a:b] for a, b in bounds]
    opt = cls(params, backend=backend, **spec.kwargs)
    return opt, params, lambda: opt.step(grads)


def snapshot(opt, params):
    """Copies of the parameters and every state array (torch's state_dict layout)."""
    state = opt.state_dict()["state"]
    arrays = {f"param[{i}]": np.array(p) for i, p in enumerate(params)}
    for i, entry in state.items():
        for key, value in entry.items():
            if key != "step":
                arrays[f"{key}[{i}]"] = np.asarray(value)
    return arrays


def compare(got: dict, ref: dict, rtol: float):
    """None when ``got`` matches the reference, else one line describing the worst mismatch."""
    if got.keys() != ref.keys():
        return f"state differs: {sorted(set(got) ^ set(ref))[:3]}"
    for name, expected in ref.items():
        actual = got[name]
        try:
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)
        except AssertionError:
            with np.errstate(all="ignore"):
                rel = np.abs(actual.astype(np.float64) - expected) / np.abs(expected)
            worst = np.nanmax(np.where(np.isnan(rel), np.inf, rel)) if rel.size else 0.0
            return f"{name}: max rel err {worst:.1e} > rtol {rtol:.0e}"
    return None


def setup_torch(torch, spec, case, data, impl):
    param0, grad = data(case.n)
    params = []
    for a, b in _bounds(case.sizes):
        t = torch.from_numpy(param0[a:b].copy())
        t.grad = torch.from_numpy(grad[a:b])
        params.append(t)
    opt = getattr(torch.optim, spec.cls)(params, **spec.kwargs, **impl)
    return opt.step


def setup_deepspeed(torch, spec, case, data):
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    param0, grad = data(case.n)
    params = []
    for a, b in _bounds(case.sizes):
        t = torch.nn.Parameter(torch.from_numpy(param0[a:b].copy()))
        t.grad = torch.from_numpy(grad[a:b].copy())
        params.append(t)
    kw = dict(spec.kwargs)
    opt = DeepSpeedCPUAdam(params, adamw_mode=spec.name == "adamw", **kw)
    return opt.step


def _import_torch():
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # a broken install is the same as none for a peer
        return None
    return torch


def _deepspeed_importable() -> bool:
    if importlib.util.find_spec("deepspeed") is None:
        return False
    try:
        import deepspeed  # noqa: F401
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- the run
class _Mismatch(Exception):
    pass


@dataclass
class _Entry:
    """One contestant of a case: ``prepare()`` builds (and checks) it and returns its step."""

    row: Result
    prepare: Callable[[], Callable[[], None]]
    step: Optional[Callable[[], None]] = None
    inner: int = 0


class _Runner:
    """Builds the contestants of each case, checks them, times them, fills the rows.

    The repeats of all contestants of a case are interleaved (round 1 of each, round 2
    of each, ...), so a burst of load from another process hits every contestant
    alike instead of one of them; the median then drops it. When the contestants of a
    case would not fit in memory together, they are timed one after another instead.
    """

    def __init__(self, spec_list, backends, cases, dtype, repeat, warmup_s, budget_s, torch,
                 deepspeed):
        self.specs, self.backends, self.cases = spec_list, backends, cases
        self.dtype, self.repeat, self.warmup_s = dtype, repeat, warmup_s
        self.budget_s = budget_s  # timed seconds per contestant, after MIN_REPEATS repeats
        self.torch, self.deepspeed = torch, deepspeed
        self.progress = self.task = None
        self.data = BenchData(dtype)
        self.results = []
        self.bound_s_per_element = None  # Adam's compute bound (adam_compute_bound)

    def _say(self, text):
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def _done(self, units=1):
        if self.progress is not None:
            self.progress.advance(self.task, units)

    def peers(self, spec, case=None):
        out = []
        if self.torch is not None:  # the default run's extra cases: torch fused only
            out += [p for p in TORCH_PEERS
                    if case is None or case.all_peers or p[0] == "torch-fused"]
        if self.deepspeed and spec.name in ("adam", "adamw") and self.dtype == np.float32:
            out.append((DEEPSPEED, "DeepSpeedCPUAdam", None))
        return out

    def contestants(self, spec, case) -> int:
        return (len(FLOOR_VARIANTS) + len(self.backends) * len(case.modes)
                + len(self.peers(spec, case)))

    def count(self) -> int:
        """Progress units: one per contestant (build, check, warm up) and one per round."""
        return sum(self.contestants(spec, case) + self.repeat
                   for spec in self.specs for case in self.cases)

    def _row(self, spec, case, mode, contestant, label, kind, check):
        return Result(
            optimizer=spec.name, case=case.key, mode=mode, n_elements=case.n,
            n_tensors=len(case.sizes), dtype=self.dtype.name, contestant=contestant,
            label=label, kind=kind, check=check,
            bytes_per_element=spec.streams * self.dtype.itemsize,
        )

    def _interleave(self, spec, case) -> bool:
        """True when every contestant of the case fits in memory at once (with room to spare)."""
        per_contestant = case.n * self.dtype.itemsize * spec.arrays
        need = per_contestant * (self.contestants(spec, case) + 3)
        memory = _physical_memory()
        return need < (0.4 * memory if memory else 4 * 2**30)

    # ---------------------------------------------------------------- contestants
    def _entries(self, spec, case):
        entries = [self._floor_entry(spec, case, variant) for variant in FLOOR_VARIANTS]
        for mode in case.modes:
            reference = {}  # filled by the first fastoptim contestant of this mode
            for backend in self.backends:
                entries.append(self._fastoptim_entry(spec, case, mode, backend, reference))
        for key, label, impl in self.peers(spec, case):
            entries.append(self._peer_entry(spec, case, key, label, impl))
        return entries

    def _floor_entry(self, spec, case, variant):
        name = "floor" if variant == "plain" else f"floor-{variant}"
        row = self._row(spec, case, "floor", name, FLOOR_VARIANTS[variant], "floor", "n/a")

        def prepare():
            param0, grad = self.data(case.n)
            arrays = [param0.copy(), grad] + [np.zeros(case.n, self.dtype)
                                              for _ in range(spec.arrays - 2)]
            kernel = floor_kernel(spec.arrays, case.n, variant)
            row.detail = "parallel" if case.n >= _parallel_min() else "serial"
            return lambda: kernel(*arrays)

        return _Entry(row, prepare)

    def _fastoptim_entry(self, spec, case, mode, backend, reference):
        is_reference = backend == _backends.REFERENCE
        row = self._row(spec, case, mode, backend, backend,
                        "reference" if is_reference else "fastoptim",
                        "reference" if is_reference else "ok")

        def run_checked_steps(name):
            opt, params, step = setup_fastoptim(spec, case, mode, self.data, name)
            for _ in range(CHECK_STEPS):
                step()
            return step, snapshot(opt, params)

        def prepare():
            if not reference and not is_reference:  # numpy not timed: run it for the check
                reference.update(run_checked_steps(_backends.REFERENCE)[1])
            step, got = run_checked_steps(backend)
            if is_reference:
                reference.update(got)
            else:
                mismatch = compare(got, reference, RTOL[self.dtype])
                if mismatch:  # reported, never timed
                    row.check, row.detail = "mismatch", mismatch
                    raise _Mismatch(mismatch)
            return step  # the checked optimizer goes on stepping: it is what gets timed

        return _Entry(row, prepare)

    def _peer_entry(self, spec, case, key, label, impl):
        row = self._row(spec, case, "tensors", key, label, "peer", "peer")
        if key == DEEPSPEED:
            return _Entry(row, lambda: setup_deepspeed(self.torch, spec, case, self.data))
        return _Entry(row, lambda: setup_torch(self.torch, spec, case, self.data, impl))

    def _build(self, entry, where) -> bool:
        """Prepare and warm up one contestant; False when it cannot be timed."""
        self._say(f"{where}: {'checking' if entry.row.kind == 'fastoptim' else 'preparing'} "
                  f"{entry.row.label}")
        try:
            entry.step = entry.prepare()
            with _NoGC():
                entry.inner = _warm_up(entry.step, self.warmup_s)
            return True
        except _Mismatch:
            return False
        except Exception as exc:  # one broken contestant (e.g. fused unsupported) ends no run
            entry.row.check, entry.row.detail = "error", f"{type(exc).__name__}: {exc}"
            return False
        finally:
            self._done()

    # ---------------------------------------------------------------- timing
    def _has_enough(self, entry, spent) -> bool:
        """A contestant stops after its time budget once it has MIN_REPEATS repeats (a step
        that takes seconds, e.g. under heavy load, must not hold up the whole run)."""
        return len(entry.row.times_s) >= min(MIN_REPEATS, self.repeat) and spent >= self.budget_s

    def case(self, spec, case):
        where = f"{spec.label} {case.key}"
        entries = self._entries(spec, case)
        meter = CpuMeter().start()
        if self._interleave(spec, case):
            schedule = "interleaved"
            live = [e for e in entries if self._build(e, where)]
            spent = [0.0] * len(live)
            with _NoGC():
                for r in range(self.repeat):
                    self._say(f"{where}: timing round {r + 1}/{self.repeat}")
                    for i, e in enumerate(live):
                        if self._has_enough(e, spent[i]):
                            continue
                        t0 = time.perf_counter()
                        e.row.times_s.append(_time_repeat(e.step, e.inner))
                        spent[i] += time.perf_counter() - t0
                    self._done()
        else:
            schedule = "sequential"
            for e in entries:
                if self._build(e, where):
                    spent = 0.0
                    with _NoGC():
                        while len(e.row.times_s) < self.repeat and not self._has_enough(e, spent):
                            t0 = time.perf_counter()
                            e.row.times_s.append(_time_repeat(e.step, e.inner))
                            spent += time.perf_counter() - t0
                e.step = None  # release its arrays before the next contestant
            self._done(self.repeat)
        busy = meter.stop()
        rows = [e.row for e in entries]
        for row in rows:
            if row.times_s:
                row.time_s = statistics.median(row.times_s)
                row.repeats = len(row.times_s)
            row.schedule, row.busy_cpus = schedule, busy
        for e in entries:
            row = e.row
            row.inner = e.inner if row.times_s else 0
            e.step = None
        if (spec.name == "adam" and case.modes == ("single",)
                and self.bound_s_per_element is not None):
            bound = self._row(spec, case, "single", "bound-compute",
                              "compute bound (Adam math, data in L1)", "bound", "n/a")
            bound.time_s = self.bound_s_per_element * case.n
            bound.detail = f"{self.bound_s_per_element * 1e9:.3f} ns/element, all threads"
            rows.append(bound)
        self.results.extend(rows)
        _derive(self.results, spec.name, case.key)
        return rows


def _derive(results, optimizer, case):
    """Fill GB/s, fraction of the floor and the speedups of one case's rows."""
    rows = [r for r in results if r.optimizer == optimizer and r.case == case]
    floor = min((r for r in rows if r.kind == "floor" and r.timed), key=lambda r: r.time_s,
                default=None)  # the faster floor kernel is the floor
    torch_times = [r.time_s for r in rows if r.contestant.startswith("torch") and r.timed]
    best_torch = min(torch_times) if torch_times else None
    for r in rows:
        if not r.timed:
            continue
        r.gb_per_s = r.bytes_per_element * r.n_elements / r.time_s / 1e9
        if floor is not None:
            r.fraction_of_floor = floor.time_s / r.time_s
        if r.kind in ("reference", "fastoptim"):
            numpy_row = next((x for x in rows if x.kind == "reference" and x.mode == r.mode
                              and x.timed), None)
            r.speedup_vs_numpy = numpy_row.time_s / r.time_s if numpy_row else None
            r.speedup_vs_best_torch = best_torch / r.time_s if best_torch else None


def run(optimizers=DEFAULT_OPTIMIZERS, backends=None, sizes=None, many="default",
        dtype="float32", threads=None, repeat=None, peers=True, quick=False, latency=None,
        crossover=False, console=None, progress=True, budget_s=DEFAULT_BUDGET_S,
        in_cache=None, loop=None) -> Report:
    """Run the benchmark; print the header and tables to ``console`` (a rich Console) if given.

    Args:
        optimizers: names from ``OPTIMIZERS`` (default sgd, adam, adamw).
        backends: CPU backends to time (default: every available one, NumPy first).
        sizes: single-tensor sizes in elements (ints or "16M"-style strings).
        many: (count, size) of the many-small-tensors case, "1000x1024", or None to skip.
        dtype: "float32" or "float64".
        threads: threads for numba, the C OpenMP kernels and torch (default: all).
        repeat: timed repeats per measurement; the table shows their median.
        peers: time torch.optim and DeepSpeedCPUAdam when importable.
        quick: small sizes, few repeats, short warm-up.
        latency: first-step latency in subprocesses (None: only if it fits ``budget_s``).
        crossover: also measure the serial/parallel crossover of the kernels.
        in_cache: the in-cache regime's extras (issue 13): a float64 pass at
            ``IN_CACHE_F64_SIZES``, the ``IN_CACHE_FLAT`` FlatParams case, Adam's compute
            bound and the goals table (None: in the default run, i.e. no sizes given).
        loop: the training-loop benchmark (``fastoptim.bench_loop``): "short", "full" or
            False (None: its short form in the default run).
    Raises:
        BenchError: unknown optimizer or backend, bad size, dtype or thread count.
    """
    started = time.perf_counter()
    optimizers = list(dict.fromkeys(optimizers))
    if not optimizers:
        raise BenchError("no optimizer to benchmark")
    _check_names("optimizer", optimizers, list(OPTIMIZERS))
    backend_names = resolve_backends(backends)
    if not backend_names:
        raise BenchError("no backend to benchmark")
    if str(dtype) not in ("float32", "float64"):
        raise BenchError(f"bad dtype {dtype!r}: expected float32 or float64")
    dtype = np.dtype(dtype)
    default_run = not sizes and not quick
    in_cache = default_run if in_cache is None else bool(in_cache)
    loop = ("short" if default_run else False) if loop is None else loop
    if loop not in (False, "short", "full"):
        raise BenchError(f"bad loop {loop!r}: expected 'short', 'full' or False")
    sizes = [parse_size(s) for s in (sizes or (QUICK_SIZES if quick else DEFAULT_SIZES))]
    many = (QUICK_MANY if quick else DEFAULT_MANY) if many == "default" else parse_many(many)
    threads = check_threads(threads)
    repeat = int(repeat) if repeat is not None else (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    if repeat < 1:
        raise BenchError(f"--repeat {repeat}: must be at least 1")
    specs = [OPTIMIZERS[name] for name in optimizers]
    extra = (lambda n: n in FULL_PEER_SIZES) if default_run else (lambda n: True)
    passes = [(dtype, make_cases(sizes, many, IN_CACHE_FLAT if in_cache else None,
                                 all_peers=extra))]
    if in_cache and dtype != np.float64:
        passes.append((np.dtype(np.float64), make_cases(IN_CACHE_F64_SIZES, None, suffix=" f64",
                                                        all_peers=lambda n: False)))

    torch = _import_torch() if peers else None
    deepspeed = (peers and any(s.name in ("adam", "adamw") for s in specs)
                 and _deepspeed_importable())
    settings = dict(optimizers=optimizers, backends=backend_names, sizes=sizes,
                    many=list(many) if many else None, dtype=dtype.name, threads=threads,
                    repeat=repeat, check_steps=CHECK_STEPS, rtol=RTOL[dtype],
                    warmup_s=QUICK_WARMUP_S if quick else WARMUP_S,
                    min_repeat_s=MIN_REPEAT_S, min_repeats=min(MIN_REPEATS, repeat),
                    contestant_budget_s=QUICK_CONTESTANT_BUDGET_S if quick else CONTESTANT_BUDGET_S,
                    peers=bool(peers), quick=bool(quick),
                    torch_peers=torch is not None, deepspeed_peer=bool(deepspeed),
                    in_cache=in_cache, loop=loop,
                    passes=[dict(dtype=d.name, cases=[c.key for c in cs]) for d, cs in passes])

    with _Threads(threads, torch):
        # run one tiny parallel kernel: it starts Numba's thread pool, so the header can
        # name the threading layer and no timed step pays for starting it
        FLOOR_KERNELS[2]["plain"].parallel((np.zeros(64, dtype), np.zeros(64, dtype)), ())
        report = Report(machine=machine_info(threads), settings=settings)
        report.machine["busy_cpus_before"] = busy_cpus(0.1 if quick else 0.25)
        if console is not None:
            print_header(report, console)
        if in_cache and "adam" in optimizers:
            report.machine["adam_compute_bound_ns_per_element"] = {
                d.name: 1e9 * adam_compute_bound(d, threads) for d, _ in passes}
        runners = [_Runner(specs, backend_names, cases, d, repeat, settings["warmup_s"],
                           settings["contestant_budget_s"], torch, deepspeed)
                   for d, cases in passes]
        with _progress(console if progress else None) as bar:
            task = (bar.add_task("benchmark", total=sum(r.count() for r in runners))
                    if bar else None)
            for runner in runners:
                bound = report.machine.get("adam_compute_bound_ns_per_element")
                if bound:
                    runner.bound_s_per_element = bound[runner.dtype.name] * 1e-9
                runner.progress, runner.task = bar, task
                runner.results = report.results
                for spec in specs:
                    for case in runner.cases:
                        runner.case(spec, case)
                        if console is not None:
                            for mode in case.modes:
                                console.print(case_table(report, spec.name, case, mode))
                            _print_many_table(console, report, spec.name, case)
                runner.data = None
        if console is not None:
            console.print(summary_table(report))
        report.goals = {"kernels": kernel_goals(report)}
        if in_cache and console is not None:
            console.print(kernel_goals_table(report.goals["kernels"]))

    report.machine["busy_cpus_after"] = busy_cpus(0.1 if quick else 0.25)
    if console is not None and _is_busy(report.machine.get("busy_cpus_after")):
        console.print(f"[yellow]note: other processes kept {report.machine['busy_cpus_after']} "
                      "CPUs busy at the end of the run; multi-threaded timings may be "
                      "inflated[/yellow]")
    elapsed = time.perf_counter() - started
    if latency is None:  # default: only if it fits the time budget
        latency = not quick and elapsed + LATENCY_COST_S * (len(specs) + 1) <= budget_s
    if latency:
        report.latency = run_latency(optimizers, threads=threads, console=console,
                                     progress=progress)
    if loop:
        from fastoptim import bench_loop

        with _Threads(threads, torch):
            report.loop = bench_loop.run(
                backends=backend_names, peers=peers,
                steps=bench_loop.SHORT_STEPS if loop == "short" else bench_loop.DEFAULT_STEPS,
                repeat=bench_loop.SHORT_REPEAT if loop == "short" else bench_loop.DEFAULT_REPEAT,
                console=console, progress=progress)
        report.goals["loop"] = report.loop["goals"]
    if crossover:
        report.crossover = run_crossover(dtype=dtype.name, threads=threads,
                                         repeat=max(repeat, 5), console=console)
    report.wall_time_s = time.perf_counter() - started
    if console is not None:
        console.print(f"[dim]wall time {report.wall_time_s:.1f} s[/dim]")
    return report


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(console):
    if console is None:
        return _NoProgress()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)


# --------------------------------------------------------------------------- output
def _is_busy(busy) -> bool:
    return busy is not None and busy >= 0.25


def print_header(report: Report, console) -> None:
    from rich.panel import Panel

    m, s = report.machine, report.settings
    peers = []
    if s["torch_peers"]:
        peers.append(f"torch {m['torch']} (for-loop, foreach, fused)")
    if s["deepspeed_peer"]:
        peers.append(f"DeepSpeedCPUAdam {m['deepspeed']}")
    if not s["peers"]:
        peer_text = "off (--no-peers)"
    else:
        peer_text = ", ".join(peers) or "none importable (torch, deepspeed)"
    text = (
        f"[bold]time per optimizer step[/bold], {s['dtype']}: median of {s['repeat']} repeats "
        f"(interleaved across the contestants of a case; at least {s['min_repeats']} for a row "
        f"slower than {s['contestant_budget_s']:g} s in all) after a warm-up that pays "
        f"first-touch page faults and JIT compilation\n"
        f"[bold]check[/bold]    each fast backend's first {s['check_steps']} steps are compared "
        f"with the NumPy reference (rtol {s['rtol']:.0e}) before it is timed\n"
        f"[bold]floor[/bold]    a Numba kernel that reads and writes the same arrays with no "
        f"math, on the same threads: what the memory bus allows\n"
        f"[bold]threads[/bold]  {s['threads']} (numba {m['numba_threading_layer']} layer, "
        f"C OpenMP{', torch' if s['torch_peers'] else ''})\n"
        f"[bold]machine[/bold]  {m['cpu']}, {m['usable_cpus']} cores; python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}\n"
        f"[bold]backends[/bold] {', '.join(s['backends'])}    [bold]peers[/bold] {peer_text}"
    )
    busy = m.get("busy_cpus_before")
    if _is_busy(busy):
        text += (f"\n[bold yellow]busy[/bold yellow]     other processes keep {busy:g} of "
                 f"{m['logical_cpus']} CPUs busy: multi-threaded timings will be inflated "
                 "(a parallel kernel waits for its slowest thread); rerun when the machine is "
                 "idle, or compare with --threads 1")
    console.print(Panel(text, title=f"fastoptim bench {m['fastoptim']}", expand=False))


def _ratio(x):
    return "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def _numpy_time(rows, mode):
    row = next((r for r in rows if r.kind == "reference" and r.mode == mode and r.timed), None)
    return row.time_s if row else None


def case_table(report: Report, optimizer: str, case: Case, mode: str):
    """A rich Table: one row per contestant on one case."""
    from rich.table import Table

    spec = OPTIMIZERS[optimizer]
    rows = report.table_rows(optimizer, case.key, mode)
    numpy_time = _numpy_time(rows, mode)
    torch_times = [r.time_s for r in rows if r.contestant.startswith("torch") and r.timed]
    best_torch = min(torch_times) if torch_times else None
    fastest = min((r.time_s for r in rows if r.timed and r.kind not in ("floor", "bound")),
                  default=None)
    dtype = np.dtype(rows[0].dtype if rows else report.settings["dtype"])
    notes = [f"[red]{r.label}: {r.check}: {r.detail}[/red]" for r in rows
             if r.check in ("mismatch", "error")]
    busy = rows[0].busy_cpus if rows else None
    if _is_busy(busy):
        notes.append(f"[yellow]busy: other processes used {busy:g} CPUs on average while this "
                     "case ran; multi-threaded rows are inflated[/yellow]")
    table = Table(title=f"{spec.label}, {dtype.name}, {case.title(mode)}", title_justify="left",
                  caption="\n".join([_caption(spec, case, mode, dtype, rows)] + notes),
                  caption_justify="left")
    table.add_column("contestant", no_wrap=True)
    table.add_column("check", no_wrap=True)
    for name in ("time/step", "GB/s", "of floor", "vs NumPy", "vs torch"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        style = {"floor": "dim", "bound": "dim", "peer": "italic"}.get(r.kind, "")
        check = {"ok": "[green]ok[/green]", "mismatch": "[bold red]MISMATCH[/bold red]",
                 "error": "[bold red]error[/bold red]"}.get(r.check, r.check)
        time_text = "not timed" if r.check == "mismatch" else _format_time(r.time_s)
        if r.timed and r.time_s == fastest:
            time_text = f"[bold green]{time_text}[/bold green]"
        table.add_row(
            r.label, check, time_text,
            "-" if r.gb_per_s is None else f"{r.gb_per_s:.1f}",
            "-" if r.fraction_of_floor is None else f"{100 * r.fraction_of_floor:.0f}%",
            _ratio(numpy_time / r.time_s) if numpy_time and r.timed else "-",
            _ratio(best_torch / r.time_s) if best_torch and r.timed else "-",
            style=style,
        )
    return table


def _caption(spec, case, mode, dtype, rows):
    names = ["param", "grad", "momentum_buffer"] if spec.arrays == 3 else \
        ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"][:spec.arrays]
    floor = next((r for r in rows if r.kind == "floor"), None)
    how = f"{floor.detail} " if floor is not None and floor.detail else ""
    text = (f"{spec.streams * dtype.itemsize} B/element (reads {', '.join(names)}; writes all "
            f"but grad) x {format_size(case.n)} elements; floor: the fastest of three {how}Numba "
            f"kernels moving the same bytes with no math (a plain loop; the backends' "
            f"chunked, prefetching loop; one block per thread)")
    if mode != "single":
        text += f"; peers step the {len(case.sizes)} tensors as separate tensors"
    if any(r.contestant.startswith("torch") for r in rows):
        text += "; vs torch: against the fastest torch.optim row"
    return text


def many_table(report: Report, optimizer: str, case: Case):
    """The many-tensors case in one table: each backend's plain list next to its
    FlatParams step and the peers (torch.optim, DeepSpeedCPUAdam), all against the
    fastest plain list of the same run."""
    from rich.table import Table

    rows = [r for r in report.results if r.optimizer == optimizer and r.case == case.key
            and r.timed and (r.kind == "peer" or (r.kind == "fastoptim"
                                                  and r.mode in ("list", "flat")))]
    lists = [r.time_s for r in rows if r.mode == "list"]
    if not lists:
        return None
    best_list = min(lists)
    count, size = len(case.sizes), format_size(case.sizes[0])
    table = Table(title=f"{OPTIMIZERS[optimizer].label}, {report.settings['dtype']}, {count} "
                        f"tensors x {size}: the plain list next to FlatParams and the peers",
                  title_justify="left", caption_justify="left",
                  caption="x plain list: time per step over the fastest plain list's (2.00x: "
                          "half as fast); one interleaved run")
    table.add_column("contestant", no_wrap=True)
    table.add_column("time/step", justify="right", no_wrap=True)
    table.add_column("x plain list", justify="right", no_wrap=True)
    order = {"list": 0, "flat": 1, "tensors": 2}
    for r in sorted(rows, key=lambda r: (order.get(r.mode, 3), r.time_s)):
        label = {"list": f"{r.label}, plain list", "flat": f"{r.label}, FlatParams"}.get(
            r.mode, r.label)
        table.add_row(label, _format_time(r.time_s), _ratio(r.time_s / best_list),
                      style="italic" if r.kind == "peer" else "")
    return table


def _print_many_table(console, report, optimizer, case):
    if "list" in case.modes:
        table = many_table(report, optimizer, case)
        if table is not None:
            console.print(table)


def summary_table(report: Report):
    """The best fastoptim backend of each case, against the floor, NumPy and torch."""
    from rich.table import Table

    table = Table(title="Summary: the fastest fastoptim backend per case", title_justify="left")
    for name, justify in (("optimizer", "left"), ("case", "left"), ("best backend", "left"),
                          ("time/step", "right"), ("of floor", "right"), ("vs NumPy", "right"),
                          ("vs torch", "right")):
        table.add_column(name, justify=justify)
    seen = []
    for r in report.results:
        key = (r.optimizer, r.case, r.mode)
        if r.kind in ("reference", "fastoptim") and key not in seen:
            seen.append(key)
    for optimizer, case, mode in seen:
        key = (optimizer, case, mode)
        same = [r for r in report.results if (r.optimizer, r.case, r.mode) == key]
        rows = [r for r in same if r.kind == "fastoptim" and r.timed]
        mismatches = [r.contestant for r in same if r.check in ("mismatch", "error")]
        label = case if mode == "single" else f"{case} {mode}"
        if _is_busy(same[0].busy_cpus):
            label += " [yellow](busy)[/yellow]"
        if not rows:
            table.add_row(OPTIMIZERS[optimizer].label, label, "-", "-", "-", "-", "-")
            continue
        best = min(rows, key=lambda r: r.time_s)
        name = best.contestant + (f" [red](failed: {', '.join(mismatches)})[/red]"
                                  if mismatches else "")
        table.add_row(
            OPTIMIZERS[optimizer].label, label, name, _format_time(best.time_s),
            "-" if best.fraction_of_floor is None else f"{100 * best.fraction_of_floor:.0f}%",
            _ratio(best.speedup_vs_numpy), _ratio(best.speedup_vs_best_torch))
    return table


KERNEL_GOALS = {  # issue 13 (and 12's "nothing regresses"), ratios within one run
    "of_floor": {(np.dtype(np.float32).name, 256 * 2**10): 0.7, ("float32", 2**20): 0.7,
                 ("float64", 256 * 2**10): 0.6, ("float64", 2**20): 0.6,
                 ("float32", 16 * 2**20): 0.95},
    "adam_vs_torch_fused": {256 * 2**10: 2.0, 2**20: 1.4},
    "adam_vs_deepspeed": {256 * 2**10: 1.5, 2**20: 1.4},
    "numba_vs_c": 1.15,  # the slower of the two within 15% of the faster, at every size
}


def kernel_goals(report: Report) -> list:
    """One entry per (optimizer, dtype, single-tensor or FlatParams case) of the run: the
    floor, Adam's compute bound, each fast backend's fraction of the floor, numba against
    C, Adam against torch fused and DeepSpeedCPUAdam, and which goals hold."""
    out = []
    keys = list(dict.fromkeys((r.optimizer, r.dtype, r.case, r.mode) for r in report.results
                              if r.kind == "fastoptim" and r.mode in ("single", "flat")))
    for optimizer, dtype, case, mode in keys:
        rows = [r for r in report.results
                if (r.optimizer, r.dtype, r.case) == (optimizer, dtype, case)]
        floor = min((r for r in rows if r.kind == "floor" and r.timed),
                    key=lambda r: r.time_s, default=None)
        fast = {r.contestant: r for r in rows if r.kind == "fastoptim" and r.mode == mode
                and r.timed}
        if floor is None or not fast:
            continue
        n = rows[0].n_elements
        peer = {r.contestant: r.time_s for r in rows if r.kind == "peer" and r.timed}
        bound = next((r.time_s for r in rows if r.kind == "bound"), None)
        entry = dict(optimizer=optimizer, dtype=dtype, case=case, mode=mode, n_elements=n,
                     floor_s=floor.time_s, floor_kind=floor.contestant, compute_bound_s=bound,
                     of_floor={b: r.fraction_of_floor for b, r in fast.items()},
                     time_s={b: r.time_s for b, r in fast.items()}, goals={})
        if "numba" in fast and "c" in fast:
            entry["numba_over_c"] = fast["numba"].time_s / fast["c"].time_s
            worse = max(entry["numba_over_c"], 1 / entry["numba_over_c"])
            entry["goals"]["numba and c within 15%"] = worse <= KERNEL_GOALS["numba_vs_c"]
        if mode == "single":
            need = KERNEL_GOALS["of_floor"].get((dtype, n))
            if need is not None:
                for b, r in fast.items():
                    entry["goals"][f"{b} >= {need:g} of floor"] = r.fraction_of_floor >= need
            if optimizer == "adam" and dtype == "float32":
                for peer_key, table, label in (
                        ("torch-fused", KERNEL_GOALS["adam_vs_torch_fused"], "torch fused"),
                        (DEEPSPEED, KERNEL_GOALS["adam_vs_deepspeed"], "DeepSpeedCPUAdam")):
                    if peer_key in peer:
                        entry[f"vs_{peer_key}"] = {b: peer[peer_key] / r.time_s
                                                   for b, r in fast.items()}
                        need = table.get(n)
                        if need is not None:
                            for b, r in fast.items():
                                entry["goals"][f"{b} >= {need:g}x {label}"] = (
                                    peer[peer_key] / r.time_s >= need)
        out.append(entry)
    return out


def kernel_goals_table(entries):
    from rich.table import Table

    table = Table(title="Kernels against their floor (in-cache regime 64K-2M, and 16M): "
                        "goals of this run", title_justify="left",
                  caption="of floor: the floor's time / the backend's (the floor: the fastest "
                          "no-math kernel of the case); compute bound: Adam's exact math with "
                          "the data in L1, on all threads (a step cannot beat it); numba/c: "
                          "time ratio; vs peers: the peer's time / the backend's",
                  caption_justify="left")
    for name in ("optimizer", "dtype", "case", "floor", "compute bound", "numba", "c",
                 "numba/c", "vs torch fused", "vs DeepSpeed", "goals"):
        table.add_column(name, justify="left" if name in ("optimizer", "dtype", "case", "goals")
                         else "right")

    def pair(d):
        if not d:
            return "-"
        return " / ".join(f"{d[b]:.2f}x" for b in ("numba", "c") if b in d)

    for e in entries:
        missed = [k for k, v in e["goals"].items() if not v]
        verdict = ("-" if not e["goals"] else "[green]met[/green]" if not missed
                   else "[red]missed: " + "; ".join(missed) + "[/red]")
        table.add_row(
            OPTIMIZERS[e["optimizer"]].label, e["dtype"],
            e["case"] + (" flat" if e["mode"] == "flat" else ""), _format_time(e["floor_s"]),
            _format_time(e["compute_bound_s"]) if e["compute_bound_s"] else "-",
            *[f"{100 * e['of_floor'][b]:.0f}%" if b in e["of_floor"] else "-"
              for b in ("numba", "c")],
            f"{e['numba_over_c']:.2f}" if "numba_over_c" in e else "-",
            pair(e.get("vs_torch-fused")), pair(e.get(f"vs_{DEEPSPEED}")), verdict)
    return table


def print_report(report: Report, console=None) -> None:
    """Print a finished report (header, one table per case, summary, latency, crossover)."""
    if console is None:
        from rich.console import Console

        console = Console()
    print_header(report, console)
    seen = dict.fromkeys((r.optimizer, r.case, r.n_elements, r.n_tensors) for r in report.results)
    for optimizer, key, n, count in seen:
        modes = tuple(dict.fromkeys(r.mode for r in report.results
                                    if (r.optimizer, r.case) == (optimizer, key)
                                    and r.kind in ("reference", "fastoptim")))
        case = Case(key, (n // count,) * count, modes)
        for mode in modes:
            console.print(case_table(report, optimizer, case, mode))
        _print_many_table(console, report, optimizer, case)
    console.print(summary_table(report))
    if report.goals.get("kernels"):
        console.print(kernel_goals_table(report.goals["kernels"]))
    if report.loop:
        from fastoptim import bench_loop

        results = [bench_loop.LoopResult(**r) for r in report.loop["results"]]
        for key in dict.fromkeys((r.model, r.dtype) for r in results):
            console.print(bench_loop.loop_table([r for r in results
                                                 if (r.model, r.dtype) == key]))
        console.print(bench_loop.goals_table(report.loop["goals"]))
    if report.latency:
        console.print(latency_table(report.latency))
    if report.crossover:
        for table in crossover_tables(report.crossover):
            console.print(table)


# --------------------------------------------------------------------------- latency
_LATENCY_CHILD = r"""
import json, sys, time
import numpy as np
cls_name, kwargs = sys.argv[1], json.loads(sys.argv[2])
# a weight and a bias: the first step compiles both the parallel and the serial kernel
weight, bias = np.full(1 << 20, 0.5, np.float32), np.full(1024, 0.5, np.float32)
grads = [np.full_like(weight, 1e-2), np.full_like(bias, 1e-2)]
t0 = time.perf_counter()
import fastoptim
t1 = time.perf_counter()
opt = getattr(fastoptim, cls_name)([weight, bias], backend="numba", **kwargs)
t2 = time.perf_counter()
opt.step(grads)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "first_step_s": t3 - t2,
                  "total_s": t3 - t0, "scipy_imported": "scipy" in sys.modules}))
"""


# The same first step with nothing but Numba: two trivial cached kernels (one prange,
# one serial) in a module of their own. What Numba itself costs in this environment.
_BASELINE_MODULE = r"""
import numba

@numba.njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def parallel_step(p, g):
    for i in numba.prange(p.shape[0]):
        p[i] = p[i] - 0.01 * g[i]

@numba.njit(cache=True, error_model="numpy", nogil=True)
def serial_step(p, g):
    for i in range(p.shape[0]):
        p[i] = p[i] - 0.01 * g[i]
"""

_BASELINE_CHILD = r"""
import json, sys, time
import numpy as np
weight, bias = np.full(1 << 20, 0.5, np.float32), np.full(1024, 0.5, np.float32)
grads = [np.full_like(weight, 1e-2), np.full_like(bias, 1e-2)]
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import fastoptim_latency_baseline as kernels
t1 = time.perf_counter()
kernels.parallel_step(weight, grads[0])
kernels.serial_step(bias, grads[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": 0.0, "first_step_s": t2 - t1,
                  "total_s": t2 - t0, "scipy_imported": "scipy" in sys.modules}))
"""


def _child_env(extra):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastoptim.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _latency_child(args, env):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"exit code {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def run_latency(optimizers=DEFAULT_OPTIMIZERS, threads=None, console=None, progress=True,
                baseline=True):
    """First-step latency (import + construct + first step, numba backend) per optimizer.

    Each optimizer runs in a fresh subprocess with ``NUMBA_CACHE_DIR`` set to a new
    empty directory (cold: everything compiles), then again with the same directory
    (warm: the compiled kernels load from the cache). With ``baseline``, a first row
    does the same for two trivial cached Numba kernels and nothing else: what Numba
    alone costs here (``"baseline": True``, no goal).
    """
    _check_names("optimizer", list(optimizers), list(OPTIMIZERS))
    threads = check_threads(threads)
    jobs = [(None, "Numba alone (baseline)")] if baseline else []
    jobs += [(name, OPTIMIZERS[name].label) for name in optimizers]
    rows = []
    with _progress(console if progress else None) as bar:
        task = bar.add_task("first-step latency", total=2 * len(jobs)) if bar else None
        for name, label in jobs:
            row = {"optimizer": name, "label": label, "baseline": name is None,
                   "backend": "numba", "elements": [1 << 20, 1024]}
            with tempfile.TemporaryDirectory(prefix="fastoptim-numba-cache-") as cache:
                env = _child_env({"NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": str(threads)})
                if name is None:
                    with open(os.path.join(cache, "fastoptim_latency_baseline.py"), "w") as f:
                        f.write(_BASELINE_MODULE)
                    args = [_BASELINE_CHILD, cache]
                else:
                    spec = OPTIMIZERS[name]
                    args = [_LATENCY_CHILD, spec.cls, json.dumps(spec.kwargs)]
                for which in ("cold", "warm"):
                    if bar:
                        bar.update(task, description=f"first-step latency: {label}, {which}")
                    try:
                        row[which] = _latency_child(args, env)
                        if name is not None:
                            row[f"{which}_goal_s"] = LATENCY_GOAL_S[which]
                            row[f"{which}_meets_goal"] = (row[which]["total_s"]
                                                          < LATENCY_GOAL_S[which])
                    except Exception as exc:
                        row[which] = {"error": f"{type(exc).__name__}: {exc}"}
                    if bar:
                        bar.advance(task)
            rows.append(row)
    if console is not None:
        console.print(latency_table(rows))
    return rows


def latency_table(rows):
    from rich.table import Table

    caption = ("cold: fresh NUMBA_CACHE_DIR, every kernel compiles; warm: second process, same "
               "cache. Params: 1M + 1K elements (parallel and serial kernels). "
               f"Goal: < {LATENCY_GOAL_S['cold']:g} s cold, < {LATENCY_GOAL_S['warm']:g} s warm. "
               "Numba alone: two trivial cached kernels, the same first step with nothing else")
    if any(row.get("warm", {}).get("scipy_imported") for row in rows):
        caption += ("; SciPy is installed: Numba's first compile or cache load imports "
                    "scipy.linalg (its BLAS check), about 0.2 s of every figure here")
    table = Table(
        title="First-step latency: import fastoptim + construct + first step (numba backend)",
        title_justify="left", caption=caption, caption_justify="left")
    for name in ("optimizer", "cold total", "import", "construct", "first step", "warm total",
                 "goal"):
        table.add_column(name, justify="left" if name == "optimizer" else "right")
    for row in rows:
        cold, warm = row.get("cold", {}), row.get("warm", {})
        if "error" in cold or "error" in warm:
            table.add_row(row["label"],
                          f"[red]error[/red] {cold.get('error') or warm.get('error')}",
                          "", "", "", "", "")
            continue
        if row.get("baseline"):
            verdict = "[dim]reference[/dim]"
        elif row["cold_meets_goal"] and row["warm_meets_goal"]:
            verdict = "[green]met[/green]"
        else:
            verdict = "[red]missed[/red]"
        table.add_row(row["label"], _format_time(cold["total_s"]), _format_time(cold["import_s"]),
                      "-" if row.get("baseline") else _format_time(cold["construct_s"]),
                      _format_time(cold["first_step_s"]), _format_time(warm["total_s"]), verdict,
                      style="dim" if row.get("baseline") else "")
    return table


# --------------------------------------------------------------------------- crossover
def _median_time(call, repeat):
    with _NoGC():
        inner = _warm_up(call, 0.01)
        return statistics.median(_time_repeat(call, inner) for _ in range(repeat))


def _crossover_point(points):
    """Smallest size from which parallel beats serial at every larger size tested (or None)."""
    point = None
    for size, serial, parallel in reversed(points):
        if parallel < serial:
            point = size
        else:
            break
    return point


def run_crossover(sizes=CROSSOVER_SIZES, dtype="float32", threads=None, repeat=7, console=None):
    """Serial vs parallel Adam kernels by size: where does the thread pool start paying off?

    numba: the backend's serial Adam loop against its parallel loop for the size (one
    block per thread in cache, the chunked prefetching loop above; ``numba_backend._ADAM``).
    C: the OpenMP kernel with 1 thread vs ``threads``, with the thread policy's serial
    threshold lowered to 1 for the measurement. Isolated kernels: the crossover that
    ``PARALLEL_MIN`` uses was measured inside the training loop (``bench --loop
    --loop-dispatch``); this table shows the kernels alone.
    """
    from fastoptim.backends._scalars import adam_scalars

    dtype = np.dtype(dtype)
    threads = check_threads(threads)
    sizes = [parse_size(s) for s in sizes]
    scalars = adam_scalars(dtype, step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                           weight_decay=0, decoupled_weight_decay=False)
    out = {"dtype": dtype.name, "threads": threads, "kernels": {}}
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if _backends.is_available("numba"):
            nb = _backends.load("numba")
            points = []
            for n in sizes:
                arrays, args = _crossover_arrays(n, dtype), (*scalars, False)
                blocked = n * dtype.itemsize * 4 <= _threads.BLOCKED_MAX_BYTES
                parallel = ((lambda: nb._ADAM.run_blocked(arrays, args, threads)) if blocked
                            else (lambda: nb._ADAM.run_parallel(arrays, args)))
                points.append((n, _median_time(lambda: nb._ADAM.run_serial(arrays, args), repeat),
                               _median_time(parallel, repeat)))
            out["kernels"]["numba"] = _crossover_entry(points, _threads.PARALLEL_MIN)
        if _backends.is_available("c"):
            c = _backends.load("c")
            kw = dict(step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
                      amsgrad=False, maximize=False, decoupled_weight_decay=False)
            points = []
            saved_c = c.max_threads()
            saved_dispatch = _threads.set_dispatch(parallel_min=1)
            try:
                for n in sizes:
                    p, g, m, v = _crossover_arrays(n, dtype)
                    timings = []
                    for t in (1, threads):
                        c.set_num_threads(t)
                        timings.append(_median_time(lambda: c.adam(p, g, m, v, None, **kw),
                                                    repeat))
                    points.append((n, *timings))
            finally:
                c.set_num_threads(saved_c)
                _threads.set_dispatch(*saved_dispatch)
            out["kernels"]["c"] = _crossover_entry(points, _threads.PARALLEL_MIN)
    finally:
        numba.set_num_threads(saved)
    if console is not None:
        for table in crossover_tables(out):
            console.print(table)
    return out


def _crossover_arrays(n, dtype):
    rng = np.random.default_rng(n)
    p = rng.random(n, dtype=dtype)
    g = (rng.random(n, dtype=dtype) - dtype.type(0.5)) * dtype.type(1e-2)
    return p, g, np.zeros(n, dtype), np.zeros(n, dtype)


def _crossover_entry(points, threshold):
    return {
        "threshold": threshold,
        "points": [{"elements": n, "serial_s": s, "parallel_s": p} for n, s, p in points],
        "parallel_wins_from": _crossover_point(points),
    }


def crossover_tables(crossover):
    from rich.table import Table

    tables = []
    for name, entry in crossover["kernels"].items():
        where = entry["parallel_wins_from"]
        threshold = entry["threshold"]
        if where is None:
            verdict = "serial wins at every size tested"
        else:
            verdict = f"parallel wins from {format_size(where)} elements"
        title = (f"Serial vs parallel, {name} Adam kernel, {crossover['dtype']}, "
                 f"{crossover['threads']} threads")
        caption = f"{verdict}; the backend switches to parallel at {format_size(threshold)}"
        table = Table(title=title, title_justify="left", caption=caption,
                      caption_justify="left")
        columns = ["elements", "serial" if name == "numba" else "1 thread",
                   "parallel" if name == "numba" else f"{crossover['threads']} threads",
                   "parallel speedup", "winner"]
        for col in columns:
            table.add_column(col, justify="right")
        for pt in entry["points"]:
            speedup = pt["serial_s"] / pt["parallel_s"]
            cells = [format_size(pt["elements"]), _format_time(pt["serial_s"]),
                     _format_time(pt["parallel_s"]), _ratio(speedup),
                     "parallel" if speedup > 1 else "serial"]
            table.add_row(*cells)
        tables.append(table)
    return tables


# --------------------------------------------------------------------------- plot
def plot(report: Report, path) -> None:
    """Write a PNG: GB/s against tensor size per contestant, the floor as a dashed line.

    Raises ImportError with an install hint when matplotlib is missing.
    """
    mpl = require_matplotlib()
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = report.settings["optimizers"]
    fig, axes = plt.subplots(1, len(optimizers), figsize=(5.5 * len(optimizers), 4.5),
                             squeeze=False)
    for ax, name in zip(axes[0], optimizers):
        rows = [r for r in report.results if r.optimizer == name and r.timed
                and r.n_tensors == 1 and r.dtype == report.settings["dtype"]
                and r.kind != "bound"]
        contestants = list(dict.fromkeys(r.contestant for r in rows))
        for contestant in contestants:
            pts = sorted((r.n_elements, r.gb_per_s, r.label) for r in rows
                         if r.contestant == contestant)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if contestant.startswith("floor"):
                ax.plot(xs, ys, "k--" if contestant == "floor" else "k:", linewidth=2,
                        label=f"{pts[0][2]} (no math)")
            else:
                ax.plot(xs, ys, marker="o", label=pts[0][2])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("elements (one tensor)")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{OPTIMIZERS[name].label}, {report.settings['dtype']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fastoptim bench: {report.machine['cpu']}, {report.settings['threads']} threads",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOT_HINT = 'the --plot option needs matplotlib: pip install "fastoptim[plot]"'


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    return matplotlib


# --------------------------------------------------------------------------- device
def _load_cuda_bench():
    try:
        return importlib.import_module("fastoptim.bench_cuda")
    except ImportError as exc:
        raise RuntimeError(f"the CUDA benchmark could not be loaded: {exc}") from None


def run_device(device, console=None, **options):
    """Hand ``--device cuda`` to ``run_cuda_bench`` of the GPU benchmark; return (result, kwargs).

    The GPU benchmark is ``fastoptim.bench_cuda``. Only the keyword arguments its ``run_cuda_bench``
    accepts are passed (of optimizers, backends, sizes, many, dtype, threads,
    repeat, quick, peers, json_path, plot_path, console). Raises BenchError for
    another device and RuntimeError when no GPU benchmark can be loaded; errors
    raised by ``run_cuda_bench`` itself (no GPU, bad argument) propagate.
    """
    if device != "cuda":
        raise BenchError(f"unknown device {device!r}: expected cpu or cuda")
    module = _load_cuda_bench()
    entry = getattr(module, "run_cuda_bench", None)
    if entry is None:
        raise RuntimeError(f"{module.__name__} has no run_cuda_bench() function")
    options["console"] = console
    try:
        params = inspect.signature(entry).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_all = {}, True
    kwargs = {k: v for k, v in options.items() if takes_all or k in params}
    return entry(**kwargs), kwargs
