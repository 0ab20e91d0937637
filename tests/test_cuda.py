"""The cuda backend against the NumPy reference, step by step.

Without an NVIDIA driver, tests/conftest.py switches on Numba's CUDA simulator
(every CUDA thread a Python thread), so these tests run everywhere on tiny
arrays; on a machine with a GPU they run unchanged on it. Results are compared
with rtol 1e-6 (float32) / 1e-13 (float64), relative to each array's scale: a
GPU may contract a multiply and an add into one FMA, which the reference does not.
"""
import inspect
import math

import numpy as np
import pytest

numba_cuda = pytest.importorskip("numba.cuda")
if not numba_cuda.is_available():  # pragma: no cover - conftest enables the simulator
    pytest.skip("numba.cuda is not available", allow_module_level=True)

from numba import cuda  # noqa: E402

import fastoptim  # noqa: E402
import fastoptim.functional as F  # noqa: E402
from fastoptim import backends  # noqa: E402
from fastoptim.arrays import cuda_runtime  # noqa: E402
from fastoptim.arrays import device as _cuda  # noqa: E402  (the CUDA side's one namespace)
from fastoptim.backends import _cuda_multi, _scalars, cuda_backend  # noqa: E402

SIZES = [(), (1,), (7,), (3, 11), (257,)]
DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}

from flag_cases import ADAM_FLAGS, SGD_FLAGS  # noqa: E402


# ------------------------------------------------------------------- helpers
def dev(a):
    return cuda.to_device(np.asarray(a, order="C"))


def to_device_params(arrays, flat):
    """Copies of host ``arrays`` on the device: views of one FlatParams buffer (returned
    too) when ``flat``, separate device arrays otherwise."""
    if flat:
        fp = fastoptim.FlatParams(arrays, device="cuda")
        return fp.params, fp
    return [dev(a) for a in arrays], None


def host(a):
    return a.copy_to_host()


def assert_close(actual, expected, err_msg=""):
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, err_msg
    rtol = RTOL[expected.dtype]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def assert_states_close(dev_sd, ref_sd):
    assert dev_sd["state"].keys() == ref_sd["state"].keys()
    for i, entry in ref_sd["state"].items():
        assert entry.keys() == dev_sd["state"][i].keys()
        for key, value in entry.items():
            got = dev_sd["state"][i][key]
            assert isinstance(got, np.ndarray), f"state[{i}][{key!r}] is not on the host"
            assert_close(got, value, err_msg=f"state[{i}][{key!r}]")


def random_arrays(rng, sizes, dtype):
    return [np.asarray(rng.standard_normal(s)).astype(dtype) for s in sizes]


def run_pair(make, sizes, dtype, steps=3, seed=0, groups=None):
    """Step the reference (host) and the cuda backend side by side; compare after every step."""
    rng = np.random.default_rng(seed)
    init = random_arrays(rng, sizes, dtype)
    ref_params = [p.copy() for p in init]
    dev_params = [dev(p) for p in init]
    ref, fast = make(ref_params, "numpy"), make(dev_params, "cuda")
    assert fast.backend == "cuda"
    for _ in range(steps):
        grads = random_arrays(rng, sizes, dtype)
        ref.step(grads)
        fast.step([dev(g) for g in grads])
        for i, (a, b) in enumerate(zip(ref_params, dev_params)):
            assert_close(host(b), a, err_msg=f"param {i}")
        assert_states_close(fast.state_dict(), ref.state_dict())
    return ref, fast, ref_params, dev_params


@pytest.fixture
def launches(monkeypatch):
    """Count optimizer kernel launches (fills and copies are not counted)."""
    counter = {"n": 0}
    original = cuda_backend._configured

    def counting(kernel, n):
        launcher = original(kernel, n)

        def launch(*args):
            counter["n"] += 1
            return launcher(*args)

        return launch

    monkeypatch.setattr(cuda_backend, "_configured", counting)
    return counter


# ------------------------------------------------------------ registry, kernels
def test_cuda_is_an_available_backend():
    assert "cuda" in fastoptim.available_backends()
    assert backends.resolve("auto", on_device=True) == "cuda"
    assert cuda_backend.usable() and cuda_backend.why_unusable() == ""


def test_usable_compiles_and_runs_a_kernel(monkeypatch):
    """usable() is True only after a test kernel compiled and ran; a failure says why."""
    calls = []
    original = cuda_runtime._run_probe
    monkeypatch.setattr(cuda_runtime, "_run_probe", lambda: calls.append(1) or original())
    monkeypatch.setattr(cuda_runtime, "_probe_result", None)
    assert cuda_backend.usable() and calls == [1]
    assert cuda_backend.usable() and calls == [1]  # once per process

    def no_nvvm():
        raise OSError("libNVVM cannot be found")

    monkeypatch.setattr(cuda_runtime, "_run_probe", no_nvvm)
    monkeypatch.setattr(cuda_runtime, "_probe_result", None)
    assert not cuda_backend.usable()
    reason = cuda_backend.why_unusable()
    assert "could not compile and run a test kernel" in reason and "libNVVM" in reason
    assert "fastoptim[cuda13]" in reason
    with pytest.raises(RuntimeError, match="libNVVM"):
        _cuda._require()


