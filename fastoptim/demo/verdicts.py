"""The verdicts: each claim of the optimizer lore tested by a function of measured numbers.

Every verdict is one of BORNE_OUT, NOT_BORNE_OUT, CONTRADICTED or NOT_TESTED,
with evidence sentences generated from the numbers and the thresholds below
stated next to them. tests/demo/test_verdicts.py feeds each function numbers
made up to go each way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .training import OPTIMIZER_LABELS, SCHEDULE_LABELS

# -- the thresholds every verdict uses (stated in the report next to each one) --
MIN_ACC_EFFECT = 0.003      # accuracy differences below 0.3 points never count
NOISE_SE = 2.0              # ... nor those within 2 standard errors of the difference
LOSS_TARGET = 0.1           # "converged": mean training loss of an epoch <= this
SPEEDUP = 0.75              # "faster": reaches LOSS_TARGET in <= 75% of the epochs
TUNING_TOLERANCE = 0.01     # an lr is "good" within 1 accuracy point of the best lr
DILUTION_RATIO = 0.5        # "diluted": large-gradient weights get < half the (log) decay of small-gradient ones
MIN_SHRINK = 0.05           # decay values where the weights' norm moved by < 5% are not judged
COLLAPSED = 0.01            # ... nor those that wiped them out (< 1% of the norm kept)
DIRECT_DECAY_RTOL = 0.01    # AdamW's zero-gradient weights shrink by (1-lr*wd)^T within 1%
LOSS_FACTOR = 0.5           # "lower training loss": at most half of the other
DEFAULT_LRS = {"sgd": 1e-3, "momentum": 1e-3, "adam": 1e-3, "adamw": 1e-3}  # torch's defaults

BORNE_OUT, NOT_BORNE_OUT, CONTRADICTED, NOT_TESTED = (
    "borne out", "not borne out", "contradicted", "not tested here")


@dataclass
class Verdict:
    claim: str     # the lore, as users hear it
    verdict: str   # one of BORNE_OUT, NOT_BORNE_OUT, CONTRADICTED, NOT_TESTED
    evidence: str  # sentences generated from the measured numbers


@dataclass
class Comparison:
    diff: float       # mean(a) - mean(b)
    se: float         # standard error of the difference (NaN with a single seed)
    threshold: float  # max(min_effect, NOISE_SE * se)
    sign: int         # +1: a larger, -1: b larger, 0: within the threshold


def compare(a, b, min_effect):
    """Compare the means of two samples: a difference counts only beyond noise and ``min_effect``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) > 1 and len(b) > 1:
        se = float(math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    else:
        se = float("nan")
    threshold = max(min_effect, NOISE_SE * se) if math.isfinite(se) else min_effect
    sign = 1 if diff > threshold else -1 if diff < -threshold else 0
    return Comparison(diff, se, threshold, sign)


def pp(x):
    """An accuracy (fraction) as percentage points, e.g. 0.0123 -> '1.23 pp'."""
    return f"{100 * x:.2f} pp"


def pct(x):
    return f"{100 * x:.1f}%"


def _threshold_text(c):
    noise = f"2 SE = {pp(NOISE_SE * c.se)}" if math.isfinite(c.se) else "single seed, no noise estimate"
    narrow = "; a narrow margin, more --seeds would firm it up" if (
        c.sign and abs(c.diff) < 1.5 * c.threshold) else ""
    return f"threshold {pp(c.threshold)}: max({pp(MIN_ACC_EFFECT)}, {noise}){narrow}"


def epochs_to_target(train_loss, target=LOSS_TARGET):
    """1-based epoch at which the epoch's mean training loss first fell to ``target`` (inf: never)."""
    for i, loss in enumerate(train_loss):
        if loss <= target:
            return float(i + 1)
    return float("inf")


def _fmt_epochs(e):
    return "never" if not math.isfinite(e) else f"{e:.1f}"


def verdict_adam_fast(epochs_adam, epochs_momentum, epochs_sgd=None):
    """"Adam converges fast": epochs to reach LOSS_TARGET, each optimizer at its best lr."""
    claim = "Adam converges fast."
    a, m = float(np.mean(epochs_adam)), float(np.mean(epochs_momentum))
    text = (f"Epochs to a training loss <= {LOSS_TARGET} (mean over seeds, each optimizer at its "
            f"best lr): Adam {_fmt_epochs(a)}, SGD+momentum {_fmt_epochs(m)}")
    if epochs_sgd is not None:
        text += f", plain SGD {_fmt_epochs(float(np.mean(epochs_sgd)))}"
    text += "."
    rule = f" (Threshold: one needs <= {SPEEDUP:.0%} of the other's epochs.)"
    if not math.isfinite(a) and not math.isfinite(m):
        return Verdict(claim, NOT_BORNE_OUT, text + " Neither reached the target within the budget,"
                       " so the run is too short to tell." + rule)
    if a <= SPEEDUP * m:
        how = (f" Adam needed {a / m:.0%} of SGD+momentum's epochs." if math.isfinite(m)
               else " SGD+momentum never got there.")
        return Verdict(claim, BORNE_OUT, text + how + rule)
    if m <= SPEEDUP * a:
        how = (f" SGD+momentum got there first, in {m / a:.0%} of Adam's epochs."
               if math.isfinite(a) else " SGD+momentum got there; Adam never did.")
        return Verdict(claim, CONTRADICTED, text + how + rule)
    return Verdict(claim, NOT_BORNE_OUT, text + " Adam was not clearly faster than tuned "
                   f"SGD+momentum ({a / m:.0%} of its epochs)." + rule)


def good_lrs(acc_by_lr, tolerance=TUNING_TOLERANCE):
    """The lrs whose validation accuracy is within ``tolerance`` of the best one."""
    best = max(acc_by_lr.values())
    return sorted(lr for lr, acc in acc_by_lr.items() if acc >= best - tolerance)


def _lr_list(lrs_):
    return ", ".join(f"{lr:g}" for lr in lrs_) or "none"


def verdict_adam_little_tuning(sweep, default_lr=DEFAULT_LRS["adam"]):
    """"Adam needs little tuning": width of the window of good lrs in the sweep.

    ``sweep``: optimizer name -> {lr: mean final validation accuracy}; needs
    "adam" and "momentum" ("sgd" optional).
    """
    claim = "Adam works with little tuning."
    windows = {name: good_lrs(acc) for name, acc in sweep.items()}
    n_grid = len(sweep["adam"])
    parts = [f"{OPTIMIZER_LABELS[name]} {len(w)} of {len(sweep[name])} ({_lr_list(w)})"
             for name, w in windows.items() if name in ("sgd", "momentum", "adam")]
    text = (f"Learning rates (of a {n_grid}-point grid from {min(sweep['adam']):g} to "
            f"{max(sweep['adam']):g}) within {pp(TUNING_TOLERANCE)} of each optimizer's best "
            f"validation accuracy: " + "; ".join(parts) + ".")
    default_ok = default_lr in windows["adam"]
    text += (f" Adam's default lr {default_lr:g} is {'' if default_ok else 'not '}among its good"
             " ones.")
    adam_w, sgd_ws = len(windows["adam"]), [len(windows[k]) for k in ("sgd", "momentum") if k in windows]
    if adam_w > max(sgd_ws) and default_ok:
        return Verdict(claim, BORNE_OUT, text + " Adam's window of good lrs is the widest and "
                       "includes its default.")
    if adam_w < len(windows["momentum"]):
        return Verdict(claim, CONTRADICTED, text + " SGD+momentum tolerated a wider range of lrs"
                       " than Adam.")
    return Verdict(claim, NOT_BORNE_OUT, text + " (Rule: Adam's window must be strictly the "
                   "widest and contain its default lr.)")


def verdict_momentum_catches_up(acc_momentum_early, acc_adam_early, acc_momentum, acc_adam,
                                early_label="a quarter of the budget"):
    """"SGD+momentum needs long training": behind Adam early, catching up by the end.

    All arguments are per-seed validation accuracies; seeds are paired (same
    initialization and batches), so the gain is measured per seed.
    """
    claim = "SGD+momentum needs long training: it starts behind Adam and catches up."
    e = compare(acc_momentum_early, acc_adam_early, MIN_ACC_EFFECT)
    f = compare(acc_momentum, acc_adam, MIN_ACC_EFFECT)
    gain = compare(np.subtract(acc_momentum, acc_momentum_early),
                   np.subtract(acc_adam, acc_adam_early), MIN_ACC_EFFECT)
    text = (f"Validation accuracy of SGD+momentum minus Adam's (each at its best lr): "
            f"{e.diff * 100:+.2f} pp at {early_label} ({_threshold_text(e)}), "
            f"{f.diff * 100:+.2f} pp at the end ({_threshold_text(f)}); in between SGD+momentum "
            f"gained {gain.diff * 100:+.2f} pp on Adam ({_threshold_text(gain)}).")
    if e.sign < 0 and gain.sign > 0 and f.sign >= 0:
        return Verdict(claim, BORNE_OUT, text + " It started behind, gained beyond noise and "
                       "ended level with or ahead of Adam.")
    if gain.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " SGD+momentum lost ground with longer training.")
    why = ("it was not behind early" if e.sign >= 0 else "it did not gain beyond noise"
           if gain.sign <= 0 else "it was still behind at the end")
    return Verdict(claim, NOT_BORNE_OUT, text + f" Not the claimed pattern: {why}.")


