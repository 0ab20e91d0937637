"""The per-step scalars: the fast path of ``adam_scalars`` equals its exact computation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastoptim.backends import _scalars as S

_lr = st.one_of(st.floats(0, 1e300, allow_nan=False), st.sampled_from([0, 1, 3.4e38, 3.5e38, 1e39]))
_beta = st.one_of(st.floats(0, 1, exclude_max=True), st.sampled_from([0, 0.9, 0.999]))
_step = st.one_of(st.integers(1, 10**9).map(float), st.integers(1, 10**6))


def _bits(values):
    return [(type(v), np.asarray(v).tobytes()) for v in values]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=300, deadline=None)
@given(lr=_lr, beta1=_beta, beta2=_beta, step=_step, weight_decay=st.sampled_from([0, 1e-2, 7.0]),
       decoupled=st.booleans(), grad_scale=st.sampled_from([1.0, 0.25]))
def test_adam_scalars_equal_the_exact_computation(dtype, lr, beta1, beta2, step, weight_decay,
                                                  decoupled, grad_scale):
    kwargs = dict(lr=lr, beta1=beta1, beta2=beta2, eps=1e-8, weight_decay=weight_decay,
                  decoupled_weight_decay=decoupled, grad_scale=grad_scale)
    dtype = np.dtype(dtype)
    fast = S.adam_scalars(dtype, step=step, **kwargs)
    exact = S._adam_scalars_exact(dtype, step=step, **kwargs)
    assert type(fast) is S.AdamScalars
    assert _bits(fast) == _bits(exact)


@pytest.mark.parametrize("lr", [np.float32(1e-3), np.float64(0.5), np.float32(3e38)])
def test_adam_scalars_with_numpy_scalar_hyperparameters_take_the_exact_path(lr):
    for step in (1.0, 2.0, 50.0):
        kwargs = dict(step=step, lr=lr, beta1=np.float32(0.9), beta2=0.999, eps=1e-8,
                      weight_decay=0.0, decoupled_weight_decay=False)
        assert _bits(S.adam_scalars(np.dtype(np.float32), **kwargs)) == _bits(
            S._adam_scalars_exact(np.dtype(np.float32), **kwargs))


def test_adam_scalars_follow_the_step():
    a = S.adam_scalars(np.dtype(np.float32), step=1.0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=0, decoupled_weight_decay=False)
    b = S.adam_scalars(np.dtype(np.float32), step=2.0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=0, decoupled_weight_decay=False)
    assert a.neg_step_size == np.float32(-1e-3 / 0.1)
    assert b.neg_step_size == np.float32(-1e-3 / (1 - 0.9**2))
    assert b.bias_correction2_sqrt == np.float32((1 - 0.999**2) ** 0.5)
