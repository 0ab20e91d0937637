"""Numba kernels on fastoptim's thread pool (``kernels/pool.c``).

The in-cache parallel kernels of both CPU backends run on one pool, written in C and
compiled with the C kernels. The caller starts on the first chunk at once and claims
chunks until none is left; the pool's workers join as soon as they are awake, and
the caller waits only for chunks a worker has already started. A step is therefore
never much slower than the serial loop when the other cores are busy (with BLAS's
threads, between the steps of a training loop), and runs on every core when they are
free. OpenMP's parallel region, by contrast, waits at its end for every thread of the
team, awake or not. The measurements behind the choice are in docs/benchmarks.md.

For Numba, a range kernel ``kernel(lo, hi, *arrays, *scalars)`` gets two companions:

- a **task**, a C-callable ``@cfunc`` ``task(context, lo, hi)``: it reads the arrays'
  length and addresses and the scalars from the context (one 8-byte slot each, in the
  kernel's argument order) and runs the serial range kernel on ``[lo, hi)``;
- a **launcher**, ``@njit``: it writes the context (an int64 array it owns until the
  pool returns) and calls ``fo_pool_run(task, context, n, chunk, threads)``.

Both are compiled per element type and per scalar types, on first use, and cached on
disk under digests of their code (``_jit``), like every kernel.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types as nbtypes
from numba.extending import intrinsic

from ._constants import POOL_CHUNK_BYTES
from ._jit import SERIAL, _renamed, code_digest

try:
    from fastoptim._ckernels import ffi as _ffi
    from fastoptim._ckernels import lib as _lib
except ImportError:  # no C build: the Numba backend keeps OpenMP (see numba_backend.run)
    _lib = None


def available() -> bool:
    return _lib is not None


POOL_RUN = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "fo_pool_run"))) if _lib else 0
_SCALAR_TYPES = (nbtypes.Float, nbtypes.Integer, nbtypes.Boolean)


def _slot_pointer(builder, base, index, llvm_type):
    """The address of 8-byte slot ``index`` after the int64 ``base`` address, as llvm_type*."""
    i64 = ir.IntType(64)
    address = builder.add(base, builder.mul(index, i64(8)))
    return builder.inttoptr(address, llvm_type.as_pointer())


@intrinsic
def _address(typingctx, array):
    """The data address of a 1-D array, as an int64."""
    if not isinstance(array, nbtypes.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return nbtypes.int64(array), codegen


@intrinsic
def _store_scalars(typingctx, base, start, scalars):
    """Write each scalar of the tuple into its own 8-byte slot from slot ``start`` of the
    context at address ``base`` (booleans as one byte, integers widened to int64: what
    ``_load_scalars`` reads for the prototype of ``_prototype``)."""
    if not (isinstance(scalars, nbtypes.BaseTuple)
            and all(isinstance(t, _SCALAR_TYPES) for t in scalars)):
        return None

    def codegen(context, builder, signature, args):
        base_v, start_v, values = args
        for k, t in enumerate(signature.args[2]):
            value = builder.extract_value(values, k)
            index = builder.add(start_v, ir.IntType(64)(k))
            if isinstance(t, nbtypes.Boolean):
                value = builder.zext(value, ir.IntType(8))
                builder.store(value, _slot_pointer(builder, base_v, index, ir.IntType(8)))
            elif isinstance(t, nbtypes.Integer):  # every integer as int64, as it is read back
                i64 = ir.IntType(64)
                if t.bitwidth < 64:
                    value = (builder.sext if t.signed else builder.zext)(value, i64)
                builder.store(value, _slot_pointer(builder, base_v, index, i64))
            else:
                llvm_type = context.get_value_type(t)
                builder.store(value, _slot_pointer(builder, base_v, index, llvm_type))
        return context.get_dummy_value()

    return nbtypes.void(base, start, scalars), codegen


@intrinsic
def _load_scalars(typingctx, base, start, prototype):
    """The scalars that ``_store_scalars`` wrote, as a tuple of ``prototype``'s types."""
    if not (isinstance(prototype, nbtypes.BaseTuple)
            and all(isinstance(t, _SCALAR_TYPES) for t in prototype)):
        return None
    result = nbtypes.Tuple(tuple(prototype))

    def codegen(context, builder, signature, args):
        base_v, start_v, _ = args
        values = []
        for k, t in enumerate(signature.return_type):
            index = builder.add(start_v, ir.IntType(64)(k))
            if isinstance(t, nbtypes.Boolean):
                byte = builder.load(_slot_pointer(builder, base_v, index, ir.IntType(8)))
                values.append(builder.icmp_unsigned("!=", byte, ir.IntType(8)(0)))
            else:
                llvm_type = context.get_value_type(t)
                values.append(builder.load(_slot_pointer(builder, base_v, index, llvm_type)))
        return context.make_tuple(builder, signature.return_type, values)

    return result(base, start, prototype), codegen


