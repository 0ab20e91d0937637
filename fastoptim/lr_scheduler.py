r"""Learning-rate schedulers with the exact semantics of ``torch.optim.lr_scheduler`` (torch 2.13).

A scheduler drives any *optimizer-like* object: anything with an attribute
``param_groups`` that is a list of dicts, each holding at least ``"lr"``
(fastoptim's :class:`~fastoptim.SGD`, :class:`~fastoptim.Adam`,
:class:`~fastoptim.AdamW`, or a ``torch.optim`` optimizer).  Schedulers read and
write ``group["lr"]`` and ``group["initial_lr"]``; CyclicLR and OneCycleLR with
``cycle_momentum=True`` also write ``group["momentum"]`` (SGD) or beta1 of
``group["betas"]`` (Adam/AdamW), plus ``group["max_momentum"]`` and
``group["base_momentum"]``; OneCycleLR also writes ``group["max_lr"]`` and
``group["min_lr"]``.

Usage is torch's::

    opt = fastoptim.SGD(params, lr=0.1, momentum=0.9)
    sched = StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)          # calls opt.step()
        sched.step()

Semantics follow torch 2.13 line by line, including its quirks:

* *Chainable (recursive) forms.* ``step()`` of StepLR, MultiStepLR,
  ExponentialLR, ConstantLR, LinearLR, PolynomialLR, MultiplicativeLR and
  CosineAnnealingLR multiplies the **current** ``group["lr"]``, so several
  schedulers can be composed (ChainedScheduler) and outside changes to the lr
  persist.  ``step(epoch)`` (deprecated in torch) instead uses the closed form
  from :mod:`fastoptim.schedules` where torch has one (``_get_closed_form_lr``).
* The construction performs one initial step (``last_epoch`` goes from -1 to 0)
  that sets ``group["initial_lr"]`` (if absent) and the lr at epoch 0.
* ``state_dict()`` is every attribute except the optimizer (and except plain
  functions/lambdas, which cannot be saved: LambdaLR, MultiplicativeLR and
  CyclicLR's ``scale_fn`` keep only callable *objects'* ``__dict__``).  As in
  torch, the lrs themselves live in the optimizer: to resume, build the
  optimizer and scheduler, then load the optimizer's state (its param_groups),
  then ``scheduler.load_state_dict``.

Not reproduced from torch: the warning about calling ``lr_scheduler.step()``
before ``optimizer.step()`` (torch wraps ``optimizer.step`` for it) and the
deprecation warning for ``step(epoch)``.  Added on top of torch: argument
validation with ``ValueError``/``TypeError`` naming the argument (torch would
often fail later with ZeroDivisionError or produce nonsense).
"""

from __future__ import annotations

import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from functools import partial
from numbers import Integral, Real
from typing import Any, Iterator, Literal, SupportsFloat

import numpy as np

from . import schedules as _sch

__all__ = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "PolynomialLR",
    "LRScheduler",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _check_optimizer(optimizer: Any) -> None:
    """Raise TypeError unless ``optimizer`` has a ``param_groups`` list of dicts."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        raise TypeError(
            f"{type(optimizer).__name__} is not an Optimizer: expected an object with a "
            "'param_groups' attribute that is a list of dicts"
        )


def _copy_val(value: Any) -> Any:
    """Copy array-valued hyper-parameters so they never alias (torch clones tensors)."""
    return value.copy() if isinstance(value, np.ndarray) else value


def _format_param(name: str, optimizer: Any, param: Any) -> list[Any]:
    """Return one value per param group (torch's ``_format_param``)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {len(optimizer.param_groups)}."
            )
    else:
        param = [param] * len(optimizer.param_groups)
    return [_copy_val(p) for p in param]


def _param_groups_val_list(optimizer: Any, key: str) -> list[Any]:
    """``[group[key] for group in param_groups]`` (KeyError when missing)."""
    return [_copy_val(group[key]) for group in optimizer.param_groups]


def _update_param_group_val(param_group: dict[str, Any], key: str, val: Any) -> None:
    """Set ``param_group[key] = val`` (in place when the stored value is an array)."""
    current = param_group[key]
    if isinstance(current, np.ndarray):
        np.copyto(current, val)
    else:
        param_group[key] = val


def _momentum_key(optimizer: Any) -> bool:
    """Return ``use_beta1`` for momentum cycling; raise if there is nothing to cycle.

    torch looks at ``optimizer.defaults``; optimizers without ``defaults`` are
    judged by their first param group.
    """
    defaults = getattr(optimizer, "defaults", None)
    keys = defaults if isinstance(defaults, dict) else (optimizer.param_groups[0] if optimizer.param_groups else {})
    if "momentum" not in keys and "betas" not in keys:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return "betas" in keys


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _function_free_state(fns: Sequence[Any]) -> list[dict[str, Any] | None]:
    """State of callables: ``None`` for plain functions/lambdas, else a copy of ``__dict__``."""
    out: list[dict[str, Any] | None] = []
    for fn in fns:
        if fn is None or isinstance(fn, types.FunctionType):
            out.append(None)
        else:
            d = getattr(fn, "__dict__", None)
            out.append(d.copy() if isinstance(d, dict) else None)
    return out