def verdict_momentum_generalizes(acc_momentum, acc_adam):
    """"SGD+momentum generalizes better than Adam": final validation accuracy after the full budget."""
    claim = "Given the full budget, SGD+momentum generalizes better than Adam."
    c = compare(acc_momentum, acc_adam, MIN_ACC_EFFECT)
    text = (f"Final validation accuracy: SGD+momentum {pct(np.mean(acc_momentum))}, Adam "
            f"{pct(np.mean(acc_adam))} (difference {c.diff * 100:+.2f} pp, {_threshold_text(c)}).")
    if c.sign > 0:
        return Verdict(claim, BORNE_OUT, text + " SGD+momentum ended ahead of Adam beyond noise.")
    if c.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " Adam ended ahead of SGD+momentum beyond noise.")
    return Verdict(claim, NOT_BORNE_OUT, text + " SGD+momentum did not generalize better than Adam"
                   " here: the two are within noise.")


def decay_by_quartile(params_decay, params_base, grad_rms, mask):
    """How much of their norm the weights kept, by quartile of gradient size.

    Compares a run with weight decay against the run without (same seed, so
    same initialization and batches). Only weights (``mask``) whose gradient
    was ever nonzero count; they are split into quartiles of ``grad_rms`` (the
    root mean squared gradient of the run without decay). Returns the kept
    fraction ``||w_decay|| / ||w_base||`` of the bottom and the top quartile.
    """
    live = mask & (grad_rms > 0)
    g = grad_rms[live]
    lo, hi = np.quantile(g, [0.25, 0.75])
    kept = []
    for sel in (g <= lo, g >= hi):
        wd = params_decay[live][sel].astype(np.float64)
        wb = params_base[live][sel].astype(np.float64)
        kept.append(float(np.linalg.norm(wd) / np.linalg.norm(wb)))
    return tuple(kept)  # (bottom, top)


