"""``state_dict`` and ``load_state_dict`` in torch's layout."""
from __future__ import annotations

import copy
import inspect

import numpy as np

from ._state import carve


class _LoadPlan:
    """What :meth:`_LoadMixin._check_load` found valid: the merged param groups and the
    host state entries by index, for the optimizer and layout it was checked against."""

    __slots__ = ("owner", "version", "groups", "new_groups", "new_state")

    def __init__(self, opt, new_groups, new_state):
        self.owner, self.version = opt, opt._layout.version[0]
        self.groups = len(opt.param_groups)
        self.new_groups, self.new_state = new_groups, new_state


class _LoadMixin:
    """Snapshots of the optimizer and their loading."""

    def state_dict(self):
        """A snapshot in torch's layout: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Arrays are copies on the host (NumPy), so the snapshot does not change
        as training goes on. ``step`` is a 0-d float32 array, as torch's tensor.
        """
        self._sync_layout()
        state = {
            i: {k: self._devices.to_host(v) for k, v in s.items()}
            for i, s in sorted(self._state._items())
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
        self._apply_load(self._check_load(state_dict))

    def _check_load(self, state_dict):
        """The check phase of :meth:`load_state_dict`: validate everything and return what
        to install (a :class:`_LoadPlan`); changes nothing. ``fastoptim.checkpoint``
        checks the optimizer and its schedulers this way before it changes any of them.
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
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}, this optimizer has {len(self.param_groups)})")
        index_map = {}
        for g, ((group, indices), saved) in enumerate(zip(self._group_indices(), saved_groups)):
            if len(saved["params"]) != len(indices):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group (group {g}: {len(saved['params'])} parameters saved, "
                    f"this optimizer's has {len(indices)})"
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

        return _LoadPlan(self, new_groups, new_state)

    def _apply_load(self, plan):
        """The apply phase of :meth:`load_state_dict`: install a plan of :meth:`_check_load`.
        Nothing here can fail on checked input (it copies the arrays into new ones)."""
        if plan.owner is not self or plan.version != self._layout.version[0] \
                or plan.groups != len(self.param_groups):
            raise ValueError("this load plan was made for another optimizer or layout: "
                             "check and apply with nothing in between")
        new_groups, new_state = plan.new_groups, plan.new_state
        for group, merged in zip(self.param_groups, new_groups):
            group.clear()
            group.update(merged)
        self._state._replace({})
        installs = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            entries = [new_state.get(i) for i in indices]
            if segment is not None:
                segment.state, segment.views = {}, {}
                segment.uniform = self._install_uniform(indices, segment, entries)
                if segment.uniform:
                    continue
            installs.extend((i, entry) for i, entry in zip(indices, entries) if entry is not None)
        # on the host, the loaded arrays are carved out of a few buffers, as a first step's are
        keys = sorted({key for _, entry in installs for key in entry} - {"step"})
        carved = {} if self._devices.on_device else carve(
            [(i, key, "empty", self._params[i]) for key in keys for i, entry in installs
             if key in entry])
        for i, entry in installs:
            self._state._put(i, self._install(i, entry, carved))
        self._layout.version[0] += 1

    def _install(self, index, entry, carved):
        """Own copies of parameter ``index``'s loaded state entry, on its device and dtype
        (in the arrays ``carved`` holds for it, where it holds them)."""
        param = self._params[index]
        out = self._new_entry()
        for key, value in entry.items():
            if key == "step":
                out._put(key, self._devices.step_counter(float(value)))
            else:
                array = carved.pop((index, key), None)
                if array is None:
                    array = self._devices.alloc(param, "empty")
                self._devices.copy_into(array, value)
                out._put(key, array)
        return out