def _check_gamma(gamma: object) -> None:
    if not _is_real(gamma):
        raise TypeError(f"gamma must be a real number, but got {gamma!r}")
    if not gamma > 0:  # type: ignore[operator]
        raise ValueError(f"gamma must be > 0, but got {gamma}")


def _check_total_iters(total_iters: object) -> None:
    if not _is_real(total_iters):
        raise TypeError(f"total_iters must be a number, but got {total_iters!r}")
    if total_iters < 0:  # type: ignore[operator]
        raise ValueError(f"total_iters must be >= 0, but got {total_iters}")


def _warn_get_lr_called_within_step(lr_scheduler: LRScheduler) -> None:
    if not lr_scheduler._get_lr_called_within_step:
        warnings.warn(
            "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
            UserWarning,
            stacklevel=3,
        )


@contextmanager
def _enable_get_lr_call(sched: LRScheduler) -> Iterator[None]:
    sched._get_lr_called_within_step = True
    try:
        yield
    finally:
        sched._get_lr_called_within_step = False


@contextmanager
def _initial_mode(sched: LRScheduler) -> Iterator[None]:
    sched._is_initial = True
    try:
        yield
    finally:
        sched._is_initial = False


# --------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------


class LRScheduler:
    r"""Base class of all schedulers (torch's ``LRScheduler``).

    On construction with ``last_epoch=-1`` it stores ``group["initial_lr"] =
    group["lr"]`` in every param group that has none (``setdefault``) and
    ``base_lrs = [group["initial_lr"], ...]``; with ``last_epoch >= 0`` (resuming)
    every group must already hold ``"initial_lr"`` (``KeyError`` otherwise).  It
    then performs the initial step: ``last_epoch += 1`` and the lr of epoch
    ``last_epoch`` is written to the groups.

    ``step()`` increments ``last_epoch`` and applies :meth:`get_lr`;
    ``step(epoch)`` sets ``last_epoch = epoch`` and applies the closed form
    ``_get_closed_form_lr`` if the scheduler has one, else :meth:`get_lr`.

    Subclasses implement :meth:`get_lr`.

    Args:
        optimizer: object with ``param_groups`` (list of dicts).
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    optimizer: Any
    base_lrs: list[Any]
    last_epoch: int
    _last_lr: list[Any]
    _step_count: int

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _copy_val(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        f"scheduler with last_epoch >= 0 (last_epoch={last_epoch}). This typically happens "
                        "when resuming from a checkpoint without loading the optimizer state, or when "
                        "passing last_epoch >= 0 for a fresh run."
                    )
        self.base_lrs = _param_groups_val_list(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and perform the initial step."""
        self._step_count = 0
        with _initial_mode(self):
            self.step()

    def state_dict(self) -> dict[str, Any]:
        """Return the scheduler state: every attribute except the optimizer."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict` (as torch: its entries become the
        scheduler's attributes). Checked first: on an error nothing has changed."""
        self._apply_load(self._check_load(state_dict))

    def _check_load(self, state_dict: dict[str, Any]) -> list[Callable[[], None]]:
        """The check phase of :meth:`load_state_dict`: validate ``state_dict`` and return
        what installs it, a list of actions that cannot fail (:meth:`_apply_load` runs
        them). ``fastoptim.checkpoint`` checks the optimizer and the scheduler this way
        before it changes either."""
        return [partial(self.__dict__.update, _state_mapping(state_dict))]

    @staticmethod
    def _apply_load(actions: list[Callable[[], None]]) -> None:
        """The apply phase of :meth:`load_state_dict`: run what :meth:`_check_load` returned."""
        for action in actions:
            action()

    def get_last_lr(self) -> list[Any]:
        """Return the learning rates last computed (one per param group)."""
        return self._last_lr

    def get_lr(self) -> list[Any]:
        """Compute the lr of each param group at ``last_epoch`` (called by :meth:`step`).

        To *inspect* the current lr use :meth:`get_last_lr`: recursive schedulers
        would apply one more decay here (a UserWarning says so, as in torch).
        """
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one epoch, or jump to ``epoch`` (closed form where available)."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _enable_get_lr_call(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(f"{type(self).__name__} computed {len(values)} lrs for {len(groups)} param groups")
        for group, lr in zip(groups, values):
            _update_param_group_val(group, "lr", lr)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


