"""The Markdown report: setup, the verdicts (generated from the numbers), tables, figures."""
from __future__ import annotations

import math

import fastoptim

from .experiments import HEAT_LABELS
from .heatmap import RIDGE_MIN_DEPTH, RIDGE_MIN_SLOPE
from .training import (
    OPTIMIZER_LABELS,
    SCHEDULE_LABELS,
    WARMUP_START,
    plateau_patience,
    warmup_epochs,
)
from .verdicts import LOSS_TARGET, MIN_ACC_EFFECT, NOISE_SE, _fmt_epochs, pp

FIGURES_DIR = "figures"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _acc(mean, std):
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _fig(figures, no_figures, key, alt):
    return (f"![{alt}]({FIGURES_DIR}/{figures[key]})" if key in figures
            else f"*(figure not drawn: {no_figures})*")


def _verdict_lines(verdicts, start=1):
    return [f"{i}. **{v.claim}** — *{v.verdict}.* {v.evidence}\n" for i, v in enumerate(verdicts, start)]


def task_sections(task, data, budget, analysis, figures, no_figures):
    """Experiments 1-3 on one task."""
    fig = lambda key, alt: _fig(figures, no_figures, key, alt)  # noqa: E731
    L = []
    h = task.label
    L.append(f"## {h}: 1. SGD, SGD+momentum, Adam, AdamW\n")
    L.append(f"Each optimizer first ran at every lr of the grid ({budget.sweep_seeds} seed(s) each, "
             "seeds distinct from the main runs; AdamW with its default weight_decay=0.01); the "
             "best lr was then run with each seed. Constant lr.\n")
    L.append(fig("sweep", f"{h}: validation accuracy against learning rate") + "\n")
    sweep = analysis["sweep"]
    lr_keys = list(next(iter(sweep.values())))
    L.append(_table(["optimizer"] + [f"lr={k}" for k in lr_keys],
                    [[OPTIMIZER_LABELS[k]] + [f"{100 * v[lk]:.1f}" for lk in lr_keys]
                     for k, v in sweep.items()]) + "\n")
    L.append("*Final validation accuracy (%) by constant learning rate.*\n")
    L.append(fig("optimizers", f"{h}: training loss, validation loss and accuracy curves") + "\n")
    e = analysis["early_epoch"]
    L.append(_table(
        ["optimizer", "best lr", "val. acc. % (final)", f"val. acc. % (epoch {e})",
         f"epochs to loss ≤ {LOSS_TARGET}", "final train loss", "train acc. %", "final val. loss", "‖W‖"],
        [[OPTIMIZER_LABELS[k], f"{o['lr']:g}", _acc(o["acc_mean"], o["acc_std"]),
          f"{100 * o['acc_early_mean']:.2f}", _fmt_epochs(o["epochs_to_target"]),
          f"{o['train_loss']:.2g}", f"{100 * analysis['train_acc'][k]:.1f}", f"{o['val_loss']:.3f}",
          f"{o['weight_norm']:.1f}"]
         for k, o in analysis["optimizers"].items()]) + "\n")

    d = analysis["decay"]
    L.append(f"## {h}: 2. Adam's weight_decay (L2) vs AdamW (decoupled)\n")
    L.append(f"Both at lr={d['lr']:g}, the default of Adam and AdamW, so that the decay is the "
             "only setting that differs from the out-of-the-box one. "
             f"`Adam(lr={d['lr']:g}, weight_decay=wd)` adds `wd * w` to the gradient before "
             f"Adam's normalization; `AdamW(lr={d['lr']:g}, weight_decay=wd)` multiplies the "
             "weights by `1 - lr * wd` each step. Same lr, betas, seeds and batches; the run "
             f"without decay (validation accuracy {_acc(d['base_acc_mean'], d['base_acc_std'])}%, "
             f"‖W‖ = {d['base_weight_norm']:.1f}) is the reference for the fraction of the weight norm "
             "kept, split by quartile of each weight's root-mean-square gradient in that reference "
             f"run; weights whose gradient was always 0 there (the {d['n_zero_grad_weights']} "
             "weights of always-blank inputs, and those of hidden units that never "
             "activated) are left out of the quartiles.\n")
    L.append(fig("decay", f"{h}: accuracy, weight norm and per-quartile shrinkage against weight decay") + "\n")
    L.append(_table(
        ["method", "weight_decay", "val. acc. %", "‖W‖", "norm kept: small-grad quartile",
         "norm kept: large-grad quartile"],
        [["Adam (L2)" if t["method"] == "l2" else "AdamW", f"{t['wd']:g}",
          _acc(t["acc_mean"], t["acc_std"]), f"{t['weight_norm']:.2f}", f"{100 * t['kept_bottom']:.1f}%",
          f"{100 * t['kept_top']:.1f}%"] for t in sorted(d["table"], key=lambda t: (t["method"] != "l2", t["wd"]))])
        + "\n")

    L.append(f"## {h}: 3. Learning-rate schedules\n")
    ep = task.epochs
    L.append("Each schedule starts from the optimizer's best constant lr of experiment 1 and is "
             f"stepped once per epoch: StepLR divides it by 10 every {max(1, ep // 3)} "
             "epochs, ExponentialLR ends at 1% of it, CosineAnnealingLR anneals to 0 over the run, "
             f"CosineAnnealingWarmRestarts restarts every {max(1, ep // 4)} epochs, "
             "ReduceLROnPlateau divides it by 10 after "
             f"{plateau_patience(ep)} epoch(s) without a better validation loss, warm-up + "
             f"cosine is `SequentialLR([LinearLR(start_factor={WARMUP_START}, total_iters="
             f"{warmup_epochs(ep)}), CosineAnnealingLR(...)])` (the dotted line is "
             "`schedules.warmup_cosine`, its closed form), and the last one is a cosine planned "
             f"for {2 * ep} epochs but stopped after {ep}, as when the budget "
             "was guessed wrong.\n")
    L.append(fig("schedules_lr", f"{h}: learning-rate curves") + "\n")
    L.append(fig("schedules_loss", f"{h}: loss curves by schedule") + "\n")
    for opt_name, by_sched in analysis["schedules"].items():
        L.append(f"**{OPTIMIZER_LABELS[opt_name]}** (base lr "
                 f"{analysis['optimizers'][opt_name]['lr']:g}):\n")
        L.append(_table(["schedule", "val. acc. %", "final train loss", "final val. loss", "final lr"],
                        [[SCHEDULE_LABELS[s], _acc(v["acc_mean"], v["acc_std"]), f"{v['train_loss']:.2g}",
                          f"{v['val_loss']:.3f}", f"{v['final_lr']:.2g}"] for s, v in by_sched.items()])
                 + "\n")
    L.append(f"The schedule verdicts use the {OPTIMIZER_LABELS[analysis['verdicts_optimizer']]} runs.\n")
    return L


