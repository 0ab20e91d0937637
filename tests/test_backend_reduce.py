"""The backends' gradient operations (norm_stats, all_finite, scale_, clamp_): one
signature everywhere, each fast backend against the NumPy reference."""
import inspect
import math

import numpy as np
import pytest

import fastoptim
from fastoptim import backends
from fastoptim.backends import _clip_math, _reduce_numpy, _threads

OPERATIONS = ("norm_stats", "all_finite", "scale_", "clamp_")
AVAILABLE = fastoptim.available_backends()
CPU = [b for b in AVAILABLE if b != "cuda"]
FAST_CPU = [b for b in CPU if b != "numpy"]
NORMS = [2.0, 1.0, 3.0, 0.5, -1.5, math.inf, -math.inf, 0.0]
EXACT_MODES = (_clip_math.MAX_ABS, _clip_math.MIN_ABS, _clip_math.COUNT)


def grads(dtype, seed=0, sizes=(1, 7, 100, 3000)):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n).astype(dtype) for n in sizes]
    out[1][3] = 0.0
    return out


@pytest.mark.parametrize("backend", AVAILABLE)
def test_every_backend_has_the_operations_with_one_signature(backend):
    module = backends.load(backend)
    reference = backends.load("numpy")
    for name in OPERATIONS:
        assert (inspect.signature(getattr(module, name)).parameters.keys()
                == inspect.signature(getattr(reference, name)).parameters.keys()), name


