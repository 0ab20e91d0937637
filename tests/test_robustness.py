"""Fuzzing the public API with bad arguments (hypothesis).

Every call either works -- and then gives what the NumPy reference backend
gives on contiguous copies of the same inputs, bit for bit -- or raises a
clear ``ValueError``/``TypeError`` (never another exception type, never a
crash) and leaves every parameter and every state array exactly as it was.
While the fuzz runs, every backend kernel is wrapped by a guard that checks
what it is handed: 1-D, C-contiguous, aligned, writable float32/float64 arrays
of one size and dtype, no written array sharing memory with another one.

The bugs this fuzz found have their own regression tests at the end.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastoptim
import fastoptim.functional as F
from fastoptim import backends
from fastoptim import clip as C

CPU = [b for b in fastoptim.available_backends() if b != "cuda"]
FAST = [b for b in CPU if b != "numpy"]
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
BAD_DTYPES = [np.int32, np.int64, np.bool_, np.complex128, np.float16, object]
REJECTED = (ValueError, TypeError)
# FASTOPTIM_FUZZ_EXAMPLES=2000 for a long local hunt; the default keeps the file well under 60 s
FUZZ = settings(max_examples=int(os.environ.get("FASTOPTIM_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])
SAFETY = "max_grad_norm" in inspect.signature(fastoptim.SGD).parameters


# ------------------------------------------------------------------ the kernel guard
class KernelGuard:
    """Wraps every backend's ``sgd``/``adam`` and checks each call's arrays."""

    def __init__(self):
        self.calls = 0

    def check(self, name, param, grad, *states):
        """``reference``: the NumPy backend, which also takes strided arrays by design (as
        they are, all of one shape: it is elementwise); the fast ones get 1-D contiguous."""
        self.calls += 1
        reference = name.startswith(backends.REFERENCE + ".")
        assert isinstance(param, np.ndarray) and isinstance(grad, np.ndarray), name
        assert param.dtype in FLOATS, f"{name}: param dtype {param.dtype}"
        written = [param] + [s for s in states if s is not None]
        for a in written + [grad]:
            assert isinstance(a, np.ndarray), name
            assert a.ndim == 1 or (reference and a.shape == param.shape), \
                f"{name}: {a.ndim}-d array reached the kernel"
            assert reference or (a.flags.c_contiguous and a.flags.aligned), \
                f"{name}: non-contiguous/unaligned"
            assert a.dtype == param.dtype, f"{name}: dtype {a.dtype} != {param.dtype}"
            assert a.size == param.size, f"{name}: size {a.size} != param size {param.size}"
        for a in written:
            assert a.flags.writeable, f"{name}: read-only array to write"
        for i, a in enumerate(written):
            for b in written[i + 1:] + [grad]:
                assert not np.may_share_memory(a, b), f"{name}: a written array aliases another"

    def wrap(self, module, fn_name):
        original = getattr(module, fn_name)

        def guarded(param, grad, *states, **kwargs):
            self.check(f"{module.name}.{fn_name}", param, grad, *states)
            return original(param, grad, *states, **kwargs)

        return guarded


@pytest.fixture(scope="module")
def guard():
    g = KernelGuard()
    mp = pytest.MonkeyPatch()
    for name in CPU:
        module = backends.load(name)
        for fn in ("sgd", "adam"):
            mp.setattr(module, fn, g.wrap(module, fn))
    yield g
    mp.undo()
    assert g.calls > 0  # the fuzz did reach the kernels


# ------------------------------------------------------------------ strategies
def make_array(seed, shape, dtype, layout, special):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        return np.array([rng.standard_normal() for _ in range(int(np.prod(shape)))],
                        dtype=object).reshape(shape)
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 3)
    if special and values.size:
        values.reshape(-1)[rng.integers(values.size)] = rng.choice([np.nan, np.inf, -np.inf, 0.0])
    with np.errstate(all="ignore"):
        a = np.asarray(values).astype(dtype)
    if layout == "strided" and a.ndim:  # a view that no 1-D reshape can express
        big = np.zeros(shape[:-1] + (shape[-1] * 2 + 1,), dtype)
        view = big[..., 1:shape[-1] + 1]
        view[...] = a
        return view
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "readonly":
        a.setflags(write=False)
        return a
    if layout == "unaligned" and dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        out = raw[1:].view(dtype).reshape(shape)
        out[...] = a
        return out
    if layout == "offset":  # a contiguous view into a larger buffer
        big = np.zeros(a.size + 3, dtype)
        out = big[2:2 + a.size].reshape(shape)
        out[...] = a
        return out
    if layout == "list":
        return a.tolist()
    if layout == "scalar" and a.ndim == 0:
        return a[()]
    return a


SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
GOOD_LAYOUTS = ["c"] * 4 + ["offset"]
BAD_LAYOUTS = ["strided", "fortran", "readonly", "unaligned", "list", "scalar"]
ALL_LAYOUTS = GOOD_LAYOUTS * 3 + BAD_LAYOUTS  # most draws valid, so the fuzz gets past checks


@st.composite
def arrays(draw, shape=None, dtype=None, layouts=ALL_LAYOUTS, bad_dtypes=True, special=True):
    if shape is None:
        shape = draw(SHAPES)
    if dtype is None:
        pool = list(FLOATS) * 12 + (BAD_DTYPES if bad_dtypes else [])
        dtype = draw(st.sampled_from(pool))
    return make_array(draw(st.integers(0, 2 ** 32 - 1)), shape, dtype,
                      draw(st.sampled_from(layouts)), special and draw(st.booleans()))


GOOD_REAL = st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from([0, 1, 0.5, 1e-8]))
BAD_SCALAR = st.sampled_from([-1.0, -1e-300, math.nan, math.inf, -math.inf, 1e300, True, None, "0.1",
                              [0.1], np.array(0.1), 1j, np.float32(0.25), np.int64(2), 2 ** 70])


def hyper(good):
    return st.one_of(*[good] * 8, BAD_SCALAR)


@st.composite
def sgd_kwargs(draw):
    kw = {}
    for name in ("lr", "momentum", "dampening", "weight_decay"):
        if draw(st.booleans()):
            kw[name] = draw(hyper(GOOD_REAL))
    for name in ("nesterov", "maximize"):
        if draw(st.booleans()):
            kw[name] = draw(st.sampled_from([False] * 6 + [True, True, np.True_, 1, None, "yes"]))
    return kw


@st.composite
def adam_kwargs(draw):
    kw = {}
    for name in ("lr", "eps", "weight_decay"):
        if draw(st.booleans()):
            kw[name] = draw(hyper(GOOD_REAL))
    if draw(st.booleans()):
        beta = st.floats(0, 0.999, allow_nan=False)
        kw["betas"] = draw(st.one_of(
            *[st.tuples(beta, beta)] * 6, st.tuples(beta, beta).map(list),
            st.tuples(hyper(beta), hyper(beta)),
            st.sampled_from([0.9, (0.9,), (0.9, 0.99, 0.999), None, "ab", (1.0, 0.9), (0.9, -0.1)])))
    for name in ("amsgrad", "maximize"):
        if draw(st.booleans()):
            kw[name] = draw(st.sampled_from([True, False] * 4 + [np.False_, 0, None]))
    return kw


@st.composite
def safety_kwargs(draw):
    if not SAFETY or not draw(st.booleans()):
        return {}
    kw = {}
    if draw(st.booleans()):
        kw["skip_nonfinite"] = draw(st.sampled_from([True, False] * 3 + [1, None]))
    if draw(st.booleans()):
        kw["max_grad_norm"] = draw(st.one_of(
            st.sampled_from([None, 0.0, -1.0, math.nan, math.inf, True]), *[st.floats(1e-3, 1e3)] * 4))
    return kw


OPTIMIZERS = {"SGD": (fastoptim.SGD, sgd_kwargs), "Adam": (fastoptim.Adam, adam_kwargs),
              "AdamW": (fastoptim.AdamW, adam_kwargs)}


@st.composite
def grads_for(draw, params):
    """Gradients for ``params``: mostly right, sometimes wrong in one way."""
    grads = []
    for p in params:
        kind = draw(st.sampled_from(["good"] * 24 + ["none", "readonly", "strided", "shape",
                                                     "dtype", "alias", "list", "scalar"]))
        if kind == "none":
            grads.append(None)
        elif kind == "alias":
            grads.append(p)
        elif kind == "shape":
            grads.append(draw(arrays(dtype=p.dtype, layouts=["c"])))
        elif kind == "dtype":
            grads.append(draw(arrays(shape=p.shape, layouts=["c"])))
        else:
            layout = {"good": "c", "readonly": "readonly", "strided": "strided", "list": "list",
                      "scalar": "scalar"}[kind]
            grads.append(draw(arrays(shape=p.shape, dtype=p.dtype, layouts=[layout])))
    shape = draw(st.sampled_from(["list"] * 20 + ["tuple", "short", "long", "dict", "array", "none"]))
    if shape == "tuple":
        return tuple(grads)
    if shape == "short":
        return grads[:-1]
    if shape == "long":
        return grads + [grads[0] if grads else None]
    if shape == "dict":
        return {str(i): g for i, g in enumerate(grads)}
    if shape == "array":
        return grads[0] if grads else np.zeros(1)
    if shape == "none":
        return None
    return grads


# ------------------------------------------------------------------ helpers
def host_arrays(xs):
    return [x for x in xs if isinstance(x, np.ndarray)]


def snapshot_arrays(xs):
    return [(x, x.copy()) for x in host_arrays(xs)]


def assert_arrays_unchanged(snap):
    for x, saved in snap:
        np.testing.assert_array_equal(x, saved)
        assert x.dtype == saved.dtype


def opt_snapshot(opt):
    return copy.deepcopy(opt.state_dict()), [p.copy() for p in opt._params], opt.state_dict()


def assert_opt_unchanged(opt, snap):
    sd, values, _ = snap
    for p, v in zip(opt._params, values):
        np.testing.assert_array_equal(p, v)
    after = opt.state_dict()
    assert after["param_groups"] == sd["param_groups"]
    assert after["state"].keys() == sd["state"].keys()
    for i, entry in sd["state"].items():
        assert after["state"][i].keys() == entry.keys()
        for k, v in entry.items():
            np.testing.assert_array_equal(after["state"][i][k], v)


def assert_same_as_reference(opt, ref, tolerant=False):
    for p, r in zip(opt._params, ref._params):
        if tolerant:  # max_grad_norm: the norm's last bit may differ between backends
            np.testing.assert_allclose(p, r, rtol=1e-5, atol=1e-30)
        else:
            np.testing.assert_array_equal(p, r)
    a, b = opt.state_dict()["state"], ref.state_dict()["state"]
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys()
        for k in a[i]:
            if tolerant:
                np.testing.assert_allclose(a[i][k], b[i][k], rtol=1e-5, atol=1e-30)
            else:
                np.testing.assert_array_equal(a[i][k], b[i][k])


def attempt(fn, label=None):
    try:
        fn()
    except REJECTED as exc:
        assert str(exc), "an error without a message"
        if label:
            event(f"{label}: {type(exc).__name__} {str(exc)[:30]}")
        return exc
    if label:
        event(f"{label}: ok")
    return None


def reference_grads(grads, params):
    """Independent contiguous copies of accepted gradients, in the parameters' shapes."""
    if isinstance(grads, dict):
        grads = list(grads.values())
    elif isinstance(grads, np.ndarray):
        grads = [grads]
    return [None if g is None else np.array(g, copy=True).reshape(np.shape(p))
            for g, p in zip(grads, params)]