def build_report(ctx):
    """``ctx``: dict with meta, budget, tasks (list of (task, data, analysis, figures)),
    and, when mnist1d ran, heat, bn, cnn (analyses), cnn_task, extra_verdicts."""
    meta, budget = ctx["meta"], ctx["budget"]
    figures, no_figures = ctx["figures"], meta["no_figures"]
    L = ["# fastoptim demo: the optimizer lore, measured\n"]
    L.append(f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}); "
             f"wall time {meta['wall_s']:.0f} s with {meta['workers']} worker process(es), "
             f"{meta['runs']} training runs. fastoptim {fastoptim.__version__}, backend "
             f"`{meta['backend']}`.\n")
    if meta.get("quick"):
        L.append("> **`--quick` run:** a smoke test with a tiny budget. Its numbers are too few "
                 "and too short to support or refute anything; run without `--quick` to judge.\n")
    rows = []
    for task, data, an, _ in ctx["tasks"]:
        rows.append([task.label, data.name, f"{len(data.y_train)} / {len(data.y_val)}",
                     f"{task.model.upper()} {'-'.join(map(str, task.arch))}", an["n_params"],
                     f"{task.epochs} × {len(data.y_train) // task.batch_size} of {task.batch_size}"])
    if "cnn" in ctx:
        ct = ctx["cnn_task"]
        rows.append([ct.label, "the same mnist1d split", "", "1-D CNN, conv channels "
                     f"{'-'.join(map(str, ct.arch))} (kernel 5, stride 2, ReLU) + linear",
                     ctx["cnn"]["n_params"], f"{ct.epochs} epochs of batches of {ct.batch_size}"])
    L.append("**Setup.**\n")
    L.append(_table(["task", "data", "train / validation", "model", "parameters", "epochs × steps"],
                    rows) + "\n")
    L.append("Every model keeps its float32 parameters in one `FlatParams` buffer (one kernel call "
             "per `opt.step`); softmax cross-entropy; forward and backward in plain NumPy. The seed "
             "fixes initialization and batch order, so runs with the same seed differ only in "
             f"the optimizer. Means are over {budget.seeds} seeds unless said otherwise (± is the "
             "standard deviation).\n")
    L.append("**How the verdicts are decided.** Every sentence below is generated from the "
             f"measured numbers. Accuracy differences count only beyond max({pp(MIN_ACC_EFFECT)}, "
             f"{NOISE_SE:g} standard errors of the difference); other thresholds are stated with "
             "each verdict. *Borne out*: the measurement supports the claim; *not borne out*: it "
             "does not show the claimed effect; *contradicted*: it shows the opposite; *not tested "
             "here*: this demo cannot test it.\n")

    L.append("## Verdicts at a glance\n")
    claims = {}
    for task, _, an, _ in ctx["tasks"]:
        for v in an["verdicts"]:
            claims.setdefault(v.claim, {})[task.label] = v.verdict
    for v in ctx.get("extra_verdicts", []):
        claims.setdefault(v.claim, {})["mnist1d (heatmap, CNN, batch norm)"] = v.verdict
    cols = [t.label for t, *_ in ctx["tasks"]] + (["mnist1d (heatmap, CNN, batch norm)"]
                                                   if ctx.get("extra_verdicts") else [])
    L.append(_table(["claim"] + cols, [[c] + [by.get(k, "") for k in cols] for c, by in claims.items()])
             + "\n")

    if "heat" in ctx:
        heat = ctx["heat"]
        L.append("## The weight-decay heatmap (after Loshchilov & Hutter 2019, Fig. 2)\n")
        hl = budget.heat_lrs
        L.append(f"The mnist1d MLP, trained {ctx['tasks'][1][0].epochs} epochs with a cosine "
                 "annealing of the lr, for every cell of a grid of "
                 f"{len(hl['adam'])} learning rates × {len(budget.heat_decays)} weight decays and "
                 f"{budget.heat_seeds} seeds (seeds distinct from the other experiments): Adam with L2 "
                 "(`Adam(weight_decay=wd)`) against AdamW, and SGD+momentum 0.9 with L2 "
                 "(`SGD(momentum=0.9, weight_decay=wd)`) against SGDW. `fastoptim.SGD`, like "
                 "`torch.optim.SGD`, has no decoupled decay, so the demo's SGDW multiplies the flat "
                 "buffer by `1 - lr * weight_decay` (lr as scheduled) before each `SGD.step`, as "
                 "AdamW does before its Adam step. The decoupled methods are gridded in L&H's "
                 "parameterization: the per-step decay `lam`, torch's `weight_decay = lam / lr`. The "
                 "decay of every method multiplies every parameter (one param group).\n")
        L.append(_fig(figures, no_figures, "heatmap", "validation error heatmaps over lr and weight decay")
                 + "\n")
        L.append("**The ridge.** For each lr row, the best decay is located between grid points "
                 "(a parabola through the best cell and its neighbours in log10 decay); rows whose "
                 "best decay is at an edge of the grid, or whose error varies by less than "
                 f"{pp(RIDGE_MIN_DEPTH)} over the decays, are censored. A line through the located "
                 "rows in log-log space gives the slope d log10(best decay) / d log10(lr): 0 when "
                 "the best decay does not move with the lr, -1 when it moves as 1/lr. Its standard "
                 "error is the larger of the fit's and a bootstrap over the seeds. A slope counts "
                 f"only beyond max({RIDGE_MIN_SLOPE}, {NOISE_SE:g} SE).\n")
        L.append(_table(["method", "decay axis", "ridge slope ± SE", "slope in torch's weight_decay",
                         "rows located", "best cell (heatmap seeds)"],
                        [[m["label"], "lam (per step)" if m["decoupled"] else "L2 factor",
                          (f"{m['slope']:+.2f} ± {m['slope_se']:.2f}" if math.isfinite(m["slope"])
                           else "not located"),
                          f"{m['slope_torch']:+.2f}" if math.isfinite(m["slope_torch"]) else "",
                          f"{len(m['ridge'])} of {len(m['lrs'])}",
                          f"lr={heat['confirm'][k]['lr']:g}, decay={heat['confirm'][k]['decay']:g}: "
                          f"{100 * heat['confirm'][k]['heat_acc']:.1f}%"]
                         for k, m in heat["methods"].items()]) + "\n")
        L.append("**Does regularization decide here?** The best cell of each method and the best "
                 "lr without any decay, rerun on fresh seeds:\n")
        conf = heat["confirm"]
        L.append(_table(["setting", "lr", "decay", "val. acc. %", "train acc. %"],
                        [[HEAT_LABELS[k] if k in HEAT_LABELS else f"{OPTIMIZER_LABELS[k[5:]]}, no decay", f"{c['lr']:g}",
                          f"{c['decay']:g}", _acc(c["acc_mean"], c["acc_std"]),
                          f"{100 * c['train_acc_mean']:.1f}"] for k, c in conf.items()]) + "\n")
        L += _verdict_lines(heat["verdicts"])

    if "cnn" in ctx:
        cnn = ctx["cnn"]
        L.append("## A CNN: SGD vs Adam, and StepLR\n")
        L.append("The 1-D CNN on the mnist1d split. SGD+momentum and Adam without weight decay, each "
                 f"first swept over lrs ({budget.sweep_seeds} seed(s)), then at its best lr; "
                 "SGD+momentum also with StepLR and a cosine from the same lr.\n")
        L.append(_table(["optimizer"] + [f"lr={k}" for k in next(iter(cnn["sweep"].values()))],
                        [[OPTIMIZER_LABELS[n]] + [f"{100 * a:.1f}" for a in row.values()]
                         for n, row in cnn["sweep"].items()]) + "\n")
        L.append("*CNN lr sweep: final validation accuracy (%) by constant lr.*\n")
        L.append(_fig(figures, no_figures, "cnn", "CNN training loss and validation accuracy") + "\n")
        L.append(_table(["optimizer", "lr", "schedule", "val. acc. %", "train acc. %"],
                        [[OPTIMIZER_LABELS[t["optimizer"]], f"{cnn['best_lr'][t['optimizer']]:g}",
                          SCHEDULE_LABELS[t["schedule"]], _acc(t["acc_mean"], t["acc_std"]),
                          f"{100 * t['train_acc_mean']:.1f}"] for t in cnn["table"]]) + "\n")
        L += _verdict_lines(cnn["verdicts"])

    if "bn" in ctx:
        bn = ctx["bn"]
        L.append("## Batch normalization and weight decay\n")
        L.append("The mnist1d MLP with and without a NumPy batch norm (torch's BatchNorm1d: batch "
                 "statistics in training, running statistics for validation, learnable scale and "
                 "shift) between each hidden layer and its ReLU; SGD+momentum 0.9 with L2, "
                 f"lr={bn['lr']:g} and a cosine. Each model's decay is the best of "
                 f"{', '.join(f'{w:g}' for w in budget.bn_decays)} on {budget.sweep_seeds} separate "
                 "sweep seed(s).\n")
        L.append(_table(["batch norm", "weight_decay", "val. acc. %", "train acc. %", "‖W‖"],
                        [["yes" if t["batch_norm"] else "no", f"{t['weight_decay']:g}",
                          _acc(t["acc_mean"], t["acc_std"]), f"{100 * t['train_acc_mean']:.1f}",
                          f"{t['weight_norm']:.1f}"] for t in bn["table"]]) + "\n")
        L += _verdict_lines(bn["verdicts"])

    for task, data, an, figs in ctx["tasks"]:
        L.append(f"## {task.label}: verdicts of experiments 1-3\n")
        L += _verdict_lines(an["verdicts"])
    for task, data, an, figs in ctx["tasks"]:
        L += task_sections(task, data, budget, an, figs, no_figures)

    L.append("## Reproduce\n")
    L.append("```\npip install \"fastoptim[examples]\"\nfastoptim demo --out demo_out      "
             "# or: python -m fastoptim.demo\n```\n")
    L.append("Options: `--seeds N`, `--epochs N` (digits task), `--jobs N` (worker processes), "
             "`--backend numba|c|numpy`, `--no-mnist1d`, `--quick`. The numbers are also in "
             "`demo_results.json`.\n")
    return "\n".join(L)
