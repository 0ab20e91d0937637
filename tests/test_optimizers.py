"""The optimizer API: torch's names, defaults, param groups, state layout and errors."""
import copy
import inspect

import numpy as np
import pytest

import fastoptim

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


def snapshot(opt, params):
    return [p.copy() for p in params], copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, params, before):
    values, state = before
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p, v)
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert after["state"].keys() == state["state"].keys()
    for i in state["state"]:
        for k in state["state"][i]:
            np.testing.assert_array_equal(after["state"][i][k], state["state"][i][k])


def test_defaults_match_torch():
    sig = inspect.signature(fastoptim.SGD)
    assert {k: v.default for k, v in sig.parameters.items() if k != "params"} == dict(
        lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False,
        foreach=None, differentiable=False, fused=None,
        backend="auto", skip_nonfinite=False, max_grad_norm=None)
    sig = inspect.signature(fastoptim.Adam)
    assert {k: v.default for k, v in sig.parameters.items() if k != "params"} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
        foreach=None, capturable=False, differentiable=False, fused=None,
        decoupled_weight_decay=False, backend="auto", skip_nonfinite=False, max_grad_norm=None)
    opt = fastoptim.AdamW([np.zeros(2)])
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    for kw in ("maximize", "backend"):
        assert sig.parameters[kw].kind is inspect.Parameter.KEYWORD_ONLY


def test_param_groups_and_add_param_group():
    a, b, c = np.zeros(3), np.zeros(2), np.zeros(1)
    opt = fastoptim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.1}],
                        lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["weight_decay"] == 0.1
    opt.add_param_group({"params": c, "lr": 0.2})
    assert opt.param_groups[2]["params"][0] is c
    opt.step([np.ones(3), np.ones(2), np.ones(1)])
    assert a[0] == pytest.approx(-0.1) and b[0] == pytest.approx(-0.5) and c[0] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="^some parameters appear in more than one parameter group$"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([c])
    assert len(opt.param_groups) == 3


def test_named_params_take_a_dict_of_grads():
    w, bias = np.ones((2, 2)), np.ones(2)
    opt = fastoptim.Adam({"w": w, "b": bias}, lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    opt.step({"b": np.ones(2), "w": np.zeros((2, 2))})
    assert (w == 1).all() and (bias < 1).all()
    with pytest.raises(ValueError, match="missing \\['w'\\]"):
        opt.step({"b": np.ones(2)})
    with pytest.raises(TypeError, match="dict of gradients"):
        opt.step([np.ones((2, 2)), np.ones(2)])
    assert opt.state["w"]["step"] == 1 and opt.state[w]["step"] == 1


def test_none_grad_skips_the_parameter():
    a, b = np.ones(2), np.ones(2)
    opt = fastoptim.Adam([a, b], lr=0.1)
    opt.step([None, np.ones(2)])
    assert (a == 1).all() and (b < 1).all()
    assert 0 not in opt.state and opt.state[1]["step"] == 1


def test_state_layout_is_torchs():
    p = np.ones(3, np.float32)
    opt = fastoptim.Adam([p], amsgrad=True)
    assert opt.state_dict() == {"state": {}, "param_groups": [dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=True, maximize=False,
        foreach=None, capturable=False, differentiable=False, fused=None,
        decoupled_weight_decay=False, params=[0])]}
    opt.step([np.ones(3, np.float32)])
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"].dtype == np.float32 and sd["state"][0]["step"].shape == ()
    assert sd["state"][0]["exp_avg"].dtype == np.float32
    sd["state"][0]["exp_avg"][...] = 99  # a snapshot: editing it does not touch the optimizer
    assert (opt.state[0]["exp_avg"] != 99).all()
    sgd = fastoptim.SGD([p], momentum=0.9)
    sgd.step([np.ones(3, np.float32)])
    assert set(sgd.state[0]) == {"momentum_buffer"}
    plain = fastoptim.SGD([p])
    plain.step([np.ones(3, np.float32)])
    assert plain.state_dict()["state"] == {}


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(lr=float("nan")), "Invalid learning rate: nan"),
    (dict(momentum=-0.1), "Invalid momentum value: -0.1"),
    (dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    (dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), "Nesterov momentum requires"),
])
def test_sgd_hyperparameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastoptim.SGD([np.zeros(2)], **kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
    (dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (dict(betas=0.9), TypeError, "betas must be a pair"),
    (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(amsgrad=1), TypeError, "amsgrad must be a bool"),
])
def test_adam_hyperparameter_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastoptim.Adam([np.zeros(2)], **kwargs)