def _state_mapping(state_dict: Any) -> dict[str, Any]:
    """A scheduler state as a new dict (the caller's is never changed)."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, but got {type(state_dict).__name__}")
    if not all(isinstance(key, str) for key in state_dict):
        raise TypeError("state_dict keys must be attribute names (str)")
    return dict(state_dict)


def _function_dict(fn: Any, fn_state: Any, name: str) -> dict[str, Any]:
    """The ``__dict__`` of a callable object that a saved ``fn_state`` updates."""
    if not isinstance(fn_state, dict):
        raise TypeError(f"the saved state of {name} must be a dict or None, "
                        f"but got {type(fn_state).__name__}")
    target = getattr(fn, "__dict__", None)
    if not isinstance(target, dict):
        raise TypeError(f"{name} ({type(fn).__name__}) has no __dict__ to load a saved state into")
    return target


def _check_is_better(mode: Any, threshold_mode: Any) -> None:
    if mode not in {"min", "max"}:
        raise ValueError(f"mode {mode!r} is unknown! Expected 'min' or 'max'.")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError(f"threshold mode {threshold_mode!r} is unknown! Expected 'rel' or 'abs'.")


class _LRScheduler(LRScheduler):
    """Backwards-compatible alias of :class:`LRScheduler` (as in torch)."""


# --------------------------------------------------------------------------
# lambda-based
# --------------------------------------------------------------------------


def _lambda_list(optimizer: Any, lr_lambda: Any) -> list[Callable[[int], float]]:
    if not isinstance(lr_lambda, (list, tuple)):
        fns = [lr_lambda] * len(optimizer.param_groups)
    else:
        if len(lr_lambda) != len(optimizer.param_groups):
            raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
        fns = list(lr_lambda)
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    return fns


class _LambdaStateMixin:
    """LambdaLR and MultiplicativeLR: one lr_lambda per group, saved without functions."""

    lr_lambdas: list[Callable[[int], float]]

    def __init__(
        self,
        optimizer: Any,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.lr_lambdas = _lambda_list(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state; ``lr_lambdas`` holds ``None`` for plain functions/lambdas
        and a copy of ``__dict__`` for callable objects."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = _function_free_state(self.lr_lambdas)
        return state

    def _check_load(self, state_dict: dict[str, Any]) -> list[Callable[[], None]]:
        """A state's ``lr_lambdas``: callable objects get their saved ``__dict__`` back."""
        state = _state_mapping(state_dict)
        lr_lambdas = state.pop("lr_lambdas", None) or []
        if not isinstance(lr_lambdas, (list, tuple)) or len(lr_lambdas) > len(self.lr_lambdas):
            raise ValueError(f"state_dict['lr_lambdas'] must be a list of at most "
                             f"{len(self.lr_lambdas)} entries (one per param group)")
        actions = [partial(self.__dict__.update, state)]
        for idx, fn_state in enumerate(lr_lambdas):
            if fn_state is not None:
                actions.append(partial(_function_dict(self.lr_lambdas[idx], fn_state,
                                                      f"lr_lambdas[{idx}]").update, fn_state))
        return actions


class LambdaLR(_LambdaStateMixin, LRScheduler):
    r"""Set each group's lr to ``initial_lr * lr_lambda(epoch)``.

    .. math:: \eta_t = \eta_0 \cdot \lambda(t)

    Args:
        optimizer: wrapped optimizer.
        lr_lambda: a function of the integer epoch, or a list with one per group.
        last_epoch: index of the last epoch. Default: -1.

    No closed form: ``step(epoch)`` evaluates the lambda at ``epoch``.
    ``state_dict`` saves only callable objects' ``__dict__`` (not lambdas).
    """

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        return [base_lr * lmbda(self.last_epoch) for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaStateMixin, LRScheduler):
    r"""Multiply each group's current lr by ``lr_lambda(epoch)`` at every step.

    .. math:: \eta_t = \eta_{t-1} \cdot \lambda(t) \quad (t \ge 1), \qquad \eta_0 = \text{lr}

    The initial step leaves the lr unchanged.  No closed form: ``step(epoch)``
    also multiplies by ``lr_lambda(epoch)``.

    Args:
        optimizer: wrapped optimizer.
        lr_lambda: a function of the integer epoch, or a list with one per group.
        last_epoch: index of the last epoch. Default: -1.
    """

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        return [
            group["lr"] * lmbda(self.last_epoch) for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups)
        ]


# --------------------------------------------------------------------------
# step-wise decays
# --------------------------------------------------------------------------


class StepLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` every ``step_size`` epochs.

    Closed form: :math:`\eta_t = \eta_0 \cdot \gamma^{\lfloor t / \text{step\_size} \rfloor}`
    (:func:`fastoptim.schedules.step_decay`, used by ``step(epoch)``).

    Recursive form (``step()``, torch's): at every epoch ``t > 0`` that is a
    multiple of ``step_size`` the *current* lr is multiplied by ``gamma``.  Torch
    subtlety: the initial step of a scheduler built with ``last_epoch=k >= 0``
    also decays if ``k + 1`` is such a multiple.

    Args:
        optimizer: wrapped optimizer.
        step_size: period of the decay (positive int).
        gamma: multiplicative factor (> 0). Default: 0.1.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        if not _is_int(step_size):
            raise TypeError(f"step_size must be an int, but got {step_size!r}")
        if step_size <= 0:
            raise ValueError(f"step_size must be a positive integer, but got {step_size}")
        _check_gamma(gamma)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [_sch.step_decay(self.last_epoch, base_lr, self.step_size, self.gamma) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` at each milestone epoch.

    Closed form: :math:`\eta_t = \eta_0 \cdot \gamma^{\#\{m \in \text{milestones}: m \le t\}}`
    (:func:`fastoptim.schedules.multistep`).  Milestones are kept in a
    ``collections.Counter`` as in torch: they need not be sorted, and a milestone
    listed ``n`` times decays by ``gamma ** n``.

    Args:
        optimizer: wrapped optimizer.
        milestones: epoch indices.
        gamma: multiplicative factor (> 0). Default: 0.1.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1) -> None:
        _check_gamma(gamma)
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch] for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        milestones = sorted(self.milestones.elements())
        return [_sch.multistep(self.last_epoch, base_lr, milestones, self.gamma) for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Multiply the lr by ``factor`` until epoch ``total_iters``.

    Closed form: :math:`\eta_t = \eta_0 (f + [t \ge T](1 - f))`
    (:func:`fastoptim.schedules.constant`).  Recursive form: epoch 0 multiplies
    the current lr by ``factor``, epoch ``total_iters`` multiplies it by
    ``1 / factor`` (so ``factor=0`` divides by zero there, as in torch).

    Args:
        optimizer: wrapped optimizer.
        factor: in [0, 1]. Default: 1/3.
        total_iters: number of epochs with the factor. Default: 5.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1) -> None:
        if not _is_real(factor) or factor > 1.0 or factor < 0:
            raise ValueError(f"Constant multiplicative factor expected to be between 0 and 1, but got factor={factor}")
        _check_total_iters(total_iters)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [_sch.constant(self.last_epoch, base_lr, self.factor, self.total_iters) for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Scale the lr by a factor moving linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` epochs.

    Closed form: :math:`\eta_t = \eta_0 \left(s + (e - s)\frac{\min(T, t)}{T}\right)`
    (:func:`fastoptim.schedules.linear`).  Recursive form (torch's): epoch 0
    multiplies the current lr by ``s``; epoch ``1 <= t <= T`` multiplies it by
    :math:`1 + (e - s) / (T s + (t - 1)(e - s))`; later epochs leave it.

    Args:
        optimizer: wrapped optimizer.
        start_factor: in (0, 1]. Default: 1/3.
        end_factor: in [0, 1]. Default: 1.0.
        total_iters: number of epochs of the ramp. Default: 5.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(
        self,
        optimizer: Any,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if not _is_real(start_factor) or start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1, "
                f"but got start_factor={start_factor}"
            )
        if not _is_real(end_factor) or end_factor > 1.0 or end_factor < 0:
            raise ValueError(
                f"Ending multiplicative factor expected to be between 0 and 1, but got end_factor={end_factor}"
            )
        _check_total_iters(total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        delta = self.end_factor - self.start_factor
        return [
            group["lr"] * (1.0 + delta / (self.total_iters * self.start_factor + (self.last_epoch - 1) * delta))
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[Any]:
        return [
            _sch.linear(self.last_epoch, base_lr, self.start_factor, self.end_factor, self.total_iters)
            for base_lr in self.base_lrs
        ]


class ExponentialLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` every epoch.

    Closed form: :math:`\eta_t = \eta_0 \gamma^t` (:func:`fastoptim.schedules.exponential`);
    ``step()`` multiplies the current lr by ``gamma`` (the initial step,
    including a resumed one with ``last_epoch >= 0``, leaves it).

    Args:
        optimizer: wrapped optimizer.
        gamma: multiplicative factor (> 0).
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, gamma: float, last_epoch: int = -1) -> None:
        _check_gamma(gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [_sch.exponential(self.last_epoch, base_lr, self.gamma) for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay the lr polynomially to 0 over ``total_iters`` epochs.

    Closed form: :math:`\eta_t = \eta_0 (1 - \min(T, t)/T)^p`
    (:func:`fastoptim.schedules.polynomial`).  Recursive form (torch's): epoch
    ``1 <= t <= T`` multiplies the current lr by
    :math:`\left(\frac{1 - t/T}{1 - (t-1)/T}\right)^p`; epoch 0 and later
    epochs leave it.

    Args:
        optimizer: wrapped optimizer.
        total_iters: number of decay epochs. Default: 5.
        power: power of the polynomial. Default: 1.0.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        _check_total_iters(total_iters)
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _param_groups_val_list(self.optimizer, "lr")
        decay_factor = (
            (1.0 - self.last_epoch / self.total_iters) / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [_sch.polynomial(self.last_epoch, base_lr, self.total_iters, self.power) for base_lr in self.base_lrs]


# --------------------------------------------------------------------------
# cosine
# --------------------------------------------------------------------------


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial lr to ``eta_min`` over ``T_max`` epochs (SGDR without restarts).

    Closed form (used by ``step(epoch)``, :func:`fastoptim.schedules.cosine`):

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi t / T_{max}))

    ``step()`` uses torch's *recursive* form on the current lr:

    .. math:: \eta_t = \eta_{min} + (\eta_{t-1} - \eta_{min})
              \frac{1 + \cos(\pi t / T_{max})}{1 + \cos(\pi (t-1) / T_{max})}

    except when :math:`(t - 1 - T_{max}) \bmod 2T_{max} = 0` (the denominator
    would be 0), where :math:`\eta_t = \eta_{t-1} + (\eta_0 - \eta_{min})(1 -
    \cos(\pi / T_{max}))/2`.  Both forms are reproduced exactly, so they differ
    in the last bits, and the recursive one keeps outside changes of the lr.
    Neither is clamped at ``T_max``: past it the lr rises again (period
    ``2 T_max``).  The initial step (also when resuming with ``last_epoch >=
    0``) leaves the lr as it is.

    Args:
        optimizer: wrapped optimizer.
        T_max: half-period in epochs (> 0).
        eta_min: minimum lr. Default: 0.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if not _is_real(T_max):
            raise TypeError(f"T_max must be a number, but got {T_max!r}")
        if not T_max > 0:
            raise ValueError(f"T_max must be > 0, but got {T_max}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _param_groups_val_list(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            return [
                self.eta_min + (base_lr - self.eta_min) * (1 + math.cos((self.last_epoch) * math.pi / self.T_max)) / 2
                for base_lr in self.base_lrs
            ]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [
                group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
            ]
        return [
            (1 + math.cos(math.pi * self.last_epoch / self.T_max))
            / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
            * (group["lr"] - self.eta_min)
            + self.eta_min
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[Any]:
        return [_sch.cosine(self.last_epoch, base_lr, self.T_max, self.eta_min) for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""SGDR: cosine annealing with warm restarts.

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi T_{cur} / T_i))

    ``T_i`` (cycle length) starts at ``T_0`` and is multiplied by ``T_mult`` at
    each restart; ``T_cur`` is the position in the cycle.  ``step()`` does
    ``T_cur += 1`` and restarts when ``T_cur >= T_i``.  ``step(epoch)`` accepts
    fractional epochs (e.g. ``epoch + batch / n_batches``) and recomputes
    ``(T_cur, T_i)`` from ``epoch`` (:func:`fastoptim.schedules.warm_restart_position`,
    torch's float-log formula for ``T_mult > 1``, quirks included); both can be
    interleaved.  ``last_epoch = floor(epoch)``.  Not chainable: the lr is
    always computed from ``base_lrs``.

    Args:
        optimizer: wrapped optimizer.
        T_0: epochs until the first restart (positive int).
        T_mult: growth factor of ``T_i`` (int >= 1). Default: 1.
        eta_min: minimum lr. Default: 0.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(
        self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        _sch._check_warm_restarts(T_0, T_mult, eta_min)
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_called_within_step(self)
        return [_sch.cosine(self.T_cur, base_lr, self.T_i, self.eta_min) for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:  # type: ignore[override]
        """Advance by one epoch, or set the (possibly fractional) ``epoch``."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    self.T_cur, self.T_i = _sch.warm_restart_position(epoch, self.T_0, self.T_mult)
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)

        with _enable_get_lr_call(self):
            values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            _update_param_group_val(group, "lr", lr)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


# --------------------------------------------------------------------------
# compositions
# --------------------------------------------------------------------------


def _check_sub_schedulers(owner: str, optimizer: Any, schedulers: Sequence[Any]) -> None:
    for idx, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {idx} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs "
                f"to be specified when calling `step`, but got one at index {idx} in the given schedulers sequence."
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(scheduler).__name__} at index {idx} with a different optimizer."
            )


class SequentialLR(LRScheduler):
    r"""Run ``schedulers`` one after another, switching at ``milestones``.

    At construction the lr is reset to ``initial_lr``, every sub-scheduler's
    ``last_epoch`` is decremented (undoing their own initial steps) and only the
    scheduler active at epoch 0 redoes its initial step.  ``step()`` at epoch
    ``t``: with ``i = bisect_right(milestones, t)``, if ``t == milestones[i-1]``
    the new scheduler is restarted with ``_update_lr(0)`` (= torch's
    ``step(0)``: ``last_epoch = 0`` and its *closed form* at 0 where it has one,
    else ``get_lr()``), otherwise ``schedulers[i].step()``.

    Args:
        optimizer: wrapped optimizer.
        schedulers: schedulers of this optimizer (at least one, no ReduceLROnPlateau).
        milestones: ``len(schedulers) - 1`` epoch indices.
        last_epoch: index of the last epoch. Default: -1.
    """

    def __init__(
        self, optimizer: Any, schedulers: Sequence[LRScheduler], milestones: Sequence[int], last_epoch: int = -1
    ) -> None:
        _check_optimizer(optimizer)
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
        _check_sub_schedulers(name, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number "
                f"of milestone points, but got number of schedulers {len(schedulers)} and the number of "
                f"milestones to be equal to {len(milestones)}"
            )
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer

        for group in self.optimizer.param_groups:
            _update_param_group_val(group, "lr", group["initial_lr"])
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def recursive_undo(self, sched: Any = None) -> None:
        """Undo the initial steps of the (nested) sub-schedulers: ``last_epoch -= 1``."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Step the active scheduler (restarting it at its milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """State including each sub-scheduler's ``state_dict()``."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def _check_load(self, state_dict: dict[str, Any]) -> list[Callable[[], None]]:
        """A state including the sub-schedulers' (each checked by its own scheduler)."""
        state = _state_mapping(state_dict)
        if "_schedulers" not in state:
            raise KeyError("_schedulers")  # torch's error for a state without them
        subs = state.pop("_schedulers")
        if not isinstance(subs, (list, tuple)) or len(subs) > len(self._schedulers):
            raise ValueError(f"state_dict['_schedulers'] must be a list of at most "
                             f"{len(self._schedulers)} scheduler states")
        actions = [partial(self.__dict__.update, state)]
        for scheduler, sub_state in zip(self._schedulers, subs):
            actions.extend(scheduler._check_load(sub_state))
        return actions


class ChainedScheduler(LRScheduler):
    r"""Step several chainable schedulers together: ``step()`` calls each one's ``step()`` in order.

    With recursive schedulers the factors multiply, e.g. ``ConstantLR`` +
    ``ExponentialLR`` gives :math:`\eta_t = \eta_0 \gamma^t f^{[t < T]}`.

    Args:
        schedulers: schedulers of one optimizer (at least one, no ReduceLROnPlateau).
        optimizer: the optimizer. Default: ``schedulers[0].optimizer``.
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Any | None = None) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler to be chained, but got no scheduler.")
        if optimizer is None:
            if not hasattr(schedulers[0], "optimizer"):
                raise TypeError(f"{name} at index 0 should have `optimizer` as its attribute.")
            optimizer = schedulers[0].optimizer
        _check_optimizer(optimizer)
        _check_sub_schedulers(name, optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Step every scheduler once."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    state_dict = SequentialLR.state_dict
    _check_load = SequentialLR._check_load


# --------------------------------------------------------------------------
# ReduceLROnPlateau
# --------------------------------------------------------------------------


class ReduceLROnPlateau(LRScheduler):
    r"""Multiply the lr by ``factor`` when a metric stops improving.

    ``step(metrics)``: the metric is *better* than ``best`` when (``mode``,
    ``threshold_mode``) = (min, rel): ``a < best * (1 - threshold)``;
    (min, abs): ``a < best - threshold``; (max, rel): ``a > best * (1 +
    threshold)``; (max, abs): ``a > best + threshold``.  A better metric
    becomes ``best`` and resets ``num_bad_epochs``; otherwise
    ``num_bad_epochs += 1``.  During cooldown (``cooldown_counter > 0``) the
    counter is decremented and bad epochs are ignored.  When ``num_bad_epochs >
    patience`` (strictly) every group's lr becomes ``max(lr * factor,
    min_lr[i])`` -- but only if that lowers it by more than ``eps`` -- then the
    cooldown starts and ``num_bad_epochs = 0``.

    Args:
        optimizer: wrapped optimizer.
        mode: 'min' or 'max'. Default: 'min'.
        factor: lr multiplier, < 1. Default: 0.1.
        patience: bad epochs tolerated. Default: 10.
        threshold: significance threshold. Default: 1e-4.
        threshold_mode: 'rel' or 'abs'. Default: 'rel'.
        cooldown: epochs to wait after a reduction. Default: 0.
        min_lr: lower bound, scalar or one per group. Default: 0.
        eps: minimal lr change applied. Default: 1e-8.
    """

    def __init__(
        self,
        optimizer: Any,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: Sequence[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if not _is_real(factor):
            raise TypeError(f"factor must be a number, but got {factor!r}")
        if factor >= 1.0:
            raise ValueError(f"Factor should be < 1.0, but got factor={factor}")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer

        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)

        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Reset the bad-epoch and cooldown counters."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record ``metrics`` for one epoch and reduce the lr if it has plateaued."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1

        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0

        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(self.optimizer.param_groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please modify the `min_lrs` field to match the "
                    "length of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)

        for i, param_group in enumerate(self.optimizer.param_groups):
            old_lr = float(param_group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                _update_param_group_val(param_group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        _check_is_better(mode, threshold_mode)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _check_load(self, state_dict: dict[str, Any]) -> list[Callable[[], None]]:
        """A state whose ``mode`` and ``threshold_mode`` are known (as torch's load checks,
        but before anything is changed)."""
        state = _state_mapping(state_dict)
        merged = {**self.__dict__, **state}
        _check_is_better(merged.get("mode"), merged.get("threshold_mode"))
        return [partial(self.__dict__.update, state),
                lambda: self._init_is_better(mode=self.mode, threshold=self.threshold,
                                             threshold_mode=self.threshold_mode)]


# --------------------------------------------------------------------------
# cyclical schedules
# --------------------------------------------------------------------------


class CyclicLR(LRScheduler):
    r"""Cyclical learning rate (CLR) between ``base_lr`` and ``max_lr``; call ``step()`` after every batch.

    With ``t = last_epoch``, ``S = step_size_up + step_size_down``,
    ``cycle = floor(1 + t / S)``, ``x = 1 + t / S - cycle`` and
    ``r = step_size_up / S``, the height is ``x / r`` if ``x <= r`` else
    ``(x - 1) / (r - 1)``, and

    .. math:: \eta_t = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})\cdot h \cdot s

    with scale ``s`` = 1 ('triangular'), :math:`1/2^{cycle-1}` ('triangular2'),
    :math:`\gamma^t` ('exp_range') or ``scale_fn(cycle)`` / ``scale_fn(t)`` for
    a custom ``scale_fn`` (``scale_mode`` 'cycle' / 'iterations'; torch forces
    'cycle' for the first two modes and 'iterations' for exp_range when no
    ``scale_fn`` is given).  See :func:`fastoptim.schedules.cyclic`.  With
    ``cycle_momentum`` the momentum (SGD) or beta1 (Adam) is
    ``max_momentum - (max_momentum - base_momentum) * h * s``.

    Torch subtlety: the initial step uses ``base_lrs`` taken from
    ``group["initial_lr"]`` (set from ``base_lr`` only if the group had none);
    ``base_lrs`` is replaced by ``base_lr`` after it.

    Args:
        optimizer: wrapped optimizer.
        base_lr: lower lr boundary (scalar or per group).
        max_lr: upper lr boundary (scalar or per group).
        step_size_up: iterations of the increasing half. Default: 2000.
        step_size_down: iterations of the decreasing half. Default: ``step_size_up``.
        mode: 'triangular', 'triangular2' or 'exp_range'. Default: 'triangular'.
        gamma: exp_range constant. Default: 1.0.
        scale_fn: custom scaling policy (overrides ``mode``). Default: None.
        scale_mode: 'cycle' or 'iterations'. Default: 'cycle'.
        cycle_momentum: cycle momentum / beta1 inversely. Default: True.
        base_momentum: lower momentum boundary (scalar or per group). Default: 0.8.
        max_momentum: upper momentum boundary (scalar or per group). Default: 0.9.
        last_epoch: index of the last batch. Default: -1.
    """

    def __init__(
        self,
        optimizer: Any,
        base_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.8,
        max_momentum: float | Sequence[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer

        # validate everything before touching the optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        self.total_size, self.step_ratio = _sch._cyclic_sizes(step_size_up, step_size_down)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"mode is invalid and scale_fn is None: mode={mode!r}")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be callable, but got {type(scale_fn).__name__}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', but got {scale_mode!r}")
        _check_gamma(gamma)
        if cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)

        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                if "lr" in group:
                    _update_param_group_val(group, "lr", lr)
                else:
                    group["lr"] = lr

        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if last_epoch == -1:
                groups = optimizer.param_groups
                for m_momentum, b_momentum, group in zip(self.max_momentums, self.base_momentums, groups):
                    _set_momentum(group, m_momentum, self.use_beta1)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum

        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The scaling policy (custom ``scale_fn`` or the mode's)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        return 1 / (2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        return gamma**x

    def get_lr(self) -> list[Any]:
        """Lrs at ``last_epoch``; with ``cycle_momentum`` also writes the momentum/beta1 (side effect)."""
        _warn_get_lr_called_within_step(self)
        cycle, scale_factor = _sch._cyclic_position(self.last_epoch, self.total_size, self.step_ratio)
        scale = self.scale_fn(cycle) if self.scale_mode == "cycle" else self.scale_fn(self.last_epoch)

        # same float operations as torch: base + ((max - base) * scale_factor) * scale
        lrs = [
            base_lr + (max_lr - base_lr) * scale_factor * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs)
        ]

        if self.cycle_momentum:
            for group, base_m, max_m in zip(self.optimizer.param_groups, self.base_momentums, self.max_momentums):
                _set_momentum(group, max_m - (max_m - base_m) * scale_factor * scale, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """State without the bound scale function; a custom ``scale_fn`` is saved
        only as a callable object's ``__dict__`` (``None`` for functions/lambdas)."""
        state = super().state_dict()
        state.pop("_scale_fn_ref", None)
        fn = state.pop("_scale_fn_custom", None)
        state["_scale_fn_custom"] = _function_free_state([fn])[0]
        return state

    def _check_load(self, state_dict: dict[str, Any]) -> list[Callable[[], None]]:
        """A state whose scale function is rebuilt from ``mode``/``gamma`` (a custom one
        gets its saved ``__dict__`` back)."""
        state = _state_mapping(state_dict)
        fn_state = state.pop("_scale_fn_custom", None)
        state.pop("_scale_fn_ref", None)
        actions = super()._check_load(state)
        if fn_state is not None and self._scale_fn_custom is not None:
            actions.append(partial(_function_dict(self._scale_fn_custom, fn_state,
                                                  "_scale_fn_custom").update, fn_state))
        actions.append(self._init_scale_fn)
        return actions


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy (super-convergence); call ``step()`` after every batch.

    ``initial_lr = max_lr / div_factor``, ``min_lr = initial_lr / final_div_factor``
    (stored in each group, with ``max_lr``).  Two phases: anneal ``initial_lr
    -> max_lr`` over steps ``[0, pct_start * total_steps - 1]``, then ``max_lr ->
    min_lr`` until step ``total_steps - 1``.  ``three_phase``: ``initial_lr ->
    max_lr``, ``max_lr -> initial_lr`` (until ``2 * pct_start * total_steps - 2``),
    ``initial_lr -> min_lr``.  Annealing: ``end + (start - end)/2 * (1 + cos(pi *
    pct))`` ('cos') or ``start + (end - start) * pct`` ('linear'), with ``pct``
    the fraction of the phase done (:func:`fastoptim.schedules.one_cycle`).
    With ``cycle_momentum`` the momentum / beta1 goes the other way between
    ``max_momentum`` and ``base_momentum``.  Like torch, ``total_steps`` steps
    after the construction are allowed and the next one raises ``ValueError``.
    The phase boundaries are read from each group (``group["initial_lr"]`` etc.),
    as torch does.

    Args:
        optimizer: wrapped optimizer.
        max_lr: peak lr (scalar or per group).
        total_steps: number of steps; or give ``epochs`` and ``steps_per_epoch``.
        epochs, steps_per_epoch: ``total_steps = epochs * steps_per_epoch``.
        pct_start: fraction of the cycle spent increasing the lr (float in [0, 1]). Default: 0.3.
        anneal_strategy: 'cos' or 'linear'. Default: 'cos'.
        cycle_momentum: cycle momentum / beta1. Default: True.
        base_momentum: lower momentum (scalar or per group). Default: 0.85.
        max_momentum: upper momentum (scalar or per group). Default: 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: use the three-phase schedule. Default: False.
        last_epoch: index of the last batch. Default: -1.
    """

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer

        if total_steps is not None:
            if not _is_int(total_steps) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not _is_int(epochs) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not _is_int(steps_per_epoch) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        if not isinstance(pct_start, (float, np.floating)) or pct_start < 0 or pct_start > 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        self._schedule_phases = _sch.one_cycle_phases(self.total_steps, pct_start, three_phase)

        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)

        if last_epoch == -1:
            for idx, group in enumerate(self.optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor

        if self.cycle_momentum:
            if last_epoch == -1:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums, optimizer.param_groups):
                    _set_momentum(group, m_momentum, self.use_beta1)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum

        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start: float, end: float, pct: float) -> float:
        return _sch._ANNEAL[self._anneal_func_type](start, end, pct)

    def get_lr(self) -> list[Any]:
        """Lrs at ``last_epoch``; with ``cycle_momentum`` also writes the momentum/beta1 (side effect)."""
        _warn_get_lr_called_within_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}"
            )
        phase, pct = _sch._one_cycle_locate(step_num, self._schedule_phases)
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = self._anneal_func(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                _set_momentum(group, momentum, self.use_beta1)
        return lrs
