"""First-step latency: import fastoptim, construct an optimizer, take one step.

Each measurement is a fresh interpreter with an empty (cold) or a filled (warm)
``NUMBA_CACHE_DIR``; a baseline row times two trivial cached Numba kernels alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import fastoptim

from .machine import check_threads
from .rendering import progress_bar
from .specs import DEFAULT_OPTIMIZERS, LATENCY_GOAL_S, OPTIMIZERS, check_names, format_time

_LATENCY_CHILD = r"""
import json, sys, time
import numpy as np
cls_name, kwargs = sys.argv[1], json.loads(sys.argv[2])
# a weight and a bias: the first step compiles both the parallel and the serial kernel
weight, bias = np.full(1 << 20, 0.5, np.float32), np.full(1024, 0.5, np.float32)
grads = [np.full_like(weight, 1e-2), np.full_like(bias, 1e-2)]
t0 = time.perf_counter()
import fastoptim
t1 = time.perf_counter()
opt = getattr(fastoptim, cls_name)([weight, bias], backend="numba", **kwargs)
t2 = time.perf_counter()
opt.step(grads)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "first_step_s": t3 - t2,
                  "total_s": t3 - t0, "scipy_imported": "scipy" in sys.modules}))
"""


# The same first step with nothing but Numba: two trivial cached kernels (one prange,
# one serial) in a module of their own. What Numba itself costs in this environment.
_BASELINE_MODULE = r"""
import numba

@numba.njit(cache=True, parallel=True, error_model="numpy", nogil=True)
def parallel_step(p, g):
    for i in numba.prange(p.shape[0]):
        p[i] = p[i] - 0.01 * g[i]

@numba.njit(cache=True, error_model="numpy", nogil=True)
def serial_step(p, g):
    for i in range(p.shape[0]):
        p[i] = p[i] - 0.01 * g[i]
"""

_BASELINE_CHILD = r"""
import json, sys, time
import numpy as np
weight, bias = np.full(1 << 20, 0.5, np.float32), np.full(1024, 0.5, np.float32)
grads = [np.full_like(weight, 1e-2), np.full_like(bias, 1e-2)]
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import fastoptim_latency_baseline as kernels
t1 = time.perf_counter()
kernels.parallel_step(weight, grads[0])
kernels.serial_step(bias, grads[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": 0.0, "first_step_s": t2 - t1,
                  "total_s": t2 - t0, "scipy_imported": "scipy" in sys.modules}))
"""


def _child_env(extra):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastoptim.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _latency_child(args, env):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"exit code {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def run_latency(optimizers=DEFAULT_OPTIMIZERS, threads=None, console=None, progress=True,
                baseline=True):
    """First-step latency (import + construct + first step, numba backend) per optimizer.

    Each optimizer runs in a fresh subprocess with ``NUMBA_CACHE_DIR`` set to a new
    empty directory (cold: everything compiles), then again with the same directory
    (warm: the compiled kernels load from the cache). With ``baseline``, a first row
    does the same for two trivial cached Numba kernels and nothing else: what Numba
    alone costs here (``"baseline": True``, no goal).
    """
    check_names("optimizer", list(optimizers), list(OPTIMIZERS))
    threads = check_threads(threads)
    jobs = [(None, "Numba alone (baseline)")] if baseline else []
    jobs += [(name, OPTIMIZERS[name].label) for name in optimizers]
    rows = []
    with progress_bar(console if progress else None) as bar:
        task = bar.add_task("first-step latency", total=2 * len(jobs)) if bar else None
        for name, label in jobs:
            row = {"optimizer": name, "label": label, "baseline": name is None,
                   "backend": "numba", "elements": [1 << 20, 1024]}
            with tempfile.TemporaryDirectory(prefix="fastoptim-numba-cache-") as cache:
                env = _child_env({"NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": str(threads)})
                if name is None:
                    with open(os.path.join(cache, "fastoptim_latency_baseline.py"), "w") as f:
                        f.write(_BASELINE_MODULE)
                    args = [_BASELINE_CHILD, cache]
                else:
                    spec = OPTIMIZERS[name]
                    args = [_LATENCY_CHILD, spec.cls, json.dumps(spec.kwargs)]
                for which in ("cold", "warm"):
                    if bar:
                        bar.update(task, description=f"first-step latency: {label}, {which}")
                    try:
                        row[which] = _latency_child(args, env)
                        if name is not None:
                            row[f"{which}_goal_s"] = LATENCY_GOAL_S[which]
                            row[f"{which}_meets_goal"] = (row[which]["total_s"]
                                                          < LATENCY_GOAL_S[which])
                    except Exception as exc:
                        row[which] = {"error": f"{type(exc).__name__}: {exc}"}
                    if bar:
                        bar.advance(task)
            rows.append(row)
    if console is not None:
        console.print(latency_table(rows))
    return rows


def latency_table(rows):
    from rich.table import Table

    caption = ("cold: fresh NUMBA_CACHE_DIR, every kernel compiles; warm: second process, same "
               "cache. Params: 1M + 1K elements (parallel and serial kernels). "
               f"Goal: < {LATENCY_GOAL_S['cold']:g} s cold, < {LATENCY_GOAL_S['warm']:g} s warm. "
               "Numba alone: two trivial cached kernels, the same first step with nothing else")
    if any(row.get("warm", {}).get("scipy_imported") for row in rows):
        caption += ("; SciPy is installed: Numba's first compile or cache load imports "
                    "scipy.linalg (its BLAS check), about 0.2 s of every figure here")
    table = Table(
        title="First-step latency: import fastoptim + construct + first step (numba backend)",
        title_justify="left", caption=caption, caption_justify="left")
    for name in ("optimizer", "cold total", "import", "construct", "first step", "warm total",
                 "goal"):
        table.add_column(name, justify="left" if name == "optimizer" else "right")
    for row in rows:
        cold, warm = row.get("cold", {}), row.get("warm", {})
        if "error" in cold or "error" in warm:
            table.add_row(row["label"],
                          f"[red]error[/red] {cold.get('error') or warm.get('error')}",
                          "", "", "", "", "")
            continue
        if row.get("baseline"):
            verdict = "[dim]reference[/dim]"
        elif row["cold_meets_goal"] and row["warm_meets_goal"]:
            verdict = "[green]met[/green]"
        else:
            verdict = "[red]missed[/red]"
        table.add_row(row["label"], format_time(cold["total_s"]), format_time(cold["import_s"]),
                      "-" if row.get("baseline") else format_time(cold["construct_s"]),
                      format_time(cold["first_step_s"]), format_time(warm["total_s"]), verdict,
                      style="dim" if row.get("baseline") else "")
    return table
