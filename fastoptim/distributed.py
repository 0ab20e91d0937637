"""Data-parallel training over MPI: gradient all-reduce and ZeRO-1 sharded optimizer state.

Install with ``pip install "fastoptim[mpi]"`` (mpi4py and MPICH from PyPI, which
gives ``mpiexec``), then run ``mpiexec -n 2 python train.py``. Every process
(rank) holds the whole model and computes gradients on its own slice of the
batch. Two ways to take the same step everywhere:

* **Plain data parallelism**: :func:`allreduce_grads` averages the gradients
  in place (one ``Allreduce`` for a ``FlatParams`` gradient buffer, a few
  bucketed ones for a plain list); then every rank runs its own optimizer on
  the whole model, so every rank keeps the whole optimizer state.
* **ZeRO stage 1**: :class:`ZeroOptimizer` keeps only ``1/N`` of the optimizer
  state on each rank. A step is a ``Reduce_scatter_block`` of the gradients
  (each rank receives the averaged gradient of its shard), the fused fastoptim
  kernel on that shard, and an ``Allgather`` of the updated parameters::

      flat = fastoptim.FlatParams({"w1": w1, "b1": b1, "w2": w2})
      opt = ZeroOptimizer(fastoptim.AdamW, flat.params, lr=1e-3)  # comm: COMM_WORLD
      ...                               # forward/backward on this rank's slice
      opt.step(flat.grads)              # gradients of this rank's slice, not averaged

The design, the cost model (bytes moved per step and rank) and the measured
figures are in docs/distributed.md. The API at a glance:

* ``allreduce_grads(grads, comm)``, ``broadcast_params(params, comm)``;
* ``ZeroOptimizer(optimizer_class, params, comm=None, *, timeout=600, **hyperparameters)``
  with ``param_groups`` (schedulers work on it), ``step(grads)``,
  ``state_dict(to=0)`` / ``load_state_dict``, ``shard_state_dict()`` /
  ``load_shard_state_dicts``, and the ``last_step_skipped`` / ``skipped_steps`` /
  ``last_grad_norm`` of the single-process optimizers;
* ``save_checkpoint(path, optimizer, ..., sharded=False)`` and
  ``load_checkpoint(path, optimizer, ...)``: one file gathered on rank 0 (an
  ordinary fastoptim checkpoint that a single-process optimizer loads), or one
  file per rank in a directory; either loads with any number of ranks, into a
  ``ZeroOptimizer`` or a single-process optimizer;
* ``consolidate_shards(shards)``: the single-process ``state_dict`` of a set of
  shard state dicts; ``abort_on_exception(comm)``: an uncaught exception on
  any rank aborts the whole job instead of leaving the other ranks waiting.

Faults: every collective call of this module starts with a small agreement
(a non-blocking all-reduce of an error flag and a layout signature, polled with a
deadline of ``timeout`` seconds). A call rejected on one rank (bad gradient,
mismatched shapes) raises a ``ValueError`` on *every* rank before any data
moves; a rank that never arrives (it raised in user code, or is stuck) makes
the others print what happened and call ``comm.Abort()`` after ``timeout``
seconds, which ends the job. An exception inside a step after the data began
to move (the ranks can no longer agree on what happened) also aborts.
"""
from __future__ import annotations

import glob
import hashlib
import math
import os
import sys
import time
import traceback

import numpy as np

from .arrays import FlatGradDict, FlatGrads, FlatParams, find_segment

__all__ = [
    "allreduce_grads", "broadcast_params", "ZeroOptimizer", "save_checkpoint",
    "load_checkpoint", "consolidate_shards", "abort_on_exception", "DEFAULT_TIMEOUT",
]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others at the start of a collective call
DEFAULT_BUCKET_BYTES = 25 * 2**20  # plain-list all-reduce: gradients are packed into buckets of this size
SHARD_FORMAT = "fastoptim-zero1-shard"
_SHARD_FILE = "rank{rank:05d}-of-{world:05d}.ckpt"


# ------------------------------------------------------------------------ MPI access
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
            _stderr().flush()
            comm.Abort(1)
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
            _stderr().flush()
            comm.Abort(1)
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
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


# ------------------------------------------------------------------ gradient arrays
def _grad_list(grads):
    """(arrays, flat buffer or None) from FlatParams.grads, a list/tuple, a dict or one array."""
    if isinstance(grads, FlatParams):
        grads = grads.grads
    if isinstance(grads, (FlatGrads, FlatGradDict)):
        values = list(grads.values()) if isinstance(grads, dict) else list(grads)
        return values, grads.buffer
    if isinstance(grads, np.ndarray):
        return [grads], None
    if isinstance(grads, dict):
        return list(grads.values()), None
    if isinstance(grads, (list, tuple)):
        return list(grads), None
    raise TypeError("grads must be FlatParams.grads, a list or dict of arrays, or an array, "
                    f"but got {type(grads).__name__}")


def _check_grad_array(label, g):
    if not isinstance(g, np.ndarray):
        raise TypeError(f"{label} must be a NumPy array, but got {type(g).__name__}")
    if g.dtype not in (np.float32, np.float64):
        raise TypeError(f"{label} must be float32 or float64, but got {g.dtype}")
    if not g.flags.writeable:
        raise ValueError(f"{label} is read-only; it is averaged in place")


