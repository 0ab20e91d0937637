"""fastoptim's thread policy, in one place for every CPU kernel (numba, C, multi-tensor).

A training loop alternates BLAS matmuls (NumPy's OpenBLAS, with threads of its own)
with optimizer steps. On a machine with few cores, a worker that spin-waits after
its parallel region holds a core that the other side's workers need, and a parallel
region that waits for a worker still busy with BLAS (or asleep) is slower than one
thread. The policy:

1. **In the cache, fastoptim's own pool** (``kernels/pool.c``, ``backends/_pool.py``),
   shared by the numba and C backends and the plain-list table kernels. The calling
   thread starts on the first chunk at once and claims chunks until none is left; a
   worker joins as soon as it is awake; the caller waits only for chunks a worker has
   already started, never for a worker that is asleep or off the CPU. A step is thus
   about as fast as the serial loop when BLAS holds the other cores and runs on every
   core when they are free. After a call a worker waits ``POOL_SPIN_NS`` (100 us) in a
   loop that yields its core to any runnable thread (the next tensor of the same step
   finds it awake), then sleeps in the kernel (a futex): no worker holds a core that
   another thread wants. ``info()["pool"]`` shows it.
2. **Out of the cache, the loop that pays on this CPU** (``PREFETCH_LOOP``). On Intel
   CPUs, OpenMP (libgomp: Numba's ``omp`` threading layer and the C kernels share one
   copy) runs the chunked loop that prefetches ahead: Adam's divisions keep the core too
   busy for the hardware prefetcher, and the software prefetch is what kept a 16M tensor
   at the memory bus on the Xeon this was tuned on (0.97 of the floor against 0.91-0.93
   without it). On other CPUs the pool runs these sizes too: on an AMD EPYC (Zen 4) the
   hardware prefetcher keeps up on its own, and the chunked loop's prefetches and
   per-chunk work made a 16M fp32 Adam step 1.3x slower than the pool (numba), the
   C build's 1.1-1.2x (docs/benchmarks.md). ``set_dispatch(prefetch_loop=...)`` overrides
   the choice; results are bit-identical either way (every loop does the same math per
   element). ``import fastoptim`` sets ``GOMP_SPINCOUNT``
   (see ``SPINCOUNT``) in the process environment unless the user set
   ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` themselves: after a parallel region a
   worker spins for a few microseconds, then sleeps. libgomp reads these variables
   once, when it is loaded; if something else (torch, scikit-learn) loaded it before
   fastoptim, the setting cannot apply, and ``info()["spin_policy"]`` says so.
3. **Serial below ``PARALLEL_MIN`` elements** (no wake-up at all). From there up to a
   working set of ``BLOCKED_MAX_BYTES`` (the last-level cache) the pool; above, the
   pool or OpenMP's prefetching loop (point 2).
   ``PARALLEL_MIN`` was measured inside training loops (``fastoptim bench --loop
   --loop-dispatch``) and in the in-cache kernel tables; see docs/benchmarks.md.
4. **One thread count.** ``set_num_threads(n)`` sets it for every fastoptim kernel
   (``n == 1``: always serial, no worker is ever started). The count a parallel
   kernel uses is the smaller of that and the OpenMP limit of the calling thread, so
   ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits(..., user_api="openmp")``
   (or a global ``threadpool_limits(1)``) limit fastoptim's pool and OpenMP alike.
   ``OPENBLAS_NUM_THREADS`` limits only BLAS.

Kernels written elsewhere (the multi-tensor path) call ``mode(n, bytes_per_element)``
and ``parallel_threads()`` so they follow the same policy.
"""
from __future__ import annotations

import os

from ._constants import (  # elements: below, one thread
    BLOCKED_MAX_BYTES_DEFAULT,
    PARALLEL_MIN,
    POOL_CHUNK_BYTES,
)

# libgomp's spin count after a parallel region before a worker sleeps. Its default
# (no OMP_WAIT_POLICY) is 300000 iterations, milliseconds here, which starved
# OpenBLAS between steps; 0 (OMP_WAIT_POLICY=passive) makes every kernel pay a full
# wake-up. The measurements behind this value are in docs/benchmarks.md.
SPINCOUNT = "1000"
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")



def _last_level_cache_bytes(default=BLOCKED_MAX_BYTES_DEFAULT) -> int:
    """The largest CPU cache's size (Linux sysfs), clipped to 4-64 MiB; ``default`` elsewhere."""
    best = 0
    try:
        base = "/sys/devices/system/cpu/cpu0/cache"
        for entry in os.listdir(base):
            if entry.startswith("index"):
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip().upper()
                scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
                best = max(best, int(text.rstrip("KM")) * scale)
    except (OSError, ValueError):
        pass
    return min(max(best, 4 * 2**20), 64 * 2**20) if best else default


# footprint (elements x itemsize x arrays) up to which each thread takes one block: the
# last-level cache (32 MiB here: Adam fp32 up to 2M elements, fp64 up to 1M)
BLOCKED_MAX_BYTES = _last_level_cache_bytes()


