"""Test set-up shared by every test module.

- CUDA: on a machine without a usable NVIDIA driver, Numba's CUDA simulator is
  switched on *before* anything imports ``numba.cuda``, so the CUDA tests run
  (slowly, on tiny arrays) everywhere; on a real GPU they run unchanged on it.
  Set NUMBA_ENABLE_CUDASIM yourself to override.
- FASTOPTIM_REQUIRE_BACKENDS (set by .ci/run): a comma-separated list of
  backends that must be available; a missing one fails the run instead of
  silently skipping its tests (e.g. an uncompiled C extension).
"""
import ctypes.util
import os


def _has_cuda_driver() -> bool:
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl") or bool(
        ctypes.util.find_library("cuda") and os.path.exists("/proc/driver/nvidia")
    )


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _has_cuda_driver():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import sys

# test helper modules (golden_cases.py, ...) are imported by name from this folder;
# the repo root is NOT put on sys.path, so the installed fastoptim is the one tested.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import pytest  # noqa: E402


@pytest.fixture
def parallel_from_64k():
    """The thread policy's serial/parallel threshold at 64K elements for one test (the
    shipped one is 128K): tests of the parallel kernels use it with
    small arrays. Restored afterwards, for every backend."""
    from fastoptim.backends import _threads

    previous = _threads.set_dispatch(parallel_min=65536)
    yield 65536
    _threads.set_dispatch(*previous)
