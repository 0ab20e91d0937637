"""The lr x weight-decay heatmap (Loshchilov & Hutter 2019, Fig. 2): where the best decay lies.

For each learning rate (a row of the grid) the *ridge* is the weight decay of
lowest validation error, located between grid points by a parabola through
the best cell and its two neighbours in log10(decay). The ridge's slope in
log-log space, d log10(best decay) / d log10(lr), says how much the best decay
moves when the lr changes: 0 for an axis-aligned optimum (the two can be tuned
one at a time), -1 when the product lr * decay is what matters.

Decoupled decay is gridded in L&H's parameterization, ``lam`` = the fraction of
the weights removed per step (``lr * weight_decay`` in torch's AdamW, so
torch's ``weight_decay = lam / lr``); its ridge slope in torch's parameter is
exactly the slope in ``lam`` minus 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .verdicts import BORNE_OUT, CONTRADICTED, NOISE_SE, NOT_BORNE_OUT, Verdict

RIDGE_MIN_DEPTH = 0.01   # a row locates the ridge only if its error varies by >= 1 point over the decays
RIDGE_MIN_SLOPE = 0.25   # slopes (and differences of |slope|) below a quarter decade per decade never count
RIDGE_MIN_ROWS = 3       # rows needed to fit a slope
BOOTSTRAP = 200          # resamplings of the seeds for the slope's standard error


@dataclass
class RidgeFit:
    slope: float                 # d log10(best decay) / d log10(lr); NaN when < RIDGE_MIN_ROWS rows
    se: float                    # standard error: max(least squares, bootstrap over seeds)
    intercept: float
    points: list = field(default_factory=list)  # (lr, best decay) of the rows that located it
    censored: list = field(default_factory=list)  # lrs whose best decay was at a grid edge or flat

    @property
    def located(self):
        return len(self.points)


def ridge_points(err, lrs, decays, min_depth=RIDGE_MIN_DEPTH):
    """The best decay of each lr row of ``err`` (shape len(lrs) x len(decays), validation error).

    Returns ``(points, censored)``: ``points`` a list of ``(lr, decay)`` for rows whose
    minimum is inside the grid and whose error varies by at least ``min_depth``;
    ``censored`` the lrs of the other rows (best decay at an edge of the grid, or
    no decay mattered).
    """
    err = np.asarray(err, dtype=float)
    x = np.log10(np.asarray(decays, dtype=float))
    points, censored = [], []
    for i, lr in enumerate(lrs):
        row = err[i]
        if not np.all(np.isfinite(row)):
            censored.append(lr)
            continue
        j = int(np.argmin(row))
        if j == 0 or j == len(row) - 1 or row.max() - row.min() < min_depth:
            censored.append(lr)
            continue
        (x0, x1, x2), (y0, y1, y2) = x[j - 1:j + 2], row[j - 1:j + 2]
        # vertex of the parabola through the three points (exact for a quadratic valley)
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        xv = x1 - 0.5 * num / den if den != 0 else x1
        xv = min(max(xv, 0.5 * (x0 + x1)), 0.5 * (x1 + x2))  # stay within half a cell
        points.append((float(lr), float(10 ** xv)))
    return points, censored


def fit_line(points):
    """Least-squares slope and intercept of log10(decay) on log10(lr), and the slope's SE."""
    if len(points) < 2:
        return math.nan, math.nan, math.nan
    lx = np.log10([p[0] for p in points])
    ly = np.log10([p[1] for p in points])
    slope, intercept = np.polyfit(lx, ly, 1)
    if len(points) > 2:
        resid = ly - (slope * lx + intercept)
        se = math.sqrt(float(resid @ resid) / (len(points) - 2) / float(((lx - lx.mean()) ** 2).sum()))
    else:
        se = math.inf
    return float(slope), float(intercept), se


