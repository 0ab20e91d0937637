r"""Weight-decay masks: two param groups, one decayed and one not.

The usual recipe for transformers and CNNs is to decay the weight matrices and
kernels but not biases, normalization scales/shifts and other vectors::

    groups = param_groups_with_decay_mask(named_params, weight_decay=0.05)
    opt = fastoptim.AdamW(groups, lr=3e-4)

``named_params`` is a dict of name -> array (or an iterable of (name, array)
pairs, or a ``FlatParams`` built from a dict). The optimizer's parameters are
then ordered group by group (decayed first), so ``step()`` takes a list of
gradients in that order: :func:`grads_in_group_order` builds it from a dict of
gradients keyed by name.

To keep ``FlatParams``' one-kernel-call-per-group speed, lay the buffer out in
group order, so that each group tiles one contiguous stretch
(:func:`flat_param_groups_with_decay_mask` does this)::

    fg = flat_param_groups_with_decay_mask(arrays, weight_decay=0.05)
    opt = fastoptim.AdamW(fg.groups, lr=3e-4)
    fg.grads["w1"][...] = dloss_dw1     # views into fg.flat.grad_buffer, by name
    opt.step(fg.flat.grads)             # one kernel call per group
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from . import _validation as V
from .arrays import FlatParams

__all__ = ["param_groups_with_decay_mask", "decay_groups", "grads_in_group_order",
           "flat_param_groups_with_decay_mask", "FlatDecayGroups"]

_RESERVED = ("params", "param_names", "weight_decay")


def _named(named_params) -> list[tuple[str, object]]:
    if isinstance(named_params, FlatParams):
        if not isinstance(named_params.params, dict):
            raise TypeError("a FlatParams built from a list has no names: build it from a dict")
        named_params = named_params.params
    if isinstance(named_params, dict):
        pairs = list(named_params.items())
    elif isinstance(named_params, (str, bytes)) or not isinstance(named_params, Iterable) or \
            hasattr(named_params, "__array_interface__") or hasattr(named_params, "__cuda_array_interface__"):
        raise TypeError(
            "named_params must be a dict of name -> array or an iterable of (name, array) "
            f"pairs, but got {type(named_params).__name__}"
        )
    else:
        pairs = []
        for i, item in enumerate(named_params):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(
                    f"named_params[{i}] must be a (name, array) pair, but got {type(item).__name__}"
                )
            pairs.append(item)
    if not pairs:
        raise ValueError("named_params is empty")
    seen = set()
    for name, array in pairs:
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, but got {type(name).__name__} ({name!r})")
        if name in seen:
            raise ValueError(f"parameter name {name!r} appears more than once")
        seen.add(name)
        if not hasattr(array, "shape"):
            raise TypeError(f"parameter {name!r} must be an array, but got {type(array).__name__}")
    return pairs


def _rule(no_decay) -> Callable[[str, object], bool]:
    if no_decay is None:
        return lambda name, array: len(array.shape) <= 1
    if isinstance(no_decay, str):
        no_decay = [no_decay]
    if callable(no_decay):
        return no_decay
    if isinstance(no_decay, Iterable):
        subs = list(no_decay)
        if not all(isinstance(s, str) for s in subs):
            raise TypeError("no_decay must be a predicate (name, array) -> bool or a list of name substrings")
        return lambda name, array: any(s in name for s in subs)
    raise TypeError(
        "no_decay must be None, a predicate (name, array) -> bool or a list of name "
        f"substrings, but got {type(no_decay).__name__}"
    )


def param_groups_with_decay_mask(named_params, weight_decay, *, no_decay=None,
                                 **group_kwargs) -> list[dict]:
    r"""Split named parameters into a decayed group and a group with ``weight_decay=0``.

    Args:
        named_params: dict of name -> array, an iterable of ``(name, array)``
            pairs (torch's ``named_parameters()`` shape), or a ``FlatParams``
            built from a dict.
        weight_decay (float): the decay of the decayed group (>= 0).
        no_decay: which parameters are **not** decayed:

            * ``None`` (default): every parameter with ``ndim <= 1`` -- biases,
              LayerNorm/BatchNorm scales and shifts, scalars;
            * a list of name substrings, e.g. ``["bias", "norm"]`` (a single
              string works too): a parameter whose name contains any of them;
            * a predicate ``(name, array) -> bool`` (True: no decay).
        **group_kwargs: other hyperparameters for both groups (e.g. ``lr``).

    Returns:
        A list of param-group dicts with ``"params"``, ``"param_names"`` and
        ``"weight_decay"`` -- the decayed group first, then the undecayed one,
        each keeping the input order; a group with no parameter is left out.
        Pass it straight to ``fastoptim.AdamW(groups, lr=...)`` (or SGD/Adam).

    Adam + L2 versus AdamW:

    * ``Adam(weight_decay=wd)`` (and ``SGD``) add ``wd * theta`` to the
      *gradient*. In Adam that term then goes through the moment estimates and
      is divided by the adaptive denominator
      :math:`\sqrt{\hat v_t} + \epsilon`: parameters with large gradients are
      barely regularized, those with small gradients strongly. It is an L2
      penalty on the loss, not a uniform shrinkage.
    * ``AdamW`` (``Adam(decoupled_weight_decay=True)``) decays the weights
      *directly*: :math:`\theta \leftarrow \theta (1 - \text{lr} \cdot \text{wd})`
      before the Adam update, independent of the gradient statistics and
      scaled by the (scheduled) learning rate. The same ``wd`` therefore means
      very different things in the two: AdamW's typical values (0.01-0.1) are
      far larger than Adam-L2's.

    Either way, decaying biases and normalization parameters mostly hurts, which
    is what the mask is for. The mask only sets each group's ``weight_decay``;
    the optimizer decides how it is applied.
    """
    V.check_weight_decay(weight_decay)
    bad = [k for k in group_kwargs if k in _RESERVED]
    if bad:
        raise TypeError(f"group_kwargs cannot set {bad[0]!r}: it is set by the mask")
    pairs = _named(named_params)
    skip = _rule(no_decay)
    decay, plain = ([], []), ([], [])
    for name, array in pairs:
        exempt = skip(name, array)
        if not isinstance(exempt, (bool, np.bool_)):
            raise TypeError(f"the no_decay predicate must return a bool, but got {type(exempt).__name__}")
        names, arrays = plain if exempt else decay
        names.append(name)
        arrays.append(array)
    groups = []
    for (names, arrays), wd in ((decay, weight_decay), (plain, 0.0)):
        if names:
            groups.append(dict(group_kwargs, params=arrays, param_names=names, weight_decay=wd))
    return groups


decay_groups = param_groups_with_decay_mask  # short alias


def grads_in_group_order(param_groups, grads_by_name) -> list:
    """A list of gradients in the optimizer's order (group by group) from a dict keyed by name.

    ``param_groups`` is the list returned by :func:`param_groups_with_decay_mask`
    or ``optimizer.param_groups``; every group must carry ``"param_names"``.
    A name missing from ``grads_by_name`` raises ``KeyError``; use ``None``
    values to skip parameters (as a missing ``.grad`` in torch).
    """
    if not isinstance(grads_by_name, dict):
        raise TypeError(f"grads_by_name must be a dict, but got {type(grads_by_name).__name__}")
    order = []
    for i, group in enumerate(param_groups):
        if "param_names" not in group:
            raise ValueError(f"param group {i} has no 'param_names'")
        order.extend(group["param_names"])
    missing = [n for n in order if n not in grads_by_name]
    if missing:
        raise KeyError(f"no gradient for {missing}")
    extra = [n for n in grads_by_name if n not in set(order)]
    if extra:
        raise ValueError(f"gradients for unknown parameters {extra}")
    return [grads_by_name[n] for n in order]


class FlatDecayGroups(NamedTuple):
    """What :func:`flat_param_groups_with_decay_mask` returns."""

    flat: FlatParams  # the buffers, laid out group by group; step with opt.step(flat.grads)
    groups: list  # the param groups (views into flat.buffer), for the optimizer
    params: dict  # name -> parameter view
    grads: dict  # name -> gradient view (write the gradients here)


def flat_param_groups_with_decay_mask(named_params, weight_decay, *, no_decay=None, dtype=None,
                                      **group_kwargs) -> FlatDecayGroups:
    """:func:`param_groups_with_decay_mask` over a new ``FlatParams`` laid out group by group.

    The arrays are copied into one buffer, decayed parameters first, so each
    group tiles one contiguous stretch and ``opt.step(result.flat.grads)``
    updates each group with one kernel call. ``result.params`` and
    ``result.grads`` map every name to its view in the parameter and gradient
    buffers. ``dtype`` is passed to ``FlatParams``.
    """
    groups = param_groups_with_decay_mask(named_params, weight_decay, no_decay=no_decay,
                                          **group_kwargs)
    names = [n for g in groups for n in g["param_names"]]
    flat = FlatParams([a for g in groups for a in g["params"]], dtype=dtype)
    params = dict(zip(names, flat.params))
    for group in groups:
        group["params"] = [params[n] for n in group["param_names"]]
    return FlatDecayGroups(flat, groups, params, dict(zip(names, flat.grads)))
