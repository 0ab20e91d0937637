"""fastoptim.clip: torch.nn.utils' gradient norms and clipping, on NumPy (and CUDA) arrays."""
import functools
import hashlib
import math
import os
import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim.backends import _threads
from fastoptim.clip import (
    clip_coef,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    norm_and_finite,
    total_norm,
)

CPU = ["numpy"] + (["numba"] if "numba" in fastoptim.available_backends() else [])
NORMS = [2.0, 1.0, 3.0, 0.5, math.inf, -math.inf, 0.0, -1.0, -2.5]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}  # the brief: torch within rtol 1e-5 / 1e-12


def make_grads(seed, dtypes=(np.float32,), sizes=(7, 1, 130, 3000), specials=False):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        dtype = dtypes[i % len(dtypes)]
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3)).astype(dtype)
        if specials and n > 2:
            g[rng.integers(n)] = 0.0
        out.append(g.reshape((n // 10, 10)) if n % 10 == 0 else g)
    return out


def assert_norm_close(actual, expected, dtype):
    if math.isnan(expected):
        assert math.isnan(actual)
    elif math.isinf(expected):
        assert actual == expected
    else:
        assert actual == pytest.approx(expected, rel=RTOL[dtype], abs=1e-30)


# ------------------------------------------------------------------ against torch (golden)
# torch's results are recorded in tests/data/clip_golden.npz by tools/gen_clip_golden.py
# (torch 2.13), which imports the grid and the inputs below: these tests do not need torch.
GOLDEN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "clip_golden.npz")
DTYPE_SETS = {"f32": (np.float32,), "f64": (np.float64,), "mixed": (np.float32, np.float64)}
NORM_SEEDS = range(3)
BADS = [np.nan, np.inf, -np.inf]
MAX_NORMS = [1.0, 0.01, 1e6, 0.0, -2.0]
NONFINITE_CLIP_BADS = [np.nan, np.inf]
CLIP_VALUES = [0.5, 3.0, 0.0, -1.0, np.inf, np.nan]
ERROR_GRADS = [np.array([3.0, np.inf], np.float32), np.array([4.0], np.float32)]
# torch squares float32 values in float32: 1e20**2 overflows, 1e-30**2 underflows
OVERFLOW_CASES = [[np.array([1e30, 1e30], np.float32)], [np.array([1e-30, 1e-30], np.float32)],
                  [np.array([1e19], np.float32), np.array([1e19], np.float32)],
                  [np.full(10, 1e19, np.float32)]]


def k(*parts):
    """Fixture key: floats by repr ('2.0', 'inf', '-inf', 'nan')."""
    return "/".join(repr(float(x)) if isinstance(x, (float, np.floating)) else str(x) for x in parts)


def input_key(*parts):
    return k("inputs", *parts)


def fingerprint(grads):
    h = hashlib.sha256()
    for g in grads:
        h.update(f"{g.dtype.str}{g.shape}".encode())
        h.update(np.ascontiguousarray(g).tobytes())
    return h.hexdigest()


def nonfinite_grads(bad):
    grads = make_grads(4)
    grads[2].reshape(-1)[5] = bad
    return grads


def nonfinite_clip_grads(bad):
    return [np.array([3.0, bad, 1.0], np.float32), np.array([4.0], np.float32)]


def clip_value_input(dtype):
    return np.array([-3.0, -0.2, 0.0, -0.0, 0.4, 5.0, np.nan, np.inf, -np.inf], dtype)


@functools.lru_cache(maxsize=None)
def _golden():
    with np.load(GOLDEN_PATH) as data:
        return {key: data[key] for key in data.files}


def golden(*parts):
    return _golden()[k(*parts)]


def golden_float(*parts):
    return float(golden(*parts))


def checked(grads, *parts):
    """``grads``, after checking they are the inputs torch saw when the fixture was made."""
    assert fingerprint(grads) == str(_golden()[input_key(*parts)]), \
        "inputs drifted from the fixture: rerun tools/gen_clip_golden.py"
    return grads


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("dtypes", list(DTYPE_SETS))
def test_total_norm_matches_torch(backend, p, dtypes):
    for seed in NORM_SEEDS:
        grads = checked(make_grads(seed, DTYPE_SETS[dtypes], specials=seed == 1), "norm", dtypes, seed)
        expected = golden_float("norm", dtypes, p, seed)
        # with mixed dtypes the float32 arrays' norms are float32: float32 accuracy
        result_dtype = np.float64 if dtypes == "f64" else np.float32
        assert_norm_close(total_norm(grads, p, backend=backend), expected, result_dtype)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("bad", BADS)
def test_nonfinite_values_propagate_like_torch(backend, p, bad):
    checked(make_grads(4), "nonfinite")
    grads = nonfinite_grads(bad)
    expected = golden_float("nonfinite", bad, p)
    assert_norm_close(total_norm(grads, p, backend=backend), expected, np.float32)
    norm, finite = norm_and_finite(grads, p, backend=backend)
    assert_norm_close(norm, expected, np.float32)
    assert finite is False


@pytest.mark.parametrize("backend", CPU)
def test_float32_overflow_and_underflow_follow_torch(backend):
    for i, grads in enumerate(OVERFLOW_CASES):
        assert total_norm(grads, backend=backend) == golden_float("overflow", i)
    assert norm_and_finite(OVERFLOW_CASES[0], backend=backend) == (math.inf, True)  # finite values
    big64 = [np.array([1e30, 1e30])]
    assert total_norm(big64, backend=backend) == pytest.approx(math.sqrt(2) * 1e30)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("dtypes", list(DTYPE_SETS))
@pytest.mark.parametrize("max_norm", MAX_NORMS)
def test_clip_grad_norm_is_bit_identical_to_torch_given_the_norm(backend, dtypes, max_norm):
    grads = checked(make_grads(7, DTYPE_SETS[dtypes]), "clipnorm", dtypes)
    fresh = [g.copy() for g in grads]
    expected_norm = golden_float("clipnorm", dtypes, max_norm, "norm")
    norm_dtype = np.dtype(str(golden("clipnorm", dtypes, max_norm, "dtype")))
    expected = [golden("clipnorm", dtypes, max_norm, f"g{i}") for i in range(len(grads))]
    norm = clip_grad_norm_(grads, max_norm, backend=backend)
    assert norm == pytest.approx(expected_norm, rel=2e-6)
    # torch's scaling given its norm (same dtype): bit for bit
    clip_grads_with_norm_(fresh, max_norm, expected_norm, backend=backend)
    for f, e in zip(fresh, expected):
        np.testing.assert_array_equal(f, e)
        assert f.dtype == e.dtype
    # and clip_grad_norm_ scales by its own norm exactly that way (torch's grads where the norms agree)
    if norm_dtype.type(norm) != norm_dtype.type(expected_norm):
        fresh = [g.copy() for g in checked(make_grads(7, DTYPE_SETS[dtypes]), "clipnorm", dtypes)]
        clip_grads_with_norm_(fresh, max_norm, norm, backend=backend)
        expected = fresh
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)
        assert g.dtype == e.dtype


@pytest.mark.parametrize("backend", CPU)
def test_clip_grad_norm_nonfinite_like_torch(backend):
    for bad in NONFINITE_CLIP_BADS:
        grads = nonfinite_clip_grads(bad)
        norm = clip_grad_norm_(grads, 1.0, backend=backend)
        assert_norm_close(norm, golden_float("clipnorm_nonfinite", bad, "norm"), np.float32)
        for i, g in enumerate(grads):
            np.testing.assert_array_equal(g, golden("clipnorm_nonfinite", bad, f"g{i}"))


@pytest.mark.parametrize("backend", CPU)
def test_error_if_nonfinite_raises_torchs_error_and_changes_nothing(backend):
    grads = [g.copy() for g in ERROR_GRADS]
    torch_message = str(_golden()["error/clip_grad_norm_"])
    assert torch_message.startswith("The total norm of order 2.0 for gradients from `parameters` "
                                    "is non-finite, so it cannot be clipped")
    with pytest.raises(RuntimeError) as info:
        clip_grad_norm_(grads, 1.0, error_if_nonfinite=True, backend=backend)
    assert str(info.value) == torch_message
    for g, b in zip(grads, ERROR_GRADS):
        np.testing.assert_array_equal(g, b)
    with pytest.raises(RuntimeError, match="order inf") as info:
        total_norm([np.array([np.nan])], "inf", error_if_nonfinite=True)
    assert str(info.value) == str(_golden()["error/total_norm_inf"])
    result = clip_grad_norm_([np.array([3.0, 4.0])], 1.0, error_if_nonfinite=True)
    assert result == 5.0 == golden_float("error", "finite_result")


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("clip_value", CLIP_VALUES)
def test_clip_grad_value_matches_torch(backend, clip_value):
    for dtype in (np.float32, np.float64):
        g = clip_value_input(dtype)
        clip_grad_value_([g], clip_value, backend=backend)
        expected = golden("clipvalue", clip_value, np.dtype(dtype).name)
        np.testing.assert_array_equal(g, expected)
        assert g.dtype == expected.dtype
        np.testing.assert_array_equal(np.signbit(g), np.signbit(expected))  # -0.0 kept


def test_golden_fixture_still_matches_live_torch():
    """Optional: with torch installed, spot-check the fixture against it."""
    t = pytest.importorskip("torch")
    for dtypes in DTYPE_SETS:
        grads = make_grads(1, DTYPE_SETS[dtypes], specials=True)
        for p in (2.0, 0.5, math.inf):
            live = float(t.nn.utils.get_total_norm([t.from_numpy(g.copy()) for g in grads], p))
            assert live == golden_float("norm", dtypes, p, 1)
    for clip_value in (0.5, np.nan):
        x = t.from_numpy(clip_value_input(np.float32))
        p = t.nn.Parameter(t.zeros_like(x))
        p.grad = x
        t.nn.utils.clip_grad_value_([p], clip_value)
        np.testing.assert_array_equal(p.grad.numpy(), golden("clipvalue", clip_value, "float32"))


# ------------------------------------------------------------------ semantics, no torch
def test_doc_example_and_clip_coef():
    grads = [np.array([3.0, 0.0], np.float32), np.array([4.0], np.float32)]
    assert total_norm(grads) == 5.0
    assert clip_grad_norm_(grads, max_norm=1.0) == 5.0
    coef = clip_coef(1.0, 5.0, np.float32)
    assert coef.dtype == np.float32 and coef == np.float32(1) / np.float32(5.000001)
    np.testing.assert_array_equal(grads[0], np.array([3.0, 0.0], np.float32) * coef)
    assert clip_coef(10.0, 5.0) == 1.0
    assert math.isnan(clip_coef(1.0, math.nan)) and clip_coef(1.0, math.inf) == 0.0


@pytest.mark.parametrize("backend", CPU)
def test_zero_norm_reports_torchs_counts_of_arrays(backend):
    grads = [np.array([1.0, 0.0, 3.0]), np.zeros(2), np.array([np.nan])]
    assert total_norm(grads, 0, backend=backend) == 2.0  # arrays holding a non-zero (NaN counts)
    assert total_norm(grads[:2], "inf", backend=backend) == 3.0
    assert total_norm(grads[:2], "-inf", backend=backend) == 0.0


@pytest.mark.parametrize("backend", CPU)
def test_containers(backend):
    a, b = np.array([3.0, 0.0]), np.array([[4.0]])
    assert total_norm(a, backend=backend) == 3.0
    assert total_norm([a, None, b], backend=backend) == 5.0
    assert total_norm((a, b), backend=backend) == 5.0
    assert total_norm({"w": a, "b": b}, backend=backend) == 5.0
    assert total_norm((g for g in [a, b]), backend=backend) == 5.0
    assert total_norm([], backend=backend) == 0.0 and total_norm([None]) == 0.0
    assert clip_grad_norm_([], 1.0) == 0.0
    assert norm_and_finite([], backend=backend) == (0.0, True)
    d = {"w": a.copy(), "b": b.copy()}
    clip_grad_norm_(d, 1.0, backend=backend)
    assert d["b"][0, 0] == pytest.approx(0.8)
    assert total_norm([np.full((), -3.0, np.float32)], backend=backend) == 3.0  # 0-d
    assert total_norm([np.float32(-3.0)], backend=backend) == 3.0  # a NumPy scalar is read
    with pytest.raises(TypeError, match=r"grads\[0\] is a NumPy scalar"):
        clip_grad_norm_([np.float32(-3.0)], 1.0)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("p", [2.0, 1.0, math.inf, 0.0, -math.inf])
def test_flat_grads_one_buffer(backend, named, p):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2,), ()]]
    arrays[2][:] = 0  # a zero parameter: the 0-norm counts arrays, not elements
    flat = fastoptim.FlatParams({f"p{i}": a for i, a in enumerate(arrays)} if named else arrays)
    views = list(flat.grads.values()) if named else list(flat.grads)
    for v, a in zip(views, arrays):
        v[...] = a
    separate = [a.copy() for a in arrays]
    assert total_norm(flat.grads, p, backend=backend) == pytest.approx(
        total_norm(separate, p, backend=backend), rel=1e-6)
    if p == 2.0:
        norm = clip_grad_norm_(flat.grads, 0.5, backend=backend)
        clip_grad_norm_(separate, 0.5, backend=backend)
        assert norm > 0.5
        for v, s in zip(views, separate):
            np.testing.assert_allclose(v, s, rtol=1e-6)
        clip_grad_value_(flat.grads, 0.01, backend=backend)
        assert np.abs(flat.grad_buffer).max() <= np.float32(0.01)


