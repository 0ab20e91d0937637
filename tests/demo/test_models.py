"""fastoptim.demo.models: the MLP's, the batch-norm MLP's and the CNN's backward passes."""
import math

import numpy as np
import pytest

import fastoptim
from fastoptim import demo


# ----------------------------------------------------------------------- model
def numerical_grads(params, X, y, h=1e-6):
    grads = {}
    for name, p in params.items():
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = demo.cross_entropy(demo.forward(params, X)[0], y)[0]
            p[i] = old - h
            down = demo.cross_entropy(demo.forward(params, X)[0], y)[0]
            p[i] = old
            g[i] = (up - down) / (2 * h)
        grads[name] = g
    return grads


@pytest.mark.parametrize("sizes", [(5, 3), (5, 7, 3), (6, 8, 5, 4)])
def test_backward_matches_finite_differences(sizes):
    rng = np.random.default_rng(1)
    params = demo.init_mlp(sizes, seed=2, dtype=np.float64)
    for k in params:  # nonzero biases, so their gradient path is exercised too
        if k.startswith("b"):
            params[k][...] = rng.normal(0, 0.1, params[k].shape)
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, sizes[-1], size=9)
    loss, grads = demo.loss_and_grads(params, X, y)
    expected = numerical_grads(params, X, y)
    assert math.isfinite(loss) and loss > 0
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_cross_entropy_of_uniform_logits_is_log_classes():
    loss, dlogits = demo.cross_entropy(np.zeros((4, 10)), np.array([0, 3, 9, 2]))
    assert loss == pytest.approx(math.log(10))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-12)


def test_grads_are_written_into_flat_params_views():
    flat = fastoptim.FlatParams(demo.init_mlp(seed=0))
    rng = np.random.default_rng(0)
    X = rng.random((16, 64), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    loss, grads = demo.loss_and_grads(flat.params, X, y, flat.grads)
    assert grads is flat.grads
    assert flat.grad_buffer.dtype == np.float32 and np.abs(flat.grad_buffer).sum() > 0
    _, fresh = demo.loss_and_grads(flat.params, X, y)
    for k in fresh:
        np.testing.assert_allclose(flat.grads[k], fresh[k], rtol=1e-6, atol=1e-7)




def model_numerical_grads(model, X, y, h=1e-6):
    grads = {}
    for name, p in model.params.items():
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = demo.cross_entropy(model.forward(X, train=True), y)[0]
            p[i] = old - h
            down = demo.cross_entropy(model.forward(X, train=True), y)[0]
            p[i] = old
            g[i] = (up - down) / (2 * h)
        grads[name] = g
    return grads


def test_mlp_class_computes_the_functions_exactly():
    """One model: the MLP class (used by the demo and examples/mlp.py) is the plain functions."""
    model = demo.MLP(seed=5)
    params = demo.init_mlp(seed=5)
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k])
    rng = np.random.default_rng(1)
    X = rng.random((20, 64), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    loss = model.loss_and_backward(X, y)
    ref_loss, ref_grads = demo.loss_and_grads(params, X, y)
    assert loss == ref_loss
    for k in ref_grads:
        np.testing.assert_array_equal(model.grads[k], ref_grads[k])
    assert model.evaluate(X, y) == pytest.approx(demo.evaluate(params, X, y), abs=1e-12)


def test_batch_norm_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    model = demo.MLP((6, 8, 5, 4), seed=1, dtype=np.float64, batch_norm=True)
    for k in model.params:
        if k.startswith(("gamma", "beta", "b")):
            model.params[k][...] = rng.normal(1.0 if k.startswith("gamma") else 0.0, 0.3,
                                              model.params[k].shape)
    X = rng.normal(size=(9, 6))
    y = rng.integers(0, 4, size=9)
    model.loss_and_backward(X, y)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    expected = model_numerical_grads(model, X, y)
    assert set(analytic) >= {"gamma1", "beta1", "gamma2", "beta2"}
    for name in analytic:
        np.testing.assert_allclose(analytic[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_batch_norm_is_torchs_batchnorm1d():
    """Training mode normalizes with the batch (biased var), updates running stats with the unbiased
    var and momentum 0.1; eval mode uses the running stats."""
    rng = np.random.default_rng(0)
    h = rng.normal(2.0, 3.0, (16, 5))
    gamma, beta = rng.normal(1, 0.1, 5), rng.normal(0, 0.1, 5)
    rm, rv = np.zeros(5), np.ones(5)
    out, _ = demo.batch_norm_forward(h, gamma, beta, rm, rv, train=True)
    xhat = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
    np.testing.assert_allclose(out, xhat * gamma + beta, rtol=1e-12)
    np.testing.assert_allclose(rm, 0.1 * h.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-12)
    before = rm.copy()
    out_eval, _ = demo.batch_norm_forward(h, gamma, beta, rm, rv, train=False)
    np.testing.assert_array_equal(rm, before)
    np.testing.assert_allclose(out_eval, (h - rm) / np.sqrt(rv + 1e-5) * gamma + beta, rtol=1e-12)


@pytest.mark.parametrize("length,channels,kernel,stride", [(12, (3, 4), 3, 2), (9, (2,), 5, 1),
                                                           (10, (2, 3, 2), 3, 3)])
def test_cnn_backward_matches_finite_differences(length, channels, kernel, stride):
    rng = np.random.default_rng(2)
    model = demo.CNN1d(length=length, channels=channels, n_classes=4, kernel=kernel, stride=stride,
                       seed=1, dtype=np.float64)
    for k in model.params:
        if k.startswith("b"):
            model.params[k][...] = rng.normal(0, 0.1, model.params[k].shape)
    X = rng.normal(size=(5, length))
    y = rng.integers(0, 4, size=5)
    model.loss_and_backward(X, y)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    expected = model_numerical_grads(model, X, y)
    for name in analytic:
        np.testing.assert_allclose(analytic[name], expected[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_cnn_convolution_is_a_plain_correlation():
    """One conv layer by im2col equals the direct sum over taps and input channels."""
    rng = np.random.default_rng(4)
    model = demo.CNN1d(length=11, in_channels=2, channels=(3,), n_classes=2, kernel=3, stride=2,
                       seed=0, dtype=np.float64)
    x = rng.normal(size=(4, 11, 2))
    model.forward(x)
    got = model._outs[0].reshape(4, -1, 3)
    W = model.params["W1"].reshape(3, 2, 3)  # (tap, in channel, out channel)
    xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    out_len = (11 + 2 - 3) // 2 + 1
    direct = np.zeros((4, out_len, 3))
    for t in range(out_len):
        for j in range(3):
            direct[:, t] += xp[:, 2 * t + j] @ W[j]
    np.testing.assert_allclose(got, np.maximum(direct + model.params["b1"], 0), rtol=1e-12)


def test_models_keep_parameters_in_one_flat_buffer():
    for model in (demo.MLP(), demo.MLP(batch_norm=True, sizes=(40, 16, 10)), demo.CNN1d()):
        assert model.flat.buffer.ndim == 1
        for name, view in model.params.items():
            assert np.shares_memory(view, model.flat.buffer), name
        mask = model.weight_mask()
        assert mask.sum() == sum(v.size for k, v in model.params.items() if k.startswith("W"))
