"""Pure, closed-form learning-rate schedules: ``step -> lr``.

Every function here is a plain function of the step (or epoch) index and the
schedule's hyper-parameters; none of them needs an optimizer or keeps state.
They are the closed forms used by :mod:`fastoptim.lr_scheduler` whenever
``torch.optim.lr_scheduler`` itself uses a closed form (``_get_closed_form_lr``,
i.e. ``scheduler.step(epoch)``, and the schedulers that are closed-form by
construction: :class:`~fastoptim.lr_scheduler.CyclicLR`,
:class:`~fastoptim.lr_scheduler.OneCycleLR` and
:class:`~fastoptim.lr_scheduler.CosineAnnealingWarmRestarts`).  The float
operations are written in the same order as torch 2.13's, so a function here
and the matching torch closed form give bit-identical results.

Note that torch's *recursive* forms (``scheduler.step()`` without an epoch for
StepLR, MultiStepLR, ExponentialLR, ConstantLR, LinearLR, PolynomialLR and
CosineAnnealingLR) multiply the current lr step by step, so they may differ
from these closed forms in the last bits (and, for CosineAnnealingLR, differ
once anything else touched the lr).

Scalar arguments give a Python ``float``.  A list, tuple or NumPy array of
steps gives a ``numpy.ndarray`` of ``float64`` (each entry is computed with
the scalar code, so it is bit-identical to the scalar result).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "constant",
    "step_decay",
    "multistep",
    "exponential",
    "linear",
    "polynomial",
    "cosine",
    "cosine_warm_restarts",
    "warm_restart_position",
    "warmup_cosine",
    "cyclic",
    "cyclic_momentum",
    "one_cycle",
    "one_cycle_momentum",
    "one_cycle_phases",
]

_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _vectorize(fn: _F) -> _F:
    """Let ``fn(step, ...)`` accept a sequence/array of steps."""

    @wraps(fn)
    def wrapper(step: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(step, (np.ndarray, list, tuple)):
            arr = np.asarray(step)
            flat = [fn(s.item() if isinstance(s, np.generic) else s, *args, **kwargs) for s in arr.ravel()]
            return np.asarray(flat, dtype=np.float64).reshape(arr.shape)
        if isinstance(step, np.generic):
            step = step.item()
        return fn(step, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _check_real(name: str, value: object) -> None:
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, but got {value!r} of type {type(value).__name__}")


def _check_positive_int(name: str, value: object) -> None:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, but got {value!r} of type {type(value).__name__}")
    if value <= 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be a positive integer, but got {value}")


def _check_gamma(gamma: object) -> None:
    _check_real("gamma", gamma)
    if not gamma > 0:  # type: ignore[operator]
        raise ValueError(f"gamma must be > 0, but got {gamma}")


# --------------------------------------------------------------------------
# simple decays
# --------------------------------------------------------------------------


@_vectorize
def constant(step: float, base_lr: float, factor: float = 1.0, total_iters: float = 0) -> float:
    """ConstantLR closed form: ``base_lr * factor`` while ``step < total_iters``, then ``base_lr``.

    ``lr = base_lr * (factor + (step >= total_iters) * (1 - factor))``.  With the
    defaults (``factor=1``) it is the constant ``base_lr``.
    """
    return base_lr * (factor + (step >= total_iters) * (1 - factor))


@_vectorize
def step_decay(step: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """StepLR closed form: ``base_lr * gamma ** (step // step_size)``."""
    _check_positive_int("step_size", step_size)
    _check_gamma(gamma)
    return base_lr * gamma ** (step // step_size)


@_vectorize
def multistep(step: int, base_lr: float, milestones: Iterable[int], gamma: float = 0.1) -> float:
    """MultiStepLR closed form: ``base_lr * gamma ** (number of milestones <= step)``.

    A milestone that appears ``n`` times counts ``n`` times (as in torch).
    """
    _check_gamma(gamma)
    ms = sorted(milestones)
    return base_lr * gamma ** bisect_right(ms, step)


@_vectorize
def exponential(step: int, base_lr: float, gamma: float) -> float:
    """ExponentialLR closed form: ``base_lr * gamma ** step``."""
    _check_gamma(gamma)
    return base_lr * gamma**step


@_vectorize
def linear(
    step: float,
    base_lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: float = 5,
) -> float:
    """LinearLR closed form.

    ``lr = base_lr * (start_factor + (end_factor - start_factor) * min(total_iters, step) / total_iters)``
    """
    if not total_iters > 0:
        raise ValueError(f"total_iters must be > 0, but got {total_iters}")
    return base_lr * (start_factor + (end_factor - start_factor) * min(total_iters, step) / total_iters)


@_vectorize
def polynomial(step: float, base_lr: float, total_iters: float = 5, power: float = 1.0) -> float:
    """PolynomialLR closed form: ``base_lr * (1 - min(total_iters, step) / total_iters) ** power``."""
    if not total_iters > 0:
        raise ValueError(f"total_iters must be > 0, but got {total_iters}")
    return base_lr * (1.0 - min(total_iters, step) / total_iters) ** power


@_vectorize
def cosine(step: float, base_lr: float, T_max: float, eta_min: float = 0.0) -> float:
    """CosineAnnealingLR closed form (SGDR without restarts).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2``

    As in torch, the formula is *not* clamped at ``T_max``: past it the lr rises
    again (period ``2 * T_max``).
    """
    if not T_max > 0:
        raise ValueError(f"T_max must be > 0, but got {T_max}")
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * step / T_max)) / 2


