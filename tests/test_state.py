"""The state store and its torch-style view (``fastoptim/optimizers/_state.py``)."""
import numpy as np
import pytest

import fastoptim

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [lambda p, b: fastoptim.Adam(p, lr=0.1, backend=b),
                                  lambda p, b: fastoptim.SGD(p, lr=0.1, momentum=0.9, backend=b)])
def test_steps_are_not_edits_but_user_writes_are(backend, make):
    """The optimizer's own writes go to the store uncounted; the view counts every edit,
    which is what makes the next step check again."""
    params = [np.ones(5, np.float32), np.ones(3, np.float32)]
    grads = [np.full(5, 0.5, np.float32), np.full(3, 0.5, np.float32)]
    opt = make(params, backend)
    opt.step(grads)
    version = opt._layout.version[0]
    for _ in range(3):
        opt.step(grads)
    assert opt._layout.version[0] == version
    key = next(iter(opt.state[0]))
    opt.state[0][key] = np.zeros(5, np.float32)
    assert opt._layout.version[0] == version + 1
    opt.state[params[1]] = dict(opt.state[1])
    assert opt._layout.version[0] == version + 2


def test_the_view_and_the_store_are_one_dict():
    """Compiled code and ``distributed`` read entries with ``dict.get``: the view must be
    the store, and ``opt.state[i]``, ``opt.state[array]`` and the store agree."""
    w = np.ones(3)
    opt = fastoptim.Adam({"w": w}, lr=0.1, backend="numpy")
    opt.step({"w": np.ones(3)})
    entry = dict.get(opt.state, 0)
    assert entry is opt.state[0] is opt.state[w] is opt.state["w"]
    assert isinstance(opt.state, dict) and list(opt.state) == [0]
    assert float(entry["step"]) == 1.0


def test_reading_a_missing_entry_makes_an_empty_one_like_defaultdict():
    w = np.ones(3)
    opt = fastoptim.Adam([w], lr=0.1, backend="numpy")
    assert opt.state[w] == {} and 0 in opt.state
    opt.step([np.ones(3)])  # the empty entry read by the user is filled in place
    assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(TypeError, match="state entries must be dicts"):
        opt.state[0] = [1, 2]
    with pytest.raises(KeyError):
        opt.state[5]


