"""The optimizer classes: validate, keep hyperparameters and state, hold no math.

The math lives in the backends (``fastoptim/backends``); ``Optimizer.step``
checks every gradient and every state array it will write first, then hands
each parameter (or each flat parameter group, see ``fastoptim.flat``) to the
backend's kernel.

Users edit a live optimizer the way they edit torch's: ``opt.state[i][key] =
array``, ``opt.param_groups[g]["params"].append(w)``, ``flat.grads[k] = None``.
Every such edit is honoured at the next ``step`` (or refused there with a
``TypeError``/``ValueError`` that changes nothing). The cheap detection that
keeps the flat path O(number of groups) in Python is exact: the state dicts,
the parameter lists and ``FlatParams.grads`` count their own edits, and the one
change no counter sees, a view's ``flags.writeable`` cleared, is read for every
view of a flat group on every step in compiled code (``first_read_only``).
"""
from __future__ import annotations

import copy
import inspect
import math
import numbers
import operator
import weakref

import numpy as np

from .. import _plain_list
from .. import _validation as V
from .. import backends
from ..backends._multi_table import _address, first_read_only
from .._devices import check_backend_fits, device_support, is_array, note_parallel, parallel_guard
from ..flat import FlatGradDict, FlatGrads, copy_keeping_views, owner_of
from ..flat import _root as _host_root


def _root_of(a):
    return _host_root(a) if isinstance(a, np.ndarray) else a

_NOOP_FLAGS = {  # torch's implementation switches: the values that change nothing here
    "foreach": (None, False, True),  # one implementation, the same math for any list
    "fused": (None, False),
    "capturable": (False,),
    "differentiable": (False,),
}


def _typename(x):
    t = type(x)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


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


class _ParamList(list):
    """``param_groups[g]["params"]``: a list that counts its own edits."""

    __slots__ = ("_edits",)

    def __init__(self, items=()):
        list.__init__(self, items)
        self._edits = 0

    def __reduce_ex__(self, protocol):
        return (_ParamList, (list(self),))


def _counting(name):
    method = getattr(list, name)

    def edit(self, *args, **kwargs):
        self._edits += 1
        return method(self, *args, **kwargs)

    edit.__name__ = name
    return edit


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
              "insert", "pop", "remove", "clear", "sort", "reverse"):
    setattr(_ParamList, _name, _counting(_name))


class _Entry(dict):
    """``opt.state[i]``: one parameter's state; every edit bumps the optimizer's counter."""

    __slots__ = ("_version",)

    def __init__(self, version, values=()):
        dict.__init__(self, values)
        self._version = version

    def __reduce_ex__(self, protocol):
        return (_Entry, (self._version, dict(self)))


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


class _Segment:
    """A param group whose parameters tile one contiguous buffer: one kernel call per step."""

    __slots__ = ("root", "start", "param", "slices", "uniform", "state", "views", "checked")

    def __init__(self, root, start, param, params):
        self.root, self.start, self.param = root, start, param
        sizes = [math.prod(p.shape) for p in params]  # torch tensors' .size is a method
        ends = np.cumsum(sizes)
        self.slices = [slice(int(e - n), int(e)) for e, n in zip(ends, sizes)]
        # True while every parameter of the group has stepped together, so the
        # group's state is one flat array per key and one shared step counter.
        self.uniform = True
        self.state = {}  # key -> flat state array of the whole group (while uniform)
        self.views = {}  # key -> the per-parameter views of it that opt.state holds
        self.checked = -1  # the edit count at which opt.state was last found to hold them


def _check_segment_memory(indices, segment):
    """The parameters of a flat group are views into one buffer: refuse a step once that
    buffer no longer holds them (``buffer.resize(..., refcheck=False)`` reallocates or
    shrinks it in place and leaves every view dangling; writing through them would write
    into freed memory). O(1): the group's flat view must still start where the buffer
    says and fit inside it."""
    root, param = segment.root, segment.param
    if not (isinstance(root, np.ndarray) and isinstance(param, np.ndarray)):
        return  # device arrays cannot be resized in place
    if (root.size < segment.start + param.size
            or _address(param) != _address(root) + segment.start * root.itemsize):
        raise ValueError(
            f"the buffer behind params[{indices[0]}:{indices[-1] + 1}] was resized or "
            "reallocated in place (ndarray.resize with refcheck=False?): the parameters are "
            "views into memory it no longer holds; make a new FlatParams and optimizer")


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
        entry = dict.get(self, index)
        if entry is None:  # torch's defaultdict(dict)
            entry = _Entry(self._layout.version)
            dict.__setitem__(self, index, entry)
            self._edit()
        return entry

    def __setitem__(self, key, value):
        index = self._key(key)
        if not isinstance(value, dict):
            raise TypeError(f"optimizer state entries must be dicts, but got {type(value).__name__}")
        self._edit()
        dict.__setitem__(self, index, _Entry(self._layout.version, value))

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
            return dict.get(self, self._key(key), default)
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


