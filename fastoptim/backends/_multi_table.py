"""Pointer tables for multi-tensor steps: a plain list of arrays in one kernel call.

A step over a plain list of parameters used to cost one kernel call, and about
40 us of Python, per tensor. Instead, :func:`fill` checks every parameter, its
gradient and its state arrays, and writes one row per parameter into an int64
table; one kernel call then walks the table (``_multi_numba``, ``_multi_c``).

A row (``NCOL`` int64 columns)::

    N      elements (SKIPPED = -1: no gradient, the row is left alone)
    DTYPE  0 float32, 1 float64
    PARAM  data address of the parameter
    GRAD   data address of the gradient
    STATE  data addresses of up to three state arrays, in the order of the
           optimizer's state keys (0 when unused)
    STEP   data address of the float32 0-d step counter (0 when none)

What :func:`fill` checks, on every call, for every parameter (nothing is cached
but the overlap verdict, reused only for byte-identical spans):

- parameter: still the one at its place in its group's ``"params"`` list; an exact ``np.ndarray``, float32/float64 in native byte order,
  C-contiguous, aligned, writeable;
- gradient (``None`` skips the row): an exact ndarray of the parameter's dtype
  and shape, C-contiguous, aligned;
- state: a dict (read through the dict's own storage, as ``dict.get`` reads it,
  whatever a subclass overrides) holding exactly the group's keys (plus ``"step"`` when the
  optimizer counts steps), or no entry at all when there are neither (plain SGD); each array an exact ndarray of the parameter's dtype
  and shape, C-contiguous, aligned, writeable; ``"step"`` a 0-d float32 array,
  aligned and writeable, whose next count is finite;
- memory: no two written arrays (parameters, state arrays, step counters; of
  skipped rows too) overlap, and no gradient overlaps a written array.

Anything else (a first step whose state does not exist yet, a strided or
read-only array, a resized parameter, a rebound state array of another shape,
an ``np.matrix``, overlap...) is *declined*: :func:`fill` returns a short reason,
writes nothing but the table, and the optimizer takes its general per-tensor
path, which accepts such input or refuses it with a clear error. Only once every
check has passed are the step counters incremented (float32, as
``state["step"] += 1``).

The checks run in compiled code (``fastoptim._multi_table_c``, ~30 ns per array,
built by setup.py) when it is installed, else in :func:`fill_py`, which makes
exactly the same decisions (the tests compare the two).
"""
from __future__ import annotations

import bisect

import numpy as np

try:
    from fastoptim import _multi_table_c as _compiled
except ImportError:  # not built (no compiler at install time): the Python filler
    _compiled = None

from ._constants import (  # noqa: F401
    ALL_STEPPED,  # fill's verdict when no row is skipped and every group is uniform
    COL_DTYPE,
    COL_GRAD,
    COL_N,
    COL_PARAM,
    COL_STATE0,
    COL_STEP,  # the layout, shared with C
    MAX_KEYS,
    NCOL,
    SKIPPED,
)

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # index = the DTYPE column
STEP_KEY = "step"

if _compiled is not None:
    assert (_compiled.NCOL, _compiled.MAX_KEYS) == (NCOL, MAX_KEYS), "stale _multi_table_c build"


def compiled_available() -> bool:
    return _compiled is not None


def _sequence(arrays, who):
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{who}: arrays must be a list or a tuple")
    return arrays


def first_read_only(arrays, use_compiled=True):
    """The index of the first item of ``arrays`` (a list or tuple) that is not a
    writeable NumPy array, or -1: one flag read per array in compiled code (the
    optimizer checks the views of a FlatParams group with it on every step),
    else :func:`first_read_only_py`, which answers the same."""
    if use_compiled and _compiled is not None:
        return _compiled.first_read_only(arrays)
    return first_read_only_py(arrays)


def first_read_only_py(arrays):
    """The pure-Python twin of ``_multi_table_c.first_read_only``."""
    for i, a in enumerate(_sequence(arrays, "first_read_only")):
        if not isinstance(a, np.ndarray) or not a.flags.writeable:
            return i
    return -1