def _owner(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _spans(arrays):
    return sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays if a.size)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plain_lists_state_is_carved_from_one_buffer_per_dtype(backend):
    """The first step allocates each key's arrays out of one buffer per dtype, key by key
    in parameter order, each on a cache line: separate, writeable, C-contiguous arrays of
    their parameter's shape that overlap nothing."""
    shapes = [(3, 4), (5,), (), (0,), (17,), (2, 1, 3)]
    params = [np.ones(s, np.float32) for s in shapes] + [np.ones(s, np.float64) for s in shapes]
    grads = [np.full(p.shape, 0.25, p.dtype) for p in params]
    opt = fastoptim.Adam(params, lr=0.1, amsgrad=True, backend=backend)
    opt.step(grads)
    keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    arrays = [opt.state[i][k] for i in range(len(params)) for k in keys]
    for i, p in enumerate(params):
        for k in keys:
            a = opt.state[i][k]
            assert a.shape == p.shape and a.dtype == p.dtype, (i, k)
            assert a.flags.c_contiguous and a.flags.writeable, (i, k)
            assert a.ctypes.data % 64 == 0 or not a.size, (i, k)  # NumPy: empty at the base
    for dtype in (np.float32, np.float64):
        owners = {id(_owner(opt.state[i][k])) for i, p in enumerate(params) for k in keys
                  if p.dtype == dtype}
        assert len(owners) == 1, dtype
    assert id(_owner(opt.state[0]["exp_avg"])) != id(_owner(opt.state[len(shapes)]["exp_avg"]))
    spans = _spans(arrays)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    first = [opt.state[i]["exp_avg"].ctypes.data for i in range(len(shapes)) if params[i].size]
    assert first == sorted(first)  # one key's arrays follow the parameters' order
    assert max(opt.state[i]["exp_avg"].ctypes.data for i in range(len(shapes))) < min(
        opt.state[i]["exp_avg_sq"].ctypes.data for i in range(len(shapes)) if params[i].size)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_from_a_buffer_steps_as_separate_arrays_do(backend, monkeypatch):
    """Carved state gives bit for bit the same steps as one allocation per array, SGD's
    first step with dampening included (the buffer still counts as fresh); a user's edit
    of one array touches no other; a parameter that steps later gets its own."""
    from fastoptim.optimizers.base import Optimizer
    rng = np.random.default_rng(3)
    shapes = [(40,), (7, 3), (64,), (1,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    grads[0][3] = None  # params[3] gets its state on the second step, alone
    makers = [lambda p: fastoptim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5, backend=backend),
              lambda p: fastoptim.AdamW(p, lr=0.1, weight_decay=0.1, backend=backend)]
    for make in makers:
        runs = []
        for carve in (True, False):
            if not carve:
                monkeypatch.setattr(Optimizer, "_state_slabs", lambda self, plan: None)
            params = [a.copy() for a in init]
            opt = make(params)
            for g in grads:
                opt.step(g)
                if g is grads[1]:
                    key = next(k for k in opt.state[0] if k != "step")
                    before = opt.state[1][key].copy()
                    opt.state[0][key][...] = 0.5
                    np.testing.assert_array_equal(opt.state[1][key], before)
            runs.append(([p.copy() for p in params],
                         {(i, k): np.array(v) for i in range(4) for k, v in opt.state[i].items()}))
            monkeypatch.undo()
            late = next(v for k, v in opt.state[3].items() if k != "step")
            assert _owner(late) is not _owner(next(
                v for k, v in opt.state[0].items() if k != "step"))
        (p1, s1), (p2, s2) = runs
        for a, b in zip(p1, p2):
            np.testing.assert_array_equal(a, b)
        assert s1.keys() == s2.keys()
        for key in s1:
            np.testing.assert_array_equal(s1[key], s2[key], err_msg=str(key))


@pytest.mark.parametrize("backend", BACKENDS)
def test_loaded_state_is_carved_too(backend):
    """``load_state_dict`` copies a plain list's state into carved arrays, as a first step
    allocates them: the values are the saved ones, the arrays share one buffer per key's
    dtype, and stepping on gives what the saving optimizer gives."""
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(33,), (4, 4), (9,)]]
    grads = [rng.standard_normal(a.shape).astype(np.float32) for a in init]
    a_params = [a.copy() for a in init]
    a = fastoptim.Adam(a_params, lr=0.1, backend=backend)
    a.step(grads)
    a.step(grads)
    b_params = [p.copy() for p in a_params]
    b = fastoptim.Adam(b_params, lr=0.1, backend=backend)
    b.load_state_dict(a.state_dict())
    owners = {id(_owner(b.state[i][k])) for i in range(3) for k in ("exp_avg", "exp_avg_sq")}
    assert len(owners) == 1
    for i in range(3):
        for k in ("exp_avg", "exp_avg_sq"):
            assert b.state[i][k] is not a.state[i][k]
            np.testing.assert_array_equal(b.state[i][k], a.state[i][k])
            assert b.state[i][k].flags.writeable and b.state[i][k].shape == init[i].shape
    a.step(grads)
    b.step(grads)
    for x, y in zip(a_params, b_params):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_large_parameters_state_is_allocated_alone(backend, monkeypatch):
    """State arrays of CARVE_MAX_BYTES or more each get their own allocation (a large
    step streams them faster than one after the other in one buffer); the small
    parameters' state beside them is still carved, and both step the same numbers."""
    from fastoptim.optimizers import _state
    monkeypatch.setattr(_state, "CARVE_MAX_BYTES", 4096)  # 1024 float32 elements
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(n).astype(np.float32) for n in (1024, 3000, 5, 9, 1023)]
    grads = [rng.standard_normal(a.shape).astype(np.float32) for a in init]
    params = [a.copy() for a in init]
    opt = fastoptim.Adam(params, lr=0.1, backend=backend)
    opt.step(grads)
    keys = ("exp_avg", "exp_avg_sq")
    for i in (0, 1):  # 4096 and 12000 bytes: alone, each its own buffer
        owners = {id(_owner(opt.state[i][k])) for k in keys}
        assert len(owners) == 2
        assert all(_owner(opt.state[i][k]).nbytes == params[i].nbytes for k in keys)
    small = {id(_owner(opt.state[i][k])) for i in (2, 3, 4) for k in keys}
    assert len(small) == 1  # 20, 36 and 4092 bytes: carved together
    assert id(_owner(opt.state[0]["exp_avg"])) not in small
    monkeypatch.undo()
    ref_params = [a.copy() for a in init]
    ref = fastoptim.Adam(ref_params, lr=0.1, backend="numpy")
    ref.step(grads)
    for i in range(len(init)):
        np.testing.assert_array_equal(params[i], ref_params[i])
        for k in keys:
            np.testing.assert_array_equal(opt.state[i][k], ref.state[i][k])