def relative_decay(kept_bottom, kept_top):
    """Decay received by the top-gradient quartile relative to the bottom one: log(top)/log(bottom).

    1 means both shrank alike (a decay that ignores gradients); near 0 means the
    large-gradient weights barely shrank while the small-gradient ones did.
    """
    return math.log(kept_top) / math.log(kept_bottom)


def verdict_l2_diluted(rows):
    """"Adam's L2 is diluted by the adaptive lr": weights with large gradients escape the decay.

    ``rows``: list of dicts with keys ``wd``, ``l2`` and ``adamw``, each method a
    ``(kept_bottom, kept_top)`` pair from :func:`decay_by_quartile`. The two
    methods' ``wd`` are on different scales (a gradient term vs a per-step
    fraction ``lr * wd``), so each method is judged at the decay values where it
    measurably shrank its small-gradient weights (by more than MIN_SHRINK)
    without wiping any quartile out (below COLLAPSED).
    """
    claim = ("Adam's weight_decay is L2 regularization whose effect the adaptive learning rate "
             "dilutes.")
    judged = {"l2": [], "adamw": []}
    for row in rows:
        for method in judged:
            bottom, top = row[method]
            if bottom <= 1 - MIN_SHRINK and min(bottom, top) >= COLLAPSED:
                judged[method].append((row["wd"], bottom, top, relative_decay(bottom, top)))
    diluted = {m: sum(r < DILUTION_RATIO for *_, r in used) for m, used in judged.items()}
    rule = (f" (Relative decay = log(kept by the largest-gradient quartile) / log(kept by the "
            f"smallest-gradient quartile): 1 when both shrink alike. Diluted: below "
            f"{DILUTION_RATIO}. Each method is judged at the decay values where its "
            f"smallest-gradient quartile kept <= {1 - MIN_SHRINK:.0%} of its norm and no quartile "
            f"fell below {COLLAPSED:.0%}; the claim needs most of Adam-L2's to be diluted and "
            "not most of AdamW's.)")

    def describe(method, label):
        used = judged[method]
        if not used:
            return f"{label}: no decay value shrank the weights measurably without wiping them out."
        return f"{label} kept, of the norm of its small- / large-gradient weights: " + "; ".join(
            f"{pct(b)} / {pct(t)} at wd={wd:g} (relative decay {r:.2f})" for wd, b, t, r in used) + "."

    text = describe("l2", "Adam-L2") + " " + describe("adamw", "AdamW")
    n_l2, n_w = len(judged["l2"]), len(judged["adamw"])
    if n_l2 and diluted["l2"] > n_l2 / 2 and diluted["adamw"] <= n_w / 2:
        return Verdict(claim, BORNE_OUT, text + f" Under Adam-L2 the weights with the largest "
                       f"gradients escaped most of the decay ({diluted['l2']} of {n_l2} values)"
                       + (", under AdamW they did not." if n_w else "; AdamW never shrank the "
                          "weights enough at these values to contrast it.") + rule)
    if n_l2 and diluted["l2"] > n_l2 / 2:
        return Verdict(claim, NOT_BORNE_OUT, text + " The large-gradient weights escaped the decay "
                       "under AdamW as well, so the adaptive lr is not what spares them." + rule)
    return Verdict(claim, NOT_BORNE_OUT, text + f" Adam-L2 showed the dilution at {diluted['l2']} "
                   f"of {n_l2} decay values." + rule)


