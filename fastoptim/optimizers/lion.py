"""Lion (Chen et al. 2023): not in torch.optim; as optax.lion and the lion-pytorch package."""
from __future__ import annotations

from .. import _validation as V
from .. import functional as F
from .base import _COMMON_ARGS, Optimizer, _lr_value


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023, "Symbolic Discovery of
    Optimization Algorithms"), as ``optax.lion`` and the ``lion-pytorch`` package.

    .. math::
        g_t &= \pm\nabla_\theta f_t(\theta_{t-1})  \quad(- \text{ if maximize}) \\
        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda)
            \quad(\text{decoupled weight\_decay } \lambda) \\
        c_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        \theta_t &= \theta_{t-1} - \gamma\, \operatorname{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2)\, g_t

    Every coordinate moves by exactly :math:`\gamma`, so Lion wants a learning rate
    3-10x smaller than AdamW's, and a weight decay that much larger for the same
    :math:`\gamma\lambda`. ``sign`` is torch's: 0 for 0 and for NaN.

    Args:
        params: list of float32/float64 NumPy arrays (updated in place), list of
            param-group dicts, or dict of name -> array.
        lr (float): learning rate :math:`\gamma` (default 1e-4).
        betas (tuple): :math:`(\beta_1, \beta_2)`, the interpolation of the update
            and the decay of the moment (default (0.9, 0.99)), each in [0, 1].
        weight_decay (float): decoupled weight decay :math:`\lambda` (default 0).
        maximize (bool): maximize the objective instead of minimizing.
{common_args}
    State per parameter: ``exp_avg`` (the momentum :math:`m`); there is no step count.
    """

    _kernel = "lion"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, *, maximize=False,
                 backend="auto", skip_nonfinite=False, max_grad_norm=None):
        V.check_lion_hyperparameters(lr, betas, weight_decay, maximize)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, backend, skip_nonfinite, max_grad_norm)

    def _check_group(self, g):
        V.check_lion_hyperparameters(g["lr"], g["betas"], g["weight_decay"], g["maximize"])

    def _state_keys(self, g):
        return [("exp_avg", "zeros")]

    def _update(self, g, args):
        beta1, beta2 = g["betas"]
        F._lion(args, _lr_value(g["lr"]), _lr_value(beta1), _lr_value(beta2), g["weight_decay"],
                g["maximize"])


# the arguments every optimizer shares, without torch's implementation switches (Lion has none)
Lion.__doc__ = Lion.__doc__.replace("{common_args}", _COMMON_ARGS.split("        foreach,")[0])
