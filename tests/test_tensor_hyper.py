"""Complex parameters and tensor (array) hyperparameters, replayed against torch 2.13.

The fixture (tests/data/tensor_golden.npz, from tools/gen_tensor_golden.py)
holds torch's parameters and state after STEPS steps; torch is not needed here.

As for real parameters (tests/test_golden.py), the comparison with torch allows
a few ulps: torch's vectorized CPU kernels fuse multiply-adds, fastoptim rounds
every operation. What is exact: a complex parameter steps bit for bit as its
float view (``view_as_real``) does, and a float32 array lr gives float64
parameters the float32-rounded lr arithmetic that torch's tensor lr gives
(the float64 tolerance, 1e-12, is far below a float32 rounding of the lr).
"""
import os

import numpy as np
import pytest
import tensor_hyper_cases as C

import fastoptim
import fastoptim.functional as F
from fastoptim import backends, lr_scheduler

CPU = [b for b in backends.CPU_BACKENDS if backends.is_available(b)]
GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "data", "tensor_golden.npz"))
TOLERANCE = {"float32": dict(rtol=2e-6, atol=1e-7), "float64": dict(rtol=1e-12, atol=1e-13)}


def real_dtype(dtype):
    return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)


def run_fastoptim(case, backend, as_real=False):
    params = C.initial_params(case)
    if as_real:
        params = [p.reshape(-1).view(real_dtype(case["dtype"])) for p in params]
    opt = getattr(fastoptim, case["optimizer"])(params, backend=backend, **C.hyper_arrays(case))
    for step in range(1, C.STEPS + 1):
        grads = C.grads_at(case, step)
        if as_real:
            grads = [g.reshape(-1).view(real_dtype(case["dtype"])) for g in grads]
        opt.step(grads)
    return params, opt


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("case", C.cases(), ids=[c["name"] for c in C.cases()])
def test_matches_torch(case, backend):
    params, opt = run_fastoptim(case, backend)
    tol = TOLERANCE[real_dtype(case["dtype"])]
    for i, p in enumerate(params):
        expected = GOLDEN[C.key(case, i)]
        assert p.dtype == expected.dtype and p.shape == expected.shape
        np.testing.assert_allclose(p, expected, err_msg=f"param {i}", **tol)
        assert set(opt.state[i]) == {k.rsplit("/", 1)[1] for k in GOLDEN.files
                                     if k.startswith(f"{case['name']}/{i}/") and not k.endswith("/param")}
        for field, value in opt.state[i].items():
            assert np.asarray(value).dtype == GOLDEN[C.key(case, i, field)].dtype
            np.testing.assert_allclose(np.asarray(value), GOLDEN[C.key(case, i, field)],
                                       err_msg=f"{field} of param {i}", **tol)


COMPLEX = [c for c in C.cases() if c["dtype"].startswith("complex")]


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("case", COMPLEX, ids=[c["name"] for c in COMPLEX])
def test_complex_steps_exactly_as_its_real_view(case, backend):
    params, opt = run_fastoptim(case, backend)
    real, ref = run_fastoptim(case, backend, as_real=True)
    for i, (p, r) in enumerate(zip(params, real)):
        np.testing.assert_array_equal(p.reshape(-1).view(r.dtype), r)
        assert opt.state[i]["exp_avg" if "Adam" in case["optimizer"] else "momentum_buffer"].dtype \
            == p.dtype  # state is complex, as torch's zeros_like(param)


def test_float32_array_lr_rounds_like_torch_for_float64_params():
    case = next(c for c in C.cases() if c["name"] == "Adam_tensor_lr_float64_lr0d")
    params, _ = run_fastoptim(case, "numpy")
    plain = C.initial_params(case)
    opt = fastoptim.Adam(plain, lr=0.0123, backend="numpy")
    for step in range(1, C.STEPS + 1):
        opt.step(C.grads_at(case, step))
    assert not np.array_equal(params[0], plain[0])  # the float32 lr makes a difference...
    np.testing.assert_allclose(params[0], GOLDEN[C.key(case, 0)], rtol=1e-12)  # ...torch's


@pytest.mark.parametrize("bad, error, message", [
    (dict(lr=np.array([0.1, 0.2], np.float32)), ValueError, "^Tensor lr must be 1-element$"),
    (dict(lr=np.array(1, np.int32)), TypeError, "lr as an array must be float32 or float64"),
    (dict(lr=np.array(-0.1, np.float32)), ValueError, "Invalid learning rate"),
    (dict(betas=(np.array(0.9, np.float32), 0.999)), ValueError,
     "^betas must be either both floats or both Tensors$"),
    (dict(betas=(np.ones(2, np.float32) * 0.9, np.ones(2, np.float32) * 0.9)), ValueError,
     r"^Tensor betas\[0\] must be 1-element$"),
])
def test_array_hyperparameters_follow_torchs_rules(bad, error, message):
    with pytest.raises(error, match=message):
        fastoptim.Adam([np.ones(2, np.float32)], **bad)


@pytest.mark.parametrize("backend", CPU)
def test_array_betas_are_accepted(backend):
    p = np.ones(3, np.float32)
    opt = fastoptim.Adam([p], lr=0.1, betas=(np.array(0.9, np.float32), np.array(0.99, np.float32)),
                         backend=backend)
    opt.step([np.ones(3, np.float32)])
    np.testing.assert_allclose(p, 0.9, rtol=1e-6)


@pytest.mark.parametrize("name, kwargs", [
    ("StepLR", dict(step_size=1, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.1)),
])
def test_schedulers_update_an_array_lr_in_place(name, kwargs):
    lr = np.array(0.1, np.float32)
    opt = fastoptim.SGD([np.ones(2, np.float32)], lr=lr)
    sched = getattr(lr_scheduler, name)(opt, **kwargs)
    expected = np.float32(0.1)
    for _ in range(3):
        opt.step([np.ones(2, np.float32)])
        sched.step()
        expected = expected * np.float32(kwargs["gamma"])  # torch: tensor lr * gamma, in float32
        assert opt.param_groups[0]["lr"] is lr  # the same array, updated in place
        assert lr.dtype == np.float32 and lr == expected


@pytest.mark.parametrize("backend", CPU)
def test_functional_accepts_0d_array_step_and_lr(backend):
    w, w2 = np.ones(4, np.float32), np.ones(4, np.float32)
    g = np.full(4, 0.5, np.float32)
    m, v, m2, v2 = (np.zeros(4, np.float32) for _ in range(4))
    F.adam_step([w], [g], [m], [v], step=np.array(1.0, np.float32), lr=np.array(0.1, np.float32),
                backend=backend)
    F.adam_step([w2], [g], [m2], [v2], step=1, lr=np.float32(0.1).item(), backend="numpy")
    np.testing.assert_allclose(w, w2, rtol=1e-6)
    with pytest.raises(TypeError, match="1-element real array"):
        F.adam_step([w], [g], [m], [v], step=np.array([1.0, 2.0]), backend=backend)
    with pytest.raises(ValueError, match="Invalid step"):
        F.adam_step([w], [g], [m], [v], step=np.array(0.0), backend=backend)
    F.sgd_step([w], [g], lr=np.array([0.1], np.float32), backend=backend)
