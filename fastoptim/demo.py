"""``fastoptim demo``: the optimizer and scheduler lore, measured on your machine.

Users hear that SGD+momentum generalizes well when training is long, that Adam
converges fast with little tuning, that Adam's ``weight_decay`` is L2
regularization diluted by the adaptive learning rate while AdamW decays the
weights directly, and which learning-rate schedule suits which run. This demo
trains a small multilayer perceptron (plain NumPy, hand-written backward pass,
float32, parameters in one :class:`~fastoptim.FlatParams` buffer so each
``opt.step`` is one kernel call) on scikit-learn's bundled ``load_digits`` (a
generated stand-in when scikit-learn is missing) and runs three experiments:

1. SGD, SGD+momentum, Adam and AdamW on the same model and budget, each at the
   best learning rate of a sweep (the sweep itself measures how much tuning
   each one needs);
2. Adam with ``weight_decay`` (L2) against AdamW (decoupled decay) at matched
   settings over a range of decay values;
3. constant lr, StepLR, ExponentialLR, CosineAnnealingLR,
   CosineAnnealingWarmRestarts, ReduceLROnPlateau, warm-up + cosine
   (LinearLR then CosineAnnealingLR through SequentialLR), and a cosine whose
   budget was guessed wrong.

It writes PNG figures (matplotlib, Agg) and ``demo_report.md``, whose verdicts
are generated from the measured numbers with the thresholds stated next to
them, plus ``demo_results.json`` with the numbers themselves::

    fastoptim demo                    # full run, a few minutes on 2 cores
    fastoptim demo --quick            # seconds: a smoke test, too small to judge anything
    python -m fastoptim.demo --out results/ --seeds 10

Needs ``pip install "fastoptim[examples]"`` for the real data set and the plots.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import fastoptim
from fastoptim import lr_scheduler as lrs
from fastoptim import schedules

DEFAULT_OUT = "demo_out"
REPORT_NAME = "demo_report.md"
RESULTS_NAME = "demo_results.json"
FIGURES_DIR = "figures"
DEFAULT_SIZES = (64, 128, 64, 10)

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

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam", "adamw": "AdamW"}
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
DEFAULT_LRS = {"sgd": 1e-3, "momentum": 1e-3, "adam": 1e-3, "adamw": 1e-3}  # torch's defaults
ADAMW_DEFAULT_WD = 1e-2  # AdamW runs outside experiment 2 use torch's default decay
DECAY_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SCHEDULES = ("constant", "step", "exponential", "cosine", "warm_restarts", "plateau",
             "warmup_cosine", "cosine_2x")
SCHEDULE_LABELS = {
    "constant": "constant",
    "step": "StepLR",
    "exponential": "ExponentialLR",
    "cosine": "CosineAnnealingLR",
    "warm_restarts": "CosineAnnealingWarmRestarts",
    "plateau": "ReduceLROnPlateau",
    "warmup_cosine": "warm-up + cosine",
    "cosine_2x": "cosine, budget guessed 2x too long",
}


# =============================================================================
# data
# =============================================================================
@dataclass
class Dataset:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    name: str
    n_classes: int = 10


def make_synthetic_digits(n_samples=1797, seed=0):
    """A stand-in for ``load_digits`` (no scikit-learn): 8x8 images of 10 noisy shapes.

    Each class is a random smooth 10x10 stroke pattern; a sample is a random
    8x8 crop of it (shifts of up to 2 pixels), rescaled, with pixel noise and
    values in [0, 1]. Returns ``(X, y)`` with ``X`` of shape (n, 64).
    """
    rng = np.random.default_rng(seed)
    raw = rng.random((10, 12, 12))
    protos = sum(raw[:, i:i + 10, j:j + 10] for i in range(3) for j in range(3)) / 9
    protos = (protos > np.quantile(protos, 0.6, axis=(1, 2), keepdims=True)).astype(float)
    y = np.arange(n_samples) % 10
    rng.shuffle(y)
    X = np.empty((n_samples, 64))
    for k, c in enumerate(y):
        i, j = rng.integers(0, 3, size=2)
        img = protos[c, i:i + 8, j:j + 8] * rng.uniform(0.6, 1.0)
        X[k] = np.clip(img + rng.normal(0.0, 0.3, (8, 8)), 0.0, 1.0).ravel()
    return X, y


def load_dataset(source="auto", val_fraction=0.5, seed=0):
    """The digits data set split (stratified, fixed seed) into train and validation halves.

    ``source``: "digits" (scikit-learn's bundled ``load_digits``, no download),
    "synthetic" (:func:`make_synthetic_digits`), or "auto" (digits if
    scikit-learn is installed, else synthetic). Features are float32 in [0, 1].
    """
    if source not in ("auto", "digits", "synthetic"):
        raise ValueError(f"unknown data set {source!r}: expected auto, digits or synthetic")
    if source in ("auto", "digits"):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            if source == "digits":
                raise ImportError("the digits data set needs scikit-learn: "
                                  'pip install "fastoptim[examples]"') from None
            source = "synthetic"
    if source == "synthetic":
        X, y = make_synthetic_digits(seed=seed)
        name = "generated 8x8 shapes (scikit-learn not installed)"
    else:
        digits = load_digits()
        X, y = digits.data / 16.0, digits.target
        name = "scikit-learn load_digits (8x8 handwritten digits)"
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        val[members[:int(round(len(members) * val_fraction))]] = True
    X = X.astype(np.float32)
    return Dataset(X[~val], y[~val].astype(np.intp), X[val], y[val].astype(np.intp), name,
                   int(y.max()) + 1)


# =============================================================================
# the model: an MLP with ReLU and softmax cross-entropy, backward by hand
# =============================================================================
def init_mlp(sizes=DEFAULT_SIZES, seed=0, dtype=np.float32):
    """He-initialized weights ``W1..Wn`` (fan_in x fan_out) and zero biases ``b1..bn``."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        params[f"W{i}"] = (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
    return params


def forward(params, X):
    """Return the logits and the activations ``[X, h1, ..., logits]`` the backward pass needs."""
    n_layers = len(params) // 2
    acts = [X]
    h = X
    for i in range(1, n_layers + 1):
        h = h @ params[f"W{i}"]
        h += params[f"b{i}"]
        if i < n_layers:
            np.maximum(h, 0, out=h)  # ReLU
        acts.append(h)
    return h, acts


def cross_entropy(logits, y):
    """Mean softmax cross-entropy over the batch and its gradient with respect to the logits."""
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_norm
    loss = -float(log_p[np.arange(n), y].mean())
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    return loss, dlogits


def backward(params, acts, dlogits, grads):
    """Write d(loss)/d(param) for every parameter into ``grads`` (a dict of arrays)."""
    n_layers = len(params) // 2
    d = dlogits
    for i in range(n_layers, 0, -1):
        np.matmul(acts[i - 1].T, d, out=grads[f"W{i}"])
        d.sum(axis=0, out=grads[f"b{i}"])
        if i > 1:
            d = d @ params[f"W{i}"].T
            d *= acts[i - 1] > 0  # ReLU passes the gradient where its output was positive
    return grads


def loss_and_grads(params, X, y, grads=None):
    """Forward and backward: ``(loss, grads)``; fills ``grads`` in place when given."""
    logits, acts = forward(params, X)
    loss, dlogits = cross_entropy(logits, y)
    if grads is None:
        grads = {k: np.empty_like(v) for k, v in params.items()}
    backward(params, acts, dlogits, grads)
    return loss, grads


def evaluate(params, X, y):
    """``(mean cross-entropy, accuracy)`` on ``(X, y)``."""
    logits, _ = forward(params, X)
    loss, _ = cross_entropy(logits, y)
    return loss, float((logits.argmax(axis=1) == y).mean())


def weight_mask(flat):
    """Boolean mask over ``flat.buffer``: True on weight matrices (``W*``), False on biases."""
    mask = np.zeros(flat.buffer.size, dtype=bool)
    for (name, view), start in zip(flat.params.items(), flat.offsets[:-1]):
        if name.startswith("W"):
            mask[start:start + view.size] = True
    return mask


def zero_input_mask(flat, X_train):
    """Boolean mask over ``flat.buffer``: the first-layer weights of inputs that are 0 in every
    training example. Their gradient is exactly 0 in every run, whatever the optimizer."""
    mask = np.zeros(flat.buffer.size, dtype=bool)
    w1 = mask[flat.offsets[0]:flat.offsets[1]].reshape(flat.params["W1"].shape)
    w1[np.all(X_train == 0, axis=0)] = True
    return mask


# =============================================================================
# one training run
# =============================================================================
@dataclass(frozen=True)
class RunSpec:
    """One training run: optimizer (a key of OPTIMIZER_LABELS), lr, decay, schedule, seed, budget."""
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    epochs: int = 40
    batch_size: int = 32


@dataclass
class RunResult:
    spec: RunSpec
    train_loss: list = field(default_factory=list)  # per epoch: mean minibatch loss
    val_loss: list = field(default_factory=list)    # per epoch, after the epoch
    val_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)          # the lr used during each epoch
    weight_norm: float = float("nan")               # L2 norm of the weight matrices at the end
    steps: int = 0
    diverged: bool = False
    params: np.ndarray | None = None   # final flat parameters (keep_params=True)
    grad_sq: np.ndarray | None = None  # mean squared gradient per parameter (track_grad_sq=True)

    @property
    def final_acc(self):
        return self.val_acc[-1]


