"""The functional API: same math as the classes, state kept by the caller."""
import numpy as np
import pytest

import fastoptim
import fastoptim.functional as F

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_equals_the_optimizer(backend, decoupled):
    rng = np.random.default_rng(0)
    p1 = [rng.standard_normal(s).astype(np.float32) for s in [(4,), (2, 3)]]
    p2 = [p.copy() for p in p1]
    opt = fastoptim.Adam(p2, lr=0.01, weight_decay=0.1, amsgrad=True,
                         decoupled_weight_decay=decoupled, backend=backend)
    m = [np.zeros_like(p) for p in p1]
    v = [np.zeros_like(p) for p in p1]
    vmax = [np.zeros_like(p) for p in p1]
    for step in range(1, 5):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in p1]
        F.adam_step(p1, grads, m, v, vmax, step=step, lr=0.01, weight_decay=0.1, amsgrad=True,
                    decoupled_weight_decay=decoupled, backend=backend)
        opt.step(grads)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


def test_adamw_step_is_decoupled_adam():
    a, b = np.ones(3), np.ones(3)
    g = np.full(3, 0.5)
    F.adamw_step([a], [g], [np.zeros(3)], [np.zeros(3)], step=1, lr=0.1, weight_decay=0.5)
    F.adam_step([b], [g], [np.zeros(3)], [np.zeros(3)], step=1, lr=0.1, weight_decay=0.5,
                decoupled_weight_decay=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_step_creates_buffers_like_torch(backend):
    p1, p2 = np.ones(3), np.ones(3)
    opt = fastoptim.SGD([p2], lr=0.1, momentum=0.9, nesterov=True, backend=backend)
    bufs = [None]
    for _ in range(3):
        g = np.array([0.5, -1.0, 2.0])
        F.sgd_step([p1], [g], bufs, lr=0.1, momentum=0.9, nesterov=True, backend=backend)
        opt.step([g])
    assert isinstance(bufs[0], np.ndarray)
    np.testing.assert_array_equal(bufs[0], opt.state[0]["momentum_buffer"])
    np.testing.assert_array_equal(p1, p2)


def test_single_arrays_are_accepted():
    p = np.ones(2)
    F.sgd_step(p, np.ones(2), lr=0.5)
    np.testing.assert_array_equal(p, [0.5, 0.5])


@pytest.mark.parametrize("call, error, message", [
    (lambda p, g: F.adam_step([p], [g], [np.zeros(3)], [np.zeros(3)], step=0), ValueError, "Invalid step"),
    (lambda p, g: F.adam_step([p], [g], [np.zeros(2)], [np.zeros(3)], step=1), ValueError, r"exp_avgs\[0\]"),
    (lambda p, g: F.adam_step([p], [g], [np.zeros(3)], [np.zeros(3)], step=1, amsgrad=True), ValueError, "max_exp_avg_sqs"),
    (lambda p, g: F.adam_step([p], [g], [p], [np.zeros(3)], step=1), ValueError, "overlap"),
    (lambda p, g: F.sgd_step([p], [g, g], lr=0.1), ValueError, "1 params but 2 grads"),
    (lambda p, g: F.sgd_step([p], [g], lr=0.1, momentum=0.9), ValueError, "momentum_buffers"),
    (lambda p, g: F.sgd_step([p], [g.astype(np.float32)], lr=0.1), TypeError, "dtype float32"),
])
def test_functional_errors_change_nothing(call, error, message):
    p, g = np.ones(3), np.full(3, 0.5)
    with pytest.raises(error, match=message):
        call(p, g)
    np.testing.assert_array_equal(p, np.ones(3))


def test_docstring_example():
    w, g = np.ones(4, np.float32), np.full(4, 0.5, np.float32)
    F.adam_step([w], [g], [np.zeros_like(w)], [np.zeros_like(w)], step=1, lr=0.1)
    np.testing.assert_allclose(w, 0.9, rtol=1e-6)


def test_grad_sharing_memory_with_state_is_rejected():
    p, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with exp_avgs\[0\]"):
        F.adam_step([p], [m], [m], [v], step=1)
    np.testing.assert_array_equal(p, np.ones(3))


def test_new_momentum_buffers_need_a_list_to_land_in():
    p = np.ones(3)
    with pytest.raises(TypeError, match="must be a list"):
        F.sgd_step([p], [np.ones(3)], (None,), lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(p, np.ones(3))
