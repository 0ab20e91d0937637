"""Tests of fastoptim.lr_scheduler: golden sequences recorded with torch 2.13
(tools/gen_lr_golden.py), state_dict round trips, validation and torch's corner cases.

torch is not needed: the golden fixtures live in tests/data/lr_golden*.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastoptim import lr_scheduler as lrs

DATA = Path(__file__).resolve().parent / "data"
META = json.loads((DATA / "lr_golden_cases.json").read_text())
with np.load(DATA / "lr_golden.npz") as _npz:
    GOLDEN = {k: _npz[k] for k in _npz.files}
CASES = {c["name"]: c for c in META["cases"]}

# The named lambdas of the golden cases, as recorded with them by tools/gen_lr_golden.py
# (their sources are stored in the fixture, so the test and the generator cannot drift).
LAMBDA_SOURCES: dict[str, str] = META["lambdas"]
LAMBDAS = {name: eval(src, {"math": math}) for name, src in LAMBDA_SOURCES.items()}

SGD_DEFAULTS = dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)
ADAM_DEFAULTS = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False, decoupled_weight_decay=False
)


class StandInOptimizer:
    """Minimal optimizer: ``param_groups`` with fastoptim's/torch's keys, and
    torch-style ``state_dict``/``load_state_dict`` for the param groups."""

    def __init__(self, kind: str, groups: list[dict[str, Any]], with_defaults: bool = False) -> None:
        base = SGD_DEFAULTS if kind == "SGD" else ADAM_DEFAULTS
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            full = dict(base)
            full.update(g)
            if "betas" in full:
                full["betas"] = tuple(full["betas"])
            full["params"] = [np.zeros(3)]
            self.param_groups.append(full)
        if with_defaults:
            self.defaults = dict(base)

    def step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, saved in zip(self.param_groups, state["param_groups"]):
            g.update(copy.deepcopy(saved))


def make_optimizer(spec: dict[str, Any], with_defaults: bool = False) -> StandInOptimizer:
    return StandInOptimizer(spec["type"], spec["groups"], with_defaults)


def resolve(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$lambda"}:
        return LAMBDAS[value["$lambda"]]
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def build_scheduler(optimizer: Any, spec: dict[str, Any]) -> Any:
    cls = getattr(lrs, spec["type"])
    kwargs = {k: resolve(v) for k, v in spec.get("kwargs", {}).items()}
    if spec["type"] == "SequentialLR":
        return cls(optimizer, [build_scheduler(optimizer, s) for s in spec["schedulers"]], **kwargs)
    if spec["type"] == "ChainedScheduler":
        if spec.get("pass_optimizer"):
            kwargs["optimizer"] = optimizer
        return cls([build_scheduler(optimizer, s) for s in spec["schedulers"]], **kwargs)
    return cls(optimizer, **kwargs)


def momentum_of(group: dict[str, Any]) -> float:
    return float(group["betas"][0]) if "betas" in group else float(group["momentum"])


def snapshot(opt: Any, sched: Any) -> tuple[list[float], list[float], list[float]]:
    return (
        [float(g["lr"]) for g in opt.param_groups],
        [momentum_of(g) for g in opt.param_groups],
        [float(v) for v in sched.get_last_lr()],
    )


def drive(case: dict[str, Any], opt: Any, sched: Any, start: int, stop: int, out: list) -> None:
    """Apply steps ``start .. stop-1`` of ``case`` and append a snapshot after each."""
    metrics = GOLDEN[f"{case['name']}/metrics"] if case["drive"] == "metrics" else None
    for i in range(start, stop):
        mode = case["drive"]
        if mode == "step":
            sched.step()
        elif mode == "epoch":
            sched.step(i + 1)
        elif mode == "epochs":
            e = case["epochs"][i]
            if e is None:
                sched.step()
            else:
                sched.step(e)
        elif mode == "metrics":
            sched.step(float(metrics[i]))
        else:  # pragma: no cover
            raise ValueError(mode)
        out.append(snapshot(opt, sched))


def run_case(case: dict[str, Any], with_defaults: bool = False) -> dict[str, np.ndarray]:
    opt = make_optimizer(case["optimizer"], with_defaults)
    sched = build_scheduler(opt, case["scheduler"])
    rows = [snapshot(opt, sched)]
    drive(case, opt, sched, 0, case["steps"], rows)
    return {
        "lr": np.array([r[0] for r in rows]),
        "momentum": np.array([r[1] for r in rows]),
        "last_lr": np.array([r[2] for r in rows]),
    }


# --------------------------------------------------------------------------
# golden replays
# --------------------------------------------------------------------------


def _lambda_names(spec):
    """Every {"$lambda": name} reference inside a case spec."""
    if isinstance(spec, dict):
        if "$lambda" in spec:
            return {spec["$lambda"]}
        return set().union(*(_lambda_names(v) for v in spec.values()))
    if isinstance(spec, list):
        return set().union(*(_lambda_names(v) for v in spec))
    return set()


def test_fixture_metadata():
    used = {name for case in META["cases"] for name in _lambda_names(case)}
    assert used and used <= set(LAMBDA_SOURCES)
    assert META["torch_version"].startswith("2.13.0")
    assert len(CASES) >= 60
    covered = set()

    def walk(spec):
        covered.add(spec["type"])
        for s in spec.get("schedulers", []):
            walk(s)

    for c in CASES.values():
        walk(c["scheduler"])
        assert c["steps"] >= 300
    assert covered == set(lrs.__all__) - {"LRScheduler"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    case = CASES[name]
    got = run_case(case)
    for key in ("lr", "momentum", "last_lr"):
        want = GOLDEN[f"{name}/{key}"]
        assert got[key].shape == want.shape, key
        np.testing.assert_allclose(got[key], want, rtol=1e-12, atol=0, err_msg=f"{name}: {key}")


@pytest.mark.parametrize(
    "name",
    ["CyclicLR_triangular_sgd", "CyclicLR_exp_range_adam", "OneCycleLR_default_sgd", "OneCycleLR_linear_adam_pergroup"],
)
def test_golden_with_optimizer_defaults(name):
    """Momentum cycling decides SGD momentum vs Adam beta1 from ``optimizer.defaults`` when present."""
    got = run_case(CASES[name], with_defaults=True)
    np.testing.assert_allclose(got["lr"], GOLDEN[f"{name}/lr"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(got["momentum"], GOLDEN[f"{name}/momentum"], rtol=1e-12, atol=0)


# --------------------------------------------------------------------------
# state_dict round trips
# --------------------------------------------------------------------------

ROUND_TRIP_K = (0, 1, 137)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip(name):
    """Run k steps, save (pickled) optimizer + scheduler state, build a fresh
    optimizer and scheduler, load both (torch's order: scheduler built first),
    continue: identical to the uninterrupted run."""
    case = CASES[name]
    full = run_case(case)
    n = case["steps"]
    for k in ROUND_TRIP_K:
        opt = make_optimizer(case["optimizer"])
        sched = build_scheduler(opt, case["scheduler"])
        drive(case, opt, sched, 0, k, [])
        saved_opt = pickle.dumps(opt.state_dict())
        saved_sched = pickle.dumps(sched.state_dict())

        opt2 = make_optimizer(case["optimizer"])
        sched2 = build_scheduler(opt2, case["scheduler"])
        opt2.load_state_dict(pickle.loads(saved_opt))
        sched2.load_state_dict(pickle.loads(saved_sched))
        assert sched2.get_last_lr() == sched.get_last_lr()
        rows: list = []
        drive(case, opt2, sched2, k, n, rows)
        got_lr = np.array([r[0] for r in rows])
        got_mom = np.array([r[1] for r in rows])
        got_last = np.array([r[2] for r in rows])
        np.testing.assert_array_equal(got_lr, full["lr"][k + 1 :], err_msg=f"{name} k={k}")
        np.testing.assert_array_equal(got_mom, full["momentum"][k + 1 :], err_msg=f"{name} k={k}")
        np.testing.assert_array_equal(got_last, full["last_lr"][k + 1 :], err_msg=f"{name} k={k}")


def test_state_dict_does_not_hold_optimizer_or_functions():
    opt = make_optimizer({"type": "SGD", "groups": [{"lr": 0.1, "momentum": 0.9}]})
    s = lrs.LambdaLR(opt, lambda e: 0.9**e)
    sd = s.state_dict()
    assert "optimizer" not in sd and sd["lr_lambdas"] == [None]
    sd_copy = dict(sd)
    s.load_state_dict(sd)
    assert sd == sd_copy  # load_state_dict does not mutate its argument
    c = lrs.CyclicLR(opt, 0.01, 0.1, step_size_up=5, scale_fn=lambda x: 1.0)
    sd = c.state_dict()
    assert sd["_scale_fn_custom"] is None and "_scale_fn_ref" not in sd
    pickle.dumps(sd)


class DecayObject:
    """A callable object: its ``__dict__`` is saved by LambdaLR/MultiplicativeLR/CyclicLR."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, e: float) -> float:
        return self.rate**e


def test_lambda_callable_object_state():
    opt = make_optimizer({"type": "SGD", "groups": [{"lr": 0.1}, {"lr": 0.2}]})
    fn = DecayObject(0.9)
    s = lrs.LambdaLR(opt, [fn, lambda e: 1.0])
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.9}, None]
    fn.rate = 0.5
    fn2 = DecayObject(0.1)
    opt2 = make_optimizer({"type": "SGD", "groups": [{"lr": 0.1}, {"lr": 0.2}]})
    s2 = lrs.LambdaLR(opt2, [fn2, lambda e: 1.0])
    s2.load_state_dict(sd)
    assert fn2.rate == 0.9
    s2.step()
    assert opt2.param_groups[0]["lr"] == 0.1 * 0.9

    m = lrs.MultiplicativeLR(make_optimizer({"type": "SGD", "groups": [{"lr": 0.1}]}), DecayObject(0.7))
    assert m.state_dict()["lr_lambdas"] == [{"rate": 0.7}]

    cy_opt = make_optimizer({"type": "SGD", "groups": [{"lr": 0.1, "momentum": 0.9}]})
    cy = lrs.CyclicLR(cy_opt, 0.01, 0.1, step_size_up=4, scale_fn=DecayObject(0.8), scale_mode="iterations")
    sd = cy.state_dict()
    assert sd["_scale_fn_custom"] == {"rate": 0.8}
    other = DecayObject(0.3)
    cy2_opt = make_optimizer({"type": "SGD", "groups": [{"lr": 0.1, "momentum": 0.9}]})
    cy2 = lrs.CyclicLR(cy2_opt, 0.01, 0.1, step_size_up=4, scale_fn=other, scale_mode="iterations")
    cy2.load_state_dict(sd)
    assert other.rate == 0.8