def test_kernels_take_the_scalars_in_order():
    """Kernel arguments after the arrays are exactly _scalars' fields, then the flags."""
    names = list(inspect.signature(cuda_backend._adam_kernel.py_func).parameters)
    assert names[7:] == list(_scalars.AdamScalars._fields) + ["amsgrad", "maximize", "attempted", "lr"]
    names = list(inspect.signature(cuda_backend._sgd_kernel.py_func).parameters)
    assert names[5:] == list(_scalars.SGDScalars._fields) + ["first_step", "nesterov", "maximize",
                                                             "track_first"]
    # the pointer-table kernels: (table, total, ctrl), then the same scalars and flags
    names = list(inspect.signature(_cuda_multi._adam_multi).parameters)
    assert names[3:] == list(_scalars.AdamScalars._fields) + ["amsgrad", "maximize", "attempted",
                                                              "lr"]
    names = list(inspect.signature(_cuda_multi._sgd_multi).parameters)
    assert names[3:] == list(_scalars.SGDScalars._fields) + ["first_step", "nesterov", "maximize",
                                                             "track_first"]


# ------------------------------------------------------------------- the math
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", SGD_FLAGS, ids=str)
def test_sgd_matches_reference(dtype, flags):
    run_pair(lambda ps, b: fastoptim.SGD(ps, lr=0.05, backend=b, **flags), SIZES, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, flags", ADAM_FLAGS, ids=str)
def test_adam_matches_reference(dtype, cls, flags):
    run_pair(lambda ps, b: getattr(fastoptim, cls)(ps, lr=0.01, backend=b, **flags), SIZES, dtype)


def test_two_param_groups():
    def make(ps, b):
        return fastoptim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05, "amsgrad": True,
                                                   "weight_decay": 0.1}], lr=0.01, backend=b)

    run_pair(make, SIZES, np.float32, steps=3)


def test_grid_stride_loop_covers_more_elements_than_threads(monkeypatch):
    monkeypatch.setattr(cuda_runtime, "GRID_LIMIT", 1)  # one block: every thread loops
    n = 1000
    assert _cuda.grid(n)[0] == 1 and _cuda.grid(n)[1] < n
    run_pair(lambda ps, b: fastoptim.SGD(ps, lr=0.1, momentum=0.9, backend=b), [(n,)],
             np.float32, steps=2)


def test_launch_configurations_are_cached():
    a = _cuda.configured(cuda_backend._adam_kernel, 1000, 0)
    assert _cuda.configured(cuda_backend._adam_kernel, 1000, 0) is a
    assert _cuda.configured(cuda_backend._adam_kernel, 1001, 0) is a  # the same size bucket
    assert _cuda.configured(cuda_backend._sgd_kernel, 1000, 0) is not a


# ------------------------------------------------------------ arrays.device
def test_one_is_device_array_for_host_and_device_code():
    """Host code asks arrays.is_device_array without numba.cuda; the device side uses the same one."""
    from fastoptim.arrays import host as host_arrays
    from fastoptim.arrays import is_device_array

    class Interface:  # a CuPy array or a torch CUDA tensor, as far as fastoptim looks
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (256, False),
                                    "version": 3}

    assert _cuda.is_device_array is is_device_array is host_arrays.is_device_array
    assert is_device_array(dev(np.ones(3, np.float32))) and is_device_array(Interface())
    assert not is_device_array(np.ones(3, np.float32)) and not is_device_array([1.0])
    assert not is_device_array(np.ones(3, np.float32).view(np.matrix))


def test_device_reaches_the_runtime_names():
    assert _cuda.configured is cuda_runtime.configured and _cuda.use_stream is cuda_runtime.use_stream
    assert _cuda.SIMULATOR == cuda_runtime.SIMULATOR and _cuda.cuda is cuda
    with pytest.raises(AttributeError, match="no_such_name"):
        _cuda.no_such_name  # noqa: B018


# -------------------------------------------------------------- one-launch mode
@pytest.mark.parametrize("named", [False, True])
def test_flat_params_on_device_launch_once_per_group(launches, named):
    rng = np.random.default_rng(1)
    init = random_arrays(rng, SIZES, np.float32)
    names = [f"w{i}" for i in range(len(init))]
    flat = fastoptim.FlatParams(dict(zip(names, init)) if named else init, device="cuda")
    assert flat.device == "cuda" and _cuda.is_device_array(flat.buffer)
    views = [flat.params[k] for k in names] if named else flat.params
    for view, value in zip(views, init):
        assert tuple(view.shape) == value.shape and _cuda.is_device_array(view)
        np.testing.assert_array_equal(host(view), value)
    ref_params = [p.copy() for p in init]
    if named:  # a dict of named arrays: one group
        fast = fastoptim.AdamW(flat.params, lr=0.01, amsgrad=True)
        ref = fastoptim.AdamW(dict(zip(names, ref_params)), lr=0.01, amsgrad=True,
                              backend="numpy")
    else:  # two groups over one buffer
        fast = fastoptim.AdamW([{"params": views[:2]},
                                {"params": views[2:], "lr": 0.05, "weight_decay": 0.1}],
                               lr=0.01, amsgrad=True)
        ref = fastoptim.AdamW([{"params": ref_params[:2]},
                               {"params": ref_params[2:], "lr": 0.05, "weight_decay": 0.1}],
                              lr=0.01, amsgrad=True, backend="numpy")
    assert fast.backend == "cuda"
    assert all(s is not None and s.root is flat.buffer for s in fast._segments)
    for step in range(1, 4):
        grads = random_arrays(rng, SIZES, np.float32)
        flat.grad_buffer.copy_to_device(np.concatenate([g.ravel() for g in grads]))
        before = launches["n"]
        fast.step(flat.grads)
        assert launches["n"] - before == len(fast.param_groups)  # one kernel per group
        ref.step(dict(zip(names, grads)) if named else grads)
        for i, (a, b) in enumerate(zip(ref_params, views)):
            assert_close(host(b), a, err_msg=f"param {i}")
        assert_states_close(fast.state_dict(), ref.state_dict())
    assert float(fast.state[0]["step"]) == 3.0
    flat.zero_grad()
    assert not host(flat.grad_buffer).any()


