"""Every CPU backend against the NumPy reference, step by step, bit for bit.

The fast kernels round every operation exactly as the reference does (no
fused multiply-add, no fastmath), so the results are expected to be equal,
not merely close.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastoptim
from fastoptim import backends

FAST = [b for b in fastoptim.available_backends() if b not in ("numpy", "cuda")]
SIZES = [(), (1,), (7,), (1023,), (4099,), (100003,)]
DTYPES = [np.float32, np.float64]

from flag_cases import ADAM_FLAGS, SGD_FLAGS  # noqa: E402


def test_required_backends_are_available():
    """.ci/run sets FASTOPTIM_REQUIRE_BACKENDS so a missing C build fails CI instead of skipping."""
    required = [b for b in os.environ.get("FASTOPTIM_REQUIRE_BACKENDS", "").split(",") if b]
    available = fastoptim.available_backends()
    assert available[0] == "numpy"
    for name in required:
        assert name in available, f"backend {name!r} is required but unavailable"


def run_pair(make, sizes, dtype, backend, steps=4, seed=0):
    """Step the reference and ``backend`` side by side; compare params and state every step."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in sizes]
    ref_params = [p.copy() for p in init]
    fast_params = [p.copy() for p in init]
    ref, fast = make(ref_params, "numpy"), make(fast_params, backend)
    for _ in range(steps):
        grads = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in sizes]
        ref.step(grads)
        fast.step(grads)
        for i, (a, b) in enumerate(zip(ref_params, fast_params)):
            np.testing.assert_array_equal(a, b, err_msg=f"param {i}")
        ref_state, fast_state = ref.state_dict()["state"], fast.state_dict()["state"]
        assert ref_state.keys() == fast_state.keys()
        for i, entry in ref_state.items():
            assert entry.keys() == fast_state[i].keys()
            for key, value in entry.items():
                np.testing.assert_array_equal(value, fast_state[i][key], err_msg=f"{key} {i}")
    return ref, fast


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", SGD_FLAGS, ids=str)
def test_sgd_matches_reference(backend, dtype, flags):
    run_pair(lambda ps, b: fastoptim.SGD(ps, lr=0.05, backend=b, **flags), SIZES, dtype, backend)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_flags", ADAM_FLAGS, ids=str)
def test_adam_matches_reference(backend, dtype, opt_flags):
    name, flags = opt_flags
    cls = getattr(fastoptim, name)
    run_pair(lambda ps, b: cls(ps, lr=0.01, backend=b, **flags), SIZES, dtype, backend)


# Around the parallel loops' edges: the first parallel size, a last chunk or block of one
# element, and sizes whose tail is shorter than the prefetch distance (2 KiB ahead).
# Each runs under the default thread policy, and with thresholds that force every
# parallel call through the blocked loop (one block per thread) or the chunked one.
EDGE = 4096
EDGE_SIZES = [(EDGE - 1,), (EDGE,), (EDGE + 1,), (EDGE + 511,), (2 * EDGE + 63,), (3 * EDGE + 17,)]
DISPATCH = {"default": None, "blocked": (EDGE, 2**62), "chunked": (EDGE, 0, True),
            "pool beyond the cache": (EDGE, 0, False)}


@pytest.fixture(params=list(DISPATCH))
def dispatch(request):
    """The thread policy's thresholds for numba and C, restored afterwards."""
    from fastoptim.backends import _threads

    setting = DISPATCH[request.param]
    if setting is None:  # the shipped thresholds: sizes just around PARALLEL_MIN
        n = _threads.PARALLEL_MIN
        yield [(n - 1,), (n,), (n + 1,), (n + 511,), (n + 63,)]
        return
    previous = _threads.set_dispatch(*setting)
    try:
        yield EDGE_SIZES
    finally:
        _threads.set_dispatch(*previous)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["SGD", "SGD-plain", "Adam", "AMSGrad"])
def test_parallel_loop_edges_match_reference(backend, dtype, optimizer, dispatch):
    make = {
        "SGD": lambda ps, b: fastoptim.SGD(ps, lr=0.05, momentum=0.9, backend=b),
        "SGD-plain": lambda ps, b: fastoptim.SGD(ps, lr=0.05, backend=b),
        "Adam": lambda ps, b: fastoptim.Adam(ps, lr=0.01, backend=b),
        "AMSGrad": lambda ps, b: fastoptim.AdamW(ps, lr=0.01, amsgrad=True, backend=b),
    }[optimizer]
    run_pair(make, dispatch, dtype, backend, steps=2)


