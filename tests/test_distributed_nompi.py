"""fastoptim.distributed without MPI: the import is cheap and safe, the error says what to install.

(The collective tests are in test_distributed.py, which needs mpi4py.)
"""
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim import distributed as D


def test_needs_mpi4py_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"fastoptim\[mpi\]"):
        D.allreduce_grads([np.ones(3, np.float32)])
    with pytest.raises(ImportError, match=r"fastoptim\[mpi\]"):
        D.ZeroOptimizer(fastoptim.Adam, [np.ones(3, np.float32)])


def test_reachable_from_the_package():
    assert fastoptim.distributed is D


def test_consolidate_shards_rejects_what_is_not_a_full_set():
    with pytest.raises(ValueError, match="shard state dicts"):
        D.consolidate_shards([])
    with pytest.raises(ValueError, match="shard state dicts"):
        D.consolidate_shards([{"format": "something else"}])
    shard = {"format": D.SHARD_FORMAT, "rank": 1, "world_size": 2}
    with pytest.raises(ValueError, match="every shard is needed"):
        D.consolidate_shards([shard])


def test_buckets_keep_order_and_split_by_dtype_and_size():
    a, b = np.ones(4, np.float32), np.ones(4, np.float32)
    c, d = np.ones(2, np.float64), np.ones(100, np.float64)
    buckets = list(D._buckets([a, None, b, c, d, np.ones(0, np.float32)], bucket_bytes=32))
    assert [[x is y for x, y in zip(bk, want)] for bk, want in
            zip(buckets, [[a, b], [c], [d]])] == [[True, True], [True], [True]]
    assert len(buckets) == 3