# --------------------------------------------------------------------------
# SGDR warm restarts
# --------------------------------------------------------------------------


def warm_restart_position(epoch: float, T_0: int, T_mult: int = 1) -> tuple[float, int]:
    """Return ``(T_cur, T_i)`` for ``epoch`` exactly as torch's ``CosineAnnealingWarmRestarts.step(epoch)``.

    ``T_i`` is the length of the current cycle and ``T_cur`` the (possibly
    fractional) position inside it.  For ``T_mult > 1`` the cycle index is
    ``n = int(log(epoch / T_0 * (T_mult - 1) + 1, T_mult))``, a float logarithm:
    like torch, an epoch exactly on a restart boundary can land at the *end* of
    the previous cycle (``T_cur == T_i``) when the log rounds down, e.g.
    ``T_0=1, T_mult=3, epoch=121``.
    """
    if epoch < 0:
        raise ValueError(f"Expected non-negative epoch, but got {epoch}")
    if epoch >= T_0:
        if T_mult == 1:
            return epoch % T_0, T_0
        n = int(math.log((epoch / T_0 * (T_mult - 1) + 1), T_mult))
        T_cur = epoch - T_0 * (T_mult**n - 1) / (T_mult - 1)
        return T_cur, T_0 * T_mult ** (n)
    return epoch, T_0


def _check_warm_restarts(T_0: object, T_mult: object, eta_min: object) -> None:
    if not _is_int(T_0) or T_0 <= 0:  # type: ignore[operator]
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if not _is_int(T_mult) or T_mult < 1:  # type: ignore[operator]
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not _is_real(eta_min):
        raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")


@_vectorize
def cosine_warm_restarts(epoch: float, base_lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> float:
    """CosineAnnealingWarmRestarts at a (possibly fractional) ``epoch``.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` with
    ``(T_cur, T_i) = warm_restart_position(epoch, T_0, T_mult)``; equals the lr
    torch sets after ``scheduler.step(epoch)``.
    """
    _check_warm_restarts(T_0, T_mult, eta_min)
    T_cur, T_i = warm_restart_position(epoch, T_0, T_mult)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


@_vectorize
def warmup_cosine(
    step: float,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    eta_min: float = 0.0,
    warmup_start_factor: float = 0.0,
) -> float:
    """Linear warm-up followed by cosine annealing to ``eta_min``.

    * ``step < warmup_steps``: ``base_lr * (f0 + (1 - f0) * step / warmup_steps)``
      with ``f0 = warmup_start_factor`` (LinearLR's closed form);
    * ``warmup_steps <= step < total_steps``:
      ``cosine(step - warmup_steps, base_lr, total_steps - warmup_steps, eta_min)``;
    * ``step >= total_steps``: ``eta_min`` (held, unlike torch's periodic cosine).

    This is the closed form of ``SequentialLR([LinearLR(start_factor=f0,
    total_iters=warmup_steps), CosineAnnealingLR(T_max=total_steps -
    warmup_steps, eta_min=eta_min)], milestones=[warmup_steps])`` (which agrees
    with it up to the rounding of torch's recursive forms), except that
    ``warmup_start_factor`` may be 0 here.
    """
    if not _is_int(warmup_steps) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, but got {warmup_steps!r}")
    if not _is_int(total_steps) or total_steps <= warmup_steps:
        raise ValueError(f"total_steps must be an int > warmup_steps ({warmup_steps}), but got {total_steps!r}")
    if not 0.0 <= warmup_start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in [0, 1], but got {warmup_start_factor}")
    if step < warmup_steps:
        f0 = warmup_start_factor
        return base_lr * (f0 + (1.0 - f0) * min(warmup_steps, step) / warmup_steps)
    if step >= total_steps:
        return float(eta_min)
    t_max = total_steps - warmup_steps
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (step - warmup_steps) / t_max)) / 2