def verdict_adamw_direct(kept_measured, kept_predicted, kept_l2, wd, n_weights):
    """"AdamW decays the weights directly": zero-gradient weights shrink by exactly (1 - lr*wd)^T."""
    claim = "AdamW decays the weights directly."
    if n_weights == 0:
        return Verdict(claim, NOT_TESTED, "No weight went without gradient in this data set, "
                       "so the decay could not be isolated from the gradient's work.")
    text = (f"The {n_weights} first-layer weights of input pixels that are 0 in every training "
            f"image never receive a gradient, which isolates the decay: at wd={wd:g}, AdamW kept "
            f"{kept_measured:.4g} of their norm, and (1 - lr*wd)^steps predicts "
            f"{kept_predicted:.4g}; Adam-L2 kept {kept_l2:.3g}.")
    rule = f" (Rule: within {DIRECT_DECAY_RTOL:.0%} of the prediction.)"
    if abs(kept_measured - kept_predicted) <= DIRECT_DECAY_RTOL * kept_predicted:
        return Verdict(claim, BORNE_OUT, text + " AdamW's decay acted as a plain multiplicative "
                       "shrink of the weights, with no gradient statistics involved; Adam's L2 term "
                       "went through the adaptive normalization instead." + rule)
    return Verdict(claim, NOT_BORNE_OUT, text + " AdamW's decay did not match the plain shrink."
                   + rule)