def test_views_of_one_device_buffer_launch_once(launches):
    """Device views that tile one buffer (not made by FlatParams) also take one launch."""
    buf, gbuf = dev(np.ones(40, np.float64)), dev(np.full(40, 0.5))
    params = [buf[0:6].reshape(2, 3), buf[6:40]]
    opt = fastoptim.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step([gbuf[0:6].reshape(2, 3), gbuf[6:40]])
    assert launches["n"] == 2
    ref = np.ones(40)
    ref_opt = fastoptim.SGD([ref], lr=0.1, momentum=0.9, backend="numpy")
    for _ in range(2):
        ref_opt.step([np.full(40, 0.5)])
    assert_close(host(buf), ref)


ONE_LAUNCH = cuda_backend.POINTER_KERNELS and not _cuda.SIMULATOR


def test_separate_arrays_launch_once_per_list(launches, monkeypatch):
    """A plain list goes through Optimizer._step_list: one pointer-table launch on a GPU (the simulator
    cannot run raw-pointer kernels, so there each tensor still gets its own launch)."""
    calls = []
    original = cuda_backend.adam_multi
    monkeypatch.setattr(cuda_backend, "adam_multi",
                        lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
    params = [dev(np.ones(5, np.float32)) for _ in range(3)]
    opt = fastoptim.Adam(params, lr=0.1)
    opt.step([dev(np.ones(5, np.float32)) for _ in range(3)])
    assert calls == [3]
    assert launches["n"] == (1 if ONE_LAUNCH else 3)
    opt.step([dev(np.ones(5, np.float32)), None, dev(np.ones(5, np.float32))])
    assert calls == [3, 2]
    # the skipped tensor is one step behind: two buckets, one call each
    opt.step([dev(np.ones(5, np.float32)) for _ in range(3)])
    assert sorted(calls[2:]) == [1, 2]
    assert [float(opt.state[i]["step"]) for i in range(3)] == [3.0, 2.0, 3.0]


@pytest.mark.parametrize("cls, kw", [("SGD", dict(momentum=0.9, dampening=0.1)),
                                     ("SGD", dict(nesterov=True, momentum=0.5)),
                                     ("SGD", {}),
                                     ("Adam", dict(amsgrad=True, weight_decay=0.1)),
                                     ("AdamW", {})])
def test_plain_list_steps_like_the_reference_with_missing_grads(cls, kw):
    rng = np.random.default_rng(31)
    shapes = [(4,), (2, 3), (0,), (9,)]
    init = random_arrays(rng, shapes, np.float32)
    ref_params = [p.copy() for p in init]
    params = [dev(p) for p in init]
    ref = getattr(fastoptim, cls)(ref_params, lr=0.05, backend="numpy", **kw)
    opt = getattr(fastoptim, cls)(params, lr=0.05, **kw)
    for step in range(4):
        grads = random_arrays(rng, shapes, np.float32)
        if step == 1:
            grads[0] = None  # that tensor does not step (its state stays behind)
        ref.step(grads)
        opt.step([None if g is None else dev(g) for g in grads])
        for i, (a, b) in enumerate(zip(ref_params, params)):
            assert_close(host(b), a, err_msg=f"param {i}")
        assert_states_close(opt.state_dict(), ref.state_dict())


def test_flat_params_device_inputs_and_errors():
    src = [dev(np.arange(3.0)), np.ones((2, 2))]
    flat = fastoptim.FlatParams(src, device="cuda")
    np.testing.assert_array_equal(host(flat.buffer), [0, 1, 2, 1, 1, 1, 1])
    assert fastoptim.FlatParams([np.ones(2)]).device == "cpu"
    with pytest.raises(ValueError, match="device"):
        fastoptim.FlatParams([np.ones(2)], device="gpu")


# ------------------------------------------------------------ choosing, errors
def test_auto_picks_cuda_and_cpu_backends_refuse_device_arrays():
    assert fastoptim.SGD([dev(np.ones(3))], lr=0.1).backend == "cuda"
    assert fastoptim.Adam([dev(np.ones(3))], backend="auto").backend == "cuda"
    with pytest.raises(ValueError, match="cannot update CUDA device arrays"):
        fastoptim.Adam([dev(np.ones(3))], backend="numpy")
    with pytest.raises(ValueError, match="cannot update host NumPy arrays"):
        fastoptim.Adam([np.ones(3)], backend="cuda")


def test_mixing_host_and_device_params_is_an_error():
    with pytest.raises(ValueError, match="host array but others are CUDA device arrays"):
        fastoptim.Adam([dev(np.ones(3)), np.ones(3)])
    opt = fastoptim.Adam([dev(np.ones(3))])
    with pytest.raises(ValueError, match="host or all on a CUDA device"):
        opt.add_param_group({"params": [np.ones(2)]})


def test_gradient_errors():
    p = dev(np.ones(4, np.float32))
    opt = fastoptim.Adam([p], lr=0.1)
    with pytest.raises(TypeError, match="host ndarray but its parameter is a CUDA device array"):
        opt.step([np.ones(4, np.float32)])
    with pytest.raises(TypeError, match="dtype"):
        opt.step([dev(np.ones(4, np.float64))])
    with pytest.raises(ValueError, match="shape"):
        opt.step([dev(np.ones(5, np.float32))])
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([p])
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step([dev(np.ones(8, np.float32))[::2]])
    assert opt.state_dict()["state"] == {}  # nothing was written
    np.testing.assert_array_equal(host(p), np.ones(4))


def test_parameter_errors():
    with pytest.raises(ValueError, match="C-contiguous"):
        fastoptim.SGD([dev(np.ones(8))[::2]], lr=0.1)
    with pytest.raises(TypeError, match="float32 and float64"):
        fastoptim.SGD([dev(np.ones(3, np.int32))], lr=0.1)
    p = dev(np.ones(8))
    with pytest.raises(ValueError, match="overlap"):
        fastoptim.SGD([p[0:5], p[3:8]], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        fastoptim.SGD([p, p], lr=0.1)


# ----------------------------------------------------------------- state_dict
def test_state_dict_round_trip_on_device():
    rng = np.random.default_rng(2)
    init = random_arrays(rng, SIZES, np.float32)
    grads = [random_arrays(rng, SIZES, np.float32) for _ in range(4)]
    a_params, b_params = [dev(p) for p in init], [dev(p) for p in init]
    a = fastoptim.Adam(a_params, lr=0.01, amsgrad=True)
    for g in grads[:2]:
        a.step([dev(x) for x in g])
    sd = a.state_dict()
    for entry in sd["state"].values():
        for value in entry.values():
            assert isinstance(value, np.ndarray)
    for bp, ap in zip(b_params, a_params):
        bp.copy_to_device(host(ap))
    b = fastoptim.Adam(b_params, lr=0.01, amsgrad=True)
    b.load_state_dict(sd)
    for entry in b.state.values():
        for key, value in entry.items():
            assert key == "step" or _cuda.is_device_array(value)
    for g in grads[2:]:
        a.step([dev(x) for x in g])
        b.step([dev(x) for x in g])
    for x, y in zip(a_params, b_params):
        np.testing.assert_array_equal(host(x), host(y))


@pytest.mark.parametrize("flat", [False, True])
def test_cpu_state_dict_continues_on_the_gpu(flat):
    """Train on the CPU, load the state into a CUDA optimizer: it goes on like the CPU run."""
    rng = np.random.default_rng(3)
    init = random_arrays(rng, SIZES, np.float64)
    grads = [random_arrays(rng, SIZES, np.float64) for _ in range(4)]
    cpu_params = [p.copy() for p in init]
    cpu = fastoptim.SGD(cpu_params, lr=0.05, momentum=0.9, weight_decay=0.01, backend="numpy")
    for g in grads[:2]:
        cpu.step(g)
    gpu_params, _ = to_device_params(cpu_params, flat)
    gpu = fastoptim.SGD(gpu_params, lr=0.05, momentum=0.9, weight_decay=0.01)
    gpu.load_state_dict(cpu.state_dict())
    for g in grads[2:]:
        cpu.step(g)
        gpu.step([dev(x) for x in g])
    for i, (a, b) in enumerate(zip(cpu_params, gpu_params)):
        assert_close(host(b), a, err_msg=f"param {i}")
    assert_states_close(gpu.state_dict(), cpu.state_dict())


# ----------------------------------------------------------------- functional
def test_functional_adam_step_on_device():
    rng = np.random.default_rng(4)
    sizes = [(5,), (2, 3)]
    p_ref = random_arrays(rng, sizes, np.float32)
    p_dev = [dev(p) for p in p_ref]
    m_ref, v_ref, w_ref = ([np.zeros_like(p) for p in p_ref] for _ in range(3))
    m_dev, v_dev, w_dev = ([dev(np.zeros_like(p)) for p in p_ref] for _ in range(3))
    for step in range(1, 4):
        grads = random_arrays(rng, sizes, np.float32)
        kw = dict(step=step, lr=0.01, weight_decay=0.1, amsgrad=True)
        F.adam_step(p_ref, grads, m_ref, v_ref, w_ref, backend="numpy", **kw)
        F.adam_step(p_dev, [dev(g) for g in grads], m_dev, v_dev, w_dev, **kw)
    for a, b in zip(p_ref + m_ref + v_ref + w_ref, p_dev + m_dev + v_dev + w_dev):
        assert_close(host(b), a)


def test_functional_sgd_step_creates_device_buffers():
    p_ref, p_dev = np.ones(5), dev(np.ones(5))
    bufs_ref, bufs_dev = [None], [None]
    for _ in range(3):
        g = np.array([0.5, -1.0, 2.0, 0.0, 3.0])
        F.sgd_step([p_ref], [g], bufs_ref, lr=0.1, momentum=0.9, nesterov=True, backend="numpy")
        F.sgd_step([p_dev], [dev(g)], bufs_dev, lr=0.1, momentum=0.9, nesterov=True)
    assert _cuda.is_device_array(bufs_dev[0])
    assert_close(host(bufs_dev[0]), bufs_ref[0])
    assert_close(host(p_dev), p_ref)
    with pytest.raises(ValueError, match="backend 'numpy' cannot update CUDA device arrays"):
        F.sgd_step([p_dev], [dev(g)], lr=0.1, backend="numpy")


# -------------------------------------------------------------------- streams
def test_streams():
    assert _cuda.get_stream() == 0  # the default stream
    s = cuda.stream()
    p_a, p_b = dev(np.ones(33, np.float32)), dev(np.ones(33, np.float32))
    g = dev(np.full(33, 0.25, np.float32))
    a, b = fastoptim.Adam([p_a], lr=0.1), fastoptim.Adam([p_b], lr=0.1)
    with cuda_backend.use_stream(s):
        assert cuda_backend.get_stream() is s
        a.step([g])
        a.step([g])
    assert cuda_backend.get_stream() == 0
    try:
        cuda_backend.set_stream(s)
        b.step([g])
        b.step([g])
        host_b = b.state_dict()
    finally:
        cuda_backend.set_stream(None)
    s.synchronize()
    assert _cuda.get_stream() == 0
    np.testing.assert_array_equal(host(p_a), host(p_b))
    np.testing.assert_array_equal(host_b["state"][0]["exp_avg"], a.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match="stream must be"):
        cuda_backend.set_stream("fast")


# ---------------------------------------------------------------- benchmark
@pytest.mark.filterwarnings("ignore:Simulator timings are bogus")
def test_benchmark_smoke():
    from fastoptim.bench import cuda as bench

    rows = bench.run_cuda_bench(sizes=[100], repeat=1, many=(3, 32), optimizers=["adam", "sgd"],
                                peers=False, allow_simulator=True)
    impls = {r["impl"] for r in rows}
    assert "fastoptim cuda" in impls and "fastoptim cuda, FlatParams (one launch)" in impls
    assert {"device-to-device copy (reference)", "fastoptim cuda, plain list (optimizer)",
            "fastoptim cuda, plain list, one launch (backend call)"} <= impls
    for r in rows:
        if r["impl"] == "device-to-device copy (reference)":
            # (the simulator's events may time a copy at 0 ms: then there is no ratio)
            assert r["of_copy"] == pytest.approx(1.0) if r["ms"] > 0 else r["of_copy"] is None
        if "plain list" in r["impl"] or "FlatParams" in r["impl"]:
            assert r["host_us"] > 0 and r["tensors"] == 3
    assert all(r["elements"] > 0 for r in rows)
    with pytest.raises(ValueError):
        bench.run_cuda_bench(sizes=["lots"], allow_simulator=True)


# ------------------------------------------------------------- safe training
@pytest.mark.parametrize("flat", [False, True])
def test_skip_nonfinite_and_max_grad_norm_on_device(flat):
    rng = np.random.default_rng(11)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(7,), (3, 2)]]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) * 3 for p in init] for _ in range(3)]
    poisoned = [g.copy() for g in grads[1]]
    poisoned[1][0, 0] = np.inf
    ref_params = [p.copy() for p in init]
    ref = fastoptim.Adam(ref_params, lr=0.1, backend="numpy", max_grad_norm=1.0)
    for g in grads:
        ref.step(g)
    params, fp = to_device_params(init, flat)
    opt = fastoptim.Adam(params, lr=0.1, skip_nonfinite=True, max_grad_norm=1.0)
    assert opt.backend == "cuda"
    for g in (grads[0], poisoned, grads[1], grads[2]):
        if flat:
            for view, value in zip(fp.grads, g):
                view.copy_to_device(value)
            opt.step(fp.grads)
        else:
            opt.step([dev(x) for x in g])
        assert opt.last_step_skipped == (g is poisoned)
    assert opt.skipped_steps == 1 and float(opt.state[0]["step"]) == 3
    for p, r in zip(params, ref_params):
        assert_close(host(p), r)


