"""The optimizer inside a NumPy training loop (fastoptim.bench.loop), one pytest-benchmark
group per model and dtype: every fastoptim backend, backend="auto", the NumPy reference,
torch fused Adam on zero-copy views (when torch is installed) and a hand-written in-place
NumPy Adam. One benchmark round is ``STEPS`` training steps (forward, backward, step);
each contestant's weights are checked against the reference's before it is timed.

    pytest benchmarks/test_bench_loop.py --benchmark-only
    FASTOPTIM_BENCH_LOOP_MODELS=100K pytest benchmarks/test_bench_loop.py --benchmark-only
"""
import os

import pytest

from fastoptim.bench import loop as bench_loop
from fastoptim.bench.contestants import import_torch

MODELS = [m.strip() for m in os.environ.get("FASTOPTIM_BENCH_LOOP_MODELS", "100K,3M").split(",")
          if m.strip()]
STEPS = 10


def _contestants():
    torch = import_torch()
    return {c.key: c for c in bench_loop.contestants(None, torch)}


CONTESTANTS = _contestants()


@pytest.mark.parametrize("contestant", list(CONTESTANTS))
@pytest.mark.parametrize("model", MODELS)
def test_training_loop(benchmark, model, dtype, contestant):
    c = CONTESTANTS[contestant]
    train = bench_loop.checked_trainer(model, dtype, c, steps=STEPS)
    train()  # warm-up: caches, page faults, thread pools
    widths, batch = bench_loop.MODELS[model]
    benchmark.group = f"loop {model} {dtype}"
    benchmark.extra_info.update(model=model, widths=list(widths), batch=batch, dtype=dtype,
                                steps_per_round=STEPS, contestant=contestant)
    benchmark.pedantic(train, rounds=5, iterations=1)