def verdict_decoupled_better(acc_adamw_best, acc_l2_best, wd_adamw, wd_l2):
    """"Decoupled decay generalizes better": best AdamW vs best Adam-L2 over the decay grid."""
    claim = "Decoupled weight decay (AdamW) gives better accuracy than L2 (Adam)."
    c = compare(acc_adamw_best, acc_l2_best, MIN_ACC_EFFECT)
    text = (f"Best validation accuracy over the decay grid: AdamW {pct(np.mean(acc_adamw_best))} "
            f"(wd={wd_adamw:g}), Adam-L2 {pct(np.mean(acc_l2_best))} (wd={wd_l2:g}); difference "
            f"{c.diff * 100:+.2f} pp ({_threshold_text(c)}).")
    if c.sign > 0:
        return Verdict(claim, BORNE_OUT, text)
    if c.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " L2 did better here.")
    return Verdict(claim, NOT_BORNE_OUT, text + " At their best settings the two are within noise;"
                   " they differ in which decay values work and in what they do to the weights.")


def verdict_decay_helps(final_loss, final_acc, baseline="constant"):
    """"Decaying the lr helps": each decaying schedule against the constant lr.

    ``final_loss``/``final_acc``: schedule -> per-seed final training loss / validation accuracy.
    """
    claim = "Decaying the learning rate beats a constant one."
    others = [s for s in final_loss if s not in (baseline, "cosine_2x")]
    lower, better, worse = [], [], []
    base_loss = float(np.mean(final_loss[baseline]))
    for s in others:
        if np.mean(final_loss[s]) <= LOSS_FACTOR * base_loss:
            lower.append(s)
        sign = compare(final_acc[s], final_acc[baseline], MIN_ACC_EFFECT).sign
        (better if sign > 0 else worse if sign < 0 else []).append(s)
    names = lambda ss: ", ".join(SCHEDULE_LABELS[s] for s in ss) or "none"  # noqa: E731
    text = (f"Against a constant lr (final training loss {base_loss:.3g}, validation accuracy "
            f"{pct(np.mean(final_acc[baseline]))}): {len(lower)} of {len(others)} decaying "
            f"schedules ended at <= {LOSS_FACTOR} x its training loss ({names(lower)}); "
            f"{len(better)} reached a higher validation accuracy beyond noise ({names(better)}), "
            f"{len(worse)} a lower one ({names(worse)}).")
    if len(better) > len(others) / 2:
        return Verdict(claim, BORNE_OUT, text)
    if len(worse) > len(others) / 2:
        return Verdict(claim, CONTRADICTED, text)
    return Verdict(claim, NOT_BORNE_OUT, text + (
        " They fit the training set better, but that did not carry over to validation accuracy."
        if len(lower) > len(others) / 2 else "") + " (Rule: most schedules beat it on accuracy.)")