def fingerprint(arrays):
    """What a kernel would touch through each array of ``arrays`` (a list or tuple), as
    one comparable value: data address, dtype, writeable/aligned/C-contiguous flags,
    shape and strides; None when an item is not an ndarray. Equal values mean the same
    memory, layout and flags. Compiled (``_multi_table_c.fingerprint``, bytes) when
    built, else :func:`fingerprint_py` (a tuple): one process uses one of the two."""
    return (_compiled.fingerprint if _compiled is not None else fingerprint_py)(arrays)


def fingerprint_py(arrays):
    """The pure-Python twin of ``_multi_table_c.fingerprint`` (the same equalities)."""
    out = []
    for a in _sequence(arrays, "fingerprint"):
        if not isinstance(a, np.ndarray):
            return None
        flags = a.flags
        out.append((_address(a), a.dtype.num, a.dtype.byteorder, a.itemsize, flags.writeable,
                    flags.aligned, flags.c_contiguous, a.shape, a.strides))
    return tuple(out)


class Table:
    """One optimizer's table, step counts and overlap cache (reused from step to step)."""

    __slots__ = ("rows", "steps", "cache", "owner")

    def __init__(self, n):
        self.owner = None  # whom the caller fills it for (see _plain_list.try_step)
        self.rows = np.zeros((n, NCOL), dtype=np.int64)
        self.steps = np.zeros(n, dtype=np.float64)  # each stepped row's new step count
        self.cache = _compiled.new_cache() if _compiled is not None else _PyCache()

    # The rows are rebuilt by every fill: a copy (copy.deepcopy or pickle of an optimizer)
    # starts with an empty table of the same size and no cached verdict.
    def __reduce__(self):
        return (Table, (len(self.steps),))

    def __deepcopy__(self, memo):
        return Table(len(self.steps))


def fill(table, params, grads, state, groups, uses_step, use_compiled=True):
    """Check everything and fill ``table``; see the module docstring.

    ``params``: list of every parameter; ``grads``: list or tuple aligned with it;
    ``state``: dict {index: dict}; ``groups``: tuple of ``(start, stop, keys, members)``
    covering the parameters in order (``members``: the group's own list, which
    must still hold ``params[start:stop]``). Returns ``ALL_STEPPED`` (2: no row is
    skipped, and within every group the rows share one dtype and one step count),
    True (the same, with rows skipped), False (a group's stepped rows do not share
    them), or a str: why the general path must run instead.
    """
    if use_compiled and _compiled is not None:
        return _compiled.fill(params, grads, state, groups, uses_step, table.rows, table.steps,
                              STEP_KEY, table.cache)
    if isinstance(table.cache, _PyCache):
        return fill_py(params, grads, state, groups, uses_step, table.rows, table.steps,
                       table.cache)
    return fill_py(params, grads, state, groups, uses_step, table.rows, table.steps, _PyCache())


class _PyCache:
    __slots__ = ("written", "reads", "sorted", "valid")

    def __init__(self):
        self.written = self.reads = self.sorted = None
        self.valid = False


def _code(a):
    dtype = a.dtype
    if dtype == DTYPES[0] and dtype.isnative:
        return 0
    if dtype == DTYPES[1] and dtype.isnative:
        return 1
    return -1


def _checked(a, code, like, write):
    """``a`` if it is an exact ndarray fit for the kernel (see the module docstring), else None."""
    if type(a) is not np.ndarray:
        return None
    flags = a.flags
    if not (flags.c_contiguous and flags.aligned) or (write and not flags.writeable):
        return None
    if _code(a) != code or (like is not None and a.shape != like.shape):
        return None
    return a


def _address(a):
    return a.__array_interface__["data"][0]


def _span(a):
    lo = _address(a)
    return lo, lo + a.nbytes


