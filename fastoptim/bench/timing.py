"""Timing one contestant: the warm-up, one timed repeat, garbage collection off."""
from __future__ import annotations

import gc
import math
import statistics
import time

from .specs import MIN_REPEAT_S, WARMUP_MIN_STEPS


def warm_up(step, warmup_s) -> int:
    """Step until the warm-up is paid (page faults, JIT, caches, clocks); return the number of
    consecutive steps one timed repeat should take (at least ``MIN_REPEAT_S``)."""
    start, steps, last = time.perf_counter(), 0, []
    while True:
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        last.append(t1 - t0)
        steps += 1
        if (steps >= WARMUP_MIN_STEPS and t1 - start >= warmup_s) or steps >= 10000:
            break
    estimate = statistics.median(last[-5:])
    return max(1, min(10000, math.ceil(MIN_REPEAT_S / max(estimate, 1e-9))))


def time_repeat(step, inner) -> float:
    """Seconds per step over ``inner`` consecutive steps."""
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return (time.perf_counter() - t0) / inner


class NoGC:
    """Garbage collection off while timing (as timeit does)."""

    def __enter__(self):
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()


def median_time(call, repeat):
    """Median seconds per call of ``repeat`` timed repeats after a short warm-up."""
    with NoGC():
        inner = warm_up(call, 0.01)
        return statistics.median(time_repeat(call, inner) for _ in range(repeat))
