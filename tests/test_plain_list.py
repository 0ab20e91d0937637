"""The plain-list fast path (fastoptim/_plain_list.py, backends/_multi_*.py).

- Bit-exactness: every optimizer flag, both dtypes, both table backends and both
  table fillers (compiled and pure Python) against the NumPy reference stepping the
  same list through the general per-tensor path.
- Safety: after a fast step, every edit a user can make between steps (rebinding,
  resizing, read-only, strided or overlapping arrays, other grads...) is either
  honoured exactly or declined; a declined step changes nothing, and the compiled
  and the Python filler always take the same decision.
"""
import collections
import copy
import os
import pickle
import types

import numpy as np
import pytest
from flag_cases import ADAM_FLAGS, SGD_FLAGS

import fastoptim
from fastoptim import _plain_list, backends
from fastoptim.backends import _multi_table as T
from fastoptim.backends._constants import POOL_CHUNK_BYTES

TABLE_BACKENDS = [b for b in ("numba", "c") if backends.is_available(b)]
FILLERS = ["compiled", "python"] if T.compiled_available() else ["python"]
SHAPES = [(3, 4), (5,), (), (2, 3, 2), (0,), (17,), (1, 33), (64,)]
CASES = [("SGD", f) for f in SGD_FLAGS] + ADAM_FLAGS


@pytest.fixture(params=FILLERS)
def filler(request, monkeypatch):
    monkeypatch.setattr(_plain_list, "filler", request.param)
    return request.param


def _arrays(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in params]


def _make(name, flags, params, backend):
    return getattr(fastoptim, name)(params, lr=0.05, backend=backend, **flags)


def _state_arrays(opt):
    return {(i, k): np.array(v) for i, e in sorted(dict.items(opt.state)) for k, v in e.items()}


def _assert_same(got, ref):
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key].dtype == ref[key].dtype, key
        np.testing.assert_array_equal(got[key], ref[key], err_msg=str(key))


def _snapshot(opt, params):
    out = {("param", i): np.array(p) for i, p in enumerate(params)}
    out.update(_state_arrays(opt))
    return out


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,flags", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_bit_identical_to_reference(filler, backend, dtype, name, flags):
    fast_params, ref_params = _arrays(SHAPES, dtype, 0), _arrays(SHAPES, dtype, 0)
    fast, ref = _make(name, flags, fast_params, backend), _make(name, flags, ref_params, "numpy")
    for step in range(4):
        grads = _grads(fast_params, step)
        fast.step(grads)
        ref.step([g.copy() for g in grads])
        if step:  # the first step creates the state on the general path
            assert fast.last_plain_list_decline is None
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_groups_skipped_grads_and_mixed_dtypes(filler, backend):
    """Two groups with their own hyperparameters; None grads now and then (so the step
    counts of a group diverge) and float32 next to float64 in one group."""
    def build(b):
        p32, p64 = _arrays(SHAPES[:4], np.float32, 1), _arrays(SHAPES[4:], np.float64, 2)
        params = p32 + p64
        opt = fastoptim.Adam([{"params": params[:5], "amsgrad": True},
                              {"params": params[5:], "lr": 0.3, "weight_decay": 0.1}],
                             lr=0.01, backend=b)
        return opt, params

    fast, fast_params = build(backend)
    ref, ref_params = build("numpy")
    for step in range(6):
        grads = _grads(fast_params, 10 + step)
        for i in range(len(grads)):
            if (i + step) % 3 == 0 and step:
                grads[i] = None
        fast.step(grads)
        ref.step([None if g is None else g.copy() for g in grads])
    assert fast.last_plain_list_decline is None
    steps = {float(e["step"]) for e in dict.values(fast.state)}
    assert len(steps) > 1  # the non-uniform path ran
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