# --------------------------------------------------------------------------
# base-class behaviour
# --------------------------------------------------------------------------


def sgd(*lrs_: float, **extra: Any) -> StandInOptimizer:
    return StandInOptimizer("SGD", [dict(lr=lr, **extra) for lr in lrs_])


def adam(*lrs_: float) -> StandInOptimizer:
    return StandInOptimizer("Adam", [dict(lr=lr) for lr in lrs_])


def test_initial_lr_and_base_lrs():
    opt = sgd(0.1, 0.01)
    s = lrs.StepLR(opt, step_size=2)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert s.base_lrs == [0.1, 0.01]
    assert s.last_epoch == 0 and s.get_last_lr() == [0.1, 0.01]
    # a second scheduler keeps the existing initial_lr (setdefault)
    opt.param_groups[0]["lr"] = 0.5
    s2 = lrs.ExponentialLR(opt, gamma=0.5)
    assert s2.base_lrs == [0.1, 0.01]


def test_resume_without_initial_lr_raises_keyerror():
    with pytest.raises(KeyError, match="initial_lr"):
        lrs.StepLR(sgd(0.1), step_size=3, last_epoch=5)
    with pytest.raises(KeyError, match=r"param_groups\[0\]"):
        lrs.CosineAnnealingLR(sgd(0.1), T_max=10, last_epoch=0)


