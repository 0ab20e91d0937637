"""fastoptim.demo.verdicts: each verdict fed numbers made up to go each way."""
import math

import numpy as np
import pytest

from fastoptim import demo
from fastoptim.demo import BORNE_OUT, CONTRADICTED, NOT_BORNE_OUT, NOT_TESTED


# -------------------------------------------------------- verdicts from numbers
def test_compare_needs_both_noise_and_min_effect():
    assert demo.compare([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], 0.003).sign == 1
    assert demo.compare([0.90, 0.91, 0.92], [0.95, 0.96, 0.97], 0.003).sign == -1
    assert demo.compare([0.90, 0.99, 0.95], [0.94, 0.93, 0.95], 0.003).sign == 0  # noisy
    assert demo.compare([0.951, 0.951], [0.950, 0.950], 0.003).sign == 0  # tiny effect
    single = demo.compare([0.96], [0.95], 0.003)
    assert math.isnan(single.se) and single.threshold == 0.003 and single.sign == 1


def test_verdict_adam_fast_both_ways():
    assert demo.verdict_adam_fast([3, 4], [8, 8]).verdict == BORNE_OUT
    assert demo.verdict_adam_fast([8, 8], [3, 4]).verdict == CONTRADICTED
    v = demo.verdict_adam_fast([6, 6], [7, 7])
    assert v.verdict == NOT_BORNE_OUT and "86%" in v.evidence
    assert demo.verdict_adam_fast([5, 5], [math.inf, math.inf]).verdict == BORNE_OUT
    v = demo.verdict_adam_fast([math.inf], [math.inf])
    assert v.verdict == NOT_BORNE_OUT and "too short" in v.evidence


def test_verdict_adam_little_tuning_both_ways():
    grid = [1e-4, 1e-3, 1e-2, 1e-1]
    wide = {"adam": dict(zip(grid, [0.95, 0.97, 0.97, 0.5])),
            "momentum": dict(zip(grid, [0.6, 0.8, 0.97, 0.3])),
            "sgd": dict(zip(grid, [0.2, 0.5, 0.9, 0.97]))}
    v = demo.verdict_adam_little_tuning(wide)
    assert v.verdict == BORNE_OUT and "Adam 2 of 4 (0.001, 0.01)" in v.evidence
    narrow = dict(wide, adam=dict(zip(grid, [0.5, 0.8, 0.97, 0.5])),
                  momentum=dict(zip(grid, [0.6, 0.965, 0.97, 0.3])))
    assert demo.verdict_adam_little_tuning(narrow).verdict == CONTRADICTED
    default_bad = dict(wide, adam=dict(zip(grid, [0.5, 0.8, 0.97, 0.97])))
    v = demo.verdict_adam_little_tuning(default_bad)
    assert v.verdict == NOT_BORNE_OUT and "is not among its good ones" in v.evidence


def test_verdict_momentum_catches_up_both_ways():
    early_m, early_a = [0.90, 0.91, 0.90], [0.95, 0.95, 0.96]
    assert demo.verdict_momentum_catches_up(early_m, early_a, [0.97, 0.97, 0.975],
                                            [0.97, 0.968, 0.97]).verdict == BORNE_OUT
    v = demo.verdict_momentum_catches_up([0.95, 0.95, 0.96], [0.95, 0.95, 0.96],
                                         [0.90, 0.91, 0.90], [0.97, 0.97, 0.975])
    assert v.verdict == CONTRADICTED
    v = demo.verdict_momentum_catches_up(early_a, early_a, [0.97] * 3, [0.97] * 3)
    assert v.verdict == NOT_BORNE_OUT and "not behind early" in v.evidence


def test_verdict_momentum_generalizes_both_ways():
    assert demo.verdict_momentum_generalizes([0.98, 0.981, 0.979], [0.96, 0.961, 0.959]).verdict == BORNE_OUT
    assert demo.verdict_momentum_generalizes([0.96, 0.961, 0.959], [0.98, 0.981, 0.979]).verdict == CONTRADICTED
    v = demo.verdict_momentum_generalizes([0.97, 0.975, 0.965], [0.97, 0.971, 0.969])
    assert v.verdict == NOT_BORNE_OUT and "within noise" in v.evidence and "+0.00 pp" in v.evidence