def ridge_slope(err_by_seed, lrs, decays, n_boot=BOOTSTRAP, seed=0):
    """Fit the ridge of the seed-mean error grid; ``err_by_seed`` has shape (seeds, lrs, decays).

    The slope's standard error is the larger of the least-squares one (scatter of
    the rows about the line) and the bootstrap one (seeds resampled with
    replacement, ridge and slope recomputed each time).
    """
    err_by_seed = np.asarray(err_by_seed, dtype=float)
    points, censored = ridge_points(err_by_seed.mean(axis=0), lrs, decays)
    if len(points) < RIDGE_MIN_ROWS:
        return RidgeFit(math.nan, math.nan, math.nan, points, censored)
    slope, intercept, se = fit_line(points)
    n_seeds = err_by_seed.shape[0]
    if n_seeds > 1 and n_boot:
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(n_boot):
            pick = rng.integers(0, n_seeds, n_seeds)
            pts, _ = ridge_points(err_by_seed[pick].mean(axis=0), lrs, decays)
            if len(pts) >= RIDGE_MIN_ROWS:
                boot.append(fit_line(pts)[0])
        if len(boot) > 1:
            se = max(se, float(np.std(boot, ddof=1)))
    return RidgeFit(slope, se, intercept, points, censored)


def _fit_text(label, fit, unit):
    if not math.isfinite(fit.slope):
        return (f"{label}: the ridge was located in only {fit.located} of the lr rows (the best "
                f"{unit} lay at an edge of the grid, or no {unit} mattered, in the others), too few "
                "to fit a slope.")
    return (f"{label}: ridge slope {fit.slope:+.2f} ± {fit.se:.2f} (SE) from {fit.located} lr rows"
            + (f" ({len(fit.censored)} censored)" if fit.censored else "") + ".")


def verdict_ridge(optimizer_label, l2, decoupled, decoupled_label):
    """L&H's claim for one optimizer: L2's best decay moves with the lr, decoupled decay's does not.

    ``l2``/``decoupled``: :class:`RidgeFit` of the L2 grid (torch's weight_decay) and of the
    decoupled grid (L&H's per-step decay ``lam``). Borne out when the L2 ridge is tilted
    (|slope| >= RIDGE_MIN_SLOPE and beyond NOISE_SE standard errors) and the decoupled one is
    flatter by at least RIDGE_MIN_SLOPE, beyond NOISE_SE standard errors of the difference.
    """
    claim = (f"With {optimizer_label}, the best L2 weight decay depends on the lr, while the best "
             "decoupled decay does not (Loshchilov & Hutter 2019, Fig. 2).")
    text = " ".join([_fit_text(f"{optimizer_label} + L2 (torch's weight_decay)", l2, "decay"),
                     _fit_text(f"{decoupled_label} (per-step decay lam = lr * weight_decay)",
                               decoupled, "decay")])
    if math.isfinite(decoupled.slope):
        text += (f" In torch's weight_decay the decoupled ridge's slope is {decoupled.slope - 1:+.2f}"
                 " (the same runs; weight_decay = lam / lr).")
    rule = (f" (Rule: L2's |slope| >= {RIDGE_MIN_SLOPE} and beyond {NOISE_SE:g} SE; decoupled's "
            f"|slope| smaller by >= {RIDGE_MIN_SLOPE} and beyond {NOISE_SE:g} SE of the difference. "
            "Slope = d log10(best decay) / d log10(lr).)")
    if not (math.isfinite(l2.slope) and math.isfinite(decoupled.slope)):
        return Verdict(claim, NOT_BORNE_OUT, text + " The grid did not bracket the best decay well "
                       "enough to compare the ridges." + rule)
    diff = abs(l2.slope) - abs(decoupled.slope)
    diff_se = math.sqrt(l2.se ** 2 + decoupled.se ** 2)
    tilted = abs(l2.slope) >= RIDGE_MIN_SLOPE and abs(l2.slope) > NOISE_SE * l2.se
    measurable = abs(diff) >= RIDGE_MIN_SLOPE and abs(diff) > NOISE_SE * diff_se
    text += f" |L2 slope| - |decoupled slope| = {diff:+.2f} ± {diff_se:.2f}."
    if tilted and measurable and diff > 0:
        return Verdict(claim, BORNE_OUT, text + " L2's ridge is tilted and decoupled decay's is "
                       "measurably flatter: decoupled decay separates the two hyperparameters." + rule)
    if measurable and diff < 0:
        return Verdict(claim, CONTRADICTED, text + " The decoupled ridge is the more tilted one."
                       + rule)
    why = ("L2's ridge is not measurably tilted" if not tilted
           else "the decoupled ridge is not measurably flatter")
    return Verdict(claim, NOT_BORNE_OUT, text + f" Not the claimed picture: {why}." + rule)