@pytest.mark.parametrize("params, error, message", [
    ([], ValueError, "empty parameter list"),
    (np.zeros(3), TypeError, "^params argument given to the optimizer should be an iterable of "
                             "arrays or dicts .* but got numpy.ndarray$"),
    ([np.zeros(3, np.int64)], TypeError, r"params\[0\] has dtype int64"),
    ([[1.0, 2.0]], TypeError, r"^optimizer can only optimize arrays .*, but one of the params is "
                              r"list \(params\[0\]\)$"),
    ({1, 2}, TypeError, "sets"),
])
def test_bad_params(params, error, message):
    with pytest.raises(error, match=message):
        fastoptim.SGD(params)


def test_parameter_twice_or_overlapping_is_rejected():
    a = np.zeros(4)
    with pytest.raises(ValueError, match="a parameter group with duplicate parameters"):
        fastoptim.SGD([a, a])
    with pytest.raises(ValueError, match="more than once or overlap"):
        fastoptim.SGD([a[:3], a[2:]])
    with pytest.raises(ValueError, match="^some parameters appear in more than one parameter group$"):
        fastoptim.SGD([{"params": [a]}, {"params": [a]}])


def test_read_only_param_is_rejected():
    a = np.zeros(3)
    a.setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        fastoptim.Adam([a])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make_grads, error, message", [
    (lambda: [np.ones(3, np.float32)], ValueError, "expected 2 gradients"),
    (lambda: [np.ones(3, np.float32), np.ones(3, np.float32)], ValueError, r"grads\[1\] has shape \(3,\)"),
    (lambda: [np.ones(3, np.float32), np.ones((2, 2), np.float64)], TypeError, r"grads\[1\] has dtype float64"),
    (lambda: [np.ones(3, np.float32), "x"], TypeError, r"grads\[1\] must be a NumPy array"),
    (lambda: {"a": 1}, TypeError, "list of gradients"),
])
def test_rejected_step_changes_nothing(backend, make_grads, error, message):
    a, b = np.ones(3, np.float32), np.ones((2, 2), np.float32)
    opt = fastoptim.Adam([a, b], lr=0.1, amsgrad=True, backend=backend)
    opt.step([np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    before = snapshot(opt, [a, b])
    with pytest.raises(error, match=message):
        opt.step(make_grads())
    assert_unchanged(opt, [a, b], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_aliasing_its_param_is_rejected(backend):
    a = np.ones(4, np.float32)
    opt = fastoptim.SGD([a], lr=0.1, momentum=0.9, backend=backend)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with its parameter"):
        opt.step([a])
    assert (a == 1).all() and 0 not in opt.state


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_group_hyperparameter_at_step_changes_nothing(backend):
    a, b = np.ones(3), np.ones(3)
    opt = fastoptim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9, backend=backend)
    opt.param_groups[1]["lr"] = -1.0  # e.g. a broken schedule
    before = snapshot(opt, [a, b])
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.step([np.ones(3), np.ones(3)])
    assert_unchanged(opt, [a, b], before)


_BAD_EDITS = [  # (set before the first steps, the edit after them, the next step's error)
    ({}, lambda g: g.__setitem__("lr", -1.0), ValueError, "Invalid learning rate"),
    ({}, lambda g: g.__setitem__("betas", (0.9, 1.5)), ValueError, "Invalid beta parameter at index 1"),
    ({"betas": [0.9, 0.999]}, lambda g: g["betas"].__setitem__(0, -0.5), ValueError,
     "Invalid beta parameter at index 0"),
    ({"lr": np.array(0.1)}, lambda g: g["lr"].__setitem__((), -2.0), ValueError,
     "Invalid learning rate"),
    ({}, lambda g: g.__setitem__("eps", -1e-8), ValueError, "Invalid epsilon value"),
    ({}, lambda g: g.__setitem__("fused", True), ValueError, "fused=True is not supported"),
    ({}, lambda g: g.__setitem__("amsgrad", "yes"), TypeError, "amsgrad"),
    ({}, lambda g: g.pop("betas"), KeyError, "betas"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("setup, edit, error, message", _BAD_EDITS)
def test_every_step_validates_groups_edited_after_earlier_steps(backend, setup, edit, error,
                                                                message):
    """Steps skip re-validating a group whose values are the same immutable objects as
    last time; any edit (a new value, a key, a list or array changed in place) is seen."""
    a = np.ones(5)
    opt = fastoptim.Adam([a], lr=0.1, backend=backend)
    opt.param_groups[0].update(copy.deepcopy(setup))  # the cases' lists and arrays are edited
    for _ in range(3):
        opt.step([np.ones(5)])
    edit(opt.param_groups[0])
    before = snapshot(opt, [a])
    with pytest.raises(error, match=message):
        opt.step([np.ones(5)])
    assert_unchanged(opt, [a], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_edited_between_steps_step_as_a_new_optimizer_would(backend):
    """amsgrad switched on, a new lr, momentum switched on: the next steps use them."""
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(7) for _ in range(6)]

    def run(name, edits):
        w = np.linspace(-1, 1, 7)
        opt = getattr(fastoptim, name)([w], lr=0.1, backend=backend)
        for k, g in enumerate(grads):
            if k == 3:
                opt.param_groups[0].update(edits)
            opt.step([g])
        return w

    for name, edits in (("Adam", {"amsgrad": True, "lr": 0.05}), ("SGD", {"momentum": 0.9})):
        ref = fastoptim.Adam if name == "Adam" else fastoptim.SGD
        w = np.linspace(-1, 1, 7)
        opt = ref([w], lr=0.1, backend="numpy")
        for k, g in enumerate(grads):
            if k == 3:
                opt.param_groups[0].update(edits)
            opt.step([g])
        np.testing.assert_array_equal(run(name, edits), w)


def test_load_state_dict_errors_change_nothing():
    a, b = np.ones(3), np.ones(2)
    opt = fastoptim.Adam([a, b], lr=0.1)
    opt.step([np.ones(3), np.ones(2)])
    good = opt.state_dict()
    other = fastoptim.Adam([np.ones(3), np.ones(2)], lr=0.5)
    other.step([np.full(3, 2.0), np.full(2, 2.0)])
    before = snapshot(other, other.param_groups[0]["params"])

    bad_shape = copy.deepcopy(good)
    bad_shape["state"][1]["exp_avg"] = np.zeros(5)
    bad_groups = copy.deepcopy(good)
    bad_groups["param_groups"].append(dict(bad_groups["param_groups"][0]))
    bad_size = copy.deepcopy(good)
    bad_size["param_groups"][0]["params"] = [0]
    bad_key = copy.deepcopy(good)
    bad_key["state"][0]["momentum"] = np.zeros(3)
    bad_lr = copy.deepcopy(good)
    bad_lr["param_groups"][0]["lr"] = -3.0
    for sd, message in [(bad_shape, r"has shape \(5,\)"), (bad_groups, "different number of parameter groups"),
                        (bad_size, "doesn't match the size"), (bad_key, "unexpected entry 'momentum'"),
                        (bad_lr, "Invalid learning rate"), ({"state": {}}, "must be a dict with")]:
        with pytest.raises((ValueError, TypeError), match=message):
            other.load_state_dict(sd)
        assert_unchanged(other, other.param_groups[0]["params"], before)
    other.load_state_dict(good)
    assert other.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(other.state[0]["exp_avg"], opt.state[0]["exp_avg"])


def test_load_state_dict_casts_to_param_dtype_and_copies():
    a = np.ones(3, np.float32)
    opt = fastoptim.SGD([a], momentum=0.9)
    sd = {"state": {0: {"momentum_buffer": np.arange(3.0)}},
          "param_groups": [dict(opt.param_groups[0], params=[0])]}
    opt.load_state_dict(sd)
    buf = opt.state[0]["momentum_buffer"]
    assert buf.dtype == np.float32 and buf is not sd["state"][0]["momentum_buffer"]
    opt.step([np.zeros(3, np.float32)])  # continues from the loaded buffer, not a first step
    np.testing.assert_allclose(a, 1 - 1e-3 * 0.9 * np.arange(3.0), rtol=1e-6)


def test_state_accepts_torch_state_dict_layout_from_arrays():
    """A state_dict with torch's layout (0-d step, arrays per index) loads into fastoptim."""
    a = np.ones(2)
    opt = fastoptim.Adam([a], lr=0.1)
    sd = {"state": {0: {"step": np.array(4.0, np.float32), "exp_avg": np.full(2, 0.1),
                        "exp_avg_sq": np.full(2, 0.01)}},
          "param_groups": [dict(opt.param_groups[0], params=[0])]}
    opt.load_state_dict(sd)
    opt.step([np.ones(2)])
    assert float(opt.state[0]["step"]) == 5.0


def test_repr_lists_groups():
    """torch's layout: the class, then each group's hyperparameters, one sorted
    ``key: value`` line each (parsed here and compared with param_groups)."""
    opt = fastoptim.SGD([{"params": [np.zeros(1)]},
                         {"params": [np.zeros(2)], "lr": 0.1, "momentum": 0.9}], lr=0.5)
    head, *lines = repr(opt).splitlines()
    assert head == f"SGD (backend={opt.backend!r})"
    groups = []
    for line in lines:
        if line.startswith("Parameter Group "):
            assert int(line.split()[-1]) == len(groups)
            groups.append({})
        else:
            key, value = line.strip().split(": ", 1)
            groups[-1][key] = value
    assert [list(g) for g in groups] == [sorted(g) for g in groups]
    assert groups == [{k: str(v) for k, v in g.items() if k != "params"}
                      for g in opt.param_groups]
    assert [float(g["lr"]) for g in groups] == [0.5, 0.1]
    assert [float(g["momentum"]) for g in groups] == [0.0, 0.9]


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_made_read_only_after_construction_is_rejected(backend):
    a = np.ones(3)
    opt = fastoptim.SGD([a], lr=0.1, backend=backend)
    a.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        opt.step([np.ones(3)])
    assert (a == 1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_aliasing_another_param_or_state_is_rejected(backend):
    a, b = np.ones(4), np.ones(4)
    opt = fastoptim.Adam([a, b], lr=0.1, backend=backend)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[1\]"):
        opt.step([b, np.ones(4)])
    opt.step([np.ones(4), np.ones(4)])
    before = snapshot(opt, [a, b])
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with state\[0\]\['exp_avg'\]"):
        opt.step([np.ones(4), opt.state[0]["exp_avg"]])
    assert_unchanged(opt, [a, b], before)


def test_flat_grad_buffer_aliasing_state_is_rejected():
    flat = fastoptim.FlatParams([np.ones(3), np.ones(2)])
    opt = fastoptim.Adam(flat.params, lr=0.1)
    opt.step(flat.grads)
    flat.grads.buffer = opt.state[0]["exp_avg"].base  # a (contrived) grad buffer over the state
    with pytest.raises(ValueError, match="grads.buffer shares memory with state 'exp_avg'"):
        opt.step(flat.grads)


def test_load_checks_first_and_applies_only_a_fresh_plan():
    """load_state_dict = _check_load (validates, changes nothing) + _apply_load."""
    w = np.ones(3, np.float32)
    opt = fastoptim.Adam([w], lr=0.1, backend="numpy")
    opt.step([np.ones(3, np.float32)])
    saved = opt.state_dict()
    opt.step([np.ones(3, np.float32)])
    now = opt.state_dict()
    plan = opt._check_load(saved)
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], now["state"][0]["exp_avg"])
    assert float(opt.state[0]["step"]) == 2.0
    opt._apply_load(plan)
    assert float(opt.state[0]["step"]) == 1.0
    plan = opt._check_load(now)
    opt.add_param_group({"params": [np.ones(2, np.float32)]})
    with pytest.raises(ValueError, match="another optimizer or layout"):
        opt._apply_load(plan)
    assert float(opt.state[0]["step"]) == 1.0
    other = fastoptim.Adam([np.ones(3, np.float32)], lr=0.1, backend="numpy")
    with pytest.raises(ValueError, match="another optimizer or layout"):
        other._apply_load(opt._check_load(opt.state_dict()))