@pytest.mark.parametrize("backend", CPU)
def test_non_contiguous_and_unaligned_grads(backend):
    base = np.random.default_rng(1).standard_normal((40, 30))
    strided = base[::2, ::3]
    contiguous = np.ascontiguousarray(strided)
    assert total_norm([strided], backend=backend) == total_norm([contiguous], backend=backend)
    clip_grad_norm_([strided], 1.0, backend=backend)
    clip_grad_norm_([contiguous], 1.0, backend=backend)
    np.testing.assert_array_equal(strided, contiguous)
    assert base[1, 0] == np.random.default_rng(1).standard_normal((40, 30))[1, 0]  # untouched
    raw = np.zeros(8 * 10 + 1, np.uint8)
    unaligned = raw[1:].view(np.float64)
    unaligned[:] = np.arange(10.0)
    assert not unaligned.flags.aligned
    expected = math.sqrt(sum(i * i for i in range(10)))
    assert total_norm(unaligned, backend=backend) == pytest.approx(expected)
    clip_grad_value_(unaligned, 2.0, backend=backend)
    assert unaligned.max() == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
def test_parallel_numba_path_agrees_with_numpy(dtype, p):
    if "numba" not in CPU:
        pytest.skip("numba backend unavailable")
    n = _threads.PARALLEL_MIN * 3 + 17
    x = np.random.default_rng(2).standard_normal(n).astype(dtype)
    small = x[:100].copy()
    assert_norm_close(total_norm([x, small], p, backend="numba"),
                      total_norm([x, small], p, backend="numpy"), dtype)
    y, z = x.copy(), x.copy()
    clip_grad_norm_([y], 1.0, p, backend="numba")
    clip_grad_norm_([z], 1.0, p, backend="numpy")
    np.testing.assert_allclose(y, z, rtol=RTOL[dtype] * 2)
    clip_grad_value_([y], 0.5, backend="numba")
    clip_grad_value_([z], 0.5, backend="numpy")
    np.testing.assert_allclose(y, z, rtol=RTOL[dtype] * 2)


