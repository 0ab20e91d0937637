"""One training run: the optimizer, the schedule, the loop, and what it records."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import fastoptim
from fastoptim import lr_scheduler as lrs

from .models import DEFAULT_SIZES, MLP, CNN1d

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam", "adamw": "AdamW"}
# optimizers the heatmap adds: SGD+momentum with decoupled decay (fastoptim.SGD, like
# torch.optim.SGD, has only L2, so the demo applies the decay itself; see SGDW)
EXTRA_LABELS = {"momentum_w": "SGDW (momentum, decoupled)"}
MODELS = ("mlp", "mlp_bn", "cnn")
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
WARMUP_START = 0.1


@dataclass(frozen=True)
class RunSpec:
    """One training run: optimizer (a key of OPTIMIZER_LABELS or EXTRA_LABELS), lr, decay,
    schedule, seed, budget, and the model (``model`` one of MODELS, ``arch`` its sizes: the
    layer widths of an MLP, the conv channels of a CNN)."""
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    epochs: int = 40
    batch_size: int = 32
    model: str = "mlp"
    arch: tuple = DEFAULT_SIZES


@dataclass
class RunResult:
    spec: RunSpec
    train_loss: list = field(default_factory=list)  # per epoch: mean minibatch loss
    val_loss: list = field(default_factory=list)    # per epoch, after the epoch
    val_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)          # the lr used during each epoch
    weight_norm: float = float("nan")               # L2 norm of the weight matrices at the end
    train_acc: float = float("nan")                 # accuracy on the whole training set at the end
    steps: int = 0
    diverged: bool = False
    params: np.ndarray | None = None   # final flat parameters (keep_params=True)
    grad_sq: np.ndarray | None = None  # mean squared gradient per parameter (track_grad_sq=True)

    @property
    def final_acc(self):
        return self.val_acc[-1]


class SGDW:
    """SGD (with momentum) and decoupled weight decay, as AdamW decouples it from Adam.

    Each step first multiplies every parameter by ``1 - lr * weight_decay`` (``lr``
    the scheduled one, as torch's AdamW does), then takes a plain SGD step with the
    gradient. ``fastoptim.SGD`` follows ``torch.optim.SGD``, whose ``weight_decay`` is
    L2 only, so this wrapper does the decay with one NumPy multiply on the flat
    buffer. Schedulers drive ``self.optimizer``.
    """

    def __init__(self, flat, lr, momentum=0.9, weight_decay=0.0, backend="auto"):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.optimizer = fastoptim.SGD(flat.params, lr=lr, momentum=momentum, backend=backend)
        self.param_groups = self.optimizer.param_groups
        self.backend = self.optimizer.backend
        self.weight_decay = float(weight_decay)
        self._buffer = flat.buffer

    def step(self, grads):
        if self.weight_decay:
            self._buffer *= 1.0 - self.param_groups[0]["lr"] * self.weight_decay
        self.optimizer.step(grads)


def make_optimizer(name, params, lr, weight_decay=0.0, backend="auto", flat=None):
    """The fastoptim optimizer for a name of OPTIMIZER_LABELS (``momentum_w`` needs ``flat``)."""
    if name == "sgd":
        return fastoptim.SGD(params, lr=lr, weight_decay=weight_decay, backend=backend)
    if name == "momentum":
        return fastoptim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, backend=backend)
    if name == "adam":
        return fastoptim.Adam(params, lr=lr, weight_decay=weight_decay, backend=backend)
    if name == "adamw":
        return fastoptim.AdamW(params, lr=lr, weight_decay=weight_decay, backend=backend)
    if name == "momentum_w":
        if flat is None:
            raise ValueError("momentum_w (SGDW) needs the FlatParams: pass flat=")
        return SGDW(flat, lr, 0.9, weight_decay, backend)
    raise ValueError(f"unknown optimizer {name!r}: expected one of "
                     f"{', '.join([*OPTIMIZER_LABELS, *EXTRA_LABELS])}")


def warmup_epochs(epochs):
    return max(1, epochs // 10)


def plateau_patience(epochs):
    """torch's default patience (10 epochs) scaled to the budget, as if it were 100 epochs."""
    return max(1, epochs // 10)


def make_scheduler(name, optimizer, epochs):
    """The scheduler for a name of SCHEDULES, stepped once per epoch (None for "constant")."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # SGDW: schedule the SGD inside
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


def build_model(spec, sizes=None):
    """A freshly initialized model for ``spec`` (seeded by ``spec.seed``)."""
    arch = tuple(sizes) if sizes is not None else tuple(spec.arch)
    if spec.model == "mlp":
        return MLP(arch, spec.seed)
    if spec.model == "mlp_bn":
        return MLP(arch, spec.seed, batch_norm=True)
    if spec.model == "cnn":
        return CNN1d(channels=arch, seed=spec.seed)
    raise ValueError(f"unknown model {spec.model!r}: expected one of {', '.join(MODELS)}")


def weight_mask(flat):
    """Boolean mask over ``flat.buffer``: True on weight matrices (``W*``), False on the rest."""
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


def train(spec, data, *, backend="auto", sizes=None, keep_params=False, track_grad_sq=False):
    """Train a fresh model (seeded by ``spec.seed``) as ``spec`` says; record per-epoch curves.

    The parameters live in one FlatParams buffer: the backward pass writes into
    ``model.grads`` and ``opt.step(model.grads)`` is one kernel call. The seed
    fixes both the initialization and the minibatch order, so runs that differ
    only in the optimizer see the same batches. A run whose loss stops being
    finite is marked ``diverged``; from then on its losses are NaN and its
    accuracy is chance (1 / n_classes).
    """
    model = build_model(spec, sizes)
    flat, grads = model.flat, model.grads
    opt = make_optimizer(spec.optimizer, flat.params, spec.lr, spec.weight_decay, backend, flat)
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
                total += model.loss_and_backward(data.X_train[idx], data.y_train[idx])
                if grad_sq is not None:
                    grad_sq += np.square(flat.grad_buffer, dtype=np.float64)
                opt.step(grads)
                result.steps += 1
            train_loss = total / batches
            val_loss, val_acc = model.evaluate(data.X_val, data.y_val)
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
        result.train_acc = (1.0 / data.n_classes if result.diverged
                            else model.evaluate(data.X_train, data.y_train)[1])
    mask = weight_mask(flat)
    result.weight_norm = float(np.linalg.norm(flat.buffer[mask].astype(np.float64)))
    if keep_params:
        result.params = flat.buffer.copy()
    if grad_sq is not None:
        result.grad_sq = grad_sq / max(1, result.steps)
    return result