def _agreed_verdict(opt, grads):
    """Both fillers' verdict on a step over ``grads`` (which must agree), the step counts
    left as they were."""
    groups, start = [], 0
    for group in opt.param_groups:
        stop = start + len(group["params"])
        groups.append((start, stop, tuple(k for k, _ in opt._state_keys(group)),
                       group["params"]))
        start = stop
    verdicts = []
    for use_compiled in ([True, False] if T.compiled_available() else [False]):
        counts = [np.array(e["step"]) for e in dict.values(opt.state)]
        verdicts.append(T.fill(T.Table(len(opt._params)), opt._params, grads, opt.state,
                               tuple(groups), opt._uses_step, use_compiled=use_compiled))
        for e, count in zip(dict.values(opt.state), counts):
            e["step"][...] = count
    assert len({(type(v), v) for v in verdicts}) == 1, verdicts
    return verdicts[0]


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("mixed", [False, True])
def test_verdict_says_whether_any_row_is_skipped(filler, backend, mixed):
    """fill's verdict: ALL_STEPPED (no gradient is None, every group uniform), True (rows
    skipped, the stepped ones uniform), False (a group mixes dtypes or step counts); the
    fillers agree, and every kind of step matches the reference."""
    def build(b):
        params = _arrays(SHAPES[:3], np.float32, 3) + _arrays(
            SHAPES[3:5], np.float64 if mixed else np.float32, 4)
        opt = fastoptim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}],
                             lr=0.01, backend=b)
        return opt, params

    fast, fast_params = build(backend)
    ref, ref_params = build("numpy")
    seen = []
    for step, skip in enumerate([None, None, 1, None, 3]):
        grads = _grads(fast_params, 20 + step)
        if skip is not None:
            grads[skip] = None
        if step:  # the state exists
            seen.append(_agreed_verdict(fast, grads))
        fast.step(grads)
        ref.step([None if g is None else g.copy() for g in grads])
        assert fast.last_plain_list_decline == (None if step else "no state yet")
    # step 2 skips row 1 (group 0 stays uniform); from step 3 on row 1 lags a step
    assert T.ALL_STEPPED not in (True, False)  # a verdict of its own, told apart by ==
    expected = [False] * 4 if mixed else [T.ALL_STEPPED, True, False, False]
    assert [(type(v), v) for v in seen] == [(type(v), v) for v in expected]
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_big_tensors_next_to_small_ones(filler, backend, monkeypatch):
    # parallel kernels from 64K elements, so that the two big ones take them
    monkeypatch.setattr(_plain_list, "_thread_policy", lambda kernels: (65536, 2))
    shapes = [(70000,), (3,), (65536,), (1000,)]
    fast_params, ref_params = _arrays(shapes, np.float32, 3), _arrays(shapes, np.float32, 3)
    fast = fastoptim.AdamW(fast_params, backend=backend)
    ref = fastoptim.AdamW(ref_params, backend="numpy")
    for step in range(3):
        grads = _grads(fast_params, step)
        fast.step(grads)
        ref.step(grads)
    assert fast.last_plain_list_decline is None
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_named_params(filler, backend):
    def build(b):
        arrays = dict(zip("abcd", _arrays(SHAPES[:4], np.float64, 4)))
        return fastoptim.SGD(arrays, lr=0.1, momentum=0.9, backend=b), arrays

    fast, fast_params = build(backend)
    ref, ref_params = build("numpy")
    for step in range(3):
        grads = dict(zip("abcd", _grads(list(fast_params.values()), step)))
        fast.step(grads)
        ref.step(grads)
    assert fast.last_plain_list_decline is None
    _assert_same(_snapshot(fast, list(fast_params.values())),
                 _snapshot(ref, list(ref_params.values())))