@pytest.mark.parametrize("backend", CPU)
def test_norm_and_finite(backend):
    good = make_grads(3)
    assert norm_and_finite(good, backend=backend) == (total_norm(good, backend=backend), True)
    for p in NORMS:
        assert norm_and_finite(good, p, backend=backend)[1] is True
        bad = [g.copy() for g in good]
        bad[0][0] = np.inf
        assert norm_and_finite(bad, p, backend=backend)[1] is False
    # negative p: an infinite element contributes 0, but the flag still sees it
    assert norm_and_finite([np.array([np.inf, 2.0])], -1.0, backend=backend) == (2.0, False)


def test_empty_arrays():
    e = np.zeros(0, np.float32)
    a = np.array([3.0, 4.0], np.float32)
    assert total_norm([e, a]) == 5.0
    assert total_norm([e, a], 0) == 1.0
    assert total_norm([e, a], math.inf) == 4.0  # torch raises here: max has no identity
    for p in (-math.inf, -1.0):
        with pytest.raises(ValueError, match=r"norm of grads\[0\]: it is empty"):
            total_norm([e, a], p)
    assert clip_grad_norm_([e, a], 1.0) == 5.0 and e.size == 0


def test_c_backend_name_is_accepted():
    grads = make_grads(0)
    for backend in fastoptim.available_backends():
        if backend != "cuda":
            assert total_norm(grads, backend=backend) == pytest.approx(total_norm(grads, backend="numpy"), rel=1e-6)


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("call", [total_norm, norm_and_finite,
                                  lambda g: clip_grad_norm_(g, 1.0),
                                  lambda g: clip_grad_value_(g, 1.0),
                                  lambda g: clip_grads_with_norm_(g, 1.0, 2.0)])
