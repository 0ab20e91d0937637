"""The fast path of ``Optimizer.step`` for a plain list of arrays: one kernel call per group.

``Optimizer.step`` tries :func:`try_step` first. It applies when the optimizer
steps host arrays with the ``numba`` or ``c`` backend, no group tiles one
buffer (that is the FlatParams path), and neither ``skip_nonfinite`` nor
``max_grad_norm`` is set. Then every parameter, gradient and state array is
checked in compiled code and written into a table of data addresses
(``backends/_multi_table.py`` lists the checks, which run on every step), and
one table kernel per group updates every tensor (``backends/_multi_numba.py``,
``backends/_multi_c.py``, reached through ``functional.TableKernels`` like every
kernel): the same per-element math as one kernel call per tensor, bit for bit.

When anything is unusual (the first step, before the state exists; a strided,
read-only, resized or rebound array; overlapping memory; edited param groups),
:func:`try_step` returns False having changed nothing, and the general,
per-tensor path runs: it accepts such input or refuses it with a clear error.
``last_plain_list_decline`` on the optimizer says why (for tests and curious users).
"""
from __future__ import annotations

import threading

import numpy as np

from . import _parallel as _devices
from . import backends
from . import functional as F
from .arrays import HostArrays
from .backends import _multi_table as T
from .backends import _threads
from .backends._constants import POOL_CHUNK_BYTES

enabled = True  # False: always the general per-tensor path (for comparisons)
# Who checks and fills the table: "compiled" (fastoptim._multi_table_c, ~30 ns per array)
# or "python" (backends._multi_table.fill_py: the same decisions, but microseconds per
# array, slower than the general path, so it is used only when asked for, by the tests).
# Without the compiled filler, plain lists take the general per-tensor path.
filler = "compiled" if T.compiled_available() else None

# The table kernels of a backend (``functional.TableKernels``), or None when it has none.
table_module = F.table_kernels


def _grads_list(opt, grads):
    """``grads`` as a list aligned with the parameters, or None (the general path decides)."""
    names = opt._names
    if names is not None:
        if type(grads) is not dict or len(grads) != len(names):
            return None
        try:
            return [grads[k] for k in names]
        except KeyError:
            return None
    if type(grads) is list or type(grads) is tuple:  # not FlatGrads (a list subclass)
        return grads
    return None


def _decline(opt, why):
    opt.last_plain_list_decline = why
    return False


def try_step(opt, grads) -> bool:
    """Step ``opt`` over ``grads`` through the table kernels; False (nothing changed) when
    this path does not apply and the general path must run."""
    if not enabled or filler is None:
        return _decline(opt, "disabled" if not enabled else "no compiled table filler")
    if opt.skip_nonfinite or opt.max_grad_norm is not None:
        return _decline(opt, "skip_nonfinite or max_grad_norm")
    if not isinstance(opt._devices, HostArrays) or not isinstance(opt.state, dict):
        return _decline(opt, "not host arrays")
    module = table_module(opt.backend)
    if module is None:
        return _decline(opt, f"no table kernels for backend {opt.backend!r}")
    if not hasattr(module, opt._kernel or ""):
        return _decline(opt, f"no table kernels for {type(opt).__name__}")
    if any(s is not None for s in opt._segments):
        return _decline(opt, "a group tiles one buffer (the FlatParams path)")
    grads = _grads_list(opt, grads)
    if grads is None:
        return _decline(opt, "grads container")
    params = opt._params
    plan = _plan(opt)
    groups = plan.groups
    if plan.stop != len(params) or any(len(g[2]) > T.MAX_KEYS for g in groups):
        return _decline(opt, "group params changed")
    # One table per optimizer and thread: a shallow copy of the optimizer, or a second
    # thread stepping it, must never refill rows that a running kernel is reading.
    owner = (id(opt), threading.get_ident())
    table = opt.__dict__.get("_plain_list_table")
    if table is None or table.owner != owner or table.rows.shape[0] != len(params):
        table = T.Table(len(params))
        table.owner = owner
    verdict = T.fill(table, params, grads, opt.state, tuple(groups), opt._uses_step,
                     use_compiled=filler == "compiled")
    opt._plain_list_table = table
    if isinstance(verdict, str):
        return _decline(opt, verdict)
    # Everything is checked and the step counters are counted: nothing below can fail.
    opt.last_plain_list_decline = None
    opt.last_step_skipped = False
    _run(opt, module, table, grads, plan, uniform=verdict)
    return True


class _Plan:
    """What a step over the same layout repeats: the groups' row ranges and state keys,
    the thread policy, the rows big enough for the single-array kernels, and each
    group's row blocks. Keyed on the layout version, the groups' state keys and the
    thread policy, so an edit that changes any of them makes a new one. It holds no
    memory addresses: every array is checked and its address read on every step
    (``_multi_table.fill``), so a stale plan could only split rows among threads unevenly."""

    __slots__ = ("key", "groups", "stop", "parallel_min", "threads", "big", "bounds")

    def __init__(self, opt, key):
        self.key = key
        version, keys_of, self.parallel_min, self.threads = key
        groups = []
        start = 0
        for group, keys in zip(opt.param_groups, keys_of):
            members = group["params"]
            stop = start + len(members)
            groups.append((start, stop, keys, members))
            start = stop
        self.groups = tuple(groups)
        self.stop = start
        self.big = None  # the parameters of parallel_min elements or more, found on the first run
        self.bounds = {}  # (start, stop, rows stepped) -> row bounds of the blocks


