"""A run's results: one ``Result`` per row, the ``Report`` that ``--json`` writes, the goals.

``Report.to_dict()`` is the ``fastoptim-bench/1`` document (docs/bench/cpu.json is
a sample); ``print_report`` prints a finished one again, every table in order.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import loop as training_loop
from .contestants import Case
from .crossover import crossover_tables
from .latency import latency_table
from .rendering import (
    case_table,
    kernel_goals_table,
    many_goals_table,
    print_header,
    print_many_table,
    summary_table,
)
from .specs import DEEPSPEED


@dataclass
class Result:
    """One row: a contestant on one case. Times in seconds; None when not timed."""

    optimizer: str
    case: str  # "16M", "256K", "1000x1024"
    mode: str  # "single", "flat", "list", "one" (fastoptim), "tensors" (peers), "floor"
    n_elements: int
    n_tensors: int
    dtype: str
    contestant: str  # "floor", "numpy", "numba", "c", "torch-fused", ...
    label: str
    kind: str  # "floor", "own-floor" (on a contestant's arrays, named in detail), "bound"
    #            (Adam's compute bound), "reference", "fastoptim", "peer"
    check: str  # "ok", "reference", "peer", "n/a", "mismatch", "error"
    detail: str = ""
    time_s: Optional[float] = None  # median time per step
    times_s: list = field(default_factory=list)  # every repeat, per step
    repeats: int = 0
    inner: int = 0  # steps per repeat
    schedule: str = ""  # "interleaved" (repeats alternate between contestants) or "sequential"
    busy_cpus: Optional[float] = None  # CPUs other processes used while this case ran
    bytes_per_element: int = 0
    gb_per_s: Optional[float] = None
    fraction_of_floor: Optional[float] = None  # the case's floor's time / this row's
    fraction_of_own_floor: Optional[float] = None  # the floor on this row's arrays / this row's
    speedup_vs_numpy: Optional[float] = None
    speedup_vs_best_torch: Optional[float] = None

    @property
    def timed(self) -> bool:
        return self.time_s is not None


@dataclass
class Report:
    """Everything one run measured; ``to_dict()`` is the ``--json`` document."""

    machine: dict
    settings: dict
    results: list = field(default_factory=list)
    latency: Optional[list] = None
    crossover: Optional[dict] = None
    loop: Optional[dict] = None  # fastoptim.bench.loop.run()'s document
    goals: dict = field(default_factory=dict)  # kernel_goals(), the loop's goals
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "schema": "fastoptim-bench/1",
            "machine": self.machine,
            "settings": self.settings,
            "results": [dataclasses.asdict(r) for r in self.results],
            "latency": self.latency,
            "crossover": self.crossover,
            "loop": self.loop,
            "goals": self.goals,
            "wall_time_s": self.wall_time_s,
        }

    def write_json(self, path) -> None:
        text = json.dumps(self.to_dict(), indent=2, default=json_default)
        if str(path) == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(path, "w") as f:
                f.write(text + "\n")

    def table_rows(self, optimizer, case, mode):
        """The rows of one table: floor, fastoptim rows of ``mode``, the peers of the case."""
        rows = [r for r in self.results if r.optimizer == optimizer and r.case == case]
        return ([r for r in rows if r.kind in ("floor", "own-floor")]
                + [r for r in rows if r.kind == "bound" and mode == "single"]
                + [r for r in rows if r.kind in ("reference", "fastoptim") and r.mode == mode]
                + [r for r in rows if r.kind == "peer"])


def json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


KERNEL_GOALS = {  # issue 13 (and 12's "nothing regresses"), ratios within one run
    "of_floor": {(np.dtype(np.float32).name, 256 * 2**10): 0.7, ("float32", 2**20): 0.7,
                 ("float64", 256 * 2**10): 0.6, ("float64", 2**20): 0.6,
                 ("float32", 16 * 2**20): 0.95},
    "adam_vs_torch_fused": {256 * 2**10: 2.0, 2**20: 1.4},
    "adam_vs_deepspeed": {256 * 2**10: 1.5, 2**20: 1.4},
    "numba_vs_c": 1.15,  # the slower of the two within 15% of the faster, at every size
}


def kernel_goals(report: Report) -> list:
    """One entry per (optimizer, dtype, single-tensor or FlatParams case) of the run: the
    floor, Adam's compute bound, each fast backend's fraction of the floor and of the floor
    on its own arrays, numba against C, Adam against torch fused and DeepSpeedCPUAdam, and
    which goals hold. A one-tensor case's floor goal compares each backend with the floor
    over its own arrays: where arrays lie in memory moves every kernel over them alike (up
    to 10% here, docs/benchmarks.md), and the case's floor ran on arrays of its own."""
    out = []
    keys = list(dict.fromkeys((r.optimizer, r.dtype, r.case, r.mode) for r in report.results
                              if r.kind == "fastoptim" and r.mode in ("single", "flat")))
    for optimizer, dtype, case, mode in keys:
        rows = [r for r in report.results
                if (r.optimizer, r.dtype, r.case) == (optimizer, dtype, case)]
        floor = min((r for r in rows if r.kind == "floor" and r.timed),
                    key=lambda r: r.time_s, default=None)
        fast = {r.contestant: r for r in rows if r.kind == "fastoptim" and r.mode == mode
                and r.timed}
        if floor is None or not fast:
            continue
        n = rows[0].n_elements
        peer = {r.contestant: r.time_s for r in rows if r.kind == "peer" and r.timed}
        bound = next((r.time_s for r in rows if r.kind == "bound"), None)
        entry = dict(optimizer=optimizer, dtype=dtype, case=case, mode=mode, n_elements=n,
                     floor_s=floor.time_s, floor_kind=floor.contestant, compute_bound_s=bound,
                     of_floor={b: r.fraction_of_floor for b, r in fast.items()},
                     of_own_floor={b: r.fraction_of_own_floor for b, r in fast.items()
                                   if r.fraction_of_own_floor is not None},
                     time_s={b: r.time_s for b, r in fast.items()}, goals={})
        if "numba" in fast and "c" in fast:
            entry["numba_over_c"] = fast["numba"].time_s / fast["c"].time_s
            worse = max(entry["numba_over_c"], 1 / entry["numba_over_c"])
            entry["goals"]["numba and c within 15%"] = worse <= KERNEL_GOALS["numba_vs_c"]
        if mode == "single":
            need = KERNEL_GOALS["of_floor"].get((dtype, n))
            if need is not None:  # against the floor on the backend's own arrays, if timed
                for b, r in fast.items():
                    if r.fraction_of_own_floor is not None:
                        entry["goals"][f"{b} >= {need:g} of its own floor"] = (
                            r.fraction_of_own_floor >= need)
                    else:
                        entry["goals"][f"{b} >= {need:g} of floor"] = r.fraction_of_floor >= need
            if optimizer == "adam" and dtype == "float32":
                for peer_key, table, label in (
                        ("torch-fused", KERNEL_GOALS["adam_vs_torch_fused"], "torch fused"),
                        (DEEPSPEED, KERNEL_GOALS["adam_vs_deepspeed"], "DeepSpeedCPUAdam")):
                    if peer_key in peer:
                        entry[f"vs_{peer_key}"] = {b: peer[peer_key] / r.time_s
                                                   for b, r in fast.items()}
                        need = table.get(n)
                        if need is not None:
                            for b, r in fast.items():
                                entry["goals"][f"{b} >= {need:g}x {label}"] = (
                                    peer[peer_key] / r.time_s >= need)
        out.append(entry)
    return out