def make_optimizer(name, params, lr, weight_decay=0.0, backend="auto"):
    """The fastoptim optimizer for a name of OPTIMIZER_LABELS."""
    if name == "sgd":
        return fastoptim.SGD(params, lr=lr, weight_decay=weight_decay, backend=backend)
    if name == "momentum":
        return fastoptim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, backend=backend)
    if name == "adam":
        return fastoptim.Adam(params, lr=lr, weight_decay=weight_decay, backend=backend)
    if name == "adamw":
        return fastoptim.AdamW(params, lr=lr, weight_decay=weight_decay, backend=backend)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZER_LABELS)}")


def make_scheduler(name, optimizer, epochs):
    """The scheduler for a name of SCHEDULES, stepped once per epoch (None for "constant")."""
    if name == "constant":
        return None
    if name == "step":  # two drops by 10x, at 1/3 and 2/3 of the run
        return lrs.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "exponential":  # ends at 1% of the base lr
        return lrs.ExponentialLR(optimizer, gamma=0.01 ** (1.0 / epochs))
    if name == "cosine":
        return lrs.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "cosine_2x":  # planned for twice the epochs the run gets
        return lrs.CosineAnnealingLR(optimizer, T_max=2 * epochs)
    if name == "warm_restarts":  # four cycles
        return lrs.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, epochs // 4))
    if name == "plateau":  # watches the validation loss; knows nothing of the budget
        return lrs.ReduceLROnPlateau(optimizer, factor=0.1, patience=plateau_patience(epochs))
    if name == "warmup_cosine":
        warmup = warmup_epochs(epochs)
        return lrs.SequentialLR(optimizer, [
            lrs.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup),
            lrs.CosineAnnealingLR(optimizer, T_max=epochs - warmup),
        ], milestones=[warmup])
    raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULES)}")


