"""The machine a run measures: its description, other processes' load, thread settings."""
from __future__ import annotations

import os
import platform
import sys
import time

import numba
import numpy as np

import fastoptim
from fastoptim import backends as _backends
from fastoptim.backends import _threads

from .specs import BenchError


def _cpu_model() -> str:
    return _threads.cpuinfo("model name") or platform.processor() or platform.machine()


def _version(dist: str):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # not installed (or metadata missing)
        return None


def machine_info(threads=None) -> dict:
    """CPU, cores, thread layers and library versions, for the header and ``--json``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": _numba_threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else _version("torch"),
        "deepspeed": _version("deepspeed"),
        "fastoptim": fastoptim.__version__,
        "backends_available": _backends.available_backends(),
        "threads": threads if threads is not None else numba.get_num_threads(),
    }
    if "c" in info["backends_available"]:
        info["c_openmp_threads"] = _backends.load("c").max_threads()
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _system_busy_seconds():
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class CpuMeter:
    """How many CPUs *other* processes kept busy between ``start()`` and ``stop()``.

    System busy time minus this process's own CPU time (every thread: numba, OpenMP,
    torch), over the wall time. A parallel kernel waits at its barrier for its slowest
    thread: while another process holds a core, multi-threaded timings inflate.
    """

    def start(self):
        self.t0 = time.perf_counter()
        self.busy0 = _system_busy_seconds()
        self.own0 = time.process_time()
        return self

    def stop(self):
        """Average CPUs used by other processes (None where unknown)."""
        busy1 = _system_busy_seconds()
        wall = time.perf_counter() - self.t0
        if self.busy0 is None or busy1 is None or wall <= 0:
            return None
        others = (busy1 - self.busy0) - (time.process_time() - self.own0)
        return round(max(0.0, others / wall), 2)


def busy_cpus(interval=0.25):
    """CPUs kept busy by other processes while this one sleeps ``interval`` s, or None."""
    meter = CpuMeter().start()
    time.sleep(interval)
    return meter.stop()


def _numba_threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return "not initialised"


class Threads:
    """Set numba, C OpenMP and torch threads for the run; restore them afterwards."""

    def __init__(self, threads, torch):
        self.threads, self.torch = threads, torch
        self.saved = {}

    def __enter__(self):
        n = self.threads
        self.saved["fastoptim"] = _threads.parallel_threads()
        _threads.set_num_threads(n)  # numba and C, through the one thread policy
        if self.torch is not None:
            self.saved["torch"] = self.torch.get_num_threads()
            self.torch.set_num_threads(n)
        return self

    def __exit__(self, *exc):
        _threads.set_num_threads(self.saved["fastoptim"])
        if "torch" in self.saved:
            self.torch.set_num_threads(self.saved["torch"])


def check_threads(threads) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    threads = int(threads)
    if not 1 <= threads <= limit:
        raise BenchError(
            f"--threads {threads}: must be between 1 and {limit} "
            "(NUMBA_NUM_THREADS; set that environment variable to allow more)"
        )
    return threads


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