# --------------------------------------------------------------------------
# cyclical learning rates (CLR)
# --------------------------------------------------------------------------

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _cyclic_sizes(step_size_up: float, step_size_down: float | None) -> tuple[float, float]:
    """Return torch's ``(total_size, step_ratio)``."""
    _check_real("step_size_up", step_size_up)
    if not step_size_up > 0:
        raise ValueError(f"step_size_up must be > 0, but got {step_size_up}")
    if step_size_down is not None:
        _check_real("step_size_down", step_size_down)
        if step_size_down < 0:
            raise ValueError(f"step_size_down must be >= 0, but got {step_size_down}")
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total_size = up + down
    return total_size, up / total_size


def _cyclic_position(step: float, total_size: float, step_ratio: float) -> tuple[int, float]:
    """Return ``(cycle, scale_factor)`` for ``step`` (torch's CyclicLR.get_lr)."""
    cycle = math.floor(1 + step / total_size)
    x = 1.0 + step / total_size - cycle
    if x <= step_ratio:
        scale_factor = x / step_ratio
    else:
        scale_factor = (x - 1) / (step_ratio - 1)
    return cycle, scale_factor


def _cyclic_builtin_scale(mode: str, gamma: float, cycle: int, step: float) -> float:
    if mode == "triangular":
        return 1.0
    if mode == "triangular2":
        return 1 / (2.0 ** (cycle - 1))
    if mode == "exp_range":
        return gamma**step
    raise ValueError(f"mode must be one of {_CYCLIC_MODES}, but got {mode!r}")


def _cyclic_scale(
    step: float,
    cycle: int,
    mode: str,
    gamma: float,
    scale_fn: Callable[[float], float] | None,
    scale_mode: str,
) -> float:
    if scale_fn is None:
        if mode not in _CYCLIC_MODES:
            raise ValueError(f"mode must be one of {_CYCLIC_MODES} when scale_fn is None, but got {mode!r}")
        return _cyclic_builtin_scale(mode, gamma, cycle, step)
    if scale_mode not in ("cycle", "iterations"):
        raise ValueError(f"scale_mode must be 'cycle' or 'iterations', but got {scale_mode!r}")
    return scale_fn(cycle) if scale_mode == "cycle" else scale_fn(step)


@_vectorize
def cyclic(
    step: int,
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[float], float] | None = None,
    scale_mode: str = "cycle",
) -> float:
    """CyclicLR (CLR) learning rate at ``step`` (= torch's ``last_epoch``).

    ``cycle = floor(1 + step / (up + down))``, ``x = 1 + step / (up + down) - cycle``;
    the height is ``x / r`` on the way up (``x <= r = up / (up + down)``) and
    ``(x - 1) / (r - 1)`` on the way down; then
    ``lr = base_lr + (max_lr - base_lr) * height * scale`` where ``scale`` is
    1 (triangular), ``1 / 2 ** (cycle - 1)`` (triangular2), ``gamma ** step``
    (exp_range) or ``scale_fn(cycle)`` / ``scale_fn(step)`` for a custom
    ``scale_fn`` with ``scale_mode`` 'cycle' / 'iterations'.
    """
    total_size, step_ratio = _cyclic_sizes(step_size_up, step_size_down)
    cycle, scale_factor = _cyclic_position(step, total_size, step_ratio)
    scale = _cyclic_scale(step, cycle, mode, gamma, scale_fn, scale_mode)
    base_height = (max_lr - base_lr) * scale_factor
    return base_lr + base_height * scale


@_vectorize
def cyclic_momentum(
    step: int,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[float], float] | None = None,
    scale_mode: str = "cycle",
) -> float:
    """CyclicLR momentum at ``step``, cycled inversely to the lr:
    ``max_momentum - (max_momentum - base_momentum) * height * scale``."""
    total_size, step_ratio = _cyclic_sizes(step_size_up, step_size_down)
    cycle, scale_factor = _cyclic_position(step, total_size, step_ratio)
    scale = _cyclic_scale(step, cycle, mode, gamma, scale_fn, scale_mode)
    base_height = (max_momentum - base_momentum) * scale_factor
    return max_momentum - base_height * scale


# --------------------------------------------------------------------------
# 1cycle
# --------------------------------------------------------------------------


