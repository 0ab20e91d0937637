"""The constants that the Python and C kernels share, defined once, here.

Every Python module imports them from here; the C kernels read them from
``kernels/fo_constants.h``, which ``kernels/build_kernels.py`` writes from this
file at build time (``pip install``), so the header is never edited by hand and
never committed. ``fastoptim._ckernels`` exports the values its C code was
compiled with, and ``c_backend`` refuses to load when they differ from these
(an installation built before an edit here: rebuild it).

This module is plain assignments of ints and nothing else: the builder reads it
by path, without importing fastoptim (nothing but the build requirements is
installed then), and Numba and CUDA compile the names as literal constants.
"""

# The thread policy (backends/_threads.py): below PARALLEL_MIN elements a kernel runs
# serially on the calling thread; from there up to a footprint of the last-level cache
# (measured at import; BLOCKED_MAX_BYTES_DEFAULT where it cannot be read) on fastoptim's
# pool, above it on OpenMP's chunked, prefetching loop. 128K: inside training loops
# (fastoptim bench --loop --loop-dispatch) the pool costs a 64K tensor a few microseconds
# (the worker's wake-up call, while BLAS's threads hold the other core) and is even with
# the serial loop from about 256K; alone, two threads run 256K-1M tensors 1.5-1.7x
# faster. docs/benchmarks.md has the figures.
PARALLEL_MIN = 128 * 2**10
BLOCKED_MAX_BYTES_DEFAULT = 32 * 2**20

# fastoptim's thread pool (kernels/pool.c), which runs the in-cache parallel kernels: the
# elements of one chunk (bytes per array; 16K float32 elements), and how long a worker
# waits after a call, yielding its core to any runnable thread, before it sleeps: long
# enough for the next tensor of the same step and for a FlatParams step's checks over
# 1000 views (30 us was not: that step took 140 us against 119 us at 100 us; in the
# training loop 30, 100 and 300 us measured the same).
POOL_CHUNK_BYTES = 64 * 2**10
POOL_SPIN_NS = 100_000
# ... and when it stops waking workers that are not getting a share of the work (the other
# cores busy, as between a training loop's matmuls): after POOL_STREAK such calls in a
# row, POOL_SKIP calls run on the caller alone before the pool tries its workers again.
POOL_STREAK = 2
POOL_SKIP = 32

# The chunked parallel loop (backends/_jit.py, kernels/fastoptim.c): chunks of
# CHUNK_LINES cache lines per array, each preceded by a prefetch of the same span
# PREFETCH_AHEAD_BYTES further on.
LINE_BYTES = 64
CHUNK_LINES = 4
CHUNK_BYTES = CHUNK_LINES * LINE_BYTES
PREFETCH_AHEAD_BYTES = 2048

# AdamScalars.weight_decay_mode (backends/_scalars.py, _math.py, the C kernels)
DECAY_NONE = 0
DECAY_L2 = 1
DECAY_DECOUPLED = 2

# The multi-tensor pointer table (backends/_multi_table.py, kernels/multi_table.c,
# kernels/multi_tensor.c): the int64 columns of one row, the value of N that marks a
# row to skip, and the table filler's verdict when no row is skipped and every group's
# rows share one dtype and one step count (its other verdicts: True, False, a str).
COL_N = 0
COL_DTYPE = 1
COL_PARAM = 2
COL_GRAD = 3
COL_STATE0 = 4
MAX_KEYS = 3  # state arrays per row
COL_STEP = COL_STATE0 + MAX_KEYS
NCOL = COL_STEP + 1
SKIPPED = -1
ALL_STEPPED = 2
