"""Serial against parallel kernels by size: where the thread pool starts paying off."""
from __future__ import annotations

import numba
import numpy as np

from fastoptim import backends as _backends
from fastoptim.backends import _pool, _threads

from .machine import check_threads
from .rendering import ratio
from .specs import CROSSOVER_SIZES, format_size, format_time, parse_size
from .timing import median_time


def crossover_point(points):
    """Smallest size from which parallel beats serial at every larger size tested (or None)."""
    point = None
    for size, serial, parallel in reversed(points):
        if parallel < serial:
            point = size
        else:
            break
    return point


def run_crossover(sizes=CROSSOVER_SIZES, dtype="float32", threads=None, repeat=7, console=None):
    """Serial vs parallel Adam kernels by size: where does the thread pool start paying off?

    numba: the backend's serial Adam loop against its parallel loop for the size (in the
    cache fastoptim's pool, ``_pool.pooled``, or one block per OpenMP thread without the C
    build; the chunked prefetching loop above; ``numba_backend._ADAM``).
    C: the kernel with 1 thread vs ``threads`` (the pool in the cache, OpenMP above), with
    the thread policy's serial threshold lowered to 1 for the measurement. Isolated kernels: the crossover that
    ``PARALLEL_MIN`` uses was measured inside the training loop (``bench --loop
    --loop-dispatch``); this table shows the kernels alone.
    """
    from fastoptim.backends._scalars import adam_scalars

    dtype = np.dtype(dtype)
    threads = check_threads(threads)
    sizes = [parse_size(s) for s in sizes]
    scalars = adam_scalars(dtype, step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                           weight_decay=0, decoupled_weight_decay=False)
    out = {"dtype": dtype.name, "threads": threads, "kernels": {}}
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if _backends.is_available("numba"):
            nb = _backends.load("numba")
            points = []
            for n in sizes:
                arrays, args = _crossover_arrays(n, dtype), (*scalars, False)
                blocked = _threads.mode(n, dtype.itemsize * 4) != _threads.CHUNKED
                parallel = ((lambda: _pool.run_in_cache(nb._ADAM, arrays, args, threads))
                            if blocked else (lambda: nb._ADAM.run_parallel(arrays, args)))
                points.append((n, median_time(lambda: nb._ADAM.run_serial(arrays, args), repeat),
                               median_time(parallel, repeat)))
            out["kernels"]["numba"] = _crossover_entry(points, _threads.PARALLEL_MIN)
        if _backends.is_available("c"):
            c = _backends.load("c")
            kw = dict(step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
                      amsgrad=False, maximize=False, decoupled_weight_decay=False)
            points = []
            saved_c = c.max_threads()
            saved_dispatch = _threads.set_dispatch(parallel_min=1)
            try:
                for n in sizes:
                    p, g, m, v = _crossover_arrays(n, dtype)
                    timings = []
                    for t in (1, threads):
                        c.set_num_threads(t)
                        timings.append(median_time(lambda: c.adam(p, g, m, v, None, **kw),
                                                    repeat))
                    points.append((n, *timings))
            finally:
                c.set_num_threads(saved_c)
                _threads.set_dispatch(*saved_dispatch)
            out["kernels"]["c"] = _crossover_entry(points, _threads.PARALLEL_MIN)
    finally:
        numba.set_num_threads(saved)
    if console is not None:
        for table in crossover_tables(out):
            console.print(table)
    return out


def _crossover_arrays(n, dtype):
    rng = np.random.default_rng(n)
    p = rng.random(n, dtype=dtype)
    g = (rng.random(n, dtype=dtype) - dtype.type(0.5)) * dtype.type(1e-2)
    return p, g, np.zeros(n, dtype), np.zeros(n, dtype)


def _crossover_entry(points, threshold):
    return {
        "threshold": threshold,
        "points": [{"elements": n, "serial_s": s, "parallel_s": p} for n, s, p in points],
        "parallel_wins_from": crossover_point(points),
    }


def crossover_tables(crossover):
    from rich.table import Table

    tables = []
    for name, entry in crossover["kernels"].items():
        where = entry["parallel_wins_from"]
        threshold = entry["threshold"]
        if where is None:
            verdict = "serial wins at every size tested"
        else:
            verdict = f"parallel wins from {format_size(where)} elements"
        title = (f"Serial vs parallel, {name} Adam kernel, {crossover['dtype']}, "
                 f"{crossover['threads']} threads")
        caption = f"{verdict}; the backend switches to parallel at {format_size(threshold)}"
        table = Table(title=title, title_justify="left", caption=caption,
                      caption_justify="left")
        columns = ["elements", "serial" if name == "numba" else "1 thread",
                   "parallel" if name == "numba" else f"{crossover['threads']} threads",
                   "parallel speedup", "winner"]
        for col in columns:
            table.add_column(col, justify="right")
        for pt in entry["points"]:
            speedup = pt["serial_s"] / pt["parallel_s"]
            cells = [format_size(pt["elements"]), format_time(pt["serial_s"]),
                     format_time(pt["parallel_s"]), ratio(speedup),
                     "parallel" if speedup > 1 else "serial"]
            table.add_row(*cells)
        tables.append(table)
    return tables