def one_cycle_phases(total_steps: int, pct_start: float = 0.3, three_phase: bool = False) -> list[dict[str, Any]]:
    """torch's ``OneCycleLR._schedule_phases``: a list of phases, each with
    ``end_step`` and the names of its start/end lr and momentum
    (``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``)."""
    if three_phase:
        return [
            {
                "end_step": float(pct_start * total_steps) - 1,
                "start_lr": "initial_lr",
                "end_lr": "max_lr",
                "start_momentum": "max_momentum",
                "end_momentum": "base_momentum",
            },
            {
                "end_step": float(2 * pct_start * total_steps) - 2,
                "start_lr": "max_lr",
                "end_lr": "initial_lr",
                "start_momentum": "base_momentum",
                "end_momentum": "max_momentum",
            },
            {
                "end_step": total_steps - 1,
                "start_lr": "initial_lr",
                "end_lr": "min_lr",
                "start_momentum": "max_momentum",
                "end_momentum": "max_momentum",
            },
        ]
    return [
        {
            "end_step": float(pct_start * total_steps) - 1,
            "start_lr": "initial_lr",
            "end_lr": "max_lr",
            "start_momentum": "max_momentum",
            "end_momentum": "base_momentum",
        },
        {
            "end_step": total_steps - 1,
            "start_lr": "max_lr",
            "end_lr": "min_lr",
            "start_momentum": "base_momentum",
            "end_momentum": "max_momentum",
        },
    ]


def _one_cycle_locate(step: float, phases: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """Return the phase containing ``step`` and the fraction ``pct`` done in it."""
    start_step = 0.0
    last = len(phases) - 1
    for i, phase in enumerate(phases):
        end_step = phase["end_step"]
        if step <= end_step or i == last:
            return phase, (step - start_step) / (end_step - start_step)
        start_step = phase["end_step"]
    raise ValueError("phases must not be empty")  # pragma: no cover


def _annealing_cos(start: float, end: float, pct: float) -> float:
    """Cosine anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _annealing_linear(start: float, end: float, pct: float) -> float:
    """Linear anneal from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
    return (end - start) * pct + start


_ANNEAL = {"cos": _annealing_cos, "linear": _annealing_linear}


def _check_one_cycle(step: float, total_steps: object, pct_start: object, anneal_strategy: object) -> None:
    if not _is_int(total_steps) or total_steps <= 0:  # type: ignore[operator]
        raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
    if not _is_real(pct_start) or not 0 <= pct_start <= 1:  # type: ignore[operator]
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in _ANNEAL:
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
    if step > total_steps:  # type: ignore[operator]
        raise ValueError(f"Tried to step {step} times. The specified number of total steps is {total_steps}")


@_vectorize
def one_cycle(
    step: int,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> float:
    """1cycle learning rate at ``step`` (0 <= step <= total_steps), as torch's OneCycleLR.

    ``initial_lr = max_lr / div_factor``, ``min_lr = initial_lr / final_div_factor``.
    Two phases (default): anneal ``initial_lr -> max_lr`` over steps
    ``[0, pct_start * total_steps - 1]``, then ``max_lr -> min_lr`` until
    ``total_steps - 1``.  ``three_phase=True``: ``initial_lr -> max_lr``,
    ``max_lr -> initial_lr`` (ending at ``2 * pct_start * total_steps - 2``),
    then ``initial_lr -> min_lr``.  Annealing is
    ``end + (start - end) / 2 * (1 + cos(pi * pct))`` ('cos') or
    ``(end - start) * pct + start`` ('linear').  Like torch, step ``total_steps``
    itself is allowed (it extrapolates the last phase); beyond it raises.
    """
    _check_one_cycle(step, total_steps, pct_start, anneal_strategy)
    initial_lr = max_lr / div_factor
    values = {"initial_lr": initial_lr, "max_lr": max_lr, "min_lr": initial_lr / final_div_factor}
    phase, pct = _one_cycle_locate(step, one_cycle_phases(total_steps, pct_start, three_phase))
    return _ANNEAL[anneal_strategy](values[phase["start_lr"]], values[phase["end_lr"]], pct)


@_vectorize
def one_cycle_momentum(
    step: int,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
) -> float:
    """1cycle momentum (or Adam beta1) at ``step``, cycled inversely to the lr:
    ``max_momentum -> base_momentum -> max_momentum`` (three-phase: then held)."""
    _check_one_cycle(step, total_steps, pct_start, anneal_strategy)
    values = {"max_momentum": max_momentum, "base_momentum": base_momentum}
    phase, pct = _one_cycle_locate(step, one_cycle_phases(total_steps, pct_start, three_phase))
    return _ANNEAL[anneal_strategy](values[phase["start_momentum"]], values[phase["end_momentum"]], pct)
