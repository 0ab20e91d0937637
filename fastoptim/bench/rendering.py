"""The CPU benchmark's tables (rich) and plot (matplotlib), both imported when used.

One table per case and mode (a row per contestant: time per step, GB/s, the
fraction of the floor, the ratios to NumPy and to the fastest torch.optim row),
the many-tensors table, the summary, the kernel goals and the header panel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .specs import DEEPSPEED, OPTIMIZERS, format_size, format_time

if TYPE_CHECKING:
    from .contestants import Case
    from .report import Report


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def progress_bar(console):
    if console is None:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)


def is_busy(busy) -> bool:
    return busy is not None and busy >= 0.25


def print_header(report: Report, console) -> None:
    from rich.panel import Panel

    m, s = report.machine, report.settings
    peers = []
    if s["torch_peers"]:
        peers.append(f"torch {m['torch']} (for-loop, foreach, fused)")
    if s["deepspeed_peer"]:
        peers.append(f"DeepSpeedCPUAdam {m['deepspeed']}")
    if not s["peers"]:
        peer_text = "off (--no-peers)"
    else:
        peer_text = ", ".join(peers) or "none importable (torch, deepspeed)"
    text = (
        f"[bold]time per optimizer step[/bold], {s['dtype']}: median of {s['repeat']} repeats "
        f"(interleaved across the contestants of a case; at least {s['min_repeats']} for a row "
        f"slower than {s['contestant_budget_s']:g} s in all) after a warm-up that pays "
        f"first-touch page faults and JIT compilation\n"
        f"[bold]check[/bold]    each fast backend's first {s['check_steps']} steps are compared "
        f"with the NumPy reference (rtol {s['rtol']:.0e}) before it is timed\n"
        f"[bold]floor[/bold]    a Numba kernel that reads and writes the same arrays with no "
        f"math, on the same threads: what the memory bus allows\n"
        f"[bold]threads[/bold]  {s['threads']} (numba {m['numba_threading_layer']} layer, "
        f"C OpenMP{', torch' if s['torch_peers'] else ''})\n"
        f"[bold]machine[/bold]  {m['cpu']}, {m['usable_cpus']} cores; python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}\n"
        f"[bold]backends[/bold] {', '.join(s['backends'])}    [bold]peers[/bold] {peer_text}"
    )
    busy = m.get("busy_cpus_before")
    if is_busy(busy):
        text += (f"\n[bold yellow]busy[/bold yellow]     other processes keep {busy:g} of "
                 f"{m['logical_cpus']} CPUs busy: multi-threaded timings will be inflated "
                 "(a parallel kernel waits for its slowest thread); rerun when the machine is "
                 "idle, or compare with --threads 1")
    console.print(Panel(text, title=f"fastoptim bench {m['fastoptim']}", expand=False))


def ratio(x):
    return "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def _numpy_time(rows, mode):
    row = next((r for r in rows if r.kind == "reference" and r.mode == mode and r.timed), None)
    return row.time_s if row else None


def case_table(report: Report, optimizer: str, case: Case, mode: str):
    """A rich Table: one row per contestant on one case."""
    from rich.table import Table

    spec = OPTIMIZERS[optimizer]
    rows = report.table_rows(optimizer, case.key, mode)
    numpy_time = _numpy_time(rows, mode)
    torch_times = [r.time_s for r in rows if r.contestant.startswith("torch") and r.timed]
    best_torch = min(torch_times) if torch_times else None
    fastest = min((r.time_s for r in rows if r.timed
                   and r.kind not in ("floor", "own-floor", "bound")),
                  default=None)
    dtype = np.dtype(rows[0].dtype if rows else report.settings["dtype"])
    notes = [f"[red]{r.label}: {r.check}: {r.detail}[/red]" for r in rows
             if r.check in ("mismatch", "error")]
    busy = rows[0].busy_cpus if rows else None
    if is_busy(busy):
        notes.append(f"[yellow]busy: other processes used {busy:g} CPUs on average while this "
                     "case ran; multi-threaded rows are inflated[/yellow]")
    table = Table(title=f"{spec.label}, {dtype.name}, {case.title(mode)}", title_justify="left",
                  caption="\n".join([_caption(spec, case, mode, dtype, rows)] + notes),
                  caption_justify="left")
    table.add_column("contestant", no_wrap=True)
    table.add_column("check", no_wrap=True)
    own = any(r.kind == "own-floor" for r in rows)  # beyond the cache only
    for name in ("time/step", "GB/s", "of floor") + (("own floor",) if own else ()) + (
            "vs NumPy", "vs torch"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        style = {"floor": "dim", "own-floor": "dim", "bound": "dim",
                 "peer": "italic"}.get(r.kind, "")
        check = {"ok": "[green]ok[/green]", "mismatch": "[bold red]MISMATCH[/bold red]",
                 "error": "[bold red]error[/bold red]"}.get(r.check, r.check)
        time_text = "not timed" if r.check == "mismatch" else format_time(r.time_s)
        if r.timed and r.time_s == fastest:
            time_text = f"[bold green]{time_text}[/bold green]"
        own_cell = ("-" if r.fraction_of_own_floor is None
                    else f"{100 * r.fraction_of_own_floor:.0f}%")
        table.add_row(
            r.label, check, time_text,
            "-" if r.gb_per_s is None else f"{r.gb_per_s:.1f}",
            "-" if r.fraction_of_floor is None else f"{100 * r.fraction_of_floor:.0f}%",
            *((own_cell,) if own else ()),
            ratio(numpy_time / r.time_s) if numpy_time and r.timed else "-",
            ratio(best_torch / r.time_s) if best_torch and r.timed else "-",
            style=style,
        )
    return table


def _caption(spec, case, mode, dtype, rows):
    names = ["param", "grad", "momentum_buffer"] if spec.arrays == 3 else \
        ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"][:spec.arrays]
    floor = next((r for r in rows if r.kind == "floor"), None)
    how = f"{floor.detail} " if floor is not None and floor.detail else ""
    text = (f"{spec.streams * dtype.itemsize} B/element (reads {', '.join(names)}; writes all "
            f"but grad) x {format_size(case.n)} elements; floor: the fastest of three {how}Numba "
            f"kernels moving the same bytes with no math (a plain loop; the backends' "
            f"chunked, prefetching loop; one block per thread), each on arrays of its own")
    if any(r.kind == "own-floor" for r in rows):
        text += ("; own floor: the floor on the backend's own arrays / its time (the "
                 "floor on its arrays: the same no-math loop over the backend's own arrays "
                 "(giving each its value back), dispatched as the backends are, timed "
                 "right after it in every round)")
    if mode != "single":
        text += f"; peers step the {len(case.sizes)} tensors as separate tensors"
    if any(r.contestant.startswith("torch") for r in rows):
        text += "; vs torch: against the fastest torch.optim row"
    return text


def many_table(report: Report, optimizer: str, case: Case):
    """The many-tensors case in one table: each backend's plain list next to its
    FlatParams step and the peers (torch.optim, DeepSpeedCPUAdam), all against the
    fastest plain list of the same run."""
    from rich.table import Table

    rows = [r for r in report.results if r.optimizer == optimizer and r.case == case.key
            and r.timed and (r.kind == "peer" or (r.kind == "fastoptim"
                                                  and r.mode in ("list", "flat", "one")))]
    lists = [r.time_s for r in rows if r.mode == "list"]
    if not lists:
        return None
    best_list = min(lists)
    count, size = len(case.sizes), format_size(case.sizes[0])
    table = Table(title=f"{OPTIMIZERS[optimizer].label}, {report.settings['dtype']}, {count} "
                        f"tensors x {size}: the plain list next to FlatParams and the peers",
                  title_justify="left", caption_justify="left",
                  caption="x plain list: time per step over the fastest plain list's (2.00x: "
                          "half as fast); one interleaved run")
    table.add_column("contestant", no_wrap=True)
    table.add_column("time/step", justify="right", no_wrap=True)
    table.add_column("x plain list", justify="right", no_wrap=True)
    order = {"list": 0, "flat": 1, "one": 2, "tensors": 3}
    for r in sorted(rows, key=lambda r: (order.get(r.mode, 4), r.time_s)):
        label = {"list": f"{r.label}, plain list", "flat": f"{r.label}, FlatParams",
                 "one": f"{r.label}, one tensor of {format_size(case.n)}"}.get(r.mode, r.label)
        table.add_row(label, format_time(r.time_s), ratio(r.time_s / best_list),
                      style="italic" if r.kind == "peer" else "")
    return table


def print_many_table(console, report, optimizer, case):
    if "list" in case.modes:
        table = many_table(report, optimizer, case)
        if table is not None:
            console.print(table)


def summary_table(report: Report):
    """The best fastoptim backend of each case, against the floor, NumPy and torch."""
    from rich.table import Table

    table = Table(title="Summary: the fastest fastoptim backend per case", title_justify="left")
    for name, justify in (("optimizer", "left"), ("case", "left"), ("best backend", "left"),
                          ("time/step", "right"), ("of floor", "right"), ("vs NumPy", "right"),
                          ("vs torch", "right")):
        table.add_column(name, justify=justify)
    seen = []
    for r in report.results:
        key = (r.optimizer, r.case, r.mode)
        if r.kind in ("reference", "fastoptim") and key not in seen:
            seen.append(key)
    for optimizer, case, mode in seen:
        key = (optimizer, case, mode)
        same = [r for r in report.results if (r.optimizer, r.case, r.mode) == key]
        rows = [r for r in same if r.kind == "fastoptim" and r.timed]
        mismatches = [r.contestant for r in same if r.check in ("mismatch", "error")]
        label = case if mode == "single" else f"{case} {mode}"
        if is_busy(same[0].busy_cpus):
            label += " [yellow](busy)[/yellow]"
        if not rows:
            table.add_row(OPTIMIZERS[optimizer].label, label, "-", "-", "-", "-", "-")
            continue
        best = min(rows, key=lambda r: r.time_s)
        name = best.contestant + (f" [red](failed: {', '.join(mismatches)})[/red]"
                                  if mismatches else "")
        table.add_row(
            OPTIMIZERS[optimizer].label, label, name, format_time(best.time_s),
            "-" if best.fraction_of_floor is None else f"{100 * best.fraction_of_floor:.0f}%",
            ratio(best.speedup_vs_numpy), ratio(best.speedup_vs_best_torch))
    return table


def _of_floor_cell(entry, backend):
    """The backend's fraction of its own floor, the case's floor's in brackets."""
    shared = entry["of_floor"].get(backend)
    own = entry.get("of_own_floor", {}).get(backend)
    if shared is None:
        return "-"
    return f"{100 * shared:.0f}%" if own is None else f"{100 * own:.0f}% ({100 * shared:.0f}%)"