def verdict_step_vs_cosine(acc_step, acc_cosine, cnn=None):
    """"Step decay for CNNs, cosine for transformers".

    Without ``cnn`` only the MLP comparison can be reported and the claim is not
    tested. ``cnn``: per-seed validation accuracies of a CNN with SGD+momentum,
    a dict with "step", "cosine" and "constant"; then the CNN half is judged:
    StepLR must beat a constant lr beyond noise and not lose to cosine beyond noise.
    """
    claim = "Step decay suits classic CNN schedules, cosine annealing suits transformers."
    c = compare(acc_cosine, acc_step, MIN_ACC_EFFECT)
    outcome = ("cosine ended ahead" if c.sign > 0 else "StepLR ended ahead" if c.sign < 0
               else "the two ended within noise")
    mlp_text = (f"On the MLP {outcome}: cosine {pct(np.mean(acc_cosine))}, StepLR "
                f"{pct(np.mean(acc_step))} (difference {c.diff * 100:+.2f} pp, {_threshold_text(c)}).")
    if cnn is None:
        return Verdict(claim, NOT_TESTED, "This demo trains an MLP, neither a CNN nor a transformer, "
                       "so the claim itself is not tested. " + mlp_text)
    vs_const = compare(cnn["step"], cnn["constant"], MIN_ACC_EFFECT)
    vs_cos = compare(cnn["step"], cnn["cosine"], MIN_ACC_EFFECT)
    text = (f"On the CNN (SGD+momentum), validation accuracy: StepLR {pct(np.mean(cnn['step']))}, "
            f"constant lr {pct(np.mean(cnn['constant']))} (StepLR minus it {vs_const.diff * 100:+.2f} pp, "
            f"{_threshold_text(vs_const)}), cosine {pct(np.mean(cnn['cosine']))} (StepLR minus it "
            f"{vs_cos.diff * 100:+.2f} pp, {_threshold_text(vs_cos)}). No transformer is trained here, "
            "so only the CNN half is judged. " + mlp_text)
    if vs_const.sign > 0 and vs_cos.sign >= 0:
        return Verdict(claim, BORNE_OUT, text + " On the CNN, StepLR beat a constant lr and did no "
                       "worse than cosine (the CNN half only).")
    if vs_cos.sign < 0 or vs_const.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " On the CNN, StepLR did worse than "
                       + ("cosine." if vs_cos.sign < 0 else "a constant lr."))
    return Verdict(claim, NOT_BORNE_OUT, text + " On the CNN, StepLR did not beat a constant lr "
                   "beyond noise. (Rule: it must, and not lose to cosine.)")


def verdict_plateau_unpredictable(acc_plateau, acc_cosine_wrong, acc_cosine_right):
    """"ReduceLROnPlateau suits runs whose course can't be predicted": vs a mis-planned cosine."""
    claim = "ReduceLROnPlateau suits runs whose course can't be predicted."
    c = compare(acc_plateau, acc_cosine_wrong, MIN_ACC_EFFECT)
    r = compare(acc_plateau, acc_cosine_right, MIN_ACC_EFFECT)
    text = (f"When the budget is guessed 2x too long (cosine planned for twice the epochs, stopped "
            f"halfway), validation accuracy: ReduceLROnPlateau {pct(np.mean(acc_plateau))}, the "
            f"mis-planned cosine {pct(np.mean(acc_cosine_wrong))} (difference "
            f"{c.diff * 100:+.2f} pp, {_threshold_text(c)}); a correctly planned cosine "
            f"{pct(np.mean(acc_cosine_right))} (plateau minus it: {r.diff * 100:+.2f} pp).")
    if c.sign > 0:
        return Verdict(claim, BORNE_OUT, text + " Without knowing the budget, ReduceLROnPlateau "
                       "beat the schedule that needed it.")
    if c.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " Even with a wrong budget, the cosine did "
                       "better.")
    return Verdict(claim, NOT_BORNE_OUT, text + " A wrong budget guess cost the cosine nothing "
                   "measurable here, so ReduceLROnPlateau's advantage did not show.")