# ------------------------------------------------------------------ optimizer fuzz
@FUZZ
@given(data=st.data(), name=st.sampled_from(list(OPTIMIZERS)), backend=st.sampled_from(CPU))
def test_optimizer_fuzz(guard, data, name, backend):
    cls, kwargs_strategy = OPTIMIZERS[name]
    n = data.draw(st.integers(1, 3))
    params = [data.draw(arrays()) for _ in range(n)]
    params_arg = data.draw(st.sampled_from(["list", "dict", "groups", "generator", "flat"]))
    flat = None
    if params_arg == "flat":  # FlatParams views: the one-kernel-call segment path
        if all(isinstance(p, np.ndarray) and p.dtype in FLOATS for p in params):
            flat = fastoptim.FlatParams(params)
            params = list(flat.params)
        params_arg = "list"
    if params_arg == "dict":
        params_in = {f"p{i}": p for i, p in enumerate(params)}
    elif params_arg == "groups":
        params_in = [{"params": [p], **data.draw(kwargs_strategy())} for p in params]
    elif params_arg == "generator":
        params_in = (p for p in params)
    else:
        params_in = params
    kwargs = data.draw(kwargs_strategy())
    kwargs.update(data.draw(safety_kwargs()))
    before = snapshot_arrays(params)
    try:
        opt = cls(params_in, backend=backend, **kwargs)
    except REJECTED as exc:
        event(f"constructor: {type(exc).__name__} {str(exc)[:30]}")
        assert_arrays_unchanged(before)
        return
    event("constructor: ok" + (" (flat)" if flat is not None else ""))
    # accepted: every parameter is a writable float array; build the reference on copies
    copies = [np.array(p, copy=True) for p in params]
    ref_in = ({f"p{i}": c for i, c in enumerate(copies)} if params_arg == "dict" else
              [dict(g, params=[c]) for g, c in zip(params_in, copies)] if params_arg == "groups"
              else copies)
    ref = cls(ref_in, backend="numpy", **kwargs)
    if data.draw(st.integers(0, 3)) == 0:  # add a (possibly bad) param group
        new = data.draw(arrays())
        group = {"params": [new], **data.draw(kwargs_strategy())}
        snap = opt_snapshot(opt)
        n_groups = len(opt.param_groups)
        if attempt(lambda: opt.add_param_group(group), "add_param_group") is None:
            params.append(new)
            ref.add_param_group(dict(group, params=[np.array(new, copy=True)]))
        else:
            assert len(opt.param_groups) == n_groups and len(opt._params) == len(params)
            assert_opt_unchanged(opt, snap)
    tolerant = getattr(opt, "max_grad_norm", None) is not None
    for _ in range(data.draw(st.integers(1, 3))):
        if flat is not None and len(params) == len(flat.params) and data.draw(st.booleans()):
            for view in flat.grads:  # gradients written into the flat buffer
                view[...] = data.draw(arrays(shape=view.shape, dtype=view.dtype, layouts=["c"]))
            grads = flat.grads
        else:
            grads = data.draw(grads_for(params))
        if params_arg == "dict" and isinstance(grads, list) and data.draw(st.booleans()):
            grads = {f"p{i}": g for i, g in enumerate(grads)}
        snap = opt_snapshot(opt)
        error = attempt(lambda: opt.step(grads), "step")
        if error is not None:
            assert_opt_unchanged(opt, snap)
            continue
        ref_grads = reference_grads(grads, params)
        ref.step({f"p{i}": g for i, g in enumerate(ref_grads)} if params_arg == "dict" else ref_grads)
        assert_same_as_reference(opt, ref, tolerant)