def kernel_goals_table(entries):
    from rich.table import Table

    table = Table(title="Kernels against their floor (in-cache regime 64K-2M, and 16M): "
                        "goals of this run", title_justify="left",
                  caption="numba, c: the floor on the backend's own arrays / the backend's "
                          "time (in brackets: the case's floor, the fastest no-math kernel on "
                          "arrays of its own); compute bound: Adam's exact math with "
                          "the data in L1, on all threads (a step cannot beat it); numba/c: "
                          "time ratio; vs peers: the peer's time / the backend's",
                  caption_justify="left")
    for name in ("optimizer", "dtype", "case", "floor", "compute bound", "numba", "c",
                 "numba/c", "vs torch fused", "vs DeepSpeed", "goals"):
        table.add_column(name, justify="left" if name in ("optimizer", "dtype", "case", "goals")
                         else "right")

    def pair(d):
        if not d:
            return "-"
        return " / ".join(f"{d[b]:.2f}x" for b in ("numba", "c") if b in d)

    for e in entries:
        missed = [k for k, v in e["goals"].items() if not v]
        verdict = ("-" if not e["goals"] else "[green]met[/green]" if not missed
                   else "[red]missed: " + "; ".join(missed) + "[/red]")
        table.add_row(
            OPTIMIZERS[e["optimizer"]].label, e["dtype"],
            e["case"] + (" flat" if e["mode"] == "flat" else ""), format_time(e["floor_s"]),
            format_time(e["compute_bound_s"]) if e["compute_bound_s"] else "-",
            *[_of_floor_cell(e, b) for b in ("numba", "c")],
            f"{e['numba_over_c']:.2f}" if "numba_over_c" in e else "-",
            pair(e.get("vs_torch-fused")), pair(e.get(f"vs_{DEEPSPEED}")), verdict)
    return table


