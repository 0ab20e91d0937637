"""fastoptim's thread pool (kernels/pool.c, backends/_pool.py): every chunk runs exactly
once, results are those of the serial kernels bit for bit, and no worker spins between
steps."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastoptim
from fastoptim.backends import _pool, _threads

pytestmark = pytest.mark.skipif(not _pool.available(), reason="C kernels not compiled")
FAST = [b for b in fastoptim.available_backends() if b in ("numba", "c")]

if _pool.available():
    from fastoptim._ckernels import ffi, lib


def _record_chunks(n, chunk, threads):
    """Run the pool with a Python task that records the ranges it gets (and the thread)."""
    seen = []
    lock = threading.Lock()

    @ffi.callback("void(void *, int64_t, int64_t)")
    def task(context, lo, hi):
        with lock:
            seen.append((lo, hi, threading.get_ident()))

    lib.fo_pool_set_adaptive(0)  # every call goes to the workers
    try:
        lib.fo_pool_run(task, ffi.NULL, n, chunk, threads)
    finally:
        lib.fo_pool_set_adaptive(1)
    return seen


@pytest.mark.parametrize("n, chunk", [(1, 1), (10, 3), (1000, 7), (4096, 4096), (4097, 4096),
                                      (100_000, 1000), (5, 100)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_element_is_covered_exactly_once(n, chunk, threads):
    seen = _record_chunks(n, chunk, threads)
    ranges = sorted((lo, hi) for lo, hi, _ in seen)
    if chunk >= n or threads == 1:
        assert ranges == [(0, n)]  # one call on the caller
    else:
        assert ranges == [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


def test_an_empty_range_runs_nothing():
    assert _record_chunks(0, 16, 2) == []
    assert _record_chunks(-5, 16, 2) == []


def test_the_caller_works_too():
    # the caller claims chunks from the start: with a slow task it always gets some
    @ffi.callback("void(void *, int64_t, int64_t)")
    def task(context, lo, hi):
        time.sleep(0.002)

    lib.fo_pool_set_adaptive(0)
    try:
        lib.fo_pool_run(task, ffi.NULL, 20, 1, 2)
    finally:
        lib.fo_pool_set_adaptive(1)
    assert 1 <= lib.fo_pool_last_caller_chunks() <= 20


def test_workers_that_never_get_a_share_stop_being_woken():
    # a task that finishes before any worker could arrive: the caller runs every chunk, so
    # after POOL_STREAK such calls the next POOL_SKIP run alone, then one probes again
    from fastoptim.backends._constants import POOL_SKIP, POOL_STREAK

    calls = []

    @ffi.callback("void(void *, int64_t, int64_t)")
    def task(context, lo, hi):
        calls.append((lo, hi))

    lib.fo_pool_set_adaptive(0)
    lib.fo_pool_set_adaptive(1)  # a fresh streak
    before = lib.fo_pool_skipped_calls()
    lib.fo_pool_set_spin_ns(0)  # workers sleep at once: they arrive late
    try:
        whole = 0
        for _ in range(POOL_STREAK + POOL_SKIP + 1):
            calls.clear()
            time.sleep(0.001)
            lib.fo_pool_run(task, ffi.NULL, 4, 1, 2)
            whole += calls == [(0, 4)]
    finally:
        lib.fo_pool_set_spin_ns(_threads_spin())
    skipped = lib.fo_pool_skipped_calls() - before
    assert skipped >= POOL_SKIP  # the streak came, the skips followed
    assert whole == skipped  # a skipped call runs the whole range as one task


def _threads_spin():
    from fastoptim.backends._constants import POOL_SPIN_NS

    return POOL_SPIN_NS


def _worker_states():
    """The state letter (R running, S sleeping) of every thread of this process but the
    calling one."""
    me = threading.get_native_id()
    states = {}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            with open(f"/proc/self/task/{tid}/stat") as f:
                states[int(tid)] = f.read().rsplit(")", 1)[1].split()[0]
    return states


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_worker_spins_after_its_spin_time():
    # a child process: only the pool's workers (and no OpenMP team) run there
    code = """
import os, time, threading, numpy as np, fastoptim
from fastoptim._ckernels import lib
p = np.ones(1 << 18, np.float32)
opt = fastoptim.Adam([p], lr=1e-3, backend="c")
for _ in range(3):
    opt.step([np.ones_like(p)])