# ------------------------------------------ device-side max_grad_norm / skip_nonfinite
from fastoptim.backends import _reduce_cuda as _cuda_reduce  # noqa: E402


@pytest.fixture
def host_reads(monkeypatch):
    """Count the copies of the control buffer back to the host (the only wait of a step)."""
    counter = {"n": 0}
    original = _cuda_reduce.GradControl.read

    def counting(self):
        counter["n"] += 1
        return original(self)

    monkeypatch.setattr(_cuda_reduce.GradControl, "read", counting)
    return counter


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float32, np.float64)])
def test_max_grad_norm_stays_on_the_device(host_reads, dtypes):
    """The norm and factor are computed on the device; the host reads the norm only when asked."""
    rng = np.random.default_rng(21)
    shapes = [(70,), (3, 5)]
    init = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
    ref_params = [p.copy() for p in init]
    ref = fastoptim.AdamW(ref_params, lr=0.1, backend="numpy", max_grad_norm=0.5)
    params = [dev(p) for p in init]
    opt = fastoptim.AdamW(params, lr=0.1, max_grad_norm=0.5)
    for _ in range(3):
        grads = [(rng.standard_normal(s) * 2).astype(dt) for s, dt in zip(shapes, dtypes)]
        ref.step(grads)
        opt.step([dev(g) for g in grads])
        assert host_reads["n"] == 0  # the step did not wait for the GPU
        assert opt.last_grad_norm == pytest.approx(ref.last_grad_norm, rel=1e-6)
        assert host_reads["n"] == 1
        _ = opt.last_grad_norm  # read once, then kept
        assert host_reads["n"] == 1
        host_reads["n"] = 0
        for p, r in zip(params, ref_params):
            # the float32 gradient's sum of squares is a float32 sum on the device (as in
            # torch) and a float64 one on the CPU: the factor agrees to float32 precision
            np.testing.assert_allclose(host(p), r, rtol=2e-6, atol=2e-6)
    control = opt._cuda_grad_control
    opt.step([dev(g) for g in grads])
    assert opt._cuda_grad_control is control  # persistent buffers, reused


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_skip_nonfinite_on_the_device(host_reads, dampening):
    """SGD (with or without dampening) and Adam skip on the device: no read-back during
    step; the flag and the count are read when asked."""
    p = dev(np.ones(40, np.float32))
    opt = fastoptim.SGD([p], lr=0.1, momentum=0.9, dampening=dampening, skip_nonfinite=True)
    bad = np.ones(40, np.float32)
    bad[17] = np.nan
    opt.step([dev(bad)])
    assert host_reads["n"] == 0
    assert opt.last_step_skipped and opt.skipped_steps == 1 and math.isnan(opt.last_grad_norm)
    np.testing.assert_array_equal(host(p), np.ones(40))
    for entry in opt.state_dict()["state"].values():  # at most a zero buffer, never garbage
        assert not entry["momentum_buffer"].any()
    opt.step([dev(np.ones(40, np.float32))])  # the first real step: buffer = gradient
    assert not opt.last_step_skipped and opt.skipped_steps == 1
    np.testing.assert_allclose(host(p), np.full(40, 0.9, np.float32))
    opt.step([dev(np.ones(40, np.float32))])
    np.testing.assert_allclose(host(p), np.full(40, 0.9 - 0.1 * (0.9 + (1 - dampening)),
                                                np.float32), rtol=1e-6)