@pytest.mark.parametrize("grads, error, message", [
    ([np.ones(2), np.ones(2, np.int64)], TypeError, r"grads\[1\] has dtype int64"),
    ([np.ones(2, np.float16)], TypeError, r"grads\[0\] has dtype float16"),
    ([np.array([1.0, None])], TypeError, r"grads\[0\] has dtype object"),
    ([np.ones(2), [1.0, 2.0]], TypeError, r"grads\[1\] must be a NumPy float32/float64 array"),
    ({"w": np.ones(4, np.complex128)[::2]}, TypeError, r"grads\['w'\] has dtype complex128"),
    (None, TypeError, "grads must be an array"),
    (3.0, TypeError, "grads must be an array"),
    ("abc", TypeError, "grads must be an array"),
])
def test_bad_grads(call, grads, error, message):
    with pytest.raises(error, match=message):
        call(grads)


def test_read_only_grads():
    g = np.ones(3)
    g.setflags(write=False)
    assert total_norm([g]) == pytest.approx(math.sqrt(3))  # reading is fine
    for call in (lambda: clip_grad_norm_([g], 1.0), lambda: clip_grad_value_([g], 0.5),
                 lambda: clip_grads_with_norm_([g], 1.0, 5.0)):
        with pytest.raises(ValueError, match=r"grads\[0\] is read-only"):
            call()
    assert (g == 1).all()