class Optimizer:
    """Base class: param groups, state, ``step``, ``state_dict`` in torch's layout.

    Subclasses define ``_check_group`` (hyperparameter validation), ``_state_keys``
    (the state arrays a group needs) and ``_update`` (one backend call).
    """

    _uses_step = False  # Adam counts steps; SGD does not

    def __init__(self, params, defaults, backend="auto", skip_nonfinite=False, max_grad_norm=None):
        V.check_safety_options(skip_nonfinite, max_grad_norm)
        self.defaults = defaults
        self.skip_nonfinite = skip_nonfinite
        self.max_grad_norm = max_grad_norm
        self.last_step_skipped = False  # True when the last step() found a NaN/Inf gradient
        self.skipped_steps = 0  # how many steps skip_nonfinite has skipped so far
        self.last_grad_norm = None  # total 2-norm of the last step's gradients, when computed
        if is_array(params) or isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of arrays or "
                f"dicts (or a dict of named arrays), but got {_typename(params)}"
            )
        if isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of arrays in sets will change between runs. Please use a list instead."
            )
        self._dict_built = isinstance(params, dict) and "params" not in params
        if self._dict_built:
            groups = [{"params": list(params.items())}]
        else:
            if isinstance(params, dict):
                params = [params]
            groups = list(params)
            if groups and not isinstance(groups[0], dict):
                groups = [{"params": groups}]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        self._requested_backend = backend
        self._devices = None
        self.backend = None
        self.param_groups: list[dict] = []
        self._layout = _Layout()
        self._records = []  # per group: (group dict, its params list, edit count, params, names)
        self._segments: list = []  # one per group: _Segment or None
        self._write_spans = None  # during step(): the spans of everything it writes
        self._state = _State(self._layout)
        self._layout.sync = weakref.WeakMethod(self._sync_layout)
        for group in groups:
            self.add_param_group(group)

    @property
    def last_grad_norm(self):
        """Total 2-norm of the last step's gradients (None until computed).

        On the cuda backend the norm stays on the device: reading this copies it
        back (the one wait for the GPU), only when asked.
        """
        value = self._last_grad_norm
        if callable(value):
            value = self._last_grad_norm = value()
        return value

    @last_grad_norm.setter
    def last_grad_norm(self, value):
        self._last_grad_norm = value

    # On the cuda backend skip_nonfinite decides on the device: these two are read
    # back (one wait for the GPU) only when asked.
    @property
    def last_step_skipped(self):
        """True when the last step() found a NaN/Inf gradient (and so changed nothing)."""
        value = self._last_step_skipped
        if callable(value):
            value = self._last_step_skipped = bool(value())
        return value

    @last_step_skipped.setter
    def last_step_skipped(self, value):
        self._last_step_skipped = value

    @property
    def skipped_steps(self):
        """How many steps skip_nonfinite has skipped so far."""
        value = self._skipped_steps
        if callable(value):
            value = self._skipped_steps = int(value())
        return value

    @skipped_steps.setter
    def skipped_steps(self, value):
        self._skipped_steps = value

    @property
    def state(self):
        """Per-parameter state (see :class:`_State`): ``opt.state[i]``, ``opt.state[w]``."""
        return self._state

    @state.setter
    def state(self, value):
        """Assigning a whole new state (``opt.state = {...}``): checked at the next step."""
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise TypeError("optimizer.state must be a dict of {index: dict of state}")
        state = _State(self._layout)
        for key, entry in value.items():
            state[key] = entry
        self._layout.version[0] += 1
        self._state = state

    @property
    def _params(self):
        """Every parameter, group by group (the order of ``state_dict``)."""
        return self._layout.params

    @property
    def _names(self):
        """The parameters' names when the groups have ``param_names``, else None."""
        return self._layout.names

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a group of parameters with their own hyperparameters (torch's semantics).

        ``params`` may be a list of arrays, a list of ``(name, array)`` pairs
        (the group gets ``param_names``) or a dict of named arrays.
        """
        self._sync_layout()
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if isinstance(params, dict):
            params = list(params.items())
        params, names = self._split_names(params, "params")
        if names is not None:
            group["param_names"] = names
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        for other in self.param_groups:
            if ("param_names" in group) != ("param_names" in other):
                raise ValueError(
                    "all optimizer param groups should be with/without names. cannot add param "
                    f"group {'with' if 'param_names' in group else 'without'} names to the optimizer"
                )
        if "param_names" in group:
            self._check_names(group["param_names"], len(params), len(self.param_groups))
        layout = [list(g["params"]) for g in self.param_groups] + [params]
        backend, devices = self._check_params(layout)
        self._check_group(group)

        # all checks passed: now record the group
        self.backend, self._devices = backend, devices
        group["params"] = _ParamList(params)
        self.param_groups.append(group)
        self._params.extend(params)
        if "param_names" in group:
            self._layout.names = (self._layout.names or []) + list(group["param_names"])
        segment = devices.find_segment(params) if len(params) > 1 else None
        self._segments.append(segment and _Segment(*segment, params))
        self._records.append(self._record(group))
        self._layout.version[0] += 1

    @staticmethod
    def _split_names(params, label):
        """The arrays of a group and their names (from ``(name, array)`` pairs), or None."""
        if isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of arrays in sets will change between runs. Please use a list instead."
            )
        if is_array(params):
            params = [params]
        elif isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError(f"{label} must be an iterable of arrays, but got {_typename(params)}")
        params = list(params)
        pairs = [isinstance(p, tuple) for p in params]
        if not any(pairs):
            return params, None
        if not all(pairs):
            raise ValueError(
                "all optimizer params should be with/without names. Some param names are missing"
            )
        if not all(len(p) == 2 for p in params):
            raise TypeError(f"{label}: named parameters must be (name, array) pairs")
        return [p for _, p in params], [n for n, _ in params]

    def _check_names(self, names, count, g):
        if not isinstance(names, (list, tuple)) or len(names) != count:
            raise ValueError(
                f"param_groups[{g}] has {count} params but its 'param_names' is {names!r}"
            )
        taken = [n for i, group in enumerate(self.param_groups) if i != g
                 for n in group.get("param_names", ())]
        seen = set()
        for name in list(taken) + list(names):
            try:
                if name in seen:
                    raise ValueError(f"parameter name {name!r} is used more than once")
                seen.add(name)
            except TypeError:
                raise TypeError(f"parameter names must be hashable, but got {name!r}") from None

    def _check_params(self, layout):
        """Check every parameter of every group (``layout``: one list per group);
        return the backend name and the array support."""
        flat = [p for params in layout for p in params]
        for i, p in enumerate(flat):
            if not is_array(p):
                raise TypeError(
                    "optimizer can only optimize arrays (float NumPy arrays or CUDA device "
                    f"arrays), but one of the params is {_typename(p)} (params[{i}])"
                )
        labels = [f"params[{i}]" for i in range(len(flat))]
        if self._devices is not None and layout[-1] and device_support(
                layout[-1], labels[len(flat) - len(layout[-1]):]).on_device != self._devices.on_device:
            raise ValueError("all parameters of an optimizer must be on the host or all on a CUDA device")
        devices = device_support(flat, labels)
        backend = self.backend or backends.resolve(self._requested_backend, devices.on_device)
        check_backend_fits(backend, devices.on_device)
        contiguous = backend != backends.REFERENCE
        for label, p in zip(labels, flat):
            devices.check_param(label, p, contiguous)
        owner = {}
        for g, params in enumerate(layout):
            for p in params:
                if id(p) in owner:
                    if owner[id(p)] == g:
                        raise ValueError(
                            "optimizer contains a parameter group with duplicate parameters: "
                            "an array appears more than once (it is updated in place)"
                        )
                    raise ValueError("some parameters appear in more than one parameter group")
                owner[id(p)] = g
        devices.check_no_overlap(list(zip(labels, flat)))
        return backend, devices

    def _record(self, group):
        params = group["params"]
        names = group.get("param_names")
        return (group, params, params._edits if type(params) is _ParamList else None,
                tuple(params), list(names) if names is not None else None)

    def _layout_changed(self):
        groups = self.param_groups
        if type(groups) is not list or len(groups) != len(self._records):
            return True
        for group, (g0, plist, edits, params, names) in zip(groups, self._records):
            if group is not g0 or type(group) is not dict or group.get("params") is not plist:
                return True
            if edits is not None:
                if plist._edits != edits:
                    return True
            elif len(plist) != len(params) or not all(map(operator.is_, plist, params)):
                return True
            if names is not None and group.get("param_names") != names:
                return True
        return False

    def _sync_layout(self):
        """Honour edits of ``param_groups`` (a group's ``params`` replaced, appended to,
        popped; a group appended or removed): rebuild the index of parameters,
        move each kept parameter's state to its new index, drop the state of
        removed ones. Checked first: an invalid edit raises and changes nothing."""
        if not self._layout_changed():
            return
        groups = self.param_groups
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise TypeError("optimizer.param_groups must be a list of dicts")
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        layout, names = [], []
        for g, group in enumerate(groups):
            if "params" not in group:
                raise ValueError(f"param_groups[{g}] has no 'params' entry")
            params, pair_names = self._split_names(group["params"], f"param_groups[{g}]['params']")
            if pair_names is not None:
                raise TypeError(f"param_groups[{g}]['params'] holds (name, array) pairs; use "
                                "add_param_group to add named parameters")
            layout.append(params)
            names.append(group.get("param_names"))
        named = [n is not None for n in names]
        if any(named) and not all(named) or (self._dict_built and not all(named)):
            raise ValueError("all optimizer param groups should be with/without names")
        for g, (params, group_names) in enumerate(zip(layout, names)):
            if group_names is not None:
                if not isinstance(group_names, (list, tuple)) or len(group_names) != len(params):
                    raise ValueError(
                        f"param_groups[{g}] has {len(params)} params but {len(group_names)} "
                        "param_names; edit both together"
                    )
        all_names = [n for ns in names for n in ns] if all(named) else None
        if all_names is not None and len(set(all_names)) != len(all_names):
            raise ValueError("parameter names must be unique across param groups")
        backend, devices = self._check_params(layout)
        merged = [dict(self.defaults, **group) for group in groups]
        for group in merged:
            self._check_group(group)

        # all checks passed: install
        old_index = {id(p): i for i, p in enumerate(self._params)}
        old_segments = {}
        for (_, _, _, params, _), segment in zip(self._records, self._segments):
            if segment is not None:
                old_segments[tuple(map(id, params))] = segment
        new_params = [p for params in layout for p in params]
        entries = [dict.get(self.state, old_index[id(p)]) if id(p) in old_index else None
                   for p in new_params]
        kept = set()
        segments = []
        start = 0
        for params in layout:
            indices = range(start, start + len(params))
            start += len(params)
            segment = old_segments.get(tuple(map(id, params)))
            if segment is None and len(params) > 1:
                found = devices.find_segment(params)
                segment = found and _Segment(*found, params)
                if segment is not None and any(entries[i] for i in indices):
                    segment.uniform = False  # state from elsewhere: per-parameter from now on
            if segment is not None:
                kept.add(id(segment))
            segments.append(segment)
        for (_, _, _, params, _), segment in zip(self._records, self._segments):
            if segment is not None and segment.uniform and id(segment) not in kept:
                self._unshare([old_index[id(p)] for p in params], segment)
        for group, params, group_names in zip(groups, layout, names):
            for key, default in self.defaults.items():
                group.setdefault(key, default)
            if type(group["params"]) is not _ParamList and type(group["params"]) is not list:
                group["params"] = _ParamList(params)
            if group_names is not None:
                group["param_names"] = list(group_names)
        self.backend, self._devices = backend, devices
        self._params[:] = new_params
        self._layout.names = all_names
        dict.clear(self.state)
        dict.update(self.state, {i: e for i, e in enumerate(entries) if e is not None})
        self._segments = segments
        self._records = [self._record(group) for group in groups]
        self._layout.version[0] += 1

    def _group_indices(self):
        start = 0
        for group in self.param_groups:
            yield group, range(start, start + len(group["params"]))
            start += len(group["params"])

    def _index_of(self, array):
        for i, p in enumerate(self._params):
            if p is array:
                return i
        return None

    # -------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """torch's signature. Where the optimizer's parameters are ``FlatParams``
        views, the FlatParams owns their gradients: ``zero_grad`` restores any
        rebound entry of ``flat.grads`` to its view and zeroes the gradient
        buffer, so torch's ``zero_grad()``, accumulate with ``+=``, ``step()``
        idiom works (a buffer cannot hold a missing gradient: ``set_to_none``
        zeroes too; to skip a parameter, set its ``flat.grads`` entry to None).
        Plain arrays' gradients belong to the caller, who passes them to
        ``step``: for those there is nothing to clear."""
        V._flag("set_to_none", set_to_none)
        self._sync_layout()
        done = set()
        for owner in self._owners():
            if owner is not None and id(owner) not in done:
                done.add(id(owner))
                owner.zero_grad()

    def _owners(self):
        """Per group, the FlatParams whose buffer all its parameters view, or None."""
        out = []
        for group, segment in zip(self.param_groups, self._segments):
            if segment is not None:
                out.append(owner_of(segment.root))
                continue
            roots = {id(r): r for r in map(_root_of, group["params"])}
            out.append(owner_of(next(iter(roots.values()))) if len(roots) == 1 else None)
        return out

    def _owned_grads(self):
        """``flat.grads`` when every parameter is a view of one FlatParams, else None."""
        owners = self._owners()
        if not owners or any(o is None or o is not owners[0] for o in owners):
            return None
        return owners[0].grads

    def step(self, grads=None, closure=None):
        """Update every parameter in place from ``grads``; return the closure's loss.

        ``grads`` is aligned with the parameters in construction order, group by
        group: a list of arrays (``None`` skips that parameter, as a missing
        ``.grad`` does in torch), or a dict keyed by the parameters' names when
        they have names, or ``FlatParams.grads`` for one kernel call per group
        (with FlatParams parameters, ``step()`` reads ``flat.grads`` itself).

        ``closure`` (torch's argument; may be given first, ``step(closure)``)
        is called before anything else; it returns the loss, or ``(loss,
        grads)`` to supply the gradients it computed. Everything is checked
        before anything is written: a rejected call changes no parameter and no
        state.
        """
        if closure is None and callable(grads) and not isinstance(grads, (list, dict)) \
                and not is_array(grads):
            grads, closure = None, grads
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"closure must be callable, but got {type(closure).__name__}")
            loss = closure()
            if isinstance(loss, tuple) and len(loss) == 2:
                loss, returned = loss
                if grads is None:
                    grads = returned
        note_parallel(self.backend)
        with parallel_guard(self.backend):
            self._sync_layout()
            self._check_groups()
            V.check_safety_options(self.skip_nonfinite, self.max_grad_norm)
            if grads is None:
                grads = self._owned_grads()
                if grads is None:
                    raise TypeError(
                        "step() needs the gradients: step(grads), or a closure returning "
                        "(loss, grads); only FlatParams parameters let step() read them itself"
                    )
            if _plain_list.try_step(self, grads):  # a plain list: checked, one call per group
                return loss
            try:
                self._check_state()
                plan = self._plan(grads)
            finally:
                self._write_spans = None  # valid for this step's checks only
            grad_scale = self._check_gradients(plan)
            if grad_scale is not None:
                self._run(plan, grad_scale)
        return loss

    def _check_groups(self):
        """Validate every group's hyperparameters, as each step must. A group whose keys
        and values are the very objects validated last time, all immutable Python
        scalars (or tuples of them), is not validated again: the same immutable objects
        are the same values. Anything else (an array lr that a scheduler updates in
        place, a list of betas, a new value, a new key) is validated afresh and bumps
        ``_groups_epoch``, which the plain-list path keys its cached plan on."""
        checked = self.__dict__.get("_groups_checked")
        groups = self.param_groups
        if checked is not None and len(checked) == len(groups):
            for group, (old_group, keys, values) in zip(groups, checked):
                if old_group is not group or not _same_objects(keys, tuple(group)) \
                        or not _same_objects(values, tuple(group.values())):
                    break
            else:
                return
        fresh = []
        for group in groups:
            self._check_group(group)
            values = tuple(group.values())
            if _all_immutable(group):
                fresh.append((group, tuple(group), values))
            else:
                fresh.append((None, (), ()))  # never the same: validated on every step
        self._groups_checked = fresh

    def _run(self, plan, grad_scale):
        kernels = backends.load(self.backend)
        for (group, indices), segment, work in zip(self._group_indices(), self._segments, plan):
            if work is None:
                continue
            if isinstance(work, tuple) and segment.uniform:  # the whole group in one call
                self._step_segment(kernels, group, indices, segment, work[0], grad_scale)
            else:
                if isinstance(work, tuple):  # flat gradients, but per-parameter state
                    work = [(i, work[0][sl].reshape(self._params[i].shape))
                            for i, sl in zip(indices, segment.slices)]
                if segment is not None and segment.uniform:
                    self._unshare(indices, segment)
                if self._devices.on_device and len(work) > 1 and kernels.step_list(
                        self, group, work, grad_scale):
                    continue  # CUDA: the whole list in one pointer-table launch
                for index, grad in work:
                    self._step_one(kernels, group, index, grad, grad_scale)

    def _check_state(self):
        """Every state array a step may write, checked before any kernel runs: an
        array (not a list), of its parameter's shape and dtype, writeable,
        aligned, contiguous for the fast backends, overlapping nothing else
        that is written; ``step`` a finite count >= 0 (a writeable one when an
        array). Exact, not cached: a flat group whose state is still the
        optimizer's own buffers (its entries unedited, as their edit counter
        proves) is checked through those buffers in O(number of keys) Python,
        plus one compiled pass over its views' writeable flags."""
        contiguous = self.backend != backends.REFERENCE
        check = self._devices.check_state
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            if segment is not None:
                _check_segment_memory(indices, segment)
            if segment is not None and segment.uniform:
                if self._segment_intact(indices, segment):
                    self._check_segment_arrays(indices, segment, contiguous)
                    if self._uses_step and segment.state:
                        V.check_state_step(f"state[{indices[0]}]['step']",
                                           dict.__getitem__(self.state, indices[0])["step"])
                    continue
                self._unshare(indices, segment)
            keys = [k for k, _ in self._state_keys(group)]
            for i in indices:
                entry = dict.get(self.state, i)
                if not entry:
                    continue
                if self._uses_step and "step" in entry:  # no step yet: this is step 1
                    V.check_state_step(f"state[{i}]['step']", entry["step"])
                for key in keys:
                    if key in entry:
                        check(f"state[{i}][{key!r}]", entry[key], self._params[i], contiguous)
        span = self._devices.span
        self._write_spans = [(name, span(a)) for name, a in self._written_arrays()]
        V.check_no_overlap(self._write_spans,
                           "{} and {} overlap in memory; step() would update the same memory twice")

    def _check_segment_arrays(self, indices, segment, contiguous):
        """What the edit counter cannot see in an intact flat group, whose kernel writes
        the flat buffers, not the views that ``opt.state`` and the group hold: the
        buffers themselves (still of the group's size, writeable...), and every view's
        writeable flag (a user who makes ``opt.state[i][key]`` or a parameter read-only
        means it not to be written). On the host only: device arrays have no such flag."""
        if self._devices.on_device:
            return
        span = f"{indices[0]}:{indices[-1] + 1}"
        for root in (segment.root, segment.param):
            if not root.flags.writeable:
                raise ValueError(f"params[{span}] are views of a read-only buffer; "
                                 "parameters are updated in place")
        j = first_read_only(self._params[indices[0]:indices[-1] + 1])
        if j >= 0:
            raise ValueError(f"params[{indices[j]}] is read-only; parameters are updated in place")
        check = self._devices.check_state
        for key, flat in segment.state.items():
            views = segment.views[key]
            j = first_read_only(views)
            if j >= 0:
                name = f"state[{indices[j]}][{key!r}]"
                check(name, views[j], self._params[indices[j]], contiguous)
                raise ValueError(f"{name} is read-only; optimizer state is updated in place")
            check(f"the buffer behind state[{span}][{key!r}]", flat, segment.param, contiguous)

    def _check_reads_disjoint(self, reads):
        """No gradient may share memory with anything the step writes (the spans of the
        writes are the ones _check_state took in this same step)."""
        span = self._devices.span
        writes = self._write_spans
        if writes is None:
            writes = [(name, span(a)) for name, a in self._written_arrays()]
        V.check_reads_disjoint([(name, span(a)) for name, a in reads], writes)

    def _segment_intact(self, indices, segment):
        """True if ``opt.state`` still holds exactly the views of the group's flat state."""
        version = self._layout.version[0]
        if segment.checked == version:
            return True
        entries = [dict.get(self.state, i) for i in indices]
        if not segment.state and not (self._uses_step and entries[0]):
            intact = not any(entries)  # nothing started yet: any entry is an edit
        else:
            first = entries[0]
            step = dict.get(first, "step") if first is not None else None
            size = len(segment.state) + self._uses_step
            intact = all(
                e is not None and len(e) == size
                and (not self._uses_step or dict.get(e, "step") is step)
                and all(dict.get(e, key) is views[j] for key, views in segment.views.items())
                for j, e in enumerate(entries))
            intact = intact and (not self._uses_step or isinstance(step, np.ndarray))
        if intact:
            segment.checked = version
        return intact

    def _check_gradients(self, plan):
        """The skip_nonfinite / max_grad_norm pass: one read of every gradient, before any write.

        Returns the factor to scale the gradients by inside the kernels (1.0 when
        not clipping), or None when the step must be skipped.
        """
        self.last_step_skipped = False
        if not self.skip_nonfinite and self.max_grad_norm is None:
            return 1.0
        from ..clip import clip_coef, norm_and_finite

        real = self._devices.real_view
        arrays = [real(g) for work in plan if work is not None
                  for g in (work if isinstance(work, tuple) else (g for _, g in work))]
        if self._devices.on_device:  # CUDA: norm, factor and flag stay on the device
            return backends.load("cuda").check_gradients(self, arrays)
        # one reduction for every CPU backend (numba's when it loads, else NumPy's), so
        # that numpy, numba and c clip by the same factor and stay equal bit for bit
        norm, finite = norm_and_finite(arrays, 2.0, backend="auto")
        self.last_grad_norm = norm
        if self.skip_nonfinite and not finite:
            self.last_step_skipped = True
            self.skipped_steps += 1
            return None
        if self.max_grad_norm is None:
            return 1.0
        # torch.nn.utils.clip_grad_norm_'s factor, clamp(max_norm / (norm + 1e-6), max=1),
        # rounded as torch rounds it (in the norm's dtype)
        dtype = np.float64 if any(g.dtype == np.float64 for g in arrays) else np.float32
        return float(clip_coef(self.max_grad_norm, norm, dtype))

    def _plan(self, grads):
        """Check every gradient; per group, either (flat_grad,) or [(index, grad), ...]."""
        if isinstance(grads, (FlatGrads, FlatGradDict)):
            plan = self._plan_flat(grads)
            if plan is not None:
                return plan
        if isinstance(grads, dict):
            if self._names is None:
                raise TypeError("step() takes a list of gradients (the optimizer was built from a list)")
            missing = [k for k in self._names if k not in grads]
            extra = [k for k in grads if k not in self._names]
            if missing or extra:
                raise ValueError(
                    f"grads keys do not match the parameters: missing {missing}, unexpected {extra}"
                )
            grads = [grads[k] for k in self._names]
            labels = [f"grads[{k!r}]" for k in self._names]
        else:
            if self._dict_built:
                raise TypeError(
                    "this optimizer was built from a dict of named arrays: step() takes a dict "
                    f"of gradients with the same keys, but got {type(grads).__name__}"
                )
            if is_array(grads):
                if len(self._params) != 1:
                    raise TypeError("step() takes a list of gradients, one per parameter")
                grads = [grads]
            if isinstance(grads, (str, bytes)) or not hasattr(grads, "__iter__"):
                raise TypeError(f"step() takes a list of gradients, but got {type(grads).__name__}")
            grads = list(grads)
            labels = [f"grads[{i}]" for i in range(len(grads))]
        if len(grads) != len(self._params):
            raise ValueError(
                f"step() expected {len(self._params)} gradients (one per parameter, group by "
                f"group), got {len(grads)}"
            )
        check = self._devices.check_grad
        plan = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            work = []
            for i in indices:
                if grads[i] is not None:
                    work.append((i, check(labels[i], grads[i], self._params[i])))
            if segment is not None and len(work) == len(indices):
                flat = self._devices.find_segment([g for _, g in work])
                if flat is not None:  # checked against everything written, below
                    work = (flat[2],)
            plan.append(work or None)
        reads = []
        for work, (_, indices) in zip(plan, self._group_indices()):
            if isinstance(work, tuple):
                reads.append((f"grads[{indices[0]}:{indices[-1] + 1}]", work[0]))
            elif work is not None:
                reads.extend((labels[i], g) for i, g in work)
        self._check_reads_disjoint(reads)
        return plan

    def _written_arrays(self):
        """(name, array) of everything a step writes: parameters and state arrays.

        A uniform flat group contributes its flat buffers only, so the flat path
        stays O(number of groups). Only the state keys the kernels write count.
        """
        out = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            if segment is not None and segment.uniform:
                out.append((f"params[{indices[0]}:{indices[-1] + 1}]", segment.param))
                out.extend((f"state {key!r} of params[{indices[0]}:{indices[-1] + 1}]", a)
                           for key, a in segment.state.items())
                continue
            keys = [k for k, _ in self._state_keys(group)]
            for i in indices:
                out.append((f"params[{i}]", self._params[i]))
                entry = dict.get(self.state, i)
                if entry:
                    out.extend((f"state[{i}][{k!r}]", entry[k]) for k in keys if k in entry)
        return out

    def _plan_flat(self, grads):
        """The O(1) path for FlatParams.grads; None when the layout does not match
        (or an entry of ``flat.grads`` was rebound: then each entry is read)."""
        if grads.rebound or any(s is None or s.root is not grads.param_buffer for s in self._segments):
            return None
        if len(grads) != len(self._params) or self._dict_built != isinstance(grads, dict):
            return None
        buffer = grads.buffer
        if buffer.dtype != grads.param_buffer.dtype or buffer.shape != grads.param_buffer.shape:
            raise ValueError("grads.buffer does not match the parameter buffer's dtype and size")
        self._check_reads_disjoint([("grads.buffer", buffer)])
        if isinstance(buffer, np.ndarray) and not (
                buffer.flags.c_contiguous and buffer.flags.aligned
                and grads.param_buffer.flags.writeable):
            raise ValueError("FlatParams buffers must be contiguous, aligned and writeable")
        if isinstance(buffer, np.ndarray):  # the views written when a group steps per parameter
            j = first_read_only(self._params)
            if j >= 0:
                raise ValueError(f"params[{j}] is read-only; parameters are updated in place")
        return [(buffer[s.start:s.start + s.param.size],) for s in self._segments]

    # ------------------------------------------------------------------- state
    def _new_entry(self, values=()):
        return _Entry(self._layout.version, values)

    def _new_state(self, group, index):
        """The state of one parameter before its first step."""
        state = self._new_entry()
        if self._uses_step:
            dict.__setitem__(state, "step", self._devices.step_counter())
        return state

    def _ensure_state(self, group, indices, segment):
        """Allocate the state of a uniform flat group: one array per key, views per param."""
        first = dict.get(self.state, indices[0])
        if not first:
            shared = self._new_state(group, indices[0])  # one step counter for the group
            if not shared and not self._state_keys(group):
                return {}, False  # stateless (plain SGD): torch keeps no state entry either
            for i in indices:
                entry = dict.get(self.state, i)
                if entry is None:  # an empty entry read as opt.state[p] is filled in place
                    entry = self._new_entry()
                    dict.__setitem__(self.state, i, entry)
                dict.update(entry, shared)
            first = dict.__getitem__(self.state, indices[0])
        fresh = False
        for key, init in self._state_keys(group):
            if key not in first:
                flat = segment.state[key] = self._devices.alloc(segment.param, init)
                views = segment.views[key] = []
                for i, sl in zip(indices, segment.slices):
                    view = flat[sl].reshape(self._params[i].shape)
                    views.append(view)
                    dict.__setitem__(dict.__getitem__(self.state, i), key, view)
                fresh = True
        segment.checked = self._layout.version[0]
        return first, fresh

    def _unshare(self, indices, segment):
        """Give each parameter of a flat group its own step counter before a partial step."""
        segment.uniform = False
        for i in indices:
            state = dict.get(self.state, i)
            if state is not None and isinstance(dict.get(state, "step"), np.ndarray):
                dict.__setitem__(state, "step", state["step"].copy())

    def _step_segment(self, kernels, group, indices, segment, grad, grad_scale):
        first, fresh = self._ensure_state(group, indices, segment)
        if self._uses_step:
            step = dict.__getitem__(first, "step")
            step += 1  # in place: shared by every parameter of the group
        keys = list(segment.state)
        param, grad, *arrays = self._devices.kernel_views(
            [segment.param, grad] + [segment.state[k] for k in keys])
        self._update(kernels, group, param, grad, dict(zip(keys, arrays)), first, fresh, grad_scale)

    def _step_one(self, kernels, group, index, grad, grad_scale):
        state = dict.get(self.state, index)
        if state is None:
            state = self._new_state(group, index)
            if state or self._state_keys(group):  # plain SGD keeps no state, as in torch
                dict.__setitem__(self.state, index, state)
        elif self._uses_step and "step" not in state:  # an empty entry read as opt.state[p]
            dict.__setitem__(state, "step", self._devices.step_counter())
        param = self._params[index]
        fresh = False
        for key, zero in self._state_keys(group):
            if key not in state:
                dict.__setitem__(state, key, self._devices.alloc(param, zero))
                fresh = True
        if self._uses_step:
            step = state["step"]
            if isinstance(step, numbers.Number):
                dict.__setitem__(state, "step", step + 1)
            else:  # a 0-d array, or a CUDA DeviceStep: counted in place
                step += 1
        keys = [k for k, _ in self._state_keys(group)]
        param, grad, *arrays = self._devices.kernel_views([param, grad] + [state[k] for k in keys])
        self._update(kernels, group, param, grad, dict(zip(keys, arrays)), state, fresh, grad_scale)

    # -------------------------------------------------------------- state_dict
    def state_dict(self):
        """A snapshot in torch's layout: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Arrays are copies on the host (NumPy), so the snapshot does not change
        as training goes on. ``step`` is a 0-d float32 array, as torch's tensor.
        """
        self._sync_layout()
        state = {
            i: {k: self._devices.to_host(v) for k, v in s.items()}
            for i, s in sorted(dict.items(self.state))
        }
        groups = []
        for group, indices in self._group_indices():
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(indices)
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    @classmethod
    def _class_defaults(cls):
        """The hyperparameters' defaults from the class signature (torch's load fills
        a saved group's missing keys with these, not with the constructor's values)."""
        signature = inspect.signature(cls.__init__)
        return {name: p.default for name, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty}

    def load_state_dict(self, state_dict):
        """Load a snapshot from ``state_dict()`` (or torch's, with tensors on the CPU).

        As torch: each group takes the saved group's hyperparameters, and a key the
        saved group lacks (older checkpoints lack ``maximize``, say) takes the
        class default. Everything is checked first (group count and sizes, state
        keys, shapes); on any error nothing is changed.
        """
        self._sync_layout()
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise TypeError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or not all(
                isinstance(g, dict) and "params" in g for g in saved_groups):
            raise TypeError("state_dict['param_groups'] must be a list of dicts with 'params'")
        if not isinstance(state_dict["state"], dict) or not all(
                isinstance(entry, dict) for entry in state_dict["state"].values()):
            raise TypeError("state_dict['state'] must be a dict of {index: dict of arrays}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        index_map = {}
        for (group, indices), saved in zip(self._group_indices(), saved_groups):
            if len(saved["params"]) != len(indices):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size "
                    "of optimizer's group"
                )
            index_map.update(zip(saved["params"], indices))
        class_defaults = self._class_defaults()
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            merged = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            for key, default in self.defaults.items():
                if key not in merged:
                    merged[key] = copy.deepcopy(class_defaults.get(key, default))
            merged["params"] = group["params"]
            if "param_names" in group:
                merged["param_names"] = group["param_names"]
            else:
                merged.pop("param_names", None)
            self._check_group(merged)
            new_groups.append(merged)
        allowed = {key for g in new_groups for key, _ in self._state_keys(dict(g, amsgrad=True))}
        if self._uses_step:
            allowed.add("step")
        new_state = {}
        for saved_index, values in state_dict["state"].items():
            if not values:
                continue  # an empty entry: that parameter has not started yet (as in torch)
            if saved_index not in index_map:
                raise ValueError(f"state_dict has state for unknown parameter index {saved_index!r}")
            index = index_map[saved_index]
            param = self._params[index]
            entry = {}
            for key, value in values.items():
                if key not in allowed:
                    raise ValueError(f"state of parameter {saved_index} has an unexpected entry {key!r}")
                host = np.asarray(value)
                if key == "step":
                    if host.size != 1 or not np.isfinite(host).all() or float(host) < 0:
                        raise ValueError(f"state of parameter {saved_index} has an invalid step {value!r}")
                    entry[key] = np.asarray(float(host), dtype=np.float32)
                    continue
                if host.shape != tuple(param.shape):
                    raise ValueError(
                        f"state[{saved_index}][{key!r}] has shape {host.shape} but the parameter "
                        f"has shape {tuple(param.shape)}"
                    )
                if not (np.issubdtype(host.dtype, np.floating)
                        or np.issubdtype(host.dtype, np.complexfloating)):
                    raise TypeError(f"state[{saved_index}][{key!r}] has non-float dtype {host.dtype}")
                if host.dtype.kind == "c" and np.dtype(param.dtype).kind != "c":
                    raise TypeError(f"state[{saved_index}][{key!r}] is complex but its parameter is not")
                entry[key] = host
            new_state[index] = entry
        group_of = {}
        for merged, (_, indices) in zip(new_groups, self._group_indices()):
            group_of.update(dict.fromkeys(indices, merged))
        for index, entry in new_state.items():
            if self._uses_step and entry and "step" not in entry:
                raise ValueError(f"state of parameter {index} has no 'step'")
            for key, init in self._state_keys(group_of[index]):
                if entry and key not in entry and init == "zeros":
                    raise ValueError(f"state of parameter {index} is missing {key!r}")

        # all checks passed: install
        for group, merged in zip(self.param_groups, new_groups):
            group.clear()
            group.update(merged)
        dict.clear(self.state)
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            entries = [new_state.get(i) for i in indices]
            if segment is not None:
                segment.state, segment.views = {}, {}
                segment.uniform = self._install_uniform(indices, segment, entries)
                if segment.uniform:
                    continue
            for i, entry in zip(indices, entries):
                if entry is not None:
                    dict.__setitem__(self.state, i, self._install(self._params[i], entry))
        self._layout.version[0] += 1

    def _install(self, param, entry):
        """Own copies of a loaded state entry, on the parameter's device and dtype."""
        out = self._new_entry()
        for key, value in entry.items():
            if key == "step":
                dict.__setitem__(out, key, self._devices.step_counter(float(value)))
            else:
                array = self._devices.alloc(param, "empty")
                self._devices.copy_into(array, value)
                dict.__setitem__(out, key, array)
        return out

    def _install_uniform(self, indices, segment, entries):
        """Install a flat group's state as flat arrays if every parameter has the same keys and step."""
        if all(e is None for e in entries):
            return True
        if any(e is None for e in entries) or len({frozenset(e) for e in entries}) != 1:
            return False
        if self._uses_step and len({float(e["step"]) for e in entries}) != 1:
            return False
        step = self._devices.step_counter(float(entries[0]["step"])) if self._uses_step else None
        installed = [self._new_entry() for _ in entries]
        for key in entries[0]:
            if key == "step":
                for new in installed:
                    dict.__setitem__(new, key, step)
                continue
            flat = segment.state[key] = self._devices.alloc(segment.param, "empty")
            views = segment.views[key] = []
            for i, sl, e, new in zip(indices, segment.slices, entries, installed):
                view = flat[sl].reshape(self._params[i].shape)
                views.append(view)
                self._devices.copy_into(view, e[key])
                dict.__setitem__(new, key, view)
        for i, new in zip(indices, installed):
            dict.__setitem__(self.state, i, new)
        return True

    # ------------------------------------------------------------------- copies
    def __deepcopy__(self, memo):
        """A deep copy in which views of one buffer stay views of one (copied) buffer,
        as torch's deepcopy keeps views of one storage aliased: a copy of an
        optimizer over FlatParams views steps its own copied buffers."""
        for segment in self._segments:
            if segment is not None:
                copy_keeping_views(segment.param, memo)
                for flat in segment.state.values():
                    copy_keeping_views(flat, memo)
        for p in self._params:
            copy_keeping_views(p, memo)
        for entry in dict.values(self.state):
            for value in entry.values():
                copy_keeping_views(value, memo)
        memo.setdefault(id(self._devices), self._devices)  # stateless, maybe module-level
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, copy.deepcopy(value, memo))
        new._layout.sync = weakref.WeakMethod(new._sync_layout)
        return new

    def __setstate__(self, state):  # pickle
        self.__dict__.update(state)
        self._layout.sync = weakref.WeakMethod(self._sync_layout)
        # pickle does not keep views of one buffer aliased: a flat group whose parameters
        # came back as separate arrays steps them one by one, each with its own state
        for k, ((_, indices), segment) in enumerate(zip(self._group_indices(), self._segments)):
            if segment is None:
                continue
            try:
                _check_segment_memory(indices, segment)
                if all(np.shares_memory(self._params[i], segment.param) for i in indices):
                    continue
            except ValueError:
                pass
            self._unshare(indices, segment)
            self._segments[k] = None

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines)


