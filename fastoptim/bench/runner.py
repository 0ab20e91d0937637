"""``fastoptim bench`` on the CPU: build, check and time every contestant of every case.

``run()`` is the whole benchmark: the kernel cases (this module), then the
first-step latency, the training loop and the crossover when asked for. The
repeats of a case's contestants are interleaved, so a burst of load from
another process hits them all alike; the median then drops it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from fastoptim import backends as _backends
from fastoptim.backends import _threads

from . import loop as training_loop
from .contestants import (
    BenchData,
    compare,
    deepspeed_importable,
    import_torch,
    make_cases,
    setup_deepspeed,
    setup_fastoptim,
    setup_torch,
    snapshot,
    step_arrays,
)
from .crossover import run_crossover
from .floor import FLOOR_KERNELS, FLOOR_VARIANTS, adam_compute_bound, floor_kernel, own_floor
from .latency import run_latency
from .machine import CpuMeter, Threads, busy_cpus, check_threads, machine_info, physical_memory
from .rendering import (
    case_table,
    is_busy,
    kernel_goals_table,
    many_goals_table,
    print_header,
    print_many_table,
    progress_bar,
    summary_table,
)
from .report import Report, Result, kernel_goals, many_goals
from .specs import (
    CHECK_STEPS,
    CONTESTANT_BUDGET_S,
    DEEPSPEED,
    DEFAULT_BUDGET_S,
    DEFAULT_MANY,
    DEFAULT_OPTIMIZERS,
    DEFAULT_REPEAT,
    DEFAULT_SIZES,
    FULL_PEER_SIZES,
    IN_CACHE_F64_SIZES,
    IN_CACHE_FLAT,
    LATENCY_COST_S,
    MIN_REPEAT_S,
    MIN_REPEATS,
    OPTIMIZERS,
    QUICK_CONTESTANT_BUDGET_S,
    QUICK_MANY,
    QUICK_REPEAT,
    QUICK_SIZES,
    QUICK_WARMUP_S,
    RTOL,
    TORCH_PEERS,
    WARMUP_S,
    BenchError,
    check_names,
    parse_many,
    parse_size,
    resolve_backends,
)
from .timing import NoGC, time_repeat, warm_up


class _Mismatch(Exception):
    pass


@dataclass
class _Entry:
    """One contestant of a case: ``prepare()`` builds (and checks) it and returns its step."""

    row: Result
    prepare: Callable[[], Callable[[], None]]
    step: Optional[Callable[[], None]] = None
    inner: int = 0
    arrays: Optional[tuple] = None  # a one-tensor fastoptim contestant's (step_arrays)


class _Runner:
    """Builds the contestants of each case, checks them, times them, fills the rows.

    The repeats of all contestants of a case are interleaved (round 1 of each, round 2
    of each, ...), so a burst of load from another process hits every contestant
    alike instead of one of them; the median then drops it. When the contestants of a
    case would not fit in memory together, they are timed one after another instead.
    """

    def __init__(self, spec_list, backends, cases, dtype, repeat, warmup_s, budget_s, torch,
                 deepspeed):
        self.specs, self.backends, self.cases = spec_list, backends, cases
        self.dtype, self.repeat, self.warmup_s = dtype, repeat, warmup_s
        self.budget_s = budget_s  # timed seconds per contestant, after MIN_REPEATS repeats
        self.torch, self.deepspeed = torch, deepspeed
        self.progress = self.task = None
        self.data = BenchData(dtype)
        self.results = []
        self.bound_s_per_element = None  # Adam's compute bound (adam_compute_bound)

    def _say(self, text):
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def _done(self, units=1):
        if self.progress is not None:
            self.progress.advance(self.task, units)

    def peers(self, spec, case=None):
        out = []
        if self.torch is not None:  # the default run's extra cases: torch fused only
            out += [p for p in TORCH_PEERS
                    if case is None or case.all_peers or p[0] == "torch-fused"]
        if self.deepspeed and spec.name in ("adam", "adamw") and self.dtype == np.float32:
            out.append((DEEPSPEED, "DeepSpeedCPUAdam", None))
        return out

    def contestants(self, spec, case) -> int:
        return (len(FLOOR_VARIANTS) + len(self.backends) * len(case.modes)
                + len(self._own_floor_backends(spec, case)) + len(self.peers(spec, case)))

    def _own_floor_backends(self, spec, case) -> list:
        """The fast backends that get a floor on their own arrays: those of a one-tensor
        case beyond the last-level cache (``_threads.BLOCKED_MAX_BYTES``), where a step's
        time is the memory's and where its arrays lie moves it (docs/benchmarks.md). In the
        cache the floor timed right after a contestant would find its arrays warm."""
        footprint = case.n * self.dtype.itemsize * spec.arrays
        if case.modes != ("single",) or footprint <= _threads.BLOCKED_MAX_BYTES:
            return []
        return [b for b in self.backends if b != _backends.REFERENCE]

    def count(self) -> int:
        """Progress units: one per contestant (build, check, warm up) and one per round."""
        return sum(self.contestants(spec, case) + self.repeat
                   for spec in self.specs for case in self.cases)

    def _row(self, spec, case, mode, contestant, label, kind, check):
        return Result(
            optimizer=spec.name, case=case.key, mode=mode, n_elements=case.n,
            n_tensors=len(case.sizes), dtype=self.dtype.name, contestant=contestant,
            label=label, kind=kind, check=check,
            bytes_per_element=spec.streams * self.dtype.itemsize,
        )

    def _interleave(self, spec, case) -> bool:
        """True when every contestant of the case fits in memory at once (with room to spare)."""
        per_contestant = case.n * self.dtype.itemsize * spec.arrays
        need = per_contestant * (self.contestants(spec, case) + 3)
        memory = physical_memory()
        return need < (0.4 * memory if memory else 4 * 2**30)

    # ---------------------------------------------------------------- contestants
    def _entries(self, spec, case):
        entries = [self._floor_entry(spec, case, variant) for variant in FLOOR_VARIANTS]
        for mode in case.modes:
            reference = {}  # filled by the first fastoptim contestant of this mode
            for backend in self.backends:
                entries.append(self._fastoptim_entry(spec, case, mode, backend, reference))
        for key, label, impl in self.peers(spec, case):
            entries.append(self._peer_entry(spec, case, key, label, impl))
        return entries

    def _floor_entry(self, spec, case, variant):
        name = "floor" if variant == "plain" else f"floor-{variant}"
        row = self._row(spec, case, "floor", name, FLOOR_VARIANTS[variant], "floor", "n/a")

        def prepare():
            param0, grad = self.data(case.n)
            arrays = [param0.copy(), grad] + [np.zeros(case.n, self.dtype)
                                              for _ in range(spec.arrays - 2)]
            kernel = floor_kernel(spec.arrays, case.n, variant)
            row.detail = "parallel" if case.n >= _threads.PARALLEL_MIN else "serial"
            return lambda: kernel(*arrays)

        return _Entry(row, prepare)

    def _fastoptim_entry(self, spec, case, mode, backend, reference):
        is_reference = backend == _backends.REFERENCE
        row = self._row(spec, case, mode, backend, backend,
                        "reference" if is_reference else "fastoptim",
                        "reference" if is_reference else "ok")

        def run_checked_steps(name):
            opt, params, step = setup_fastoptim(spec, case, mode, self.data, name)
            for _ in range(CHECK_STEPS):
                step()
            arrays = (step_arrays(opt, params[0], self.data(case.n)[1])
                      if mode == "single" else None)
            return step, snapshot(opt, params), arrays

        def prepare():
            if not reference and not is_reference:  # numpy not timed: run it for the check
                reference.update(run_checked_steps(_backends.REFERENCE)[1])
            step, got, arrays = run_checked_steps(backend)
            if is_reference:
                reference.update(got)
            else:
                mismatch = compare(got, reference, RTOL[self.dtype])
                if mismatch:  # reported, never timed
                    row.check, row.detail = "mismatch", mismatch
                    raise _Mismatch(mismatch)
            entry.arrays = arrays
            return step  # the checked optimizer goes on stepping: it is what gets timed

        entry = _Entry(row, prepare)
        return entry

    def _own_floor_entry(self, spec, case, contestant):
        """The floor kernel over a fast contestant's own arrays (``floor.own_floor``),
        built once the contestant is: where the arrays lie in memory moves both alike."""
        backend = contestant.row.contestant
        row = self._row(spec, case, "single", f"own-floor-{backend}",
                        f"floor on {backend}'s arrays", "own-floor", "n/a")
        row.detail = backend
        return _Entry(row, lambda: own_floor(contestant.arrays))

    def _peer_entry(self, spec, case, key, label, impl):
        row = self._row(spec, case, "tensors", key, label, "peer", "peer")
        if key == DEEPSPEED:
            return _Entry(row, lambda: setup_deepspeed(self.torch, spec, case, self.data))
        return _Entry(row, lambda: setup_torch(self.torch, spec, case, self.data, impl))

    def _build(self, entry, where) -> bool:
        """Prepare and warm up one contestant; False when it cannot be timed."""
        self._say(f"{where}: {'checking' if entry.row.kind == 'fastoptim' else 'preparing'} "
                  f"{entry.row.label}")
        try:
            entry.step = entry.prepare()
            with NoGC():
                entry.inner = warm_up(entry.step, self.warmup_s)
            return True
        except _Mismatch:
            return False
        except Exception as exc:  # one broken contestant (e.g. fused unsupported) ends no run
            entry.row.check, entry.row.detail = "error", f"{type(exc).__name__}: {exc}"
            return False
        finally:
            self._done()

    def _own_floor_of(self, spec, case, entry):
        """A built contestant's floor on its own arrays, or None (not a fast backend of a
        one-tensor case)."""
        if (entry.row.kind != "fastoptim" or entry.arrays is None
                or entry.row.contestant not in self._own_floor_backends(spec, case)):
            return None
        return self._own_floor_entry(spec, case, entry)

    # ---------------------------------------------------------------- timing
    def _has_enough(self, entry, spent) -> bool:
        """A contestant stops after its time budget once it has MIN_REPEATS repeats (a step
        that takes seconds, e.g. under heavy load, must not hold up the whole run)."""
        return len(entry.row.times_s) >= min(MIN_REPEATS, self.repeat) and spent >= self.budget_s

    def case(self, spec, case):
        where = f"{spec.label} {case.key}"
        entries = self._entries(spec, case)
        meter = CpuMeter().start()
        if self._interleave(spec, case):
            schedule = "interleaved"
            live = []
            for e in list(entries):
                if self._build(e, where):
                    live.append(e)
                    own = self._own_floor_of(spec, case, e)
                    if own is not None and self._build(own, where):
                        entries.append(own)
                        live.append(own)  # timed right after its contestant, every round
            if len(case.modes) > 1:
                _same_inner(e for e in live if e.row.kind == "fastoptim")
            spent = [0.0] * len(live)
            with NoGC():
                for r in range(self.repeat):
                    self._say(f"{where}: timing round {r + 1}/{self.repeat}")
                    for i, e in enumerate(live):
                        if self._has_enough(e, spent[i]):
                            continue
                        t0 = time.perf_counter()
                        e.row.times_s.append(time_repeat(e.step, e.inner))
                        spent[i] += time.perf_counter() - t0
                    self._done()
        else:
            schedule = "sequential"
            for e in list(entries):
                if self._build(e, where):
                    pair = [e]
                    own = self._own_floor_of(spec, case, e)
                    if own is not None and self._build(own, where):
                        entries.append(own)
                        pair.append(own)  # alternates with its contestant
                    spent = [0.0] * len(pair)
                    with NoGC():
                        while (len(e.row.times_s) < self.repeat
                               and not self._has_enough(e, spent[0])):
                            for i, x in enumerate(pair):
                                t0 = time.perf_counter()
                                x.row.times_s.append(time_repeat(x.step, x.inner))
                                spent[i] += time.perf_counter() - t0
                    for x in pair:
                        x.step = None  # release its arrays before the next contestant
                    e.arrays = None
            self._done(self.repeat)
        busy = meter.stop()
        rows = [e.row for e in entries]
        for row in rows:
            if row.times_s:
                row.time_s = statistics.median(row.times_s)
                row.repeats = len(row.times_s)
            row.schedule, row.busy_cpus = schedule, busy
        for e in entries:
            row = e.row
            row.inner = e.inner if row.times_s else 0
            e.step = None
        if (spec.name == "adam" and case.modes == ("single",)
                and self.bound_s_per_element is not None):
            bound = self._row(spec, case, "single", "bound-compute",
                              "compute bound (Adam math, data in L1)", "bound", "n/a")
            bound.time_s = self.bound_s_per_element * case.n
            bound.detail = f"{self.bound_s_per_element * 1e9:.3f} ns/element, all threads"
            rows.append(bound)
        self.results.extend(rows)
        _derive(self.results, spec.name, case.key)
        return rows


def _same_inner(entries):
    """Give the contestants the same number of consecutive steps per repeat (the most any
    of them needs). The many-tensors case compares its modes with one another (plain list
    / FlatParams, FlatParams / one tensor): a repeat's first step runs with the caches
    cold from the other contestants, and with fewer steps per repeat (a slower mode gets
    fewer) that cold step weighs more in its time than in the faster mode's."""
    entries = list(entries)
    inner = max((e.inner for e in entries), default=0)
    for e in entries:
        e.inner = inner