def _plan(opt):
    parallel_min, threads = _thread_policy(None)
    keys_of = opt._state_key_names()
    key = (opt._layout.version[0], keys_of, parallel_min, threads)
    plan = opt.__dict__.get("_plain_list_plan")
    if plan is None or plan.key != key or any(
            g[3] is not group["params"] for g, group in zip(plan.groups, opt.param_groups)):
        plan = opt._plain_list_plan = _Plan(opt, key)
    return plan


def _thread_policy(kernels):
    """(parallel_min, threads): fastoptim's thread policy (``backends._threads``), one
    thread where ``_devices.serial_only()`` says parallel regions cannot run (a child
    forked after a parallel step)."""
    return _threads.PARALLEL_MIN, 1 if _devices.serial_only() else _threads.parallel_threads()


def _blocks(rows, start, stop, parallel_min, threads, itemsize):
    """Row bounds that split ``rows[start:stop]`` into blocks of about equal element
    counts: one block below ``parallel_min`` elements in all (or with one thread), else
    blocks of about one pool chunk each (``POOL_CHUNK_BYTES`` per array), which the table
    kernel hands to whichever thread is free (fastoptim's pool, ``backends/_pool.py``)."""
    if threads <= 1:
        return np.array([start, stop], dtype=np.int64)
    sizes = np.maximum(rows[start:stop, T.COL_N], 0)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if ends.size else 0
    if total < parallel_min:
        return np.array([start, stop], dtype=np.int64)
    count = max(threads, -(-total * itemsize // POOL_CHUNK_BYTES))
    # a block ends before the first row whose middle lies past its share of the elements
    cuts = np.searchsorted(ends - sizes / 2, total * np.arange(1, count) / count)
    return np.unique(np.concatenate([[start], start + cuts, [stop]])).astype(np.int64)


def _run(opt, module, table, grads, plan, uniform):
    rows, steps = table.rows, table.steps
    kernels = backends.load(opt.backend)
    parallel_min, threads, groups = plan.parallel_min, plan.threads, plan.groups
    # Big tensors run one by one through the single-array kernels (parallel, by the thread
    # policy); the table kernels see only small ones, each updated by one thread. The
    # sizes are the layout's, but a row whose gradient is None this step is SKIPPED.
    if plan.big is None:
        plan.big = [i for i, p in enumerate(opt._params) if p.size >= parallel_min]
    alone = 0  # rows stepped one by one: when that is every row, no table call is left
    for i in plan.big:
        if rows[i, T.COL_N] >= parallel_min:
            _step_one(opt, kernels, groups, i, grads[i], steps[i])
            rows[i, T.COL_N] = T.SKIPPED
            alone += 1
    if alone == plan.stop:
        return
    every = uniform == T.ALL_STEPPED and not alone  # no row skipped: no search for them
    for group, (start, stop, keys, _) in zip(opt.param_groups, groups):
        if every:
            if start == stop:
                continue
            first, count = start, stop - start
        else:
            stepped = np.flatnonzero(rows[start:stop, T.COL_N] != T.SKIPPED)
            if not stepped.size:
                continue
            first, count = start + int(stepped[0]), stepped.size
        state = dict.fromkeys(keys)
        if uniform:
            dtype = T.DTYPES[rows[first, T.COL_DTYPE]]
            where = (start, stop, count)
            bounds = plan.bounds.get(where)
            if bounds is None:
                bounds = plan.bounds[where] = _blocks(rows, start, stop, parallel_min, threads,
                                                          dtype.itemsize)
            opt._update(group, F.StepArgs(module, F.Rows(rows, bounds, dtype), None, state,
                                          float(steps[first]) if opt._uses_step else None))
            continue
        # rows of several dtypes or step counts: one call per kind, over a compact copy
        chosen = start + stepped  # (not uniform: never ALL_STEPPED, so stepped was found)
        kinds = np.rec.fromarrays([rows[chosen, T.COL_DTYPE], steps[chosen]])
        for kind in np.unique(kinds):
            sub = np.ascontiguousarray(rows[chosen[kinds == kind]])
            dtype = T.DTYPES[int(kind[0])]
            bounds = _blocks(sub, 0, len(sub), parallel_min, threads, dtype.itemsize)
            opt._update(group, F.StepArgs(module, F.Rows(sub, bounds, dtype), None, state,
                                          float(kind[1]) if opt._uses_step else None))


def _step_one(opt, kernels, groups, index, grad, step):
    """One checked row through the single-array kernel (its step is already counted)."""
    for group, (start, stop, keys, _) in zip(opt.param_groups, groups):
        if start <= index < stop:
            break
    entry = opt._state._get(index)
    arrays = {key: entry[key].reshape(-1) for key in keys}
    opt._update(group, F.StepArgs(kernels, opt._params[index].reshape(-1), grad.reshape(-1),
                                  arrays, float(step) if opt._uses_step else None))
