"""fastoptim.bench.crossover: serial against parallel kernels by size."""
import io

import pytest

from fastoptim import backends, bench
from fastoptim.bench import crossover

FAST = [b for b in backends.available_backends() if b not in (backends.REFERENCE, "cuda")]


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=140, color_system=None)


@pytest.mark.skipif("numba" not in FAST, reason="numba backend unavailable")
def test_crossover_reports_serial_and_parallel_times():
    console = _console()
    result = bench.run_crossover(sizes=[1024, 65536], repeat=2, console=console)
    entry = result["kernels"]["numba"]
    assert [p["elements"] for p in entry["points"]] == [1024, 65536]
    assert all(p["serial_s"] > 0 and p["parallel_s"] > 0 for p in entry["points"])
    assert "Serial vs parallel, numba Adam kernel" in console.file.getvalue()


def test_crossover_point():
    assert crossover.crossover_point([(1, 1, 2), (2, 2, 1), (4, 4, 2)]) == 2
    assert crossover.crossover_point([(1, 1, 2), (2, 2, 1), (4, 2, 4)]) is None
    assert crossover.crossover_point([(1, 2, 1), (2, 2, 1)]) == 1
