"""Tests of fastoptim.schedules, the pure closed-form ``step -> lr`` functions,
against the torch 2.13 golden sequences in tests/data/lr_golden* (no torch needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fastoptim import schedules as sch

DATA = Path(__file__).resolve().parent / "data"
META = json.loads((DATA / "lr_golden_cases.json").read_text())
CASES = {c["name"]: c for c in META["cases"]}
with np.load(DATA / "lr_golden.npz") as _npz:
    GOLDEN = {k: _npz[k] for k in _npz.files}

N = META["steps"]
T = np.arange(N + 1)  # row r of a golden array is the lr after r steps


def golden(name: str, key: str = "lr") -> np.ndarray:
    return GOLDEN[f"{name}/{key}"]


def group_lrs(name: str) -> list[float]:
    return [g["lr"] for g in CASES[name]["optimizer"]["groups"]]


def kwargs(name: str) -> dict:
    return dict(CASES[name]["scheduler"]["kwargs"])


def assert_exact(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------
# closed forms == torch's closed forms (scheduler.step(epoch)), per group
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("StepLR_epoch", sch.step_decay, lambda k: (k["step_size"], k["gamma"])),
        ("MultiStepLR_epoch", sch.multistep, lambda k: (k["milestones"], k["gamma"])),
        ("ConstantLR_epoch", sch.constant, lambda k: (k["factor"], k["total_iters"])),
        ("LinearLR_epoch", sch.linear, lambda k: (k["start_factor"], k["end_factor"], k["total_iters"])),
        ("ExponentialLR_epoch", sch.exponential, lambda k: (k["gamma"],)),
        ("PolynomialLR_sqrt_epoch", sch.polynomial, lambda k: (k["total_iters"], k["power"])),
        ("CosineAnnealingLR_epoch", sch.cosine, lambda k: (k["T_max"], k["eta_min"])),
        ("CAWR_mult3_log_quirk", sch.cosine_warm_restarts, lambda k: (k["T_0"], k["T_mult"])),
    ],
)
def test_closed_forms_match_torch_step_epoch(name, fn, args):
    assert CASES[name]["drive"] == "epoch"
    want = golden(name)
    for g, base_lr in enumerate(group_lrs(name)):
        got = fn(T, base_lr, *args(kwargs(name)))
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        assert_exact(got, want[:, g])


@pytest.mark.parametrize("name", ["CAWR_quarter_epochs_mult2", "CAWR_frac_epochs_mult2", "CAWR_frac_epochs_mult1"])
def test_cosine_warm_restarts_fractional_epochs(name):
    k = kwargs(name)
    epochs = [0.0] + CASES[name]["epochs"]
    want = golden(name)
    for g, base_lr in enumerate(group_lrs(name)):
        got = sch.cosine_warm_restarts(epochs, base_lr, k["T_0"], k.get("T_mult", 1), k.get("eta_min", 0.0))
        assert_exact(got, want[:, g])


def test_warm_restart_position():
    assert sch.warm_restart_position(0, 5, 2) == (0, 5)
    assert sch.warm_restart_position(4.5, 5, 2) == (4.5, 5)
    assert sch.warm_restart_position(5, 5, 2) == (0.0, 10)
    assert sch.warm_restart_position(16, 5, 2) == (1.0, 20)
    assert sch.warm_restart_position(12, 5, 1) == (2, 5)
    # torch's float-log quirk: 121 = 1 + 3 + 9 + 27 + 81 should start a cycle of 243,
    # but log(243, 3) = 4.999... so torch (and we) stay at the end of the 81 cycle
    assert sch.warm_restart_position(121, 1, 3) == (81.0, 81)
    assert sch.cosine_warm_restarts(121, 1.0, 1, 3) == 0.0
    with pytest.raises(ValueError, match="non-negative epoch"):
        sch.warm_restart_position(-0.5, 5, 2)


# --------------------------------------------------------------------------
# CyclicLR / OneCycleLR are closed-form in torch: compare every step
# --------------------------------------------------------------------------

SCALE_FNS = {"cyc_half": lambda x: 0.5 ** (x - 1), "iter_decay": lambda x: 1 / (1 + 0.01 * x)}


def per_group(value, g):
    return value[g] if isinstance(value, list) else value


@pytest.mark.parametrize(
    "name",
    [
        "CyclicLR_triangular_sgd",
        "CyclicLR_triangular2_pergroup",
        "CyclicLR_exp_range_adam",
        "CyclicLR_exp_range_pergroup_adam",
        "CyclicLR_scalefn_cycle",
        "CyclicLR_scalefn_iter_nomomentum",
        "CyclicLR_resume",
    ],
)
def test_cyclic(name):
    k = kwargs(name)
    steps = T + k.get("last_epoch", -1) + 1
    scale_fn = SCALE_FNS[k["scale_fn"]["$lambda"]] if "scale_fn" in k else None
    common = dict(
        step_size_up=k.get("step_size_up", 2000),
        step_size_down=k.get("step_size_down"),
        mode=k.get("mode", "triangular"),
        gamma=k.get("gamma", 1.0),
        scale_fn=scale_fn,
        scale_mode=k.get("scale_mode", "cycle"),
    )
    want_lr, want_m = golden(name), golden(name, "momentum")
    for g in range(want_lr.shape[1]):
        got = sch.cyclic(steps, per_group(k["base_lr"], g), per_group(k["max_lr"], g), **common)
        assert_exact(got, want_lr[:, g])
        if k.get("cycle_momentum", True):
            got_m = sch.cyclic_momentum(
                steps, per_group(k.get("base_momentum", 0.8), g), per_group(k.get("max_momentum", 0.9), g), **common
            )
            assert_exact(got_m, want_m[:, g])


@pytest.mark.parametrize(
    "name",
    [
        "OneCycleLR_default_sgd",
        "OneCycleLR_linear_adam_pergroup",
        "OneCycleLR_three_phase_cos",
        "OneCycleLR_three_phase_linear_epochs",
        "OneCycleLR_adam_pct45",
        "OneCycleLR_resume",
    ],
)
def test_one_cycle(name):
    k = kwargs(name)
    total = k.get("total_steps") or k["epochs"] * k["steps_per_epoch"]
    steps = T + k.get("last_epoch", -1) + 1
    common = dict(
        total_steps=total,
        pct_start=k.get("pct_start", 0.3),
        anneal_strategy=k.get("anneal_strategy", "cos"),
        three_phase=k.get("three_phase", False),
    )
    want_lr, want_m = golden(name), golden(name, "momentum")
    for g in range(want_lr.shape[1]):
        got = sch.one_cycle(
            steps,
            per_group(k["max_lr"], g),
            div_factor=k.get("div_factor", 25.0),
            final_div_factor=k.get("final_div_factor", 1e4),
            **common,
        )
        assert_exact(got, want_lr[:, g])
        if k.get("cycle_momentum", True):
            got_m = sch.one_cycle_momentum(
                steps,
                base_momentum=per_group(k.get("base_momentum", 0.85), g),
                max_momentum=per_group(k.get("max_momentum", 0.95), g),
                **common,
            )
            assert_exact(got_m, want_m[:, g])


def test_one_cycle_limits():
    # step == total_steps is allowed and extrapolates the last phase (pct = 71 / 70)
    assert sch.one_cycle(100, 1.0, 100) == pytest.approx(4e-6 + (1.0 - 4e-6) / 2 * (1 + math.cos(math.pi * 71 / 70)))
    with pytest.raises(ValueError, match=r"Tried to step 101 times\. The specified number of total steps is 100"):
        sch.one_cycle(101, 1.0, 100)
    with pytest.raises(ValueError, match="anneal_strategy"):
        sch.one_cycle(1, 1.0, 100, anneal_strategy="exp")
    with pytest.raises(ValueError, match="total_steps"):
        sch.one_cycle_momentum(1, 0)
    with pytest.raises(ValueError, match="pct_start"):
        sch.one_cycle(1, 1.0, 100, pct_start=-0.1)


# --------------------------------------------------------------------------
# closed forms vs torch's recursive sequences (agree up to rounding)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("StepLR_30", sch.step_decay, lambda k: (k["step_size"], k["gamma"])),
        ("StepLR_pergroup", sch.step_decay, lambda k: (k["step_size"], k["gamma"])),
        ("MultiStepLR_dup_unsorted", sch.multistep, lambda k: (k["milestones"], k["gamma"])),
        ("ExponentialLR_pergroup", sch.exponential, lambda k: (k["gamma"],)),
        ("ConstantLR_pergroup", sch.constant, lambda k: (k["factor"], k["total_iters"])),
        ("LinearLR_warmup", sch.linear, lambda k: (k["start_factor"], k["end_factor"], k["total_iters"])),
        ("LinearLR_decay_to_zero", sch.linear, lambda k: (k["start_factor"], k["end_factor"], k["total_iters"])),
        ("PolynomialLR_pow2", sch.polynomial, lambda k: (k["total_iters"], k["power"])),
        ("CosineAnnealingLR_T100", sch.cosine, lambda k: (k["T_max"], 0.0)),
        ("CosineAnnealingLR_T50_etamin", sch.cosine, lambda k: (k["T_max"], k["eta_min"])),
        ("CosineAnnealingLR_T300_etamin", sch.cosine, lambda k: (k["T_max"], k["eta_min"])),
        ("CAWR_T5_mult2_etamin", sch.cosine_warm_restarts, lambda k: (k["T_0"], k["T_mult"], k["eta_min"])),
    ],
)
def test_closed_forms_track_recursive_forms(name, fn, args):
    want = golden(name)
    for g, base_lr in enumerate(group_lrs(name)):
        got = fn(T, base_lr, *args(kwargs(name)))
        np.testing.assert_allclose(got, want[:, g], rtol=1e-11, atol=1e-15 * base_lr)


def test_warmup_cosine_matches_sequential_linear_cosine():
    # SequentialLR([LinearLR(0.1, total_iters=20), CosineAnnealingLR(T_max=280)], milestones=[20])
    want = golden("SequentialLR_warmup_cosine")[:, 0]
    got = sch.warmup_cosine(T, 0.1, warmup_steps=20, total_steps=300, eta_min=0.0, warmup_start_factor=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-16)
    assert got[0] == 0.1 * 0.1 and got[20] == 0.1 and got[300] == 0.0


def test_warmup_cosine_shape():
    f = lambda s: sch.warmup_cosine(s, 1.0, 10, 110, eta_min=0.1)  # noqa: E731
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.55) and f(110) == 0.1 and f(1000) == 0.1
    assert np.all(np.diff(f(np.arange(10, 111))) <= 0)
    assert sch.warmup_cosine(0, 1.0, 0, 10) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="total_steps"):
        sch.warmup_cosine(0, 1.0, 10, 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        sch.warmup_cosine(0, 1.0, -1, 10)
    with pytest.raises(ValueError, match="warmup_start_factor"):
        sch.warmup_cosine(0, 1.0, 5, 10, warmup_start_factor=2.0)


# --------------------------------------------------------------------------
# API details
# --------------------------------------------------------------------------


def test_scalar_and_array_inputs():
    assert type(sch.cosine(3, 0.1, 10)) is float
    assert type(sch.cosine(np.int64(3), 0.1, 10)) is float
    assert sch.cosine(np.int64(3), 0.1, 10) == sch.cosine(3, 0.1, 10)
    steps = np.arange(12).reshape(3, 4)
    arr = sch.step_decay(steps, 1.0, 3, 0.5)
    assert arr.shape == (3, 4) and arr.dtype == np.float64
    assert arr.ravel().tolist() == [sch.step_decay(int(s), 1.0, 3, 0.5) for s in steps.ravel()]
    assert sch.exponential([0, 1, 2], 1.0, 0.5).tolist() == [1.0, 0.5, 0.25]
    assert sch.constant(5, 0.3) == 0.3  # defaults: constant lr
    assert sch.constant([0, 4, 5], 1.0, factor=0.5, total_iters=5).tolist() == [0.5, 0.5, 1.0]
    assert sch.multistep([0, 1, 2, 3], 1.0, [2, 1, 2], 0.5).tolist() == [1.0, 0.5, 0.125, 0.125]


def test_formulas():
    assert sch.cosine(0, 1.0, 10) == 1.0 and sch.cosine(10, 1.0, 10) == 0.0
    assert sch.cosine(5, 1.0, 10, eta_min=0.2) == pytest.approx(0.6)
    assert sch.cosine(20, 1.0, 10) == 1.0  # not clamped, periodic like torch
    assert sch.linear(0, 2.0, 0.25, 1.0, 4) == 0.5 and sch.linear(2, 2.0, 0.25, 1.0, 4) == 1.25
    assert sch.linear(100, 2.0, 0.25, 1.0, 4) == 2.0
    assert sch.polynomial(2, 1.0, 4, 2.0) == 0.25 and sch.polynomial(9, 1.0, 4, 2.0) == 0.0
    assert sch.cyclic(0, 0.1, 1.0, 4) == 0.1 and sch.cyclic(4, 0.1, 1.0, 4) == 1.0
    assert sch.cyclic(12, 0.1, 1.0, 4, mode="triangular2") == pytest.approx(0.55)
    assert sch.cyclic_momentum(4, 0.8, 0.9, 4) == pytest.approx(0.8)
    assert sch.one_cycle(0, 1.0, 100) == pytest.approx(0.04)
    assert sch.one_cycle(29, 1.0, 100) == 1.0
    assert sch.one_cycle(99, 1.0, 100) == pytest.approx(4e-6)
    assert sch.one_cycle_momentum(29, 100) == 0.85


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sch.step_decay(1, 1.0, 0), ValueError, "step_size"),
        (lambda: sch.step_decay(1, 1.0, 2.5), TypeError, "step_size"),
        (lambda: sch.step_decay(1, 1.0, 3, gamma=0), ValueError, "gamma"),
        (lambda: sch.exponential(1, 1.0, -0.5), ValueError, "gamma"),
        (lambda: sch.multistep(1, 1.0, [1], gamma=0), ValueError, "gamma"),
        (lambda: sch.linear(1, 1.0, total_iters=0), ValueError, "total_iters"),
        (lambda: sch.polynomial(1, 1.0, total_iters=0), ValueError, "total_iters"),
        (lambda: sch.cosine(1, 1.0, 0), ValueError, "T_max"),
        (lambda: sch.cosine_warm_restarts(1, 1.0, 0), ValueError, "T_0"),
        (lambda: sch.cosine_warm_restarts(1, 1.0, 2.0), ValueError, "T_0"),
        (lambda: sch.cosine_warm_restarts(1, 1.0, 2, T_mult=0), ValueError, "T_mult"),
        (lambda: sch.cyclic(1, 0.1, 1.0, step_size_up=0), ValueError, "step_size_up"),
        (lambda: sch.cyclic(1, 0.1, 1.0, mode="sine"), ValueError, "mode"),
        (lambda: sch.cyclic(1, 0.1, 1.0, scale_fn=abs, scale_mode="x"), ValueError, "scale_mode"),
        (lambda: sch.one_cycle(1, 1.0, 10, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
    ],
)
def test_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
