"""The optimizer classes: validate, keep hyperparameters and state, hold no math.

The math lives in the backends (``fastoptim/backends``); ``Optimizer.step``
checks every gradient first, then hands each parameter (or each flat
parameter group, see ``fastoptim.flat``) to the backend's kernel.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from . import _validation as V
from . import backends
from ._devices import check_backend_fits, device_support, is_array
from .flat import FlatGradDict, FlatGrads, find_segment


class _Segment:
    """A param group whose parameters tile one contiguous buffer: one kernel call per step."""

    __slots__ = ("root", "start", "param", "slices", "uniform", "state")

    def __init__(self, root, start, param, params):
        self.root, self.start, self.param = root, start, param
        sizes = [math.prod(p.shape) for p in params]  # torch tensors' .size is a method
        ends = np.cumsum(sizes)
        self.slices = [slice(int(e - n), int(e)) for e, n in zip(ends, sizes)]
        # True while every parameter of the group has stepped together, so the
        # group's state is one flat array per key and one shared step counter.
        self.uniform = True
        self.state = {}  # key -> flat state array of the whole group (while uniform)


class _State(dict):
    """``optimizer.state``: per-parameter state, keyed by the parameter's index.

    torch keys its state by tensor; NumPy arrays are not hashable, so here the
    key is the parameter's index in construction order (as in ``state_dict()``).
    Indexing with the parameter array itself also works: ``opt.state[w]``.
    """

    def __init__(self, optimizer):
        super().__init__()
        self._optimizer = optimizer

    def _key(self, key):
        if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, bool):
            return int(key)
        names = self._optimizer._names
        if isinstance(key, str) and names is not None and key in names:
            return names.index(key)
        index = self._optimizer._index_of(key)
        if index is None:
            raise KeyError("not a parameter of this optimizer")
        return index

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __contains__(self, key):
        try:
            return super().__contains__(self._key(key))
        except KeyError:
            return False

    def get(self, key, default=None):
        return self[key] if key in self else default


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
        if is_array(params):
            raise TypeError(
                "params argument given to the optimizer should be a list of arrays, a list "
                f"of param-group dicts or a dict of named arrays, but got {type(params).__name__}"
            )
        self._names = None
        if isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of arrays in sets will change between runs. Please use a list instead."
            )
        if isinstance(params, dict) and "params" not in params:
            self._names = list(params.keys())
            groups = [{"params": list(params.values()), "param_names": list(self._names)}]
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
        self._params: list = []  # every parameter, construction order
        self._segments: list = []  # one per group: _Segment or None
        self.state = _State(self)
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

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a group of parameters with their own hyperparameters (torch's semantics)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of arrays in sets will change between runs. Please use a list instead."
            )
        if is_array(params):
            params = [params]
        params = list(params)
        if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        group["params"] = params
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        if self.param_groups and (("param_names" in group) != ("param_names" in self.param_groups[0])):
            raise ValueError("all optimizer param groups should be with/without names")

        first = len(self._params)
        devices = device_support(params, [f"params[{first + i}]" for i in range(len(params))])
        if self._devices is not None and devices.on_device != self._devices.on_device:
            raise ValueError("all parameters of an optimizer must be on the host or all on a CUDA device")
        backend = self.backend or backends.resolve(self._requested_backend, devices.on_device)
        check_backend_fits(backend, devices.on_device)
        contiguous = backend != backends.REFERENCE
        for i, p in enumerate(params):
            devices.check_param(f"params[{first + i}]", p, contiguous)
        devices.check_no_overlap(
            [(f"params[{i}]", p) for i, p in enumerate(self._params + params)]
        )
        self._check_group(group)

        # all checks passed: now record the group
        self.backend, self._devices = backend, devices
        self.param_groups.append(group)
        self._params.extend(params)
        segment = devices.find_segment(params) if len(params) > 1 else None
        self._segments.append(segment and _Segment(*segment, params))

    def _index_of(self, array):
        for i, p in enumerate(self._params):
            if p is array:
                return i
        return None

    def _group_indices(self):
        start = 0
        for group in self.param_groups:
            yield group, range(start, start + len(group["params"]))
            start += len(group["params"])

    # -------------------------------------------------------------------- step
    def zero_grad(self):
        """Nothing to do: fastoptim takes gradients as arguments to ``step``."""

    def step(self, grads):
        """Update every parameter in place from ``grads``.

        ``grads`` is aligned with the parameters in construction order, group by
        group: a list of arrays (``None`` skips that parameter, as a missing
        ``.grad`` does in torch), or a dict with the same keys when the
        optimizer was built from a dict of named arrays, or ``FlatParams.grads``
        for one kernel call per group. Everything is checked before anything is
        written: a rejected call changes no parameter and no state.
        """
        for group in self.param_groups:
            self._check_group(group)
        V.check_safety_options(self.skip_nonfinite, self.max_grad_norm)
        plan = self._plan(grads)
        grad_scale = self._check_gradients(plan)
        if grad_scale is None:
            return
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

    def _check_gradients(self, plan):
        """The skip_nonfinite / max_grad_norm pass: one read of every gradient, before any write.

        Returns the factor to scale the gradients by inside the kernels (1.0 when
        not clipping), or None when the step must be skipped.
        """
        self.last_step_skipped = False
        if not self.skip_nonfinite and self.max_grad_norm is None:
            return 1.0
        from .clip import clip_coef, norm_and_finite

        arrays = [g for work in plan if work is not None
                  for g in (work if isinstance(work, tuple) else (g for _, g in work))]
        if self._devices.on_device:  # CUDA: norm, factor and flag stay on the device
            return backends.load("cuda").check_gradients(self, arrays)
        norm, finite = norm_and_finite(arrays, 2.0, self.backend)
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
        if self._names is not None:
            if not isinstance(grads, dict):
                raise TypeError(
                    "this optimizer was built from a dict of named arrays: step() takes a dict "
                    f"of gradients with the same keys, but got {type(grads).__name__}"
                )
            missing = [k for k in self._names if k not in grads]
            extra = [k for k in grads if k not in self._names]
            if missing or extra:
                raise ValueError(
                    f"grads keys do not match the parameters: missing {missing}, unexpected {extra}"
                )
            grads = [grads[k] for k in self._names]
            labels = [f"grads[{k!r}]" for k in self._names]
        else:
            if isinstance(grads, dict):
                raise TypeError("step() takes a list of gradients (the optimizer was built from a list)")
            if is_array(grads):
                if len(self._params) != 1:
                    raise TypeError("step() takes a list of gradients, one per parameter")
                grads = [grads]
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
        self._devices.check_reads_disjoint(reads, self._written_arrays())
        return plan

    def _written_arrays(self):
        """(name, array) of everything a step writes: parameters and state arrays.

        A uniform flat group contributes its flat buffers only, so the flat path
        stays O(number of groups).
        """
        out = []
        for (group, indices), segment in zip(self._group_indices(), self._segments):
            if segment is not None and segment.uniform:
                out.append((f"params[{indices[0]}:{indices[-1] + 1}]", segment.param))
                out.extend((f"state {key!r} of params[{indices[0]}:{indices[-1] + 1}]", a)
                           for key, a in segment.state.items())
                continue
            for i in indices:
                out.append((f"params[{i}]", self._params[i]))
                entry = dict.get(self.state, i, {})
                out.extend((f"state[{i}][{k!r}]", a) for k, a in entry.items() if k != "step")
        return out

    def _plan_flat(self, grads):
        """The O(1) path for FlatParams.grads; None when the layout does not match."""
        if any(s is None or s.root is not grads.param_buffer for s in self._segments):
            return None
        if len(grads) != len(self._params) or (self._names is not None) != isinstance(grads, dict):
            return None
        buffer = grads.buffer
        if buffer.dtype != grads.param_buffer.dtype or buffer.shape != grads.param_buffer.shape:
            raise ValueError("grads.buffer does not match the parameter buffer's dtype and size")
        self._devices.check_reads_disjoint([("grads.buffer", buffer)], self._written_arrays())
        if isinstance(buffer, np.ndarray) and not (
                buffer.flags.c_contiguous and buffer.flags.aligned
                and grads.param_buffer.flags.writeable):
            raise ValueError("FlatParams buffers must be contiguous, aligned and writeable")
        return [(buffer[s.start:s.start + s.param.size],) for s in self._segments]

    # ------------------------------------------------------------------- state
    def _new_state(self, group, index):
        """The state of one parameter before its first step."""
        state = {}
        if self._uses_step:
            state["step"] = self._devices.step_counter()
        return state

    def _ensure_state(self, group, indices, segment):
        """Allocate the state of a uniform flat group: one array per key, views per param."""
        first = dict.get(self.state, indices[0])
        if first is None:
            shared = self._new_state(group, indices[0])  # one step counter for the group
            if not shared and not self._state_keys(group):
                return {}, False  # stateless (plain SGD): torch keeps no state entry either
            for i in indices:
                dict.__setitem__(self.state, i, dict(shared))
            first = self.state[indices[0]]
        fresh = False
        for key, init in self._state_keys(group):
            if key not in first:
                flat = segment.state[key] = self._devices.alloc(segment.param, init)
                for i, sl in zip(indices, segment.slices):
                    self.state[i][key] = flat[sl].reshape(self._params[i].shape)
                fresh = True
        return first, fresh

    def _unshare(self, indices, segment):
        """Give each parameter of a flat group its own step counter before a partial step."""
        segment.uniform = False
        for i in indices:
            state = dict.get(self.state, i)
            if state is not None and "step" in state:
                state["step"] = state["step"].copy()

    def _step_segment(self, kernels, group, indices, segment, grad, grad_scale):
        first, fresh = self._ensure_state(group, indices, segment)
        if self._uses_step:
            first["step"] += 1  # shared by every parameter of the group
        self._update(kernels, group, segment.param, grad, segment.state, first, fresh, grad_scale)

    def _step_one(self, kernels, group, index, grad, grad_scale):
        state = dict.get(self.state, index)
        if state is None:
            state = self._new_state(group, index)
            if state or self._state_keys(group):  # plain SGD keeps no state, as in torch
                dict.__setitem__(self.state, index, state)
        param = self._params[index]
        fresh = False
        for key, zero in self._state_keys(group):
            if key not in state:
                state[key] = self._devices.alloc(param, zero)
                fresh = True
        if self._uses_step:
            state["step"] += 1
        keys = [k for k, _ in self._state_keys(group)]
        param, grad, *arrays = self._devices.kernel_views([param, grad] + [state[k] for k in keys])
        self._update(kernels, group, param, grad, dict(zip(keys, arrays)), state, fresh, grad_scale)

    # -------------------------------------------------------------- state_dict
    def state_dict(self):
        """A snapshot in torch's layout: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Arrays are copies on the host (NumPy), so the snapshot does not change
        as training goes on. ``step`` is a 0-d float32 array, as torch's tensor.
        """
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

    def load_state_dict(self, state_dict):
        """Load a snapshot from ``state_dict()`` (or torch's, with tensors on the CPU).

        Everything is checked first (group count and sizes, state keys, shapes);
        on any error nothing is changed.
        """
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
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            merged = dict(group)
            merged.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
            merged["params"] = group["params"]
            if "param_names" in group:
                merged["param_names"] = group["param_names"]
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
                if not np.issubdtype(host.dtype, np.floating):
                    raise TypeError(f"state[{saved_index}][{key!r}] has non-float dtype {host.dtype}")
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
                segment.state = {}
                segment.uniform = self._install_uniform(indices, segment, entries)
                if segment.uniform:
                    continue
            for i, entry in zip(indices, entries):
                if entry is not None:
                    dict.__setitem__(self.state, i, self._install(self._params[i], entry))

    def _install(self, param, entry):
        """Own copies of a loaded state entry, on the parameter's device and dtype."""
        out = {}
        for key, value in entry.items():
            if key == "step":
                out[key] = self._devices.step_counter(float(value))
            else:
                out[key] = self._devices.alloc(param, "empty")
                self._devices.copy_into(out[key], value)
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
        installed = [dict.fromkeys(e) for e in entries]
        for key in entries[0]:
            if key == "step":
                for new in installed:
                    new[key] = step
                continue
            flat = segment.state[key] = self._devices.alloc(segment.param, "empty")
            for i, sl, e, new in zip(indices, segment.slices, entries, installed):
                new[key] = flat[sl].reshape(self._params[i].shape)
                self._devices.copy_into(new[key], e[key])
        for i, new in zip(indices, installed):
            dict.__setitem__(self.state, i, new)
        return True

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k not in ("params", "param_names")):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines)