assert lib.fo_pool_workers_started() >= 1
time.sleep(0.05 + lib.fo_pool_spin_ns() / 1e9)
def cpu(tid):
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime, in clock ticks
me = threading.get_native_id()
tids = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
before = {t: cpu(t) for t in tids}
time.sleep(0.3)
print(max(cpu(t) - before[t] for t in tids))
"""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env,
                         cwd=os.path.dirname(os.path.dirname(fastoptim.__file__)))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) <= 2  # ticks of 10 ms in 300 ms: asleep, not spinning


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=1e-3, weight_decay=0.1)), ("AdamW", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, amsgrad=True, maximize=True)), ("Lion", dict(lr=1e-4, weight_decay=0.1)),
])
def test_pooled_kernels_match_the_reference_bit_for_bit(backend, dtype, name, kwargs):
    n = _threads.PARALLEL_MIN * 3 + 17  # several chunks and a ragged tail
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    params = {b: p0.copy() for b in ("numpy", backend)}
    opts = {b: getattr(fastoptim, name)([params[b]], backend=b, **kwargs) for b in params}
    for g in grads:
        for b in opts:
            opts[b].step([g])
    np.testing.assert_array_equal(params[backend], params["numpy"])
    for key, value in opts["numpy"].state[0].items():
        np.testing.assert_array_equal(np.asarray(opts[backend].state[0][key]), np.asarray(value))


@pytest.mark.parametrize("backend", FAST)
def test_a_plain_list_on_the_pool_matches_the_reference(backend):
    rng = np.random.default_rng(4)
    shapes = [(1000,), (33, 31), (4096,), (7,)] * 40  # table rows: many pool chunks
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    params = {b: [p.copy() for p in p0] for b in ("numpy", backend)}
    opts = {b: fastoptim.Adam(params[b], lr=1e-2, backend=b) for b in params}
    previous = _threads.set_dispatch(parallel_min=4096)
    try:
        for g in grads:
            for b in opts:
                opts[b].step(g)
        assert opts[backend].last_plain_list_decline is None
    finally:
        _threads.set_dispatch(*previous)
    for a, b in zip(params[backend], params["numpy"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", FAST)
def test_two_threads_stepping_at_once_both_get_exact_results(backend):
    # the second caller finds the pool busy and runs on its own thread
    n = _threads.PARALLEL_MIN * 4
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    expected = p0.copy()
    ref = fastoptim.Adam([expected], lr=1e-3, backend="numpy")
    for _ in range(20):
        ref.step([g])
    results, errors = [], []

    def run():
        try:
            p = p0.copy()
            opt = fastoptim.Adam([p], lr=1e-3, backend=backend)
            for _ in range(20):
                opt.step([g])
            results.append(p)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3
    for p in results:
        np.testing.assert_array_equal(p, expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_steps_with_exact_results():
    import multiprocessing as mp

    n = _threads.PARALLEL_MIN * 2
    p = np.ones(n, np.float32)
    opt = fastoptim.Adam([p], lr=1e-3, backend=FAST[0])
    opt.step([np.full(n, 0.5, np.float32)])  # the pool has started in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue, FAST[0], n))
    child.start()
    result = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    q = np.ones(n, np.float32)
    ref = fastoptim.Adam([q], lr=1e-3, backend="numpy")
    for _ in range(2):
        ref.step([np.full(n, 0.5, np.float32)])
    assert result == float(q.sum())


def _child_step(queue, backend, n):
    p = np.ones(n, np.float32)
    opt = fastoptim.Adam([p], lr=1e-3, backend=backend)
    for _ in range(2):
        opt.step([np.full(n, 0.5, np.float32)])
    queue.put(float(p.sum()))


def test_one_thread_never_starts_a_worker():
    code = """
import numpy as np, fastoptim
from fastoptim._ckernels import lib
fastoptim.set_num_threads(1)
for backend in ("numba", "c"):
    if backend in fastoptim.available_backends():
        p = np.ones(1 << 18, np.float32)
        opt = fastoptim.Adam([p], lr=1e-3, backend=backend)
        for _ in range(3):
            opt.step([np.ones_like(p)])
print(lib.fo_pool_workers_started())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(fastoptim.__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_the_spin_time_can_be_set():
    before = lib.fo_pool_spin_ns()
    try:
        lib.fo_pool_set_spin_ns(1234)
        assert lib.fo_pool_spin_ns() == 1234
        lib.fo_pool_set_spin_ns(-5)
        assert lib.fo_pool_spin_ns() == 0
    finally:
        lib.fo_pool_set_spin_ns(before)


def _toy(lo, hi, out, a, b, flag):
    for i in range(lo, hi):
        out[i] = a + b if flag else b


@pytest.mark.parametrize("a", [np.int32(-3), np.int16(-3), np.uint8(7), -3, np.int64(-3)])
def test_every_scalar_type_reaches_the_task_as_written(a):
    # the context holds one 8-byte slot per scalar: narrower integers must arrive intact
    import numba

    kernel = _pool.PooledKernel(numba.njit(_toy))
    out = np.zeros(50_000, np.float64)
    kernel.run((out,), (a, np.float64(0.5), True), 2)
    np.testing.assert_array_equal(out, float(a) + 0.5)
    kernel.run((out,), (a, np.float64(0.25), False), 2)
    np.testing.assert_array_equal(out, 0.25)