def verdict_regularization_decides(acc_reg, acc_unreg, reg_label, unreg_label, chosen_on):
    """Is this a task on which regularization decides? Best decayed run vs best undecayed one."""
    claim = "Weight decay decides validation accuracy on this task."
    c = compare(acc_reg, acc_unreg, MIN_ACC_EFFECT)
    text = (f"Validation accuracy with decay ({reg_label}) {pct(np.mean(acc_reg))}, without "
            f"({unreg_label}) {pct(np.mean(acc_unreg))}: difference {c.diff * 100:+.2f} pp "
            f"({_threshold_text(c)}). {chosen_on}")
    if c.sign > 0:
        return Verdict(claim, BORNE_OUT, text + " Decay improved accuracy beyond noise.")
    if c.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " The best decayed run did worse than no decay.")
    return Verdict(claim, NOT_BORNE_OUT, text + " With and without decay are within noise.")


def verdict_sgd_suits_cnns(acc_momentum, acc_adam, lr_momentum, lr_adam):
    """"SGD suits CNNs": on the CNN, SGD+momentum generalizes better than Adam (each at its best lr)."""
    claim = "SGD+momentum suits CNNs: on a CNN it generalizes better than Adam."
    c = compare(acc_momentum, acc_adam, MIN_ACC_EFFECT)
    text = (f"On the 1-D CNN, final validation accuracy: SGD+momentum {pct(np.mean(acc_momentum))} "
            f"(lr={lr_momentum:g}), Adam {pct(np.mean(acc_adam))} (lr={lr_adam:g}); difference "
            f"{c.diff * 100:+.2f} pp ({_threshold_text(c)}). Both without weight decay, each at the "
            "best lr of its sweep.")
    if c.sign > 0:
        return Verdict(claim, BORNE_OUT, text + " SGD+momentum ended ahead beyond noise.")
    if c.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " Adam ended ahead beyond noise.")
    return Verdict(claim, NOT_BORNE_OUT, text + " The two are within noise.")


def verdict_batch_norm(acc, wd_bn, wd_plain):
    """"Weight decay and batch normalization complement each other" (2x2: BN x decay).

    ``acc``: per-seed validation accuracies for the keys ("plain", 0), ("plain", "wd"),
    ("bn", 0), ("bn", "wd"). Borne out when decay still helps with batch norm and
    the two together beat each one alone, beyond noise.
    """
    claim = "Weight decay and batch normalization complement each other."
    gain_bn = compare(acc[("bn", "wd")], acc[("bn", 0)], MIN_ACC_EFFECT)
    gain_plain = compare(acc[("plain", "wd")], acc[("plain", 0)], MIN_ACC_EFFECT)
    both_vs_wd = compare(acc[("bn", "wd")], acc[("plain", "wd")], MIN_ACC_EFFECT)
    text = (f"SGD+momentum with L2, validation accuracy: no batch norm {pct(np.mean(acc[('plain', 0)]))} "
            f"without decay, {pct(np.mean(acc[('plain', 'wd')]))} with wd={wd_plain:g}; batch norm "
            f"{pct(np.mean(acc[('bn', 0)]))} without decay, {pct(np.mean(acc[('bn', 'wd')]))} with "
            f"wd={wd_bn:g}. Decay's gain: {gain_bn.diff * 100:+.2f} pp with batch norm "
            f"({_threshold_text(gain_bn)}), {gain_plain.diff * 100:+.2f} pp without; batch norm + decay "
            f"minus decay alone: {both_vs_wd.diff * 100:+.2f} pp ({_threshold_text(both_vs_wd)}).")
    rule = (" (Rule: decay must still help with batch norm, and batch norm + decay must beat "
            "decay alone, both beyond noise; each decay was chosen on separate sweep seeds.)")
    if gain_bn.sign > 0 and both_vs_wd.sign > 0:
        return Verdict(claim, BORNE_OUT, text + " Together they did better than either alone." + rule)
    if gain_bn.sign < 0:
        return Verdict(claim, CONTRADICTED, text + " With batch norm, decay hurt." + rule)
    return Verdict(claim, NOT_BORNE_OUT, text + rule)
