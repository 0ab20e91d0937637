"""The optimizer classes: validate, keep hyperparameters and state, hold no math.

The math lives in the backends (``fastoptim/backends``); ``Optimizer.step``
checks every gradient and every state array it will write first, plans the
work and keeps the state, then hands each parameter (or each flat parameter
group, see ``fastoptim.flat``, or a table of a plain list's tensors) to the
functional layer (``fastoptim.functional``), the only caller of the kernels.

Users edit a live optimizer the way they edit torch's: ``opt.state[i][key] =
array``, ``opt.param_groups[g]["params"].append(w)``, ``flat.grads[k] = None``.
Every such edit is honoured at the next ``step`` (or refused there with a
``TypeError``/``ValueError`` that changes nothing). The cheap detection that
keeps the flat path O(number of groups) in Python is exact: the state dicts,
the parameter lists and ``FlatParams.grads`` count their own edits, and the one
change no counter sees, a view's ``flags.writeable`` cleared, is read for every
view of a flat group on every step in compiled code (``first_read_only``).
After one full step over ``FlatParams.grads``, later steps run through a
recorded plan that proves in a few checks that none of this has changed
(``_flat_plan.py``), so a FlatParams step costs about what one tensor's does.
"""
from __future__ import annotations

import copy
import numbers
import weakref

import numpy as np

from .. import _plain_list, backends
from .. import _validation as V
from .. import functional as F
from .._parallel import note_parallel, parallel_guard
from ..arrays import copy_keeping_views, is_array, owner_of
from ..arrays import root_of as _host_root
from . import _flat_plan
from ._checks import _StepChecksMixin
from ._groups import _GroupsMixin, _typename
from ._load import _LoadMixin
from ._segments import _SegmentsMixin
from ._state import _Entry, _Layout, _State, carve


def _root_of(a):
    return _host_root(a) if isinstance(a, np.ndarray) else a