def test_without_compiled_filler_the_general_path_runs(monkeypatch):
    monkeypatch.setattr(_plain_list, "filler", None)
    params = _arrays(SHAPES, np.float32, 5)
    opt = fastoptim.Adam(params, backend=TABLE_BACKENDS[0] if TABLE_BACKENDS else "numpy")
    before = [p.copy() for p in params]
    for step in range(2):
        grads = _grads(params, step)
        assert not _plain_list.try_step(opt, grads)
        opt.step(grads)
    assert all(not np.array_equal(a, b) for a, b in zip(before, params) if a.size)


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_state_dict_deepcopy_and_pickle_after_fast_steps(filler, backend):
    params = _arrays(SHAPES, np.float32, 6)
    opt = fastoptim.Adam(params, backend=backend)
    for step in range(3):
        opt.step(_grads(params, step))
    assert opt.last_plain_list_decline is None
    assert {float(e["step"]) for e in dict.values(opt.state)} == {3.0}
    twin = copy.deepcopy(opt)
    grads = _grads(params, 9)
    twin.step(grads)
    assert twin.last_plain_list_decline is None
    assert float(twin.state[0]["step"]) == 4.0 and float(opt.state[0]["step"]) == 3.0
    pickle.loads(pickle.dumps(opt)).step(grads)
    loaded = fastoptim.Adam([p.copy() for p in params], backend=backend)
    loaded.load_state_dict(opt.state_dict())
    loaded.step(grads)
    opt.step(grads)
    assert loaded.last_plain_list_decline is None
    _assert_same(_state_arrays(loaded), _state_arrays(opt))


# ------------------------------------------------------------------ safety
def _fast_adam(backend, amsgrad=False, dtype=np.float32):
    params = _arrays([(4, 3), (7,), (5,)], dtype, 7)
    opt = fastoptim.Adam(params, backend=backend, amsgrad=amsgrad)
    opt.step(_grads(params, 0))  # creates the state (general path)
    opt.step(_grads(params, 1))
    assert opt.last_plain_list_decline is None
    return opt, params


def _verdicts(opt, grads):
    """The decision of both fillers, for a step that must be declined (so neither counts
    the steps: the caller checks that nothing changed)."""
    groups = tuple((a, b, tuple(k for k, _ in opt._state_keys(g)), g["params"])
                   for g, (a, b) in zip(opt.param_groups, [(0, len(opt._params))]))
    out = []
    for use_compiled in ([True, False] if T.compiled_available() else [False]):
        out.append(T.fill(T.Table(len(opt._params)), opt._params, grads, opt.state, groups,
                          opt._uses_step, use_compiled=use_compiled))
    assert len(set(out)) == 1, out
    return out[0]


def _assert_declined(opt, params, grads, reason):
    assert _verdicts(opt, grads) == reason
    before = [p.copy() for p in params], copy.deepcopy(_state_arrays(opt))
    assert _plain_list.try_step(opt, grads) is False
    assert opt.last_plain_list_decline == reason
    for p, b in zip(params, before[0]):
        if p.shape == b.shape:
            np.testing.assert_array_equal(p, b)
    _assert_same(_state_arrays(opt), before[1])


def _state(opt, i):
    return dict.__getitem__(opt.state, i)