@pytest.fixture
def host_waits(monkeypatch):
    """Count everything that makes the host wait for the GPU: device-to-host copies (of any
    device array) and device or stream synchronizations."""
    counter = {"n": 0}

    def counted(original):
        def wrapper(*args, **kwargs):
            counter["n"] += 1
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(_cuda._NativeArray, "copy_to_host",
                        counted(_cuda._NativeArray.copy_to_host))
    monkeypatch.setattr(cuda, "synchronize", counted(cuda.synchronize))
    stream_type = type(cuda.stream())
    monkeypatch.setattr(stream_type, "synchronize", counted(stream_type.synchronize))
    return counter


# (kind of step, gradients given): "bad" holds an Inf, None: that tensor has no gradient
SGD_SKIP_PLANS = {
    "skipped first": [("bad", (0, 1)), ("ok", (0, 1)), ("ok", (0, 1)), ("bad", (0, 1)),
                      ("ok", (0, 1))],
    "two skipped, then a partial step": [("bad", (0, 1)), ("bad", (0, 1)), ("ok", (0,)),
                                         ("ok", (0, 1)), ("ok", (0, 1))],
}


@pytest.mark.parametrize("plan", list(SGD_SKIP_PLANS), ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["one", "list", "flat"])
def test_sgd_dampening_after_a_skipped_first_step_matches_the_cpu(host_waits, layout, dtype,
                                                                  plan):
    """SGD with momentum and dampening != 0 skips on the device: a buffer whose first steps
    were all skipped still takes the first-step rule (buf = g) at its first real step, so
    the parameters and buffers equal the CPU reference's (which a skipped step leaves
    untouched) exactly, and no step waits for the GPU."""
    rng = np.random.default_rng(43)
    shapes = [(9,)] if layout == "one" else [(9,), (2, 5)]
    plan = [(kind, tuple(i for i in given if i < len(shapes)))
            for kind, given in SGD_SKIP_PLANS[plan]]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01, skip_nonfinite=True)
    init = random_arrays(rng, shapes, dtype)
    ref_params = [x.copy() for x in init]
    ref = fastoptim.SGD(ref_params, backend="numpy", **kw)
    params, fp = to_device_params(init, layout == "flat")
    opt = fastoptim.SGD(params, **kw)
    twin_params, _ = to_device_params(init, layout == "flat")  # sees the real steps only
    twin = fastoptim.SGD(twin_params, **{**kw, "skip_nonfinite": False})
    for kind, given in plan:
        grads = random_arrays(rng, shapes, dtype)
        if kind == "bad":
            grads[-1].flat[-1] = np.inf
        listed = [g if i in given else None for i, g in enumerate(grads)]
        ref.step(listed)
        if fp is not None and len(given) == len(shapes):
            for view, value in zip(fp.grads, grads):
                view.copy_to_device(value)
            device_grads = fp.grads
        else:
            device_grads = [dev(g) if g is not None else None for g in listed]
        host_waits["n"] = 0
        opt.step(device_grads[0] if layout == "one" else device_grads)
        assert host_waits["n"] == 0, "the step waited for the GPU"
        if kind == "ok":
            twin.step([dev(g) if g is not None else None for g in listed]
                      if layout != "one" else dev(grads[0]))
    assert opt.skipped_steps == ref.skipped_steps == sum(k == "bad" for k, _ in plan)
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    for i in range(len(shapes)):
        exact = np.testing.assert_array_equal
        # the same kernels with and without the skipped steps: equal bit for bit anywhere
        exact(host(params[i]), host(twin_params[i]))
        exact(sd["state"][i]["momentum_buffer"],
              twin.state_dict()["state"][i]["momentum_buffer"])
        # and the CPU reference: bit for bit under the simulator (a GPU may contract FMAs)
        check = exact if _cuda.SIMULATOR else assert_close
        check(host(params[i]), ref_params[i])
        check(sd["state"][i]["momentum_buffer"], ref_sd["state"][i]["momentum_buffer"])


