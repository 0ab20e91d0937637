"""The optimizer's state: a plain store of entries, and the torch-style view users edit.

The store is a plain ``{index: entry}`` dict of ``{key: array or step}`` entries,
index being the parameter's place in construction order (as in ``state_dict``).
Users see it through ``opt.state`` (:class:`_State`) and ``opt.state[i]``
(:class:`_Entry`), which behave like torch's ``defaultdict(dict)``: keys may be
indices, the arrays themselves or their names, a missing entry reads as an
empty dict, and every edit through them bumps the layout's edit counter, which
tells ``step`` what it must check again.

The optimizer's own reads and writes are not edits: it reaches the store only
through the store methods below (``_get``, ``_at``, ``_put``, ``_replace``,
``_items``, ``_values`` on the state; ``_get``, ``_put``, ``_merge`` on an
entry), plain dict operations that resolve no key, create no default and count
nothing. The view and the store are one dict object (the view is a dict
subclass over the store's storage) because compiled code reads the store
directly: the plain-list table filler (``backends._multi_table.fill``) and
``distributed`` look entries up with ``dict.get``; two containers could drift.

``_Layout`` is what the state needs to resolve keys without a reference to the
optimizer: the parameters, their names, and the edit counter shared with every
entry.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np


class _Layout:
    """What the optimizer's state needs to resolve keys, without a reference back to the
    optimizer (so ``del opt`` frees it at once, as in torch): the parameters in
    construction order, their names, and an edit counter shared with the state dicts."""

    __slots__ = ("params", "names", "version", "sync")

    def __init__(self):
        self.params, self.names, self.version = [], None, [0]
        self.sync = None  # a weak reference to the optimizer's _sync_layout

    def __deepcopy__(self, memo):
        new = _Layout()
        memo[id(self)] = new
        new.params = copy.deepcopy(self.params, memo)
        new.names = copy.deepcopy(self.names, memo)
        new.version = copy.deepcopy(self.version, memo)
        return new  # the optimizer's copy sets new.sync

    def __reduce__(self):  # pickle: without the weak reference (the optimizer resets it)
        return (_Layout._rebuild, (self.params, self.names, self.version))

    @staticmethod
    def _rebuild(params, names, version):
        layout = _Layout()
        layout.params, layout.names, layout.version = params, names, version
        return layout



class _Entry(dict):
    """``opt.state[i]``: one parameter's state; every edit bumps the optimizer's counter."""

    __slots__ = ("_version",)

    def __init__(self, version, values=()):
        dict.__init__(self, values)
        self._version = version

    def __reduce_ex__(self, protocol):
        return (_Entry, (self._version, dict(self)))

    # the store: the optimizer's own reads and writes, not counted as edits
    _get = dict.get
    _put = dict.__setitem__
    _merge = dict.update


def _entry_edit(name):
    method = getattr(dict, name)

    def edit(self, *args, **kwargs):
        self._version[0] += 1
        return method(self, *args, **kwargs)

    edit.__name__ = name
    return edit


for _name in ("__setitem__", "__delitem__", "__ior__", "pop", "popitem", "clear", "update",
              "setdefault"):
    setattr(_Entry, _name, _entry_edit(_name))



class _State(dict):
    """``optimizer.state``: per-parameter state, keyed by the parameter's index.

    torch keys its state by tensor; NumPy arrays are not hashable, so here the
    key is the parameter's index in construction order (as in ``state_dict()``).
    Indexing with the parameter array itself (``opt.state[w]``) or, for named
    parameters, with its name also works. As torch's ``defaultdict(dict)``, a
    parameter that has not stepped yet reads as an empty dict, and entries may
    be edited or replaced between steps (``step`` checks them).
    """

    __slots__ = ("_layout",)

    def __init__(self, layout):
        dict.__init__(self)
        self._layout = layout

    def __reduce_ex__(self, protocol):
        return (_State._rebuild, (self._layout, dict(self)))

    # the store: the optimizer's own reads and writes (no key resolution, no default
    # entry, no edit counted; the caller bumps the layout version where it must)
    _get = dict.get
    _at = dict.__getitem__
    _put = dict.__setitem__
    _items = dict.items
    _values = dict.values

    def _replace(self, entries):
        """Make ``entries`` (``{index: _Entry}``) the whole store."""
        dict.clear(self)
        dict.update(self, entries)

    @staticmethod
    def _rebuild(layout, items):
        state = _State(layout)
        dict.update(state, items)
        return state

    def _sync(self):
        """Edits of param_groups move parameters to new indices: apply them first."""
        sync = self._layout.sync
        method = sync() if sync is not None else None
        if method is not None:
            method()

    def _key(self, key):
        self._sync()
        layout = self._layout
        if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, (bool, np.bool_)):
            index = int(key)
            if 0 <= index < len(layout.params):
                return index
            raise KeyError(key)
        if isinstance(key, str) and layout.names is not None and key in layout.names:
            return layout.names.index(key)
        for i, p in enumerate(layout.params):
            if p is key:
                return i
        raise KeyError("not a parameter of this optimizer")

    def _edit(self):
        self._layout.version[0] += 1

    def __getitem__(self, key):
        index = self._key(key)
        entry = self._get(index)
        if entry is None:  # torch's defaultdict(dict)
            entry = _Entry(self._layout.version)
            self._put(index, entry)
            self._edit()
        return entry

    def __setitem__(self, key, value):
        index = self._key(key)
        if not isinstance(value, dict):
            raise TypeError(f"optimizer state entries must be dicts, but got {type(value).__name__}")
        self._edit()
        self._put(index, _Entry(self._layout.version, value))

    def __delitem__(self, key):
        self._edit()
        dict.__delitem__(self, self._key(key))

    def __contains__(self, key):
        try:
            return dict.__contains__(self, self._key(key))
        except KeyError:
            return False

    def __iter__(self):
        self._sync()
        return dict.__iter__(self)

    def __len__(self):
        self._sync()
        return dict.__len__(self)

    def keys(self):
        self._sync()
        return dict.keys(self)

    def values(self):
        self._sync()
        return dict.values(self)

    def items(self):
        self._sync()
        return dict.items(self)

    def __repr__(self):
        self._sync()
        return dict.__repr__(self)

    def get(self, key, default=None):
        try:
            return self._get(self._key(key), default)
        except KeyError:
            return default

    def pop(self, key, *default):
        self._edit()
        try:
            index = self._key(key)
        except KeyError:
            if default:
                return default[0]
            raise
        return dict.pop(self, index, *default)

    def popitem(self):
        self._edit()
        return dict.popitem(self)

    def clear(self):
        self._edit()
        dict.clear(self)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = {} if default is None else default
        return self[key]

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


CARVE_ALIGN = 64  # bytes: where each array carved out of a shared buffer starts (a cache line)
# An array of this many bytes or more is allocated alone, never carved: carving serves
# small arrays (one buffer streams as a FlatParams group does), and a large one gains
# nothing from sharing a buffer. It lost by it: a 16M-element Adam step over exp_avg and
# exp_avg_sq carved one after the other (exactly 64 MiB apart) ran at 0.92 of the no-math
# loop over the same arrays with numba against 0.995 allocated alone (six processes,
# interleaved, 2-core AMD EPYC; C 1.05x and 1.01x numba's speed), and gaps of a page, or
# a page and a line, between the two did not give that back (docs/benchmarks.md).
CARVE_MAX_BYTES = 32 * 2**20


def carve(wanted):
    """Host state arrays out of one buffer per (dtype, init): ``wanted`` is a list of
    ``(index, key, init, param)`` ("zeros" or "empty"); returns ``{(index, key): array}``,
    each a C-contiguous, writeable view of its parameter's shape and dtype, starting on a
    cache line, in ``wanted``'s order within its buffer and overlapping no other. A
    (dtype, init) asked for once, and an array of ``CARVE_MAX_BYTES`` or more, get nothing
    here (the caller allocates them alone)."""
    kinds = {}
    for index, key, init, param in wanted:
        if param.nbytes < CARVE_MAX_BYTES:
            kinds.setdefault((np.dtype(param.dtype), init), []).append((index, key, param))
    out = {}
    for (dtype, init), items in kinds.items():
        if len(items) < 2:
            continue
        line = max(1, CARVE_ALIGN // dtype.itemsize)  # elements per cache line
        starts, total = [], 0
        for _, _, param in items:
            starts.append(total)
            total += -(-param.size // line) * line
        buffer = (np.zeros if init == "zeros" else np.empty)(total + line, dtype)
        shift = (-buffer.ctypes.data % CARVE_ALIGN) // dtype.itemsize
        for (index, key, param), start in zip(items, starts):
            lo = shift + start
            out[index, key] = buffer[lo:lo + param.size].reshape(param.shape)
    return out
