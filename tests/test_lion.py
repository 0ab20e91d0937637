"""Lion (fastoptim.Lion, functional.lion_step) on every backend.

- Golden trajectories recorded from the ``lion-pytorch`` package
  (tools/gen_lion_golden.py; tests/data/lion_golden.npz), replayed on every
  backend, the CUDA one included (under Numba's simulator without a GPU).
- numba, c and the NumPy reference agree bit for bit, for random hyperparameters.
- torch's conventions: defaults, validation messages, a rejected step changes
  nothing, the state layout, and torch's sign (0 for 0 and for NaN).
"""
import copy
import os

import golden_cases as G
import lion_cases as L
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastoptim
import fastoptim.functional as F
from fastoptim.backends import _threads

DATA = np.load(os.path.join(os.path.dirname(__file__), "data", "lion_golden.npz"))
BACKENDS = fastoptim.available_backends()
CPU_BACKENDS = [b for b in BACKENDS if b != "cuda"]
FAST_CPU = [b for b in CPU_BACKENDS if b != "numpy"]


def _to_backend(arrays, backend):
    if backend != "cuda":
        return arrays
    from numba import cuda

    return [cuda.to_device(a) for a in arrays]


def _host(a):
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def replay(case, backend, steps=L.STEPS):
    params = G.initial_params(case)
    groups = [dict(params=_to_backend(ps, backend), **kw)
              for ps, kw in zip(params, case["group_kwargs"])]
    opt = fastoptim.Lion(groups, backend=backend, **case["kwargs"])
    flat = [p for group in groups for p in group["params"]]
    for step in range(1, steps + 1):
        if case["lr_after"] is not None and step == G.LR_CHANGE_STEP:
            for group in opt.param_groups:
                group["lr"] = case["lr_after"]
        grads = G.grads_at(case, step, [_host(p) for p in flat])
        opt.step(_to_backend(grads, backend))
    return opt, flat


# CUDA (Numba's simulator without a GPU, ~5 s a case): two cases cover both dtypes,
# weight decay, groups and an lr change
_CASES = [(case, backend) for case in L.cases() for backend in BACKENDS
          if backend != "cuda" or case["name"] in ("Lion_groups_float32", "Lion_wd_float64")]


@pytest.mark.parametrize("case, backend", _CASES, ids=lambda x: x["name"] if isinstance(x, dict) else x)
def test_matches_lion_pytorch(case, backend):
    opt, flat = replay(case, backend)
    tol = L.TOLERANCE[case["dtype"]]
    for i, p in enumerate(flat):
        np.testing.assert_allclose(_host(p), DATA[G.key(case, i)], **tol, err_msg=f"param {i}")
        assert set(opt.state[i]) == {"exp_avg"}
        np.testing.assert_allclose(_host(opt.state[i]["exp_avg"]), DATA[G.key(case, i, "exp_avg")],
                                   **tol, err_msg=f"exp_avg of param {i}")


def _run(backend, init, grads, **kwargs):
    params = [p.copy() for p in init]
    opt = fastoptim.Lion(params, backend=backend, **kwargs)
    for g in grads:
        opt.step(g)
    return params, [opt.state[i]["exp_avg"] for i in range(len(params))]


def _same(a, b):
    """Equal bit for bit, except that NaNs only need to be NaN in the same places."""
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and a[~nan].tobytes() == b[~nan].tobytes()


@pytest.mark.parametrize("backend", FAST_CPU)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None)
@given(lr=st.floats(0, 1), beta1=st.floats(0, 1), beta2=st.floats(0, 1),
       weight_decay=st.sampled_from([0, 0.1, 3.0]), maximize=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fast_backends_are_bit_identical_to_the_reference(backend, dtype, lr, beta1, beta2,
                                                          weight_decay, maximize, seed):
    rng = np.random.default_rng(seed)
    sizes = [(), (1,), (33,), (4, 5), (70_000,)]  # 70K: parallel from 64K (below)
    init = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in sizes]
    grads = [[np.asarray(rng.standard_normal(s), dtype=dtype) for s in sizes] for _ in range(3)]
    grads[1][2][:4] = [np.nan, 0.0, -0.0, np.inf]
    kwargs = dict(lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, maximize=maximize)
    want = _run("numpy", init, grads, **kwargs)
    previous = _threads.set_dispatch(parallel_min=65536)  # the 70K tensor: parallel kernels
    try:  # (hypothesis runs many examples per call: no function-scoped fixture)
        got = _run(backend, init, grads, **kwargs)
    finally:
        _threads.set_dispatch(*previous)
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        assert a.dtype == b.dtype and _same(a, b)


