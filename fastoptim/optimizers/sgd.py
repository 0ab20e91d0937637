"""SGD, as ``torch.optim.SGD``."""
from __future__ import annotations

from .. import _validation as V
from .. import functional as F
from ._groups import _check_impl_flags
from .base import _COMMON_ARGS, Optimizer, _lr_value


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

    _kernel = "sgd"

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, backend="auto", skip_nonfinite=False, max_grad_norm=None):
        V.check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov, maximize)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        _check_impl_flags(defaults, self._FLAGS)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    _FLAGS = ("foreach", "differentiable", "fused")

    def _check_group(self, g):
        V.check_sgd_hyperparameters(g["lr"], g["momentum"], g["dampening"], g["weight_decay"],
                                    g["nesterov"], g["maximize"])
        _check_impl_flags(g, self._FLAGS)

    def _state_keys(self, g):
        # the buffer is written, not read, on its first step: no need to zero it
        return [("momentum_buffer", "empty")] if g["momentum"] != 0 else []

    def _update(self, g, args):
        F._sgd(args, _lr_value(g["lr"]), g["momentum"], g["dampening"], g["weight_decay"],
               g["nesterov"], g["maximize"])

    def _update_list(self, g, args):
        F._sgd_list(args, g["lr"], g["momentum"], g["dampening"], g["weight_decay"],
                    g["nesterov"], g["maximize"])


SGD.__doc__ = SGD.__doc__.replace("{common_args}", _COMMON_ARGS)
