"""Numba compile options and the parallel loop, defined once so every CPU kernel
is built the same way.

- ``cache=True``: compiled machine code is kept on disk; a warm start skips LLVM.
- ``error_model="numpy"``: division by zero gives inf/nan as NumPy does; the default
  "python" model inserts a check that stops the loop from vectorizing.
- no ``fastmath``: its ``nnan``/``ninf`` flags would change NaN/Inf results, and
  ``contract``/``arcp`` would round differently from the NumPy reference.
- ``nogil=True``: two optimizers can step concurrently from two threads.

A kernel is written once as a *range kernel*, ``kernel(lo, hi, *arrays, *scalars)``
(``lo``, ``hi``: intp) that slices its arrays to ``[lo:hi]`` and loops over
``range(slice.shape[0])``. A signed index that may be negative makes Numba add a
wraparound to every array access, which stops LLVM from vectorizing (``range(lo, hi)``
over int64 bounds ran 5x slower); one counted up from 0 over a slice does not. The
earlier form, ``range(lo, hi)`` over ``np.uint64`` bounds, vectorizes as well and runs
the same on the pool, but a caller in Python paid for two ``np.uint64`` objects and
their typing on every call: a serial 1K-element Adam call took 4.0 us against 2.8 us
now (AMD EPYC, one process, interleaved). ``kernel_pair`` compiles it as is (the serial
kernel, for arrays below the crossover) and wraps it in a ``prange`` loop over
chunks of a few cache lines that prefetches the data a few KiB ahead of the
chunk it updates (the parallel kernel, run on Intel CPUs: see ``_threads``). There the
prefetch is what lets a loop with
divisions and square roots keep the memory bus as busy as a loop that only
copies: without it, the Adam loop ran at 0.91-0.93 of the bandwidth floor; with
it, at the floor (measured with ``fastoptim bench``, see docs/benchmarks.md).

Numba's on-disk cache keys each function on its qualified name and the source
file that defines it, not on its decorator options, its globals or the code of
the functions it calls. Every kernel compiled here is therefore a renamed copy
whose name carries a digest (``code_digest``) of its code and of everything
that code reaches: the jitted functions it calls, recursively (the per-element
updates of ``_math.py``), and the constants it reads (``_constants.py``). The
wrappers are copies of one template with their own globals, and their digest
covers the template and the range kernel. Editing any of these gives the kernel
a new cache entry; nothing needs clearing by hand.
"""
import hashlib
import types
from typing import NamedTuple

import numba
from llvmlite import ir
from numba.core import types as nbtypes
from numba.extending import intrinsic

from ._constants import CHUNK_LINES, LINE_BYTES, PREFETCH_AHEAD_BYTES

SERIAL = dict(cache=True, error_model="numpy", nogil=True)
PARALLEL = dict(SERIAL, parallel=True)

# The chunked loop's LINE_BYTES (one prefetch per cache line), CHUNK_LINES (per array, one
# parallel task's work between two prefetch bursts) and PREFETCH_AHEAD_BYTES (how far ahead
# of the chunk being updated data is fetched) are the C kernels' too: see _constants.py.
PLAIN_CHUNK = 4096  # elements per block of the plain (non-prefetching) parallel loop