BAD_STATE = {
    "wrong size": lambda a: np.zeros(10, a.dtype),
    "wrong shape": lambda a: np.zeros(a.shape[::-1] + (1,), a.dtype),
    "wrong dtype": lambda a: a.astype(np.float64),
    "read-only": lambda a: np.lib.stride_tricks.as_strided(a.copy(), writeable=False),
    "strided": lambda a: np.zeros((2,) + a.shape, a.dtype)[::2].reshape(a.shape)
    if a.ndim > 1 else np.zeros(2 * a.size, a.dtype)[::2],
    "a list": lambda a: a.tolist(),
    "a matrix": lambda a: np.asmatrix(a.reshape(1, -1)),
    "byte-swapped": lambda a: a.astype(a.dtype.newbyteorder()),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("bad", list(BAD_STATE))
def test_rebound_state_array_is_declined(filler, backend, bad):
    opt, params = _fast_adam(backend)
    entry = _state(opt, 1)
    entry["exp_avg_sq"] = BAD_STATE[bad](entry["exp_avg_sq"])
    _assert_declined(opt, params, _grads(params, 2), "state array")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_state_keys_and_entries(filler, backend):
    opt, params = _fast_adam(backend, amsgrad=True)
    grads = _grads(params, 2)
    entry = _state(opt, 2)
    saved = entry.pop("max_exp_avg_sq")
    _assert_declined(opt, params, grads, "state keys")
    entry["max_exp_avg_sq"], entry["extra"] = saved, np.zeros(3)
    _assert_declined(opt, params, grads, "state keys")
    del entry["extra"]
    dict.__setitem__(opt.state, 0, types.MappingProxyType(dict(_state(opt, 0))))
    _assert_declined(opt, params, grads, "state entry type")
    dict.__setitem__(opt.state, 0, collections.OrderedDict(_state(opt, 0)))  # a dict: fine
    assert _plain_list.try_step(opt, grads) is True
    dict.__delitem__(opt.state, 1)
    _assert_declined(opt, params, grads, "no state yet")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("bad", ["python float", "float64", "1-d", "read-only", "nan", "inf"])
def test_step_counter_is_checked(filler, backend, bad):
    opt, params = _fast_adam(backend)
    step = _state(opt, 0)["step"]
    _state(opt, 0)["step"] = {
        "python float": 2.0, "float64": step.astype(np.float64), "1-d": step.reshape(1),
        "read-only": np.lib.stride_tricks.as_strided(step.copy(), writeable=False),
        "nan": np.array(np.nan, np.float32), "inf": np.array(np.inf, np.float32),
    }[bad]
    _assert_declined(opt, params, _grads(params, 2), "step")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_resized_param_is_declined(filler, backend):
    opt, params = _fast_adam(backend)
    params[1].resize((9,), refcheck=False)  # a new, larger buffer; the state keeps 7
    grads = _grads(params, 2)
    _assert_declined(opt, params, grads, "state array")
    grads[1] = np.zeros(7, np.float32)  # the old shape: the gradient no longer fits
    _assert_declined(opt, params, grads, "grad")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_param_flags_and_groups(filler, backend):
    opt, params = _fast_adam(backend)
    grads = _grads(params, 2)
    params[2].flags.writeable = False
    _assert_declined(opt, params, grads, "param layout")
    params[2].flags.writeable = True
    replaced = params[0].copy()
    opt.param_groups[0]["params"][0] = replaced
    _assert_declined(opt, params, grads, "group params changed")
    opt.param_groups[0]["params"][0] = params[0]
    opt.param_groups[0]["params"].append(np.zeros(3, np.float32))
    assert _plain_list.try_step(opt, grads) is False
    opt.param_groups[0]["params"].pop()
    assert _plain_list.try_step(opt, grads) is True


BAD_GRADS = {
    "other dtype": (lambda g, p: g.astype(np.float64), "grad"),
    "other shape": (lambda g, p: g.reshape(-1), "grad"),
    "strided": (lambda g, p: np.repeat(g, 2, axis=-1)[..., ::2], "grad"),
    "a subclass": (lambda g, p: np.asmatrix(g), "grad"),
    "a list": (lambda g, p: g.tolist(), "grad"),
    "the param itself": (lambda g, p: p, "a gradient overlaps a written array"),
    "a view of the param": (lambda g, p: p[::-1][::-1], "a gradient overlaps a written array"),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("bad", list(BAD_GRADS))
def test_bad_grads_are_declined(filler, backend, bad):
    opt, params = _fast_adam(backend)
    grads = _grads(params, 2)
    make, reason = BAD_GRADS[bad]
    grads[0] = make(grads[0], params[0])
    _assert_declined(opt, params, grads, reason)


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_grads_container(filler, backend):
    opt, params = _fast_adam(backend)
    grads = _grads(params, 2)
    assert _plain_list.try_step(opt, grads[:2]) is False
    assert opt.last_plain_list_decline == "grads length"
    assert _plain_list.try_step(opt, dict(enumerate(grads))) is False
    assert opt.last_plain_list_decline == "grads container"
    assert _plain_list.try_step(opt, iter(grads)) is False
    assert _plain_list.try_step(opt, tuple(grads)) is True


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_overlaps_are_declined(filler, backend):
    opt, params = _fast_adam(backend)
    grads = _grads(params, 2)
    # a state array shared by two parameters
    saved = _state(opt, 2)["exp_avg"]
    _state(opt, 2)["exp_avg"] = _state(opt, 1)["exp_avg"][:5]
    _assert_declined(opt, params, grads, "written arrays overlap")
    _state(opt, 2)["exp_avg"] = saved
    # a state array that is a view of a parameter
    _state(opt, 1)["exp_avg_sq"] = params[1][:]
    _assert_declined(opt, params, grads, "written arrays overlap")
    _state(opt, 1)["exp_avg_sq"] = np.zeros(7, np.float32)
    # one step counter for two parameters
    _state(opt, 1)["step"] = _state(opt, 0)["step"]
    _assert_declined(opt, params, grads, "written arrays overlap")
    _state(opt, 1)["step"] = _state(opt, 0)["step"].copy()
    # a gradient that is a state array, of itself or of another parameter
    grads[2] = _state(opt, 2)["exp_avg"]
    _assert_declined(opt, params, grads, "a gradient overlaps a written array")
    grads[2] = np.zeros(5, np.float32)
    grads[0] = _state(opt, 2)["exp_avg_sq"].repeat(3)[:12].reshape(4, 3)  # a copy: fine
    assert _plain_list.try_step(opt, grads) is True


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_skipped_params_state_is_still_protected(filler, backend):
    opt, params = _fast_adam(backend)
    grads = _grads(params, 2)
    grads[2] = None
    buf = np.zeros(5 + 7, np.float32)
    _state(opt, 2)["exp_avg"] = buf[:5]
    grads[1] = buf[5:]  # contiguous, next to (not inside) the skipped state: fine
    assert _plain_list.try_step(opt, grads) is True
    grads[1] = buf[4:11]  # overlaps the skipped parameter's exp_avg
    _assert_declined(opt, params, grads, "a gradient overlaps a written array")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_cache_never_hides_a_change(filler, backend):
    """The overlap verdict is reused only for identical spans: swapping two state
    arrays, or a gradient that moves into a state array, is seen on the next step."""
    fast, fast_params = _fast_adam(backend)
    ref_params = _arrays([(4, 3), (7,), (5,)], np.float32, 7)
    ref = fastoptim.Adam(ref_params, backend="numpy")
    for s in range(2):
        ref.step(_grads(ref_params, s))
    for opt in (fast, ref):  # the same valid edit on both: swap exp_avg and exp_avg_sq
        e = _state(opt, 0)
        e["exp_avg"], e["exp_avg_sq"] = e["exp_avg_sq"], e["exp_avg"]
    for s in range(2, 5):
        fast.step(_grads(fast_params, s))
        assert fast.last_plain_list_decline is None
        ref.step(_grads(ref_params, s))
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))
    grads = _grads(fast_params, 5)
    grads[1] = _state(fast, 1)["exp_avg"]  # same written spans as the last step
    _assert_declined(fast, fast_params, grads, "a gradient overlaps a written array")


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_rebound_valid_state_is_used(filler, backend):
    """A rebound state array of the right kind is honoured: the next step updates it."""
    fast, fast_params = _fast_adam(backend)
    ref_params = _arrays([(4, 3), (7,), (5,)], np.float32, 7)
    ref = fastoptim.Adam(ref_params, backend="numpy")
    for s in range(2):
        ref.step(_grads(ref_params, s))
    for opt in (fast, ref):
        _state(opt, 1)["exp_avg"] = np.full(7, 0.25, np.float32)
        _state(opt, 2)["step"] = np.array(10.0, np.float32)
    for s in range(2, 4):
        fast.step(_grads(fast_params, s))
        ref.step(_grads(ref_params, s))
    assert fast.last_plain_list_decline is None
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