def test_get_lr_outside_step_warns():
    s = lrs.ExponentialLR(sgd(0.1), gamma=0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        s.get_lr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.step()  # no warning inside step


def test_get_last_lr_is_a_copy_of_group_lrs():
    opt = sgd(0.1)
    s = lrs.ExponentialLR(opt, gamma=0.5)
    s.step()
    last = s.get_last_lr()
    assert last == [0.05]
    last[0] = 123.0
    assert opt.param_groups[0]["lr"] == 0.05


def test_recursive_form_keeps_outside_changes_and_closed_form_does_not():
    opt = sgd(1.0)
    s = lrs.StepLR(opt, step_size=2, gamma=0.5)
    s.step()
    opt.param_groups[0]["lr"] = 10.0  # outside change
    s.step()  # epoch 2: decay the current lr
    assert opt.param_groups[0]["lr"] == 5.0
    s.step(4)  # closed form from base_lrs
    assert opt.param_groups[0]["lr"] == 0.25


def test_cosine_recursive_vs_closed_form():
    opt = sgd(0.1)
    s = lrs.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    for _ in range(7):
        s.step()
    rec = opt.param_groups[0]["lr"]
    s.step(7)
    closed = opt.param_groups[0]["lr"]
    assert closed == 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * 7 / 10)) / 2
    assert rec == pytest.approx(closed, rel=1e-13)


