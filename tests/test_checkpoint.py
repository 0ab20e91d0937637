"""fastoptim.checkpoint: atomic, validated, pickle-free checkpoints that resume bit for bit."""
import copy
import inspect
import io
import json
import math
import os
import zipfile
from collections import Counter

import numpy as np
import pytest

import fastoptim
from fastoptim import checkpoint as ck
from fastoptim import lr_scheduler as L
from fastoptim.checkpoint import load_checkpoint, save_checkpoint

CPU = [b for b in fastoptim.available_backends() if b != "cuda"]
RESUME_BACKENDS = [b for b in ("numpy", "numba", "c") if b in CPU]


# ------------------------------------------------------------------ helpers
def assert_same(a, b, path="value"):
    """Deep equality with arrays compared bit for bit (dtype included) and tuple types kept."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def snapshot(optimizer=None, scheduler=None, params=()):
    return (copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
            copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
            [p.copy() for p in params])


def assert_unchanged(before, optimizer=None, scheduler=None, params=()):
    after = snapshot(optimizer, scheduler, params)
    opt_state = lambda sd: None if sd is None else {  # noqa: E731 - drop the param arrays
        "state": sd["state"], "param_groups": sd["param_groups"]}
    assert_same(opt_state(after[0]), opt_state(before[0]), "optimizer")
    assert_same(after[1], before[1], "scheduler")
    for p, q in zip(after[2], before[2]):
        np.testing.assert_array_equal(p, q)


def make_params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in [(40, 30), (30,), (7,), ()]]


def grads_for(params, rng):
    return [np.asarray(rng.standard_normal(p.shape)).astype(p.dtype) for p in params]


SETUPS = {
    "adam-steplr": (lambda ps, b: fastoptim.Adam(ps, lr=0.01, weight_decay=0.01, backend=b),
                    lambda o: L.StepLR(o, step_size=3, gamma=0.5)),
    "sgd-momentum-cosine": (
        lambda ps, b: fastoptim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, backend=b),
        lambda o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.001)),
    "adamw-amsgrad-onecycle": (
        lambda ps, b: fastoptim.AdamW(ps, lr=0.01, amsgrad=True, backend=b),
        lambda o: L.OneCycleLR(o, max_lr=0.05, total_steps=20)),  # cycles betas: tuples
}


def run(optimizer, scheduler, params, rng, steps):
    for _ in range(steps):
        optimizer.step(grads_for(params, rng))
        scheduler.step()


# ------------------------------------------------------------------ exact resume
@pytest.mark.parametrize("backend", RESUME_BACKENDS)
@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("flat", [False, True], ids=["arrays", "flat"])
def test_resume_is_bit_exact(tmp_path, backend, setup, flat):
    make_opt, make_sched = SETUPS[setup]

    def build(seed):
        arrays = make_params(seed)
        if flat:
            fp = fastoptim.FlatParams(arrays)
            arrays = fp.params
        opt = make_opt(arrays, backend)
        return arrays, opt, make_sched(opt)

    # the uninterrupted run
    ref_params, ref_opt, ref_sched = build(0)
    run(ref_opt, ref_sched, ref_params, np.random.default_rng(42), 10)

    # 4 steps, save, load into fresh objects (other initial values), 6 more steps
    params, opt, sched = build(0)
    rng = np.random.default_rng(42)
    run(opt, sched, params, rng, 4)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, opt, sched, extra={"step": 4, "rng": rng.bit_generator.state})

    params2, opt2, sched2 = build(123)
    extra = load_checkpoint(path, opt2, sched2)
    assert extra["step"] == 4
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = extra["rng"]
    run(opt2, sched2, params2, rng2, 6)

    for p, q in zip(params2, ref_params):
        assert p.dtype == q.dtype
        np.testing.assert_array_equal(p, q)
    strip = lambda sd: {"state": sd["state"], "param_groups": sd["param_groups"]}  # noqa: E731
    assert_same(strip(opt2.state_dict()), strip(ref_opt.state_dict()))
    assert_same(sched2.state_dict(), ref_sched.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in ref_opt.param_groups]


def test_param_group_values_round_trip_with_their_types(tmp_path):
    a, b = np.ones(3), np.ones(2)
    opt = fastoptim.Adam([{"params": [a], "lr": np.float32(0.5), "betas": (0.8, 0.99)},
                          {"params": [b], "tag": "head", "note": None, "extra": {"k": [1, 2.5]}}],
                         lr=0.1)
    opt.step([np.ones(3), np.ones(2)])
    save_checkpoint(tmp_path / "c", opt)
    fresh = fastoptim.Adam([{"params": [np.zeros(3)]}, {"params": [np.zeros(2)]}], lr=0.3)
    load_checkpoint(tmp_path / "c", fresh)
    assert_same(fresh.state_dict()["param_groups"], opt.state_dict()["param_groups"])
    assert type(fresh.param_groups[0]["betas"]) is tuple
    assert type(fresh.param_groups[0]["lr"]) is np.float32


@pytest.mark.parametrize("name, make, step", [
    ("StepLR", lambda o: L.StepLR(o, 2), lambda s, i: s.step()),
    ("MultiStepLR", lambda o: L.MultiStepLR(o, [2, 5, 5]), lambda s, i: s.step()),
    ("ReduceLROnPlateau", lambda o: L.ReduceLROnPlateau(o, patience=1),
     lambda s, i: s.step([3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.0][i])),
    ("CyclicLR", lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3), lambda s, i: s.step()),
    ("OneCycleLR", lambda o: L.OneCycleLR(o, 0.1, total_steps=30), lambda s, i: s.step()),
    ("LambdaLR", lambda o: L.LambdaLR(o, lambda e: 0.9 ** e), lambda s, i: s.step()),
    ("SequentialLR", lambda o: L.SequentialLR(o, [L.ConstantLR(o, 0.5, 2), L.ExponentialLR(o, 0.9)], [3]),
     lambda s, i: s.step()),
    ("ChainedScheduler", lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.5, 4), L.ExponentialLR(o, 0.9)]),
     lambda s, i: s.step()),
    ("CosineAnnealingWarmRestarts", lambda o: L.CosineAnnealingWarmRestarts(o, 3, 2),
     lambda s, i: s.step()),
    ("PolynomialLR", lambda o: L.PolynomialLR(o, 10, 2.0), lambda s, i: s.step()),
])
def test_every_scheduler_round_trips(tmp_path, name, make, step):
    def build():
        opt = fastoptim.SGD([np.ones(2), np.ones(3)], lr=0.1, momentum=0.9)
        return opt, make(opt)

    opt, sched = build()
    for i in range(4):
        step(sched, i)
    save_checkpoint(tmp_path / "c", opt, sched)
    opt2, sched2 = build()
    load_checkpoint(tmp_path / "c", opt2, sched2)
    assert_same(sched2.state_dict(), sched.state_dict())
    for i in range(4, 7):
        step(sched, i)
        step(sched2, i)
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
        assert [g.get("momentum") for g in opt2.param_groups] == [g.get("momentum") for g in opt.param_groups]
    if name == "MultiStepLR":
        assert type(sched2.milestones) is Counter


def test_file_is_a_pickle_free_npz(tmp_path):
    opt = fastoptim.Adam([np.ones(3)])
    opt.step([np.ones(3)])
    save_checkpoint(tmp_path / "c.npz", opt, extra={"a": np.arange(4), "n": 1})
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(not a.dtype.hasobject for a in arrays.values())
    meta = json.loads(str(arrays["__meta__"][()]))
    assert meta["format"] == ck.FORMAT and meta["format_version"] == ck.FORMAT_VERSION
    assert meta["fastoptim_version"] == fastoptim.__version__
    assert meta["checksum"].startswith("sha256:")
    assert meta["optimizer"]["type"] == "Adam"
    np.testing.assert_array_equal(arrays["params/0"], opt.param_groups[0]["params"][0])
    assert os.listdir(tmp_path) == ["c.npz"]  # no suffix added, no temporary left


def test_params_argument(tmp_path):
    w = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(2, np.float32)}
    save_checkpoint(tmp_path / "p", params=w, extra=[1, (2, 3)])
    target = {"w": np.zeros((2, 3)), "b": np.zeros(2, np.float32)}
    assert load_checkpoint(tmp_path / "p", params=target) == [1, (2, 3)]
    for k in w:
        np.testing.assert_array_equal(target[k], w[k])
    save_checkpoint(tmp_path / "f", params=[w["w"], w["w"][0]])
    flat = fastoptim.FlatParams([np.zeros((2, 3)), np.zeros(3)])
    load_checkpoint(tmp_path / "f", params=flat)
    np.testing.assert_array_equal(flat.buffer, np.concatenate([w["w"].ravel(), w["w"][0]]))
    with pytest.raises(ValueError, match=r"saved as \['w', 'b'\], the given ones are \['b', 'w'\]"):
        load_checkpoint(tmp_path / "p", params={"b": np.zeros(2, np.float32), "w": np.zeros((2, 3))})
    # params=[]: the optimizer's parameters are not saved
    opt = fastoptim.SGD([np.ones(2)], lr=0.1)
    save_checkpoint(tmp_path / "o", opt, params=[])
    p = np.full(2, 7.0)
    load_checkpoint(tmp_path / "o", fastoptim.SGD([p], lr=0.2))
    assert (p == 7.0).all()
    with pytest.raises(ValueError, match="holds no parameters"):
        load_checkpoint(tmp_path / "o", params=[p])


# ------------------------------------------------------------------ validation
def saved_adam(tmp_path, dtype=np.float32):
    params = make_params(0, dtype)
    opt = fastoptim.Adam(params, lr=0.01)
    sched = L.StepLR(opt, 2)
    run(opt, sched, params, np.random.default_rng(0), 3)
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, opt, sched, extra={"epoch": 3})
    return path


def victim():
    """A trained optimizer/scheduler pair that must survive every rejected load untouched."""
    params = make_params(5)
    opt = fastoptim.Adam(params, lr=0.02)
    sched = L.StepLR(opt, 2)
    run(opt, sched, params, np.random.default_rng(9), 2)
    return params, opt, sched


@pytest.mark.parametrize("change, message", [
    (lambda: (fastoptim.SGD(make_params(5), lr=0.1), None), "holds the state of a Adam optimizer, not of a SGD"),
    (lambda: (fastoptim.Adam([{"params": make_params(5)[:2]}, {"params": make_params(5)[2:]}]), None),
     r"the optimizer rejected the saved state: loaded state dict has a different number of "
     r"parameter groups \(1, this optimizer has 2\)"),
    (lambda: (fastoptim.Adam(make_params(5)[:3]), None), "it holds 4 parameters, but 3 were given"),
    (lambda: (fastoptim.Adam([np.ones((30, 40), np.float32)] + make_params(5)[1:]), None),
     r"parameter 0 was saved with shape \(40, 30\) and dtype float32, but the given one has shape \(30, 40\)"),
    (lambda: (fastoptim.Adam(make_params(5, np.float64)), None), "dtype float32, but the given one has shape .* float64"),
])
def test_mismatched_objects_are_rejected(tmp_path, change, message):
    path = saved_adam(tmp_path)
    opt, _ = change()
    params = [p for g in opt.param_groups for p in g["params"]]
    before = snapshot(opt, None, params)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, opt)
    assert_unchanged(before, opt, None, params)


def test_mismatched_scheduler_changes_nothing(tmp_path):
    path = saved_adam(tmp_path)
    params, opt, sched = victim()
    other = L.ExponentialLR(opt, 0.9)
    before = snapshot(opt, other, params)
    with pytest.raises(ValueError, match="holds the state of a fastoptim.lr_scheduler.StepLR, "
                                         "not of a fastoptim.lr_scheduler.ExponentialLR"):
        load_checkpoint(path, opt, other)
    assert_unchanged(before, opt, other, params)
    seq = L.SequentialLR(opt, [L.ConstantLR(opt), L.ExponentialLR(opt, 0.9)], [2])
    save_checkpoint(tmp_path / "seq", opt, seq)
    seq3 = L.SequentialLR(opt, [L.ConstantLR(opt), L.ExponentialLR(opt, 0.9), L.StepLR(opt, 2)], [2, 4])
    before = snapshot(opt, seq3, params)
    with pytest.raises(ValueError, match="state has entries"):
        load_checkpoint(tmp_path / "seq", opt, seq3)
    assert_unchanged(before, opt, seq3, params)


def test_missing_parts_and_read_only_targets(tmp_path):
    path = saved_adam(tmp_path)
    save_checkpoint(tmp_path / "extra-only", extra={"x": 1})
    params, opt, sched = victim()
    before = snapshot(opt, sched, params)
    with pytest.raises(ValueError, match="has no optimizer state"):
        load_checkpoint(tmp_path / "extra-only", opt)
    with pytest.raises(ValueError, match="has no scheduler state"):
        load_checkpoint(tmp_path / "extra-only", scheduler=sched)
    params[1].setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        load_checkpoint(path, params=params)
    params[1].setflags(write=True)
    assert_unchanged(before, opt, sched, params)
    assert load_checkpoint(tmp_path / "extra-only") == {"x": 1}
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope")


def test_scheduler_failure_leaves_the_optimizer_unchanged(tmp_path):
    """The scheduler's check runs before the optimizer is changed: a state it rejects
    leaves both as they were."""
    params = make_params(0)
    opt = fastoptim.SGD(params, lr=0.1, momentum=0.9)
    sched = L.ReduceLROnPlateau(opt)
    opt.step(grads_for(params, np.random.default_rng(0)))
    sched.mode = "sideways"  # a state its load_state_dict rejects (after updating itself)
    save_checkpoint(tmp_path / "c", opt, sched)

    params2 = make_params(1)
    opt2 = fastoptim.SGD(params2, lr=0.5, momentum=0.5)
    sched2 = L.ReduceLROnPlateau(opt2)
    before = snapshot(opt2, sched2, params2)
    with pytest.raises(ValueError, match="the scheduler rejected the saved state"):
        load_checkpoint(tmp_path / "c", opt2, sched2)
    assert_unchanged(before, opt2, sched2, params2)
    assert sched2.mode == "min"


def test_invalid_saved_hyperparameters_are_rejected(tmp_path):
    params = make_params(0)
    opt = fastoptim.Adam(params)
    opt.param_groups[0]["lr"] = -1.0  # broken before saving
    save_checkpoint(tmp_path / "c", opt)
    params2, opt2, sched2 = victim()
    before = snapshot(opt2, sched2, params2)
    with pytest.raises(ValueError, match="the optimizer rejected the saved state: Invalid learning rate"):
        load_checkpoint(tmp_path / "c", opt2)
    assert_unchanged(before, opt2, sched2, params2)


def test_unsavable_values_are_refused_before_writing(tmp_path):
    path = saved_adam(tmp_path)
    good = path.read_bytes()
    for bad in ({"f": lambda: 1}, {"o": object()}, {"a": np.array([None])}, {1.5: {"x": set()}}):
        with pytest.raises(ValueError, match="cannot save extra"):
            save_checkpoint(path, extra=bad)
    assert path.read_bytes() == good


def test_extra_round_trips_types(tmp_path):
    extra = {"i": 2 ** 80, "f": 0.1, "nan": math.nan, "inf": -math.inf, "s": "x", "n": None,
             "b": True, "t": (1, (2.0, "a")), "l": [1, [2]], "np": np.float32(1.5), "i8": np.int8(-3),
             "a": np.arange(6, dtype=np.int16).reshape(2, 3), "c": Counter({3: 2}),
             "keys": {1: "one", (2, 3): "pair", "__x": 4}, "empty": {}, "bool_": np.bool_(False)}
    save_checkpoint(tmp_path / "e", extra=extra)
    assert_same(load_checkpoint(tmp_path / "e"), extra)


# ------------------------------------------------------------------ corrupted files
def rewrite(path, *, drop=None, replace=None):
    """Re-zip ``path`` without entry ``drop`` / with ``replace`` = {member: bytes} (valid CRCs)."""
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    if drop:
        del members[drop + ".npy"]
    for name, data in (replace or {}).items():
        members[name + ".npy"] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def pickled_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # must be refused
    return buf.getvalue()


def meta_of(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["__meta__"][()]))


def corruptions(path):
    good = path.read_bytes()
    n = len(good)
    for cut in sorted({0, 1, 3, 30, n // 7, n // 3, n // 2, n - 200, n - 22, n - 1}):
        yield f"truncated to {cut}", lambda cut=cut: path.write_bytes(good[:cut]), \
            "truncated or corrupted|not an .npz archive"
    for pos in (40, n // 4, n // 2, 3 * n // 4, n - 30):
        def flip(pos=pos):
            data = bytearray(good)
            data[pos] ^= 0x55
            path.write_bytes(bytes(data))
        yield f"byte {pos} flipped", flip, "corrupted|checksum|JSON|not a fastoptim|metadata"
    yield "not a zip", lambda: path.write_bytes(b"hello world" * 10), "not an .npz archive"
    yield "missing entry", lambda: rewrite(path, drop="optimizer/state/1/exp_avg"), \
        "checksum mismatch|has no entry"
    yield "altered array", lambda: rewrite(
        path, replace={"params/0": npy_bytes(np.zeros((40, 30), np.float32))}), "checksum mismatch"
    yield "bad json", lambda: rewrite(path, replace={"__meta__": npy_bytes(np.array("{not json"))}), \
        "not valid JSON"
    yield "pickled meta", lambda: rewrite(path, replace={"__meta__": pickled_npy()}), \
        "truncated or corrupted"

    def newer():
        meta = meta_of(path)
        meta.pop("checksum")
        meta["format_version"] = ck.FORMAT_VERSION + 1
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta["checksum"] = ck._checksum(arrays, meta)
        rewrite(path, replace={"__meta__": npy_bytes(np.array(ck._canonical(meta)))})
    yield "newer format", newer, "format version 2, written by a newer fastoptim"

    def other_checksum():
        meta = meta_of(path)
        meta["checksum"] = "sha256:" + "0" * 64
        rewrite(path, replace={"__meta__": npy_bytes(np.array(json.dumps(meta)))})
    yield "wrong checksum", other_checksum, "checksum mismatch"


def test_corrupted_files_raise_value_error_and_change_nothing(tmp_path):
    path = saved_adam(tmp_path)
    good = path.read_bytes()
    params, opt, sched = victim()
    before = snapshot(opt, sched, params)
    for what, corrupt, message in corruptions(path):
        path.write_bytes(good)
        corrupt()
        with pytest.raises(ValueError, match=message) as info:
            load_checkpoint(path, opt, sched)
        assert str(path) in str(info.value), what
        assert_unchanged(before, opt, sched, params)
    path.write_bytes(good)
    assert load_checkpoint(path, opt, sched) == {"epoch": 3}  # the good file still loads


# ------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize("where", ["savez", "fsync", "replace"])
def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    path = saved_adam(tmp_path)
    good = path.read_bytes()
    params, opt, sched = victim()

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        if where == "savez":  # write half an archive, then die
            args[0].write(b"PK\x03\x04 partial")
        raise Crash

    target = {"savez": (np, "savez"), "fsync": (os, "fsync"), "replace": (os, "replace")}[where]
    monkeypatch.setattr(*target, crash)
    with pytest.raises(Crash):
        save_checkpoint(path, opt, sched, extra={"epoch": 99})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["good.ckpt"]  # the temporary file is gone
    assert load_checkpoint(path) == {"epoch": 3}


def test_save_replaces_atomically_and_fsyncs(tmp_path, monkeypatch):
    path = saved_adam(tmp_path)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    params, opt, sched = victim()
    save_checkpoint(str(path), opt, sched, extra={"epoch": 5})
    assert calls[:2] == ["fsync", "replace"]  # file data on disk before the rename
    assert load_checkpoint(path) == {"epoch": 5}


# ------------------------------------------------------------------ the documentation
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "safe_training.md")


def test_safe_training_doc_examples_run(tmp_path, monkeypatch):
    """Every ```python block of docs/safe_training.md runs, in order, in one namespace."""
    if not os.path.exists(DOC):
        pytest.skip("docs/ not available (installed package)")
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "safe_training_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC}[block {i}]", "exec"), namespace)  # noqa: S102


def test_cuda_optimizer_round_trips(tmp_path):
    """Device parameters and state are saved as host arrays and copied back onto the device."""
    from fastoptim.arrays import device as _cuda

    if not _cuda.is_available() or "cuda" not in fastoptim.available_backends():
        pytest.skip("no CUDA (or simulator) here")
    cuda = _cuda.cuda
    host = make_params(0)[:2]

    def build(values):
        params = [cuda.to_device(v) for v in values]
        opt = fastoptim.Adam(params, lr=0.01, backend="cuda")
        return params, opt, L.StepLR(opt, 2)

    params, opt, sched = build(host)
    grads = [cuda.to_device(np.full(h.shape, 0.5, np.float32)) for h in host]
    for _ in range(3):
        opt.step(grads)
        sched.step()
    save_checkpoint(tmp_path / "gpu", opt, sched)
    params2, opt2, sched2 = build([np.zeros_like(h) for h in host])
    load_checkpoint(tmp_path / "gpu", opt2, sched2)
    for _ in range(2):
        opt.step(grads)
        opt2.step(grads)
    for a, b in zip(params, params2):
        np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host())
    with pytest.raises(ValueError, match="parameter 0 was saved with shape"):
        load_checkpoint(tmp_path / "gpu", params=[cuda.to_device(np.zeros(3, np.float32)),
                                                  params2[1]])


def test_both_check_phases_run_before_either_apply(tmp_path, monkeypatch):
    """load_checkpoint checks the optimizer and the scheduler, then applies both: a
    scheduler state that fails its check never reaches the optimizer's apply phase."""
    params, opt, sched = victim()
    save_checkpoint(tmp_path / "good", opt, sched)
    calls = []
    def spy(cls, phase):
        raw = inspect.getattr_static(cls, phase)
        if isinstance(raw, staticmethod):
            inner = raw.__func__
            return staticmethod(lambda *a: calls.append((cls.__name__, phase)) or inner(*a))
        return lambda self, *a: calls.append((cls.__name__, phase)) or raw(self, *a)

    for cls in (fastoptim.Adam, L.StepLR):  # on the classes: a scheduler saves its __dict__
        for phase in ("_check_load", "_apply_load"):
            monkeypatch.setattr(cls, phase, spy(cls, phase))
    load_checkpoint(tmp_path / "good", opt, sched)
    assert calls == [("Adam", "_check_load"), ("StepLR", "_check_load"),
                     ("Adam", "_apply_load"), ("StepLR", "_apply_load")]
    calls.clear()
    sched.step_size = 3
    state = sched.state_dict()
    save_checkpoint(tmp_path / "bad", opt, sched)
    def refuse(self, state):
        calls.append("check")
        raise ValueError("no")

    monkeypatch.setattr(L.StepLR, "_check_load", refuse)
    before = snapshot(opt, sched, params)
    with pytest.raises(ValueError, match="the scheduler rejected the saved state: no"):
        load_checkpoint(tmp_path / "bad", opt, sched)
    assert calls == [("Adam", "_check_load"), "check"]  # no apply of either
    assert_unchanged(before, opt, sched, params)
    assert sched.state_dict() == state


def test_objects_without_a_check_phase_load_first_by_their_own_load(tmp_path):
    """A scheduler or optimizer that is not fastoptim's (no _check_load) is loaded by its
    own load_state_dict before the checked objects are applied: if it refuses, nothing
    of fastoptim's has changed."""
    class Foreign:  # a duck-typed scheduler of the same class name as the saved one
        def __init__(self, refuse):
            self.refuse, self.loaded = refuse, None

        def state_dict(self):
            return {"k": 1}

        def load_state_dict(self, state):
            if self.refuse:
                raise RuntimeError("refused")
            self.loaded = state

    Foreign.__module__, Foreign.__qualname__ = "my.schedulers", "Foreign"
    params, opt, _ = victim()
    save_checkpoint(tmp_path / "c", opt, Foreign(False))
    params2, opt2, _ = victim()
    opt2.step(grads_for(params2, np.random.default_rng(1)))
    before = snapshot(opt2, None, params2)
    with pytest.raises(ValueError, match="the scheduler rejected the saved state: refused"):
        load_checkpoint(tmp_path / "c", opt2, Foreign(True))
    assert_unchanged(before, opt2, None, params2)
    sched = Foreign(False)
    load_checkpoint(tmp_path / "c", opt2, sched)
    assert sched.loaded == {"k": 1}
    assert_unchanged(snapshot(opt, None, params), opt2, None, params2)

    class Adam:  # a wrapper named like the saved optimizer class, without _check_load
        def __init__(self, inner):
            self.inner, self.param_groups = inner, inner.param_groups

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

    params3, inner, _ = victim()
    inner.step(grads_for(params3, np.random.default_rng(2)))
    load_checkpoint(tmp_path / "c", Adam(inner))
    assert_unchanged(snapshot(opt, None, params), inner, None, params3)