def allreduce_grads(grads, comm=None, *, average=True, bucket_bytes=DEFAULT_BUCKET_BYTES,
                    timeout=DEFAULT_TIMEOUT):
    """Sum (``average=True``: average) the gradients of every rank, in place; return ``grads``.

    ``grads``: ``FlatParams.grads`` (or the FlatParams): one ``Allreduce`` over
    its whole buffer, no copy. A list, tuple or dict of arrays (``None`` entries
    are skipped and must be ``None`` on every rank): the arrays are packed, in
    order and by dtype, into buffers of about ``bucket_bytes`` (an array larger
    than that and contiguous is reduced on its own, in place), one ``Allreduce``
    per bucket; the packing buffer (one per dtype, at most the largest bucket) is
    kept for the next call. Averaging divides the sum by the number of ranks. On
    one rank nothing is done.

    Before any data moves the ranks check that their gradients have the same
    shapes and dtypes: a mismatch, or a bad gradient on one rank, raises
    ValueError/TypeError on every rank instead of a deadlock (see the module doc
    for ``timeout``).
    """
    comm = _comm(comm)
    MPI = _mpi()
    error = None
    arrays, buffer = [], None
    try:
        arrays, buffer = _grad_list(grads)
        if buffer is not None:
            _check_grad_array("grads.buffer", buffer)
            if not buffer.flags.c_contiguous:
                raise ValueError("grads.buffer must be contiguous")
        for i, g in enumerate(arrays):
            if g is not None:
                _check_grad_array(f"grads[{i}]", g)
        if not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be a positive int, got {bucket_bytes!r}")
    except (TypeError, ValueError) as exc:
        error = exc
    layout = (("flat", buffer.shape, buffer.dtype.str) if buffer is not None and error is None
              else tuple(None if g is None else (g.shape, g.dtype.str) for g in arrays)
              if error is None else None)
    _agree(comm, error, _signature("allreduce_grads", layout, bool(average)), timeout,
           "allreduce_grads")
    size = comm.Get_size()
    if size == 1:
        return grads  # the sum and the average over one rank are its own gradients
    with _abort_on_error(comm, "allreduce_grads"):
        if buffer is not None:
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            if average and size > 1:
                np.divide(buffer, buffer.dtype.type(size), out=buffer)
            return grads
        for bucket in _buckets(arrays, bucket_bytes):
            if len(bucket) == 1 and bucket[0].flags.c_contiguous:  # reduce it where it is
                flat = bucket[0].reshape(-1)
                comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
                if average and size > 1:
                    np.divide(flat, flat.dtype.type(size), out=flat)
                continue
            packed = _bucket_buffer(bucket[0].dtype, sum(g.size for g in bucket))
            np.concatenate([g.reshape(-1) for g in bucket], out=packed)
            comm.Allreduce(MPI.IN_PLACE, packed, op=MPI.SUM)
            if average and size > 1:
                np.divide(packed, packed.dtype.type(size), out=packed)
            start = 0
            for g in bucket:
                g[...] = packed[start:start + g.size].reshape(g.shape)
                start += g.size
    return grads


_BUCKET_BUFFERS: dict = {}  # dtype -> the packing buffer, reused call after call


def _bucket_buffer(dtype, size):
    """A packing buffer of ``size`` elements: one per dtype, kept (pages already touched)."""
    buf = _BUCKET_BUFFERS.get(dtype.str)
    if buf is None or buf.size < size:
        buf = _BUCKET_BUFFERS[dtype.str] = np.empty(size, dtype)
    return buf[:size]


def _buckets(arrays, bucket_bytes):
    """Consecutive runs of same-dtype arrays of at most ``bucket_bytes`` (or one larger array)."""
    bucket, nbytes = [], 0
    for g in arrays:
        if g is None or g.size == 0:
            continue
        if bucket and (g.dtype != bucket[0].dtype or nbytes + g.nbytes > bucket_bytes):
            yield bucket
            bucket, nbytes = [], 0
        bucket.append(g)
        nbytes += g.nbytes
    if bucket:
        yield bucket


def broadcast_params(params, comm=None, root=0, timeout=DEFAULT_TIMEOUT):
    """Copy rank ``root``'s parameters into every rank's, in place (start every rank alike).

    ``params``: a FlatParams (one ``Bcast`` of its buffer), or a list/dict of
    contiguous arrays (one ``Bcast`` each).
    """
    comm = _comm(comm)
    if isinstance(params, FlatParams):
        arrays = [params.buffer]
    else:
        arrays, _ = _grad_list(params)
    error = None
    try:
        for i, a in enumerate(arrays):
            _check_grad_array(f"params[{i}]", a)
            if not a.flags.c_contiguous:
                raise ValueError(f"params[{i}] must be contiguous")
    except (TypeError, ValueError) as exc:
        error = exc
    sig = _signature([(a.shape, a.dtype.str) for a in arrays]) if error is None else 0
    _agree(comm, error, sig, timeout, "broadcast_params")
    with _abort_on_error(comm, "broadcast_params"):
        for a in arrays:
            comm.Bcast(a, root=root)
    return params