def test_array_lr_updated_in_place():
    opt = sgd(0.1)
    opt.param_groups[0]["lr"] = np.array(0.1)
    arr = opt.param_groups[0]["lr"]
    s = lrs.ExponentialLR(opt, gamma=0.5)
    s.step()
    assert opt.param_groups[0]["lr"] is arr and float(arr) == 0.05
    assert s.get_last_lr()[0] is not arr  # copies never alias
    assert opt.param_groups[0]["initial_lr"] is not arr


def test_one_cycle_stepped_past_total_steps():
    opt = sgd(0.1, momentum=0.9)
    s = lrs.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    for _ in range(10):
        s.step()  # torch allows exactly total_steps steps
    with pytest.raises(ValueError, match=r"Tried to step 11 times\. The specified number of total steps is 10"):
        s.step()


def test_one_cycle_writes_group_values():
    opt = adam(0.1, 0.1)
    lrs.OneCycleLR(opt, max_lr=[1.0, 2.0], total_steps=100, div_factor=10.0, final_div_factor=4.0)
    g0, g1 = opt.param_groups
    assert (g0["initial_lr"], g0["max_lr"], g0["min_lr"]) == (0.1, 1.0, 0.025)
    assert (g1["initial_lr"], g1["max_lr"], g1["min_lr"]) == (0.2, 2.0, 0.05)
    assert g0["betas"] == (0.95, 0.999) and g0["max_momentum"] == 0.95 and g0["base_momentum"] == 0.85
    assert g0["lr"] == pytest.approx(0.1, rel=1e-15)  # cos anneal at pct=0: end + (start - end) / 2 * 2


def test_plateau_basics():
    opt = sgd(1.0, 1.0)
    s = lrs.ReduceLROnPlateau(opt, patience=1, factor=0.5, min_lr=[0.0, 0.6])
    assert s.get_last_lr() == [1.0, 1.0]
    for m in [1.0, 1.0, 1.0]:  # two bad epochs > patience 1
        s.step(m)
    assert s.get_last_lr() == [0.5, 0.6]
    s.step(np.float64(0.1))  # numpy/0-d metrics accepted
    assert s.best == 0.1 and s.num_bad_epochs == 0
    # eps rule: no update when the decrease is <= eps
    opt = sgd(1e-8)
    s = lrs.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    s.step(1.0)
    s.step(2.0)
    assert opt.param_groups[0]["lr"] == 1e-8


