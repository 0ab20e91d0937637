"""A small multilayer perceptron in plain NumPy, trained with fastoptim.

The whole training loop in one file. The model is the demo's
:class:`fastoptim.demo.models.MLP` (one model for the example and ``fastoptim
demo``): forward and backward passes written by hand in NumPy
(tests/demo/test_models.py checks the backward pass against finite
differences), its parameters in one ``fastoptim.FlatParams`` buffer so that
``opt.step(model.grads)`` is a single kernel call. Around it: the optimizer, a
torch-style learning-rate scheduler and the loop::

    python examples/mlp.py                                   # AdamW, warm-up + cosine
    python examples/mlp.py --optimizer momentum --lr 0.05 --schedule step
    python examples/mlp.py --optimizer adam --weight-decay 1e-4 --epochs 40

The data are scikit-learn's bundled 8x8 digits (``pip install
"fastoptim[examples]"``; a generated stand-in is used without scikit-learn).
For the side-by-side comparison of optimizers and schedules run
``fastoptim demo`` (or ``python examples/compare.py``).

The same loop in torch, for comparison::

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)      | opt = fastoptim.AdamW(model.params, lr=1e-3)
    loss = loss_fn(model(x), y); opt.zero_grad()              | loss = model.loss_and_backward(x, y)
    loss.backward(); opt.step()                               | opt.step(model.grads)
    sched.step()                                              | sched.step()
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import fastoptim
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastoptim
from fastoptim import lr_scheduler
from fastoptim.demo import load_dataset
from fastoptim.demo.models import MLP  # W1, b1, ... as views of one FlatParams buffer


def make_optimizer(name, params, lr, weight_decay=0.0):
    if name == "sgd":
        return fastoptim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return fastoptim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return fastoptim.Adam(params, lr=lr, weight_decay=weight_decay)  # L2 in the gradient
    if name == "adamw":
        return fastoptim.AdamW(params, lr=lr, weight_decay=weight_decay)  # decoupled decay
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(name, opt, epochs):
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if name == "warmup_cosine":
        warmup = max(1, epochs // 10)
        if warmup >= epochs:  # too short to warm up
            return lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return lr_scheduler.SequentialLR(opt, [
            lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warmup),
            lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warmup),
        ], milestones=[warmup])
    raise ValueError(f"unknown schedule {name!r}")


DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3, "adamw": 1e-3}


def train(optimizer="adamw", lr=None, epochs=20, batch_size=32, weight_decay=None,
          schedule="warmup_cosine", seed=0, data=None, verbose=False):
    """Train an MLP on the digits; returns ``(model, history)`` with per-epoch
    ``train_loss`` (mean minibatch loss), ``val_acc`` and ``lr``."""
    data = data if data is not None else load_dataset()
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if weight_decay is None:
        weight_decay = 1e-2 if optimizer == "adamw" else 0.0  # torch's defaults
    model = MLP(seed=seed)
    opt = make_optimizer(optimizer, model.params, lr, weight_decay)
    sched = make_scheduler(schedule, opt, epochs)
    rng = np.random.default_rng(seed)
    history = {"train_loss": [], "val_acc": [], "lr": []}
    n = len(data.y_train)
    for epoch in range(epochs):
        history["lr"].append(opt.param_groups[0]["lr"])
        order = rng.permutation(n)
        losses = []
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            losses.append(model.loss_and_backward(data.X_train[idx], data.y_train[idx]))
            opt.step(model.grads)  # one fused kernel call for all six arrays
        if sched is not None:
            sched.step()
        history["train_loss"].append(float(np.mean(losses)))
        history["val_acc"].append(model.accuracy(data.X_val, data.y_val))
        if verbose:
            print(f"epoch {epoch + 1:3d}  lr {history['lr'][-1]:.2e}  "
                  f"train loss {history['train_loss'][-1]:.4f}  val acc {history['val_acc'][-1]:.2%}")
    return model, history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizer", default="adamw", choices=sorted(DEFAULT_LR))
    p.add_argument("--lr", type=float, help="default: 0.1 sgd, 0.05 momentum, 1e-3 adam/adamw")
    p.add_argument("--weight-decay", type=float, help="default: 1e-2 for adamw, else 0")
    p.add_argument("--schedule", default="warmup_cosine", choices=["none", "step", "cosine", "warmup_cosine"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_dataset()
    print(f"{data.name}: {len(data.y_train)} training, {len(data.y_val)} validation images")
    train(args.optimizer, args.lr, args.epochs, args.batch_size, args.weight_decay, args.schedule,
          args.seed, data, verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