@intrinsic
def prefetch(typingctx, arrays, index):
    """Hint the CPU to fetch element ``index`` of every array in the tuple ``arrays``
    into the cache (``llvm.prefetch``: read, keep in all levels). A hint only: it
    never faults, changes no value and costs one instruction per array."""
    if not (isinstance(arrays, nbtypes.BaseTuple)
            and all(isinstance(a, nbtypes.Array) for a in arrays)
            and isinstance(index, nbtypes.Integer)):
        return None

    def codegen(context, builder, signature, args):
        tuple_type, index_type = signature.args
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        idx = context.cast(builder, args[1], index_type, nbtypes.intp)
        for k, array_type in enumerate(tuple_type):
            array = context.make_array(array_type)(context, builder,
                                                   builder.extract_value(args[0], k))
            address = builder.gep(array.data, [idx])  # may lie past the end: a hint never faults
            builder.call(fn, [builder.bitcast(address, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return nbtypes.void(arrays, index), codegen


def _chunked_template(arrays, scalars):
    n = arrays[0].shape[0]
    line = LINE_BYTES // arrays[0].itemsize
    chunk = CHUNK_LINES * line
    ahead = PREFETCH_AHEAD_BYTES // arrays[0].itemsize
    for c in numba.prange((n + chunk - 1) // chunk):
        lo = c * chunk
        if lo + ahead < n:  # CHUNK_LINES lines, unrolled: a loop here costs compile time
            prefetch(arrays, lo + ahead)
            prefetch(arrays, lo + ahead + line)
            prefetch(arrays, lo + ahead + 2 * line)
            prefetch(arrays, lo + ahead + 3 * line)
        KERNEL(lo, min(lo + chunk, n), *arrays, *scalars)  # noqa: F821 (a global)


def _plain_template(arrays, scalars):
    n = arrays[0].shape[0]
    for c in numba.prange((n + PLAIN_CHUNK - 1) // PLAIN_CHUNK):  # no prefetch
        lo = c * PLAIN_CHUNK
        KERNEL(lo, min(lo + PLAIN_CHUNK, n), *arrays, *scalars)  # noqa: F821


def _blocked_template(arrays, scalars, blocks):
    # one contiguous block per thread, cache-line aligned, no prefetch: for working sets
    # that fit in the last-level cache (see _threads.py), the serial vectorized loop on
    # each thread's block beats the chunked loop, whose per-chunk work and prefetches cost
    # more than they save when the data is already in cache
    n = arrays[0].shape[0]
    line = LINE_BYTES // arrays[0].itemsize
    # blocks: the thread count, passed in (numba.get_num_threads() here would make the
    # function uncacheable: it reads a pointer into the threading layer)
    per = ((n + blocks - 1) // blocks + line - 1) // line * line
    for b in numba.prange(blocks):
        lo = min(b * per, n)
        KERNEL(lo, min(lo + per, n), *arrays, *scalars)  # noqa: F821 (a global)


def _renamed(func, suffix, **extra_globals):
    """A copy of ``func`` whose qualified name (Numba's cache key) ends in ``suffix``,
    with ``extra_globals`` added to the globals it sees."""
    namespace = dict(func.__globals__, **extra_globals) if extra_globals else func.__globals__
    copy = types.FunctionType(func.__code__, namespace, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__module__ = func.__module__
    copy.__doc__ = func.__doc__
    return copy


_LITERALS = (bool, int, float, complex, str, bytes)


def code_digest(*funcs) -> str:
    """A short digest of the functions' bytecode, constants and names, of the module each
    is defined in, and of what they reach through their globals and closures (a module's
    attributes included): the code of every jitted or plain function called (its
    ``py_func``), recursively, and the value of every literal global read (Numba compiles
    those in as constants)."""
    h = hashlib.blake2b(digest_size=5)
    seen = set()

    def add_code(code, namespace):
        consts = []
        for const in code.co_consts:
            if isinstance(const, types.CodeType):  # a nested function or comprehension
                add_code(const, namespace)
            else:
                consts.append(const)
        h.update(code.co_code)
        h.update(repr((consts, code.co_names)).encode())
        for name in code.co_names:
            if name in namespace:
                add_value(name, namespace[name], code.co_names)

    def add_value(name, value, names):
        if isinstance(value, types.ModuleType):  # module.NAME: the names read from it
            for attribute in names:
                if attribute in vars(value) and not isinstance(vars(value)[attribute],
                                                               types.ModuleType):
                    add_value(attribute, vars(value)[attribute], ())
            return
        func = getattr(value, "py_func", value)  # a Numba or CUDA dispatcher: its function
        if isinstance(func, types.FunctionType):
            add_function(func)
        elif isinstance(value, _LITERALS):
            h.update(repr((name, value)).encode())

    def add_function(func):
        if id(func) in seen:
            return
        seen.add(id(func))
        # its module too: the renamed copies of every module's functions share one cache,
        # and two functions of one name and code in two modules would share an entry
        # (whose code refers to the first one's module)
        h.update(repr(func.__module__).encode())
        add_code(func.__code__, func.__globals__)
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            try:
                add_value(name, cell.cell_contents, func.__code__.co_names)
            except ValueError:  # an empty cell
                pass

    for func in funcs:
        add_function(func)
    return h.hexdigest()


def cache_named(func):
    """A copy of ``func`` whose name, Numba's cache key, ends in its ``code_digest``."""
    return _renamed(func, f"__{code_digest(func)}")


def njit_serial(func):
    """``func`` compiled with ``SERIAL`` under its digest-carrying name (``cache_named``)."""
    return numba.njit(**SERIAL)(cache_named(func))


def njit_parallel(func):
    """``func`` compiled with ``PARALLEL`` under its digest-carrying name (``cache_named``)."""
    return numba.njit(**PARALLEL)(cache_named(func))


class KernelPair(NamedTuple):
    """``serial(lo, hi, *arrays, *scalars)``, ``parallel(arrays, scalars)`` (the chunked loop,
    or the plain one) and ``blocked(arrays, scalars, threads)`` (one block per thread)."""
    serial: numba.core.registry.CPUDispatcher
    parallel: numba.core.registry.CPUDispatcher
    blocked: numba.core.registry.CPUDispatcher

    def run_serial(self, arrays, scalars):
        self.serial(0, arrays[0].shape[0], *arrays, *scalars)

    def run_parallel(self, arrays, scalars):
        self.parallel(arrays, scalars)

    def run_blocked(self, arrays, scalars, threads):
        self.blocked(arrays, scalars, threads)


def kernel_pair(range_kernel, prefetching=True) -> KernelPair:
    """The serial build of ``range_kernel`` and its parallel wrapper.

    ``prefetching=False`` gives a plain parallel loop instead of the chunked,
    prefetching one: blocks of ``PLAIN_CHUNK`` elements, no prefetch; prange's
    static schedule hands each thread one contiguous run of blocks, as OpenMP's
    ``schedule(static)`` does (the benchmark's floor kernels measure both).
    """
    serial = njit_serial(range_kernel)
    wrappers = []
    for template in (_chunked_template if prefetching else _plain_template, _blocked_template):
        suffix = f"__{range_kernel.__name__}_{code_digest(template, range_kernel)}"
        wrappers.append(numba.njit(**PARALLEL)(_renamed(template, suffix, KERNEL=serial)))
    return KernelPair(serial, *wrappers)