def test_fillers_agree_on_random_edits():
    """Random edits between steps: both fillers take the same decision and fill the
    same table every time."""
    if not T.compiled_available():
        pytest.skip("the compiled filler is not built")
    rng = np.random.default_rng(11)
    params = _arrays([(6,), (2, 3), (4,), (5,)], np.float64, 8)
    opt = fastoptim.SGD(params, lr=0.1, momentum=0.5, backend=TABLE_BACKENDS[0])
    opt.step(_grads(params, 0))
    groups = ((0, 4, ("momentum_buffer",), opt.param_groups[0]["params"]),)
    pool = [np.zeros(6), np.zeros(6, np.float32), np.zeros((2, 3)), np.zeros(4)[::-1],
            np.zeros(5), np.zeros(4), params[0], params[1][:1, :1], None]
    accepted = 0
    for trial in range(300):
        for i, p in enumerate(params):
            _state(opt, i)["momentum_buffer"] = np.zeros_like(p)
        grads = [pool[rng.integers(len(pool))] if rng.random() < 0.15 else g
                 for g in _grads(params, trial)]
        for i in range(4):
            if rng.random() < 0.15:
                _state(opt, i)["momentum_buffer"] = pool[rng.integers(len(pool) - 1)]
        results = []
        for use_compiled in (True, False):
            table = T.Table(4)
            verdict = T.fill(table, params, grads, opt.state, groups, False,
                             use_compiled=use_compiled)
            results.append((verdict, table.rows.copy()))
        assert results[0][0] == results[1][0], trial
        if not isinstance(results[0][0], str):
            accepted += 1
            np.testing.assert_array_equal(results[0][1], results[1][1])
    assert 30 < accepted < 270  # both outcomes were explored


