"""The FlatParams fast path of ``Optimizer.step``: a checked plan, proved unchanged each step.

``opt.step(flat.grads)`` over FlatParams groups checks the same objects on every
step, in about 190 Python calls (``_check_state``, ``_plan``, ``_run``): 40-60 us
that a 1M-element step over one tensor does not pay. After a full step has
checked everything and run, :func:`record` keeps what it checked (a
:class:`_FlatPlan`). On each later step :func:`try_step` proves that nothing any
of those checks read has changed, and then runs the same kernel calls:

- the layout's edit count is the plan's (every edit of ``opt.state``, of an
  entry, of ``param_groups``' lists or of a group's ``params`` bumps it), and so
  are the groups' state keys, the backend and the segments (still uniform);
- the gradients are the same ``FlatGrads`` (or ``FlatGradDict``) object, not
  rebound, of the same length, over the same gradient and parameter buffers;
- the ``fingerprint`` of every array a kernel touches (the parameter buffer and
  each group's flat view of it, the gradient buffer, each flat state array, each
  step counter) equals the plan's: the same address, dtype, flags, shape and
  strides. A buffer reallocated in place (``resize(refcheck=False)``), made
  read-only or reshaped changes it. Equal fingerprints mean equal memory spans,
  so the full step's overlap checks still hold;
- every view the optimizer hands out (the parameters, ``opt.state``'s arrays) is
  still writeable: one compiled pass, as the full path makes (``first_read_only``);
- each step counter holds a finite count >= 0, as ``_check_state`` requires;
- the hyperparameters are checked by ``_check_groups``, which ``step`` runs first.

Anything else declines (returns False, having changed nothing): the full path then
runs, accepts the change (and records a new plan) or refuses it with its own message.
``skip_nonfinite`` and ``max_grad_norm`` take the same ``_check_gradients`` pass as in
the full path. Host arrays only. A copy or a pickle of an optimizer starts without a
plan (its arrays are new).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backends
from .. import functional as F
from ..arrays import FlatGradDict, FlatGrads, HostArrays
from ..backends._multi_table import fingerprint, first_read_only

enabled = True  # False: every step takes the full path (for comparisons and tests)


def _no_plan():
    return None


class _FlatPlan:
    """What one checked FlatParams step touched, and the kernel calls it made."""

    __slots__ = ("version", "keys_of", "backend", "grads", "count", "buffer", "root",
                 "segments", "watched", "print", "views", "calls", "work")

    def __reduce__(self):  # copy.deepcopy, pickle: the copy's arrays are not these
        return (_no_plan, ())


def record(opt, grads, plan):
    """After a full step that ran ``plan`` (``_plan``'s result): keep it as the fast
    plan when every group stepped as one flat call over ``grads``' buffer, else drop it."""
    opt._flat_plan = None
    if not enabled or not isinstance(opt._devices, HostArrays):
        return
    if not isinstance(grads, (FlatGrads, FlatGradDict)) or grads.rebound:
        return
    segments = tuple(opt._segments)
    if not segments or any(s is None or not s.uniform for s in segments):
        return
    if any(not isinstance(work, tuple) for work in plan):
        return
    keys_of = opt._state_key_names()
    version = opt._layout.version[0]
    watched = [grads.param_buffer, grads.buffer]
    views = list(opt._params)
    calls = []
    for (group, indices), segment, keys, (grad,) in zip(opt._group_indices(), segments,
                                                         keys_of, plan):
        if segment.checked != version or set(segment.state) != set(keys):
            return  # state not (all) allocated yet, or not proved intact at this count
        counter = None
        if opt._uses_step:
            counter = opt._state._at(indices[0])._get("step")
            if not isinstance(counter, np.ndarray) or counter.ndim != 0:
                return
            watched.append(counter)
        flats = [segment.state[key] for key in keys]
        watched += [segment.root, segment.param, *flats]
        for key in keys:
            views += segment.views[key]
        param, grad1, *arrays = opt._devices.kernel_views([segment.param, grad, *flats])
        calls.append((group, param, grad1, dict(zip(keys, arrays)), counter))
    fp = fingerprint(watched)
    if fp is None:
        return
    new = _FlatPlan()
    new.version, new.keys_of, new.backend = version, keys_of, opt.backend
    new.grads, new.count, new.buffer, new.root = grads, len(grads), grads.buffer, \
        grads.param_buffer
    new.segments, new.watched, new.print, new.views = segments, watched, fp, views
    new.calls, new.work = calls, list(plan)
    opt._flat_plan = new


def try_step(opt, grads) -> bool:
    """Step ``opt`` through its recorded plan; False (nothing changed) when the plan is
    missing or anything it depends on has changed (then the full path runs)."""
    plan = opt.__dict__.get("_flat_plan")
    if plan is None or grads is not plan.grads or grads.rebound or not enabled:
        return False
    if (opt._layout.version[0] != plan.version or opt.backend != plan.backend
            or len(grads) != plan.count or grads.buffer is not plan.buffer
            or grads.param_buffer is not plan.root):
        return False
    segments = opt._segments
    if len(segments) != len(plan.segments) or any(
            s is not p or not s.uniform for s, p in zip(segments, plan.segments)):
        return False
    if opt._state_key_names() != plan.keys_of or fingerprint(plan.watched) != plan.print:
        return False
    if first_read_only(plan.views) >= 0:
        return False
    for _, _, _, _, counter in plan.calls:
        if counter is not None:
            value = float(counter)
            if not (math.isfinite(value) and value >= 0):
                return False
    # every check of the full path holds: from here on it is the full path's run
    grad_scale = opt._check_gradients(plan.work)
    if grad_scale is None:  # skip_nonfinite found a NaN/Inf: nothing is written
        return True
    kernels = backends.load(opt.backend)
    for group, param, grad, state, counter in plan.calls:
        step = None
        if counter is not None:
            counter += 1  # in place: the group's one counter, as _step_segment counts it
            step = float(counter)
        opt._update(group, F.StepArgs(kernels, param, grad, state, step, False, grad_scale))
    return True
