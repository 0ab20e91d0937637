"""Checkpoints of a :class:`~fastoptim.distributed.ZeroOptimizer`: gathered (one ordinary
fastoptim checkpoint) or sharded (one file per rank); either loads with any number of ranks.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from ._mpi import _agree, _signature
from .zero import ZeroOptimizer
from .zero_state import consolidate_shards

_SHARD_FILE = "rank{rank:05d}-of-{world:05d}.ckpt"


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
    from .. import checkpoint

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
    from .. import checkpoint

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
    from .. import checkpoint
    from ..optimizers import Optimizer

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
    from .. import checkpoint

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