@FUZZ
@given(data=st.data(), name=st.sampled_from(list(OPTIMIZERS)), backend=st.sampled_from(CPU))
def test_broken_group_hyperparameters_are_rejected_at_step(guard, data, name, backend):
    cls, _ = OPTIMIZERS[name]
    params = [np.ones(5, np.float32), np.ones((2, 2), np.float32)]
    opt = cls(params, lr=0.01, backend=backend)
    opt.step([np.full(5, 0.5, np.float32), np.full((2, 2), 0.5, np.float32)])
    key = data.draw(st.sampled_from(sorted(k for k in opt.param_groups[0] if k != "params")))
    value = data.draw(st.one_of(BAD_SCALAR, st.sampled_from([(0.9,), "x", (0.9, 1.5), -0.5])))
    opt.param_groups[0][key] = value
    snap = opt_snapshot(opt)
    error = attempt(lambda: opt.step([np.ones(5, np.float32), np.ones((2, 2), np.float32)]), "step")
    if error is not None:
        assert_opt_unchanged(opt, snap)


# ------------------------------------------------------------------ functional fuzz
@st.composite
def state_list(draw, params, allow_none):
    kind = draw(st.sampled_from(["good"] * 12 + ["none", "short", "bad", "scalar-arg"]))
    if kind == "none":
        return None
    if kind == "scalar-arg":
        return draw(st.sampled_from([3, "x", {"a": 1}]))
    out = []
    for p in params:
        shape = np.shape(p) if isinstance(p, np.ndarray) else ()
        dtype = p.dtype if isinstance(p, np.ndarray) and p.dtype in FLOATS else np.float32
        if kind == "bad" and draw(st.booleans()):
            out.append(draw(st.one_of(arrays(), st.sampled_from([p, None] if allow_none else [p]))))
        else:
            out.append(draw(arrays(shape=shape, dtype=dtype, layouts=GOOD_LAYOUTS + ["strided"],
                                   special=False)))
    return out[:-1] if kind == "short" else out