def cpuinfo(field: str) -> str:
    """The first value of ``field`` in /proc/cpuinfo ("vendor_id": "GenuineIntel",
    "AuthenticAMD"; "model name"), or "" where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


CPU_VENDOR = cpuinfo("vendor_id")
# whether working sets beyond the cache run OpenMP's chunked prefetching loop (True) or
# fastoptim's pool (False): see point 2 of the module docstring
PREFETCH_LOOP = CPU_VENDOR == "GenuineIntel"
_NO_LIMIT = 2**62  # a footprint no array reaches: "the pool at every parallel size"

SERIAL, BLOCKED, CHUNKED = "serial", "blocked", "chunked"

_spin_policy = "not applied yet"
_requested = None  # set_num_threads(); None: every thread Numba was started with


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:  # not Linux: nothing to tell
        return False


def apply_env_defaults() -> str:
    """Set fastoptim's libgomp spin policy in the environment if the user set none and
    libgomp is not loaded yet. Returns (and remembers) what happened. Idempotent."""
    global _spin_policy
    if _spin_policy != "not applied yet":
        return _spin_policy
    user = {k: os.environ[k] for k in USER_VARIABLES if k in os.environ}
    if user:
        _spin_policy = "user: " + ", ".join(f"{k}={v}" for k, v in user.items())
    elif _libgomp_loaded():
        _spin_policy = ("not applied: libgomp was loaded before fastoptim (set "
                        f"GOMP_SPINCOUNT={SPINCOUNT} before starting Python)")
    else:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
        _spin_policy = f"fastoptim: GOMP_SPINCOUNT={SPINCOUNT}"
    return _spin_policy


def mode(n: int, bytes_per_element: int) -> str:
    """How a kernel over ``n`` elements whose arrays hold ``bytes_per_element`` together
    (itemsize x arrays: 16 for fp32 Adam) should run: SERIAL, BLOCKED (fastoptim's pool:
    in the cache, and beyond it where ``PREFETCH_LOOP`` is off) or CHUNKED (OpenMP's
    prefetching loop)."""
    if n < PARALLEL_MIN:
        return SERIAL
    if n * bytes_per_element <= pool_max_bytes():
        return BLOCKED
    return CHUNKED


def pool_max_bytes() -> int:
    """The largest footprint that runs on the pool: the cache, or no limit where the
    prefetching loop does not pay (``PREFETCH_LOOP``)."""
    return BLOCKED_MAX_BYTES if PREFETCH_LOOP else _NO_LIMIT


def set_dispatch(parallel_min=None, blocked_max_bytes=None, prefetch_loop=None) -> tuple:
    """Change the policy's thresholds for every backend (benchmarks and tests measure the
    crossovers with it): ``parallel_min`` elements, the cache's ``blocked_max_bytes``
    and ``prefetch_loop`` (``PREFETCH_LOOP``). Returns the previous
    ``(parallel_min, blocked_max_bytes, prefetch_loop)``, for ``set_dispatch(*previous)``."""
    global PARALLEL_MIN, BLOCKED_MAX_BYTES, PREFETCH_LOOP
    previous = (PARALLEL_MIN, BLOCKED_MAX_BYTES, PREFETCH_LOOP)
    if parallel_min is not None:
        PARALLEL_MIN = int(parallel_min)
    if blocked_max_bytes is not None:
        BLOCKED_MAX_BYTES = int(blocked_max_bytes)
    if prefetch_loop is not None:
        PREFETCH_LOOP = bool(prefetch_loop)
    from . import is_available, load

    if is_available("c"):
        load("c").set_dispatch(PARALLEL_MIN, pool_max_bytes())
    return previous


_numba_config = []


def _numba_limit() -> int:
    if not _numba_config:
        import numba

        _numba_config.append(numba.config.NUMBA_NUM_THREADS)
    return _numba_config[0]


_omp_max_threads = []  # [function] once looked up; [None] without the C module


def _openmp_limit():
    """The calling thread's OpenMP limit (OMP_NUM_THREADS, threadpoolctl), or None.
    Read from libgomp through the C module (about 0.2 us), on every parallel call."""
    if not _omp_max_threads:
        from . import is_available, load

        _omp_max_threads.append(load("c").lib.fo_openmp_max_threads if is_available("c") else None)
    get = _omp_max_threads[0]
    return get() if get is not None else None


def set_num_threads(n: int) -> None:
    """Threads for every fastoptim CPU kernel (numba and C); 1 = always serial.

    Raises ValueError unless 1 <= n <= the threads Numba started with
    (``NUMBA_NUM_THREADS``, by default every core).
    """
    global _requested
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    limit = _numba_limit()
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be between 1 and {limit} "
                         f"(NUMBA_NUM_THREADS), got {n}")
    from . import is_available, load

    if is_available("numba"):
        load("numba").set_threads(n)
    if is_available("c"):
        load("c").set_num_threads(n)
    _requested = n


def get_num_threads() -> int:
    """The thread count fastoptim's parallel kernels use from this thread now: the
    smaller of ``set_num_threads()`` (default: every core) and the OpenMP limit."""
    return parallel_threads()


def parallel_threads() -> int:
    """Threads a parallel kernel started now from this thread may use (>= 1); about
    0.3 us, paid only by calls that are big enough to run in parallel."""
    n = _requested if _requested is not None else _numba_limit()
    get = _omp_max_threads[0] if _omp_max_threads else _openmp_limit
    omp = get() if get is not None else None
    return max(1, min(n, omp) if omp else n)


def _pool_info() -> dict:
    from . import _pool

    if not _pool.available():
        return {"available": False}
    lib = _pool._lib
    return {"available": True, "workers_started": lib.fo_pool_workers_started(),
            "spin_ns": lib.fo_pool_spin_ns(), "chunk_bytes": POOL_CHUNK_BYTES}


def info() -> dict:
    """The policy in force: thread counts, spin policy, thresholds, Numba's layer."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    return {
        "threads": parallel_threads(),
        "requested": _requested,
        "openmp_limit": _openmp_limit(),
        "numba_threading_layer": layer,
        "spin_policy": _spin_policy,
        "parallel_min": PARALLEL_MIN,
        "blocked_max_bytes": BLOCKED_MAX_BYTES,
        "cpu_vendor": CPU_VENDOR,
        "prefetch_loop": PREFETCH_LOOP,
        "pool": _pool_info(),
        "env": {k: os.environ.get(k) for k in
                ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
                 "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")},
    }
