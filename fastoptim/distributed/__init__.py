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

Modules (each imports only those above it): ``_mpi`` (communicator, agreement,
aborting), ``data_parallel`` (``allreduce_grads``, ``broadcast_params``),
``zero_state`` (the ZeRO-1 state dicts, ``consolidate_shards``), ``zero``
(``ZeroOptimizer``), ``checkpoints`` (``save_checkpoint``, ``load_checkpoint``).
"""
from ._mpi import DEFAULT_TIMEOUT, abort_on_exception
from .checkpoints import load_checkpoint, save_checkpoint
from .data_parallel import DEFAULT_BUCKET_BYTES, _buckets, allreduce_grads, broadcast_params  # noqa: F401
from .zero import ZeroOptimizer
from .zero_state import SHARD_FORMAT, consolidate_shards  # noqa: F401

__all__ = [
    "allreduce_grads", "broadcast_params", "ZeroOptimizer", "save_checkpoint",
    "load_checkpoint", "consolidate_shards", "abort_on_exception", "DEFAULT_TIMEOUT",
]