def _derive(results, optimizer, case):
    """Fill GB/s, fraction of the floor and the speedups of one case's rows."""
    rows = [r for r in results if r.optimizer == optimizer and r.case == case]
    floor = min((r for r in rows if r.kind == "floor" and r.timed), key=lambda r: r.time_s,
                default=None)  # the faster floor kernel is the floor
    torch_times = [r.time_s for r in rows if r.contestant.startswith("torch") and r.timed]
    best_torch = min(torch_times) if torch_times else None
    for r in rows:
        if not r.timed:
            continue
        r.gb_per_s = r.bytes_per_element * r.n_elements / r.time_s / 1e9
        if floor is not None:
            r.fraction_of_floor = floor.time_s / r.time_s
        own = next((x for x in rows if x.kind == "own-floor" and x.detail == r.contestant
                    and x.timed), None) if r.kind == "fastoptim" else None
        if own is not None:
            r.fraction_of_own_floor = own.time_s / r.time_s
        if r.kind in ("reference", "fastoptim"):
            numpy_row = next((x for x in rows if x.kind == "reference" and x.mode == r.mode
                              and x.timed), None)
            r.speedup_vs_numpy = numpy_row.time_s / r.time_s if numpy_row else None
            r.speedup_vs_best_torch = best_torch / r.time_s if best_torch else None