@FUZZ
@given(data=st.data(), backend=st.sampled_from(CPU), which=st.sampled_from(["sgd", "adam"]))
def test_functional_fuzz(guard, data, backend, which):
    n = data.draw(st.integers(1, 3))
    params = [data.draw(arrays()) for _ in range(n)]
    valid_params = all(isinstance(p, np.ndarray) and p.dtype in FLOATS for p in params)
    if valid_params and data.draw(st.booleans()):
        grads = [data.draw(arrays(shape=p.shape, dtype=p.dtype, layouts=["c", "readonly", "strided"]))
                 for p in params]
    else:
        grads = data.draw(grads_for([p for p in params if isinstance(p, np.ndarray)]))
    if which == "sgd":
        kwargs = data.draw(sgd_kwargs())
        bufs = data.draw(state_list(params, allow_none=True))
        states = {"momentum_buffers": bufs}
        call = lambda ps, gs, st_, be: F.sgd_step(ps, gs, st_["momentum_buffers"], backend=be, **kwargs)  # noqa: E731
    else:
        kwargs = data.draw(adam_kwargs())
        kwargs["step"] = data.draw(st.one_of(st.integers(1, 10), BAD_SCALAR, st.just(0)))
        states = {k: data.draw(state_list(params, allow_none=False))
                  for k in ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")}
        call = lambda ps, gs, st_, be: F.adam_step(ps, gs, st_["exp_avgs"], st_["exp_avg_sqs"],  # noqa: E731
                                                   st_["max_exp_avg_sqs"], backend=be, **kwargs)
    all_states = [a for v in states.values() if isinstance(v, list) for a in v]
    if data.draw(st.integers(0, 9)) == 0 and isinstance(grads, list) and grads:
        candidates = [a for a in all_states if isinstance(a, np.ndarray)]
        if candidates:  # a gradient aliasing a state array: must be rejected
            grads = [data.draw(st.sampled_from(candidates))] + list(grads[1:])
    before = snapshot_arrays(params + all_states)
    copies = {k: ([None if a is None else np.array(a, copy=True) for a in v]
                  if isinstance(v, list) else v) for k, v in states.items()}
    ref_params = [np.array(p, copy=True) if isinstance(p, np.ndarray) else p for p in params]
    ref_grads = grads
    if isinstance(grads, list):
        ref_grads = [np.array(g, copy=True) if isinstance(g, np.ndarray) else g for g in grads]
    error = attempt(lambda: call(params, grads, states, backend), which)
    if error is not None:
        assert_arrays_unchanged(before)
        return
    assert attempt(lambda: call(ref_params, ref_grads, copies, "numpy")) is None
    for p, r in zip(params, ref_params):
        np.testing.assert_array_equal(p, r)
    for k, v in states.items():
        if k == "max_exp_avg_sqs" and not kwargs.get("amsgrad"):
            continue  # ignored without amsgrad (it may even be the parameter itself)
        if isinstance(v, list):
            for a, b in zip(v, copies[k]):
                if a is not None and b is not None:
                    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ load_state_dict fuzz
def mutations():
    def drop_key(sd, rng):
        entry = sd["state"][0]
        entry.pop(rng.choice(sorted(entry)))

    def reshape(sd, rng):
        entry = sd["state"][0]
        key = rng.choice(sorted(k for k in entry if k != "step"))
        entry[key] = np.zeros(entry[key].size + 1, entry[key].dtype)

    def to_int(sd, rng):
        entry = sd["state"][1]
        key = rng.choice(sorted(entry))
        entry[key] = np.asarray(entry[key]).astype(np.int64)

    def to_object(sd, rng):
        entry = sd["state"][1]
        key = rng.choice(sorted(entry))
        entry[key] = np.asarray(entry[key]).astype(object)

    def set_value(path, value):
        def mutate(sd, rng):
            target = sd
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value
        return mutate

    return [
        drop_key, reshape, to_int, to_object,
        set_value(("state", 0, "step"), np.array(-1.0)),
        set_value(("state", 0, "step"), np.array(math.nan)),
        set_value(("state", 0, "step"), "three"),
        set_value(("state", 0, "step"), np.array([1.0, 2.0])),
        set_value(("state", 0, "extra_key"), np.zeros(3)),
        set_value(("state", 7), {}),
        set_value(("state", "zero"), {}),
        # set_value(("state", 0), {}) is bug D and a non-dict "state" (or entry) is bug C:
        # both are tested on their own below
        set_value(("param_groups", 0, "lr"), -1.0),
        set_value(("param_groups", 0, "lr"), "fast"),
        set_value(("param_groups", 0, "params"), [0]),
        set_value(("param_groups", 0, "params"), 5),
        set_value(("param_groups", 0, "params"), [[0], [1]]),
        set_value(("param_groups", 0, "betas"), [0.5, 0.6]),
        set_value(("param_groups", 0, "betas"), (0.5,)),
        set_value(("param_groups", 0, "momentum"), math.nan),
        set_value(("param_groups", 0, "amsgrad"), True),
        set_value(("param_groups", 0, "nesterov"), "no"),
        set_value(("param_groups",), []),
        set_value(("param_groups",), None),
        set_value(("param_groups", 0), ("params", [0, 1])),
        set_value(("state", 0, "exp_avg"), [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]),
        set_value(("state", 0, "exp_avg"), np.full((2, 3), 0.5, np.float16)),
        set_value(("state", 0, "momentum_buffer"), np.full((2, 3), 0.5, np.float64)),
        set_value(("state", 0, "momentum_buffer"), "buffer"),
    ]


MUTATIONS = mutations()


@FUZZ
@given(data=st.data(), name=st.sampled_from(list(OPTIMIZERS)), backend=st.sampled_from(CPU))
def test_load_state_dict_fuzz(guard, data, name, backend):
    cls = OPTIMIZERS[name][0]
    extra = {"momentum": 0.9} if name == "SGD" else {"amsgrad": data.draw(st.booleans())}
    source = cls([np.ones((2, 3)), np.ones(4)], lr=0.1, backend=backend, **extra)
    source.step([np.full((2, 3), 0.5), np.full(4, -0.5)])
    target_params = [np.zeros((2, 3)), np.full(4, 2.0)]
    target = cls(target_params, lr=0.3, backend=backend, **extra)
    target.step([np.full((2, 3), 0.1), np.full(4, 0.1)])
    sd = copy.deepcopy(source.state_dict())
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    for _ in range(data.draw(st.integers(0, 2))):
        mutate = data.draw(st.sampled_from(MUTATIONS))
        try:
            mutate(sd, rng)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            pass  # the mutation does not apply to this (already mutated) state
    snap = opt_snapshot(target)
    error = attempt(lambda: target.load_state_dict(sd), "load")
    if error is not None:
        assert_opt_unchanged(target, snap)
        return
    # accepted: a fresh reference loading the same dict steps the same way
    ref_params = [p.copy() for p in target_params]
    ref = cls(ref_params, lr=0.3, backend="numpy", **extra)
    ref.load_state_dict(copy.deepcopy(sd))
    grads = [np.full((2, 3), 0.25), np.full(4, 0.75)]
    e1 = attempt(lambda: target.step(grads))
    e2 = attempt(lambda: ref.step(grads))
    assert (e1 is None) == (e2 is None)
    assert_same_as_reference(target, ref)


# ------------------------------------------------------------------ clip fuzz
@FUZZ
@given(data=st.data(), backend=st.sampled_from(CPU + ["auto"]))
def test_clip_fuzz(data, backend):
    grads = [data.draw(arrays()) for _ in range(data.draw(st.integers(0, 3)))]
    container = data.draw(st.sampled_from(["list", "tuple", "dict", "single"]))
    arg = (tuple(grads) if container == "tuple" else {str(i): g for i, g in enumerate(grads)}
           if container == "dict" else grads[0] if container == "single" and grads else grads)
    max_norm = data.draw(st.one_of(st.floats(-10, 10), BAD_SCALAR))
    norm_type = data.draw(st.one_of(st.sampled_from([2.0, 1, 3, 0.5, "inf", -math.inf, 0, -1]),
                                    BAD_SCALAR))
    before = snapshot_arrays(grads)
    copies = [np.array(g, copy=True) if isinstance(g, np.ndarray) else g for g in grads]
    result = {}
    error = attempt(lambda: result.setdefault("norm", C.clip_grad_norm_(
        arg, max_norm, norm_type, backend=backend)), "clip")
    if error is not None:
        assert_arrays_unchanged(before)
        return
    ref_arg = (tuple(copies) if container == "tuple" else {str(i): g for i, g in enumerate(copies)}
               if container == "dict" else copies[0] if container == "single" and copies else copies)
    expected = C.clip_grad_norm_(ref_arg, max_norm, norm_type, backend="numpy")
    norm = result["norm"]
    assert (math.isnan(norm) and math.isnan(expected)) or norm == pytest.approx(expected, rel=1e-5)
    passed = grads[:1] if container == "single" else grads
    for g, c in zip(passed, copies):
        np.testing.assert_allclose(g, c, rtol=2e-5, atol=0)


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("backend", FAST)
def test_two_optimizers_in_two_threads_equal_sequential(backend, parallel_from_64k):
    if backend == "numba":
        from fastoptim.backends import numba_backend

        if numba_backend.threading_layer() == "workqueue":
            pytest.skip("numba's workqueue threading layer is not thread-safe")
    n, steps = 200_000, 8

    def setup():
        rng = np.random.default_rng(0)
        ps = [[rng.standard_normal(n).astype(np.float32), rng.standard_normal(n // 3)],
              [rng.standard_normal(n).astype(np.float32)]]
        gs = [[[rng.standard_normal(p.shape).astype(p.dtype) for p in plist] for _ in range(steps)]
              for plist in ps]
        opts = [fastoptim.AdamW(ps[0], lr=0.01, amsgrad=True, backend=backend),
                fastoptim.SGD(ps[1], lr=0.01, momentum=0.9, nesterov=True, backend=backend)]
        return ps, gs, opts

    def work(opt, grads):
        for g in grads:
            opt.step(g)

    ps_seq, gs, opts = setup()
    for opt, grads in zip(opts, gs):
        work(opt, grads)
    for trial in range(3):
        ps_thr, gs, opts = setup()
        errors = []

        def run(opt, grads):
            try:
                work(opt, grads)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(o, g)) for o, g in zip(opts, gs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for a, b in zip(ps_seq, ps_thr):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ bugs this fuzz found (fixed)
@pytest.mark.parametrize("api", ["optimizer", "functional-param", "functional-state"])
def test_numpy_backend_updates_non_contiguous_arrays_in_place(api):
    base = np.ones((4, 6))
    p = base[:, :3]  # rows of 3 out of 6: not C-contiguous, not viewable as 1-D
    g = np.full((4, 3), 0.5)
    if api == "optimizer":
        fastoptim.SGD([p], lr=0.1, backend="numpy").step([g])
        np.testing.assert_array_equal(p, 0.95)
    elif api == "functional-param":
        F.sgd_step([p], [g], lr=0.1, backend="numpy")
        np.testing.assert_array_equal(p, 0.95)
    else:
        q = np.ones((4, 3))
        m = np.zeros((4, 6))[:, :3]
        F.adam_step([q], [g], [m], [np.zeros((4, 3))], step=1, lr=0.1, backend="numpy")
        np.testing.assert_array_equal(m, (1 - 0.9) * 0.5)  # exp_avg = lerp(0, g, 1 - beta1)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("api", ["functional", "optimizer"])
def test_grad_aliasing_a_written_state_array_is_rejected(api, backend):
    """(Found by this fuzz as "bug B", since fixed: the backends disagreed on such input.)"""
    p = np.ones(4, np.float32)
    if api == "functional":
        m, v = np.full(4, 0.1, np.float32), np.full(4, 0.5, np.float32)
        before = snapshot_arrays([p, m, v])
        with pytest.raises(ValueError, match="shares memory"):
            F.adam_step([p], [v], [m], [v], step=2, lr=0.1, backend=backend)
        assert_arrays_unchanged(before)
    else:
        opt = fastoptim.Adam([p], lr=0.1, amsgrad=True, backend=backend)
        opt.step([np.full(4, 0.7, np.float32)])
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            snap = opt_snapshot(opt)
            with pytest.raises(ValueError, match="shares memory"):
                opt.step([opt.state[0][key]])
            assert_opt_unchanged(opt, snap)


@pytest.mark.parametrize("state", [[], {0: [1.0]}, {0: None}])
def test_load_state_dict_rejects_non_dict_state(state):
    opt = fastoptim.Adam([np.ones(3)])
    groups = opt.state_dict()["param_groups"]
    with pytest.raises(REJECTED):
        opt.load_state_dict({"state": state, "param_groups": groups})


@pytest.mark.parametrize("backend", CPU)
def test_empty_loaded_state_entry_is_a_fresh_start(backend):
    p = np.ones(3)
    opt = fastoptim.Adam([p], lr=0.1, backend=backend)
    sd = opt.state_dict()
    sd["state"] = {0: {}}
    opt.load_state_dict(sd)
    opt.step([np.ones(3)])  # torch: a fresh first step
    np.testing.assert_allclose(p, 0.9)
    assert float(opt.state[0]["step"]) == 1.0
