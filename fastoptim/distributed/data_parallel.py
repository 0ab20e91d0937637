"""Plain data parallelism: :func:`allreduce_grads` and :func:`broadcast_params`."""
from __future__ import annotations

import numpy as np

from ..arrays import FlatGradDict, FlatGrads, FlatParams
from ._mpi import DEFAULT_TIMEOUT, _abort_on_error, _agree, _comm, _mpi, _signature

DEFAULT_BUCKET_BYTES = 25 * 2**20  # plain-list all-reduce: gradients are packed into buckets of this size


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