class Optimizer(_GroupsMixin, _StepChecksMixin, _SegmentsMixin, _LoadMixin):
    """Base class: param groups, state, ``step``, ``state_dict`` in torch's layout.

    Subclasses define ``_check_group`` (hyperparameter validation), ``_state_keys``
    (the state arrays a group needs), ``_update(group, args)`` (one kernel call
    through ``fastoptim.functional``, ``args`` a ``functional.StepArgs``) and,
    for one CUDA launch per list, ``_update_list(group, args)``.
    """

    _uses_step = False  # Adam counts steps; SGD does not
    _kernel = None  # the backend function _update reaches ("sgd", "adam", ...): the table path's

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

    def _state_key_names(self):
        """Each group's state keys, names only, in group order: what the fast paths'
        cached plans (``_plain_list``, ``_flat_plan``) are keyed on."""
        return tuple(tuple(key for key, _ in self._state_keys(group))
                     for group in self.param_groups)

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
            if _flat_plan.try_step(self, grads):  # FlatParams, as last step: proved unchanged
                return loss
            try:
                self._check_state()
                plan = self._plan(grads)
            finally:
                self._write_spans = None  # valid for this step's checks only
            grad_scale = self._check_gradients(plan)
            if grad_scale is not None:
                self._run(plan, grad_scale)
            _flat_plan.record(self, grads, plan)
        return loss

    def _run(self, plan, grad_scale):
        kernels = backends.load(self.backend)
        slabs = self._state_slabs(plan)
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
                if self._devices.on_device and len(work) > 1 and self._step_list(
                        kernels, group, work, grad_scale):
                    continue  # CUDA: the whole list in one pointer-table launch
                for index, grad in work:
                    self._step_one(kernels, group, index, grad, grad_scale, slabs)

    def _state_slabs(self, plan):
        """The host state arrays this step allocates, carved out of a few buffers
        (:func:`_state.carve`) instead of one allocation each: ``{(index, key): view}``
        for ``_advance``, or None on a device. A plain list's state then lies key by key
        in parameter order, each array on a cache line: the table kernels stream it as
        they stream a FlatParams group's state, where thousands of small allocations
        scatter it over as many pages (about 15% of a 1000 x 1K Adam step here)."""
        if self._devices.on_device:
            return None
        wanted, counters = [], []
        for (group, indices), segment, work in zip(self._group_indices(), self._segments, plan):
            keys = self._state_keys(group)
            if work is None or not keys:
                continue
            if isinstance(work, tuple):
                if segment.uniform:
                    continue  # the segment allocates its flat state itself
                stepped = indices
            else:
                stepped = [index for index, _ in work]
            entries = [self._state._get(index) for index in stepped]
            for key, init in keys:  # key-major: each key's arrays follow one another
                for index, entry in zip(stepped, entries):
                    if entry is None or key not in entry:
                        wanted.append((index, key, init, self._params[index]))
            if self._uses_step:
                counters += [index for index, entry in zip(stepped, entries)
                             if entry is None or "step" not in entry]
        slabs = carve(wanted)
        if len(counters) > 1:
            # the step counters too: 0-d views of one float32 buffer, side by side. Each is
            # still a counter of its own (its own 4 bytes), but the plain-list table reads
            # them 16 to a cache line instead of one allocation each (in one process,
            # 1000 Adam tensors: 0.59-0.63x the checks' time with cold caches)
            buffer = np.zeros(len(counters), dtype=np.float32)
            for j, index in enumerate(counters):
                slabs[index, "step"] = buffer[j:j + 1].reshape(())
        return slabs

    # ------------------------------------------------------------------- state
    def _new_entry(self, values=()):
        return _Entry(self._layout.version, values)

    def _new_counter(self, counter=None):
        """A zero step counter: ``counter`` (one carved by ``_state_slabs``) or a new one."""
        return self._devices.step_counter() if counter is None else counter

    def _new_state(self, group, index, counter=None):
        """The state of one parameter before its first step (its step counter
        ``counter`` when given, see ``_new_counter``)."""
        state = self._new_entry()
        if self._uses_step:
            state._put("step", self._new_counter(counter))
        return state

    def _step_count(self, entry):
        """Adam's step count including this step, as the kernels take it: a float, or on
        CUDA the ``DeviceStep`` itself (its true value may be on the device); None for SGD."""
        if not self._uses_step:
            return None
        step = entry["step"]
        return step if self._devices.on_device else V.step_value(step)

    def _advance(self, group, index, slabs=None):
        """Before one parameter's kernel call: its state entry (created, with any missing
        state array allocated, from ``slabs`` when it holds it) and its step counted;
        returns (entry, fresh), ``fresh`` when an array was just allocated (SGD's first
        step writes its buffer)."""
        state = self._state._get(index)
        counter = slabs.pop((index, "step"), None) if slabs else None
        if state is None:
            state = self._new_state(group, index, counter)
            if state or self._state_keys(group):  # plain SGD keeps no state, as in torch
                self._state._put(index, state)
        elif self._uses_step and "step" not in state:  # an empty entry read as opt.state[p]
            state._put("step", self._new_counter(counter))
        param = self._params[index]
        fresh = False
        for key, zero in self._state_keys(group):
            if key not in state:
                array = slabs.pop((index, key), None) if slabs else None
                state._put(key, self._devices.alloc(param, zero) if array is None else array)
                fresh = True
        if self._uses_step:
            step = state["step"]
            if isinstance(step, numbers.Number):
                state._put("step", step + 1)
            else:  # a 0-d array, or a CUDA DeviceStep: counted in place
                step += 1
        return state, fresh

    def _step_one(self, kernels, group, index, grad, grad_scale, slabs=None):
        state, fresh = self._advance(group, index, slabs)
        keys = [k for k, _ in self._state_keys(group)]
        param, grad, *arrays = self._devices.kernel_views(
            [self._params[index], grad] + [state[k] for k in keys])
        self._update(group, F.StepArgs(kernels, param, grad, dict(zip(keys, arrays)),
                                       self._step_count(state), fresh, grad_scale))

    def _update_list(self, group, args):
        """One launch for lists of arrays (CUDA); subclasses that have one define it."""
        raise NotImplementedError

    def _step_list(self, kernels, group, work, grad_scale):
        """CUDA: the per-tensor work of one group (``[(index, checked_grad), ...]``) in one
        launch per (dtype, step count, first step) bucket, with ``_step_one``'s state
        bookkeeping for every tensor. False, having changed nothing, for an optimizer
        without ``_update_list`` (the caller then steps each tensor)."""
        if type(self)._update_list is Optimizer._update_list:
            return False
        keys = [k for k, _ in self._state_keys(group)]
        buckets = {}
        for index, grad in work:
            state, fresh = self._advance(group, index)
            param = self._params[index]
            count = None
            if self._uses_step:
                counter = state["step"]  # a DeviceStep: its host count, without waiting
                count = (counter.attempted if getattr(type(counter), "is_device_step", False)
                         else float(counter))
            bucket = buckets.get((np.dtype(param.dtype), count, fresh))
            if bucket is None:
                bucket = buckets[np.dtype(param.dtype), count, fresh] = F.StepArgs(
                    kernels, [], [], {key: [] for key in keys},
                    [] if self._uses_step else None, fresh, grad_scale)
            bucket.param.append(param)
            bucket.grad.append(grad)
            if self._uses_step:
                bucket.step.append(state["step"])
            for key in keys:
                bucket.state[key].append(state[key])
        for args in buckets.values():
            self._update_list(group, args)
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
        for entry in self._state._values():
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
        self._drop_unaliased_segments()

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines)


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

