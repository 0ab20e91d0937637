"""Flat param groups: a group whose parameters tile one contiguous buffer.

A param group of two or more parameters that are consecutive views of one
buffer (``FlatParams``, found by ``find_segment`` when the group is added or
its ``params`` edited) has a :class:`_Segment`: ``root`` the buffer,
``param`` the group's range of it as one flat array, ``slices`` each
parameter's range inside ``param``. A group without one steps per parameter.

The invariant of ``uniform``
----------------------------
While ``segment.uniform`` is True, the group's state is the segment's:

* for every key in ``segment.state`` there is one flat array of ``param``'s
  size and dtype, and ``segment.views[key][j]`` is the view of its
  ``slices[j]``, shaped like parameter j;
* ``opt.state[i][key]`` **is** that view (the same object) for every parameter
  i of the group and every such key, and no entry holds another state key;
* with Adam, every entry's ``"step"`` is **one** counter object (a writeable
  0-d array on the host, a ``DeviceStep`` on CUDA), counted once per step;
* either no parameter of the group has stepped, or all of them have, the same
  number of times.

Then one kernel call over ``param``, the flat gradient and ``segment.state``
updates the whole group exactly as one call per parameter would. ``checked``
is the layout's edit count at which ``opt.state`` was last seen to hold the
views (``_segment_intact``): any edit (of ``opt.state``, an entry, or
``param_groups``) bumps the count, so the next step verifies again.

``uniform`` becomes False (``_unshare``) and the group then steps per
parameter, through its entries, like a plain list:

* on a step where some parameter of the group has no gradient, or the
  gradients are not views of one buffer in the same layout (``_run``);
* when ``opt.state`` no longer holds exactly the views (a user replaced,
  added or removed an entry or an array: ``_check_state``);
* when the group's ``params`` are edited so that the segment is dropped, or
  a new segment is found over parameters that already have state
  (``_sync_layout``);
* when the optimizer is unpickled and its views came back as separate arrays;
* ``load_state_dict`` rebuilds the segment's state: uniform again when every
  parameter of the group has the same keys and step count, else not.

Only ``load_state_dict`` makes a segment uniform again.

What ``_unshare`` guarantees: ``uniform`` is False, and every parameter's entry
holds a step counter of its own (a copy of the shared one), so that stepping
one parameter counts only that parameter. The state arrays stay where they are
(views of the flat arrays, which do not overlap), so no value changes.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..backends._multi_table import _address, first_read_only


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


def _new_segment(devices, params):
    """The segment of a new group's ``params`` if they tile one buffer, else None."""
    found = devices.find_segment(params) if len(params) > 1 else None
    return found and _Segment(*found, params)


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



class _SegmentsMixin:
    """The optimizer's side of flat groups: allocate, check, step and give up their flat state."""

    def _carry_segments(self, layout, entries, old_index, devices):
        """The segments of an edited layout (``layout``: the new groups' parameter lists;
        ``entries``: their state entries, by new index; ``old_index``: id of a kept
        parameter -> its old index). A group whose parameters are the same as before
        keeps its segment; a new group that tiles a buffer gets a new one, uniform only
        if none of its parameters has state yet; a dropped uniform segment is unshared,
        so that the kept parameters keep their own step counters."""
        old_segments = {}
        for (_, _, _, params, _), segment in zip(self._records, self._segments):
            if segment is not None:
                old_segments[tuple(map(id, params))] = segment
        kept = set()
        segments = []
        start = 0
        for params in layout:
            indices = range(start, start + len(params))
            start += len(params)
            segment = old_segments.get(tuple(map(id, params)))
            if segment is None:
                segment = _new_segment(devices, params)
                if segment is not None and any(entries[i] for i in indices):
                    segment.uniform = False  # state from elsewhere: per-parameter from now on
            if segment is not None:
                kept.add(id(segment))
            segments.append(segment)
        for (_, _, _, params, _), segment in zip(self._records, self._segments):
            if segment is not None and segment.uniform and id(segment) not in kept:
                self._unshare([old_index[id(p)] for p in params], segment)
        return segments

    def _drop_unaliased_segments(self):
        """After unpickling: pickle does not keep views of one buffer aliased, so a flat
        group whose parameters came back as separate arrays steps them one by one, each
        with its own state (and step counter)."""
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

    def _step_segment(self, kernels, group, indices, segment, grad, grad_scale):
        """A uniform group's step: one kernel call over the flat buffers."""
        first, fresh = self._ensure_state(group, indices, segment)
        if self._uses_step:
            step = first["step"]
            step += 1  # in place: shared by every parameter of the group
        keys = list(segment.state)
        param, grad, *arrays = self._devices.kernel_views(
            [segment.param, grad] + [segment.state[k] for k in keys])
        self._update(group, F.StepArgs(kernels, param, grad, dict(zip(keys, arrays)),
                                       self._step_count(first), fresh, grad_scale))

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

    def _segment_intact(self, indices, segment):
        """True if ``opt.state`` still holds exactly the views of the group's flat state."""
        version = self._layout.version[0]
        if segment.checked == version:
            return True
        entries = [self._state._get(i) for i in indices]
        if not segment.state and not (self._uses_step and entries[0]):
            intact = not any(entries)  # nothing started yet: any entry is an edit
        else:
            first = entries[0]
            step = first._get("step") if first is not None else None
            size = len(segment.state) + self._uses_step
            intact = all(
                e is not None and len(e) == size
                and (not self._uses_step or e._get("step") is step)
                and all(e._get(key) is views[j] for key, views in segment.views.items())
                for j, e in enumerate(entries))
            intact = intact and (not self._uses_step or isinstance(step, np.ndarray))
        if intact:
            segment.checked = version
        return intact

    def _ensure_state(self, group, indices, segment):
        """Allocate the state of a uniform flat group: one array per key, views per param."""
        first = self._state._get(indices[0])
        if not first:
            shared = self._new_state(group, indices[0])  # one step counter for the group
            if not shared and not self._state_keys(group):
                return {}, False  # stateless (plain SGD): torch keeps no state entry either
            for i in indices:
                entry = self._state._get(i)
                if entry is None:  # an empty entry read as opt.state[p] is filled in place
                    entry = self._new_entry()
                    self._state._put(i, entry)
                entry._merge(shared)
            first = self._state._at(indices[0])
        fresh = False
        for key, init in self._state_keys(group):
            if key not in first:
                flat = segment.state[key] = self._devices.alloc(segment.param, init)
                views = segment.views[key] = []
                for i, sl in zip(indices, segment.slices):
                    view = flat[sl].reshape(self._params[i].shape)
                    views.append(view)
                    self._state._at(i)._put(key, view)
                fresh = True
        segment.checked = self._layout.version[0]
        return first, fresh

    def _unshare(self, indices, segment):
        """Give each parameter of a flat group its own step counter before a partial step."""
        segment.uniform = False
        for i in indices:
            state = self._state._get(i)
            step = state._get("step") if state is not None else None
            # a 0-d array on the host, a DeviceStep on CUDA: each gets its own copy
            if isinstance(step, np.ndarray) or getattr(type(step), "is_device_step", False):
                state._put("step", step.copy())

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
                    new._put(key, step)
                continue
            flat = segment.state[key] = self._devices.alloc(segment.param, "empty")
            views = segment.views[key] = []
            for i, sl, e, new in zip(indices, segment.slices, entries, installed):
                view = flat[sl].reshape(self._params[i].shape)
                views.append(view)
                self._devices.copy_into(view, e[key])
                new._put(key, view)
        for i, new in zip(indices, installed):
            self._state._put(i, new)
        return True