MANY_GOALS = {  # issue 12, the many-tensors case, ratios within one interleaved run
    "list_over_flat": 2.0,  # a plain list's step at most 2x the FlatParams step
    "flat_over_one": 1.5,  # FlatParams at most 1.5x the same elements as one tensor
    "peer_over_list": 3.0,  # torch fused and DeepSpeedCPUAdam at least 3x the plain list's
}


def many_goals(report: Report) -> list:
    """One entry per (optimizer, dtype, many-tensors case) and fast backend: its plain
    list against its FlatParams step, FlatParams against the same elements as one
    tensor, torch fused and DeepSpeedCPUAdam against the plain list, and which goals hold.
    All from one interleaved run of the case."""
    out = []
    keys = dict.fromkeys((r.optimizer, r.dtype, r.case) for r in report.results
                         if r.kind == "fastoptim" and r.mode == "list")
    for optimizer, dtype, case in keys:
        rows = [r for r in report.results
                if (r.optimizer, r.dtype, r.case) == (optimizer, dtype, case) and r.timed]
        peer = {r.contestant: r.time_s for r in rows if r.kind == "peer"}
        by_mode = {}
        for r in rows:
            if r.kind == "fastoptim":
                by_mode.setdefault(r.contestant, {})[r.mode] = r.time_s
        for backend, t in by_mode.items():
            entry = dict(optimizer=optimizer, dtype=dtype, case=case, backend=backend,
                         time_s=t, goals={})
            if "list" in t and "flat" in t:
                entry["list_over_flat"] = t["list"] / t["flat"]
                need = MANY_GOALS["list_over_flat"]
                entry["goals"][f"plain list <= {need:g}x FlatParams"] = (
                    entry["list_over_flat"] <= need)
            if "flat" in t and "one" in t:
                entry["flat_over_one"] = t["flat"] / t["one"]
                need = MANY_GOALS["flat_over_one"]
                entry["goals"][f"FlatParams <= {need:g}x one tensor"] = (
                    entry["flat_over_one"] <= need)
            for peer_key, label in (("torch-fused", "torch fused"),
                                    (DEEPSPEED, "DeepSpeedCPUAdam")):
                if peer_key in peer and "list" in t:
                    entry[f"{peer_key}_over_list"] = peer[peer_key] / t["list"]
                    need = MANY_GOALS["peer_over_list"]
                    entry["goals"][f"plain list >= {need:g}x {label}"] = (
                        entry[f"{peer_key}_over_list"] >= need)
            out.append(entry)
    return out


