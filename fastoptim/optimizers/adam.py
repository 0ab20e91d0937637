"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW``."""
from __future__ import annotations

from .. import _validation as V
from .. import functional as F
from ._groups import _check_impl_flags
from .base import _COMMON_ARGS, Optimizer, _lr_value


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
    _kernel = "adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False, backend="auto",
                 skip_nonfinite=False, max_grad_norm=None):
        V.check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize,
                                     decoupled_weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        _check_impl_flags(defaults, self._FLAGS)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    _FLAGS = ("foreach", "capturable", "differentiable", "fused")

    def _check_group(self, g):
        V.check_adam_hyperparameters(g["lr"], g["betas"], g["eps"], g["weight_decay"],
                                     g["amsgrad"], g["maximize"], g["decoupled_weight_decay"])
        _check_impl_flags(g, self._FLAGS)

    def _state_keys(self, g):
        keys = [("exp_avg", "zeros"), ("exp_avg_sq", "zeros")]
        if g["amsgrad"]:
            keys.append(("max_exp_avg_sq", "zeros"))
        return keys

    def _update(self, g, args):
        beta1, beta2 = g["betas"]
        F._adam(args, _lr_value(g["lr"]), _lr_value(beta1), _lr_value(beta2), g["eps"],
                g["weight_decay"], g["amsgrad"], g["maximize"], g["decoupled_weight_decay"])

    def _update_list(self, g, args):
        beta1, beta2 = g["betas"]
        F._adam_list(args, g["lr"], beta1, beta2, g["eps"], g["weight_decay"], g["amsgrad"],
                     g["maximize"], g["decoupled_weight_decay"])


Adam.__doc__ = Adam.__doc__.replace("{common_args}", _COMMON_ARGS)


class AdamW(Adam):
    r"""AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.

    The weights are decayed directly, :math:`\theta \leftarrow \theta(1-\gamma\lambda)`,
    before the moment updates, instead of adding :math:`\lambda\theta` to the
    gradient (which the adaptive step size would rescale). Default
    ``weight_decay=1e-2``. Same arguments and state as :class:`Adam`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, backend="auto", skip_nonfinite=False,
                 max_grad_norm=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, backend=backend,
                         skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm)
