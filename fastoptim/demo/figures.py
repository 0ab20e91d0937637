"""The figures (matplotlib, Agg backend, no display): per-task curves and sweeps, and the heatmap."""
from __future__ import annotations

import math
import os

import numpy as np

from fastoptim import schedules

from .training import OPTIMIZER_LABELS, SCHEDULE_LABELS, WARMUP_START, warmup_epochs
from .verdicts import LOSS_TARGET, TUNING_TOLERANCE, good_lrs, pp

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


def make_figures(fig_dir, epochs_n, exp1, exp2, exp3, analysis, prefix="", dpi=80):
    """Write the PNGs; returns {key: file name}. Needs matplotlib (Agg backend, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(fig_dir, exist_ok=True)
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7})
    epochs = np.arange(1, epochs_n + 1)
    names = task_figures(prefix)
    written = {}

    def save(fig, key):
        fig.tight_layout()
        fig.savefig(os.path.join(fig_dir, names[key]), dpi=dpi)
        plt.close(fig)
        written[key] = names[key]

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
    axes[2].set_ylim(max(100 * lo - 2, 0) if 100 * lo < 80 else 80, 100)
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
    opt0 = next(iter(exp3["runs"]))
    runs = exp3["runs"][opt0]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    cmap = plt.get_cmap("tab10")
    for i, (sched, rs) in enumerate(runs.items()):
        ax.step(epochs, rs[0].lr, where="post", color=cmap(i), label=SCHEDULE_LABELS[sched], lw=1.4)
    if "warmup_cosine" in runs:
        base_lr = exp3["lr"][opt0]
        w = warmup_epochs(epochs_n)
        closed = schedules.warmup_cosine(list(range(epochs_n)), base_lr, w, epochs_n,
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




HEATMAP = "weight_decay_heatmap.png"
CNN = "cnn.png"


def task_figures(prefix):
    return {k: prefix + v for k, v in FIGURES.items()}


def make_heatmap(fig_dir, heat, dpi=80):
    """L&H Fig. 2 style: validation error over lr x decay, L2 on the left, decoupled on the right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (("adam", "adamw"), ("momentum", "momentum_w"))
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.2))
    fig.subplots_adjust(hspace=0.45, wspace=0.3, top=0.88, right=0.78)
    errs = [100 * np.array(m["err_mean"]) for m in heat["methods"].values()]
    vmin = min(float(np.min(e)) for e in errs)
    vmax = min(max(float(np.max(e)) for e in errs), vmin + 40)
    for r, pair in enumerate(rows):
        for c, method in enumerate(pair):
            m = heat["methods"][method]
            ax = axes[r][c]
            err = 100 * np.array(m["err_mean"])
            im = ax.imshow(err, origin="lower", cmap="viridis",
                           vmin=vmin, vmax=vmax, aspect="auto")
            for i in range(err.shape[0]):
                for j in range(err.shape[1]):
                    ax.text(j, i, f"{err[i, j]:.1f}", ha="center", va="center", fontsize=6,
                            color="k" if err[i, j] > (vmin + vmax) / 2 else "w")
            lrs_, decays = m["lrs"], m["decays"]
            lx = np.log10(lrs_)
            dx = np.log10(decays)
            to_j = lambda d: (np.log10(d) - dx[0]) / (dx[1] - dx[0])  # noqa: E731
            to_i = lambda lr: (np.log10(lr) - lx[0]) / (lx[1] - lx[0])  # noqa: E731
            if m["ridge"]:
                ax.plot([to_j(d) for _, d in m["ridge"]], [to_i(lr) for lr, _ in m["ridge"]], "o",
                        mfc="none", mec="r", ms=9, mew=1.5)
            if math.isfinite(m["slope"]):
                fit_lr = np.array([lrs_[0], lrs_[-1]])
                fit_d = 10 ** (m["intercept"] + m["slope"] * np.log10(fit_lr))
                ax.plot(to_j(fit_d), to_i(fit_lr), "r-", lw=1.2)
            ax.set_xlim(-0.5, len(decays) - 0.5)
            ax.set_ylim(-0.5, len(lrs_) - 0.5)
            ax.set_xticks(range(len(decays)))
            ax.set_xticklabels([f"{d:g}" for d in decays], fontsize=6)
            ax.set_yticks(range(len(lrs_)))
            ax.set_yticklabels([f"{lr:g}" for lr in lrs_], fontsize=6)
            ax.set_xlabel("per-step decay lam (torch weight_decay = lam / lr)" if m["decoupled"]
                          else "L2 factor (torch weight_decay)")
            ax.set_ylabel("learning rate (start of the cosine)")
            slope = (f"ridge slope {m['slope']:+.2f} ± {m['slope_se']:.2f}"
                     if math.isfinite(m["slope"]) else "ridge not located")
            ax.set_title(f"{m['label']}\n{slope}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label="validation error % (mean over seeds)")
    fig.suptitle("Validation error % over learning rate x weight decay (after Loshchilov & Hutter "
                 "2019, Fig. 2)\nred circles: each lr's best decay; red line: the ridge fitted to them",
                 fontsize=9)
    os.makedirs(fig_dir, exist_ok=True)
    fig.savefig(os.path.join(fig_dir, HEATMAP), dpi=dpi)
    plt.close(fig)
    return HEATMAP


def make_cnn_figure(fig_dir, runs, dpi=80):
    """Validation accuracy curves of the CNN runs: {label: [RunResult, ...]}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    cmap = plt.get_cmap("tab10")
    for i, (label, rs) in enumerate(runs.items()):
        epochs = np.arange(1, len(rs[0].val_acc) + 1)
        _band(axes[0], epochs, _mean_curves(rs, "train_loss"), cmap(i), label)
        _band(axes[1], epochs, 100 * _mean_curves(rs, "val_acc"), cmap(i), label)
    axes[0].set_yscale("log")
    axes[0].set_title("CNN: training loss (log)")
    axes[1].set_title("CNN: validation accuracy %")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    os.makedirs(fig_dir, exist_ok=True)
    fig.savefig(os.path.join(fig_dir, CNN), dpi=dpi)
    plt.close(fig)
    return CNN


def _mean_curves(results, key):
    return np.array([getattr(r, key) for r in results], dtype=float)