def run(optimizers=DEFAULT_OPTIMIZERS, backends=None, sizes=None, many="default",
        dtype="float32", threads=None, repeat=None, peers=True, quick=False, latency=None,
        crossover=False, console=None, progress=True, budget_s=DEFAULT_BUDGET_S,
        in_cache=None, loop=None) -> Report:
    """Run the benchmark; print the header and tables to ``console`` (a rich Console) if given.

    Args:
        optimizers: names from ``OPTIMIZERS`` (default sgd, adam, adamw).
        backends: CPU backends to time (default: every available one, NumPy first).
        sizes: single-tensor sizes in elements (ints or "16M"-style strings).
        many: (count, size) of the many-small-tensors case, "1000x1024", or None to skip.
        dtype: "float32" or "float64".
        threads: threads for numba, the C OpenMP kernels and torch (default: all).
        repeat: timed repeats per measurement; the table shows their median.
        peers: time torch.optim and DeepSpeedCPUAdam when importable.
        quick: small sizes, few repeats, short warm-up.
        latency: first-step latency in subprocesses (None: only if it fits ``budget_s``).
        crossover: also measure the serial/parallel crossover of the kernels.
        in_cache: the in-cache regime's extras (issue 13): a float64 pass at
            ``IN_CACHE_F64_SIZES``, the ``IN_CACHE_FLAT`` FlatParams case, Adam's compute
            bound and the goals table (None: in the default run, i.e. no sizes given).
        loop: the training-loop benchmark (``fastoptim.bench.loop``): "short", "full" or
            False (None: its short form in the default run).
    Raises:
        BenchError: unknown optimizer or backend, bad size, dtype or thread count.
    """
    started = time.perf_counter()
    optimizers = list(dict.fromkeys(optimizers))
    if not optimizers:
        raise BenchError("no optimizer to benchmark")
    check_names("optimizer", optimizers, list(OPTIMIZERS))
    backend_names = resolve_backends(backends)
    if not backend_names:
        raise BenchError("no backend to benchmark")
    if str(dtype) not in ("float32", "float64"):
        raise BenchError(f"bad dtype {dtype!r}: expected float32 or float64")
    dtype = np.dtype(dtype)
    default_run = not sizes and not quick
    in_cache = default_run if in_cache is None else bool(in_cache)
    loop = ("short" if default_run else False) if loop is None else loop
    if loop not in (False, "short", "full"):
        raise BenchError(f"bad loop {loop!r}: expected 'short', 'full' or False")
    sizes = [parse_size(s) for s in (sizes or (QUICK_SIZES if quick else DEFAULT_SIZES))]
    many = (QUICK_MANY if quick else DEFAULT_MANY) if many == "default" else parse_many(many)
    threads = check_threads(threads)
    repeat = int(repeat) if repeat is not None else (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    if repeat < 1:
        raise BenchError(f"--repeat {repeat}: must be at least 1")
    specs = [OPTIMIZERS[name] for name in optimizers]
    extra = (lambda n: n in FULL_PEER_SIZES) if default_run else (lambda n: True)
    passes = [(dtype, make_cases(sizes, many, IN_CACHE_FLAT if in_cache else None,
                                 all_peers=extra))]
    if in_cache and dtype != np.float64:
        passes.append((np.dtype(np.float64), make_cases(IN_CACHE_F64_SIZES, None, suffix=" f64",
                                                        all_peers=lambda n: False)))

    torch = import_torch() if peers else None
    deepspeed = (peers and any(s.name in ("adam", "adamw") for s in specs)
                 and deepspeed_importable())
    settings = dict(optimizers=optimizers, backends=backend_names, sizes=sizes,
                    many=list(many) if many else None, dtype=dtype.name, threads=threads,
                    repeat=repeat, check_steps=CHECK_STEPS, rtol=RTOL[dtype],
                    warmup_s=QUICK_WARMUP_S if quick else WARMUP_S,
                    min_repeat_s=MIN_REPEAT_S, min_repeats=min(MIN_REPEATS, repeat),
                    contestant_budget_s=QUICK_CONTESTANT_BUDGET_S if quick else CONTESTANT_BUDGET_S,
                    peers=bool(peers), quick=bool(quick),
                    torch_peers=torch is not None, deepspeed_peer=bool(deepspeed),
                    in_cache=in_cache, loop=loop,
                    passes=[dict(dtype=d.name, cases=[c.key for c in cs]) for d, cs in passes])

    with Threads(threads, torch):
        # run one tiny parallel kernel: it starts Numba's thread pool, so the header can
        # name the threading layer and no timed step pays for starting it
        FLOOR_KERNELS[2]["plain"].parallel((np.zeros(64, dtype), np.zeros(64, dtype)), ())
        report = Report(machine=machine_info(threads), settings=settings)
        report.machine["busy_cpus_before"] = busy_cpus(0.1 if quick else 0.25)
        if console is not None:
            print_header(report, console)
        if in_cache and "adam" in optimizers:
            report.machine["adam_compute_bound_ns_per_element"] = {
                d.name: 1e9 * adam_compute_bound(d, threads) for d, _ in passes}
        runners = [_Runner(specs, backend_names, cases, d, repeat, settings["warmup_s"],
                           settings["contestant_budget_s"], torch, deepspeed)
                   for d, cases in passes]
        with progress_bar(console if progress else None) as bar:
            task = (bar.add_task("benchmark", total=sum(r.count() for r in runners))
                    if bar else None)
            for runner in runners:
                bound = report.machine.get("adam_compute_bound_ns_per_element")
                if bound:
                    runner.bound_s_per_element = bound[runner.dtype.name] * 1e-9
                runner.progress, runner.task = bar, task
                runner.results = report.results
                for spec in specs:
                    for case in runner.cases:
                        runner.case(spec, case)
                        if console is not None:
                            for mode in case.modes:
                                console.print(case_table(report, spec.name, case, mode))
                            print_many_table(console, report, spec.name, case)
                runner.data = None
        if console is not None:
            console.print(summary_table(report))
        report.goals = {"kernels": kernel_goals(report), "many": many_goals(report)}
        if in_cache and console is not None:
            console.print(kernel_goals_table(report.goals["kernels"]))
        if report.goals["many"] and console is not None:
            console.print(many_goals_table(report.goals["many"]))

    report.machine["busy_cpus_after"] = busy_cpus(0.1 if quick else 0.25)
    if console is not None and is_busy(report.machine.get("busy_cpus_after")):
        console.print(f"[yellow]note: other processes kept {report.machine['busy_cpus_after']} "
                      "CPUs busy at the end of the run; multi-threaded timings may be "
                      "inflated[/yellow]")
    elapsed = time.perf_counter() - started
    if latency is None:  # default: only if it fits the time budget
        latency = not quick and elapsed + LATENCY_COST_S * (len(specs) + 1) <= budget_s
    if latency:
        report.latency = run_latency(optimizers, threads=threads, console=console,
                                     progress=progress)
    if loop:
        with Threads(threads, torch):
            report.loop = training_loop.run(
                backends=backend_names, peers=peers,
                steps=training_loop.SHORT_STEPS if loop == "short" else training_loop.DEFAULT_STEPS,
                repeat=(training_loop.SHORT_REPEAT if loop == "short"
                        else training_loop.DEFAULT_REPEAT),
                console=console, progress=progress)
        report.goals["loop"] = report.loop["goals"]
    if crossover:
        report.crossover = run_crossover(dtype=dtype.name, threads=threads,
                                         repeat=max(repeat, 5), console=console)
    report.wall_time_s = time.perf_counter() - started
    if console is not None:
        console.print(f"[dim]wall time {report.wall_time_s:.1f} s[/dim]")
    return report