@pytest.mark.parametrize("backend", FAST)
def test_groups_match_reference(backend):
    def make(ps, b):
        return fastoptim.Adam([dict(params=ps[:3]), dict(params=ps[3:], lr=0.1, amsgrad=True,
                                                          weight_decay=0.2)], lr=0.01, backend=b)
    run_pair(make, SIZES, np.float32, backend)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdamW"])
def test_flat_one_call_matches_reference(backend, optimizer):
    """FlatParams: one kernel call per group, same numbers as per-tensor reference steps."""
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (), (7,), (1023,)]
    arrays = {f"w{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    flat = fastoptim.FlatParams(arrays)
    ref_params = {k: v.copy() for k, v in arrays.items()}
    kwargs = dict(lr=0.05, momentum=0.9) if optimizer == "SGD" else dict(lr=0.01, amsgrad=True)
    cls = getattr(fastoptim, optimizer)
    fast, ref = cls(flat.params, backend=backend, **kwargs), cls(ref_params, backend="numpy", **kwargs)
    calls = []
    kernels = backends.load(backend)
    name = "sgd" if optimizer == "SGD" else "adam"
    original = getattr(kernels, name)

    def counting(*args, **kw):
        calls.append(args[0].size)
        return original(*args, **kw)

    for step in range(3):
        grads = {k: np.asarray(rng.standard_normal(s)).astype(np.float32) for k, s in zip(arrays, shapes)}
        for k, g in grads.items():
            flat.grads[k][...] = g
        setattr(kernels, name, counting)
        try:
            fast.step(flat.grads)
        finally:
            setattr(kernels, name, original)
        ref.step(grads)
        for k in arrays:
            np.testing.assert_array_equal(flat.params[k], ref_params[k])
    assert calls == [flat.buffer.size] * 3  # one call over the whole buffer per step
    state = fast.state_dict()["state"]
    assert set(state) == {0, 1, 2, 3} and state[1][next(iter(state[1]))].shape == ()


@pytest.mark.parametrize("src", fastoptim.available_backends()[:3])
@pytest.mark.parametrize("dst", fastoptim.available_backends()[:3])
def test_state_dict_moves_between_backends(src, dst):
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(np.float64) for s in [(5,), (2, 3)]]
    grads = [[np.asarray(rng.standard_normal(p.shape)) for p in init] for _ in range(6)]
    straight = [p.copy() for p in init]
    opt = fastoptim.AdamW(straight, amsgrad=True, backend="numpy")
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in init]
    a = fastoptim.AdamW(first, amsgrad=True, backend=src)
    for g in grads[:3]:
        a.step(g)
    b = fastoptim.AdamW(first, amsgrad=True, backend=dst)
    b.load_state_dict(a.state_dict())
    for g in grads[3:]:
        b.step(g)
    for x, y in zip(straight, first):
        np.testing.assert_array_equal(x, y)


@pytest.mark.skipif(not FAST, reason="no fast CPU backend built")
@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(0, 1), beta1=st.floats(0, 0.999), beta2=st.floats(0, 0.9999),
    eps=st.floats(1e-12, 1e-1), weight_decay=st.floats(0, 1), amsgrad=st.booleans(),
    maximize=st.booleans(), decoupled=st.booleans(), size=st.integers(0, 300),
    dtype=st.sampled_from(DTYPES), backend=st.sampled_from(FAST or ["numpy"]),
)
def test_adam_property_random_hyperparameters(lr, beta1, beta2, eps, weight_decay, amsgrad,
                                              maximize, decoupled, size, dtype, backend):
    def make(ps, b):
        return fastoptim.Adam(ps, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                              amsgrad=amsgrad, maximize=maximize,
                              decoupled_weight_decay=decoupled, backend=b)
    run_pair(make, [(size,)], dtype, backend, steps=3, seed=size)


@pytest.mark.skipif(not FAST, reason="no fast CPU backend built")
@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(0, 1), momentum=st.floats(0, 0.999), dampening=st.floats(0, 1),
    weight_decay=st.floats(0, 1), nesterov=st.booleans(), maximize=st.booleans(),
    size=st.integers(0, 300), dtype=st.sampled_from(DTYPES),
    backend=st.sampled_from(FAST or ["numpy"]),
)
def test_sgd_property_random_hyperparameters(lr, momentum, dampening, weight_decay, nesterov,
                                             maximize, size, dtype, backend):
    if nesterov and (momentum <= 0 or dampening != 0):
        dampening = 0.0
        momentum = max(momentum, 0.1)

    def make(ps, b):
        return fastoptim.SGD(ps, lr=lr, momentum=momentum, dampening=dampening,
                             weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                             backend=b)
    run_pair(make, [(size,)], dtype, backend, steps=3, seed=size)


