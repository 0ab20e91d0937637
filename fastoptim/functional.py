"""Functional optimizer steps for people who keep their own state.

Each function checks its arguments, picks a backend with the one dispatcher
(``fastoptim.backends``), and updates the arrays in place. The optimizer
classes call the same backend functions after checking their own inputs.

    >>> import numpy as np, fastoptim.functional as F
    >>> w, g = np.ones(4, np.float32), np.full(4, 0.5, np.float32)
    >>> m, v = np.zeros_like(w), np.zeros_like(w)
    >>> F.adam_step([w], [g], [m], [v], step=1, lr=0.1)
    >>> w
    array([0.90000004, 0.90000004, 0.90000004, 0.90000004], dtype=float32)
"""
from __future__ import annotations

from . import _validation as V
from . import backends
from ._parallel import note_parallel, parallel_guard
from .arrays import check_backend_fits, device_support, is_array


def _as_list(name, arrays):
    if arrays is None:
        return None
    if is_array(arrays):
        return [arrays]
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name} must be an array or a list of arrays, got {type(arrays).__name__}")
    return list(arrays)


def _prepare(backend, params, grads, states):
    """Check lists and arrays; return (backend module, devices, params, grads, states)."""
    params = _as_list("params", params)
    grads = _as_list("grads", grads)
    if not params:
        raise ValueError("params is empty")
    if len(grads) != len(params):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    devices = device_support(params, [f"params[{i}]" for i in range(len(params))])
    name = backends.resolve(backend, devices.on_device)
    check_backend_fits(name, devices.on_device)
    contiguous = name != backends.REFERENCE
    named = []
    for i, p in enumerate(params):
        devices.check_param(f"params[{i}]", p, contiguous)
        named.append((f"params[{i}]", p))
    grads = [devices.check_grad(f"grads[{i}]", g, p) for i, (g, p) in enumerate(zip(grads, params))]
    checked = {}
    for state_name, arrays in states.items():
        arrays = _as_list(state_name, arrays)
        if arrays is None:
            checked[state_name] = [None] * len(params)
            continue
        if len(arrays) != len(params):
            raise ValueError(f"got {len(params)} params but {len(arrays)} {state_name}")
        for i, (a, p) in enumerate(zip(arrays, params)):
            if a is None:
                continue
            label = f"{state_name}[{i}]"
            devices.check_param(label, a, contiguous)
            if a.dtype != p.dtype or a.shape != p.shape:
                raise ValueError(f"{label} must have the shape and dtype of params[{i}]")
            named.append((label, a))
        checked[state_name] = arrays
    devices.check_no_overlap(named)
    devices.check_reads_disjoint([(f"grads[{i}]", g) for i, g in enumerate(grads)], named)
    note_parallel(name)
    return backends.load(name), devices, params, grads, checked


def sgd_step(params, grads, momentum_buffers=None, *, lr=1e-3, momentum=0, dampening=0,
             weight_decay=0, nesterov=False, maximize=False, backend="auto"):
    """One SGD step (torch's math, see :class:`fastoptim.SGD`), in place.

    ``lr`` may be a 1-element array (torch's tensor lr): arithmetic with it then
    happens in its dtype.

    ``momentum_buffers``: with momentum != 0, a list with one entry per
    parameter; a ``None`` entry is the first step: a new buffer equal to the
    (decayed) gradient is created and stored in the list, as torch's
    functional SGD does.
    """
    V.check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, maximize)
    if momentum != 0 and momentum_buffers is None:
        raise ValueError("momentum != 0 needs momentum_buffers (a list, None entries on the first step)")
    if (momentum != 0 and isinstance(momentum_buffers, tuple)
            and any(b is None for b in momentum_buffers)):
        raise TypeError("momentum_buffers with None entries must be a list: the new buffers are stored in it")
    kernels, devices, params, grads, states = _prepare(
        backend, params, grads, {"momentum_buffers": momentum_buffers})
    lr = V.hyper_value(lr)
    buffers = states["momentum_buffers"]
    with parallel_guard(kernels.name):
        for i, (p, g) in enumerate(zip(params, grads)):
            first_step = momentum != 0 and buffers[i] is None
            if first_step:
                buffers[i] = devices.alloc(p, "empty")
            p, g, buf = devices.kernel_views([p, g, buffers[i] if momentum != 0 else None])
            kernels.sgd(p, g, buf, lr=lr, momentum=momentum,
                        dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize, first_step=first_step)
    if isinstance(momentum_buffers, list):
        momentum_buffers[:] = buffers


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
              betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False, backend="auto"):
    """One Adam step (torch's math, see :class:`fastoptim.Adam`), in place.

    ``step`` is the step count including this one (1 on the first call), a
    number or a 1-element array; ``max_exp_avg_sqs`` is needed with
    ``amsgrad=True``. ``lr`` and ``betas`` may be 1-element arrays, as in torch.
    """
    V.check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                                 decoupled_weight_decay)
    step = V.check_step(step)  # a number or a 0-d array (torch's tensor step)
    lr, betas = V.hyper_value(lr), tuple(V.hyper_value(b) for b in betas)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError("amsgrad=True needs max_exp_avg_sqs")
    kernels, devices, params, grads, states = _prepare(
        backend, params, grads,
        {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs,
         "max_exp_avg_sqs": max_exp_avg_sqs if amsgrad else None})
    for name in ("exp_avgs", "exp_avg_sqs") + (("max_exp_avg_sqs",) if amsgrad else ()):
        if any(a is None for a in states[name]):
            raise ValueError(f"{name} must have an array for every parameter")
    with parallel_guard(kernels.name):
        for i, (p, g) in enumerate(zip(params, grads)):
            vmax = states["max_exp_avg_sqs"][i] if amsgrad else None
            p, g, m, v, vmax = devices.kernel_views(
                [p, g, states["exp_avgs"][i], states["exp_avg_sqs"][i], vmax])
            kernels.adam(p, g, m, v, vmax, step=step, lr=lr,
                         beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay)


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
               betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
               backend="auto"):
    """One AdamW step: :func:`adam_step` with decoupled weight decay (default 1e-2)."""
    adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr,
              betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
              maximize=maximize, decoupled_weight_decay=True, backend=backend)


def lion_step(params, grads, exp_avgs, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0,
              maximize=False, backend="auto"):
    """One Lion step (see :class:`fastoptim.Lion`), in place: ``exp_avgs`` has an
    array per parameter (zeros before the first step). ``lr`` and ``betas`` may be
    1-element arrays."""
    V.check_lion_hyperparameters(lr, betas, weight_decay, maximize)
    lr, betas = V.hyper_value(lr), tuple(V.hyper_value(b) for b in betas)
    kernels, devices, params, grads, states = _prepare(backend, params, grads,
                                                       {"exp_avgs": exp_avgs})
    if any(a is None for a in states["exp_avgs"]):
        raise ValueError("exp_avgs must have an array for every parameter")
    with parallel_guard(kernels.name):
        for i, (p, g) in enumerate(zip(params, grads)):
            p, g, m = devices.kernel_views([p, g, states["exp_avgs"][i]])
            kernels.lion(p, g, m, lr=lr, beta1=betas[0], beta2=betas[1],
                         weight_decay=weight_decay, maximize=maximize)