@intrinsic
def _view(typingctx, address, shape, like):
    """A C-contiguous array of ``like``'s type and ``shape`` (a tuple of ints) at ``address``."""
    if not (isinstance(like, (nbtypes.Float, nbtypes.Integer))
            and isinstance(shape, nbtypes.UniTuple) and isinstance(shape.dtype, nbtypes.Integer)):
        return None
    array_type = nbtypes.Array(like, shape.count, "C")

    def codegen(context, builder, signature, args):
        address_v, shape_v, _ = args
        pointer = builder.inttoptr(address_v, context.get_value_type(like).as_pointer())
        array = context.make_array(array_type)(context, builder)
        itemsize = context.get_constant(nbtypes.intp, context.get_abi_sizeof(
            context.get_data_type(like)))
        dims = [builder.extract_value(shape_v, k) for k in range(shape.count)]
        strides, stride = [], itemsize
        for dim in reversed(dims):
            strides.insert(0, stride)
            stride = builder.mul(stride, dim)
        context.populate_array(array, data=pointer, shape=dims, strides=strides,
                               itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return array_type(address, shape, like), codegen


@intrinsic
def _call_pool(typingctx, pool_run, task, base, n, chunk, threads):
    """``fo_pool_run(task, context, n, chunk, threads)``, called through its address."""
    if not all(isinstance(a, nbtypes.Integer) and a.bitwidth == 64
               for a in (pool_run, task, base, n, chunk, threads)):
        return None

    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fn_type = ir.FunctionType(ir.VoidType(), [i8p, i8p, i64, i64, i32])
        fn = builder.inttoptr(args[0], fn_type.as_pointer())
        builder.call(fn, [builder.inttoptr(args[1], i8p), builder.inttoptr(args[2], i8p),
                          args[3], args[4], builder.trunc(args[5], i32)])
        return context.get_dummy_value()

    return nbtypes.void(pool_run, task, base, n, chunk, threads), codegen


# The context: slot 0 the length, slots 1..NARRAYS the arrays' addresses, then the scalars.
def _task_template(base, lo, hi):
    n = _load_scalars(base, 0, (np.int64(0),))[0]
    addresses = _load_scalars(base, 1, ADDRESSES)  # noqa: F821 (a global of each copy)
    KERNEL(lo, hi, *ARRAYS(addresses, n, LIKE),  # noqa: F821 (globals of each copy)
           *_load_scalars(base, 1 + len(ADDRESSES), PROTOTYPE))  # noqa: F821


def _arrays1(a, n, like):
    return (_view(a[0], (n,), like),)


def _arrays2(a, n, like):
    return _view(a[0], (n,), like), _view(a[1], (n,), like)


def _arrays3(a, n, like):
    return _view(a[0], (n,), like), _view(a[1], (n,), like), _view(a[2], (n,), like)


def _arrays4(a, n, like):
    return _view(a[0], (n,), like), _view(a[1], (n,), like), _view(a[2], (n,), like), _view(a[3], (n,), like)


def _arrays5(a, n, like):
    return (_view(a[0], (n,), like), _view(a[1], (n,), like), _view(a[2], (n,), like),
            _view(a[3], (n,), like), _view(a[4], (n,), like))


_ARRAYS = {1: _arrays1, 2: _arrays2, 3: _arrays3, 4: _arrays4, 5: _arrays5}
_ARRAYS_JIT = {k: numba.njit(**SERIAL)(f) for k, f in _ARRAYS.items()}  # compiled on first use


def _launcher(arrays, scalars, pool_run, task, chunk, threads):
    n = arrays[0].shape[0]
    context = np.empty(1 + len(arrays) + len(scalars), dtype=np.int64)
    context[0] = n
    for k in range(len(arrays)):
        context[1 + k] = _address(arrays[k])
    base = _address(context)
    _store_scalars(base, 1 + len(arrays), scalars)
    _call_pool(pool_run, task, base, n, chunk, threads)
    return context[0]  # a use after the call: the context lives until the pool returns


_launch = numba.njit(**SERIAL)(_renamed(_launcher, f"__{code_digest(_launcher)}"))


def _prototype(scalars) -> tuple:
    """Zero values of the scalars' types: what the task reads back (float32/64, bool, int64)."""
    out = []
    for s in scalars:
        if isinstance(s, (bool, np.bool_)):
            out.append(False)
        elif isinstance(s, np.floating):
            out.append(s.dtype.type(0))
        elif isinstance(s, (int, np.integer)):
            out.append(np.int64(0))
        else:
            raise TypeError(f"pool: unsupported scalar type {type(s).__name__}")
    return tuple(out)


_TASK_SIGNATURE = nbtypes.void(nbtypes.int64, nbtypes.int64, nbtypes.int64)  # (context, lo, hi)


def _compile_task(keep, template, suffix, **names):
    """``template`` compiled as a C-callable task, named with ``suffix`` (its cache key) and
    seeing ``names`` as globals; the compiled object joins ``keep``, since its machine code
    lives only as long as it does. Returns the task's address."""
    compiled = numba.cfunc(_TASK_SIGNATURE, **SERIAL)(_renamed(template, suffix, **names))
    keep.append(compiled)
    return compiled.address


class PooledKernel:
    """A range kernel on the pool: ``run(arrays, scalars, threads)``."""

    def __init__(self, serial):
        self.serial = serial  # the serial range kernel's dispatcher
        self.tasks = {}  # (dtype, narrays, scalar types) -> the task's address
        self.keep = []  # the compiled tasks, kept alive while their addresses are used

    def task(self, dtype, narrays, scalars):
        key = (dtype, narrays, *map(type, scalars))
        address = self.tasks.get(key)
        if address is None:
            prototype = _prototype(scalars)
            like = dtype.type(0)
            kinds = "".join(np.dtype(type(p)).char for p in prototype)
            suffix = (f"__{self.serial.py_func.__name__}_{dtype.char}{narrays}{kinds}_"
                      f"{code_digest(_task_template, self.serial.py_func, _ARRAYS[narrays])}")
            address = self.tasks[key] = _compile_task(
                self.keep, _task_template, suffix, KERNEL=self.serial, LIKE=like,
                ARRAYS=_ARRAYS_JIT[narrays],
                ADDRESSES=(np.int64(0),) * narrays, PROTOTYPE=prototype)
        return address

    def run(self, arrays, scalars, threads):
        first = arrays[0]
        task = self.task(first.dtype, len(arrays), scalars)
        chunk = POOL_CHUNK_BYTES // first.itemsize
        _launch(arrays, scalars, POOL_RUN, task, chunk, threads)


_POOLED = {}


def pooled(serial) -> PooledKernel:
    """The pooled companion of a serial range kernel (one per kernel, made on first use)."""
    kernel = _POOLED.get(serial)
    if kernel is None:
        kernel = _POOLED[serial] = PooledKernel(serial)
    return kernel


def run_in_cache(pair, arrays, scalars, threads):
    """Run a ``_jit.KernelPair`` on ``threads`` threads where the thread policy says the pool
    (``_threads.mode``: arrays that fit in the cache, and larger ones where the prefetching
    loop does not pay): on the pool (the caller never waits for a sleeping worker), or one
    block per OpenMP thread without the C build."""
    if _lib is not None:
        pooled(pair.serial).run(arrays, scalars, threads)
    else:
        pair.run_blocked(arrays, scalars, threads)


# A table kernel (``_multi_numba``: ``kernel(rows, lo, hi, *scalars)`` over rows lo..hi) on
# the pool, one block of rows per chunk. The context: the table's row count, its address,
# the number of bounds and their address, then the scalars.
def _table_task_template(base, lo, hi):
    head = _load_scalars(base, 0, (np.int64(0), np.int64(0), np.int64(0), np.int64(0)))
    rows = _view(head[1], (head[0], NCOL), np.int64(0))  # noqa: F821 (a global of each copy)
    bounds = _view(head[3], (head[2],), np.int64(0))
    scalars = _load_scalars(base, 4, PROTOTYPE)  # noqa: F821 (a global of each copy)
    for b in range(lo, hi):
        KERNEL(rows, bounds[b], bounds[b + 1], *scalars)  # noqa: F821


def _table_launcher(rows, bounds, scalars, pool_run, task, threads):
    context = np.empty(4 + len(scalars), dtype=np.int64)
    context[0] = rows.shape[0]
    context[1] = _address(rows)
    context[2] = bounds.shape[0]
    context[3] = _address(bounds)
    base = _address(context)
    _store_scalars(base, 4, scalars)
    _call_pool(pool_run, task, base, bounds.shape[0] - 1, 1, threads)
    return context[0]  # a use after the call: the context lives until the pool returns


_launch_table = numba.njit(**SERIAL)(
    _renamed(_table_launcher, f"__{code_digest(_table_launcher)}"))


class PooledTable:
    """A table kernel on the pool: ``run(rows, bounds, scalars, threads)`` runs each block
    ``bounds[b]:bounds[b + 1]`` of rows as one chunk."""

    def __init__(self, rows_kernel):
        self.kernel = rows_kernel
        self.tasks = {}
        self.keep = []  # the compiled tasks, kept alive while their addresses are used

    def task(self, scalars):
        key = tuple(map(type, scalars))
        address = self.tasks.get(key)
        if address is None:
            prototype = _prototype(scalars)
            kinds = "".join(np.dtype(type(p)).char for p in prototype)
            from ._multi_table import NCOL

            # NCOL is compiled in as a constant: the cache name carries it
            suffix = (f"__{self.kernel.py_func.__name__}_{kinds}_c{NCOL}_"
                      f"{code_digest(_table_task_template, self.kernel.py_func)}")
            address = self.tasks[key] = _compile_task(
                self.keep, _table_task_template, suffix, KERNEL=self.kernel, NCOL=NCOL,
                PROTOTYPE=prototype)
        return address

    def run(self, rows, bounds, scalars, threads):
        _launch_table(rows, bounds, scalars, POOL_RUN, self.task(scalars), threads)


def pooled_table(rows_kernel) -> PooledTable:
    table = _POOLED.get(rows_kernel)
    if table is None:
        table = _POOLED[rows_kernel] = PooledTable(rows_kernel)
    return table