def test_relative_decay_and_quartiles():
    assert demo.relative_decay(0.5, 0.5) == pytest.approx(1.0)
    assert demo.relative_decay(0.25, 0.5) == pytest.approx(0.5)
    grad_rms = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8])
    mask = np.ones(9, bool)
    base = np.ones(9)
    decayed = np.array([9.0, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9])
    bottom, top = demo.decay_by_quartile(decayed, base, grad_rms, mask)
    assert bottom == pytest.approx(0.1) and top == pytest.approx(0.9)  # the zero-gradient weight is ignored


def test_verdict_l2_diluted_both_ways():
    diluted = [{"wd": 1e-3, "l2": (0.3, 0.9), "adamw": (0.99, 0.99)},
               {"wd": 1e-2, "l2": (0.1, 0.65), "adamw": (0.9, 0.88)},
               {"wd": 1.0, "l2": (0.001, 0.001), "adamw": (0.6, 0.5)}]  # L2 collapsed: not judged
    v = demo.verdict_l2_diluted(diluted)
    assert v.verdict == BORNE_OUT
    assert "wd=1 " not in v.evidence.split("AdamW")[0]  # the collapsed value is left out
    both = [{"wd": 1e-2, "l2": (0.1, 0.65), "adamw": (0.5, 0.95)}]
    v = demo.verdict_l2_diluted(both)
    assert v.verdict == NOT_BORNE_OUT and "under AdamW as well" in v.evidence
    uniform = [{"wd": 1e-2, "l2": (0.5, 0.55), "adamw": (0.5, 0.5)}]
    assert demo.verdict_l2_diluted(uniform).verdict == NOT_BORNE_OUT
    assert demo.verdict_l2_diluted([{"wd": 1e-4, "l2": (0.99, 1.0), "adamw": (1.0, 1.0)}]).verdict \
        == NOT_BORNE_OUT


def test_verdict_adamw_direct_both_ways():
    assert demo.verdict_adamw_direct(0.3261, 0.3262, 0.005, 1.0, 512).verdict == BORNE_OUT
    assert demo.verdict_adamw_direct(0.40, 0.3262, 0.005, 1.0, 512).verdict == NOT_BORNE_OUT
    assert demo.verdict_adamw_direct(math.nan, 0.3262, math.nan, 1.0, 0).verdict == NOT_TESTED


def test_verdict_decoupled_better_both_ways():
    hi, lo = [0.97, 0.971, 0.969], [0.95, 0.951, 0.949]
    assert demo.verdict_decoupled_better(hi, lo, 0.1, 1e-4).verdict == BORNE_OUT
    assert demo.verdict_decoupled_better(lo, hi, 0.1, 1e-4).verdict == CONTRADICTED
    assert demo.verdict_decoupled_better(hi, hi, 0.1, 1e-4).verdict == NOT_BORNE_OUT


def test_verdict_decay_helps_both_ways():
    names = ["constant", "step", "cosine", "plateau", "cosine_2x"]
    loss = {n: [0.1, 0.1] for n in names}
    good = {n: [0.98, 0.981] for n in names}
    good["constant"] = [0.95, 0.951]
    assert demo.verdict_decay_helps(loss, good).verdict == BORNE_OUT
    bad = {n: [0.95, 0.951] for n in names}
    bad["constant"] = [0.98, 0.981]
    assert demo.verdict_decay_helps(loss, bad).verdict == CONTRADICTED
    same = {n: [0.97, 0.971] for n in names}
    low_loss = dict(loss, step=[0.01, 0.01], cosine=[0.01, 0.01], plateau=[0.01, 0.01])
    v = demo.verdict_decay_helps(low_loss, same)
    assert v.verdict == NOT_BORNE_OUT and "3 of 3 decaying" in v.evidence
    assert "did not carry over" in v.evidence


def test_verdict_step_vs_cosine_is_never_judged():
    for a, b in (([0.9, 0.91], [0.97, 0.971]), ([0.97, 0.971], [0.9, 0.91])):
        v = demo.verdict_step_vs_cosine(a, b)
        assert v.verdict == NOT_TESTED and "neither a CNN nor a transformer" in v.evidence
    assert "cosine ended ahead" in demo.verdict_step_vs_cosine([0.9, 0.91], [0.97, 0.971]).evidence