def test_plateau_new_param_group():
    opt = sgd(1.0)
    s = lrs.ReduceLROnPlateau(opt, patience=0, min_lr=0.1)
    opt.param_groups.append(dict(opt.param_groups[0], lr=2.0))
    s.step(1.0)
    s.step(2.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    opt = sgd(1.0)
    s = lrs.ReduceLROnPlateau(opt, patience=0, min_lr=[0.1])
    opt.param_groups.append(dict(opt.param_groups[0], lr=2.0))
    s.step(1.0)
    with pytest.raises(RuntimeError, match="min_lrs"):
        s.step(2.0)


def test_plateau_state_dict_restores_comparison():
    opt = sgd(1.0)
    s = lrs.ReduceLROnPlateau(opt, mode="max", threshold_mode="abs", threshold=0.1, patience=0)
    s.step(1.0)
    sd = pickle.loads(pickle.dumps(s.state_dict()))
    s2 = lrs.ReduceLROnPlateau(sgd(1.0))
    s2.load_state_dict(sd)
    assert (s2.mode, s2.threshold_mode, s2.mode_worse, s2.best) == ("max", "abs", -math.inf, 1.0)
    assert s2._is_better(1.2, 1.0) and not s2._is_better(1.05, 1.0)


def test_cyclic_sets_lr_and_momentum():
    opt = sgd(0.5, momentum=0.0)
    s = lrs.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=4)
    g = opt.param_groups[0]
    assert g["lr"] == 0.1 and g["momentum"] == 0.9 and g["initial_lr"] == 0.1
    s.step()
    s.step()
    assert g["lr"] == pytest.approx(0.55) and g["momentum"] == pytest.approx(0.85)
    # Adam: beta1 is cycled, beta2 kept
    opt = adam(0.5)
    lrs.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=4, base_momentum=0.7, max_momentum=0.8)
    assert opt.param_groups[0]["betas"] == (0.8, 0.999)


def test_sequential_milestone_restarts_with_closed_form():
    opt = sgd(1.0)
    a = lrs.ConstantLR(opt, factor=0.5, total_iters=100)
    b = lrs.ExponentialLR(opt, gamma=0.5)
    s = lrs.SequentialLR(opt, [a, b], milestones=[3])
    assert opt.param_groups[0]["lr"] == 0.5 and b.last_epoch == -1
    for _ in range(3):
        s.step()
    assert b.last_epoch == 0 and opt.param_groups[0]["lr"] == 1.0  # step(0): base_lr * gamma**0
    s.step()
    assert opt.param_groups[0]["lr"] == 0.5 and s.get_last_lr() == [0.5]


def test_chained_scheduler_last_lr():
    opt = sgd(1.0)
    c = lrs.ChainedScheduler([lrs.ConstantLR(opt, factor=0.5, total_iters=2), lrs.ExponentialLR(opt, gamma=0.9)])
    assert c.get_last_lr() == [0.5]
    c.step()
    assert c.get_last_lr() == [0.45]
    c.step()
    assert c.get_last_lr() == pytest.approx([0.81])


def test_cawr_fractional_and_quirk():
    opt = sgd(1.0)
    s = lrs.CosineAnnealingWarmRestarts(opt, T_0=1, T_mult=3)
    s.step(121)  # torch's float log puts this epoch at the end of the previous cycle
    assert (s.T_cur, s.T_i) == (81.0, 81) and opt.param_groups[0]["lr"] == 0.0
    s.step(2.5)
    assert (s.T_cur, s.T_i, s.last_epoch) == (1.5, 3, 2)
    s.step()
    assert (s.T_cur, s.T_i, s.last_epoch) == (2.5, 3, 3)
    s.step()
    assert (s.T_cur, s.T_i) == (0.5, 9)
    with pytest.raises(ValueError, match="non-negative epoch"):
        s.step(-1)