def fill_py(params, grads, state, groups, uses_step, rows, steps, cache):
    """The pure-Python twin of ``_multi_table_c.fill``: same checks, same table, same verdict."""
    n = len(params)
    if rows.dtype != np.int64 or rows.shape != (n, NCOL) or not rows.flags.c_contiguous or (
            steps.dtype != np.float64 or steps.shape != (n,)):
        raise ValueError("fill: table or steps has the wrong layout")
    if not isinstance(grads, (list, tuple)):
        return "grads type"
    if len(grads) != n:
        return "grads length"
    written, reads = [], []
    uniform, skipped = True, False
    expect = 0
    reason = None
    for start, stop, keys, members in groups:
        if start != expect or stop < start or stop > n or len(keys) > MAX_KEYS:
            raise ValueError("fill: groups must be (start, stop, keys, members) tuples covering "
                             "every parameter in order, at most 3 keys each")
        expect = stop
        if not isinstance(members, (list, tuple)):
            reason = "group params type"
            break
        if len(members) != stop - start:
            reason = "group params changed"
            break
        group_code, group_step = -1, 0.0
        for i in range(start, stop):
            row = rows[i]
            row[:] = 0
            p = params[i]
            if members[i - start] is not p:
                reason = "group params changed"
                break
            if type(p) is not np.ndarray:
                reason = "param type"
                break
            code = _code(p)
            if code < 0 or not (p.flags.c_contiguous and p.flags.aligned and p.flags.writeable):
                reason = "param layout"
                break
            written.append(_span(p))
            entry = dict.get(state, i)
            g = grads[i]
            if g is None:
                row[COL_N] = SKIPPED
                steps[i] = 0.0
                skipped = True
                if entry is None:
                    continue
                if not isinstance(entry, dict):
                    reason = "state entry type"
                    break
                for key, value in entry.items():
                    if isinstance(key, str) and key == STEP_KEY:
                        continue
                    if type(value) is not np.ndarray or not value.flags.c_contiguous:
                        reason = "state of a skipped parameter"
                        break
                    written.append(_span(value))
                if reason:
                    break
                continue
            if _checked(g, code, p, False) is None:
                reason = "grad"
                break
            stateless = not keys and not uses_step  # plain SGD keeps no state, as torch
            if entry is None and not stateless:
                reason = "no state yet"
                break
            if entry is not None and not isinstance(entry, dict):
                reason = "state entry type"
                break
            if entry is not None and len(entry) != len(keys) + (1 if uses_step else 0):
                reason = "state keys"
                break
            row[COL_N] = p.size
            row[COL_DTYPE] = code
            row[COL_PARAM] = _address(p)
            row[COL_GRAD] = _address(g)
            reads.append(_span(g))
            for k, key in enumerate(keys):
                a = _checked(entry.get(key), code, p, True)
                if a is None:
                    reason = "state array"
                    break
                row[COL_STATE0 + k] = _address(a)
                written.append(_span(a))
            if reason:
                break
            step = 0.0
            if uses_step:
                s = entry.get(STEP_KEY)
                if (type(s) is not np.ndarray or s.ndim != 0 or _code(s) != 0
                        or not (s.flags.aligned and s.flags.writeable)):
                    reason = "step"
                    break
                row[COL_STEP] = _address(s)
                written.append(_span(s))
                step = float(np.float32(s[()] + np.float32(1)))
                if not np.isfinite(step):  # rows are grouped by step value
                    reason = "step"
                    break
            steps[i] = step
            if group_code < 0:
                group_code, group_step = code, step
            elif code != group_code or step != group_step:
                uniform = False
        if reason:
            break
    if reason is None and expect != n:
        raise ValueError("fill: groups must cover every parameter")
    written = [s for s in written if s[1] > s[0]]
    reads = [s for s in reads if s[1] > s[0]]
    if reason is None:
        same_writes = cache.valid and written == cache.written
        if not same_writes:
            cache.valid = False
            ordered = sorted(written)
            if any(b[0] < a[1] for a, b in zip(ordered, ordered[1:])):
                reason = "written arrays overlap"
            else:
                cache.sorted, cache.written = ordered, written
        if reason is None and not (same_writes and reads == cache.reads):
            cache.valid = False
            starts = [s[0] for s in cache.sorted]
            for lo, hi in reads:
                j = bisect.bisect_left(starts, hi) - 1
                if j >= 0 and cache.sorted[j][1] > lo:
                    reason = "a gradient overlaps a written array"
                    break
            else:
                cache.reads = reads
    if reason is not None:
        cache.valid = False
        return reason
    cache.valid = True
    if uses_step:
        for i in range(n):
            if rows[i, COL_N] != SKIPPED:
                entry = dict.get(state, i)
                entry[STEP_KEY][()] = np.float32(steps[i])
    return ALL_STEPPED if uniform and not skipped else uniform