_IMMUTABLE = frozenset((float, int, bool, str, type(None)))


def _same_objects(a, b):
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _all_immutable(group):
    """Whether every value of the group but its parameters (and their names) is an
    immutable Python scalar or a tuple of them."""
    for key, value in group.items():
        if key == "params" or key == "param_names":
            continue
        if type(value) is tuple:
            if not all(type(item) in _IMMUTABLE for item in value):
                return False
        elif type(value) not in _IMMUTABLE:
            return False
    return True


def _check_impl_flags(group, names):
    """torch's implementation switches: the values that change nothing pass, others are refused."""
    for name in names:
        allowed = _NOOP_FLAGS[name]
        value = group.get(name, allowed[0])
        if value is allowed[0] or value is False and False in allowed:  # the common case
            continue
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool or None, but got {type(value).__name__}")
        if value is None and None in allowed or value is not None and any(
                a is not None and bool(value) == a for a in allowed):
            continue
        if value is None:
            raise TypeError(f"{name} must be a bool, but got None")
        why = {"fused": "fastoptim's kernels are fused already, and fused=True would promise "
                        "the rounding of torch's fused kernels",
               "capturable": "there is no CUDA-graph capture (the step count lives on the host)",
               "differentiable": "there is no autograd through the step"}[name]
        raise ValueError(f"{name}={value!r} is not supported: {why}")


