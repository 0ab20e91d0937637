"""The FlatParams fast path (``fastoptim/optimizers/_flat_plan.py``).

After one full step, a FlatParams step runs through a recorded plan that it proves
unchanged on every step. Every test here runs the same script twice, with the plan
and without it (``_flat_plan.enabled``), and requires the same outcome: the same
parameters and state bit for bit, the same step counts, the same error message.
"""
import copy
import pickle
import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim.backends import _multi_table as T
from fastoptim.optimizers import _flat_plan

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]

OPTIMIZERS = [
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1)),
    ("Lion", dict(lr=0.01)),
]


NAMES = ("w1", "b1", "w2", "b2")


def build(backend, name="Adam", kwargs=None, dtype=np.float32, groups=False, named=True,
          **options):
    """A 4-tensor FlatParams (named: built from a dict, so ``flat.grads`` is a dict) and
    its optimizer; ``groups``: two flat groups of different lr (built from a list)."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((5, 7)), rng.standard_normal(7), rng.standard_normal((7, 3)),
              rng.standard_normal(3)]
    arrays = [a.astype(dtype) for a in arrays]
    named = named and not groups
    flat = fastoptim.FlatParams(dict(zip(NAMES, arrays)) if named else arrays)
    params = flat.params
    kwargs = dict(OPTIMIZERS[0][1] if kwargs is None else kwargs)
    if groups:  # two flat groups with different hyperparameters
        spec = [{"params": params[:2]}, {"params": params[2:], "lr": kwargs["lr"] / 2}]
        opt = getattr(fastoptim, name)(spec, backend=backend, **kwargs, **options)
    else:
        opt = getattr(fastoptim, name)(params, backend=backend, **kwargs, **options)
    return flat, opt


def fill_grads(flat, k):
    rng = np.random.default_rng(100 + k)
    flat.grad_buffer.reshape(-1)[...] = rng.standard_normal(flat.grad_buffer.size) * 0.1


def key(flat, i):
    """How ``flat.params`` and ``flat.grads`` name parameter i."""
    return NAMES[i] if isinstance(flat.params, dict) else i


def outcome(flat, opt):
    state = {i: {key: np.array(v) for key, v in entry.items()}
             for i, entry in opt.state.items()}
    return np.array(flat.buffer), state


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for i in a[1]:
        assert a[1][i].keys() == b[1][i].keys(), i
        for key in a[1][i]:
            np.testing.assert_array_equal(a[1][i][key], b[1][i][key], err_msg=f"{i} {key}")


def run(enabled, monkeypatch, script, steps=4, **build_args):
    """Build, step ``steps`` times, run ``script(flat, opt)`` before the third step (its
    gradients written); returns (outcome, the messages of the errors the steps raised)."""
    monkeypatch.setattr(_flat_plan, "enabled", enabled)
    flat, opt = build(**build_args)
    errors = []
    for k in range(steps):
        fill_grads(flat, k)
        if k == 2:
            script(flat, opt)
        before = outcome(flat, opt)
        try:
            opt.step(flat.grads)
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            assert_same(outcome(flat, opt), before)  # a refused step changes nothing
    return outcome(flat, opt), errors


def both(monkeypatch, script, **build_args):
    fast = run(True, monkeypatch, script, **build_args)
    full = run(False, monkeypatch, script, **build_args)
    assert_same(fast[0], full[0])
    assert fast[1] == full[1]
    return fast[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["named", "list", "groups"])
def test_the_plan_steps_exactly_as_the_full_path(backend, name, kwargs, dtype, layout,
                                                 monkeypatch):
    assert both(monkeypatch, lambda flat, opt: None, backend=backend, name=name, kwargs=kwargs,
                dtype=dtype, named=layout == "named", groups=layout == "groups") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_after_the_first_skip_the_full_checks(backend, monkeypatch):
    flat, opt = build(backend)
    fill_grads(flat, 0)
    opt.step(flat.grads)
    assert opt._flat_plan is not None
    calls = []
    monkeypatch.setattr(type(opt), "_check_state", lambda self: calls.append(1))
    for k in range(3):
        fill_grads(flat, k)
        opt.step(flat.grads)
    assert calls == [] and float(opt.state[0]["step"]) == 4.0


def _nan_grad(flat, opt):
    flat.grad_buffer[3] = np.nan


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [dict(skip_nonfinite=True), dict(max_grad_norm=0.05),
                                     dict(skip_nonfinite=True, max_grad_norm=0.05)])
def test_clipping_and_skipping_through_the_plan(backend, options, monkeypatch):
    assert both(monkeypatch, lambda flat, opt: None, backend=backend, **options) == []
    assert both(monkeypatch, _nan_grad, backend=backend, **options) == []
    monkeypatch.setattr(_flat_plan, "enabled", True)
    flat, opt = build(backend, **options)
    for k in range(4):
        fill_grads(flat, k)
        if k == 2:
            _nan_grad(flat, opt)
        opt.step(flat.grads)
    if "skip_nonfinite" in options:
        assert opt.skipped_steps == 1 and float(opt.state[0]["step"]) == 3.0
    else:
        assert np.isnan(flat.buffer).all()


def _read_only_param(flat, opt):
    flat.params[key(flat, 1)].flags.writeable = False


def _read_only_state_view(flat, opt):
    opt.state[2]["exp_avg"].flags.writeable = False


def _read_only_buffer(flat, opt):
    flat.buffer.flags.writeable = False


def _negative_step(flat, opt):
    opt.state[0]["step"][...] = -1.0  # in place: no edit counter sees it


def _nan_step(flat, opt):
    opt.state[0]["step"][...] = np.nan


def _read_only_step(flat, opt):
    opt.state[0]["step"].flags.writeable = False


def _rebound_grad(flat, opt):
    flat.grads[key(flat, 1)] = None  # a partial step: the group then steps per parameter


def _rebound_grad_array(flat, opt):
    flat.grads[key(flat, 3)] = np.full(3, 0.5, np.float32)


def _replaced_state_array(flat, opt):
    opt.state[1]["exp_avg"] = np.ones(7, np.float32)


def _replaced_state(flat, opt):
    opt.state = {i: dict(e) for i, e in opt.state.items()}


def _new_lr(flat, opt):
    opt.param_groups[0]["lr"] = 0.5


def _bad_lr(flat, opt):
    opt.param_groups[0]["lr"] = -1.0


def _amsgrad_on(flat, opt):
    opt.param_groups[0]["amsgrad"] = True


def _reshaped_grad_buffer(flat, opt):
    flat.grads.buffer.shape = (2, -1) if flat.grads.buffer.size % 2 == 0 else (1, -1)


def _other_grad_buffer(flat, opt):
    flat.grads.buffer = np.zeros_like(flat.grads.buffer)


def _appended_param(flat, opt):
    group = opt.param_groups[0]
    group["params"].append(np.ones(2, np.float32))
    if "param_names" in group:
        group["param_names"].append("extra")


def _popped_param(flat, opt):
    group = opt.param_groups[0]
    group["params"].pop()
    if "param_names" in group:
        group["param_names"].pop()


def _reloaded(flat, opt):
    opt.load_state_dict(opt.state_dict())


def _zero_grad(flat, opt):
    flat.grads[key(flat, 0)] = None
    opt.zero_grad()


def _entry_added_bypassing_rebound(flat, opt):
    # no rebinding method: only the length tells
    if isinstance(flat.grads, dict):
        dict.__setitem__(flat.grads, "extra", None)
    else:
        list.append(flat.grads, None)


EDITS = [_read_only_param, _read_only_state_view, _read_only_buffer, _negative_step, _nan_step,
         _read_only_step, _rebound_grad, _rebound_grad_array, _replaced_state_array,
         _replaced_state, _new_lr, _bad_lr, _amsgrad_on, _reshaped_grad_buffer,
         _other_grad_buffer, _appended_param, _popped_param, _reloaded, _zero_grad,
         _entry_added_bypassing_rebound]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("named", [True, False])
def test_every_edit_is_seen_as_the_full_path_sees_it(backend, edit, named, monkeypatch):
    both(monkeypatch, edit, backend=backend, named=named)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edits_that_must_be_refused_are_refused(backend, monkeypatch):
    for edit, message in ((_read_only_param, "read-only"), (_negative_step, ">= 0"),
                          (_nan_step, ">= 0"), (_bad_lr, "Invalid learning rate"),
                          (_read_only_buffer, "read-only"),
                          (_read_only_state_view, "read-only"),
                          (_reshaped_grad_buffer, "grads.buffer")):
        errors = both(monkeypatch, edit, backend=backend)
        assert errors and all(message in e for e in errors), (edit.__name__, errors)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_copy_steps_its_own_buffers_and_a_pickle_starts_without_a_plan(backend):
    flat, opt = build(backend)
    fill_grads(flat, 0)
    opt.step(flat.grads)
    flat2, opt2 = copy.deepcopy((flat, opt))
    assert opt2._flat_plan is None and opt._flat_plan is not None
    assert pickle.loads(pickle.dumps(opt))._flat_plan is None
    before = flat.buffer.copy()
    for f, o in ((flat, opt), (flat2, opt2)):
        for k in range(1, 4):
            fill_grads(f, k)
            o.step(f.grads)
    assert opt2._flat_plan is not None and opt2._flat_plan is not opt._flat_plan
    np.testing.assert_array_equal(flat2.buffer, flat.buffer)
    assert not np.array_equal(before, flat.buffer)
    assert float(opt2.state[0]["step"]) == float(opt.state[0]["step"]) == 4.0


def test_no_plan_for_plain_lists_or_per_parameter_gradients():
    params = [np.ones(3, np.float32), np.ones(2, np.float32)]
    opt = fastoptim.Adam(params, lr=0.1)
    opt.step([np.ones(3, np.float32), np.ones(2, np.float32)])
    assert opt.__dict__.get("_flat_plan") is None
    flat, opt = build("numpy")
    opt.step({k: np.ones_like(p) for k, p in flat.params.items()})  # not flat.grads
    assert opt._flat_plan is None


# ------------------------------------------------------------------ fingerprint
def _mutations():
    """(array, how to change it): each change must change the fingerprint."""
    def flag(a):
        a.flags.writeable = False

    def shape(a):
        a.shape = (2, -1)

    def strides(a):
        with warnings.catch_warnings():  # deprecated in NumPy 2.4, still possible
            warnings.simplefilter("ignore", DeprecationWarning)
            a.strides = (0,)  # still inside its buffer

    def resize(a):
        a.resize(a.size * 1000, refcheck=False)

    return [(np.zeros(8, np.float32), flag), (np.zeros(8, np.float32), shape),
            (np.zeros(8, np.float32), strides), (np.zeros(8, np.float32), resize)]


def test_fingerprint_changes_with_memory_flags_and_layout():
    makers = [T.fingerprint_py] + ([T._compiled.fingerprint] if T.compiled_available() else [])
    for make in makers:
        for a, change in _mutations():
            other = np.zeros(3)
            before = make([other, a])
            assert make((other, a)) == before
            try:
                change(a)
            except (AttributeError, ValueError):
                continue  # this NumPy refuses that change: nothing to detect
            assert make([other, a]) != before, (make, change.__name__)
        a, b = np.zeros(4, "<f4"), np.zeros(4, ">f4")
        assert make([a]) != make([a.view(np.int32)])
        assert make([a]) != make([b])
        assert make([a, None]) is None and make([a, [1.0]]) is None
        assert make([]) == make(()) and make([]) is not None  # empty: nothing to describe
        with pytest.raises(TypeError, match="list or a tuple"):
            make(iter([a]))
