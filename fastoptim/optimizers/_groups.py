"""Param groups: adding, editing (``param_groups`` edited in place) and validating them."""
from __future__ import annotations

import operator

import numpy as np

from .. import backends
from ..arrays import check_backend_fits, device_support, is_array
from ._segments import _new_segment

_NOOP_FLAGS = {  # torch's implementation switches: the values that change nothing here
    "foreach": (None, False, True),  # one implementation, the same math for any list
    "fused": (None, False),
    "capturable": (False,),
    "differentiable": (False,),
}


def _typename(x):
    t = type(x)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"



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



class _GroupsMixin:
    """``add_param_group``, the honouring of ``param_groups`` edits, hyperparameter checks."""

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
        self._segments.append(_new_segment(devices, params))
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
        new_params = [p for params in layout for p in params]
        entries = [self._state._get(old_index[id(p)]) if id(p) in old_index else None
                   for p in new_params]
        segments = self._carry_segments(layout, entries, old_index, devices)
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
        self._state._replace({i: e for i, e in enumerate(entries) if e is not None})
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

    def _check_groups(self):
        """Validate every group's hyperparameters, as each step must. A group whose keys
        and values are the very objects validated last time, all immutable Python
        scalars (or tuples of them), is not validated again: the same immutable objects
        are the same values. Anything else (an array lr that a scheduler updates in
        place, a list of betas, a new value, a new key) is validated afresh."""
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

