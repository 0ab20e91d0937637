"""``fastoptim demo`` / ``python -m fastoptim.demo``: arguments, the two phases of runs, the outputs."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from dataclasses import asdict, replace

import numpy as np

import fastoptim

from . import analysis as A
from . import experiments as E
from .figures import make_cnn_figure, make_figures, make_heatmap
from .report import FIGURES_DIR, build_report
from .runner import run_jobs
from .training import build_model
from .verdicts import verdict_step_vs_cosine

DEFAULT_OUT = "demo_out"
REPORT_NAME = "demo_report.md"
RESULTS_NAME = "demo_results.json"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fastoptim demo",
        description="Train small NumPy models (MLPs, a 1-D CNN) with fastoptim's optimizers and "
                    "schedulers and write a report that tests the usual optimizer advice against "
                    "the measurements.")
    p.add_argument("--quick", action="store_true", help="tiny budget (seconds): a smoke test only")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/)")
    p.add_argument("--seeds", type=int, help=f"seeds per setting (default {E.FULL.seeds}; quick {E.QUICK.seeds})")
    p.add_argument("--epochs", type=int,
                   help=f"epochs per run on the digits (default {E.FULL.epochs}; quick {E.QUICK.epochs})")
    p.add_argument("--jobs", type=int, help="worker processes, one thread each (default: the CPU "
                   "count, at most 2; 1 = in this process)")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "c", "numpy"),
                   help="fastoptim's CPU kernels (default auto: the fastest available)")
    p.add_argument("--dataset", default="auto", choices=("auto", "digits", "synthetic"),
                   help="the digits task: digits needs scikit-learn; auto falls back to generated data")
    p.add_argument("--no-mnist1d", action="store_true",
                   help="skip the mnist1d experiments (heatmap, CNN, batch norm)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--runs-cache", metavar="PATH",
                   help="save every run's results to PATH (a pickle), or, if PATH exists, load them "
                        "from it instead of training: redraws the report and figures of the same "
                        "settings without retraining")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    for name, least in (("seeds", 1), ("epochs", 2), ("jobs", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name} must be at least {least}")
    return args


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                                 else float(o) if isinstance(o, (np.floating, np.integer)) else str(o),
                                 allow_nan=True))


def _shown(argv):
    """The arguments as the report shows them: without --runs-cache, which changes no number."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--runs-cache":
            skip = True
        elif not a.startswith("--runs-cache="):
            out.append(a)
    return out


