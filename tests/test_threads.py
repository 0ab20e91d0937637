"""fastoptim's thread policy (backends/_threads.py): one thread count, thresholds and
spin policy for every CPU kernel."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim.backends import _threads

FAST = [b for b in fastoptim.available_backends() if b not in ("numpy", "cuda")]


def _child(code, **env):
    full = dict(os.environ)
    for key in _threads.USER_VARIABLES:
        full.pop(key, None)
    full.update(env)
    # cwd: the installed package, not a checkout's uncompiled source tree (`-c` puts the
    # working directory first on sys.path)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(fastoptim.__file__)))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_sets_the_spin_policy_before_libgomp_loads():
    code = ("import os, fastoptim; print(os.environ.get('GOMP_SPINCOUNT'), '|', "
            "fastoptim.thread_info()['spin_policy'])")
    spin, policy = _child(code).split(" | ")
    assert spin == _threads.SPINCOUNT and policy.startswith("fastoptim:")


def test_a_user_setting_is_left_alone():
    code = ("import os, fastoptim; print(os.environ.get('GOMP_SPINCOUNT'), '|', "
            "fastoptim.thread_info()['spin_policy'])")
    spin, policy = _child(code, OMP_WAIT_POLICY="active").split(" | ")
    assert spin == "None" and policy == "user: OMP_WAIT_POLICY=active"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_libgomp_loaded_first_is_reported_not_overridden():
    code = ("import ctypes, ctypes.util, os; ctypes.CDLL(ctypes.util.find_library('gomp')); "
            "import fastoptim; "
            "print(os.environ.get('GOMP_SPINCOUNT'), '|', fastoptim.thread_info()['spin_policy'])")
    spin, policy = _child(code).split(" | ")
    assert spin == "None" and policy.startswith("not applied: libgomp was loaded")


def test_set_num_threads_validates_and_round_trips():
    import numba

    before = fastoptim.get_num_threads()
    limit = numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match="between 1 and"):
        fastoptim.set_num_threads(0)
    with pytest.raises(ValueError, match="between 1 and"):
        fastoptim.set_num_threads(limit + 1)
    with pytest.raises(TypeError, match="must be an int"):
        fastoptim.set_num_threads(1.5)
    assert fastoptim.get_num_threads() == before
    try:
        fastoptim.set_num_threads(1)
        assert fastoptim.get_num_threads() == 1
        assert fastoptim.thread_info()["requested"] == 1
    finally:
        fastoptim.set_num_threads(limit)
    assert fastoptim.get_num_threads() == min(limit, fastoptim.thread_info()["openmp_limit"]
                                              or limit)


def test_mode_follows_the_thresholds():
    assert _threads.mode(_threads.PARALLEL_MIN - 1, 16) == _threads.SERIAL
    assert _threads.mode(_threads.PARALLEL_MIN, 16) == _threads.BLOCKED
    big = max(_threads.BLOCKED_MAX_BYTES // 16 + 1, _threads.PARALLEL_MIN)
    beyond = _threads.CHUNKED if _threads.PREFETCH_LOOP else _threads.BLOCKED
    assert _threads.mode(big, 16) == beyond
    previous = _threads.set_dispatch(10, 100, True)
    try:
        assert (_threads.PARALLEL_MIN, _threads.BLOCKED_MAX_BYTES) == (10, 100)
        assert _threads.mode(9, 4) == _threads.SERIAL
        assert _threads.mode(25, 4) == _threads.BLOCKED
        assert _threads.mode(26, 4) == _threads.CHUNKED
        assert _threads.pool_max_bytes() == 100
        _threads.set_dispatch(prefetch_loop=False)  # the pool at every parallel size
        assert _threads.mode(9, 4) == _threads.SERIAL
        assert _threads.mode(26, 4) == _threads.BLOCKED
        assert _threads.mode(2**40, 16) == _threads.BLOCKED
        assert _threads.info()["prefetch_loop"] is False
    finally:
        _threads.set_dispatch(*previous)
    assert (_threads.PARALLEL_MIN, _threads.BLOCKED_MAX_BYTES, _threads.PREFETCH_LOOP) == previous


def test_prefetch_loop_follows_the_cpu_vendor():
    # the chunked prefetching loop paid on the Intel Xeon it was tuned on and lost to the
    # pool on an AMD EPYC (see _threads' docstring): the default follows the vendor
    assert _threads.PREFETCH_LOOP == (_threads.CPU_VENDOR == "GenuineIntel")
    assert _threads.info()["cpu_vendor"] == _threads.CPU_VENDOR


def test_cpuinfo_reads_one_field(tmp_path, monkeypatch):
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
            "flags\t\t: fpu vme\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n")
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    real_open = open

    def fake_open(name, *args, **kwargs):
        return real_open(path if name == "/proc/cpuinfo" else name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert _threads.cpuinfo("vendor_id") == "AuthenticAMD"
    assert _threads.cpuinfo("model name") == "AMD EPYC 9R14"
    assert _threads.cpuinfo("flags") == "fpu vme"
    assert _threads.cpuinfo("cpu MHz") == ""
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    assert _threads.cpuinfo("vendor_id") == ""


@pytest.mark.skipif("c" not in FAST, reason="needs the C module")
def test_threadpoolctl_openmp_limit_is_honoured():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastoptim.get_num_threads() == 1
        # and the kernels still give the reference's numbers on the serial path
        n = _threads.PARALLEL_MIN + 5
        for backend in FAST:
            p, q = np.ones(n, np.float32), np.ones(n, np.float32)
            g = np.linspace(-1, 1, n, dtype=np.float32)
            fastoptim.Adam([p], backend=backend).step([g])
            fastoptim.Adam([q], backend="numpy").step([g])
            np.testing.assert_array_equal(p, q)
    assert fastoptim.get_num_threads() >= 1


@pytest.mark.skipif("numba" not in FAST, reason="needs numba")
@pytest.mark.parametrize("prefetch_loop", [True, False])
def test_numba_runs_beyond_the_cache_where_the_policy_says(monkeypatch, prefetch_loop):
    from fastoptim.backends import numba_backend

    calls = []
    monkeypatch.setattr(numba_backend._pool, "run_in_cache",
                        lambda kernel, arrays, scalars, threads: calls.append("pool"))
    kernel = numba_backend._SGD
    monkeypatch.setattr(type(kernel), "run_parallel",
                        lambda self, arrays, scalars: calls.append("chunked"))
    p, g = np.zeros(4096, np.float32), np.ones(4096, np.float32)
    previous = _threads.set_dispatch(1024, 4096, prefetch_loop)  # 32 KiB: beyond the "cache"
    try:
        if _threads.parallel_threads() == 1:
            pytest.skip("one thread: every call is serial")
        numba_backend.sgd(p, g, None, lr=0.1, momentum=0, dampening=0, weight_decay=0,
                          nesterov=False, maximize=False, first_step=True)
    finally:
        _threads.set_dispatch(*previous)
    assert calls == ["chunked" if prefetch_loop else "pool"]
