"""pytest-benchmark suites for fastoptim (not part of the default ``pytest`` run).

    pytest benchmarks/ --benchmark-only                       # everything
    pytest benchmarks/ --benchmark-only -k "adam and 16M"     # a slice
    pytest benchmarks/ --benchmark-only --benchmark-save=before
    pytest benchmarks/ --benchmark-only --benchmark-compare   # against the last saved run
    pytest benchmarks/ --benchmark-disable                    # each once, untimed: a smoke test

Every benchmark of one optimizer, size and dtype shares a pytest-benchmark group,
so the table of one run gives the ratios: fastoptim backends, the bandwidth floor
(a kernel moving the same bytes with no math) and the torch.optim peers. Each
fastoptim backend is checked against the NumPy reference before it is timed; a
mismatch fails the test and nothing is timed.

Environment variables narrow or widen the matrix:
    FASTOPTIM_BENCH_SIZES       single-tensor sizes, default "16M,256K"
    FASTOPTIM_BENCH_DTYPES      default "float32,float64"
    FASTOPTIM_BENCH_OPTIMIZERS  default "sgd,adam,adamw" (also: sgd-plain, amsgrad)
    FASTOPTIM_BENCH_THREADS     threads for numba, the C kernels and torch (default: all)
"""
import os

import numpy as np
import pytest

import fastoptim
from fastoptim import backends
from fastoptim.bench import contestants, floor, specs
from fastoptim.bench.timing import warm_up


def _env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


SIZES = [specs.parse_size(s) for s in _env_list("FASTOPTIM_BENCH_SIZES", "16M,256K")]
DTYPES = _env_list("FASTOPTIM_BENCH_DTYPES", "float32,float64")
OPTIMIZERS = _env_list("FASTOPTIM_BENCH_OPTIMIZERS", "sgd,adam,adamw")
BACKENDS = [b for b in backends.CPU_BACKENDS]  # unavailable ones are skipped, not hidden


def pytest_configure(config):
    threads = os.environ.get("FASTOPTIM_BENCH_THREADS")
    if threads:
        n = int(threads)
        fastoptim.set_num_threads(n)  # numba and the C kernels, through the thread policy
        try:
            import torch

            torch.set_num_threads(n)
        except ImportError:
            pass


def pytest_generate_tests(metafunc):
    for name, values, ids in (
        ("optimizer", OPTIMIZERS, None),
        ("backend", BACKENDS, None),
        ("size", SIZES, [specs.format_size(n) for n in SIZES]),
        ("dtype", DTYPES, None),
    ):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=ids)


class Helpers:
    """Data, reference results and warm-up shared by every benchmark module."""

    def __init__(self):
        self._data = {}
        self._references = {}

    def data(self, dtype) -> contestants.BenchData:
        key = np.dtype(dtype)
        if key not in self._data:
            self._data[key] = contestants.BenchData(key)
        return self._data[key]

    def fastoptim_step(self, optimizer, case, mode, backend, dtype):
        """A checked fastoptim step function; skips if the backend is unavailable and
        fails (before any timing) if its first steps differ from the NumPy reference."""
        if not backends.is_available(backend):
            pytest.skip(f"backend {backend!r} is not available here")
        spec, data = specs.OPTIMIZERS[optimizer], self.data(dtype)
        key = (optimizer, case, mode, np.dtype(dtype))
        if key not in self._references:
            self._references.clear()  # one reference in memory at a time
            opt, params, step = contestants.setup_fastoptim(spec, case, mode, data, backends.REFERENCE)
            for _ in range(specs.CHECK_STEPS):
                step()
            self._references[key] = contestants.snapshot(opt, params)
        opt, params, step = contestants.setup_fastoptim(spec, case, mode, data, backend)
        for _ in range(specs.CHECK_STEPS):
            step()
        mismatch = contestants.compare(contestants.snapshot(opt, params), self._references[key],
                                 specs.RTOL[np.dtype(dtype)])
        if mismatch:
            pytest.fail(f"{backend} differs from the NumPy reference, not timed: {mismatch}")
        return step

    def floor_step(self, optimizer, n, dtype, variant):
        spec = specs.OPTIMIZERS[optimizer]
        param0, grad = self.data(dtype)(n)
        arrays = [param0.copy(), grad] + [np.zeros(n, dtype) for _ in range(spec.arrays - 2)]
        kernel = floor.floor_kernel(spec.arrays, n, variant)
        return lambda: kernel(*arrays)

    def torch_step(self, optimizer, case, impl, dtype):
        torch = pytest.importorskip("torch")
        try:
            return contestants.setup_torch(torch, specs.OPTIMIZERS[optimizer], case, self.data(dtype),
                                     dict(impl))
        except Exception as exc:  # e.g. fused=True not supported by this build
            pytest.skip(f"torch.optim refused: {exc}")

    @staticmethod
    def run(benchmark, step, *, group, optimizer, n, dtype, **info):
        """Warm up (page faults, JIT), then let pytest-benchmark time ``step``."""
        warm_up(step, specs.WARMUP_S)
        spec = specs.OPTIMIZERS[optimizer]
        bytes_per_step = spec.streams * np.dtype(dtype).itemsize * n
        benchmark.group = group
        benchmark.extra_info.update(optimizer=optimizer, elements=n, dtype=str(dtype),
                                    bytes_per_step=bytes_per_step, **info)
        benchmark(step)
        if benchmark.stats is not None:  # None under --benchmark-disable: one untimed call
            median = benchmark.stats.stats.median
            benchmark.extra_info["GB/s (median)"] = round(bytes_per_step / median / 1e9, 2)


@pytest.fixture(scope="session")
def helpers():
    return Helpers()
