#!/usr/bin/env python
"""Record golden learning-rate sequences with ``torch.optim.lr_scheduler``.

Writes

* ``tests/data/lr_golden_cases.json`` -- the case specifications (optimizer
  param groups, scheduler type and arguments, how it is stepped) and the named
  lambdas they use, and
* ``tests/data/lr_golden.npz`` -- per case ``<name>/lr`` (steps + 1, groups):
  every group's lr after the construction and after each step,
  ``<name>/momentum``: SGD momentum or Adam beta1 of every group,
  ``<name>/last_lr``: ``scheduler.get_last_lr()``, and, for
  ReduceLROnPlateau cases, ``<name>/metrics``: the metric fed at each step.

``tests/test_lr_scheduler.py`` replays every case with ``fastoptim.lr_scheduler``
(without torch).  Lambdas are referenced by name (``{"$lambda": name}``) and
defined once in ``LAMBDA_SOURCES`` as source text; the test keeps its own copy
of that registry and checks it against the one stored in the JSON.

Usage (needs torch; the fixtures were made with torch 2.13.0)::

    python tools/gen_lr_golden.py [--out tests/data]
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEPS = 300

# name -> lambda source; evaluated with ``eval`` (namespace: math)
LAMBDA_SOURCES: dict[str, str] = {
    "exp95": "lambda e: 0.95 ** e",
    "inv_step30": "lambda e: 1.0 / (1 + e // 30)",
    "warmup10": "lambda e: min(1.0, (e + 1) / 10)",
    "const95": "lambda e: 0.95",
    "halve_every10": "lambda e: 0.5 if e % 10 == 0 else 1.0",
    "slow_decay": "lambda e: 1.0 - 0.001 * (e % 7)",
    "cyc_half": "lambda x: 0.5 ** (x - 1)",
    "iter_decay": "lambda x: 1 / (1 + 0.01 * x)",
    "cos_wave": "lambda e: 0.55 + 0.45 * math.cos(e / 17.0)",
}
LAMBDAS = {name: eval(src, {"math": math}) for name, src in LAMBDA_SOURCES.items()}


def L(name: str) -> dict[str, str]:
    assert name in LAMBDA_SOURCES, name
    return {"$lambda": name}


# ----------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------

SGD1 = {"type": "SGD", "groups": [{"lr": 0.1, "momentum": 0.9}]}
SGD2 = {"type": "SGD", "groups": [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.5}]}
ADAM1 = {"type": "Adam", "groups": [{"lr": 1e-3, "betas": [0.9, 0.999]}]}
ADAM2 = {"type": "Adam", "groups": [{"lr": 1e-3, "betas": [0.9, 0.999]}, {"lr": 3e-4, "betas": [0.8, 0.99]}]}


def opt_with(base: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``base`` whose groups are updated with ``extra`` (one dict per group)."""
    groups = [dict(g) for g in base["groups"]]
    for g, e in zip(groups, extra):
        g.update(e)
    return {"type": base["type"], "groups": groups}


def S(type_: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": type_, "kwargs": kwargs}


def seq(schedulers: list[dict[str, Any]], milestones: list[int]) -> dict[str, Any]:
    return {"type": "SequentialLR", "schedulers": schedulers, "kwargs": {"milestones": milestones}}


def chain(schedulers: list[dict[str, Any]], pass_optimizer: bool = False) -> dict[str, Any]:
    return {"type": "ChainedScheduler", "schedulers": schedulers, "kwargs": {}, "pass_optimizer": pass_optimizer}


# ----------------------------------------------------------------------------
# metric sequences for ReduceLROnPlateau
# ----------------------------------------------------------------------------


def make_metrics() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240613)
    t = np.arange(STEPS, dtype=np.float64)
    loss = 1.0 / (1.0 + 0.02 * np.minimum(t, 150.0)) + 0.01 * rng.standard_normal(STEPS)
    acc = 0.9 * (1.0 - np.exp(-t / 40.0)) + 0.01 * rng.standard_normal(STEPS)
    loglik = -2.0 + 1.5 * (1.0 - np.exp(-t / 60.0)) + 0.02 * rng.standard_normal(STEPS)
    walk = 5.0 + np.cumsum(0.05 * rng.standard_normal(STEPS))
    # exact repeats (ties are "not better") in the last stretch
    flat = loss.copy()
    flat[200:] = np.round(flat[200:], 2)
    return {"loss": loss, "acc": acc, "loglik": loglik, "walk": walk, "flat_loss": flat}


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------