def test_defaults_and_state_layout():
    w = np.ones(3)
    opt = fastoptim.Lion([w])
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["maximize"]) == \
        (1e-4, (0.9, 0.99), 0, False)
    opt.step([np.full(3, 2.0)])
    np.testing.assert_array_equal(w, 1 - 1e-4)  # sign(0.1 * 2) = 1
    assert set(opt.state[w]) == {"exp_avg"}  # no step count
    np.testing.assert_array_equal(opt.state[w]["exp_avg"], (1 - 0.99) * 2.0)
    sd = opt.state_dict()
    fresh = fastoptim.Lion([w.copy()])
    fresh.load_state_dict(copy.deepcopy(sd))
    np.testing.assert_array_equal(fresh.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sign_is_torchs(backend):
    """torch.sign: 0 for a zero interpolation and for NaN, so those weights only decay."""
    w = np.array([1.0, 1.0, 1.0, 1.0], np.float32)
    opt = fastoptim.Lion([w], lr=0.5, betas=(0.5, 0.5), weight_decay=0.2, backend=backend)
    opt.step([np.array([0.0, np.nan, 3.0, -3.0], np.float32)])
    decayed = np.float32(1) * np.float32(1 - 0.5 * 0.2)
    np.testing.assert_array_equal(w, [decayed, decayed, decayed - np.float32(0.5),
                                      decayed + np.float32(0.5)])
    assert np.isnan(opt.state[w]["exp_avg"][1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_maximize_is_the_negated_gradient(backend):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(9)]
    grads = [[rng.standard_normal(9)] for _ in range(4)]
    a = _run(backend, init, grads, lr=0.1, maximize=True)
    b = _run(backend, init, [[-g[0]] for g in grads], lr=0.1)
    np.testing.assert_array_equal(a[0][0], b[0][0])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1"),
    (dict(betas=(-0.1, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    (dict(betas=0.9), TypeError, "betas must be a pair"),
    (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
    (dict(maximize=1), TypeError, "maximize must be a bool"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
])
def test_bad_hyperparameters_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastoptim.Lion([np.ones(2)], **kwargs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rejected_step_changes_nothing(backend):
    w = np.ones(4)
    opt = fastoptim.Lion([w], lr=0.1, backend=backend)
    opt.step([np.ones(4)])
    before = (w.copy(), opt.state[w]["exp_avg"].copy())
    opt.param_groups[0]["betas"] = (0.9, 2.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        opt.step([np.ones(4)])
    with pytest.raises(ValueError):
        opt.param_groups[0]["betas"] = (0.9, 0.99)
        opt.step([np.ones(3)])  # wrong shape
    np.testing.assert_array_equal(w, before[0])
    np.testing.assert_array_equal(opt.state[w]["exp_avg"], before[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_functional_lion_step_matches_the_class(backend):
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(5,), (2, 3)]]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in init] for _ in range(3)]
    kwargs = dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.3)
    want = _run(backend, init, grads, **kwargs)
    params = [p.copy() for p in init]
    exp_avgs = [np.zeros_like(p) for p in params]
    for g in grads:
        F.lion_step(params, g, exp_avgs, backend=backend, **kwargs)
    for a, b in zip(want[0] + want[1], params + exp_avgs):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="exp_avgs must have an array for every parameter"):
        F.lion_step(params, grads[0], [exp_avgs[0], None], backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_flat_params_one_call_matches_the_plain_list(backend):
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(6,), (3, 4), (1,)]]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in init] for _ in range(3)]
    want = _run(backend, init, grads, lr=0.05, weight_decay=0.1)
    flat = fastoptim.FlatParams([p.copy() for p in init])
    opt = fastoptim.Lion(flat.params, lr=0.05, weight_decay=0.1, backend=backend)
    for g in grads:
        for k, gk in enumerate(g):
            flat.grads[k][...] = gk
        opt.step()
    for a, b in zip(want[0], flat.params):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_grad_norm_clips_as_scaled_gradients(backend):
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(8)]
    g = rng.standard_normal(8) * 10
    clipped = _run(backend, init, [[g]], lr=0.1, betas=(0.5, 0.9), max_grad_norm=1.0)
    scale = 1.0 / (np.linalg.norm(g) + 1e-6)
    by_hand = _run(backend, init, [[g * scale]], lr=0.1, betas=(0.5, 0.9))
    np.testing.assert_allclose(clipped[1][0], by_hand[1][0], rtol=1e-12)


def test_a_beta_of_one_is_lions_not_adams():
    """Lion takes betas in [0, 1] (beta2 = 1 keeps the moment; lion-pytorch's range), Adam
    in [0, 1) (a beta of 1 zeroes its bias correction)."""
    w = np.ones(3)
    opt = fastoptim.Lion([w], lr=0.1, betas=(1.0, 1.0))
    opt.step([np.full(3, 2.0)])  # c = 1 * 0 + 0 * g = 0: no update, the moment stays 0
    np.testing.assert_array_equal(w, 1.0)
    np.testing.assert_array_equal(opt.state[w]["exp_avg"], 0.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0"):
        fastoptim.Adam([w], betas=(1.0, 0.9))
