"""The per-element update of each optimizer, written once for Numba.

These are plain Python functions on scalars. ``numba_backend`` compiles them
with ``@njit`` (called from ``prange`` loops; LLVM inlines them) and ``cuda_backend`` compiles the
very same functions as CUDA device functions, so the CPU and GPU kernels
cannot drift apart. All scalar arguments arrive already rounded to the
parameter's precision (``_scalars.py``); flags are run-time arguments, so one
compiled kernel serves every combination of them. The arguments follow the one
order defined in ``_scalars.py`` (tests/test_abi.py); the kernels that call these
functions are cached under a digest of this file's code too (``_jit.code_digest``).
"""
import math

from ._constants import DECAY_DECOUPLED, DECAY_L2  # module globals: literals to the compilers


def sgd_update(p, g, buf, grad_scale, neg_lr, weight_decay, momentum, one_minus_dampening,
               has_weight_decay, has_momentum, first_step, nesterov, maximize):
    """One element of torch's SGD. Returns (param, momentum_buffer)."""
    g = g * grad_scale  # gradient clipping folded in (exact no-op when grad_scale == 1)
    if maximize:
        g = -g
    if has_weight_decay:
        g = g + weight_decay * p  # L2: weight decay goes into the gradient
    if has_momentum:
        if first_step:
            buf = g  # the first buffer is the gradient itself (no dampening)
        else:
            buf = buf * momentum + one_minus_dampening * g
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    return p + neg_lr * g, buf


def adam_update(p, g, m, v, vmax, grad_scale, lerp_weight, lerp_complement, lerp_from_start, beta2,
                one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size, weight_decay,
                decay_factor, weight_decay_mode, amsgrad, maximize):
    """One element of torch's Adam/AdamW. Returns (param, exp_avg, exp_avg_sq, max_exp_avg_sq)."""
    g = g * grad_scale  # gradient clipping folded in (exact no-op when grad_scale == 1)
    if maximize:
        g = -g
    if weight_decay_mode == DECAY_L2:
        g = g + weight_decay * p  # Adam: L2 regularization through the gradient
    elif weight_decay_mode == DECAY_DECOUPLED:
        p = p * decay_factor  # AdamW: decay the weight itself
    # first moment: torch's lerp(m, g, 1 - beta1), from whichever end is nearer
    diff = g - m
    if lerp_from_start:
        m = m + lerp_weight * diff
    else:
        m = g - diff * lerp_complement
    # second moment: v * beta2 + (1 - beta2) * g * g
    v = v * beta2 + one_minus_beta2 * g * g
    v_hat = v
    if amsgrad:  # running max of the raw second moment; NaN wins, like torch.maximum
        if v > vmax or v != v:
            vmax = v
        v_hat = vmax
    denom = math.sqrt(v_hat) / bias_correction2_sqrt + eps  # eps after the bias correction
    return p + neg_step_size * m / denom, m, v, vmax