def _mnist1d_available():
    try:
        import mnist1d.data  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None):
    """Run the demo; ``argv`` are the arguments after ``fastoptim demo``. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    budget = E.QUICK if args.quick else E.FULL
    if args.seeds or args.epochs:
        budget = replace(budget, **{k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs)) if v})
    workers = args.jobs or (1 if args.quick else max(1, min(2, os.cpu_count() or 1)))
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))  # noqa: E731
    t0 = time.perf_counter()
    try:
        backend = fastoptim.SGD([np.zeros(1, np.float32)], lr=0.1, backend=args.backend).backend
    except RuntimeError as exc:  # e.g. the C kernels were not compiled in this installation
        print(f"fastoptim demo: {exc}", file=sys.stderr)
        return 2
    from .data import load_dataset
    digits = load_dataset(args.dataset)
    source = "synthetic" if digits.name.startswith("generated") else "digits"
    mnist1d = not args.no_mnist1d and _mnist1d_available()
    skipped = "" if mnist1d or args.no_mnist1d else (
        'the mnist1d experiments were skipped: pip install "fastoptim[examples]" for the mnist1d package')
    if skipped:
        say(f"note: {skipped}")
    tasks = E.tasks_for(budget, source, mnist1d)
    from .runner import get_data
    datas = [get_data(t.data) for t in tasks]
    say(f"backend {backend}; {workers} worker process(es); tasks: "
        + "; ".join(f"{t.label} ({d.name})" for t, d in zip(tasks, datas)))

    plan = E.Plan(backend)
    key = {"budget": asdict(budget), "source": source, "mnist1d": mnist1d, "backend": backend}
    if args.runs_cache and os.path.exists(args.runs_cache):
        with open(args.runs_cache, "rb") as f:
            cached = pickle.load(f)
        if cached["key"] != key:
            print(f"fastoptim demo: {args.runs_cache} holds runs of other settings", file=sys.stderr)
            return 2
        plan.results, train_s = cached["results"], cached["train_s"]
        say(f"loaded {len(plan.results)} runs from {args.runs_cache}")
    else:
        E.plan_phase1(plan, budget, tasks, mnist1d)
        plan.collect(run_jobs(plan.jobs, workers, "phase 1/2 (sweeps, decay grids, heatmap)",
                              args.quiet))
        E.plan_phase2(plan, budget, tasks, mnist1d)
        plan.collect(run_jobs(plan.jobs, workers,
                              "phase 2/2 (best settings, schedules, CNN, batch norm)", args.quiet))
        train_s = time.perf_counter() - t0
        if args.runs_cache:
            with open(args.runs_cache, "wb") as f:
                pickle.dump({"key": key, "results": plan.results, "train_s": train_s}, f)
    n_runs = len(plan.results)

    ctx = {"budget": budget, "tasks": [], "figures": {}}
    for t, d in zip(tasks, datas):
        exp1, exp2, exp3 = E.task_experiments(plan, budget, t)
        an = A.analyze_task(t, d, budget, exp1, exp2, exp3)
        an["n_params"] = int(build_model(t.spec("adam", 1e-3)).flat.buffer.size)
        ctx["tasks"].append([t, d, an, {}, (exp1, exp2, exp3)])
    extra = []
    if mnist1d:
        ctx["heat"] = A.analyze_heatmap(plan, budget)
        ctx["cnn"] = A.analyze_cnn(plan, budget)
        ctx["cnn_task"] = E.cnn_task(budget)
        ctx["cnn"]["n_params"] = int(build_model(ctx["cnn_task"].spec("adam", 1e-3)).flat.buffer.size)
        mlp_sched = ctx["tasks"][1][2]["sched_acc"]
        ctx["cnn"]["verdicts"].append(verdict_step_vs_cosine(mlp_sched["step"], mlp_sched["cosine"],
                                                             ctx["cnn"]["cnn_sched"]))
        ctx["bn"] = A.analyze_batch_norm(plan, budget)
        extra = ctx["heat"]["verdicts"] + ctx["cnn"]["verdicts"] + ctx["bn"]["verdicts"]
    ctx["extra_verdicts"] = extra

    os.makedirs(args.out, exist_ok=True)
    no_figures = "--no-plots" if args.no_plots else ""
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            no_figures = 'matplotlib is not installed; pip install "fastoptim[examples]"'
    fig_dir = os.path.join(args.out, FIGURES_DIR)
    if not no_figures:
        say("figures")
        for entry in ctx["tasks"]:
            t, d, an, _, (exp1, exp2, exp3) = entry
            entry[3] = make_figures(fig_dir, t.epochs, exp1, exp2, exp3, an,
                                    prefix="" if t.key == "digits" else t.key + "_")
        if mnist1d:
            ctx["figures"]["heatmap"] = make_heatmap(fig_dir, ctx["heat"])
            labels = {("momentum", "constant"): "SGD+momentum", ("adam", "constant"): "Adam",
                      ("momentum", "step"): "SGD+momentum, StepLR",
                      ("momentum", "cosine"): "SGD+momentum, cosine"}
            ctx["figures"]["cnn"] = make_cnn_figure(fig_dir, {
                lab: [plan.get("cnn", *k, s) for s in E.seeds(budget.seeds)] for k, lab in labels.items()})
    ctx["tasks"] = [(t, d, an, figs) for t, d, an, figs, _ in ctx["tasks"]]
    meta = {
        "command": " ".join(["fastoptim demo", *_shown(argv)]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"Python {platform.python_version()}, NumPy {np.__version__}",
        "backend": backend, "quick": args.quick, "seeds": budget.seeds, "workers": workers,
        "runs": n_runs, "train_s": train_s, "no_figures": no_figures or "", "skipped": skipped,
    }
    meta["wall_s"] = max(train_s, time.perf_counter() - t0) if args.runs_cache else time.perf_counter() - t0
    ctx["meta"] = meta
    report = build_report(ctx)
    if skipped:
        report = report.replace("## Verdicts at a glance", f"> **Note:** {skipped}.\n\n## Verdicts at a glance", 1)
    with open(os.path.join(args.out, REPORT_NAME), "w") as f:
        f.write(report)
    out = {"meta": meta, "budget": asdict(budget),
           "tasks": {t.key: {k: v for k, v in an.items()} for t, d, an, _ in ctx["tasks"]}}
    for key in ("heat", "cnn", "bn"):
        if key in ctx:
            out[key] = ctx[key]
    with open(os.path.join(args.out, RESULTS_NAME), "w") as f:
        json.dump(_jsonable(out), f, indent=1)
    n_fig = len(ctx["figures"]) + sum(len(f) for *_, f in ctx["tasks"])
    say(f"wrote {os.path.join(args.out, REPORT_NAME)}" + (f" and {n_fig} figures" if n_fig else "")
        + f" in {meta['wall_s']:.0f} s")
    if not args.quiet:
        print("\nVerdicts:")
        for t, _, an, _ in ctx["tasks"]:
            for v in an["verdicts"]:
                print(f"  [{t.label}] [{v.verdict}] {v.claim}")
        for v in extra:
            print(f"  [mnist1d] [{v.verdict}] {v.claim}")
    return 0