def case(name: str, optimizer: dict[str, Any], scheduler: dict[str, Any], drive: str = "step", **extra: Any) -> dict[str, Any]:
    c = {"name": name, "optimizer": optimizer, "scheduler": scheduler, "drive": drive, "steps": STEPS}
    c.update(extra)
    return c


def build_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    add = cases.append

    # LambdaLR
    add(case("LambdaLR_exp95", SGD1, S("LambdaLR", lr_lambda=L("exp95"))))
    add(case("LambdaLR_pergroup", SGD2, S("LambdaLR", lr_lambda=[L("inv_step30"), L("exp95")])))
    add(case("LambdaLR_warmup_epoch", ADAM2, S("LambdaLR", lr_lambda=L("warmup10")), drive="epoch"))
    add(case("LambdaLR_coswave", SGD2, S("LambdaLR", lr_lambda=[L("cos_wave"), L("warmup10")])))

    # MultiplicativeLR
    add(case("MultiplicativeLR_const95", SGD1, S("MultiplicativeLR", lr_lambda=L("const95"))))
    add(case("MultiplicativeLR_pergroup", SGD2, S("MultiplicativeLR", lr_lambda=[L("halve_every10"), L("slow_decay")])))
    add(case("MultiplicativeLR_epoch", ADAM1, S("MultiplicativeLR", lr_lambda=L("slow_decay")), drive="epoch"))

    # StepLR
    add(case("StepLR_30", SGD1, S("StepLR", step_size=30, gamma=0.1)))
    add(case("StepLR_pergroup", SGD2, S("StepLR", step_size=7, gamma=0.8)))
    add(case("StepLR_epoch", SGD2, S("StepLR", step_size=25, gamma=0.5), drive="epoch"))
    add(
        case(
            "StepLR_resume",
            opt_with(SGD2, {"lr": 0.05, "initial_lr": 0.1}, {"lr": 0.01, "initial_lr": 0.02}),
            S("StepLR", step_size=5, gamma=0.5, last_epoch=9),
        )
    )

    # MultiStepLR
    add(case("MultiStepLR_basic", SGD1, S("MultiStepLR", milestones=[30, 80, 150], gamma=0.1)))
    add(case("MultiStepLR_dup_unsorted", SGD2, S("MultiStepLR", milestones=[200, 50, 50, 120], gamma=0.5)))
    add(case("MultiStepLR_epoch", ADAM2, S("MultiStepLR", milestones=[100, 30, 30], gamma=0.3), drive="epoch"))

    # ConstantLR
    add(case("ConstantLR_default", SGD1, S("ConstantLR")))
    add(case("ConstantLR_pergroup", SGD2, S("ConstantLR", factor=0.5, total_iters=50)))
    add(case("ConstantLR_epoch", SGD2, S("ConstantLR", factor=0.25, total_iters=40), drive="epoch"))
    add(case("ConstantLR_factor1", ADAM1, S("ConstantLR", factor=1.0, total_iters=3)))

    # LinearLR
    add(case("LinearLR_default", SGD1, S("LinearLR")))
    add(case("LinearLR_warmup", SGD2, S("LinearLR", start_factor=0.01, end_factor=1.0, total_iters=100)))
    add(case("LinearLR_decay_to_zero", ADAM1, S("LinearLR", start_factor=1.0, end_factor=0.0, total_iters=300)))
    add(case("LinearLR_epoch", SGD2, S("LinearLR", start_factor=0.1, end_factor=0.5, total_iters=120), drive="epoch"))

    # ExponentialLR
    add(case("ExponentialLR_099", SGD1, S("ExponentialLR", gamma=0.99)))
    add(case("ExponentialLR_pergroup", SGD2, S("ExponentialLR", gamma=0.95)))
    add(case("ExponentialLR_epoch", SGD2, S("ExponentialLR", gamma=0.97), drive="epoch"))
    add(
        case(
            "ExponentialLR_resume",
            opt_with(SGD1, {"lr": 0.05, "initial_lr": 0.2}),
            S("ExponentialLR", gamma=0.98, last_epoch=40),
        )
    )

    # PolynomialLR
    add(case("PolynomialLR_default", SGD1, S("PolynomialLR")))
    add(case("PolynomialLR_pow2", SGD2, S("PolynomialLR", total_iters=250, power=2.0)))
    add(case("PolynomialLR_sqrt_epoch", SGD2, S("PolynomialLR", total_iters=200, power=0.5), drive="epoch"))

    # CosineAnnealingLR
    add(case("CosineAnnealingLR_T100", SGD1, S("CosineAnnealingLR", T_max=100)))
    add(case("CosineAnnealingLR_T50_etamin", SGD2, S("CosineAnnealingLR", T_max=50, eta_min=0.001)))
    add(case("CosineAnnealingLR_T300_etamin", ADAM2, S("CosineAnnealingLR", T_max=300, eta_min=1e-4)))
    add(case("CosineAnnealingLR_epoch", SGD2, S("CosineAnnealingLR", T_max=80, eta_min=0.005), drive="epoch"))
    add(case("CosineAnnealingLR_float_Tmax", SGD1, S("CosineAnnealingLR", T_max=37.5, eta_min=0.01)))
    add(
        case(
            "CosineAnnealingLR_resume",
            opt_with(SGD1, {"lr": 0.07, "initial_lr": 0.1}),
            S("CosineAnnealingLR", T_max=120, eta_min=0.001, last_epoch=20),
        )
    )

    # CosineAnnealingWarmRestarts
    add(case("CAWR_T10", SGD1, S("CosineAnnealingWarmRestarts", T_0=10)))
    add(case("CAWR_T5_mult2_etamin", SGD2, S("CosineAnnealingWarmRestarts", T_0=5, T_mult=2, eta_min=0.01)))
    add(
        case(
            "CAWR_quarter_epochs_mult2",
            SGD2,
            S("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.001),
            drive="epochs",
            epochs=[(i + 1) / 4 for i in range(STEPS)],
        )
    )
    add(
        case(
            "CAWR_frac_epochs_mult2",
            ADAM1,
            S("CosineAnnealingWarmRestarts", T_0=2, T_mult=2),
            drive="epochs",
            epochs=[0.37 * (i + 1) for i in range(STEPS)],
        )
    )
    add(
        case(
            "CAWR_interleaved_mult2",
            SGD1,
            S("CosineAnnealingWarmRestarts", T_0=4, T_mult=2, eta_min=0.002),
            drive="epochs",
            epochs=[None if i % 3 == 0 else 0.5 * (i + 1) for i in range(STEPS)],
        )
    )
    add(
        case(
            "CAWR_frac_epochs_mult1",
            SGD2,
            S("CosineAnnealingWarmRestarts", T_0=7, T_mult=1, eta_min=0.0005),
            drive="epochs",
            epochs=[0.3 * (i + 1) for i in range(STEPS)],
        )
    )
    add(case("CAWR_mult3_log_quirk", SGD1, S("CosineAnnealingWarmRestarts", T_0=1, T_mult=3), drive="epoch"))

    # ReduceLROnPlateau
    add(case("Plateau_min_rel", SGD1, S("ReduceLROnPlateau", patience=5, factor=0.5), drive="metrics", metrics="loss"))
    add(
        case(
            "Plateau_min_abs_cooldown",
            SGD2,
            S("ReduceLROnPlateau", mode="min", factor=0.3, patience=2, threshold=0.01, threshold_mode="abs", cooldown=3, min_lr=1e-4),
            drive="metrics",
            metrics="loss",
        )
    )
    add(
        case(
            "Plateau_max_rel_minlr_list",
            SGD2,
            S("ReduceLROnPlateau", mode="max", factor=0.5, patience=3, cooldown=2, min_lr=[0.01, 0.001]),
            drive="metrics",
            metrics="acc",
        )
    )
    add(
        case(
            "Plateau_max_abs_eps",
            ADAM2,
            S("ReduceLROnPlateau", mode="max", factor=0.5, patience=1, threshold=0.005, threshold_mode="abs", eps=1e-4),
            drive="metrics",
            metrics="loglik",
        )
    )
    add(
        case(
            "Plateau_min_patience0",
            SGD1,
            S("ReduceLROnPlateau", patience=0, factor=0.9, threshold=0.0),
            drive="metrics",
            metrics="walk",
        )
    )
    add(
        case(
            "Plateau_max_rel_negative",
            SGD1,
            S("ReduceLROnPlateau", mode="max", threshold=0.05, patience=4, factor=0.7),
            drive="metrics",
            metrics="loglik",
        )
    )
    add(
        case(
            "Plateau_min_rel_ties",
            SGD2,
            S("ReduceLROnPlateau", patience=3, factor=0.5, threshold=0.0, min_lr=[0.0, 0.005], cooldown=1),
            drive="metrics",
            metrics="flat_loss",
        )
    )

    # CyclicLR
    add(case("CyclicLR_triangular_sgd", SGD1, S("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=20)))
    add(
        case(
            "CyclicLR_triangular2_pergroup",
            SGD2,
            S(
                "CyclicLR",
                base_lr=[0.01, 0.001],
                max_lr=[0.1, 0.05],
                step_size_up=15,
                step_size_down=30,
                mode="triangular2",
                base_momentum=[0.8, 0.7],
                max_momentum=[0.9, 0.95],
            ),
        )
    )
    add(
        case(
            "CyclicLR_exp_range_adam",
            ADAM1,
            S("CyclicLR", base_lr=1e-4, max_lr=1e-2, step_size_up=25, mode="exp_range", gamma=0.995, base_momentum=0.85, max_momentum=0.95),
        )
    )
    add(
        case(
            "CyclicLR_exp_range_pergroup_adam",
            ADAM2,
            S("CyclicLR", base_lr=[1e-4, 5e-5], max_lr=[1e-2, 2e-3], step_size_up=9, step_size_down=4, mode="exp_range", gamma=0.99),
        )
    )
    add(
        case(
            "CyclicLR_scalefn_cycle",
            SGD1,
            S("CyclicLR", base_lr=0.005, max_lr=0.05, step_size_up=10, step_size_down=5, scale_fn=L("cyc_half"), scale_mode="cycle"),
        )
    )
    add(
        case(
            "CyclicLR_scalefn_iter_nomomentum",
            ADAM2,
            S("CyclicLR", base_lr=[1e-4, 1e-5], max_lr=1e-3, step_size_up=12, scale_fn=L("iter_decay"), scale_mode="iterations", cycle_momentum=False),
        )
    )
    add(case("CyclicLR_epoch", SGD2, S("CyclicLR", base_lr=0.02, max_lr=0.2, step_size_up=8), drive="epoch"))
    add(
        case(
            "CyclicLR_resume",
            opt_with(SGD1, {"lr": 0.05, "initial_lr": 0.01}),
            S("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=20, mode="triangular2", last_epoch=50),
        )
    )

    # OneCycleLR
    add(case("OneCycleLR_default_sgd", SGD1, S("OneCycleLR", max_lr=0.1, total_steps=STEPS)))
    add(
        case(
            "OneCycleLR_linear_adam_pergroup",
            ADAM2,
            S(
                "OneCycleLR",
                max_lr=[0.01, 0.003],
                total_steps=STEPS,
                anneal_strategy="linear",
                pct_start=0.25,
                base_momentum=[0.85, 0.8],
                max_momentum=[0.95, 0.99],
            ),
        )
    )
    add(
        case(
            "OneCycleLR_three_phase_cos",
            SGD2,
            S("OneCycleLR", max_lr=0.5, total_steps=STEPS, three_phase=True, div_factor=10.0, final_div_factor=100.0),
        )
    )
    add(
        case(
            "OneCycleLR_three_phase_linear_epochs",
            SGD1,
            S("OneCycleLR", max_lr=0.2, epochs=30, steps_per_epoch=10, three_phase=True, anneal_strategy="linear", cycle_momentum=False),
        )
    )
    add(
        case(
            "OneCycleLR_adam_pct45",
            ADAM1,
            S("OneCycleLR", max_lr=3e-3, total_steps=STEPS, pct_start=0.45, div_factor=5.0, final_div_factor=1e3),
        )
    )
    add(
        case(
            "OneCycleLR_resume",
            opt_with(
                SGD1,
                {"lr": 0.05, "initial_lr": 0.004, "max_lr": 0.1, "min_lr": 4e-7, "max_momentum": 0.95, "base_momentum": 0.85},
            ),
            S("OneCycleLR", max_lr=0.1, total_steps=400, last_epoch=99),
        )
    )

    # SequentialLR
    add(
        case(
            "SequentialLR_warmup_cosine",
            SGD1,
            seq([S("LinearLR", start_factor=0.1, total_iters=20), S("CosineAnnealingLR", T_max=280)], [20]),
        )
    )
    add(
        case(
            "SequentialLR_three",
            SGD2,
            seq(
                [S("ConstantLR", factor=0.5, total_iters=10), S("ExponentialLR", gamma=0.99), S("StepLR", step_size=30, gamma=0.5)],
                [10, 100],
            ),
        )
    )
    add(
        case(
            "SequentialLR_lambda_multistep",
            ADAM2,
            seq([S("LambdaLR", lr_lambda=L("warmup10")), S("MultiStepLR", milestones=[50, 100], gamma=0.3)], [10]),
        )
    )
    add(
        case(
            "SequentialLR_cawr_poly",
            SGD1,
            seq([S("CosineAnnealingWarmRestarts", T_0=10, T_mult=2), S("PolynomialLR", total_iters=100, power=2.0)], [150]),
        )
    )
    add(
        case(
            "SequentialLR_chained_first",
            SGD2,
            seq(
                [chain([S("ExponentialLR", gamma=0.99), S("MultiStepLR", milestones=[30], gamma=0.5)]), S("CosineAnnealingLR", T_max=100, eta_min=0.001)],
                [60],
            ),
        )
    )

    # ChainedScheduler
    add(case("ChainedScheduler_const_exp", SGD1, chain([S("ConstantLR", factor=0.1, total_iters=5), S("ExponentialLR", gamma=0.99)])))
    add(
        case(
            "ChainedScheduler_three_pergroup",
            SGD2,
            chain(
                [
                    S("LinearLR", start_factor=0.1, end_factor=1.0, total_iters=10),
                    S("CosineAnnealingLR", T_max=100),
                    S("MultiStepLR", milestones=[60, 200], gamma=0.5),
                ],
                pass_optimizer=True,
            ),
        )
    )
    add(
        case(
            "ChainedScheduler_cyclic_exp_adam",
            ADAM1,
            chain([S("CyclicLR", base_lr=1e-4, max_lr=1e-3, step_size_up=10), S("ExponentialLR", gamma=0.995)]),
        )
    )
    return cases


# ----------------------------------------------------------------------------
# running with torch
# ----------------------------------------------------------------------------


def resolve(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$lambda"}:
        return LAMBDAS[value["$lambda"]]
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def make_torch_optimizer(spec: dict[str, Any]) -> torch.optim.Optimizer:
    groups = []
    for g in spec["groups"]:
        d = dict(g)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        d["params"] = [torch.nn.Parameter(torch.zeros(3))]
        groups.append(d)
    if spec["type"] == "SGD":
        return torch.optim.SGD(groups, lr=spec["groups"][0]["lr"])
    if spec["type"] == "Adam":
        return torch.optim.Adam(groups, lr=spec["groups"][0]["lr"])
    raise ValueError(spec["type"])


def build_scheduler(module: Any, optimizer: Any, spec: dict[str, Any]) -> Any:
    cls = getattr(module, spec["type"])
    kwargs = {k: resolve(v) for k, v in spec.get("kwargs", {}).items()}
    if spec["type"] == "SequentialLR":
        subs = [build_scheduler(module, optimizer, s) for s in spec["schedulers"]]
        return cls(optimizer, subs, **kwargs)
    if spec["type"] == "ChainedScheduler":
        subs = [build_scheduler(module, optimizer, s) for s in spec["schedulers"]]
        if spec.get("pass_optimizer"):
            kwargs["optimizer"] = optimizer
        return cls(subs, **kwargs)
    return cls(optimizer, **kwargs)


def momentum_of(group: dict[str, Any]) -> float:
    return float(group["betas"][0]) if "betas" in group else float(group["momentum"])


def run_case(c: dict[str, Any], metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opt = make_torch_optimizer(c["optimizer"])
    sched = build_scheduler(torch.optim.lr_scheduler, opt, c["scheduler"])
    n = c["steps"]
    lrs, moms, last = [], [], []

    def record() -> None:
        lrs.append([float(g["lr"]) for g in opt.param_groups])
        moms.append([momentum_of(g) for g in opt.param_groups])
        last.append([float(v) for v in sched.get_last_lr()])

    record()
    m = metrics[c["metrics"]] if c["drive"] == "metrics" else None
    for i in range(n):
        opt.step()
        if c["drive"] == "step":
            sched.step()
        elif c["drive"] == "epoch":
            sched.step(i + 1)
        elif c["drive"] == "epochs":
            e = c["epochs"][i]
            sched.step() if e is None else sched.step(e)
        elif c["drive"] == "metrics":
            sched.step(float(m[i]))
        else:
            raise ValueError(c["drive"])
        record()
    out = {
        "lr": np.asarray(lrs, dtype=np.float64),
        "momentum": np.asarray(moms, dtype=np.float64),
        "last_lr": np.asarray(last, dtype=np.float64),
    }
    if m is not None:
        out["metrics"] = np.asarray(m, dtype=np.float64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "data"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    warnings.simplefilter("ignore", UserWarning)  # step(epoch) deprecation
    torch.set_default_dtype(torch.float64)
    metrics = make_metrics()
    cases = build_cases()
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"

    arrays: dict[str, np.ndarray] = {}
    for c in cases:
        res = run_case(c, metrics)
        for k, v in res.items():
            arrays[f"{c['name']}/{k}"] = v
        lr = res["lr"]
        print(f"{c['name']:40s} groups={lr.shape[1]} distinct_lrs={len(np.unique(lr[:, 0])):4d} final={lr[-1].tolist()}")

    np.savez_compressed(out / "lr_golden.npz", **arrays)
    meta = {
        "torch_version": torch.__version__,
        "steps": STEPS,
        "lambdas": LAMBDA_SOURCES,
        "cases": cases,
    }
    (out / "lr_golden_cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    total_steps = sum(c["steps"] for c in cases)
    print(f"wrote {len(cases)} cases, {total_steps} steps to {out}")


if __name__ == "__main__":
    main()
