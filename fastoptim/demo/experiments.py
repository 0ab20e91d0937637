"""The experiments: which runs each one needs, in two phases, and the numbers drawn from them.

Phase 1 holds every run that needs nothing else: the lr sweeps, the Adam-L2 vs
AdamW decay grid, the lr x weight-decay heatmap, the batch-norm decay sweep.
Phase 2 holds the runs at the settings phase 1 picked: each optimizer at its
best lr, the schedules, the confirmation of the heatmap's best cells on fresh
seeds, the batch-norm 2x2, the CNN's optimizers and schedules. All of a phase's
runs go to the worker processes at once (see runner.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .models import DEFAULT_SIZES
from .runner import Job
from .training import (
    OPTIMIZER_LABELS,
    SCHEDULES,
    RunSpec,
    build_model,
    weight_mask,
    zero_input_mask,
)

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
ADAMW_DEFAULT_WD = 1e-2  # AdamW runs outside the decay experiments use torch's default decay
DECAY_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MNIST1D_SIZES = (40, 128, 128, 10)
CNN_CHANNELS = (16, 32, 32)
HEAT_METHODS = {  # method -> (optimizer, family of its lr grid, decoupled?)
    "adam": ("adam", "adam", False), "adamw": ("adamw", "adam", True),
    "momentum": ("momentum", "momentum", False), "momentum_w": ("momentum_w", "momentum", True)}
HEAT_LABELS = {"adam": "Adam + L2", "adamw": "AdamW (decoupled)",
               "momentum": "SGD+momentum + L2", "momentum_w": "SGDW (momentum, decoupled)"}


@dataclass(frozen=True)
class Task:
    """A data set and a model: the experiments 1-3 run on each task."""
    key: str
    label: str
    data: tuple            # the runner's data key
    model: str = "mlp"
    arch: tuple = DEFAULT_SIZES
    epochs: int = 40
    batch_size: int = 32

    def spec(self, optimizer, lr, weight_decay=0.0, schedule="constant", seed=0):
        return RunSpec(optimizer, lr, weight_decay, schedule, seed, self.epochs, self.batch_size,
                       self.model, self.arch)


@dataclass
class Budget:
    epochs: int                  # digits task
    seeds: int
    sweep_seeds: int
    lr_grid: tuple = LR_GRID
    decay_grid: tuple = DECAY_GRID
    schedules: tuple = SCHEDULES
    schedule_optimizers: tuple = ("momentum", "adamw")
    mnist1d_epochs: int = 40
    mnist1d_train: int = 1000
    heat_lrs: dict = field(default_factory=lambda: {
        "adam": tuple(1e-3 * 2.0 ** k for k in range(6)),
        "momentum": tuple(1e-2 * 2.0 ** k for k in range(6))})
    heat_decays: tuple = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    heat_seeds: int = 3
    cnn_epochs: int = 30
    cnn_lrs: dict = field(default_factory=lambda: {
        "momentum": (0.01, 0.03, 0.1, 0.3), "adam": (3e-4, 1e-3, 3e-3, 1e-2)})
    bn_lr: float = 0.04
    bn_decays: tuple = (1e-3, 3e-3, 1e-2, 3e-2)


FULL = Budget(epochs=40, seeds=8, sweep_seeds=2)
QUICK = Budget(epochs=3, seeds=2, sweep_seeds=1, lr_grid=(1e-3, 1e-2, 1e-1),
               decay_grid=(0.0, 1e-2, 1.0), schedule_optimizers=("momentum",),
               mnist1d_epochs=2, mnist1d_train=200,
               heat_lrs={"adam": (1e-3, 3e-3, 1e-2), "momentum": (1e-2, 3e-2, 1e-1)},
               heat_decays=(1e-4, 1e-3, 1e-2), heat_seeds=2, cnn_epochs=2,
               cnn_lrs={"momentum": (0.03, 0.1), "adam": (1e-3, 3e-3)}, bn_decays=(1e-2,))


def tasks_for(budget, digits_source, with_mnist1d=True):
    tasks = [Task("digits", "digits MLP", ("digits", digits_source), "mlp", DEFAULT_SIZES,
                  budget.epochs, 32)]
    if with_mnist1d:
        tasks.append(Task("mnist1d", "mnist1d MLP", ("mnist1d", budget.mnist1d_train), "mlp",
                          MNIST1D_SIZES, budget.mnist1d_epochs, 32))
    return tasks


def cnn_task(budget):
    return Task("mnist1d_cnn", "mnist1d CNN", ("mnist1d", budget.mnist1d_train), "cnn",
                CNN_CHANNELS, budget.cnn_epochs, 32)


def bn_task(budget, batch_norm):
    return Task("mnist1d_bn" if batch_norm else "mnist1d", "mnist1d MLP",
                ("mnist1d", budget.mnist1d_train), "mlp_bn" if batch_norm else "mlp", MNIST1D_SIZES,
                budget.mnist1d_epochs, 32)


def _default_wd(name):
    return ADAMW_DEFAULT_WD if name == "adamw" else 0.0


class Plan:
    """Jobs under tags; ``results[tag]`` is filled in by :meth:`collect`."""

    def __init__(self, backend):
        self.backend, self.tags, self.jobs, self.results = backend, [], [], {}

    def add(self, tag, task, spec, **kw):
        self.tags.append(tag)
        self.jobs.append(Job(spec, task.data, self.backend, **kw))

    def collect(self, results):
        self.results.update(zip(self.tags, results))
        self.tags, self.jobs = [], []

    def get(self, *tag):
        return self.results[tag]


def seeds(n, offset=0):
    return range(offset, offset + n)


# -- phase 1 ------------------------------------------------------------------------------
def plan_phase1(plan, budget, tasks, mnist1d):
    for t in tasks:
        for name in OPTIMIZER_LABELS:
            for lr in budget.lr_grid:
                for s in seeds(budget.sweep_seeds, 1000):
                    plan.add((t.key, "sweep", name, lr, s), t, t.spec(name, lr, _default_wd(name), seed=s))
        lr = 1e-3  # experiment 2: Adam and AdamW at their default lr
        for s in seeds(budget.seeds):
            plan.add((t.key, "decay_base", s), t, t.spec("adam", lr, 0.0, seed=s),
                     keep_params=True, track_grad_sq=True)
        for method, opt in (("l2", "adam"), ("adamw", "adamw")):
            for wd in budget.decay_grid:
                if wd > 0:
                    for s in seeds(budget.seeds):
                        plan.add((t.key, "decay", method, wd, s), t, t.spec(opt, lr, wd, seed=s),
                                 keep_params=True)
    if not mnist1d:
        return
    t = tasks[1]
    for method, (opt, family, decoupled) in HEAT_METHODS.items():
        for lr in budget.heat_lrs[family]:
            for lam in budget.heat_decays:
                wd = lam / lr if decoupled else lam
                for s in seeds(budget.heat_seeds, 2000):
                    plan.add(("heat", method, lr, lam, s), t, t.spec(opt, lr, wd, "cosine", s))
    for family in ("adam", "momentum"):
        for lr in budget.heat_lrs[family]:
            for s in seeds(budget.heat_seeds, 2000):
                plan.add(("heat0", family, lr, s), t, t.spec(family, lr, 0.0, "cosine", s))
    for bn in (False, True):
        bt = bn_task(budget, bn)
        for wd in (0.0, *budget.bn_decays):
            for s in seeds(budget.sweep_seeds, 1000):
                plan.add(("bn_sweep", bn, wd, s), bt, bt.spec("momentum", budget.bn_lr, wd, "cosine", s))
    ct = cnn_task(budget)
    for name, lrs_ in budget.cnn_lrs.items():
        for lr in lrs_:
            for s in seeds(budget.sweep_seeds, 1000):
                plan.add(("cnn_sweep", name, lr, s), ct, ct.spec(name, lr, 0.0, seed=s))


def _best(acc_by_key, tie=None):
    return max(acc_by_key, key=lambda k: (acc_by_key[k], tie(k) if tie else 0))


def sweep_means(plan, budget, task):
    return {name: {lr: float(np.mean([plan.get(task.key, "sweep", name, lr, s).final_acc
                                      for s in seeds(budget.sweep_seeds, 1000)]))
                   for lr in budget.lr_grid} for name in OPTIMIZER_LABELS}


def best_lrs(sweep):
    # the most accurate lr; a tie goes to the lr nearest torch's default 1e-3
    return {name: _best(acc, lambda lr: -abs(math.log10(lr) + 3)) for name, acc in sweep.items()}


def heat_grid(plan, budget, method):
    """Validation error, shape (seeds, lrs, decays), of one heatmap method."""
    family = HEAT_METHODS[method][1]
    return np.array([[[1 - plan.get("heat", method, lr, lam, s).final_acc
                       for lam in budget.heat_decays] for lr in budget.heat_lrs[family]]
                     for s in seeds(budget.heat_seeds, 2000)])


def heat_best(plan, budget):
    """The best cell of each method, and the best undecayed lr of each family (heatmap seeds)."""
    best = {}
    for method, (_, family, _) in HEAT_METHODS.items():
        err = heat_grid(plan, budget, method).mean(axis=0)
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        best[method] = (budget.heat_lrs[family][i], budget.heat_decays[j])
    for family in ("adam", "momentum"):
        acc = {lr: np.mean([plan.get("heat0", family, lr, s).final_acc
                            for s in seeds(budget.heat_seeds, 2000)]) for lr in budget.heat_lrs[family]}
        best["none_" + family] = (_best(acc), 0.0)
    return best


def bn_best(plan, budget):
    out = {}
    for bn in (False, True):
        acc = {wd: np.mean([plan.get("bn_sweep", bn, wd, s).final_acc
                            for s in seeds(budget.sweep_seeds, 1000)]) for wd in budget.bn_decays}
        out[bn] = _best(acc)
    return out


def cnn_best(plan, budget):
    return {name: _best({lr: np.mean([plan.get("cnn_sweep", name, lr, s).final_acc
                                      for s in seeds(budget.sweep_seeds, 1000)]) for lr in lrs_})
            for name, lrs_ in budget.cnn_lrs.items()}


# -- phase 2 ------------------------------------------------------------------------------
def plan_phase2(plan, budget, tasks, mnist1d):
    for t in tasks:
        best = best_lrs(sweep_means(plan, budget, t))
        for name in OPTIMIZER_LABELS:
            for s in seeds(budget.seeds):
                plan.add((t.key, "main", name, s), t, t.spec(name, best[name], _default_wd(name), seed=s))
        for name in budget.schedule_optimizers:
            for sched in budget.schedules:
                if sched == "constant":
                    continue  # the main runs
                for s in seeds(budget.seeds):
                    plan.add((t.key, "sched", name, sched, s), t,
                             t.spec(name, best[name], _default_wd(name), sched, s))
    if not mnist1d:
        return
    t = tasks[1]
    for key, (lr, lam) in heat_best(plan, budget).items():
        method = key[5:] if key.startswith("none_") else key
        opt, _, decoupled = HEAT_METHODS[method]
        wd = lam / lr if decoupled else lam
        for s in seeds(budget.seeds):
            plan.add(("confirm", key, s), t, t.spec(opt, lr, wd, "cosine", s))
    bwd = bn_best(plan, budget)
    for bn in (False, True):
        bt = bn_task(budget, bn)
        for wd in (0.0, bwd[bn]):
            for s in seeds(budget.seeds):
                plan.add(("bn", bn, wd > 0, s), bt, bt.spec("momentum", budget.bn_lr, wd, "cosine", s))
    ct = cnn_task(budget)
    cbest = cnn_best(plan, budget)
    for name, lr in cbest.items():
        for s in seeds(budget.seeds):
            plan.add(("cnn", name, "constant", s), ct, ct.spec(name, lr, 0.0, seed=s))
    for sched in ("step", "cosine"):
        for s in seeds(budget.seeds):
            plan.add(("cnn", "momentum", sched, s), ct, ct.spec("momentum", cbest["momentum"], 0.0,
                                                                 sched, s))


# -- gathering the runs of experiments 1-3 for a task (the shape analysis.py reads) ---------
def task_experiments(plan, budget, task):
    sweep = sweep_means(plan, budget, task)
    best = best_lrs(sweep)
    main = {name: [plan.get(task.key, "main", name, s) for s in seeds(budget.seeds)]
            for name in OPTIMIZER_LABELS}
    exp1 = {"sweep": sweep, "best_lr": best, "runs": main}
    decays = [wd for wd in budget.decay_grid if wd > 0]
    exp2 = {"lr": 1e-3, "base": [plan.get(task.key, "decay_base", s) for s in seeds(budget.seeds)],
            "runs": {m: {wd: [plan.get(task.key, "decay", m, wd, s) for s in seeds(budget.seeds)]
                         for wd in decays} for m in ("l2", "adamw")},
            "decays": decays}
    runs = {}
    for name in budget.schedule_optimizers:
        runs[name] = {sched: (main[name] if sched == "constant" else
                              [plan.get(task.key, "sched", name, sched, s) for s in seeds(budget.seeds)])
                      for sched in budget.schedules}
    exp3 = {"runs": runs, "lr": {o: best[o] for o in budget.schedule_optimizers}}
    return exp1, exp2, exp3


def task_layout(task):
    """The FlatParams layout of the task's model: (weight mask, model)."""
    model = build_model(task.spec("adam", 1e-3))
    return weight_mask(model.flat), model.flat


__all__ = ["Budget", "FULL", "QUICK", "Task", "Plan", "plan_phase1", "plan_phase2",
           "task_experiments", "tasks_for", "cnn_task", "bn_task", "heat_grid", "heat_best",
           "bn_best", "cnn_best", "seeds", "zero_input_mask", "HEAT_METHODS", "HEAT_LABELS",
           "LR_GRID", "DECAY_GRID", "ADAMW_DEFAULT_WD", "task_layout"]
