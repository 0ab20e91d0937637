"""Issue 14's state checks and live edits on CUDA device arrays (the simulator in CI)."""
import numpy as np
import pytest

numba_cuda = pytest.importorskip("numba.cuda")
if not numba_cuda.is_available():  # pragma: no cover - conftest enables the simulator
    pytest.skip("numba.cuda is not available", allow_module_level=True)

from numba import cuda  # noqa: E402

import fastoptim  # noqa: E402

F32 = np.float32


def dev(a):
    return cuda.to_device(np.asarray(a, order="C"))


@pytest.mark.parametrize("layout", ["list", "flat"])
@pytest.mark.parametrize("bad, error, message", [
    (lambda: dev(np.zeros(10, F32)), ValueError, "shape and dtype of its parameter"),
    (lambda: np.zeros(6, F32), TypeError, "CUDA device array"),
    (lambda: [0.0] * 6, TypeError, "CUDA device array"),
    (lambda: dev(np.zeros(6, np.float64)), ValueError, "shape and dtype of its parameter"),
])
def test_bad_device_state_array_is_refused(layout, bad, error, message):
    if layout == "flat":
        flat = fastoptim.FlatParams([np.ones(6, F32), np.ones(3, F32)], device="cuda")
        params = flat.params
    else:
        params = [dev(np.ones(6, F32)), dev(np.ones(3, F32))]
    opt = fastoptim.Adam(params, lr=0.1)
    grads = [dev(np.ones(6, F32)), dev(np.ones(3, F32))]
    opt.step(grads)
    before = [p.copy_to_host() for p in params]
    opt.state[0]["exp_avg"] = bad()
    with pytest.raises(error, match=message):
        opt.step(grads)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.copy_to_host(), b)


def test_rebinding_device_state_is_used_by_the_kernel():
    params = [dev(np.ones(6, F32)), dev(np.ones(3, F32))]
    host = [np.ones(6, F32), np.ones(3, F32)]
    opt = fastoptim.Adam(params, lr=0.1)
    ref = fastoptim.Adam(host, lr=0.1, backend="numpy")
    opt.step([dev(np.ones(6, F32)), dev(np.ones(3, F32))])
    ref.step([np.ones(6, F32), np.ones(3, F32)])
    opt.state[0]["exp_avg"] = dev(np.full(6, 0.5, F32))
    ref.state[0]["exp_avg"] = np.full(6, 0.5, F32)
    opt.step([dev(np.ones(6, F32)), dev(np.ones(3, F32))])
    ref.step([np.ones(6, F32), np.ones(3, F32)])
    np.testing.assert_allclose(params[0].copy_to_host(), host[0], rtol=1e-6)
    np.testing.assert_allclose(opt.state[0]["exp_avg"].copy_to_host(), ref.state[0]["exp_avg"],
                               rtol=1e-6)


def test_device_flat_params_zero_grad_and_step_without_grads():
    flat = fastoptim.FlatParams([np.zeros(3, F32), np.zeros(2, F32)], device="cuda")
    opt = fastoptim.SGD(flat.params, lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        g = flat.grad_buffer.copy_to_host()
        g[:3] += 1.0
        flat.grad_buffer.copy_to_device(g)
        opt.step()
    np.testing.assert_array_equal(flat.params[0].copy_to_host(), [-3, -3, -3])


def test_array_lr_on_the_device_matches_the_host_and_complex_is_refused():
    lr = np.array(0.1, F32)
    p = dev(np.linspace(-1, 1, 5, dtype=F32))
    h = np.linspace(-1, 1, 5, dtype=F32)
    opt = fastoptim.Adam([p], lr=lr)
    ref = fastoptim.Adam([h], lr=lr.copy(), backend="numpy")
    for _ in range(3):
        opt.step([dev(np.full(5, 0.5, F32))])
        ref.step([np.full(5, 0.5, F32)])
    np.testing.assert_allclose(p.copy_to_host(), h, rtol=1e-6)
    with pytest.raises(TypeError, match="complex64"):
        fastoptim.Adam([dev(np.ones(2, np.complex64))])
