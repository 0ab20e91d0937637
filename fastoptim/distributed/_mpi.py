"""MPI access for ``fastoptim.distributed``: the communicator, the agreement every collective
call starts with (an error flag and a layout signature, under a deadline), and aborting.

The bottom of the subpackage: mpi4py is imported on first use, so importing
``fastoptim.distributed`` works (and says what to install) without it.
"""
from __future__ import annotations

import hashlib
import sys
import time
import traceback

import numpy as np

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others at the start of a collective call


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "fastoptim.distributed needs mpi4py and an MPI library: pip install 'fastoptim[mpi]'"
        ) from exc
    return MPI


def _comm(comm):
    MPI = _mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator, but got {type(comm).__name__}")
    return comm


def _mpi_type(dtype):
    MPI = _mpi()
    return MPI.FLOAT if dtype == np.float32 else MPI.DOUBLE


def _signature(*parts) -> int:
    """A 62-bit hash of ``repr(parts)``: equal on every rank iff the layouts agree."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def _stderr():
    """The process's real stderr: an abort message must survive a test runner's capture."""
    return sys.__stderr__ or sys.stderr


# After an abort message is flushed, the launcher (mpiexec) still has to forward it: Abort
# kills the job at once, and once in CI the whole output of an aborted job came back empty.
ABORT_GRACE_S = 0.25


def _abort(comm, stream):
    stream.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(1)


def _wait(comm, request, timeout, what):
    """Wait for ``request``; after ``timeout`` seconds, explain on stderr and abort ``comm``."""
    if timeout is None:
        request.Wait()
        return
    start = time.perf_counter()
    deadline = start + timeout
    spins = 0
    while not request.Test():
        spins += 1
        now = time.perf_counter()
        if now > deadline:
            _stderr().write(
                f"fastoptim.distributed: rank {comm.Get_rank()} of {comm.Get_size()} waited "
                f"{timeout:g} s in {what} for the other ranks (one of them raised or is stuck "
                "before reaching it); aborting the communicator.\n")
            _abort(comm, _stderr())
        if now - start > 1e-3:  # busy-wait 1 ms (the common case), then yield the core
            time.sleep(min(1e-3 * (1 + spins // 1000), 0.02))


def _agree(comm, error, signature, timeout, what):
    """Every rank learns whether any rank failed its local checks or has another layout.

    One non-blocking all-reduce of three int64 values (MAX of the error flag, of
    the signature and of its negation, i.e. min and max). Raises ValueError on
    every rank when a check failed anywhere; the failing rank raises its own
    message. Returns normally only when every rank agrees.
    """
    MPI = _mpi()
    local = np.array([1 if error is not None else 0, signature, -signature], dtype=np.int64)
    result = np.empty(3, dtype=np.int64)
    _wait(comm, comm.Iallreduce(local, result, op=MPI.MAX), timeout, what)
    failed, high, low = int(result[0]), int(result[1]), -int(result[2])
    if error is not None:
        raise error
    if failed:
        raise ValueError(f"{what} was rejected on another rank (see its error); nothing was changed")
    if high != low:
        raise ValueError(f"{what}: the ranks disagree (different parameter layouts, shapes, "
                         "dtypes or options); nothing was changed")


def _abort_on_error(comm, what):
    """A context: an exception after data began to move leaves the ranks out of step: abort."""

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if kind is None or not issubclass(kind, Exception):
                return False
            _stderr().write(
                f"fastoptim.distributed: rank {comm.Get_rank()} raised inside {what} after the "
                "ranks had started exchanging data; they cannot continue in step, aborting the "
                "communicator:\n" + "".join(traceback.format_exception(kind, exc, tb)))
            _abort(comm, _stderr())
            return False  # pragma: no cover - Abort does not return

    return _Guard()


def abort_on_exception(comm=None):
    """Make an uncaught exception on this rank abort ``comm`` (all ranks), after printing it.

    Without this, the other ranks of a job whose rank raised may wait in their
    next collective call until its timeout. Call once at the start of a script.
    """
    comm = _comm(comm)
    previous = sys.excepthook

    def hook(kind, exc, tb):
        previous(kind, exc, tb)
        sys.stderr.write(f"fastoptim.distributed: uncaught exception on rank {comm.Get_rank()}; "
                         "aborting the communicator\n")
        _abort(comm, sys.stderr)

    sys.excepthook = hook