@pytest.mark.parametrize("extra", ["none", "out of range", "negative", "huge", "True",
                                   "float", "str", "missing"])
def test_fillers_agree_on_any_state_dict_keys(extra):
    """The compiled filler reads a state dict in one pass when every key is an exact int
    (keys outside [0, n) are never looked up, so they are skipped), and looks each index
    up as dict.get does otherwise (True and 1.0 equal the index 1): the same verdict and
    table as the Python filler either way."""
    if not T.compiled_available():
        pytest.skip("the compiled filler is not built")
    params = _arrays([(6,), (3,), (4,)], np.float32, 5)
    opt = fastoptim.Adam(params, lr=0.1, backend=TABLE_BACKENDS[0])
    opt.step(_grads(params, 0))
    state = {i: dict(opt.state[i]) for i in range(3)}
    if extra == "missing":
        del state[1]
    elif extra != "none":
        key = {"out of range": 3, "negative": -1, "huge": 2**70, "True": True, "float": 1.0,
               "str": "x"}[extra]
        moved = state.pop(1) if extra in ("True", "float") else {}
        state[key] = moved or dict(state[0])
    groups = ((0, 3, ("exp_avg", "exp_avg_sq"), opt.param_groups[0]["params"]),)
    results, grads = [], _grads(params, 1)
    for use_compiled in (True, False):
        table = T.Table(3)
        steps = [float(e["step"]) for e in state.values() if "step" in e]
        verdict = T.fill(table, params, grads, state, groups, True,
                         use_compiled=use_compiled)
        results.append((verdict, table.rows.copy(), table.steps.copy()))
        for e, before in zip([e for e in state.values() if "step" in e], steps):
            e["step"][...] = before  # undo the count, for the other filler
    assert results[0][0] == results[1][0]
    assert (results[0][0] == T.ALL_STEPPED) == (extra in (
        "none", "out of range", "negative", "huge", "True", "float", "str"))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("name,flags", [("SGD", dict(momentum=0.9)), ("Adam", dict(amsgrad=True))])