# ----------------------------------------------------------------------- ZeRO-1
class ZeroOptimizer:
    """ZeRO stage 1: a fastoptim optimizer whose state is sharded over the ranks of ``comm``.

    Args:
        optimizer_class: :class:`fastoptim.SGD`, :class:`~fastoptim.Adam`,
            :class:`~fastoptim.AdamW` (any :class:`fastoptim.Optimizer` subclass).
        params: what ``optimizer_class`` takes: a list of arrays, a dict of named
            arrays, a list of param-group dicts with their own hyperparameters,
            ``FlatParams.params`` (or the FlatParams itself). All of one dtype.
            They must be the same shapes, in the same order, on every rank (checked).
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        timeout: seconds a rank waits for the others at the start of a step
            (or any other collective call) before it aborts the communicator;
            None: wait forever.
        **hyperparameters: the optimizer's (``lr``, ``betas``, ``momentum``, ...,
            ``backend``, ``skip_nonfinite``, ``max_grad_norm``), with the same
            meaning as in the single-process optimizer.

    Layout: every parameter of every group, in order, is one flat vector of T
    elements, cut into N shards of ``S = ceil(T / N)`` (the last one padded).
    Rank r owns elements ``[r*S, min((r+1)*S, T))``; the shard's piece of each
    param group is stepped by an ``optimizer_class`` with that group's
    hyperparameters. This rank's state lives in one flat buffer of S elements
    per state key (``state_buffers``: ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``, ``momentum_buffer``), padded like the shards; every
    group's state array of that key is a view of its piece of the buffer.

    ``step(grads)`` takes this rank's *local* gradients (not averaged: the
    reduce-scatter averages them), laid out as for the single-process optimizer;
    every gradient is needed (no ``None``). With ``FlatParams`` whose buffer
    holds exactly these parameters, no gradient or parameter is copied.
    """

    def __init__(self, optimizer_class, params, comm=None, *, timeout=DEFAULT_TIMEOUT,
                 **hyperparameters):
        from .optimizers import Optimizer

        self.comm = comm = _comm(comm)
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError("optimizer_class must be a fastoptim optimizer class (SGD, Adam, "
                            f"AdamW, ...), but got {optimizer_class!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.optimizer_class = optimizer_class
        if isinstance(params, FlatParams):
            params = params.params
        if not isinstance(params, (dict, list, tuple, set, np.ndarray)):
            params = list(params)  # a generator: it is read again to check loaded state
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        error, sig = None, 0
        try:
            self._setup(optimizer_class, params, hyperparameters)
            sig = _signature(optimizer_class.__name__, self.world_size, self._describe())
        except (TypeError, ValueError) as exc:
            error = exc
        _agree(comm, error, sig, timeout, "ZeroOptimizer()")

    def _setup(self, optimizer_class, params, hyperparameters):
        hyper = dict(hyperparameters)
        self.skip_nonfinite = bool(hyper.pop("skip_nonfinite", False))
        self.max_grad_norm = hyper.pop("max_grad_norm", None)
        # the single-process optimizer validates params, groups and hyperparameters;
        # it never steps, so it allocates no state: its param_groups are ours
        self._template = optimizer_class(params, skip_nonfinite=self.skip_nonfinite,
                                         max_grad_norm=self.max_grad_norm, **hyper)
        self._ctor = (params, dict(hyperparameters))
        self._names = (list(params) if isinstance(params, dict) and "params" not in params
                       else None)
        self._hyper = hyper
        self.backend = self._template.backend
        if self.backend == "cuda":
            raise ValueError("ZeroOptimizer runs on the CPU backends (numpy, numba, c)")
        self._params = [p for g in self._template.param_groups for p in g["params"]]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise TypeError(f"ZeroOptimizer needs parameters of one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self._sizes = [int(p.size) for p in self._params]
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        self.numel = total = int(self._offsets[-1])
        if total == 0:
            raise ValueError("ZeroOptimizer got parameters with no elements")
        group_sizes = [sum(int(p.size) for p in g["params"]) for g in self._template.param_groups]
        self._group_offsets = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
        n, r = self.world_size, self.rank
        self.shard_size = S = -(-total // n)
        self.padding = n * S - total
        self._counts = [max(0, min(S, total - k * S)) for k in range(n)]
        self._displs = [min(k * S, total) for k in range(n)]
        self.shard_range = (self._displs[r], self._displs[r] + self._counts[r])
        segment = find_segment(self._params)
        if segment is not None and segment[2].size == total:
            self._flat_root, self._flat = segment[0], segment[2]  # the user's buffer: no copies
            self._param_buffer = None
            shard = self._flat[self.shard_range[0]:self.shard_range[1]]
        else:
            self._flat_root = self._flat = None
            self._param_buffer = np.zeros(n * S, dtype=self.dtype)  # padded; pads stay 0
            shard = self._param_buffer[r * S:r * S + self._counts[r]]
        self._grad_buffer = None  # padded send buffer, allocated on the first packed step
        self._grad_shard = np.zeros(S, dtype=self.dtype)
        # the shard's piece of every param group (possibly empty), one inner group each
        lo, hi = self.shard_range
        self._pieces = []
        for g in range(len(group_sizes)):
            a = min(max(int(self._group_offsets[g]), lo), hi)
            b = min(max(int(self._group_offsets[g + 1]), lo), hi)
            self._pieces.append((a - lo, b - lo, a, b))  # shard-relative and global bounds
        inner_groups = [dict(self._hyperparameters_of(g), params=[shard[a:b]])
                        for g, (a, b, _, _) in zip(self._template.param_groups, self._pieces)]
        self._inner = optimizer_class(inner_groups, **hyper)
        # this rank's state: key -> one flat buffer of S elements (padded like the shards);
        # the inner optimizer's state array of each group is the view _state_views[(g, key)]
        self._state_buffers = {}
        self._state_views = {}
        self._steps = [0] * len(group_sizes)  # steps taken by each group (for state_dict)
        self.last_step_skipped = False
        self.skipped_steps = 0
        self.last_grad_norm = None
        # seconds of each phase of the last step on this rank: pack (list path: copy the
        # gradients into the send buffer), reduce_scatter (with the averaging division),
        # norm (max_grad_norm / skip_nonfinite: partial sums and their all-reduce), kernel
        # (the optimizer on the shard), allgather, unpack (list path: copy the parameters out)
        self.last_step_seconds = None

    def _describe(self):
        return ([(tuple(p.shape), p.dtype.str) for p in self._params],
                [len(g["params"]) for g in self._template.param_groups],
                sorted(self._hyper), self.skip_nonfinite, self.max_grad_norm,
                self._hyper_description())

    def _hyper_description(self):
        """Every group's hyperparameters: the ranks must step with the same ones."""
        return [sorted((k, repr(v)) for k, v in self._hyperparameters_of(g).items())
                for g in self._template.param_groups]

    @staticmethod
    def _hyperparameters_of(group):
        return {k: v for k, v in group.items() if k not in ("params", "param_names")}

    # the single-process optimizer's attributes that schedulers and users read
    @property
    def param_groups(self):
        """The param groups (all parameters, every rank): schedulers and users edit these."""
        return self._template.param_groups

    @property
    def defaults(self):
        return self._template.defaults

    @property
    def state(self):
        """This rank's shard state: ``{group index: {key: array}}``, each array a view of
        the group's piece of ``state_buffers[key]``."""
        return {g: dict(self._inner.state[g]) for g in range(len(self._pieces))
                if g in self._inner.state}

    @property
    def state_buffers(self):
        """This rank's state: ``{key: flat array of shard_size elements}``, one per state key.

        Every group's state array of ``key`` (see :attr:`state`) is a view of its
        piece of ``state_buffers[key]``; a key appears after the first step that
        creates it (or a load that brings it). The last rank's elements past its
        shard are padding (zeros).
        """
        return dict(self._state_buffers)

    def state_bytes(self):
        """Bytes of optimizer state held by this rank: the flat state buffers (S elements
        per key, padding included) and the groups' step counters."""
        counters = sum(int(np.asarray(dict.__getitem__(entry, "step")).nbytes)
                       for entry in dict.values(self._inner.state) if "step" in entry)
        return sum(int(b.nbytes) for b in self._state_buffers.values()) + counters

    def _adopt_state(self):
        """Move every state array of the inner optimizer into this rank's flat buffers.

        The inner optimizer creates a state array on the step that first needs it
        (torch's semantics: SGD's momentum buffer starts as the gradient) and
        when it loads a state dict. Each such array is copied into its group's
        piece of the key's buffer (S elements, made on first use) and replaced in
        the inner optimizer's state by that view, which it honours from the next
        step on. Arrays already in place are left alone, so a step that creates
        nothing costs one identity check per group and key. A key no group holds
        any more frees its buffer; a group without a key has zeros in its piece.
        """
        state = self._inner.state
        used = {}
        for g in range(len(self._pieces)):
            entry = dict.get(state, g)
            for key in (entry or ()):
                if key != "step":
                    used.setdefault(key, []).append(g)
        for key in [k for k in self._state_buffers if k not in used]:
            del self._state_buffers[key]
        self._state_views = {gk: v for gk, v in self._state_views.items() if gk[1] in used}
        for key, groups in used.items():
            buffer = self._state_buffers.get(key)
            if buffer is None:
                buffer = self._state_buffers[key] = np.zeros(self.shard_size, dtype=self.dtype)
            for g, (a, b, _, _) in enumerate(self._pieces):
                if g not in groups:
                    if self._state_views.pop((g, key), None) is not None:
                        buffer[a:b] = 0  # the group lost this key (a load): no stale values
                    continue
                entry = dict.__getitem__(state, g)
                value = dict.__getitem__(entry, key)
                view = self._state_views.get((g, key))
                if value is view:
                    continue
                view = buffer[a:b]
                view[...] = value  # shape (b - a,) and the parameters' dtype: the inner checked it
                entry[key] = view  # an edit the inner optimizer sees: it checks it at its next step
                self._state_views[(g, key)] = view

    def zero_grad(self):
        """Nothing to do: gradients are arguments to ``step``."""

    def __repr__(self):
        return (f"ZeroOptimizer({self.optimizer_class.__name__}, rank {self.rank} of "
                f"{self.world_size}, {self.numel} elements, shard {self.shard_size}, "
                f"backend={self.backend!r})")

    # ------------------------------------------------------------------ step
    def _local_grads(self, grads):
        """('flat', buffer) for the zero-copy path, or ('list', [arrays in param order])."""
        if isinstance(grads, FlatParams):
            grads = grads.grads
        if (isinstance(grads, (FlatGrads, FlatGradDict)) and self._flat_root is not None
                and grads.param_buffer is self._flat_root and len(grads) == len(self._params)):
            buffer = grads.buffer
            if buffer.dtype != self.dtype or buffer.shape != self._flat_root.reshape(-1).shape:
                raise ValueError("grads.buffer does not match the parameter buffer's dtype and size")
            start = self._flat.__array_interface__["data"][0] - \
                self._flat_root.__array_interface__["data"][0]
            start //= self.dtype.itemsize
            return "flat", buffer.reshape(-1)[start:start + self.numel]
        names = self._names
        if names is not None:
            if not isinstance(grads, dict):
                raise TypeError("this optimizer was built from a dict of named arrays: step() "
                                f"takes a dict of gradients with the same keys, got {type(grads).__name__}")
            if set(grads) != set(names):
                raise ValueError(f"grads keys do not match the parameters: expected {names}, "
                                 f"got {list(grads)}")
            arrays = [grads[k] for k in names]
        else:
            if isinstance(grads, dict):
                raise TypeError("step() takes a list of gradients (the optimizer was built from a list)")
            arrays = [grads] if isinstance(grads, np.ndarray) else list(grads)
        if len(arrays) != len(self._params):
            raise ValueError(f"step() expected {len(self._params)} gradients (one per parameter, "
                             f"group by group), got {len(arrays)}")
        for i, (g, p) in enumerate(zip(arrays, self._params)):
            if g is None:
                raise ValueError(f"grads[{i}] is None: ZeroOptimizer needs every gradient "
                                 "(pass zeros for a parameter that got none)")
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be a NumPy array, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, its parameter {p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype}, its parameter {p.dtype}")
        return "list", arrays

    def step(self, grads):
        """Average this step's gradients over the ranks and update every parameter (collective).

        Every rank must call it. A gradient rejected on any rank raises on every
        rank and changes nothing; see the class doc for the layout.
        """
        MPI = _mpi()
        comm, n, r, S = self.comm, self.world_size, self.rank, self.shard_size
        error, mode, payload = None, None, None
        try:
            mode, payload = self._local_grads(grads)
            from . import _validation as V  # the single-process checks of the safety options

            V.check_safety_options(self.skip_nonfinite, self.max_grad_norm)
            self._sync_hyperparameters()
        except (TypeError, ValueError) as exc:
            error = exc
        # the zero-copy path of a length that does not divide uses the "v" collectives; every
        # rank must take the same road, so the road is part of the agreement
        uneven_flat = mode == "flat" and self.padding != 0
        hyper = self._hyper_description() if error is None else None
        _agree(comm, error, _signature("step", uneven_flat, hyper), self.timeout,
               "ZeroOptimizer.step")
        count = self._counts[r]
        lo, hi = self.shard_range
        shard_grad = self._grad_shard[:count]
        mpi_type = _mpi_type(self.dtype)
        clock = time.perf_counter
        times = self.last_step_seconds = dict.fromkeys(
            ("pack", "reduce_scatter", "norm", "kernel", "allgather", "unpack"), 0.0)
        with _abort_on_error(comm, "ZeroOptimizer.step"):
            # 1. reduce-scatter: this rank receives the sum of every rank's gradient of its shard
            t0 = clock()
            clipping = self.max_grad_norm is not None
            if n == 1 and mode == "flat" and not clipping:
                shard_grad = payload  # one rank: its gradient is the average; read it in place
            elif mode == "flat" and not uneven_flat:
                comm.Reduce_scatter_block(payload, self._grad_shard, op=MPI.SUM)
            elif mode == "flat":
                comm.Reduce_scatter(payload, [self._grad_shard, count, mpi_type],
                                    recvcounts=self._counts, op=MPI.SUM)
            else:
                send = self._pack(payload)
                t1 = clock()
                times["pack"] = t1 - t0
                t0 = t1
                comm.Reduce_scatter_block(send, self._grad_shard, op=MPI.SUM)
            if n > 1:
                np.divide(shard_grad, self.dtype.type(n), out=shard_grad)
            t1 = clock()
            times["reduce_scatter"] = t1 - t0
            t0 = t1
            # 2. the global norm / finiteness from one all-reduce of the shards' partial sums
            skip = False
            if self.skip_nonfinite or self.max_grad_norm is not None:
                from .clip import clip_coef, norm_and_finite

                norm, finite = norm_and_finite([shard_grad], 2.0, self.backend) if count else (0.0, True)
                partial = np.array([norm * norm, 0.0 if finite else 1.0], dtype=np.float64)
                comm.Allreduce(MPI.IN_PLACE, partial, op=MPI.SUM)
                self.last_grad_norm = math.sqrt(partial[0]) if math.isfinite(partial[0]) else float(partial[0])
                self.last_step_skipped = skip = self.skip_nonfinite and partial[1] > 0
                if skip:
                    self.skipped_steps += 1
                elif clipping:
                    coef = clip_coef(self.max_grad_norm, self.last_grad_norm, self.dtype)
                    np.multiply(shard_grad, self.dtype.type(coef), out=shard_grad)
            else:
                self.last_step_skipped = False
            t1 = clock()
            times["norm"] = t1 - t0
            t0 = t1
            if skip:
                return
            # 3. the fused kernel on this rank's piece of every group
            if self._param_buffer is not None:  # parameters may have been edited since: refresh the shard
                self._unpack_shard()
            self._inner.step([shard_grad[a:b] for a, b, _, _ in self._pieces])
            self._adopt_state()  # a state array created by this step moves into the flat buffers
            for g in range(len(self._steps)):
                self._steps[g] += 1
            t1 = clock()
            times["kernel"] = t1 - t0
            t0 = t1
            # 4. all-gather the updated parameters (the user's buffer when they tile one; its
            #    length need not divide by N, whichever road the gradients took)
            if self._param_buffer is None and self.padding == 0:
                comm.Allgather(MPI.IN_PLACE, [self._flat, mpi_type])
            elif self._param_buffer is None:
                comm.Allgatherv(MPI.IN_PLACE, [self._flat, self._counts, self._displs, mpi_type])
            else:
                comm.Allgather(MPI.IN_PLACE, [self._param_buffer, mpi_type])
                t1 = clock()
                times["allgather"] = t1 - t0
                t0 = t1
                self._scatter_params()
                times["unpack"] = clock() - t0
                return
            times["allgather"] = clock() - t0

    def _sync_hyperparameters(self):
        """Copy the (scheduler-edited) hyperparameters into the shard's groups; check them."""
        groups = self._template.param_groups
        if len(groups) != len(self._pieces):
            raise ValueError("ZeroOptimizer's param groups cannot be added or removed after construction")
        check = getattr(self._template, "_check_group", None)  # the class's own validation
        for group, inner in zip(groups, self._inner.param_groups):
            if check is not None:
                check(group)
            inner.update(self._hyperparameters_of(group))

    def _pack(self, arrays):
        """Copy the gradients into the padded send buffer (the list path)."""
        if self._grad_buffer is None:
            self._grad_buffer = np.zeros(self.world_size * self.shard_size, dtype=self.dtype)
        buf = self._grad_buffer
        for g, start, stop in zip(arrays, self._offsets[:-1], self._offsets[1:]):
            buf[start:stop] = g.reshape(-1)
        return buf

    def _unpack_shard(self):
        """Copy this rank's range of the parameters into the padded parameter buffer."""
        lo, hi = self.shard_range
        for p, start, stop in zip(self._params, self._offsets[:-1], self._offsets[1:]):
            a, b = max(int(start), lo), min(int(stop), hi)
            if a < b:
                self._param_buffer[a:b] = p.reshape(-1)[a - start:b - start]

    def _scatter_params(self):
        """Copy the gathered parameter buffer back into the parameter arrays (the list path)."""
        for p, start, stop in zip(self._params, self._offsets[:-1], self._offsets[1:]):
            p[...] = self._param_buffer[start:stop].reshape(p.shape)

    # ------------------------------------------------------------ state dicts
    def _local_state(self):
        """Per group: {key: piece array} of this rank (copies), and the step counts."""
        out = []
        for g in range(len(self._pieces)):
            entry = dict.get(self._inner.state, g) or {}
            out.append({k: np.array(v, copy=True) for k, v in entry.items() if k != "step"})
        return out

    def shard_state_dict(self):
        """This rank's shard of the state, with what it takes to reassemble it (no communication).

        Load a full set of them, from any number of ranks, with
        :meth:`load_shard_state_dicts`, or turn them into a single-process
        ``state_dict`` with :func:`consolidate_shards`.
        """
        return {
            "format": SHARD_FORMAT, "optimizer": self.optimizer_class.__name__,
            "rank": self.rank, "world_size": self.world_size, "numel": self.numel,
            "shard_range": list(self.shard_range), "dtype": self.dtype.str,
            "shapes": [list(p.shape) for p in self._params],
            "group_offsets": [int(x) for x in self._group_offsets],
            "param_groups": self._template.state_dict()["param_groups"],
            "steps": list(self._steps),
            "counted": ["step" in (dict.get(self._inner.state, g) or {})
                        for g in range(len(self._pieces))],
            "state": self._local_state(),
        }

    def state_dict(self, to=0):
        """The whole state in the single-process optimizer's layout, gathered (collective).

        ``to``: the rank that receives it (the others get None), or ``"all"``.
        The result loads into ``optimizer_class`` over the same parameters, and
        into a ZeroOptimizer with any number of ranks (:meth:`load_state_dict`).
        """
        MPI = _mpi()
        comm = self.comm
        if to != "all" and not (isinstance(to, int) and 0 <= to < self.world_size):
            raise ValueError(f"to must be a rank (0..{self.world_size - 1}) or 'all', got {to!r}")
        local = self._local_state()
        keys = sorted({k for entry in local for k in entry})
        _agree(comm, None, _signature("state_dict", keys, to), self.timeout,
               "ZeroOptimizer.state_dict")
        lo, hi = self.shard_range
        mpi_type = _mpi_type(self.dtype)
        receive = to == "all" or self.rank == to
        full = {}
        with _abort_on_error(comm, "ZeroOptimizer.state_dict"):
            for key in keys:
                mine = np.zeros(hi - lo, dtype=self.dtype)
                for (a, b, _, _), entry in zip(self._pieces, local):
                    if key in entry:
                        mine[a:b] = entry[key]
                out = np.empty(self.numel, dtype=self.dtype) if receive else None
                spec = [out, self._counts, self._displs, mpi_type]
                if to == "all":
                    comm.Allgatherv(mine, spec)
                else:
                    comm.Gatherv(mine, spec if receive else None, root=to)
                full[key] = out
        if not receive:
            return None
        return self._assemble(full, local, self._template.state_dict()["param_groups"])

    def _assemble(self, full, local, groups):
        """The per-parameter state dict from flat per-key vectors of every element."""
        state = {}
        index = 0
        for g, group in enumerate(self._template.param_groups):
            keys = [k for k in full if k in local[g]] if local[g] else []
            counted = "step" in (dict.get(self._inner.state, g) or {})
            for _ in group["params"]:
                entry = {}
                if counted and self._steps[g] > 0:
                    entry["step"] = np.array(float(self._steps[g]), dtype=np.float32)
                start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
                for key in keys:
                    entry[key] = full[key][start:stop].reshape(self._params[index].shape).copy()
                if entry:
                    state[index] = entry
                index += 1
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a single-process ``state_dict`` (every rank passes the same one; collective).

        It may come from ``optimizer_class.state_dict()``, from :meth:`state_dict`
        of a ZeroOptimizer with any number of ranks, or from
        :func:`consolidate_shards`. Everything is checked first (by the
        single-process optimizer's own ``load_state_dict``); the parameters of a
        group must all have the same step count. A dict rejected on any rank
        raises on every rank and changes nothing.
        """
        error, plan = None, None
        try:
            plan = self._plan_load(state_dict)
        except (TypeError, ValueError, KeyError) as exc:
            error = exc if not isinstance(exc, KeyError) else ValueError(f"bad state_dict: {exc}")
        _agree(self.comm, error, _signature("load_state_dict"), self.timeout,
               "ZeroOptimizer.load_state_dict")
        self._install(*plan)

    def _plan_load(self, state_dict):
        check = self.optimizer_class(self._ctor[0], **self._ctor[1])  # validates in its own copy
        check.load_state_dict(state_dict)
        full = check.state_dict()
        groups = [{k: v for k, v in g.items()} for g in check.param_groups]
        inner_state, steps = {}, []
        index = 0
        for g, group in enumerate(groups):
            entries = [full["state"].get(index + i) for i in range(len(group["params"]))]
            index += len(group["params"])
            present = [e for e in entries if e]
            if present and len(present) != len(entries):
                raise ValueError(f"param group {g}: only some parameters have state; ZeroOptimizer "
                                 "needs all or none of a group's parameters to have stepped")
            if present and len({frozenset(e) for e in present}) != 1:
                raise ValueError(f"param group {g}: its parameters have different state entries")
            counted = bool(present) and "step" in present[0]
            if counted and len({float(e["step"]) for e in present}) != 1:
                raise ValueError(f"param group {g}: its parameters have different step counts")
            steps.append(int(float(present[0]["step"])) if counted else 0)
            if not present:
                continue
            a, b, ga, gb = self._pieces[g]
            entry = {}
            for key in present[0]:
                if key == "step":
                    entry[key] = present[0]["step"]
                    continue
                flat = np.empty(b - a, dtype=self.dtype)
                first = index - len(entries)
                for i, e in enumerate(entries):
                    start, stop = int(self._offsets[first + i]), int(self._offsets[first + i + 1])
                    s, t = max(start, ga), min(stop, gb)
                    if s < t:
                        flat[s - ga:t - ga] = np.asarray(e[key]).reshape(-1)[s - start:t - start]
                entry[key] = flat
            inner_state[g] = entry
        inner_groups = [dict(self._hyperparameters_of(group), params=[g])
                        for g, group in enumerate(groups)]
        return ([{k: v for k, v in group.items() if k not in ("params",)} for group in groups],
                {"state": inner_state, "param_groups": inner_groups}, steps)

    def load_shard_state_dicts(self, shards):
        """Load the shard state dicts of every rank of a run with any number of ranks (collective).

        Each rank copies only the ranges of its own shard out of them (see
        :meth:`_plan_shards`); a rejected set raises on every rank and changes nothing.
        """
        error, plan = None, None
        try:
            plan = self._plan_shards(shards)
        except (TypeError, ValueError, KeyError) as exc:
            error = exc if not isinstance(exc, KeyError) else ValueError(f"bad shard: {exc}")
        _agree(self.comm, error, _signature("load_shard_state_dicts"), self.timeout,
               "ZeroOptimizer.load_shard_state_dicts")
        self._install(*plan[:3])

    def _install(self, groups, inner_sd, steps):
        for group, loaded in zip(self._template.param_groups, groups):
            params = group["params"]
            group.clear()
            group.update(loaded)
            group["params"] = params
        self._inner.load_state_dict(inner_sd)
        self._adopt_state()
        self._steps = list(steps)

    def _plan_shards(self, shards):
        """(groups, inner state dict, steps, parameter vector or None) from a run's shards.

        ``shards`` may be an iterator that reads one shard at a time: only this
        rank's range of the state is kept (a set of shards from N ranks loads into
        M ranks with at most one shard of another run in memory at a time).
        """
        first, seen, keys = None, set(), None
        pieces = {}
        params = np.empty(self.numel, dtype=self.dtype)
        has_params = None
        for shard in shards:
            if not isinstance(shard, dict) or shard.get("format") != SHARD_FORMAT:
                raise ValueError("not a ZeroOptimizer shard state dict")
            if first is None:
                first = shard
                self._check_shard_run(first)
                keys = [set(entry) for entry in first["state"]]
                for g, group_keys in enumerate(keys):
                    n = self._pieces[g][1] - self._pieces[g][0]
                    for key in group_keys:
                        pieces[(g, key)] = np.empty(n, dtype=self.dtype)
            for key in ("world_size", "numel", "shapes", "group_offsets", "optimizer", "dtype",
                        "steps", "counted"):
                if shard.get(key) != first[key]:
                    raise ValueError(f"the shards disagree on {key!r}: they are not from one run")
            rank = shard["rank"]
            if rank in seen or not 0 <= rank < first["world_size"]:
                raise ValueError(f"shard of rank {rank!r} given twice or out of range")
            seen.add(rank)
            lo, hi = shard["shard_range"]
            offsets = shard["group_offsets"]
            for g, entry in enumerate(shard["state"]):
                if set(entry) != keys[g]:
                    raise ValueError(f"the shards disagree on the state keys of group {g}")
                a_s = min(max(offsets[g], lo), hi)
                b_s = min(max(offsets[g + 1], lo), hi)
                _, _, ga, gb = self._pieces[g]
                x, y = max(ga, a_s), min(gb, b_s)
                for key, value in entry.items():
                    value = np.asarray(value)
                    if value.shape != (b_s - a_s,) or not np.issubdtype(value.dtype, np.floating):
                        raise ValueError(f"shard {rank}: state {key!r} of group {g} has shape "
                                         f"{value.shape} and dtype {value.dtype}, expected "
                                         f"{(b_s - a_s,)} floats")
                    if x < y:
                        pieces[(g, key)][x - ga:y - ga] = value[x - a_s:y - a_s]
            if (shard.get("params") is not None) is not has_params and has_params is not None:
                raise ValueError("some shards hold parameters and some do not")
            has_params = shard.get("params") is not None
            if has_params:
                value = np.asarray(shard["params"])
                if value.shape != (hi - lo,):
                    raise ValueError(f"shard {rank}: its parameters have shape {value.shape}, "
                                     f"expected {(hi - lo,)}")
                params[lo:hi] = value
        if first is None:
            raise ValueError("no shards given")
        if len(seen) != first["world_size"]:
            missing = sorted(set(range(first["world_size"])) - seen)
            raise ValueError(f"the run had {first['world_size']} ranks, the shards of ranks "
                             f"{missing} are missing: every shard is needed")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in first["param_groups"]]
        inner_state = {}
        for g in range(len(groups)):
            entry = {key: pieces[(g, key)] for key in keys[g]}
            if first["counted"][g] and first["steps"][g] > 0:
                entry["step"] = np.array(float(first["steps"][g]), dtype=np.float32)
            if entry:
                inner_state[g] = entry
        inner_sd = {"state": inner_state,
                    "param_groups": [dict(self._hyperparameters_of(group), params=[g])
                                     for g, group in enumerate(groups)]}
        # the single-process optimizer's own checks of the hyperparameters and state
        probe = self.optimizer_class(
            [dict(self._hyperparameters_of(group), params=[np.zeros(b - a, self.dtype)])
             for group, (a, b, _, _) in zip(groups, self._pieces)], **self._hyper)
        probe.load_state_dict(inner_sd)
        return groups, inner_sd, first["steps"], params if has_params else None

    def _check_shard_run(self, shard):
        """A shard's run must have this optimizer's class, parameters and groups."""
        if shard["optimizer"] != self.optimizer_class.__name__:
            raise ValueError(f"the shards are of a {shard['optimizer']} optimizer, this one is "
                             f"a {self.optimizer_class.__name__}")
        shapes = [list(p.shape) for p in self._params]
        if shard["shapes"] != shapes or np.dtype(shard["dtype"]) != self.dtype:
            raise ValueError(f"the shards' parameters have shapes {shard['shapes']} and dtype "
                             f"{np.dtype(shard['dtype'])}, this optimizer's {shapes} and {self.dtype}")
        if [int(x) for x in shard["group_offsets"]] != [int(x) for x in self._group_offsets]:
            raise ValueError("the shards' param groups hold other parameters than this optimizer's")
        counts = [len(g["params"]) for g in shard["param_groups"]]
        if counts != [len(g["params"]) for g in self._template.param_groups]:
            raise ValueError(f"the shards' param groups have {counts} parameters, this "
                             "optimizer's have "
                             f"{[len(g['params']) for g in self._template.param_groups]}")


def consolidate_shards(shards):
    """The single-process ``state_dict`` from the :meth:`ZeroOptimizer.shard_state_dict` of every rank."""
    shards = list(shards)
    if not shards or not all(isinstance(s, dict) and s.get("format") == SHARD_FORMAT for s in shards):
        raise ValueError("consolidate_shards needs the shard state dicts of a ZeroOptimizer run")
    shards = sorted(shards, key=lambda s: s["rank"])
    first = shards[0]
    world = first["world_size"]
    if [s["rank"] for s in shards] != list(range(world)):
        raise ValueError(f"the shards are of ranks {[s['rank'] for s in shards]}, but the run had "
                         f"{world} ranks: every shard is needed")
    for s in shards:
        for key in ("world_size", "numel", "shapes", "group_offsets", "optimizer", "dtype", "steps",
                    "counted"):
            if s.get(key) != first[key]:
                raise ValueError(f"the shards disagree on {key!r}: they are not from one run")
    numel, dtype = first["numel"], np.dtype(first["dtype"])
    offsets = first["group_offsets"]
    keys_per_group = [set() for _ in range(len(offsets) - 1)]
    for s in shards:
        for g, entry in enumerate(s["state"]):
            keys_per_group[g] |= set(entry)
    vectors = {}
    for key in sorted(set().union(*keys_per_group)):
        vec = np.zeros(numel, dtype=dtype)
        for s in shards:
            lo, hi = s["shard_range"]
            for g, entry in enumerate(s["state"]):
                if key in entry:
                    a, b = min(max(offsets[g], lo), hi), min(max(offsets[g + 1], lo), hi)
                    value = np.asarray(entry[key])
                    if value.shape != (b - a,):
                        raise ValueError(f"shard {s['rank']}: state {key!r} of group {g} has "
                                         f"shape {value.shape}, expected {(b - a,)}")
                    vec[a:b] = value
        vectors[key] = vec
    shapes = [tuple(x) for x in first["shapes"]]
    sizes = [math.prod(x) for x in shapes]
    param_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    state, index = {}, 0
    for g, group in enumerate(first["param_groups"]):
        for _ in group["params"]:
            entry = {}
            if first["steps"][g] > 0 and first["counted"][g]:
                entry["step"] = np.array(float(first["steps"][g]), dtype=np.float32)
            start, stop = int(param_offsets[index]), int(param_offsets[index + 1])
            for key in sorted(keys_per_group[g]):
                entry[key] = vectors[key][start:stop].reshape(shapes[index]).copy()
            if entry:
                state[index] = entry
            index += 1
    return {"state": state, "param_groups": [dict(g) for g in first["param_groups"]]}


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(path, optimizer, scheduler=None, extra=None, *, sharded=False):
    """Save a ZeroOptimizer (with its parameters, a scheduler, ``extra``); collective.

    ``sharded=False``: the state is gathered to rank 0, which writes ``path``:
    an ordinary :func:`fastoptim.save_checkpoint` file of ``optimizer_class``
    (a single-process optimizer loads it with ``fastoptim.load_checkpoint``).
    ``sharded=True``: ``path`` is a directory; every rank writes its shard of the
    state and of the parameters to ``rank{r:05d}-of-{N:05d}.ckpt`` in it (each
    file a fastoptim checkpoint: atomic write, checksum). Every rank returns
    once the checkpoint is complete; an error on any rank raises on every rank.
    """
    from . import checkpoint

    if not isinstance(optimizer, ZeroOptimizer):
        raise TypeError("distributed.save_checkpoint saves a ZeroOptimizer; for a single-process "
                        "optimizer use fastoptim.save_checkpoint")
    comm, path = optimizer.comm, os.fspath(path)
    error = None
    if sharded:
        try:
            if optimizer.rank == 0:
                os.makedirs(path, exist_ok=True)
        except OSError as exc:
            error = ValueError(f"cannot create the checkpoint directory {path!r}: {exc}")
        _agree(comm, error, _signature("save_checkpoint", True), optimizer.timeout, "save_checkpoint")
        try:
            lo, hi = optimizer.shard_range
            shard = optimizer.shard_state_dict()
            shard["params"] = _flat_range(optimizer._params, optimizer._offsets, lo, hi)
            name = _SHARD_FILE.format(rank=optimizer.rank, world=optimizer.world_size)
            checkpoint.save_checkpoint(os.path.join(path, name), scheduler=scheduler, params=[],
                                       extra={"zero": shard, "user": extra})
        except (TypeError, ValueError, OSError) as exc:
            error = exc
        _agree(comm, error, _signature("saved"), optimizer.timeout, "save_checkpoint")
        return
    sd = optimizer.state_dict(to=0)
    if optimizer.rank == 0:
        try:
            single = optimizer.optimizer_class(*optimizer._ctor[:1], **optimizer._ctor[1])
            single.load_state_dict(sd)
            checkpoint.save_checkpoint(path, optimizer=single, scheduler=scheduler, extra=extra)
        except (TypeError, ValueError, OSError) as exc:
            error = exc
    _agree(comm, error, _signature("saved"), optimizer.timeout, "save_checkpoint")


def _flat_range(params, offsets, lo, hi):
    out = np.empty(hi - lo, dtype=params[0].dtype)
    for p, start, stop in zip(params, offsets[:-1], offsets[1:]):
        a, b = max(int(start), lo), min(int(stop), hi)
        if a < b:
            out[a - lo:b - lo] = p.reshape(-1)[a - start:b - start]
    return out


def _iter_shard_files(files, first_data):
    """Read the shard files one at a time (the first one's data is kept in ``first_data``)."""
    from . import checkpoint

    for name in files:
        data = checkpoint.load_checkpoint(name)
        if not isinstance(data, dict) or not isinstance(data.get("zero"), dict):
            raise ValueError(f"{name!r} is not a ZeroOptimizer shard")
        shard = dict(data["zero"])
        if not first_data:
            first_data.update(user=data.get("user"), file=name)
        yield shard


def _shard_files(path):
    files = sorted(glob.glob(os.path.join(path, "rank*-of-*.ckpt")))
    if not files:
        raise ValueError(f"{path!r} holds no shard files (rank*-of-*.ckpt)")
    return files


def load_checkpoint(path, optimizer, scheduler=None):
    """Load a checkpoint from :func:`save_checkpoint` or :func:`fastoptim.save_checkpoint`; return ``extra``.

    ``path``: a file (gathered, or a single-process checkpoint) or a directory of
    shards, written with any number of ranks. ``optimizer``: a ZeroOptimizer
    (collective: every rank reads the files, so they must be on a file system
    every rank sees) or a single-process fastoptim optimizer over the same
    parameters. The parameters (and the scheduler, if given) are restored too.
    Everything is checked before anything changes; with a ZeroOptimizer an error
    on any rank raises on all.

    Memory: from a directory of shards, a ZeroOptimizer reads one shard file at
    a time and keeps only its own range of the state; from one gathered file,
    every rank reads the whole file.
    """
    from . import checkpoint
    from .optimizers import Optimizer

    path = os.fspath(path)
    zero = isinstance(optimizer, ZeroOptimizer)
    if not zero and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a ZeroOptimizer or a fastoptim optimizer, got "
                        f"{type(optimizer).__name__}")
    if not zero:
        if not os.path.isdir(path):
            return checkpoint.load_checkpoint(path, optimizer=optimizer, scheduler=scheduler)
        return _load_shards_single(path, optimizer, scheduler)
    error, extra, plan, params = None, None, None, None
    sched_before = scheduler.state_dict() if scheduler is not None else None
    try:
        if not os.path.isdir(path):  # one file in the single-process layout
            single = optimizer.optimizer_class(*optimizer._ctor[:1], **optimizer._ctor[1])
            params = [np.array(p, copy=True) for p in optimizer._params]  # installed last, below
            extra = checkpoint.load_checkpoint(path, optimizer=single, scheduler=scheduler,
                                               params=params)
            plan = optimizer._plan_load(single.state_dict())
            del single
        else:
            first = {}
            groups, inner_sd, steps, vector = optimizer._plan_shards(
                _iter_shard_files(_shard_files(path), first))
            if vector is None:
                raise ValueError(f"{path!r}: the shards hold no parameters")
            plan = (groups, inner_sd, steps)
            params = [vector[a:b].reshape(p.shape) for p, a, b in zip(
                optimizer._params, optimizer._offsets[:-1], optimizer._offsets[1:])]
            extra = first["user"]
            if scheduler is not None:
                checkpoint.load_checkpoint(first["file"], scheduler=scheduler)
    except (TypeError, ValueError, OSError, KeyError) as exc:
        error = exc if not isinstance(exc, KeyError) else ValueError(f"{path!r}: bad checkpoint: {exc}")
    try:
        _agree(optimizer.comm, error, _signature("load_checkpoint"), optimizer.timeout,
               "load_checkpoint")
    except ValueError:
        if sched_before is not None:
            scheduler.load_state_dict(sched_before)  # this rank may have loaded it: undo
        raise
    optimizer._install(*plan)
    for p, value in zip(optimizer._params, params):
        p[...] = value
    return extra


def _load_shards_single(path, optimizer, scheduler):
    """A directory of shards into a single-process optimizer: consolidate, check, load."""
    from . import checkpoint

    first = {}
    shards = list(_iter_shard_files(_shard_files(path), first))
    full = consolidate_shards(shards)
    vector = np.empty(shards[0]["numel"], dtype=np.dtype(shards[0]["dtype"]))
    for shard in shards:
        if shard.get("params") is None:
            raise ValueError(f"{path!r}: the shards hold no parameters")
        lo, hi = shard["shard_range"]
        vector[lo:hi] = np.asarray(shard["params"])
    targets = [p for g in optimizer.param_groups for p in g["params"]]
    shapes = [tuple(x) for x in shards[0]["shapes"]]
    if [tuple(p.shape) for p in targets] != shapes:
        raise ValueError(f"{path!r}: the checkpoint's parameters have shapes {shapes}, the "
                         f"optimizer's {[tuple(p.shape) for p in targets]}")
    for i, p in enumerate(targets):
        if not isinstance(p, np.ndarray) or not p.flags.writeable:
            raise ValueError(f"params[{i}] must be a writeable NumPy array")
    before = optimizer.state_dict()
    optimizer.load_state_dict(full)  # checks everything first; atomic
    if scheduler is not None:
        try:
            checkpoint.load_checkpoint(first["file"], scheduler=scheduler)
        except ValueError:
            optimizer.load_state_dict(before)
            raise
    start = 0
    for p in targets:
        p[...] = vector[start:start + p.size].reshape(p.shape)
        start += p.size
    return first["user"]