def many_goals_table(entries):
    """The many-tensors goals of a run (``report.many_goals``), one row per backend."""
    from rich.table import Table

    table = Table(title="Many tensors: plain list, FlatParams, one tensor and the peers, "
                        "goals of this run", title_justify="left", caption_justify="left",
                  caption="list/flat, flat/one: time ratios (1.00x: as fast); vs list: the "
                          "peer's time / the plain list's; all from one interleaved run")
    for name in ("optimizer", "dtype", "case", "backend", "list/flat", "flat/one",
                 "torch fused vs list", "DeepSpeed vs list", "goals"):
        table.add_column(name, justify="right" if "/" in name or "vs" in name else "left")

    def cell(e, key):
        return ratio(e[key]) if key in e else "-"

    for e in entries:
        missed = [k for k, v in e["goals"].items() if not v]
        verdict = ("-" if not e["goals"] else "[green]met[/green]" if not missed
                   else "[red]missed: " + "; ".join(missed) + "[/red]")
        table.add_row(OPTIMIZERS[e["optimizer"]].label, e["dtype"], e["case"], e["backend"],
                      cell(e, "list_over_flat"), cell(e, "flat_over_one"),
                      cell(e, "torch-fused_over_list"), cell(e, f"{DEEPSPEED}_over_list"),
                      verdict)
    return table