@pytest.mark.parametrize("flat", [False, True])
def test_sgd_dampening_loaded_state_is_not_a_pending_first_step(flat):
    """A buffer loaded after a skipped first step is real state: the next step uses the
    momentum rule, as on the CPU (the pending mark belonged to the replaced buffer)."""
    rng = np.random.default_rng(44)
    shapes = [(9,), (2, 5)]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.3, skip_nonfinite=True)
    init = random_arrays(rng, shapes, np.float64)
    ref_params = [x.copy() for x in init]
    ref = fastoptim.SGD(ref_params, backend="numpy", **kw)
    ref.step(random_arrays(rng, shapes, np.float64))  # a real step: real buffers
    params, fp = to_device_params(init, flat)
    for p, r in zip(params, ref_params):
        p.copy_to_device(r)
    opt = fastoptim.SGD(params, **kw)
    bad = random_arrays(rng, shapes, np.float64)
    bad[0][0] = np.nan
    opt.step([dev(g) for g in bad])  # skipped first step: pending zero buffers
    opt.load_state_dict(ref.state_dict())
    for _ in range(2):
        grads = random_arrays(rng, shapes, np.float64)
        ref.step(grads)
        opt.step([dev(g) for g in grads])
    check = np.testing.assert_array_equal if _cuda.SIMULATOR else assert_close
    for p, r in zip(params, ref_params):
        check(host(p), r)
    for i, entry in ref.state_dict()["state"].items():
        check(opt.state_dict()["state"][i]["momentum_buffer"], entry["momentum_buffer"])