WARMUP_START = 0.1


def warmup_epochs(epochs):
    return max(1, epochs // 10)


def plateau_patience(epochs):
    """torch's default patience (10 epochs) scaled to the budget, as if it were 100 epochs."""
    return max(1, epochs // 10)


def train(spec, data, *, backend="auto", sizes=DEFAULT_SIZES, keep_params=False,
          track_grad_sq=False):
    """Train a fresh MLP (seeded by ``spec.seed``) as ``spec`` says; record per-epoch curves.

    The parameters live in one FlatParams buffer: the backward pass writes into
    ``flat.grads`` and ``opt.step(flat.grads)`` is one kernel call. The seed
    fixes both the initialization and the minibatch order, so runs that differ
    only in the optimizer see the same batches. A run whose loss stops being
    finite is marked ``diverged``; from then on its losses are NaN and its
    accuracy is chance (1 / n_classes).
    """
    flat = fastoptim.FlatParams(init_mlp(sizes, spec.seed))
    params, grads = flat.params, flat.grads
    opt = make_optimizer(spec.optimizer, params, spec.lr, spec.weight_decay, backend)
    sched = make_scheduler(spec.schedule, opt, spec.epochs)
    rng = np.random.default_rng(10_000 + spec.seed)
    n = len(data.y_train)
    batches = max(1, n // spec.batch_size)  # the incomplete last batch is dropped
    grad_sq = np.zeros_like(flat.grad_buffer, dtype=np.float64) if track_grad_sq else None
    result = RunResult(spec)
    with np.errstate(all="ignore"):
        for epoch in range(spec.epochs):
            result.lr.append(float(opt.param_groups[0]["lr"]))
            if result.diverged:
                result.train_loss.append(float("nan"))
                result.val_loss.append(float("nan"))
                result.val_acc.append(1.0 / data.n_classes)
                continue
            order = rng.permutation(n)
            total = 0.0
            for b in range(batches):
                idx = order[b * spec.batch_size:(b + 1) * spec.batch_size]
                loss, _ = loss_and_grads(params, data.X_train[idx], data.y_train[idx], grads)
                total += loss
                if grad_sq is not None:
                    grad_sq += np.square(flat.grad_buffer, dtype=np.float64)
                opt.step(grads)
                result.steps += 1
            train_loss = total / batches
            val_loss, val_acc = evaluate(params, data.X_val, data.y_val)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                result.diverged = True
                train_loss = val_loss = float("nan")
                val_acc = 1.0 / data.n_classes  # chance: the predictions are garbage
            result.train_loss.append(train_loss)
            result.val_loss.append(val_loss)
            result.val_acc.append(val_acc)
            if isinstance(sched, lrs.ReduceLROnPlateau):
                sched.step(val_loss if math.isfinite(val_loss) else float("inf"))
            elif sched is not None:
                sched.step()
    mask = weight_mask(flat)
    result.weight_norm = float(np.linalg.norm(flat.buffer[mask].astype(np.float64)))
    if keep_params:
        result.params = flat.buffer.copy()
    if grad_sq is not None:
        result.grad_sq = grad_sq / max(1, result.steps)
    return result


# =============================================================================
# statistics and the verdicts
# =============================================================================
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


def verdict_step_vs_cosine(acc_step, acc_cosine):
    """"Step decay for CNNs, cosine for transformers": only the MLP comparison can be measured."""
    claim = "Step decay suits classic CNN schedules, cosine annealing suits transformers."
    c = compare(acc_cosine, acc_step, MIN_ACC_EFFECT)
    outcome = ("cosine ended ahead" if c.sign > 0 else "StepLR ended ahead" if c.sign < 0
               else "the two ended within noise")
    return Verdict(claim, NOT_TESTED, (
        f"This demo trains an MLP, neither a CNN nor a transformer, so the claim itself is not "
        f"tested. On this MLP {outcome}: cosine {pct(np.mean(acc_cosine))}, StepLR "
        f"{pct(np.mean(acc_step))} (difference {c.diff * 100:+.2f} pp, {_threshold_text(c)})."))


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


# =============================================================================
# the experiments
# =============================================================================
@dataclass
class Budget:
    epochs: int
    seeds: int
    sweep_seeds: int
    lr_grid: tuple = LR_GRID
    decay_grid: tuple = DECAY_GRID
    schedules: tuple = SCHEDULES
    schedule_optimizers: tuple = ("momentum", "adamw")


FULL = Budget(epochs=40, seeds=8, sweep_seeds=2)
QUICK = Budget(epochs=3, seeds=2, sweep_seeds=1, lr_grid=(1e-3, 1e-2, 1e-1),
               decay_grid=(0.0, 1e-2, 1.0), schedule_optimizers=("momentum",))


class _Progress:
    def __init__(self, quiet):
        self.quiet, self.start = quiet, time.perf_counter()

    def __call__(self, msg):
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {msg}", flush=True)


def _mean_curves(results, key):
    return np.array([getattr(r, key) for r in results], dtype=float)


def run_optimizers(data, budget, backend, log):
    """Experiment 1: lr sweep, then each optimizer at its best lr over several seeds."""
    sweep = {}
    log(f"1/3 optimizers: lr sweep ({len(OPTIMIZER_LABELS) * len(budget.lr_grid) * budget.sweep_seeds} runs)")
    for name in OPTIMIZER_LABELS:
        wd = ADAMW_DEFAULT_WD if name == "adamw" else 0.0
        sweep[name] = {}
        for lr in budget.lr_grid:
            runs = [train(RunSpec(name, lr, wd, seed=1000 + s, epochs=budget.epochs), data,
                          backend=backend) for s in range(budget.sweep_seeds)]
            sweep[name][lr] = float(np.mean([r.final_acc for r in runs]))
    # the most accurate lr; a tie goes to the lr nearest torch's default 1e-3
    best_lr = {name: max(acc, key=lambda lr: (acc[lr], -abs(math.log10(lr) + 3)))
               for name, acc in sweep.items()}
    log("1/3 optimizers: best lrs " + ", ".join(f"{OPTIMIZER_LABELS[k]} {v:g}" for k, v in best_lr.items())
        + f"; {len(OPTIMIZER_LABELS) * budget.seeds} runs at them")
    main = {}
    for name in OPTIMIZER_LABELS:
        wd = ADAMW_DEFAULT_WD if name == "adamw" else 0.0
        main[name] = [train(RunSpec(name, best_lr[name], wd, seed=s, epochs=budget.epochs), data,
                            backend=backend) for s in range(budget.seeds)]
    return {"sweep": sweep, "best_lr": best_lr, "runs": main}


def run_weight_decay(data, budget, lr, backend, log):
    """Experiment 2: Adam's L2 weight_decay against AdamW's decoupled decay, same lr and seeds."""
    decays = [wd for wd in budget.decay_grid if wd > 0]
    log(f"2/3 weight decay: Adam (L2) vs AdamW at lr={lr:g}, wd in {_lr_list(decays)} "
        f"({budget.seeds * (1 + 2 * len(decays))} runs)")
    base = [train(RunSpec("adam", lr, 0.0, seed=s, epochs=budget.epochs), data, backend=backend,
                  keep_params=True, track_grad_sq=True) for s in range(budget.seeds)]
    runs = {"l2": {}, "adamw": {}}
    for method, opt_name in (("l2", "adam"), ("adamw", "adamw")):
        for wd in decays:
            runs[method][wd] = [train(RunSpec(opt_name, lr, wd, seed=s, epochs=budget.epochs), data,
                                      backend=backend, keep_params=True)
                                for s in range(budget.seeds)]
    return {"lr": lr, "base": base, "runs": runs, "decays": decays}


def run_schedules(data, budget, lrs_by_opt, backend, log):
    """Experiment 3: every schedule with SGD+momentum (and AdamW) at the sweep's best lr."""
    log(f"3/3 schedules: {len(budget.schedules)} schedules x "
        f"{', '.join(OPTIMIZER_LABELS[o] for o in budget.schedule_optimizers)} "
        f"({len(budget.schedules) * len(budget.schedule_optimizers) * budget.seeds} runs)")
    runs = {}
    for opt_name in budget.schedule_optimizers:
        wd = ADAMW_DEFAULT_WD if opt_name == "adamw" else 0.0
        runs[opt_name] = {
            sched: [train(RunSpec(opt_name, lrs_by_opt[opt_name], wd, sched, seed=s,
                                  epochs=budget.epochs), data, backend=backend)
                    for s in range(budget.seeds)]
            for sched in budget.schedules}
    return {"runs": runs, "lr": {o: lrs_by_opt[o] for o in budget.schedule_optimizers}}


# =============================================================================
# analysis: numbers and verdicts from the runs
# =============================================================================
def analyze(data, budget, exp1, exp2, exp3):
    """Turn the runs into the tables and verdicts of the report (all plain numbers)."""
    out = {"verdicts": []}
    runs = exp1["runs"]
    early = max(1, budget.epochs // 4)
    acc = {k: [r.final_acc for r in rs] for k, rs in runs.items()}
    acc_early = {k: [r.val_acc[early - 1] for r in rs] for k, rs in runs.items()}
    ett = {k: [epochs_to_target(r.train_loss) for r in rs] for k, rs in runs.items()}
    out["optimizers"] = {
        k: {"lr": exp1["best_lr"][k], "acc_mean": float(np.mean(acc[k])), "acc_std": float(np.std(acc[k])),
            "acc_early_mean": float(np.mean(acc_early[k])),
            "train_loss": float(np.mean([r.train_loss[-1] for r in rs])),
            "val_loss": float(np.mean([r.val_loss[-1] for r in rs])),
            "epochs_to_target": float(np.mean(ett[k])),
            "weight_norm": float(np.mean([r.weight_norm for r in rs]))}
        for k, rs in runs.items()}
    out["sweep"] = {k: {f"{lr:g}": a for lr, a in v.items()} for k, v in exp1["sweep"].items()}
    out["early_epoch"] = early
    out["verdicts"].append(verdict_adam_fast(ett["adam"], ett["momentum"], ett["sgd"]))
    out["verdicts"].append(verdict_adam_little_tuning(exp1["sweep"]))
    out["verdicts"].append(verdict_momentum_catches_up(
        acc_early["momentum"], acc_early["adam"], acc["momentum"], acc["adam"],
        f"epoch {early} of {budget.epochs}"))
    out["verdicts"].append(verdict_momentum_generalizes(acc["momentum"], acc["adam"]))

    # -- weight decay
    base = exp2["base"]
    layout = fastoptim.FlatParams(init_mlp(DEFAULT_SIZES, 0))
    mask = weight_mask(layout)
    dead = zero_input_mask(layout, data.X_train)
    n_dead = int(dead.sum())
    decay_rows, table = [], []
    for wd in exp2["decays"]:
        row = {"wd": wd}
        for method in ("l2", "adamw"):
            rs = exp2["runs"][method][wd]
            kept = np.array([decay_by_quartile(r.params, b.params, np.sqrt(b.grad_sq), mask)
                             for r, b in zip(rs, base)])
            row[method] = tuple(float(x) for x in kept.mean(axis=0))
            table.append({"method": method, "wd": wd,
                          "acc_mean": float(np.mean([r.final_acc for r in rs])),
                          "acc_std": float(np.std([r.final_acc for r in rs])),
                          "weight_norm": float(np.mean([r.weight_norm for r in rs])),
                          "kept_bottom": row[method][0], "kept_top": row[method][1]})
        decay_rows.append(row)
    base_acc = [r.final_acc for r in base]
    out["decay"] = {"lr": exp2["lr"], "table": table, "n_zero_grad_weights": n_dead,
                    "base_acc_mean": float(np.mean(base_acc)), "base_acc_std": float(np.std(base_acc)),
                    "base_weight_norm": float(np.mean([r.weight_norm for r in base]))}
    out["verdicts"].append(verdict_l2_diluted(decay_rows))
    steps = base[0].steps
    # the decay value whose predicted shrink of zero-gradient weights is nearest 1/2: readable
    wd_max = min(exp2["decays"], key=lambda wd: abs(math.log((1 - exp2["lr"] * wd) ** steps / 0.5))
                 if (1 - exp2["lr"] * wd) ** steps > 0 else math.inf)
    if n_dead:
        def kept_dead(method):
            return float(np.mean([
                np.linalg.norm(r.params[dead].astype(np.float64))
                / np.linalg.norm(b.params[dead].astype(np.float64))
                for r, b in zip(exp2["runs"][method][wd_max], base)]))
        kept_w, kept_l2 = kept_dead("adamw"), kept_dead("l2")
    else:
        kept_w = kept_l2 = float("nan")
    out["verdicts"].append(verdict_adamw_direct(kept_w, (1 - exp2["lr"] * wd_max) ** steps, kept_l2,
                                                wd_max, n_dead))
    best = {}
    for method in ("l2", "adamw"):
        wd_best = max(exp2["decays"], key=lambda wd: np.mean([r.final_acc for r in exp2["runs"][method][wd]]))
        best[method] = (wd_best, [r.final_acc for r in exp2["runs"][method][wd_best]])
    out["verdicts"].append(verdict_decoupled_better(best["adamw"][1], best["l2"][1],
                                                    best["adamw"][0], best["l2"][0]))

    # -- schedules
    out["schedules"] = {}
    for opt_name, by_sched in exp3["runs"].items():
        out["schedules"][opt_name] = {
            s: {"acc_mean": float(np.mean([r.final_acc for r in rs])),
                "acc_std": float(np.std([r.final_acc for r in rs])),
                "train_loss": float(np.mean([r.train_loss[-1] for r in rs])),
                "val_loss": float(np.mean([r.val_loss[-1] for r in rs])),
                "final_lr": float(np.mean([r.lr[-1] for r in rs]))}
            for s, rs in by_sched.items()}
    sgdm = exp3["runs"][budget.schedule_optimizers[0]]
    facc = {s: [r.final_acc for r in rs] for s, rs in sgdm.items()}
    floss = {s: [r.train_loss[-1] for r in rs] for s, rs in sgdm.items()}
    out["verdicts"].append(verdict_decay_helps(floss, facc))
    out["verdicts"].append(verdict_step_vs_cosine(facc["step"], facc["cosine"]))
    out["verdicts"].append(verdict_plateau_unpredictable(facc["plateau"], facc["cosine_2x"], facc["cosine"]))
    out["verdicts_optimizer"] = budget.schedule_optimizers[0]
    return out


# =============================================================================
# figures
# =============================================================================
COLORS = {"sgd": "#888888", "momentum": "#1f77b4", "adam": "#d62728", "adamw": "#2ca02c",
          "l2": "#d62728"}
FIGURES = {
    "optimizers": "optimizers_curves.png",
    "sweep": "optimizers_lr_sweep.png",
    "decay": "weight_decay.png",
    "schedules_lr": "schedules_lr.png",
    "schedules_loss": "schedules_loss.png",
}


def _band(ax, x, curves, color, label):
    mean = np.nanmean(curves, axis=0)
    ax.plot(x, mean, color=color, label=label, lw=1.5)
    if len(curves) > 1:
        lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def make_figures(fig_dir, budget, exp1, exp2, exp3, analysis, dpi=80):
    """Write the PNGs; returns {key: file name}. Needs matplotlib (Agg backend, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(fig_dir, exist_ok=True)
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7})
    epochs = np.arange(1, budget.epochs + 1)
    written = {}

    def save(fig, key):
        fig.tight_layout()
        fig.savefig(os.path.join(fig_dir, FIGURES[key]), dpi=dpi)
        plt.close(fig)
        written[key] = FIGURES[key]

    # 1a. curves
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for name, rs in exp1["runs"].items():
        label = f"{OPTIMIZER_LABELS[name]} (lr={exp1['best_lr'][name]:g})"
        _band(axes[0], epochs, _mean_curves(rs, "train_loss"), COLORS[name], label)
        _band(axes[1], epochs, _mean_curves(rs, "val_loss"), COLORS[name], label)
        _band(axes[2], epochs, 100 * _mean_curves(rs, "val_acc"), COLORS[name], label)
    axes[0].axhline(LOSS_TARGET, color="k", ls=":", lw=0.8)
    for ax, title in zip(axes, ("training loss (log)", "validation loss (log)", "validation accuracy %")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    lo = np.nanmin([np.nanmin(_mean_curves(rs, "val_acc")) for rs in exp1["runs"].values()])
    axes[2].set_ylim(max(100 * lo, 80), 100)
    axes[0].legend()
    save(fig, "optimizers")

    # 1b. sweep
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, accs in exp1["sweep"].items():
        lr_list = sorted(accs)
        ax.plot(lr_list, [100 * accs[lr] for lr in lr_list], "o-", color=COLORS[name],
                label=OPTIMIZER_LABELS[name], ms=3)
        good = good_lrs(accs)
        ax.plot(good, [100 * accs[lr] for lr in good], "o", color=COLORS[name], ms=7, alpha=0.35)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (constant)")
    ax.set_ylabel("final validation accuracy %")
    ax.set_title(f"lr sweep; large dots: within {pp(TUNING_TOLERANCE)} of the best")
    ax.set_ylim(0, 100)
    ax.legend()
    save(fig, "sweep")

    # 2. weight decay
    table = analysis["decay"]["table"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for method, label in (("l2", "Adam, weight_decay (L2)"), ("adamw", "AdamW (decoupled)")):
        rows = [t for t in table if t["method"] == method]
        wds = [t["wd"] for t in rows]
        axes[0].errorbar(wds, [100 * t["acc_mean"] for t in rows], [100 * t["acc_std"] for t in rows],
                         fmt="o-", color=COLORS[method], label=label, ms=3, capsize=2)
        axes[1].plot(wds, [t["weight_norm"] for t in rows], "o-", color=COLORS[method], label=label, ms=3)
        axes[2].plot(wds, [t["kept_top"] for t in rows], "^-", color=COLORS[method], ms=4)
        axes[2].plot(wds, [t["kept_bottom"] for t in rows], "v--", color=COLORS[method], ms=4)
    d = analysis["decay"]
    axes[0].axhline(100 * d["base_acc_mean"], color="k", ls=":", lw=0.8, label="no decay")
    axes[1].axhline(d["base_weight_norm"], color="k", ls=":", lw=0.8, label="no decay")
    axes[0].set_title(f"validation accuracy % (lr={exp2['lr']:g})")
    axes[1].set_title("weight norm ||W|| at the end")
    axes[2].set_title("weight norm kept vs no decay, by gradient size\n"
                      "(solid ▲: largest-gradient quartile, dashed ▼: smallest)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("weight_decay")
    axes[0].legend()
    save(fig, "decay")

    # 3a. lr curves (seed 0), with the closed form schedules.warmup_cosine for comparison
    opt0 = budget.schedule_optimizers[0]
    runs = exp3["runs"][opt0]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    cmap = plt.get_cmap("tab10")
    for i, (sched, rs) in enumerate(runs.items()):
        ax.step(epochs, rs[0].lr, where="post", color=cmap(i), label=SCHEDULE_LABELS[sched], lw=1.4)
    if "warmup_cosine" in runs:
        base_lr = exp3["lr"][opt0]
        w = warmup_epochs(budget.epochs)
        closed = schedules.warmup_cosine(list(range(budget.epochs)), base_lr, w, budget.epochs,
                                         warmup_start_factor=WARMUP_START)
        ax.plot(epochs, closed, "k:", lw=1, label="schedules.warmup_cosine (closed form)",
                drawstyle="steps-post")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"learning-rate schedules ({OPTIMIZER_LABELS[opt0]}, seed 0)")
    ax.legend(fontsize=6, loc="lower left")
    save(fig, "schedules_lr")

    # 3b. loss curves
    opts = list(exp3["runs"])
    fig, axes = plt.subplots(1, 2 * len(opts), figsize=(5.5 * len(opts) + 0.5, 3.2), squeeze=False)
    axes = axes[0]
    for j, opt_name in enumerate(opts):
        for i, (sched, rs) in enumerate(exp3["runs"][opt_name].items()):
            _band(axes[2 * j], epochs, _mean_curves(rs, "train_loss"), cmap(i), SCHEDULE_LABELS[sched])
            _band(axes[2 * j + 1], epochs, _mean_curves(rs, "val_loss"), cmap(i), SCHEDULE_LABELS[sched])
        axes[2 * j].set_title(f"{OPTIMIZER_LABELS[opt_name]}: training loss")
        axes[2 * j + 1].set_title(f"{OPTIMIZER_LABELS[opt_name]}: validation loss")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    save(fig, "schedules_loss")
    return written


# =============================================================================
# the report
# =============================================================================
def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _acc(mean, std):
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def build_report(data, budget, analysis, figures, meta):
    """The Markdown report: setup, verdicts (generated from numbers), tables, figures."""
    fig = lambda key, alt: (f"![{alt}]({FIGURES_DIR}/{figures[key]})" if key in figures  # noqa: E731
                            else f"*(figure not drawn: {meta['no_figures']})*")
    n_train, n_val = len(data.y_train), len(data.y_val)
    steps = n_train // 32
    L = []
    L.append("# fastoptim demo: the optimizer lore, measured\n")
    L.append(f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}); "
             f"wall time {meta['wall_s']:.0f} s. fastoptim {fastoptim.__version__}, backend "
             f"`{meta['backend']}`.\n")
    if meta.get("quick"):
        L.append("> **`--quick` run:** a smoke test with a tiny budget. Its numbers are too few "
                 "and too short to support or refute anything; run without `--quick` to judge.\n")
    L.append(f"**Setup.** Data: {data.name}, {n_train} training and {n_val} validation images "
             f"(stratified split, fixed seed). Model: MLP {'-'.join(map(str, DEFAULT_SIZES))} "
             f"with ReLU, {meta['n_params']} float32 parameters in one `FlatParams` buffer "
             f"(one kernel call per `opt.step`), softmax cross-entropy, forward and backward in "
             f"plain NumPy. Every run: {budget.epochs} epochs of {steps} minibatches of 32; the "
             f"seed fixes initialization and batch order, so runs with the same seed differ only "
             f"in the optimizer. Means are over {budget.seeds} seeds (± is the standard "
             f"deviation); training loss is the mean minibatch loss of the epoch.\n")
    L.append("**How the verdicts are decided.** Every sentence below is generated from the "
             f"measured numbers. Accuracy differences count only beyond max({pp(MIN_ACC_EFFECT)}, "
             f"{NOISE_SE:g} standard errors of the difference); other thresholds are stated with "
             "each verdict. *Borne out*: the measurement supports the claim; *not borne out*: it "
             "does not show the claimed effect; *contradicted*: it shows the opposite; *not tested "
             "here*: this demo cannot test it.\n")

    L.append("## Verdicts\n")
    for i, v in enumerate(analysis["verdicts"], 1):
        L.append(f"{i}. **{v.claim}** — *{v.verdict}.* {v.evidence}\n")

    # -- 1
    L.append("## 1. SGD, SGD+momentum, Adam, AdamW\n")
    L.append(f"Each optimizer first ran at every lr of the grid ({budget.sweep_seeds} seed(s) each, "
             "seeds distinct from the main runs; AdamW with its default weight_decay=0.01); the "
             "best lr was then run with each seed.\n")
    L.append(fig("sweep", "validation accuracy against learning rate") + "\n")
    sweep = analysis["sweep"]
    lr_keys = list(next(iter(sweep.values())))
    L.append(_table(["optimizer"] + [f"lr={k}" for k in lr_keys],
                    [[OPTIMIZER_LABELS[k]] + [f"{100 * v[lk]:.1f}" for lk in lr_keys]
                     for k, v in sweep.items()]) + "\n")
    L.append("*Final validation accuracy (%) by constant learning rate.*\n")
    L.append(fig("optimizers", "training loss, validation loss and accuracy curves") + "\n")
    e = analysis["early_epoch"]
    L.append(_table(
        ["optimizer", "best lr", "val. acc. % (final)", f"val. acc. % (epoch {e})",
         f"epochs to loss ≤ {LOSS_TARGET}", "final train loss", "final val. loss", "‖W‖"],
        [[OPTIMIZER_LABELS[k], f"{o['lr']:g}", _acc(o["acc_mean"], o["acc_std"]),
          f"{100 * o['acc_early_mean']:.2f}", _fmt_epochs(o["epochs_to_target"]),
          f"{o['train_loss']:.2g}", f"{o['val_loss']:.3f}", f"{o['weight_norm']:.1f}"]
         for k, o in analysis["optimizers"].items()]) + "\n")

    # -- 2
    d = analysis["decay"]
    L.append("## 2. Adam's weight_decay (L2) vs AdamW (decoupled)\n")
    L.append(f"Both at lr={d['lr']:g}, the default of Adam and AdamW, so that the decay is the "
             "only setting that differs from the out-of-the-box one. "
             f"`Adam(lr={d['lr']:g}, weight_decay=wd)` adds `wd * w` to the gradient before "
             f"Adam's normalization; `AdamW(lr={d['lr']:g}, weight_decay=wd)` multiplies the "
             "weights by `1 - lr * wd` each step. Same lr, betas, seeds and batches; the run "
             f"without decay (validation accuracy {_acc(d['base_acc_mean'], d['base_acc_std'])}%, "
             f"‖W‖ = {d['base_weight_norm']:.1f}) is the reference for the fraction of the weight norm "
             "kept, split by quartile of each weight's root-mean-square gradient in that reference "
             f"run; weights whose gradient was always 0 there (the {d['n_zero_grad_weights']} "
             "weights of always-blank input pixels, and those of hidden units that never "
             "activated) are left out of the quartiles.\n")
    L.append(fig("decay", "accuracy, weight norm and per-quartile shrinkage against weight decay") + "\n")
    L.append(_table(
        ["method", "weight_decay", "val. acc. %", "‖W‖", "norm kept: small-grad quartile",
         "norm kept: large-grad quartile"],
        [["Adam (L2)" if t["method"] == "l2" else "AdamW", f"{t['wd']:g}",
          _acc(t["acc_mean"], t["acc_std"]), f"{t['weight_norm']:.2f}", pct(t["kept_bottom"]),
          pct(t["kept_top"])] for t in sorted(d["table"], key=lambda t: (t["method"] != "l2", t["wd"]))])
        + "\n")

    # -- 3
    L.append("## 3. Learning-rate schedules\n")
    L.append("Each schedule starts from the optimizer's best constant lr of experiment 1 and is "
             f"stepped once per epoch: StepLR divides it by 10 every {max(1, budget.epochs // 3)} "
             "epochs, ExponentialLR ends at 1% of it, CosineAnnealingLR anneals to 0 over the run, "
             f"CosineAnnealingWarmRestarts restarts every {max(1, budget.epochs // 4)} epochs, "
             "ReduceLROnPlateau divides it by 10 after "
             f"{plateau_patience(budget.epochs)} epoch(s) without a better validation loss, warm-up + "
             f"cosine is `SequentialLR([LinearLR(start_factor={WARMUP_START}, total_iters="
             f"{warmup_epochs(budget.epochs)}), CosineAnnealingLR(...)])` (the dotted line is "
             "`schedules.warmup_cosine`, its closed form), and the last one is a cosine planned "
             f"for {2 * budget.epochs} epochs but stopped after {budget.epochs}, as when the budget "
             "was guessed wrong.\n")
    L.append(fig("schedules_lr", "learning-rate curves") + "\n")
    L.append(fig("schedules_loss", "loss curves by schedule") + "\n")
    for opt_name, by_sched in analysis["schedules"].items():
        L.append(f"**{OPTIMIZER_LABELS[opt_name]}** (base lr "
                 f"{analysis['optimizers'][opt_name]['lr']:g}):\n")
        L.append(_table(["schedule", "val. acc. %", "final train loss", "final val. loss", "final lr"],
                        [[SCHEDULE_LABELS[s], _acc(v["acc_mean"], v["acc_std"]), f"{v['train_loss']:.2g}",
                          f"{v['val_loss']:.3f}", f"{v['final_lr']:.2g}"] for s, v in by_sched.items()])
                 + "\n")
    L.append(f"The schedule verdicts above use the {OPTIMIZER_LABELS[analysis['verdicts_optimizer']]}"
             " runs.\n")
    L.append("## Reproduce\n")
    L.append("```\npip install \"fastoptim[examples]\"\nfastoptim demo --out demo_out      "
             "# or: python -m fastoptim.demo\n```\n")
    L.append("Options: `--seeds N`, `--epochs N`, `--backend numba|c|numpy`, `--quick`. The "
             f"numbers are also in `{RESULTS_NAME}`.\n")
    return "\n".join(L)


# =============================================================================
# main
# =============================================================================
def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fastoptim demo",
        description="Train a small NumPy MLP with fastoptim's optimizers and schedulers and write "
                    "a report that tests the usual optimizer advice against the measurements.")
    p.add_argument("--quick", action="store_true", help="tiny budget (seconds): a smoke test only")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/)")
    p.add_argument("--seeds", type=int, help=f"seeds per setting (default {FULL.seeds}; quick {QUICK.seeds})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {FULL.epochs}; quick {QUICK.epochs})")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "c", "numpy"),
                   help="fastoptim's CPU kernels (default auto: the fastest available)")
    p.add_argument("--dataset", default="auto", choices=("auto", "digits", "synthetic"),
                   help="digits needs scikit-learn; auto falls back to generated data without it")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    for name in ("seeds", "epochs"):
        value = getattr(args, name)
        if value is not None and value < (2 if name == "epochs" else 1):
            p.error(f"--{name} must be at least {2 if name == 'epochs' else 1}")
    return args


def _jsonable(analysis, meta):
    out = {k: v for k, v in analysis.items() if k != "verdicts"}
    out["verdicts"] = [asdict(v) for v in analysis["verdicts"]]
    out["meta"] = meta
    return json.loads(json.dumps(out, default=float, allow_nan=True))


def main(argv=None):
    """Run the demo; ``argv`` are the arguments after ``fastoptim demo``. Returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
    budget = QUICK if args.quick else FULL
    if args.seeds or args.epochs:
        budget = Budget(**{**asdict(budget), **{k: v for k, v in
                                               (("seeds", args.seeds), ("epochs", args.epochs)) if v}})
    log = _Progress(args.quiet)
    t0 = time.perf_counter()
    try:
        backend = fastoptim.SGD([np.zeros(1, np.float32)], lr=0.1, backend=args.backend).backend
    except RuntimeError as exc:  # e.g. the C kernels were not compiled in this installation
        print(f"fastoptim demo: {exc}", file=sys.stderr)
        return 2
    data = load_dataset(args.dataset)
    log(f"data: {data.name}; backend {backend}; {budget.epochs} epochs, {budget.seeds} seeds")

    exp1 = run_optimizers(data, budget, backend, log)
    exp2 = run_weight_decay(data, budget, DEFAULT_LRS["adam"], backend, log)
    exp3 = run_schedules(data, budget, exp1["best_lr"], backend, log)
    analysis = analyze(data, budget, exp1, exp2, exp3)
    train_s = time.perf_counter() - t0

    os.makedirs(args.out, exist_ok=True)
    figures, no_figures = {}, ""
    if args.no_plots:
        no_figures = "--no-plots"
    else:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            no_figures = 'matplotlib is not installed; pip install "fastoptim[examples]"'
        else:
            log("figures")
            figures = make_figures(os.path.join(args.out, FIGURES_DIR), budget, exp1, exp2, exp3, analysis)
    meta = {
        "command": " ".join(["fastoptim demo", *(sys.argv[1:] if argv is None else map(str, argv))]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"Python {platform.python_version()}, NumPy {np.__version__}",
        "backend": backend, "quick": args.quick, "epochs": budget.epochs, "seeds": budget.seeds,
        "n_params": sum(v.size for v in init_mlp(DEFAULT_SIZES).values()),
        "train_s": train_s, "no_figures": no_figures,
    }
    meta["wall_s"] = time.perf_counter() - t0
    report = build_report(data, budget, analysis, figures, meta)
    with open(os.path.join(args.out, REPORT_NAME), "w") as f:
        f.write(report)
    with open(os.path.join(args.out, RESULTS_NAME), "w") as f:
        json.dump(_jsonable(analysis, meta), f, indent=1)
    log(f"wrote {os.path.join(args.out, REPORT_NAME)}" + (f" and {len(figures)} figures" if figures else ""))
    if not args.quiet:
        print("\nVerdicts:")
        for v in analysis["verdicts"]:
            print(f"  [{v.verdict}] {v.claim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