def plot(report: Report, path) -> None:
    """Write a PNG: GB/s against tensor size per contestant, the floor as a dashed line.

    Raises ImportError with an install hint when matplotlib is missing.
    """
    mpl = require_matplotlib()
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = report.settings["optimizers"]
    fig, axes = plt.subplots(1, len(optimizers), figsize=(5.5 * len(optimizers), 4.5),
                             squeeze=False)
    for ax, name in zip(axes[0], optimizers):
        rows = [r for r in report.results if r.optimizer == name and r.timed
                and r.n_tensors == 1 and r.dtype == report.settings["dtype"]
                and r.kind not in ("bound", "own-floor")]
        contestants = list(dict.fromkeys(r.contestant for r in rows))
        for contestant in contestants:
            pts = sorted((r.n_elements, r.gb_per_s, r.label) for r in rows
                         if r.contestant == contestant)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if contestant.startswith("floor"):
                ax.plot(xs, ys, "k--" if contestant == "floor" else "k:", linewidth=2,
                        label=f"{pts[0][2]} (no math)")
            else:
                ax.plot(xs, ys, marker="o", label=pts[0][2])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("elements (one tensor)")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{OPTIMIZERS[name].label}, {report.settings['dtype']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fastoptim bench: {report.machine['cpu']}, {report.settings['threads']} threads",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOT_HINT = 'the --plot option needs matplotlib: pip install "fastoptim[plot]"'


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    return matplotlib