def test_real_fastoptim_optimizers():
    fastoptim = pytest.importorskip("fastoptim")
    if not hasattr(fastoptim, "SGD") or not hasattr(fastoptim, "Adam"):
        pytest.skip("fastoptim optimizers not available")
    w = np.zeros(3)
    opt = fastoptim.SGD([w], lr=0.1, momentum=0.9)
    sched = lrs.OneCycleLR(opt, max_lr=1.0, total_steps=20)
    ref = StandInOptimizer("SGD", [{"lr": 0.1, "momentum": 0.9}])
    ref_sched = lrs.OneCycleLR(ref, max_lr=1.0, total_steps=20)
    for _ in range(20):
        opt.step([np.ones(3)])
        sched.step()
        ref_sched.step()
        assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
        assert opt.param_groups[0]["momentum"] == ref.param_groups[0]["momentum"]
    assert np.all(w != 0)

    w2 = np.zeros(3)
    opt2 = fastoptim.Adam([w2], lr=1e-3, betas=(0.9, 0.99))
    sched2 = lrs.CyclicLR(opt2, base_lr=1e-4, max_lr=1e-2, step_size_up=5)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.99)  # max_momentum 0.9
    for _ in range(3):
        opt2.step([np.ones(3)])
        sched2.step()
    assert opt2.param_groups[0]["betas"][1] == 0.99
    assert opt2.param_groups[0]["betas"][0] == pytest.approx(0.9 - 0.1 * 3 / 5)

    # resume through the real optimizer's state_dict
    w3 = np.zeros(3)
    opt3 = fastoptim.SGD([w3], lr=0.1, momentum=0.9)
    s3 = lrs.CosineAnnealingLR(opt3, T_max=10)
    for _ in range(4):
        opt3.step([np.ones(3)])
        s3.step()
    saved = copy.deepcopy((opt3.state_dict(), s3.state_dict()))
    for _ in range(3):
        s3.step()
    want = opt3.param_groups[0]["lr"]
    opt4 = fastoptim.SGD([np.zeros(3)], lr=0.1, momentum=0.9)
    s4 = lrs.CosineAnnealingLR(opt4, T_max=10)
    opt4.load_state_dict(saved[0])
    s4.load_state_dict(saved[1])
    for _ in range(3):
        s4.step()
    assert opt4.param_groups[0]["lr"] == want


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


class NoGroups:
    pass


@pytest.mark.parametrize(
    "factory",
    [
        lambda o: lrs.StepLR(o, 3),
        lambda o: lrs.LambdaLR(o, lambda e: 1.0),
        lambda o: lrs.ReduceLROnPlateau(o),
        lambda o: lrs.CyclicLR(o, 0.1, 1.0),
        lambda o: lrs.OneCycleLR(o, 1.0, total_steps=10),
        lambda o: lrs.SequentialLR(o, [], []),
    ],
)
def test_optimizer_without_param_groups(factory):
    with pytest.raises(TypeError, match="param_groups"):
        factory(NoGroups())