@pytest.mark.parametrize("backend", FAST_CPU)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", NORMS)
def test_norm_stats_match_the_reference(backend, dtype, p):
    arrays = grads(dtype)
    stats, finite = backends.load(backend).norm_stats(arrays, p, True)
    expected, expected_finite = backends.load("numpy").norm_stats(arrays, p, True)
    assert stats.dtype == np.float64 and stats.shape == (len(arrays),)
    assert finite is expected_finite is True
    if _clip_math.mode(p) in EXACT_MODES:
        np.testing.assert_array_equal(stats, expected)
    else:
        np.testing.assert_allclose(stats, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert backends.load(backend).norm_stats(arrays, p)[1] is None  # not asked


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values(backend, bad):
    ops = backends.load(backend)
    arrays = grads(np.float32)
    assert ops.all_finite(arrays) is True
    arrays[2][50] = bad
    assert ops.all_finite(arrays) is False
    for p in NORMS:
        stats, finite = ops.norm_stats(arrays, p, True)
        assert finite is False
        ref = _reduce_numpy.statistic(arrays[2], _clip_math.mode(p), p)
        if math.isnan(ref):
            assert math.isnan(stats[2])
        else:  # inf, or the sums of the other terms (negative p: 1 / inf is 0)
            assert stats[2] == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", NORMS)
def test_numba_norms_do_not_depend_on_parallelism(monkeypatch, dtype, p):
    """Fixed blocks combined in order: serial, parallel and one thread agree bit for bit."""
    if "numba" not in AVAILABLE:
        pytest.skip("numba backend unavailable")
    ops = backends.load("numba")
    x = [np.random.default_rng(3).standard_normal(5 * 16384 + 123).astype(dtype)]
    serial = ops.norm_stats(x, p)[0]
    monkeypatch.setattr(_threads, "PARALLEL_MIN", 1)
    parallel = ops.norm_stats(x, p)[0]
    fastoptim.set_num_threads(1)
    try:
        one = ops.norm_stats(x, p)[0]
    finally:
        fastoptim.set_num_threads(_threads._numba_limit())
    assert serial.tobytes() == parallel.tobytes() == one.tobytes()


@pytest.mark.parametrize("backend", FAST_CPU)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_and_clamp_are_bit_identical_to_the_reference(monkeypatch, backend, dtype):
    ops, ref = backends.load(backend), backends.load("numpy")
    for parallel_min in (_threads.PARALLEL_MIN, 1):  # serial, then the parallel kernels
        monkeypatch.setattr(_threads, "PARALLEL_MIN", parallel_min)
        x = np.random.default_rng(5).standard_normal(70001).astype(dtype)
        x[:4] = [np.nan, -0.0, np.inf, -np.inf]
        a, b = x.copy(), x.copy()
        t = np.dtype(dtype).type
        ops.scale_(a, t(0.3))
        ref.scale_(b, t(0.3))
        assert a.tobytes() == b.tobytes()
        for lo, hi in ((-0.5, 0.5), (0.5, -0.5), (-0.0, 0.0), (np.nan, 1.0), (-1.0, np.nan)):
            a, b = x.copy(), x.copy()
            ops.clamp_(a, t(lo), t(hi))
            ref.clamp_(b, t(lo), t(hi))
            assert a.tobytes() == b.tobytes(), (lo, hi)


@pytest.mark.parametrize("backend", CPU)
def test_clamp_follows_torch(backend):
    ops = backends.load(backend)
    x = np.array([np.nan, -3.0, -0.0, 0.5, 3.0], np.float32)
    ops.clamp_(x, np.float32(-1.0), np.float32(1.0))
    np.testing.assert_array_equal(x, [np.nan, -1.0, -0.0, 0.5, 1.0])
    assert np.signbit(x[2])  # -0.0 stays -0.0
    x = np.array([-3.0, 0.0, 3.0], np.float32)
    ops.clamp_(x, np.float32(1.0), np.float32(-1.0))  # lo > hi: hi everywhere
    np.testing.assert_array_equal(x, [-1.0, -1.0, -1.0])
    ops.clamp_(x, np.float32(np.nan), np.float32(1.0))  # a NaN bound: NaN everywhere
    assert np.isnan(x).all()


@pytest.mark.parametrize("backend", FAST_CPU)
def test_non_contiguous_arrays_use_a_copy_or_the_reference(backend):
    ops = backends.load(backend)
    base = np.random.default_rng(7).standard_normal((30, 40))
    strided, dense = base[:, ::3], np.ascontiguousarray(base[:, ::3])
    assert ops.norm_stats([strided], 2.0)[0][0] == ops.norm_stats([dense], 2.0)[0][0]
    ops.scale_(strided, 0.5)
    ops.clamp_(strided, -0.2, 0.2)
    ref = dense.copy()
    _reduce_numpy.scale_(ref, 0.5)
    _reduce_numpy.clamp_(ref, -0.2, 0.2)
    np.testing.assert_array_equal(strided, ref)
    assert base[0, 1] == np.random.default_rng(7).standard_normal((30, 40))[0, 1]  # untouched


def test_c_uses_numbas_operations_or_numpys_without_numba(monkeypatch):
    if "c" not in AVAILABLE:
        pytest.skip("c backend unavailable")
    c = backends.load("c")
    x = [np.random.default_rng(8).standard_normal(100001).astype(np.float32)]
    expected = "numba" if "numba" in AVAILABLE else "numpy"
    assert c.norm_stats(x, 2.0)[0].tobytes() == \
        backends.load(expected).norm_stats(x, 2.0)[0].tobytes()
    real = backends.is_available
    monkeypatch.setattr(backends, "is_available", lambda name: name != "numba" and real(name))
    assert c.norm_stats(x, 2.0)[0].tobytes() == \
        backends.load("numpy").norm_stats(x, 2.0)[0].tobytes()


@pytest.mark.skipif("cuda" not in AVAILABLE, reason="cuda backend unavailable")
@pytest.mark.filterwarnings("ignore:divide by zero")  # the simulator: 0 ** -1.5 in Python
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_operations_match_the_reference(dtype):
    from numba import cuda

    ops, ref = backends.load("cuda"), backends.load("numpy")
    hosts = grads(dtype, sizes=(1, 7, 300))
    devs = [cuda.to_device(h) for h in hosts]
    for p in NORMS:
        stats, finite = ops.norm_stats(devs, p, True)
        expected, _ = ref.norm_stats(hosts, p)
        assert finite is True
        np.testing.assert_allclose(stats, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert ops.all_finite(devs) is True
    t = np.dtype(dtype).type
    ops.scale_(devs[2], t(0.5))
    ref.scale_(hosts[2], t(0.5))
    assert devs[2].copy_to_host().tobytes() == hosts[2].tobytes()
    ops.clamp_(devs[2], t(-0.1), t(0.1))
    ref.clamp_(hosts[2], t(-0.1), t(0.1))
    assert devs[2].copy_to_host().tobytes() == hosts[2].tobytes()
    ops.clamp_(devs[1], t(np.nan), t(1.0))
    assert np.isnan(devs[1].copy_to_host()).all()
    bad = cuda.to_device(np.array([1.0, np.inf], dtype))
    assert ops.all_finite([devs[0], bad]) is False
    assert ops.norm_stats([bad], 2.0, True)[1] is False