@pytest.mark.parametrize("layout", ["one", "list", "flat"])
def test_adam_skips_on_the_device_and_counts_the_true_step(host_reads, layout):
    """Skipped steps (first and later ones) are counted on the device; the bias corrections
    of the following steps are those of the true step, as on the CPU."""
    rng = np.random.default_rng(41)
    shapes = [(6,)] if layout == "one" else [(6,), (2, 3)]
    init = random_arrays(rng, shapes, np.float32)
    ref_params = [x.copy() for x in init]
    ref = fastoptim.Adam(ref_params, lr=0.05, backend="numpy", skip_nonfinite=True)
    params, fp = to_device_params(init, layout == "flat")
    opt = fastoptim.Adam(params, lr=0.05, skip_nonfinite=True, max_grad_norm=10.0)
    ref.max_grad_norm = 10.0
    plan = ["bad", "ok", "ok", "bad", "bad", "ok", "ok"]
    for kind in plan:
        grads = random_arrays(rng, shapes, np.float32)
        if kind == "bad":
            grads[-1].flat[0] = np.inf
        ref.step(grads)
        if fp is not None:
            for view, value in zip(fp.grads, grads):
                view.copy_to_device(value)
            opt.step(fp.grads)
        else:
            opt.step([dev(g) for g in grads])
        assert host_reads["n"] == 0
    assert opt.skipped_steps == ref.skipped_steps == 3 and not opt.last_step_skipped
    assert [float(opt.state[i]["step"]) for i in range(len(shapes))] == [4.0] * len(shapes)
    for a, b in zip(ref_params, params):
        np.testing.assert_allclose(host(b), a, rtol=2e-6, atol=2e-6)
    sd = opt.state_dict()
    assert all(float(entry["step"]) == 4.0 for entry in sd["state"].values())
    assert_states_close(sd, ref.state_dict())


def test_update_kernels_obey_the_device_flag():
    """The skip flag is honoured by the kernel itself (what a sync-free skip relies on)."""
    p = dev(np.ones(33, np.float32))
    control = _cuda_reduce.GradControl(((33, np.dtype(np.float32)),))
    bad = np.ones(33, np.float32)
    bad[3] = np.inf
    control.run([dev(bad)], None, True)
    cuda_backend.sgd(p, dev(np.ones(33, np.float32)), None, lr=0.5, momentum=0, dampening=0,
                     weight_decay=0, nesterov=False, maximize=False, first_step=True,
                     grad_scale=control)
    np.testing.assert_array_equal(host(p), np.ones(33))
    norm, count, skip = control.read()
    assert norm == np.inf and count == 1 and skip


def test_device_norm_is_bit_reproducible_and_matches_the_host():
    rng = np.random.default_rng(22)
    hosts = [rng.standard_normal(n).astype(np.float32) for n in (1000, 1, 64)]
    devs = [dev(h) for h in hosts]
    layout = tuple((h.size, h.dtype) for h in hosts)
    norms = set()
    for _ in range(3):
        control = _cuda_reduce.GradControl(layout)
        control.run(devs, 1.0, False)
        norms.add(control.read()[0])
    assert len(norms) == 1
    (norm,) = norms
    assert norm == pytest.approx(fastoptim.clip.total_norm(hosts, backend="numpy"), rel=1e-6)
    coef = host(control.ctrl)[1]
    assert coef == fastoptim.clip.clip_coef(1.0, np.float32(norm), np.float32)
    assert fastoptim.clip.total_norm(devs) == fastoptim.clip.total_norm(devs)


# ----------------------------------------------------- one launch for a plain list
def test_multi_functions_match_the_per_tensor_kernels():
    """adam_multi / sgd_multi give the per-tensor results (the simulator runs them per tensor;
    on a GPU they are one pointer-table launch)."""
    rng = np.random.default_rng(23)
    shapes = [(5,), (0,), (3, 4), (1,)]
    for amsgrad in (False, True):
        init = random_arrays(rng, shapes, np.float32)
        grads = random_arrays(rng, shapes, np.float32)
        a = [dev(x) for x in init]
        b = [dev(x) for x in init]
        state_a = [[dev(np.zeros(s, np.float32)) for s in shapes] for _ in range(3)]
        state_b = [[dev(np.zeros(s, np.float32)) for s in shapes] for _ in range(3)]
        kw = dict(step=2, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1,
                  amsgrad=amsgrad, maximize=False, decoupled_weight_decay=True)
        cuda_backend.adam_multi(a, [dev(g) for g in grads], state_a[0], state_a[1],
                                state_a[2] if amsgrad else None, **kw)
        for i in range(len(shapes)):
            if not init[i].size:
                continue
            ravel = _cuda.DeviceArrays.ravel
            cuda_backend.adam(ravel(b[i]), ravel(dev(grads[i])), ravel(state_b[0][i]),
                              ravel(state_b[1][i]), ravel(state_b[2][i]) if amsgrad else None,
                              **kw)
        for x, y in zip(a + state_a[0] + state_a[1], b + state_b[0] + state_b[1]):
            assert_close(host(x), host(y))  # two kernels may contract FMAs differently
    p = [dev(x) for x in init]
    cuda_backend.sgd_multi(p, [dev(g) for g in grads], None, lr=0.5, momentum=0, dampening=0,
                           weight_decay=0, nesterov=False, maximize=False, first_step=True)
    for x, i, g in zip(p, init, grads):
        assert_close(host(x), i - np.float32(0.5) * g)


