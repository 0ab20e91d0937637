"""Analysis: the runs turned into the tables and verdicts of the report (all plain numbers)."""
from __future__ import annotations

import math

import numpy as np

from . import verdicts as V
from .experiments import (
    HEAT_LABELS,
    HEAT_METHODS,
    bn_best,
    cnn_best,
    heat_best,
    heat_grid,
    seeds,
    task_layout,
)
from .heatmap import ridge_slope, verdict_ridge
from .training import OPTIMIZER_LABELS, zero_input_mask


def _acc(rs):
    return [r.final_acc for r in rs]


def analyze_task(task, data, budget, exp1, exp2, exp3):
    """Turn the runs into the tables and verdicts of the report (all plain numbers)."""
    out = {"verdicts": []}
    runs = exp1["runs"]
    early = max(1, budget.epochs // 4)
    acc = {k: [r.final_acc for r in rs] for k, rs in runs.items()}
    acc_early = {k: [r.val_acc[early - 1] for r in rs] for k, rs in runs.items()}
    ett = {k: [V.epochs_to_target(r.train_loss) for r in rs] for k, rs in runs.items()}
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
    out["verdicts"].append(V.verdict_adam_fast(ett["adam"], ett["momentum"], ett["sgd"]))
    out["verdicts"].append(V.verdict_adam_little_tuning(exp1["sweep"]))
    out["verdicts"].append(V.verdict_momentum_catches_up(
        acc_early["momentum"], acc_early["adam"], acc["momentum"], acc["adam"],
        f"epoch {early} of {budget.epochs}"))
    out["verdicts"].append(V.verdict_momentum_generalizes(acc["momentum"], acc["adam"]))

    # -- weight decay
    base = exp2["base"]
    mask, layout = task_layout(task)
    dead = (zero_input_mask(layout, data.X_train) if task.model == "mlp"
            else np.zeros(layout.buffer.size, bool))
    n_dead = int(dead.sum())
    decay_rows, table = [], []
    for wd in exp2["decays"]:
        row = {"wd": wd}
        for method in ("l2", "adamw"):
            rs = exp2["runs"][method][wd]
            kept = np.array([V.decay_by_quartile(r.params, b.params, np.sqrt(b.grad_sq), mask)
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
    out["verdicts"].append(V.verdict_l2_diluted(decay_rows))
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
    out["verdicts"].append(V.verdict_adamw_direct(kept_w, (1 - exp2["lr"] * wd_max) ** steps, kept_l2,
                                                wd_max, n_dead))
    best = {}
    for method in ("l2", "adamw"):
        wd_best = max(exp2["decays"], key=lambda wd: np.mean([r.final_acc for r in exp2["runs"][method][wd]]))
        best[method] = (wd_best, [r.final_acc for r in exp2["runs"][method][wd_best]])
    out["verdicts"].append(V.verdict_decoupled_better(best["adamw"][1], best["l2"][1],
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
    out["verdicts"].append(V.verdict_decay_helps(floss, facc))
    out["verdicts"].append(V.verdict_step_vs_cosine(facc["step"], facc["cosine"]))
    out["verdicts"].append(V.verdict_plateau_unpredictable(facc["plateau"], facc["cosine_2x"], facc["cosine"]))
    out["verdicts_optimizer"] = budget.schedule_optimizers[0]
    out["sched_acc"] = facc
    # -- does weight decay decide? (the decay grid of experiment 2, against its run without decay)
    cands = {(m, wd): _acc(exp2["runs"][m][wd]) for m in ("l2", "adamw") for wd in exp2["decays"]}
    (m, wd) = max(cands, key=lambda k: np.mean(cands[k]))
    label = f"{'Adam' if m == 'l2' else 'AdamW'}, weight_decay={wd:g}, lr={exp2['lr']:g}"
    out["verdicts"].append(V.verdict_regularization_decides(
        cands[(m, wd)], base_acc, label, f"Adam, lr={exp2['lr']:g}",
        "The decay is the best of the grid of experiment 2 on the same seeds, which favours it."))
    out["train_acc"] = {k: float(np.mean([r.train_acc for r in rs])) for k, rs in runs.items()}
    return out




def analyze_heatmap(plan, budget):
    """Ridges, their verdicts, and the best cells confirmed on fresh seeds."""
    out = {"methods": {}, "verdicts": []}
    fits = {}
    for method, (_, family, decoupled) in HEAT_METHODS.items():
        err = heat_grid(plan, budget, method)
        fit = ridge_slope(err, budget.heat_lrs[family], budget.heat_decays)
        fits[method] = fit
        out["methods"][method] = {
            "label": HEAT_LABELS[method], "decoupled": decoupled, "lrs": list(budget.heat_lrs[family]),
            "decays": list(budget.heat_decays), "err_mean": err.mean(axis=0).tolist(),
            "err_std": err.std(axis=0).tolist(), "slope": fit.slope, "slope_se": fit.se,
            "slope_torch": (fit.slope - 1) if decoupled else fit.slope, "intercept": fit.intercept,
            "ridge": fit.points, "censored": fit.censored}
    out["verdicts"].append(verdict_ridge("Adam", fits["adam"], fits["adamw"], "AdamW"))
    out["verdicts"].append(verdict_ridge("SGD+momentum", fits["momentum"], fits["momentum_w"], "SGDW"))
    best = heat_best(plan, budget)
    confirm = {}
    for key, (lr, lam) in best.items():
        accs = [plan.get("confirm", key, s).final_acc for s in seeds(budget.seeds)]
        tr = [plan.get("confirm", key, s).train_acc for s in seeds(budget.seeds)]
        heat_acc = (1 - out["methods"][key]["err_mean"][budget.heat_lrs[HEAT_METHODS[key][1]].index(lr)]
                    [budget.heat_decays.index(lam)]) if key in HEAT_METHODS else None
        confirm[key] = {"lr": lr, "decay": lam, "acc": accs, "acc_mean": float(np.mean(accs)),
                        "acc_std": float(np.std(accs)), "train_acc_mean": float(np.mean(tr)),
                        "heat_acc": heat_acc}
    out["confirm"] = confirm
    # the best regularized method and the best unregularized family, both chosen on the heatmap seeds
    reg = max(HEAT_METHODS, key=lambda m: confirm[m]["heat_acc"])
    none_acc = {f: np.mean([plan.get("heat0", f, best["none_" + f][0], s).final_acc
                            for s in seeds(budget.heat_seeds, 2000)]) for f in ("adam", "momentum")}
    unreg = "none_" + max(none_acc, key=none_acc.get)
    fam = OPTIMIZER_LABELS[unreg[5:]]
    c = confirm[reg]
    reg_label = (f"{HEAT_LABELS[reg]}, lr={c['lr']:g}, "
                 + (f"lam={c['decay']:g}" if HEAT_METHODS[reg][2] else f"weight_decay={c['decay']:g}"))
    out["regularization"] = {"reg": reg, "unreg": unreg}
    out["verdicts"].append(V.verdict_regularization_decides(
        c["acc"], confirm[unreg]["acc"], reg_label, f"{fam}, lr={confirm[unreg]['lr']:g}, no decay",
        f"Both settings were chosen as the best of the heatmap (on its {budget.heat_seeds} seeds) and "
        f"rerun on {budget.seeds} fresh seeds, so the choice does not favour either."))
    return out


def analyze_batch_norm(plan, budget):
    bwd = bn_best(plan, budget)
    acc, table = {}, []
    for bn in (False, True):
        for decayed in (False, True):
            rs = [plan.get("bn", bn, decayed, s) for s in seeds(budget.seeds)]
            key = ("bn" if bn else "plain", "wd" if decayed else 0)
            acc[key] = _acc(rs)
            table.append({"batch_norm": bn, "weight_decay": bwd[bn] if decayed else 0.0,
                          "acc_mean": float(np.mean(acc[key])), "acc_std": float(np.std(acc[key])),
                          "train_acc_mean": float(np.mean([r.train_acc for r in rs])),
                          "weight_norm": float(np.mean([r.weight_norm for r in rs]))})
    v = V.verdict_batch_norm(acc, bwd[True], bwd[False])
    return {"table": table, "lr": budget.bn_lr, "verdicts": [v]}


def analyze_cnn(plan, budget):
    best = cnn_best(plan, budget)
    acc = {(name, sched): _acc([plan.get("cnn", name, sched, s) for s in seeds(budget.seeds)])
           for name, sched in (("momentum", "constant"), ("adam", "constant"), ("momentum", "step"),
                               ("momentum", "cosine"))}
    train_acc = {k: float(np.mean([plan.get("cnn", *k, s).train_acc for s in seeds(budget.seeds)]))
                 for k in acc}
    sweep = {name: {f"{lr:g}": float(np.mean([plan.get("cnn_sweep", name, lr, s).final_acc
                                                for s in seeds(budget.sweep_seeds, 1000)]))
                    for lr in lrs_} for name, lrs_ in budget.cnn_lrs.items()}
    verdicts = [V.verdict_sgd_suits_cnns(acc[("momentum", "constant")], acc[("adam", "constant")],
                                         best["momentum"], best["adam"])]
    return {"best_lr": best, "sweep": sweep,
            "table": [{"optimizer": n, "schedule": s, "acc_mean": float(np.mean(a)),
                       "acc_std": float(np.std(a)), "train_acc_mean": train_acc[(n, s)]}
                      for (n, s), a in acc.items()],
            "cnn_sched": {"step": acc[("momentum", "step")], "cosine": acc[("momentum", "cosine")],
                          "constant": acc[("momentum", "constant")]},
            "verdicts": verdicts}
