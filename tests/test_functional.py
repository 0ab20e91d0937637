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


# ------------------------------------------------------------ the one road to the kernels
def _kernel_callers(monkeypatch):
    """Wrap every update kernel of every CPU backend (and the table kernels) so that each
    call records the module of its caller."""
    import sys

    from fastoptim import backends

    callers = []

    def spy(kernel):
        def call(*args, **kwargs):
            callers.append(sys._getframe(1).f_globals["__name__"])
            return kernel(*args, **kwargs)
        return call

    for name in BACKENDS:
        module = backends.load(name)
        for kernel in ("sgd", "adam"):
            monkeypatch.setattr(module, kernel, spy(getattr(module, kernel)))
    for name in ("numba", "c"):
        kernels = F.table_kernels(name)
        if kernels is not None:
            for kernel in ("sgd", "adam"):
                monkeypatch.setattr(kernels.module, kernel, spy(getattr(kernels.module, kernel)))
    return callers


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", ["sgd", "adam"])
@pytest.mark.parametrize("layout", ["list", "flat", "big", "strided"])
def test_every_optimizer_path_reaches_the_kernels_through_functional(monkeypatch, backend, make,
                                                                     layout):
    from fastoptim import _plain_list
    from fastoptim.backends import _threads

    callers = _kernel_callers(monkeypatch)
    build = {"sgd": lambda p: fastoptim.SGD(p, lr=0.1, momentum=0.9, backend=backend),
             "adam": lambda p: fastoptim.Adam(p, lr=0.1, backend=backend)}[make]
    if layout == "flat":
        flat = fastoptim.FlatParams([np.ones(5, np.float32), np.ones(3, np.float32)])
        params, grads = flat.params, None
        flat.grad_buffer[:] = 0.5
    elif layout == "strided":
        params = [np.ones(10, np.float32)[::2]] if backend == "numpy" else [np.ones(5, np.float32)]
        grads = [np.full(5, 0.5, np.float32)]
    else:
        size = _threads.PARALLEL_MIN if layout == "big" else 7
        params = [np.ones(size, np.float32), np.ones(3, np.float32)]
        grads = [np.full(p.shape, 0.5, np.float32) for p in params]
    opt = build(params)
    for _ in range(3):  # the first step allocates the state; the later ones may take the table
        opt.step(grads)
    assert callers and set(callers) == {"fastoptim.functional"}, callers
    assert params[0][0] != 1.0
    if layout in ("list", "big") and backend != "numpy" and _plain_list.filler is not None:
        assert opt.last_plain_list_decline is None  # the table path ran, through functional too


def test_the_public_functions_share_the_inner_calls(monkeypatch):
    """sgd_step / adam_step check their arguments, then make the optimizer's own inner calls."""
    seen = []
    for name in ("_sgd", "_adam"):
        inner = getattr(F, name)
        monkeypatch.setattr(F, name, lambda args, *h, _inner=inner, _name=name:
                            seen.append((_name, args.step, args.first_step)) or _inner(args, *h))
    w, g = np.ones(3), np.full(3, 0.5)
    bufs = [None]
    F.sgd_step([w], [g], bufs, lr=0.1, momentum=0.9)
    F.adam_step([w], [g], [np.zeros(3)], [np.zeros(3)], step=2, lr=0.1)
    assert seen == [("_sgd", None, True), ("_adam", 2.0, False)]
    fastoptim.Adam([w], lr=0.1).step([g])
    assert seen[-1] == ("_adam", 1.0, True)  # its state was just allocated