def test_pointer_table_is_rebuilt_only_when_the_tensors_change():
    _cuda_multi.tables.clear()
    arrays = [dev(np.arange(n, dtype=np.float32)) for n in (3, 5)]
    grads = [dev(np.zeros(n, np.float32)) for n in (3, 5)]
    t1, total = _cuda_multi.table((arrays, grads), [3, 5])
    assert total == 8
    rows = host(t1)
    assert list(rows[:, 0]) == [_cuda._desc(a).ptr for a in arrays]
    assert list(rows[:, 1]) == [_cuda._desc(g).ptr for g in grads]
    assert list(rows[:, 5]) == [3, 5] and list(rows[:, 6]) == [0, 3]
    assert _cuda_multi.table((list(arrays), list(grads)), [3, 5])[0] is t1  # same tensors
    new_grads = [grads[0], dev(np.zeros(5, np.float32))]
    t2, _ = _cuda_multi.table((arrays, new_grads), [3, 5])
    assert t2 is not t1 and host(t2)[1, 1] == _cuda._desc(new_grads[1]).ptr


class _ForeignArray:
    """A device array from another library: only ``__cuda_array_interface__`` and a shape
    (a torch CUDA tensor's ``size`` is a method, as here)."""

    def __init__(self, numba_array):
        self._a = numba_array
        self.shape = numba_array.shape
        self.__cuda_array_interface__ = dict(numba_array.__cuda_array_interface__)

    def size(self):
        return self.shape


def test_find_segment_accepts_arrays_whose_size_is_a_method():
    if _cuda.SIMULATOR:  # simulator arrays have no __cuda_array_interface__ to borrow
        buf = dev(np.ones(8, np.float32))
        views = [buf[0:3], buf[3:8]]
        assert _cuda.DeviceArrays.find_segment(views) is not None
        return
    buf = dev(np.ones(8, np.float32))
    views = [_ForeignArray(buf[0:3]), _ForeignArray(buf[3:8])]
    found = _cuda.DeviceArrays.find_segment(views)
    assert found is not None and found[2].shape == (8,)


# ------------------------------------------------------------ devices and streams
def test_parameters_on_another_device_are_rejected(monkeypatch):
    p0, p1 = dev(np.ones(3)), dev(np.ones(3))
    monkeypatch.setattr(_cuda, "device_id", lambda x: 1 if x is p1 else 0)
    with pytest.raises(ValueError, match=r"params\[1\] is on CUDA device 1 but the current "
                                         r"CUDA device is 0"):
        fastoptim.SGD([p0, p1], lr=0.1)
    opt = fastoptim.SGD([p0], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\] is on CUDA device 1"):
        opt.add_param_group({"params": [p1]})
    assert len(opt.param_groups) == 1
    g1 = dev(np.ones(3))
    monkeypatch.setattr(_cuda, "device_id", lambda x: 1 if x is g1 else 0)
    with pytest.raises(ValueError, match=r"grads\[0\] is on CUDA device 1 but its parameter"):
        opt.step([g1])
    np.testing.assert_array_equal(host(p0), np.ones(3))


def test_device_id_of_foreign_arrays():
    class TorchLike:
        class device:
            type, index = "cuda", 2

    class CupyLike:
        class device:
            id = 3

    assert _cuda.device_id(TorchLike()) == 2 and _cuda.device_id(CupyLike()) == 3
    assert _cuda.device_id(object()) is None


def test_external_streams_are_cached_by_handle(monkeypatch):
    made = []

    class FakeStream:
        def __init__(self, handle):
            made.append(handle)
            self.handle = handle

    class TorchStream:
        def __init__(self, handle):
            self.cuda_stream = handle

    monkeypatch.setattr(cuda_runtime, "SIMULATOR", False)
    monkeypatch.setattr(cuda_runtime.cuda, "external_stream", FakeStream, raising=False)
    monkeypatch.setattr(cuda_runtime, "_external_streams", {})
    a = _cuda._as_stream(TorchStream(1234))
    assert _cuda._as_stream(TorchStream(1234)) is a and _cuda._as_stream(1234) is a
    assert _cuda._as_stream(TorchStream(99)) is not a and made == [1234, 99]


def test_state_dict_waits_for_every_stream(monkeypatch):
    calls = []
    original = _cuda.cuda.synchronize
    monkeypatch.setattr(_cuda.cuda, "synchronize", lambda: calls.append(1) or original())
    p = dev(np.ones(5, np.float32))
    opt = fastoptim.Adam([p], lr=0.1)
    with cuda_backend.use_stream(cuda.stream()):
        opt.step([dev(np.ones(5, np.float32))])
    calls.clear()
    sd = opt.state_dict()
    assert calls and sd["state"][0]["exp_avg"][0] == pytest.approx(0.1)


def test_chunk_table_of_the_one_launch_norm(monkeypatch):
    """The pointer-table statistics (one launch for a list's norm on a GPU) cut every array
    into CHUNK-element chunks, in order; the finish sums each array's chunk rows."""
    simulator = _cuda.SIMULATOR
    monkeypatch.setattr(_cuda_reduce, "CHUNK", 4)
    monkeypatch.setattr(_cuda, "POINTER_KERNELS", True)
    monkeypatch.setattr(_cuda, "SIMULATOR", False)
    arrays = [dev(np.ones(n, np.float32)) for n in (9, 0, 4)]
    layout = tuple((a.shape[0], np.dtype(np.float32)) for a in arrays)
    control = _cuda_reduce.GradControl(layout)
    assert control.chunked
    monkeypatch.setattr(_cuda, "SIMULATOR", simulator)  # (to read the simulator's addresses)
    assert host(control.table).tolist() == [[0, 0, 3], [0, 3, 0], [0, 3, 1]]
    table = control._chunks(arrays, np.dtype(np.float32))
    a0, a2 = _cuda._desc(arrays[0]).ptr, _cuda._desc(arrays[2]).ptr
    assert host(table).tolist() == [[a0, 0, 4], [a0, 4, 4], [a0, 8, 1], [a2, 0, 4]]
    assert control._chunks(list(arrays), np.dtype(np.float32)) is table  # cached
