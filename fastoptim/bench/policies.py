"""``fastoptim bench --loop --policies``: the thread-policy alternatives side by side."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .loop import DEFAULT_MODELS

# The thread-policy alternatives, each in a fresh process (libgomp reads its variables
# once, when it loads): the loop's short form and the in-cache Adam kernels, so one
# table shows what each choice does to both sides.
POLICIES = (
    ("fastoptim default", {}, None),
    ("libgomp's default spin (GOMP_SPINCOUNT=300000)", {"GOMP_SPINCOUNT": "300000"}, None),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}, None),
    ("GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}, None),
    ("GOMP_SPINCOUNT=100000", {"GOMP_SPINCOUNT": "100000"}, None),
    ("Numba workqueue layer (its own pthread pool)", {"NUMBA_THREADING_LAYER": "workqueue"},
     None),
    ("serial dispatch (set_num_threads(1))", {}, 1),
)

_POLICY_CHILD = r"""
import json, sys
threads = json.loads(sys.argv[1])
import fastoptim
from fastoptim.bench import loop as training_loop, report, runner
if threads:
    fastoptim.set_num_threads(threads)
loop = training_loop.run(models=json.loads(sys.argv[2]), dtypes=["float32"], steps=10,
                         repeat=3, peers=False, inplace=False, console=None, progress=False)
result = runner.run(optimizers=["adam"], sizes=[256 * 1024, 1024 * 1024], many=None, repeat=5,
                    peers=False, latency=False, loop=False, in_cache=False, console=None,
                    progress=False)
kernels = {f"{e['case']}": {"of_floor": e["of_floor"], "floor_s": e["floor_s"]}
           for e in report.kernel_goals(result)}
print(json.dumps({"loop": loop["goals"], "kernels": kernels,
                  "threading_layer": fastoptim.thread_info()["numba_threading_layer"],
                  "spin_policy": fastoptim.thread_info()["spin_policy"]}))
"""


def run_policies(models=DEFAULT_MODELS, console=None) -> list:
    """Each thread-policy alternative in its own process: auto's loop against the
    reference and the in-cache Adam kernels against their floor."""
    rows = []
    for label, env_extra, threads in POLICIES:
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
        env.update(env_extra)
        if console is not None:
            console.print(f"[dim]policy: {label}[/dim]")
        proc = subprocess.run([sys.executable, "-c", _POLICY_CHILD, json.dumps(threads),
                               json.dumps(list(models))], env=env, capture_output=True,
                              text=True, timeout=900)
        row = dict(policy=label, env=env_extra, threads=threads)
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        else:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append(row)
    if console is not None:
        console.print(policies_table(rows))
    return rows


def policies_table(rows):
    from rich.table import Table

    models = [g["model"] for g in next((r["loop"] for r in rows if "loop" in r), [])]
    table = Table(title="Thread-policy alternatives (each in a fresh process, float32)",
                  title_justify="left",
                  caption="loop: backend='auto' whole-loop time / the NumPy reference's (lower "
                          "is better); kernels: Adam's fraction of the floor, numba / c",
                  caption_justify="left")
    table.add_column("policy")
    for m in models:
        table.add_column(f"loop {m}", justify="right")
    table.add_column("Adam 256K", justify="right")
    table.add_column("Adam 1M", justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["policy"], *["-"] * (len(models) + 2))
            continue
        loops = {g["model"]: g.get("auto_loop_vs_numpy") for g in r["loop"]}
        cells = [f"{loops[m]:.2f}x" if loops.get(m) else "-" for m in models]
        for case in ("256K", "1M"):
            of = r["kernels"].get(case, {}).get("of_floor", {})
            cells.append(" / ".join(f"{100 * of[b]:.0f}%" for b in ("numba", "c") if b in of)
                         or "-")
        table.add_row(r["policy"], *cells)
    return table