@pytest.mark.parametrize("backend", FAST)
def test_nonfinite_values_propagate_like_the_reference(backend):
    """No fastmath: NaN and Inf go through the kernels exactly as through NumPy."""
    grads = [np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -0.0], np.float32)]
    for cls, kw in ((fastoptim.Adam, dict(amsgrad=True, weight_decay=0.1)),
                    (fastoptim.SGD, dict(momentum=0.9, weight_decay=0.1))):
        ps = {b: [np.array([1.0, 2.0, np.inf, np.nan, 0.0, 3.0], np.float32)] for b in ("numpy", backend)}
        opts = {b: cls(ps[b], lr=0.1, backend=b, **kw) for b in ps}
        for _ in range(2):
            for b in opts:
                opts[b].step(grads)
        np.testing.assert_array_equal(ps["numpy"][0], ps[backend][0])


def test_unknown_and_unavailable_backends_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown backend: 'fortran'"):
        fastoptim.SGD([np.zeros(3)], backend="fortran")
    with pytest.raises(TypeError, match="backend must be a str"):
        fastoptim.SGD([np.zeros(3)], backend=3)


def test_c_backend_missing_is_reported(monkeypatch):
    """Without the compiled module, 'c' is left out of available_backends() with a warning."""
    import sys

    monkeypatch.setitem(sys.modules, "fastoptim._ckernels", None)  # import now raises ImportError
    monkeypatch.setattr(backends, "_loaded", {k: v for k, v in backends._loaded.items() if k != "c"})
    monkeypatch.setattr(backends, "_failed", {})
    monkeypatch.delitem(sys.modules, "fastoptim.backends.c_backend", raising=False)
    with pytest.warns(RuntimeWarning, match="C kernels are not compiled"):
        names = fastoptim.available_backends()
    assert "c" not in names and names[0] == "numpy"
    with pytest.raises(RuntimeError, match="'c' is not available"):
        fastoptim.Adam([np.zeros(3)], backend="c")
    assert fastoptim.Adam([np.zeros(3)]).backend in ("numba", "numpy")


def test_auto_picks_a_fast_backend():
    opt = fastoptim.Adam([np.zeros(3, np.float32)])
    assert opt.backend == (FAST[0] if FAST else "numpy")
    assert opt.backend == next(b for b in backends.AUTO_CPU_ORDER if b in fastoptim.available_backends())


@pytest.mark.parametrize("backend", FAST)
def test_fast_backends_reject_noncontiguous_params(backend):
    p = np.zeros((4, 6), np.float32)[:, ::2]
    with pytest.raises(ValueError, match=r"params\[0\] is not C-contiguous"):
        fastoptim.SGD([p], backend=backend)
    # the reference accepts it and updates the view in place
    base = np.zeros((4, 6), np.float32)
    opt = fastoptim.SGD([base[:, ::2]], lr=1.0, backend="numpy")
    opt.step([np.ones((4, 3), np.float32)])
    assert (base[:, ::2] == -1).all() and (base[:, 1::2] == 0).all()


@pytest.mark.parametrize("backend", FAST)
def test_noncontiguous_grads_are_handled(backend):
    p1, p2 = np.ones(5, np.float32), np.ones(5, np.float32)
    g = np.arange(10, dtype=np.float32)[::2]
    fastoptim.Adam([p1], backend=backend).step([g])
    fastoptim.Adam([p2], backend="numpy").step([g.copy()])
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.skipif("numba" not in fastoptim.available_backends(), reason="numba unavailable")
def test_parallel_wrapper_cache_name_follows_the_kernel_code():
    """Numba's disk cache is keyed on the wrapper's name, not on the kernel it calls: the
    name carries a digest of the kernel's code, so an edited kernel gets a new entry."""
    from fastoptim.backends import _jit

    def make(step):
        def kernel(lo, hi, a):
            for i in range(lo, hi):
                a[i] = a[i] + step
        return kernel

    def kernel(lo, hi, a):
        for i in range(lo, hi):
            a[i] = a[i] + 2.0

    names = {pair.parallel.py_func.__qualname__
             for pair in (_jit.kernel_pair(make(1.0)), _jit.kernel_pair(kernel))}
    assert len(names) == 2
    same = _jit.kernel_pair(kernel).parallel.py_func.__qualname__
    assert same in names  # the same code keeps its name (and its cache entry) across runs