def test_verdict_plateau_both_ways():
    hi, lo = [0.97, 0.971, 0.969], [0.95, 0.951, 0.949]
    assert demo.verdict_plateau_unpredictable(hi, lo, hi).verdict == BORNE_OUT
    assert demo.verdict_plateau_unpredictable(lo, hi, hi).verdict == CONTRADICTED
    v = demo.verdict_plateau_unpredictable(hi, hi, hi)
    assert v.verdict == NOT_BORNE_OUT and "cost the cosine nothing" in v.evidence


def test_narrow_margins_are_flagged():
    c = demo.compare([0.9740, 0.9750, 0.9745], [0.9700, 0.9710, 0.9705], 0.003)
    assert c.sign == 1 and "narrow margin" in demo._threshold_text(c)
    c = demo.compare([0.99, 0.991], [0.95, 0.951], 0.003)
    assert "narrow" not in demo._threshold_text(c)




# ------------------------------------------------------------------ the heatmap ridge
LRS = tuple(1e-3 * 2.0 ** k for k in range(6))
DECAYS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def valley(slope, at=-2.5, depth=0.05, noise=0.0, seeds=3, rng=None):
    """Error grids (seeds x lrs x decays) with their minimum at log10 decay = at + slope * log10(lr/1e-3)."""
    lx, dx = np.log10(LRS), np.log10(DECAYS)
    centre = at + slope * (lx + 3)
    err = 0.3 + depth * (dx[None, :] - centre[:, None]) ** 2
    rng = rng or np.random.default_rng(0)
    return np.stack([err + noise * rng.standard_normal(err.shape) for _ in range(seeds)])


@pytest.mark.parametrize("slope", [-1.0, -0.5, 0.0, 0.4])
def test_ridge_slope_recovers_a_known_slope(slope):
    fit = demo.ridge_slope(valley(slope, at=-2.76 - 0.75 * slope), LRS, DECAYS)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.located == 6 and fit.censored == []
    assert fit.se < 1e-9
    for lr, d in fit.points:  # each row's best decay is found between grid points
        assert math.log10(d) == pytest.approx(-2.76 - 0.75 * slope + slope * (math.log10(lr) + 3), abs=1e-9)


def test_ridge_rows_at_the_edge_or_flat_are_censored():
    err = valley(-1.0, at=-2.5)[0]  # the best decay leaves the grid at the large lrs
    points, censored = demo.ridge_points(err, LRS, DECAYS)
    assert censored and all(lr > 5e-3 for lr in censored)
    assert len(points) + len(censored) == len(LRS)
    flat = np.full((6, 6), 0.4)
    flat[:, 2] -= 0.001  # an interior minimum, but no decay matters by a point
    assert demo.ridge_points(flat, LRS, DECAYS) == ([], list(LRS))
    fit = demo.ridge_slope(flat[None], LRS, DECAYS)
    assert math.isnan(fit.slope) and fit.located == 0


def test_ridge_slope_error_grows_with_seed_noise():
    quiet = demo.ridge_slope(valley(-1.0, at=-2.01, noise=0.0005), LRS, DECAYS)
    noisy = demo.ridge_slope(valley(-1.0, at=-2.01, noise=0.01, seeds=4), LRS, DECAYS)
    assert quiet.slope == pytest.approx(-1.0, abs=0.1)
    assert noisy.se > quiet.se > 0


def _fit(slope, se, n=6):
    return demo.RidgeFit(slope, se, 0.0, [(lr, 1e-3) for lr in LRS[:n]], [])