def test_blocks_over_threads(monkeypatch, backend, threads, name, flags):
    """The table split into one block of rows per thread (thresholds lowered so that
    small arrays take that path): still bit-identical, every row updated once."""
    monkeypatch.setattr(_plain_list, "_thread_policy", lambda kernels: (50, threads))
    shapes = [(n,) for n in (7, 60, 3, 33, 1, 90, 12, 40, 5)]
    fast_params, ref_params = _arrays(shapes, np.float32, 12), _arrays(shapes, np.float32, 12)
    fast, ref = _make(name, flags, fast_params, backend), _make(name, flags, ref_params, "numpy")
    for step in range(3):
        grads = _grads(fast_params, step)
        fast.step(grads)
        ref.step(grads)
    assert fast.last_plain_list_decline is None
    _assert_same(_snapshot(fast, fast_params), _snapshot(ref, ref_params))


def test_block_bounds():
    rows = np.zeros((10, T.NCOL), np.int64)
    rows[:, T.COL_N] = [100, 5, T.SKIPPED, 1000, 7, 7, 7, 2000, 1, 1]
    # 3128 elements: less than one pool chunk, so one block per thread
    assert _plain_list._blocks(rows, 0, 10, 5000, 2, 8).tolist() == [0, 10]  # too few elements
    assert _plain_list._blocks(rows, 0, 10, 100, 1, 8).tolist() == [0, 10]
    assert _plain_list._blocks(rows, 0, 10, 100, 2, 8).tolist() == [0, 7, 10]
    assert _plain_list._blocks(rows, 2, 9, 100, 3, 8).tolist() == [2, 5, 7, 9]
    even = np.zeros((1000, T.NCOL), np.int64)
    even[:, T.COL_N] = 1024
    # float32: 4,096,000 bytes per array, 63 pool chunks of about 64 KiB each
    bounds = _plain_list._blocks(even, 0, 1000, 100, 2, 4)
    assert bounds[0] == 0 and bounds[-1] == 1000 and np.all(np.diff(bounds) > 0)
    assert len(bounds) - 1 == -(-1000 * 1024 * 4 // POOL_CHUNK_BYTES)
    assert np.diff(bounds).max() - np.diff(bounds).min() <= 1  # even rows: even blocks


def test_bench_shows_the_plain_list_next_to_flatparams():
    """`fastoptim bench`'s many-tensors case: one table with each backend's plain list
    and FlatParams rows, against the fastest plain list of the same run."""
    import io

    from rich.console import Console

    from fastoptim import bench
    from fastoptim.bench.rendering import ratio
    from fastoptim.bench.specs import format_time

    console = Console(file=io.StringIO(), width=160, color_system=None)
    report = bench.run(optimizers=["adam"], sizes=[4096], many=(4, 256), repeat=2, quick=True,
                       latency=False, peers=False, console=console)
    tables, cells = [], None  # (header, {row label: cells}) of every table printed
    for line in console.file.getvalue().splitlines():
        if line.startswith("┃"):
            cells = {}
            tables.append(([c.strip() for c in line.strip("┃").split("┃")], cells))
        elif line.startswith("│") and cells is not None:
            row = [c.strip() for c in line.strip("│").split("│")]
            cells[row[0]] = row[1:]
    table = next(rows for header, rows in tables
                 if header == ["contestant", "time/step", "x plain list"])
    rows = {(r.contestant, r.mode): r for r in report.results if r.case == "4x256" and r.timed}
    best_list = min(r.time_s for r in rows.values() if r.mode == "list" and r.kind != "floor")
    expected = {}
    for backend in TABLE_BACKENDS:
        for mode, label in (("list", "plain list"), ("flat", "FlatParams"),
                            ("one", "one tensor of 1K")):
            time_s = rows[(backend, mode)].time_s
            expected[f"{backend}, {label}"] = [format_time(time_s), ratio(time_s / best_list)]
    assert table == expected


def test_compiled_filler_is_built_wherever_the_c_kernels_are():
    """.ci/run requires the c backend; the table filler is built by the same compiler, so
    a CI run where it silently failed to build (plain lists on the slow path) fails here."""
    required = os.environ.get("FASTOPTIM_REQUIRE_BACKENDS", "").split(",")
    if "c" not in required:
        pytest.skip("FASTOPTIM_REQUIRE_BACKENDS does not require the C build")
    assert T.compiled_available()
    assert _plain_list.filler == "compiled"


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_copies_and_threads_get_their_own_table(backend):
    import threading

    params = _arrays(SHAPES, np.float32, 13)
    opt = fastoptim.Adam(params, backend=backend)
    for step in range(2):
        opt.step(_grads(params, step))
    table = opt._plain_list_table
    twin = copy.copy(opt)  # shares opt.__dict__'s values, the table included
    twin.step(_grads(params, 5))
    assert twin._plain_list_table is not table and opt._plain_list_table is table
    seen = []
    worker = threading.Thread(target=lambda: (opt.step(_grads(params, 6)),
                                              seen.append(opt._plain_list_table)))
    worker.start()
    worker.join()
    assert seen and seen[0] is not table and opt.last_plain_list_decline is None


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_options_that_need_the_general_path(backend):
    params = _arrays(SHAPES, np.float32, 14)
    opt = fastoptim.Adam(params, backend=backend, max_grad_norm=1.0)
    for step in range(2):
        opt.step(_grads(params, step))
    assert opt.last_plain_list_decline == "skip_nonfinite or max_grad_norm"
    opt.max_grad_norm = None
    opt.step(_grads(params, 2))
    assert opt.last_plain_list_decline is None
    numpy_opt = fastoptim.Adam(_arrays(SHAPES, np.float32, 14), backend="numpy")
    numpy_opt.step(_grads(params, 0))
    assert numpy_opt.last_plain_list_decline == "no table kernels for backend 'numpy'"


@pytest.mark.parametrize("backend", TABLE_BACKENDS)
def test_first_step_carves_step_counters_that_count_alone(backend):
    """A plain list's first step creates its step counters side by side in one buffer
    (the table reads them 16 to a cache line): each is still a writeable 0-d float32
    array of its own memory, counted alone, and survives copies as a counter."""
    params = _arrays([(5,), (3, 2), (4,)], np.float32, 3)
    opt = fastoptim.Adam(params, lr=0.1, backend=backend)
    opt.step(_grads(params, 0))
    steps = [opt.state[i]["step"] for i in range(3)]
    for s in steps:
        assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.float32
        assert s.flags.writeable and float(s) == 1.0
    assert steps[0].base is not None and steps[0].base is steps[1].base  # one buffer
    assert not any(np.shares_memory(a, b) for a, b in [(steps[0], steps[1]),
                                                        (steps[1], steps[2])])
    grads = _grads(params, 1)
    grads[1] = None  # parameter 1 does not step
    opt.step(grads)
    opt.step(_grads(params, 2))
    assert opt.last_plain_list_decline is None  # the table took the carved counters
    assert [float(opt.state[i]["step"]) for i in range(3)] == [3.0, 2.0, 3.0]
    ref_params = _arrays([(5,), (3, 2), (4,)], np.float32, 3)
    ref = fastoptim.Adam(ref_params, lr=0.1, backend="numpy")
    for g in (_grads(ref_params, 0), grads, _grads(ref_params, 2)):
        ref.step(g)
    _assert_same(_snapshot(opt, params), _snapshot(ref, ref_params))
    for copy_of in (copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
        other = copy_of(opt)
        other.state[0]["step"] += 1  # a copy's counter is its own
        assert float(other.state[0]["step"]) == 4.0 and float(opt.state[0]["step"]) == 3.0
    loaded = fastoptim.Adam([p.copy() for p in params], lr=0.1, backend=backend)
    loaded.load_state_dict(opt.state_dict())
    assert [float(loaded.state[i]["step"]) for i in range(3)] == [3.0, 2.0, 3.0]