def print_report(report: Report, console=None) -> None:
    """Print a finished report (header, one table per case, summary, latency, crossover)."""
    if console is None:
        from rich.console import Console

        console = Console()
    print_header(report, console)
    seen = dict.fromkeys((r.optimizer, r.case, r.n_elements, r.n_tensors) for r in report.results)
    for optimizer, key, n, count in seen:
        modes = tuple(dict.fromkeys(r.mode for r in report.results
                                    if (r.optimizer, r.case) == (optimizer, key)
                                    and r.kind in ("reference", "fastoptim")))
        case = Case(key, (n // count,) * count, modes)
        for mode in modes:
            console.print(case_table(report, optimizer, case, mode))
        print_many_table(console, report, optimizer, case)
    console.print(summary_table(report))
    if report.goals.get("kernels"):
        console.print(kernel_goals_table(report.goals["kernels"]))
    if report.goals.get("many"):
        console.print(many_goals_table(report.goals["many"]))
    if report.loop:
        results = [training_loop.LoopResult(**r) for r in report.loop["results"]]
        for key in dict.fromkeys((r.model, r.dtype) for r in results):
            console.print(training_loop.loop_table([r for r in results
                                                    if (r.model, r.dtype) == key]))
        console.print(training_loop.goals_table(report.loop["goals"]))
    if report.latency:
        console.print(latency_table(report.latency))
    if report.crossover:
        for table in crossover_tables(report.crossover):
            console.print(table)