def test_verdict_ridge_both_ways():
    v = demo.verdict_ridge("Adam", _fit(-0.9, 0.1), _fit(0.05, 0.1), "AdamW")
    assert v.verdict == BORNE_OUT
    assert "-0.95" in v.evidence  # the decoupled slope in torch's weight_decay: 0.05 - 1
    assert demo.verdict_ridge("Adam", _fit(0.05, 0.1), _fit(-0.9, 0.1), "AdamW").verdict == CONTRADICTED
    v = demo.verdict_ridge("Adam", _fit(-0.9, 0.6), _fit(0.0, 0.1), "AdamW")  # L2 tilt within noise
    assert v.verdict == NOT_BORNE_OUT and "not measurably tilted" in v.evidence
    v = demo.verdict_ridge("Adam", _fit(-0.9, 0.1), _fit(-0.75, 0.1), "AdamW")  # barely flatter
    assert v.verdict == NOT_BORNE_OUT and "not measurably flatter" in v.evidence
    missing = demo.RidgeFit(math.nan, math.nan, math.nan, [(1e-3, 1e-3)], list(LRS[1:]))
    v = demo.verdict_ridge("SGD+momentum", _fit(-1.0, 0.1), missing, "SGDW")
    assert v.verdict == NOT_BORNE_OUT and "only 1 of the lr rows" in v.evidence


def test_verdict_ridge_on_synthetic_grids():
    l2 = demo.ridge_slope(valley(-1.0, at=-2.01), LRS, DECAYS)
    decoupled = demo.ridge_slope(valley(0.0, at=-2.5), LRS, DECAYS)
    assert demo.verdict_ridge("Adam", l2, decoupled, "AdamW").verdict == BORNE_OUT
    assert demo.verdict_ridge("Adam", l2, l2, "AdamW").verdict == NOT_BORNE_OUT


def test_verdict_regularization_decides_both_ways():
    hi, lo = [0.52, 0.53, 0.525], [0.47, 0.48, 0.475]
    assert demo.verdict_regularization_decides(hi, lo, "a", "b", "").verdict == BORNE_OUT
    assert demo.verdict_regularization_decides(lo, hi, "a", "b", "").verdict == CONTRADICTED
    v = demo.verdict_regularization_decides(hi, hi, "a", "b", "chosen on other seeds.")
    assert v.verdict == NOT_BORNE_OUT and "chosen on other seeds." in v.evidence


def test_verdict_sgd_suits_cnns_both_ways():
    hi, lo = [0.62, 0.63, 0.625], [0.57, 0.58, 0.575]
    assert demo.verdict_sgd_suits_cnns(hi, lo, 0.1, 1e-3).verdict == BORNE_OUT
    assert demo.verdict_sgd_suits_cnns(lo, hi, 0.1, 1e-3).verdict == CONTRADICTED
    assert demo.verdict_sgd_suits_cnns(hi, hi, 0.1, 1e-3).verdict == NOT_BORNE_OUT


def test_verdict_step_vs_cosine_judges_the_cnn_half():
    hi, mid, lo = [0.62, 0.63, 0.625], [0.60, 0.601, 0.599], [0.57, 0.58, 0.575]
    mlp = ([0.5, 0.51], [0.5, 0.51])
    v = demo.verdict_step_vs_cosine(*mlp, cnn={"step": hi, "constant": lo, "cosine": hi})
    assert v.verdict == BORNE_OUT and "CNN half" in v.evidence
    v = demo.verdict_step_vs_cosine(*mlp, cnn={"step": mid, "constant": lo, "cosine": hi})
    assert v.verdict == CONTRADICTED
    v = demo.verdict_step_vs_cosine(*mlp, cnn={"step": lo, "constant": lo, "cosine": lo})
    assert v.verdict == NOT_BORNE_OUT


def test_verdict_batch_norm_both_ways():
    hi, mid, lo = [0.62, 0.63, 0.625], [0.55, 0.551, 0.549], [0.47, 0.48, 0.475]
    good = {("plain", 0): lo, ("plain", "wd"): mid, ("bn", 0): mid, ("bn", "wd"): hi}
    assert demo.verdict_batch_norm(good, 1e-2, 1e-3).verdict == BORNE_OUT
    hurt = {**good, ("bn", 0): hi, ("bn", "wd"): mid}
    assert demo.verdict_batch_norm(hurt, 1e-2, 1e-3).verdict == CONTRADICTED
    alone = {**good, ("plain", "wd"): hi}  # BN adds nothing to decay
    v = demo.verdict_batch_norm(alone, 1e-2, 1e-3)
    assert v.verdict == NOT_BORNE_OUT and "wd=0.01" in v.evidence
