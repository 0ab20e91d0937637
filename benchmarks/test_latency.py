"""First-step latency (import + construct + first step, cold and warm Numba cache).

A timing measurement, so it lives here and not in tests/: ``pytest benchmarks/
--benchmark-only -k latency``. It runs ``latency.run_latency`` once (each row
is a fresh interpreter) and checks the rows it reports; the figures are in the
README's Performance section.
"""
import io

import pytest

from fastoptim import backends
from fastoptim.bench import latency


@pytest.mark.skipif(not backends.is_available("numba"), reason="numba backend unavailable")
def test_first_step_latency_cold_and_warm(benchmark):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140, color_system=None)
    rows = benchmark.pedantic(latency.run_latency, args=(["sgd"],),
                              kwargs=dict(threads=1, console=console, progress=False),
                              rounds=1, iterations=1)
    baseline, row = rows
    assert baseline["baseline"] and baseline["optimizer"] is None and not row["baseline"]
    for r in rows:
        for which in ("cold", "warm"):
            assert "error" not in r[which], r[which]
            assert r[which]["total_s"] > 0 and r[which]["first_step_s"] > 0
            assert isinstance(r[which]["scipy_imported"], bool)
        assert r["warm"]["first_step_s"] < r["cold"]["first_step_s"]  # the cache was used
    for which in ("cold", "warm"):
        assert isinstance(row[f"{which}_meets_goal"], bool)
        assert f"{which}_meets_goal" not in baseline  # a reference, not a contestant
    benchmark.extra_info.update(
        cold_first_step_s=row["cold"]["first_step_s"], warm_first_step_s=row["warm"]["first_step_s"])