def test_overlapping_grads_are_rejected_by_clip_norm():
    buf = np.ones(6)
    with pytest.raises(ValueError, match="overlap in memory"):
        clip_grad_norm_([buf[:4], buf[2:]], 0.1)
    with pytest.raises(ValueError, match="more than once"):
        clip_grad_norm_([buf, buf], 0.1)
    assert (buf == 1).all()
    assert total_norm([buf, buf]) == pytest.approx(math.sqrt(12))  # reading twice is fine


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(norm_type="fro"), ValueError, "Invalid norm_type: 'fro'"),
    (dict(norm_type=float("nan")), ValueError, "Invalid norm_type: nan"),
    (dict(norm_type=True), TypeError, "norm_type must be a real number"),
    (dict(norm_type=None), TypeError, "norm_type must be a real number"),
    (dict(max_norm="1"), TypeError, "max_norm must be a real number"),
    (dict(max_norm=None), TypeError, "max_norm must be a real number"),
    (dict(error_if_nonfinite=1), TypeError, "error_if_nonfinite must be a bool"),
    (dict(backend="fast"), ValueError, "Unknown backend: 'fast'"),
    (dict(backend=None), TypeError, "backend must be a str"),
    (dict(backend="cuda"), ValueError, "backend 'cuda' cannot handle host NumPy arrays"),
])
def test_bad_arguments_change_nothing(kwargs, error, message):
    grads = [np.array([3.0, 4.0])]
    args = dict(max_norm=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        clip_grad_norm_(grads, **args)
    assert (grads[0] == [3.0, 4.0]).all()


def test_hyperparameters_accept_numpy_scalars_and_follow_torch():
    g = np.array([3.0, 4.0])
    assert clip_grad_norm_([g], np.float32(1.0), np.int64(2)) == 5.0
    g = np.array([3.0, 4.0])
    clip_grad_norm_([g], -1.0)  # torch allows a negative max_norm: the gradients flip
    np.testing.assert_allclose(g, [-0.6, -0.8], rtol=1e-6)
    g = np.array([3.0, 4.0])
    clip_grad_norm_([g], math.nan)
    assert np.isnan(g).all()
    g = np.array([3.0, 4.0])
    clip_grad_norm_([g], math.inf)
    assert (g == [3.0, 4.0]).all()
    with pytest.raises(TypeError, match="clip_value must be a real number"):
        clip_grad_value_([g], "1")


# ------------------------------------------------------------------ CUDA (GPU or simulator)
def _cuda_or_skip():
    from fastoptim.arrays import device as _cuda

    if not _cuda.is_available():
        pytest.skip("numba.cuda unavailable")
    return _cuda.cuda


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_arrays(dtype):
    cuda = _cuda_or_skip()
    rng = np.random.default_rng(5)
    hosts = [rng.standard_normal(n).astype(dtype) for n in (70, 3, 1)]
    hosts[1][1] = 0
    devs = [cuda.to_device(h) for h in hosts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the simulator's 0 ** -p
        for p in (2.0, -1.0, math.inf, -math.inf, 0.0):  # every statistic of the kernel
            assert_norm_close(total_norm(devs, p), total_norm(hosts, p, backend="numpy"), dtype)
    assert norm_and_finite(devs) == (total_norm(devs), True)
    norm = clip_grad_norm_(devs, 1.0)
    expected = clip_grad_norm_(hosts, 1.0, backend="numpy")
    assert_norm_close(norm, expected, dtype)
    for d, h in zip(devs, hosts):
        np.testing.assert_allclose(d.copy_to_host(), h, rtol=RTOL[dtype] * 4)
    clip_grad_value_(devs, 0.05)
    clip_grad_value_(hosts, 0.05, backend="numpy")
    for d, h in zip(devs, hosts):
        np.testing.assert_allclose(d.copy_to_host(), h, rtol=RTOL[dtype] * 4)
    bad = cuda.to_device(np.array([1.0, np.nan], dtype))
    norm, finite = norm_and_finite([devs[0], bad])
    assert math.isnan(norm) and finite is False
    with pytest.raises(ValueError, match="mixes host NumPy arrays and CUDA device arrays"):
        total_norm([hosts[0], devs[0]])
    with pytest.raises(ValueError, match="backend 'numba' cannot handle CUDA device arrays"):
        total_norm(devs, backend="numba")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_complex_gradients_are_their_real_pairs(backend):
    z = np.array([3 + 4j, 0, 1j], np.complex64)
    pairs = z.view(np.float32).copy()
    assert total_norm([z], backend=backend) == total_norm([pairs], backend=backend) == \
        pytest.approx(math.sqrt(26))
    clip_grad_norm_([z], 1.0, backend=backend)
    clip_grad_norm_([pairs], 1.0, backend=backend)
    np.testing.assert_array_equal(z.view(np.float32), pairs)


def test_torch_positional_order_and_foreach():
    grads = [np.array([3.0, 4.0], np.float32)]
    with pytest.raises(RuntimeError, match="non-finite"):
        total_norm([np.array([np.inf])], 2.0, True)  # error_if_nonfinite third, as torch
    assert total_norm(grads, 2.0, False, None) == 5.0
    for foreach in (None, False, True):
        g = [grads[0].copy()]
        assert clip_grad_norm_(g, 1.0, 2.0, False, foreach) == 5.0
        np.testing.assert_allclose(g[0], [0.6, 0.8], rtol=1e-6)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([np.array([np.nan])], 1.0, 2.0, True)
    with pytest.raises(TypeError, match="foreach must be a bool or None"):
        clip_grad_norm_(grads, 1.0, 2.0, False, "numba")  # backend is keyword-only now
    g = [np.array([3.0, -4.0])]
    clip_grad_value_(g, 1.0, None)
    np.testing.assert_array_equal(g[0], [1.0, -1.0])
    clip_grads_with_norm_(g, 1.0, 2.0, True)


def test_the_backend_comes_from_backends_resolve(monkeypatch):
    """clip has no backend choice of its own: "auto" (or any name) goes through
    backends.resolve, and the operations of the module it names do the work."""
    from fastoptim import backends

    calls = []
    real = backends.resolve

    def resolve(name, on_device=False):
        calls.append((name, on_device))
        return "numpy"  # whatever the registry says is what runs

    def refuse(*args, **kwargs):
        raise AssertionError("a backend other than the resolved one ran")

    monkeypatch.setattr(backends, "resolve", resolve)
    for other in CPU[1:]:
        for op in ("norm_stats", "scale_", "clamp_"):
            monkeypatch.setattr(backends.load(other), op, refuse)
    g = [np.array([3.0, 4.0], np.float32)]
    assert clip_grad_norm_(g, 1.0) == 5.0
    clip_grad_value_(g, 0.5, backend="numba" if "numba" in CPU else "numpy")
    np.testing.assert_allclose(g[0], [0.5, 0.5])
    assert calls == [("auto", False), ("numba" if "numba" in CPU else "numpy", False)]
    assert real("auto") in CPU