_COMMON_ARGS = """\
        backend (str): "auto" (fastest available), "numpy", "numba", "c" or "cuda".
        skip_nonfinite (bool): skip the whole step (no parameter, state or count
            changes) when any gradient holds NaN/Inf; see ``last_step_skipped``.
            Default False: non-finite values propagate, as in torch.
        max_grad_norm (float or None): clip the total 2-norm of all gradients to
            this value, as ``clip_grad_norm_`` would, folded into the update
            (the gradient arrays are not modified).
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
                 nesterov=False, *, maximize=False, backend="auto", skip_nonfinite=False,
                 max_grad_norm=None):
        V.check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, maximize)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    def _check_group(self, g):
        V.check_sgd_hyperparameters(g["lr"], g["momentum"], g["dampening"], g["weight_decay"],
                                    g["nesterov"], g["maximize"])

    def _state_keys(self, g):
        # the buffer is written, not read, on its first step: no need to zero it
        return [("momentum_buffer", "empty")] if g["momentum"] != 0 else []

    def _update(self, kernels, g, param, grad, state, entry, fresh, grad_scale):
        kernels.sgd(param, grad, state.get("momentum_buffer"), lr=g["lr"],
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
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False, backend="auto",
                 skip_nonfinite=False, max_grad_norm=None):
        V.check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                                     decoupled_weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    def _check_group(self, g):
        V.check_adam_hyperparameters(g["lr"], g["betas"], g["eps"], g["weight_decay"],
                                     g["amsgrad"], g["maximize"], g["decoupled_weight_decay"])

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
                     step=entry["step"] if self._devices.on_device else float(entry["step"]),
                     lr=g["lr"], beta1=beta1, beta2=beta2,
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
                 amsgrad=False, *, maximize=False, backend="auto", skip_nonfinite=False,
                 max_grad_norm=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, backend=backend,
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm)