@pytest.mark.parametrize(
    "factory, exc, match",
    [
        (lambda o: lrs.StepLR(o, step_size=0), ValueError, "step_size"),
        (lambda o: lrs.StepLR(o, step_size=-3), ValueError, "step_size"),
        (lambda o: lrs.StepLR(o, step_size=2.5), TypeError, "step_size"),
        (lambda o: lrs.StepLR(o, step_size=3, gamma=0.0), ValueError, "gamma"),
        (lambda o: lrs.MultiStepLR(o, [1, 2], gamma=-0.1), ValueError, "gamma"),
        (lambda o: lrs.ExponentialLR(o, gamma=0), ValueError, "gamma"),
        (lambda o: lrs.ExponentialLR(o, gamma="0.9"), TypeError, "gamma"),
        (lambda o: lrs.ConstantLR(o, factor=1.5), ValueError, "factor"),
        (lambda o: lrs.ConstantLR(o, total_iters=-1), ValueError, "total_iters"),
        (lambda o: lrs.LinearLR(o, start_factor=0), ValueError, "start_factor"),
        (lambda o: lrs.LinearLR(o, end_factor=1.5), ValueError, "end_factor"),
        (lambda o: lrs.PolynomialLR(o, total_iters=-2), ValueError, "total_iters"),
        (lambda o: lrs.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
        (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
        (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=2.0), ValueError, "T_0"),
        (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0), ValueError, "T_mult"),
        (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=1.5), ValueError, "T_mult"),
        (lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=2, eta_min="x"), ValueError, "eta_min"),
        (lambda o: lrs.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor"),
        (lambda o: lrs.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode"),
        (lambda o: lrs.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold mode"),
        (lambda o: lrs.ReduceLROnPlateau(o, min_lr=[0.1, 0.1, 0.1]), ValueError, "min_lrs"),
        (lambda o: lrs.LambdaLR(o, [lambda e: 1.0]), ValueError, "lr_lambdas"),
        (lambda o: lrs.LambdaLR(o, 3), TypeError, "lr_lambda"),
        (lambda o: lrs.MultiplicativeLR(o, [lambda e: 1.0, 2]), TypeError, "lr_lambda"),
        (lambda o: lrs.CyclicLR(o, 0.1, 1.0, mode="sine"), ValueError, "mode"),
        (lambda o: lrs.CyclicLR(o, 0.1, 1.0, scale_fn=lambda x: 1.0, scale_mode="epoch"), ValueError, "scale_mode"),
        (lambda o: lrs.CyclicLR(o, [0.1], 1.0), ValueError, "base_lr"),
        (lambda o: lrs.CyclicLR(o, 0.1, [1.0, 1.0, 1.0]), ValueError, "max_lr"),
        (lambda o: lrs.CyclicLR(o, 0.1, 1.0, base_momentum=[0.8]), ValueError, "base_momentum"),
        (lambda o: lrs.CyclicLR(o, 0.1, 1.0, step_size_up=0), ValueError, "step_size_up"),
        (lambda o: lrs.CyclicLR(o, 0.1, 1.0, step_size_down=-1), ValueError, "step_size_down"),
        (lambda o: lrs.OneCycleLR(o, 1.0), ValueError, "total_steps OR"),
        (lambda o: lrs.OneCycleLR(o, 1.0, total_steps=0), ValueError, "total_steps"),
        (lambda o: lrs.OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=0), ValueError, "steps_per_epoch"),
        (lambda o: lrs.OneCycleLR(o, 1.0, epochs=-1, steps_per_epoch=3), ValueError, "epochs"),
        (lambda o: lrs.OneCycleLR(o, 1.0, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
        (lambda o: lrs.OneCycleLR(o, 1.0, total_steps=10, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
        (lambda o: lrs.OneCycleLR(o, [1.0], total_steps=10), ValueError, "max_lr"),
        (lambda o: lrs.OneCycleLR(o, 1.0, total_steps=10, max_momentum=[0.9] * 3), ValueError, "max_momentum"),
    ],
)
def test_validation(factory, exc, match):
    opt = sgd(0.1, 0.2, momentum=0.9)
    hyper = lambda: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]  # noqa: E731
    before = hyper()
    with pytest.raises(exc, match=match):
        factory(opt)
    assert hyper() == before  # nothing was touched


def test_cycle_momentum_needs_momentum_or_betas():
    opt = StandInOptimizer("SGD", [{"lr": 0.1}])
    del opt.param_groups[0]["momentum"]
    for factory in (lambda: lrs.CyclicLR(opt, 0.1, 1.0), lambda: lrs.OneCycleLR(opt, 1.0, total_steps=10)):
        with pytest.raises(ValueError, match="momentum or beta1"):
            factory()
    lrs.CyclicLR(opt, 0.1, 1.0, cycle_momentum=False)  # fine without


def test_composition_validation():
    opt, other = sgd(0.1), sgd(0.1)
    a = lrs.StepLR(opt, 3)
    b = lrs.ExponentialLR(other, 0.9)
    with pytest.raises(ValueError, match="at least one"):
        lrs.SequentialLR(opt, [], [])
    with pytest.raises(ValueError, match="at least one"):
        lrs.ChainedScheduler([])
    with pytest.raises(ValueError, match="same optimizer"):
        lrs.SequentialLR(opt, [a, b], [3])
    with pytest.raises(ValueError, match="same optimizer"):
        lrs.ChainedScheduler([a, b])
    with pytest.raises(ValueError, match="number of milestones"):
        lrs.SequentialLR(opt, [a, lrs.StepLR(opt, 2)], [])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lrs.SequentialLR(opt, [a, lrs.ReduceLROnPlateau(opt)], [3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lrs.ChainedScheduler([a, lrs.ReduceLROnPlateau(opt)])
    with pytest.raises(TypeError, match="optimizer"):
        lrs.ChainedScheduler([a, object()])


# ------------------------------------------------------------ two-phase load_state_dict
def _opt(groups=1):
    import fastoptim

    return fastoptim.SGD([{"params": [np.ones(2)]} for _ in range(groups)], lr=0.1)


def test_load_state_dict_checks_before_it_changes_anything():
    """torch updates the scheduler's attributes and then fails on a bad entry; here the
    check phase runs first, so a rejected state leaves the scheduler as it was."""
    class Scale:
        def __init__(self):
            self.k = 2

        def __call__(self, epoch):
            return self.k * 0.5

    opt = _opt(2)
    sched = lrs.LambdaLR(opt, [Scale(), Scale()])
    sched.step()
    good = sched.state_dict()
    before = copy.deepcopy(sched.__dict__)
    for bad, error in [
            (dict(good, last_epoch=7, lr_lambdas=[{"k": 3}, 5]), TypeError),  # not a dict
            (dict(good, last_epoch=7, lr_lambdas=[None, None, None]), ValueError),  # 3 > 2
            ([("last_epoch", 3)], TypeError)]:
        with pytest.raises(error):
            sched.load_state_dict(bad)
        assert sched.last_epoch == before["last_epoch"]
        assert [f.k for f in sched.lr_lambdas] == [2, 2]
    sched.load_state_dict(dict(good, last_epoch=7, lr_lambdas=[{"k": 3}, None]))
    assert sched.last_epoch == 7 and [f.k for f in sched.lr_lambdas] == [3, 2]


def test_reduce_on_plateau_refuses_an_unknown_mode_before_loading():
    opt = _opt()
    sched = lrs.ReduceLROnPlateau(opt, patience=2)
    state = dict(sched.state_dict(), mode="sideways", patience=9)
    with pytest.raises(ValueError, match="mode 'sideways' is unknown"):
        sched.load_state_dict(state)
    assert sched.mode == "min" and sched.patience == 2
    sched.load_state_dict(dict(state, mode="max"))
    assert sched.mode == "max" and sched.patience == 9 and sched.mode_worse == -math.inf


def test_sequential_lr_checks_every_sub_state_first():
    opt = _opt()
    subs = [lrs.ConstantLR(opt, factor=0.5, total_iters=2), lrs.ExponentialLR(opt, gamma=0.9)]
    sched = lrs.SequentialLR(opt, subs, milestones=[2])
    state = sched.state_dict()
    bad = dict(state, last_epoch=5, _schedulers=[dict(state["_schedulers"][0], last_epoch=4),
                                                  "not a state"])
    with pytest.raises(TypeError):
        sched.load_state_dict(bad)
    assert sched.last_epoch == 0 and subs[0].last_epoch == 0
    with pytest.raises(KeyError):
        sched.load_state_dict({"last_epoch": 5})
    good = dict(state, last_epoch=5, _schedulers=[dict(state["_schedulers"][0], last_epoch=4),
                                                   state["_schedulers"][1]])
    sched.load_state_dict(good)
    assert sched.last_epoch == 5 and subs[0].last_epoch == 4
