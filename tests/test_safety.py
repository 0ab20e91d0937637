"""skip_nonfinite and max_grad_norm on the optimizers, on every CPU backend."""
import numpy as np
import pytest

import fastoptim

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]
OPTIMIZERS = [
    (fastoptim.SGD, dict(lr=0.1, momentum=0.9)),
    (fastoptim.Adam, dict(lr=0.01, amsgrad=True)),
    (fastoptim.AdamW, dict(lr=0.01)),
]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in [(5,), (2, 3), ()]]


def make_grads(rng):
    return [np.asarray(rng.standard_normal(s)).astype(np.float32) for s in [(5,), (2, 3), ()]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_step_is_skipped_atomically(backend, flat, cls, kwargs, bad):
    rng = np.random.default_rng(1)
    good = [make_grads(rng) for _ in range(4)]
    poisoned = [g.copy() for g in good[1]]
    poisoned[2] = np.asarray(bad, np.float32)  # only the last (0-d) tensor is bad
    reference = make_params()
    ref = cls(reference, backend="numpy", **kwargs)
    for grads in good:
        ref.step(grads)

    if flat:
        fp = fastoptim.FlatParams(make_params())
        params = fp.params
    else:
        params = make_params()
    opt = cls(params, backend=backend, skip_nonfinite=True, **kwargs)

    def step(grads):
        if flat:
            for view, g in zip(fp.grads, grads):
                view[...] = g
            opt.step(fp.grads)
        else:
            opt.step(grads)

    step(good[0])
    before = [p.copy() for p in params], opt.state_dict()
    step(poisoned)
    assert opt.last_step_skipped and opt.skipped_steps == 1
    for p, q in zip(params, before[0]):
        np.testing.assert_array_equal(p, q)
    after = opt.state_dict()["state"]
    for i, entry in before[1]["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after[i][key], value)
    for grads in good[1:]:
        step(grads)
        assert not opt.last_step_skipped
    for p, q in zip(params, reference):
        np.testing.assert_array_equal(p, q)


def test_default_propagates_nonfinite_like_torch():
    p = np.ones(3, np.float32)
    opt = fastoptim.Adam([p])
    opt.step([np.array([np.nan, 1, 1], np.float32)])
    assert np.isnan(p[0]) and np.isfinite(p[1:]).all() and not opt.last_step_skipped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_max_grad_norm_equals_clipping_then_stepping(backend, cls, kwargs, max_norm):
    rng = np.random.default_rng(2)
    mine, theirs = make_params(), make_params()
    opt = cls(mine, backend=backend, max_grad_norm=max_norm, **kwargs)
    ref = cls(theirs, backend="numpy", **kwargs)
    for _ in range(4):
        grads = [g * 3 for g in make_grads(rng)]
        originals = [g.copy() for g in grads]
        opt.step(grads)
        for g, o in zip(grads, originals):  # the caller's gradients are not modified
            np.testing.assert_array_equal(g, o)
        norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-6)
        scale = min(1.0, max_norm / (norm + 1e-6))
        ref.step([g * scale for g in grads] if scale < 1 else grads)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(skip_nonfinite=1), TypeError, "skip_nonfinite must be a bool"),
    (dict(max_grad_norm=0.0), ValueError, "Invalid max_grad_norm: 0.0"),
    (dict(max_grad_norm=-1), ValueError, "Invalid max_grad_norm"),
    (dict(max_grad_norm="1"), TypeError, "max_grad_norm must be a real number"),
])
def test_safety_option_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastoptim.SGD([np.zeros(2)], **kwargs)
