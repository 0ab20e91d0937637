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
# serially on the calling thread; up to a footprint of the last-level cache (measured at
# import; BLOCKED_MAX_BYTES_DEFAULT where it cannot be read) one block per thread.
# 2M: measured inside training loops (fastoptim bench --loop --loop-dispatch), where the
# serial kernel beat the parallel one for every tensor up to the 1M of the 3M model
# (OpenBLAS's workers hold the other core after each matmul); alone, a 16M tensor needs
# both cores to reach the memory bus. docs/benchmarks.md has the figures.
PARALLEL_MIN = 2 * 2**20
BLOCKED_MAX_BYTES_DEFAULT = 32 * 2**20

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
# kernels/multi_tensor.c): the int64 columns of one row, and the value of N that marks
# a row to skip.
COL_N = 0
COL_DTYPE = 1
COL_PARAM = 2
COL_GRAD = 3
COL_STATE0 = 4
MAX_KEYS = 3  # state arrays per row
COL_STEP = COL_STATE0 + MAX_KEYS
NCOL = COL_STEP + 1
SKIPPED = -1
