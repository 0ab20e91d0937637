"""Running many training runs: worker processes, one BLAS/Numba thread each, and a progress bar.

The demo's models are small: one step is a few small matmuls and one
optimizer kernel call, tens to hundreds of microseconds. Threads do not pay
at that size (OpenBLAS and Numba's parallel loops each spawn their own, and
on a busy machine they wait for each other), so the demo runs one
single-threaded process per core instead, each training whole runs. Every
run is seeded on its own, so the results do not depend on the number of
workers or on the order in which the runs finish.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

from .data import load_dataset, load_mnist1d
from .training import RunSpec, train

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    spec: RunSpec
    data: tuple          # ("digits", source) or ("mnist1d", n_train): see get_data
    backend: str = "auto"
    keep_params: bool = False
    track_grad_sq: bool = False


_DATA = {}


def get_data(key):
    """The data set of a job, loaded once per process."""
    if key not in _DATA:
        kind, arg = key
        _DATA[key] = load_dataset(arg) if kind == "digits" else load_mnist1d(arg)
    return _DATA[key]


def run_job(job):
    return train(job.spec, get_data(job.data), backend=job.backend, keep_params=job.keep_params,
                 track_grad_sq=job.track_grad_sq)


class ProgressBar:
    """``[#####.....] 120/468 runs  35 s, about 90 s left`` on a terminal; a line per 10% otherwise."""

    def __init__(self, total, label, quiet=False, stream=None, width=30):
        self.total, self.label, self.quiet, self.width = total, label, quiet, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.start, self._shown = 0, time.perf_counter(), -1

    def text(self):
        elapsed = time.perf_counter() - self.start
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(round(frac * self.width))
        left = f", about {elapsed / frac * (1 - frac):.0f} s left" if 0 < frac < 1 else ""
        return (f"{self.label} [{bar:<{self.width}}] {self.done}/{self.total} runs  "
                f"{elapsed:.0f} s{left}")

    def update(self, n=1):
        self.done += n
        if self.quiet:
            return
        if self.tty:
            end = "\n" if self.done >= self.total else ""
            print("\r" + self.text(), end=end, file=self.stream, flush=True)
        else:
            decile = int(10 * self.done / self.total) if self.total else 10
            if decile > self._shown:
                self._shown = decile
                print(self.text(), file=self.stream, flush=True)


@contextmanager
def _single_threaded_env():
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _single_threaded_here():
    """Limit this process to one BLAS and one Numba thread while the runs are in it."""
    limits = None
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except Exception:  # threadpoolctl is optional: without it OpenBLAS keeps its threads
        limits = None
    try:
        import numba
        old = numba.get_num_threads()
        numba.set_num_threads(1)
    except Exception:
        numba, old = None, None
    try:
        yield
    finally:
        if numba is not None:
            numba.set_num_threads(old)
        if limits is not None:
            limits.restore_original_limits()


def _worker_init():
    try:
        import numba
        numba.set_num_threads(1)
    except Exception:
        pass


def run_jobs(jobs, workers=1, label="runs", quiet=False):
    """Run every job; returns the results in the order of ``jobs``.

    ``workers`` > 1: that many worker processes (spawned, single-threaded); else
    in this process, limited to one thread.
    """
    jobs = list(jobs)
    bar = ProgressBar(len(jobs), label, quiet)
    results = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        with _single_threaded_here():
            for i, job in enumerate(jobs):
                results[i] = run_job(job)
                bar.update()
        return results
    import multiprocessing as mp
    # the variables are read by NumPy's OpenBLAS and by Numba when a worker imports them
    with _single_threaded_env(), ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update()
    return results
