"""Functional optimizer steps for people who keep their own state.

Each function checks its arguments, picks a backend with the one dispatcher
(``fastoptim.backends``), and updates the arrays in place.

This module is the one road to the kernels: the public functions below and the
optimizer classes (``fastoptim.optimizers``, whose ``step`` checks its own
inputs, plans the work and owns the state) meet in the same inner calls,
:func:`_sgd` and :func:`_adam`, which take one :class:`StepArgs` of arrays that
are already checked. Nothing else in fastoptim calls a backend's update kernels.

    >>> import numpy as np, fastoptim.functional as F
    >>> w, g = np.ones(4, np.float32), np.full(4, 0.5, np.float32)
    >>> m, v = np.zeros_like(w), np.zeros_like(w)
    >>> F.adam_step([w], [g], [m], [v], step=1, lr=0.1)
    >>> w
    array([0.90000004, 0.90000004, 0.90000004, 0.90000004], dtype=float32)
"""
from __future__ import annotations

import importlib

from . import _validation as V
from . import backends
from ._parallel import note_parallel, parallel_guard
from .arrays import check_backend_fits, device_support, is_array


class StepArgs:
    """The arrays and counters of one kernel call, already checked by the caller.

    ``kernels``: a backend module (or a table adapter of the same signature,
    see :class:`TableKernels`); ``param``, ``grad``: the arrays to update and
    read (1-D kernel views; for table kernels, ``param`` is a :class:`Rows`);
    ``state``: the state arrays by torch's key (``momentum_buffer``,
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), each 1-D like ``param``;
    ``step``: Adam's step count including this one (a float, or on CUDA the
    optimizer's ``DeviceStep``), None for SGD; ``first_step``: SGD's momentum
    buffer is written, not read (it has just been allocated); ``grad_scale``:
    the factor of gradient clipping (1.0, or a CUDA ``GradControl``).
    """

    __slots__ = ("kernels", "param", "grad", "state", "step", "first_step", "grad_scale")

    def __init__(self, kernels, param, grad, state, step=None, first_step=False, grad_scale=1.0):
        self.kernels, self.param, self.grad, self.state = kernels, param, grad, state
        self.step, self.first_step, self.grad_scale = step, first_step, grad_scale


def _sgd(args, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """One SGD kernel call over checked arrays (hyperparameters already checked too)."""
    args.kernels.sgd(args.param, args.grad, args.state.get("momentum_buffer"), lr=lr,
                     momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                     nesterov=nesterov, maximize=maximize, first_step=args.first_step,
                     grad_scale=args.grad_scale)


def _adam(args, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
    """One Adam kernel call over checked arrays (hyperparameters already checked too)."""
    state = args.state
    args.kernels.adam(args.param, args.grad, state["exp_avg"], state["exp_avg_sq"],
                      state.get("max_exp_avg_sq") if amsgrad else None, step=args.step, lr=lr,
                      beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                      amsgrad=amsgrad, maximize=maximize,
                      decoupled_weight_decay=decoupled_weight_decay, grad_scale=args.grad_scale)


def _lion(args, lr, beta1, beta2, weight_decay, maximize):
    """One Lion kernel call over checked arrays (hyperparameters already checked too)."""
    args.kernels.lion(args.param, args.grad, args.state["exp_avg"], lr=lr, beta1=beta1,
                      beta2=beta2, weight_decay=weight_decay, maximize=maximize,
                      grad_scale=args.grad_scale)


def _sgd_list(args, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """CUDA: one launch (``sgd_multi``) for a :class:`StepArgs` whose ``param``, ``grad``
    and state entries are lists of checked arrays of one dtype and first step."""
    args.kernels.sgd_multi(args.param, args.grad, args.state.get("momentum_buffer"), lr=lr,
                           momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                           nesterov=nesterov, maximize=maximize, first_step=args.first_step,
                           grad_scale=args.grad_scale)


def _adam_list(args, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
               decoupled_weight_decay):
    """CUDA: one launch (``adam_multi``) for a :class:`StepArgs` of lists of checked arrays
    of one dtype and step count; ``step`` is the list of their counters."""
    state = args.state
    args.kernels.adam_multi(args.param, args.grad, state["exp_avg"], state["exp_avg_sq"],
                            state.get("max_exp_avg_sq") if amsgrad else None, step=args.step,
                            lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                            amsgrad=amsgrad, maximize=maximize,
                            decoupled_weight_decay=decoupled_weight_decay,
                            grad_scale=args.grad_scale)


def _device_grad_control(opt, grads):
    """CUDA: the norm, clip factor and non-finite flag of checked gradients, on the device
    (``cuda_backend.check_gradients``); what the kernels then take as ``grad_scale``."""
    return backends.load("cuda").check_gradients(opt, grads)


# ------------------------------------------------------------ table kernels
_TABLE_MODULES = {
    "numba": "fastoptim.backends._multi_numba",
    "c": "fastoptim.backends._multi_c",
}
_table_modules: dict = {}


def table_kernels(backend):
    """The table kernels of ``backend`` (:class:`TableKernels`), or None when it has none
    (or they cannot load): the plain-list path of ``Optimizer.step``."""
    if backend not in _table_modules:
        kernels = None
        if backend in _TABLE_MODULES:
            try:
                kernels = TableKernels(importlib.import_module(_TABLE_MODULES[backend]))
            except ImportError:
                kernels = None
        _table_modules[backend] = kernels
    return _table_modules[backend]


class Rows:
    """What a :class:`StepArgs` holds as ``param`` for table kernels: blocks of rows of a
    checked table (``backends._multi_table``), and their dtype."""

    __slots__ = ("rows", "bounds", "dtype")

    def __init__(self, rows, bounds, dtype):
        self.rows, self.bounds, self.dtype = rows, bounds, dtype


class TableKernels:
    """The backend signature (``sgd``/``adam``, see ``fastoptim.backends``) over table rows,
    so that :func:`_sgd` and :func:`_adam` turn hyperparameters into kernel arguments the
    same way for one tensor and for a table of them."""

    __slots__ = ("module",)

    def __init__(self, module):
        self.module = module

    def sgd(self, param, grad, momentum_buffer, **kwargs):
        self.module.sgd(param.rows, param.bounds, param.dtype, **kwargs)

    def adam(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **kwargs):
        self.module.adam(param.rows, param.bounds, param.dtype, **kwargs)


# ------------------------------------------------------------ public functions
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
            _sgd(StepArgs(kernels, p, g, {"momentum_buffer": buf}, first_step=first_step),
                 lr, momentum, dampening, weight_decay, nesterov, maximize)
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
            state = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}
            _adam(StepArgs(kernels, p, g, state, step=step), lr, betas[0], betas[1], eps,
                  weight_decay, amsgrad, maximize, decoupled_weight_decay)


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
            _lion(StepArgs(kernels, p, g, {"exp_avg": m}), lr, betas[0], betas[1],
                  weight_decay, maximize)