_lr_value = V.hyper_value


_COMMON_ARGS = """\
        backend (str): "auto" (fastest available), "numpy", "numba", "c" or "cuda".
        skip_nonfinite (bool): skip the whole step (no parameter, state or count
            changes) when any gradient holds NaN/Inf; see ``last_step_skipped``.
            Default False: non-finite values propagate, as in torch.
        max_grad_norm (float or None): clip the total 2-norm of all gradients to
            this value, as ``clip_grad_norm_`` would, folded into the update
            (the gradient arrays are not modified).
        foreach, fused, differentiable (and Adam's capturable): torch's
            implementation switches, accepted where they change nothing
            (foreach None/False/True, fused None/False, False for the others)
            and refused with a ValueError otherwise.
"""


class SGD(Optimizer):
    r"""Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    .. math::
        g_t &= \pm\nabla_\theta f_t(\theta_{t-1})  \quad(- \text{ if maximize}) \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}            \quad(\text{weight\_decay } \lambda) \\
        b_t &= g_t \text{ if } t = 1 \text{ else } \mu\, b_{t-1} + (1-\tau)\, g_t \quad(\mu \ne 0)\\
        g_t &\leftarrow g_t + \mu\, b_t \text{ if nesterov else } b_t \\
        \theta_t &= \theta_{t-1} - \gamma\, g_t

    Args:
        params: list of float32/float64 NumPy arrays (updated in place), list of
            param-group dicts, or dict of name -> array.
        lr (float): learning rate :math:`\gamma` (default 1e-3).
        momentum (float): momentum factor :math:`\mu` (default 0).
        dampening (float): dampening :math:`\tau` for momentum (default 0).
        weight_decay (float): L2 penalty :math:`\lambda` (default 0).
        nesterov (bool): Nesterov momentum (needs momentum > 0, dampening = 0).
        maximize (bool): maximize the objective instead of minimizing.
{common_args}
    State per parameter: ``momentum_buffer`` (only when momentum != 0).
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, backend="auto", skip_nonfinite=False, max_grad_norm=None):
        V.check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, maximize)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        _check_impl_flags(defaults, self._FLAGS)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    _FLAGS = ("foreach", "differentiable", "fused")

    def _check_group(self, g):
        V.check_sgd_hyperparameters(g["lr"], g["momentum"], g["dampening"], g["weight_decay"],
                                    g["nesterov"], g["maximize"])
        _check_impl_flags(g, self._FLAGS)

    def _state_keys(self, g):
        # the buffer is written, not read, on its first step: no need to zero it
        return [("momentum_buffer", "empty")] if g["momentum"] != 0 else []

    def _update(self, kernels, g, param, grad, state, entry, fresh, grad_scale):
        kernels.sgd(param, grad, state.get("momentum_buffer"), lr=_lr_value(g["lr"]),
                    momentum=g["momentum"], dampening=g["dampening"],
                    weight_decay=g["weight_decay"], nesterov=g["nesterov"],
                    maximize=g["maximize"], first_step=fresh, grad_scale=grad_scale)


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam`` (L2 weight decay, or decoupled like AdamW).

    .. math::
        g_t &= \pm\nabla_\theta f_t(\theta_{t-1}) \quad(- \text{ if maximize})\\
        &\text{if } \lambda \ne 0: \text{ decoupled: } \theta_{t-1} \leftarrow \theta_{t-1}(1-\gamma\lambda)
           \text{; else L2: } g_t \leftarrow g_t + \lambda\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t   \quad(\text{computed as lerp}(m_{t-1}, g_t, 1-\beta_1))\\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    Args:
        params: list of float32/float64 NumPy arrays (updated in place), list of
            param-group dicts, or dict of name -> array.
        lr (float): learning rate :math:`\gamma` (default 1e-3).
        betas (tuple): :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps (float): added to the denominator after the bias correction (1e-8).
        weight_decay (float): :math:`\lambda` (default 0).
        amsgrad (bool): use the running maximum of :math:`v_t` (AMSGrad).
        maximize (bool): maximize the objective instead of minimizing.
        decoupled_weight_decay (bool): AdamW's decay instead of L2 (default False).
{common_args}
    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with amsgrad,
    ``max_exp_avg_sq``.
    """

    _uses_step = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False, backend="auto",
                 skip_nonfinite=False, max_grad_norm=None):
        V.check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                                     decoupled_weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        _check_impl_flags(defaults, self._FLAGS)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    _FLAGS = ("foreach", "capturable", "differentiable", "fused")

    def _check_group(self, g):
        V.check_adam_hyperparameters(g["lr"], g["betas"], g["eps"], g["weight_decay"],
                                     g["amsgrad"], g["maximize"], g["decoupled_weight_decay"])
        _check_impl_flags(g, self._FLAGS)

    def _state_keys(self, g):
        keys = [("exp_avg", "zeros"), ("exp_avg_sq", "zeros")]
        if g["amsgrad"]:
            keys.append(("max_exp_avg_sq", "zeros"))
        return keys

    def _update(self, kernels, g, param, grad, state, entry, fresh, grad_scale):
        beta1, beta2 = g["betas"]
        kernels.adam(param, grad, state["exp_avg"], state["exp_avg_sq"],
                     state.get("max_exp_avg_sq") if g["amsgrad"] else None,
                     # CUDA: the DeviceStep itself (its true value may be on the device)
                     step=entry["step"] if self._devices.on_device else V.step_value(entry["step"]),
                     lr=_lr_value(g["lr"]), beta1=_lr_value(beta1), beta2=_lr_value(beta2),
                     eps=g["eps"], weight_decay=g["weight_decay"], amsgrad=g["amsgrad"],
                     maximize=g["maximize"], decoupled_weight_decay=g["decoupled_weight_decay"],
                     grad_scale=grad_scale)


SGD.__doc__ = SGD.__doc__.replace("{common_args}", _COMMON_ARGS)
Adam.__doc__ = Adam.__doc__.replace("{common_args}", _COMMON_ARGS)


class AdamW(Adam):
    r"""AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.

    The weights are decayed directly, :math:`\theta \leftarrow \theta(1-\gamma\lambda)`,
    before the moment updates, instead of adding :math:`\lambda\theta` to the
    gradient (which the adaptive step size would rescale). Default
    ``weight_decay=1e-2``. Same arguments and state as :class:`Adam`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, backend="auto", skip_nonfinite=False,
                 max_grad_norm=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, backend=backend,
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm)
