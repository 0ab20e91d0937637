"""fastoptim.distributed: data parallelism and ZeRO-1 over MPI, against single-process training.

Every test here is collective: it runs unchanged with any number of ranks.
``.ci/run`` runs this file under ``mpiexec -n 2`` and ``-n 3`` (3 gives uneven
shards and a rank whose shard is partly padding). A plain ``pytest`` runs it on
one rank and, when ``mpiexec`` is installed, launches the multi-rank runs and
the fault scenarios (a rank that raises, a rank that never arrives) in
subprocesses with a timeout. Without mpi4py the whole file is skipped.

What "equal to single-process training" means (docs/distributed.md):
* bit for bit, when the sum of the ranks' gradients is exact in any order
  (the dyadic gradients below), for every optimizer flag, any number of ranks;
* bit for bit with arbitrary gradients on 2 ranks (a + b is commutative);
* with arbitrary gradients on 3+ ranks, within a few float32 ulps (the MPI
  reduction may add the ranks' gradients in another order);
* with ``max_grad_norm``, within a few ulps (the global norm is summed per
  shard, then over the ranks: another order than the single-process norm).
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install '.[mpi]')")
from flag_cases import ADAM_FLAGS, SGD_FLAGS  # noqa: E402
from mpi4py import MPI  # noqa: E402

import fastoptim  # noqa: E402
from fastoptim import distributed as D  # noqa: E402
from fastoptim import lr_scheduler as L  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
CPU = [b for b in fastoptim.available_backends() if b != "cuda"]
SHAPES = [(3, 4), (5,), (7, 2), (1,), (4, 3)]  # 46 elements: uneven over 3 and 4 ranks
GROUP_SPLIT = 2  # params[:2] in group 0, the rest in group 1 (own lr and weight decay)
CLASSES = {"SGD": fastoptim.SGD, "Adam": fastoptim.Adam, "AdamW": fastoptim.AdamW}
CASES = [("SGD", f) for f in SGD_FLAGS] + ADAM_FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------- helpers
def initial(dtype=np.float32):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def local_grads(step, rank, dyadic=True, dtype=np.float32):
    """This rank's gradient at ``step``: multiples of 1/64 (sums exact in any order) or normal."""
    rng = np.random.default_rng([7, step, rank])
    if dyadic:
        return [(rng.integers(-64, 65, s) / 64).astype(dtype) for s in SHAPES]
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def averaged(step, dyadic=True, dtype=np.float32):
    """The single-process gradient: the ranks' gradients added in rank order, divided by N."""
    per_rank = [local_grads(step, k, dyadic, dtype) for k in range(SIZE)]
    out = []
    for i in range(len(SHAPES)):
        total = per_rank[0][i].copy()
        for k in range(1, SIZE):
            total = total + per_rank[k][i]
        out.append(total / dtype(SIZE))
    return out


def groups_of(params, hyper_second=None):
    second = {"lr": 0.05} if hyper_second is None else hyper_second
    return [{"params": params[:GROUP_SPLIT]}, dict(second, params=params[GROUP_SPLIT:])]


def build(layout, name, flags, **extra):
    """(ZeroOptimizer, its parameter arrays, how to hand it a step's gradients)."""
    cls = CLASSES[name]
    if layout == "flat":
        flat = fastoptim.FlatParams(initial())
        params = flat.params

        def feed(grads):
            for view, g in zip(flat.grads, grads):
                view[...] = g
            return flat.grads
    elif layout == "flat+list":  # parameters in one buffer, gradients as separate arrays
        params = fastoptim.FlatParams(initial()).params

        def feed(grads):
            return [g.copy() for g in grads]
    else:
        params = initial()

        def feed(grads):
            return [g.copy() for g in grads]
    opt = D.ZeroOptimizer(cls, groups_of(params), lr=0.1, **flags, **extra)
    return opt, params, feed


def shared_dir():
    """A temporary directory every rank sees (rank 0 makes it)."""
    path = tempfile.mkdtemp(prefix="fastoptim-mpi-") if RANK == 0 else None
    return COMM.bcast(path, root=0)


def assert_equal_arrays(got, want, exact, what):
    for i, (a, b) in enumerate(zip(got, want)):
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=f"{what}[{i}]")
        else:
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6, err_msg=f"{what}[{i}]")


def assert_states_equal(got, want, exact):
    assert set(got["state"]) == set(want["state"])
    for i in want["state"]:
        assert set(got["state"][i]) == set(want["state"][i]), i
        for key, value in want["state"][i].items():
            assert np.asarray(got["state"][i][key]).dtype == np.asarray(value).dtype
            assert_equal_arrays([got["state"][i][key]], [value], exact, f"state[{i}][{key!r}]")
    for g, h in zip(got["param_groups"], want["param_groups"]):
        assert g == h


# ------------------------------------------------------------- allreduce_grads
def test_allreduce_grads_flat_buffer_averages_in_one_call():
    flat = fastoptim.FlatParams(initial())
    for view, g in zip(flat.grads, local_grads(0, RANK)):
        view[...] = g
    assert D.allreduce_grads(flat.grads, COMM) is flat.grads
    assert_equal_arrays(flat.grads, averaged(0), True, "grads")


@pytest.mark.parametrize("bucket_bytes", [1, 40, D.DEFAULT_BUCKET_BYTES])
def test_allreduce_grads_list_buckets_mixed_dtypes_and_none(bucket_bytes):
    grads = local_grads(1, RANK)
    want = averaged(1)
    grads[1] = None  # skipped, as a missing .grad
    grads[3] = grads[3].astype(np.float64)  # its own bucket
    strided = np.asfortranarray(grads[4])  # not C-contiguous: packed, not reduced in place
    grads[4] = strided
    D.allreduce_grads(grads, COMM, bucket_bytes=bucket_bytes)
    assert grads[1] is None and grads[4] is strided and grads[3].dtype == np.float64
    assert_equal_arrays([grads[i] for i in (0, 2, 3, 4)], [want[i] for i in (0, 2, 3, 4)], True, "g")


def test_allreduce_grads_sum_and_dict():
    grads = dict(zip("abcde", local_grads(2, RANK)))
    D.allreduce_grads(grads, COMM, average=False)
    want = [a * np.float32(SIZE) for a in averaged(2)]
    assert_equal_arrays(list(grads.values()), want, True, "grads")


def test_allreduce_grads_rejects_bad_input_on_every_rank():
    grads = local_grads(3, RANK)
    if RANK == SIZE - 1:
        grads[0] = grads[0].astype(np.int32)  # one rank only: every rank must raise
    with pytest.raises((TypeError, ValueError)):
        D.allreduce_grads(grads, COMM)
    if RANK != SIZE - 1:
        np.testing.assert_array_equal(grads[0], local_grads(3, RANK)[0])  # nothing moved


def test_allreduce_grads_shape_mismatch_is_an_error_not_a_deadlock():
    if SIZE == 1:
        pytest.skip("needs 2+ ranks (run by .ci/run under mpiexec)")
    grads = [np.ones(4 if RANK == 0 else 5, np.float32)]
    with pytest.raises(ValueError, match="disagree"):
        D.allreduce_grads(grads, COMM)


def test_broadcast_params_copies_rank_0():
    flat = fastoptim.FlatParams([a + RANK for a in initial()])
    plain = [a + RANK for a in initial()]
    D.broadcast_params(flat, COMM)
    D.broadcast_params(plain, COMM)
    assert_equal_arrays(flat.params, initial(), True, "flat")
    assert_equal_arrays(plain, initial(), True, "list")


# --------------------------------------------------- ZeRO-1 vs single process
@pytest.mark.parametrize("layout", ["flat", "list"])
@pytest.mark.parametrize("name,flags", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_zero_equals_single_process_bit_for_bit(layout, name, flags):
    """Dyadic gradients: the average is exact, so every flag must match bit for bit."""
    opt, params, feed = build(layout, name, flags)
    ref_params = initial()
    ref = CLASSES[name](groups_of(ref_params), lr=0.1, **flags)
    for step in range(4):
        ref.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
        assert_equal_arrays(params, ref_params, True, f"params after step {step}")
    assert_states_equal(opt.state_dict(to="all"), ref.state_dict(), exact=True)


@pytest.mark.parametrize("layout", ["flat", "list", "flat+list"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_zero_with_arbitrary_gradients(layout, name):
    """Exact on 1-2 ranks; within a few ulps on 3+ (the MPI reduction order may differ)."""
    flags = dict(momentum=0.9) if name == "SGD" else dict(amsgrad=True)
    opt, params, feed = build(layout, name, flags)
    ref_params = initial()
    ref = CLASSES[name](groups_of(ref_params), lr=0.1, **flags)
    for step in range(3):
        ref.step(averaged(step, dyadic=False))
        opt.step(feed(local_grads(step, RANK, dyadic=False)))
    assert_equal_arrays(params, ref_params, SIZE <= 2, "params")


@pytest.mark.parametrize("backend", CPU)
def test_every_cpu_backend_and_float64(backend):
    flat = fastoptim.FlatParams(initial(np.float64))
    opt = D.ZeroOptimizer(fastoptim.AdamW, groups_of(flat.params), lr=0.1, backend=backend)
    ref_params = initial(np.float64)
    ref = fastoptim.AdamW(groups_of(ref_params), lr=0.1, backend=backend)
    for step in range(3):
        ref.step(averaged(step, dtype=np.float64))
        for view, g in zip(flat.grads, local_grads(step, RANK, dtype=np.float64)):
            view[...] = g
        opt.step(flat.grads)
    assert opt.backend == backend
    assert_equal_arrays(flat.params, ref_params, True, "params")


def test_named_params_and_schedulers_per_group():
    names = [f"p{i}" for i in range(len(SHAPES))]
    params = dict(zip(names, initial()))
    opt = D.ZeroOptimizer(fastoptim.Adam, params, lr=0.1, weight_decay=0.01)
    ref_params = dict(zip(names, initial()))
    ref = fastoptim.Adam(ref_params, lr=0.1, weight_decay=0.01)
    sched, ref_sched = L.StepLR(opt, step_size=2, gamma=0.5), L.StepLR(ref, step_size=2, gamma=0.5)
    for step in range(5):
        ref.step(dict(zip(names, averaged(step))))
        opt.step(dict(zip(names, local_grads(step, RANK))))
        sched.step()
        ref_sched.step()
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"] == 0.025
    assert_equal_arrays(list(params.values()), list(ref_params.values()), True, "params")


def test_group_hyperparameters_edited_between_steps():
    opt, params, feed = build("flat", "SGD", dict(momentum=0.9))
    ref_params = initial()
    ref = fastoptim.SGD(groups_of(ref_params), lr=0.1, momentum=0.9)
    lambdas = [lambda e: 0.9 ** e, lambda e: 1.0 / (1 + e)]
    scheds = [L.LambdaLR(opt, lambdas), L.LambdaLR(ref, lambdas)]
    for step in range(4):
        for o in (opt, ref):
            o.param_groups[1]["weight_decay"] = 0.01 * step
        ref.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
        for s in scheds:
            s.step()
    assert_equal_arrays(params, ref_params, True, "params")


def test_max_grad_norm_uses_the_global_norm():
    opt, params, feed = build("list", "Adam", {}, max_grad_norm=0.5)
    ref_params = initial()
    ref = fastoptim.Adam(groups_of(ref_params), lr=0.1, max_grad_norm=0.5)
    for step in range(3):
        ref.step(averaged(step, dyadic=False))
        opt.step(feed(local_grads(step, RANK, dyadic=False)))
        assert math.isclose(opt.last_grad_norm, ref.last_grad_norm, rel_tol=1e-6)
        assert ref.last_grad_norm > 0.5  # clipping really happened
    assert_equal_arrays(params, ref_params, False, "params")


@pytest.mark.parametrize("layout", ["flat", "list"])
def test_skip_nonfinite_all_ranks_agree(layout):
    opt, params, feed = build(layout, "AdamW", {}, skip_nonfinite=True)
    ref_params = initial()
    ref = fastoptim.AdamW(groups_of(ref_params), lr=0.1, skip_nonfinite=True)
    for step in range(4):
        grads = local_grads(step, RANK)
        want = averaged(step)
        if step == 1:  # a NaN on the last rank only, in the shard of rank 0
            if RANK == SIZE - 1:
                grads[0][0, 0] = np.nan
            want[0][0, 0] = np.nan
        before = [p.copy() for p in params]
        ref.step(want)
        opt.step(feed(grads))
        assert opt.last_step_skipped == ref.last_step_skipped == (step == 1)
        if step == 1:
            assert_equal_arrays(params, before, True, "skipped step changed params")
    assert opt.skipped_steps == ref.skipped_steps == 1
    assert_equal_arrays(params, ref_params, True, "params")
    assert_states_equal(opt.state_dict(to="all"), ref.state_dict(), exact=True)


def test_tiny_model_where_some_ranks_own_only_padding():
    """2 elements: with 3+ ranks, the last ranks' shards are all padding; they still take part."""
    shapes = [(1,), (1,)]
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = lambda step, rank: [np.full(s, (step + 1) * (rank + 1) / 8, np.float32)  # noqa: E731
                                for s in shapes]
    for layout in ("flat", "list"):
        params = fastoptim.FlatParams(init).params if layout == "flat" else [a.copy() for a in init]
        opt = D.ZeroOptimizer(fastoptim.Adam, [{"params": params[:1]}, {"params": params[1:], "lr": 0.5}],
                              lr=0.1, max_grad_norm=0.3, skip_nonfinite=True)
        ref_params = [a.copy() for a in init]
        ref = fastoptim.Adam([{"params": ref_params[:1]}, {"params": ref_params[1:], "lr": 0.5}],
                             lr=0.1, max_grad_norm=0.3, skip_nonfinite=True)
        for step in range(3):
            per_rank = [grads(step, k) for k in range(SIZE)]
            ref.step([sum(g[i] for g in per_rank) / np.float32(SIZE) for i in range(2)])
            start = time.perf_counter()
            opt.step(grads(step, RANK))
            wall = time.perf_counter() - start
        shard = -(-2 // SIZE)
        assert opt.shard_size == shard
        assert opt.shard_range[1] - opt.shard_range[0] == max(0, min(shard, 2 - RANK * shard))
        assert_equal_arrays(params, ref_params, False, layout)
        assert_states_equal(opt.state_dict(to="all"), ref.state_dict(), exact=False)
        assert set(opt.last_step_seconds) == {"pack", "reduce_scatter", "norm", "kernel",
                                              "allgather", "unpack"}
        phases = list(opt.last_step_seconds.values())  # parts of the last step, timed inside it
        assert min(phases) >= 0 and 0 < sum(phases) <= wall


# ------------------------------------------------------------------- memory
@pytest.mark.parametrize("layout", ["flat", "list"])
def test_state_memory_is_one_nth_plus_padding(layout):
    opt, params, feed = build(layout, "Adam", dict(amsgrad=True))
    opt.step(feed(local_grads(0, RANK)))
    total = sum(a.size for a in initial())
    shard = -(-total // SIZE)
    assert opt.shard_size == shard and opt.padding == SIZE * shard - total
    counters = 2 * 4  # one float32 step count per param group
    assert opt.state_bytes() <= 3 * shard * 4 + counters
    ref = fastoptim.Adam(initial(), amsgrad=True)
    ref.step(averaged(0))
    single = sum(np.asarray(a).nbytes for e in ref.state.values() for k, a in e.items() if k != "step")
    assert opt.state_bytes() - counters <= single / SIZE + 3 * 4 * opt.padding


def assert_state_in_flat_buffers(opt, keys):
    """Every group's state array of each key is a view of its piece of one S-element buffer."""
    buffers = opt.state_buffers
    assert set(buffers) == set(keys)
    lo, hi = opt.shard_range
    sizes = [sum(p.size for p in g["params"]) for g in opt.param_groups]
    ends = np.cumsum(sizes)
    itemsize = np.dtype(opt.dtype).itemsize
    for key, buf in buffers.items():
        assert buf.shape == (opt.shard_size,) and buf.dtype == opt.dtype and buf.flags.c_contiguous
        assert not buf[hi - lo:].any(), "the padding of the last shards stays zero"
    seen = set()
    for g, entry in opt.state.items():
        a = min(max(int(ends[g] - sizes[g]), lo), hi) - lo
        b = min(max(int(ends[g]), lo), hi) - lo
        for key, value in entry.items():
            if key == "step":
                continue
            buf = buffers[key]
            assert value.shape == (b - a,), (g, key)
            assert value.base is buf or value.base is buf.base, (g, key)
            if b > a:  # (an empty piece has no address of its own)
                assert (value.__array_interface__["data"][0]
                        == buf.__array_interface__["data"][0] + a * itemsize), (g, key)
            seen.add(key)
    assert seen == set(keys)
    counters = sum(np.asarray(e["step"]).nbytes for e in opt.state.values() if "step" in e)
    assert opt.state_bytes() == opt.shard_size * itemsize * len(keys) + counters
    return counters


@pytest.mark.parametrize("layout", ["flat", "list"])
@pytest.mark.parametrize("name,flags,keys", [
    ("Adam", dict(amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    ("AdamW", {}, ["exp_avg", "exp_avg_sq"]),
    ("SGD", dict(momentum=0.9, dampening=0.25), ["momentum_buffer"]),
])
def test_state_lives_in_one_flat_buffer_per_key(layout, name, flags, keys):
    opt, params, feed = build(layout, name, flags)
    ref_params = initial()
    ref = CLASSES[name](groups_of(ref_params), lr=0.1, **flags)
    assert opt.state_buffers == {} and opt.state_bytes() == 0  # nothing before the first step
    buffers = None
    for step in range(3):
        ref.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
        counters = assert_state_in_flat_buffers(opt, keys)
        if buffers is None:
            buffers = opt.state_buffers
        assert all(opt.state_buffers[k] is buffers[k] for k in keys), "a step reallocated the state"
        assert_equal_arrays(params, ref_params, True, f"params after step {step}")
    assert counters == (8 if name != "SGD" else 0)  # Adam: one float32 step count per group
    assert_states_equal(opt.state_dict(to="all"), ref.state_dict(), exact=True)
    # at most 1/N of the single-process state, plus the padding
    single = sum(np.asarray(a).nbytes for e in ref.state.values() for k, a in e.items() if k != "step")
    assert opt.state_bytes() - counters <= single / SIZE + len(keys) * 4 * opt.padding
    # loads put the state back into the same flat layout
    for load in ("state_dict", "shards"):
        if load == "state_dict":
            opt.load_state_dict(ref.state_dict())
        else:
            opt.load_shard_state_dicts(COMM.allgather(opt.shard_state_dict()))
        assert_state_in_flat_buffers(opt, keys)
        ref.step(averaged(9))
        opt.step(feed(local_grads(9, RANK)))
        assert_equal_arrays(params, ref_params, True, f"params after loading {load}")
    # a state dict without state frees the buffers
    opt.load_state_dict(CLASSES[name](groups_of(initial()), lr=0.1, **flags).state_dict())
    assert opt.state_buffers == {} and opt.state_bytes() == 0


def test_state_key_created_mid_run_joins_the_flat_buffer():
    """SGD: momentum turned on for group 1 after two steps; its buffer starts as its gradient."""
    opt, params, feed = build("list", "SGD", dict(momentum=0.9))
    ref_params = initial()
    ref = fastoptim.SGD(groups_of(ref_params), lr=0.1, momentum=0.9)
    for o in (opt, ref):
        o.param_groups[1]["momentum"] = 0
    for step in range(5):
        if step == 2:
            for o in (opt, ref):
                o.param_groups[1]["momentum"] = 0.5
        ref.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
        assert_state_in_flat_buffers(opt, ["momentum_buffer"])
        assert_equal_arrays(params, ref_params, True, f"params after step {step}")
    assert_states_equal(opt.state_dict(to="all"), ref.state_dict(), exact=True)


# ------------------------------------------------------------- faults (in-job)
def test_mismatched_shapes_detected_before_any_step_on_every_rank():
    if SIZE == 1:
        pytest.skip("needs 2+ ranks (run by .ci/run under mpiexec)")
    params = initial()
    if RANK == 1:
        params[2] = np.zeros((2, 7), np.float32)  # same size, other shape
    with pytest.raises(ValueError, match="disagree"):
        D.ZeroOptimizer(fastoptim.Adam, params, COMM)


def test_ranks_with_different_hyperparameters_are_stopped():
    if SIZE == 1:
        pytest.skip("needs 2+ ranks (run by .ci/run under mpiexec)")
    with pytest.raises(ValueError, match="disagree"):
        D.ZeroOptimizer(fastoptim.Adam, initial(), lr=0.1 if RANK == 0 else 0.2)
    opt, params, feed = build("flat", "Adam", {})
    before = [p.copy() for p in params]
    if RANK == SIZE - 1:
        opt.param_groups[0]["lr"] = 0.3  # a scheduler that ran on one rank only
    with pytest.raises(ValueError, match="disagree"):
        opt.step(feed(local_grads(0, RANK)))
    assert_equal_arrays(params, before, True, "params")


def test_rejected_step_on_one_rank_raises_everywhere_and_changes_nothing():
    opt, params, feed = build("list", "Adam", {})
    opt.step(feed(local_grads(0, RANK)))
    before, state = [p.copy() for p in params], opt.state_dict(to="all")
    grads = feed(local_grads(1, RANK))
    if RANK == SIZE - 1:
        grads[2] = grads[2][:3]
    with pytest.raises(ValueError, match="shape" if RANK == SIZE - 1 else "another rank"):
        opt.step(grads)
    assert_equal_arrays(params, before, True, "params")
    assert_states_equal(opt.state_dict(to="all"), state, exact=True)
    opt.param_groups[1]["lr"] = -1.0  # an edited hyperparameter is checked before data moves
    with pytest.raises(ValueError, match="learning rate"):
        opt.step(feed(local_grads(1, RANK)))
    assert_equal_arrays(params, before, True, "params after a rejected lr")
    opt.param_groups[1]["lr"] = 0.05
    opt.step(feed(local_grads(1, RANK)))  # the ranks are still in step
    with pytest.raises(ValueError, match="None"):
        opt.step([None] * len(SHAPES))


def test_bad_arguments():
    with pytest.raises(TypeError, match="optimizer_class"):
        D.ZeroOptimizer(object, initial())
    with pytest.raises(TypeError, match="one dtype"):
        D.ZeroOptimizer(fastoptim.SGD, [np.ones(3, np.float32), np.ones(3)])
    with pytest.raises(ValueError, match="timeout"):
        D.ZeroOptimizer(fastoptim.SGD, initial(), timeout=-1)
    with pytest.raises(TypeError, match="communicator"):
        D.ZeroOptimizer(fastoptim.SGD, initial(), comm="world")
    with pytest.raises(ValueError, match="learning rate"):
        D.ZeroOptimizer(fastoptim.SGD, initial(), lr=-1)


# ------------------------------------------------------- state dicts, checkpoints
def sub_communicators():
    """Communicators of other sizes than the world: 1 rank, and N-1 ranks when N > 2."""
    comms = [("1 rank", MPI.COMM_SELF)]
    if SIZE > 2:
        sub = COMM.Split(0 if RANK < SIZE - 1 else MPI.UNDEFINED, RANK)
        comms.append((f"{SIZE - 1} ranks", sub))
    return comms


def trained(name="Adam", flags=None, steps=3, layout="flat"):
    flags = dict(amsgrad=True) if flags is None and name != "SGD" else (flags or {})
    opt, params, feed = build(layout, name, flags)
    for step in range(steps):
        opt.step(feed(local_grads(step, RANK)))
    return opt, params, feed, flags


def test_state_dict_gathered_to_rank_0_loads_into_single_process():
    opt, params, feed, flags = trained()
    sd = opt.state_dict()  # to rank 0
    assert (sd is None) == (RANK != 0)
    full = opt.state_dict(to="all")
    single_params = [p.copy() for p in params]
    single = fastoptim.Adam(groups_of(single_params), lr=0.1, **flags)
    single.load_state_dict(full)
    for step in range(3, 5):
        single.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
    assert_equal_arrays(params, single_params, True, "params")


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_single_process_state_loads_into_zero(name):
    flags = dict(momentum=0.9, nesterov=True) if name == "SGD" else dict(amsgrad=True)
    ref_params = initial()
    ref = CLASSES[name](groups_of(ref_params), lr=0.1, **flags)
    for step in range(2):
        ref.step(averaged(step))
    opt, params, feed = build("list", name, flags)
    for p, q in zip(params, ref_params):
        p[...] = q
    opt.load_state_dict(ref.state_dict())
    for step in range(2, 4):
        ref.step(averaged(step))
        opt.step(feed(local_grads(step, RANK)))
    assert_equal_arrays(params, ref_params, True, "params")


def test_load_state_dict_rejects_and_changes_nothing():
    opt, params, feed, _ = trained()
    before = opt.state_dict(to="all")
    bad = opt.state_dict(to="all")
    bad["state"][0]["exp_avg"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    uneven = opt.state_dict(to="all")
    uneven["state"][1]["step"] = np.array(99.0, np.float32)
    with pytest.raises(ValueError, match="step counts"):
        opt.load_state_dict(uneven)
    assert_states_equal(opt.state_dict(to="all"), before, exact=True)


def test_shard_state_dicts_reassemble_on_other_world_sizes():
    opt, params, feed, flags = trained()
    shards = COMM.allgather(opt.shard_state_dict())
    full = D.consolidate_shards(shards)
    assert_states_equal(full, opt.state_dict(to="all"), exact=True)
    for label, comm in sub_communicators():
        if comm == MPI.COMM_NULL:
            continue
        other = D.ZeroOptimizer(fastoptim.Adam, groups_of([p.copy() for p in params]), comm,
                                lr=0.1, **flags)
        other.load_shard_state_dicts(shards)
        assert_states_equal(other.state_dict(to="all"), full, exact=True)
    with pytest.raises(ValueError, match="every shard"):
        D.consolidate_shards(shards[1:] if SIZE > 1 else [dict(shards[0], rank=1)])


@pytest.mark.parametrize("sharded", [False, True])
def test_checkpoint_n_ranks_to_m_ranks_and_single_process(sharded):
    opt, params, feed, flags = trained(layout="list")
    sched = L.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    path = shared_dir()
    target = os.path.join(path, "ckpt" if sharded else "ckpt.npz")
    try:
        D.save_checkpoint(target, opt, scheduler=sched, extra={"epoch": 3}, sharded=sharded)
        # reference: the run continued uninterrupted
        saved_params = [p.copy() for p in params]
        for step in range(3, 5):
            opt.step(feed(local_grads(step, RANK)))
        # into a single-process optimizer (on every rank, privately)
        single_params = initial()
        single = fastoptim.Adam(groups_of(single_params), lr=0.1, **flags)
        single_sched = L.StepLR(single, step_size=1, gamma=0.5)
        if sharded:
            extra = D.load_checkpoint(target, single, scheduler=single_sched)
        else:  # an ordinary fastoptim checkpoint
            extra = fastoptim.load_checkpoint(target, optimizer=single, scheduler=single_sched)
        assert extra == {"epoch": 3}
        assert single.param_groups[0]["lr"] == 0.05 and single_sched.last_epoch == 1
        assert_equal_arrays(single_params, saved_params, True, "loaded params")
        for step in range(3, 5):
            single.step(averaged(step))
        assert_equal_arrays(single_params, params, True, "single-process resume")
        # into ZeroOptimizers with other numbers of ranks
        for label, comm in sub_communicators():
            if comm == MPI.COMM_NULL:
                continue
            other_params = initial()
            other = D.ZeroOptimizer(fastoptim.Adam, groups_of(other_params), comm, lr=0.1, **flags)
            other_sched = L.StepLR(other, step_size=1, gamma=0.5)
            assert D.load_checkpoint(target, other, scheduler=other_sched) == {"epoch": 3}
            assert other.param_groups[1]["lr"] == 0.025
            assert_equal_arrays(other_params, saved_params, True, f"params, {label}")
            for step in range(3, 5):  # every rank of it passes the world's average
                other.step(averaged(step))
            assert_equal_arrays(other_params, params, True, f"resume on {label}")
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(path, ignore_errors=True)


def test_checkpoint_rejections_change_nothing_on_any_rank():
    opt, params, feed, flags = trained(layout="list")
    sched = L.StepLR(opt, step_size=1, gamma=0.5)
    path = shared_dir()
    target = os.path.join(path, "ck")
    try:
        D.save_checkpoint(target, opt, scheduler=sched, sharded=True)
        fresh_params = initial()
        fresh = D.ZeroOptimizer(fastoptim.Adam, groups_of(fresh_params), lr=0.1, **flags)
        fresh.step([g * 0 for g in local_grads(0, RANK)])
        wrong_sched = L.ExponentialLR(fresh, gamma=0.9)
        before = (fresh.state_dict(to="all"), wrong_sched.state_dict(),
                  [p.copy() for p in fresh_params])
        with pytest.raises(ValueError, match="scheduler|ExponentialLR|StepLR"):
            D.load_checkpoint(target, fresh, scheduler=wrong_sched)
        assert_states_equal(fresh.state_dict(to="all"), before[0], exact=True)
        assert wrong_sched.state_dict() == before[1]
        assert_equal_arrays(fresh_params, before[2], True, "params")
        one_group = D.ZeroOptimizer(fastoptim.Adam, initial(), lr=0.1, **flags)
        with pytest.raises(ValueError, match="param groups"):
            D.load_checkpoint(target, one_group)
        with pytest.raises(ValueError, match="Adam"):
            D.load_checkpoint(target, D.ZeroOptimizer(fastoptim.SGD, groups_of(initial())))
        COMM.Barrier()
        if RANK == 0:  # lose the last rank's file
            os.remove(os.path.join(target, sorted(os.listdir(target))[-1]))
        COMM.Barrier()
        with pytest.raises(ValueError, match="missing|no shard files"):
            D.load_checkpoint(target, fresh)
        assert_states_equal(fresh.state_dict(to="all"), before[0], exact=True)
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(path, ignore_errors=True)


def test_shards_stream_from_an_iterator_and_params_from_a_generator():
    opt, params, feed, flags = trained()
    shards = COMM.allgather(opt.shard_state_dict())
    other = D.ZeroOptimizer(fastoptim.Adam, groups_of([p.copy() for p in params]), lr=0.1, **flags)
    other.load_shard_state_dicts(iter(shards))  # one at a time, as from files
    assert_states_equal(other.state_dict(to="all"), opt.state_dict(to="all"), exact=True)
    gen = D.ZeroOptimizer(fastoptim.Adam, (p.copy() for p in params), lr=0.1)
    gen.load_state_dict(gen.state_dict(to="all"))  # builds its checker from the params again
    assert len(gen.param_groups[0]["params"]) == len(SHAPES)


def test_single_process_checkpoint_loads_into_zero():
    ref_params = initial()
    ref = fastoptim.AdamW(groups_of(ref_params), lr=0.1)
    for step in range(2):
        ref.step(averaged(step))
    path = shared_dir()
    target = os.path.join(path, "single.npz")
    try:
        if RANK == 0:
            fastoptim.save_checkpoint(target, optimizer=ref, extra={"k": 1})
        COMM.Barrier()
        flat = fastoptim.FlatParams(initial())
        opt = D.ZeroOptimizer(fastoptim.AdamW, groups_of(flat.params), lr=0.1)
        assert D.load_checkpoint(target, opt) == {"k": 1}
        assert_equal_arrays(flat.params, ref_params, True, "params")
        with pytest.raises(ValueError):  # a checkpoint of another optimizer class: every rank
            D.load_checkpoint(target, D.ZeroOptimizer(fastoptim.SGD, initial()))
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------- launched runs (plain pytest only)
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
launcher = pytest.mark.skipif(
    SIZE > 1 or MPIEXEC is None,
    reason="launches mpiexec itself: only from a plain (1-rank) pytest with mpiexec installed")


def mpiexec(n, *args, timeout=240, cwd=ROOT):
    cmd = [MPIEXEC, "-launcher", "fork", "-iface", "lo", "-n", str(n), sys.executable, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return proc, time.perf_counter() - start


FAULT_SCRIPT = """
import sys, time, numpy as np, fastoptim
from mpi4py import MPI
from fastoptim import distributed as D
comm = MPI.COMM_WORLD
if sys.argv[1] == "abort_hook":
    D.abort_on_exception(comm)
opt = D.ZeroOptimizer(fastoptim.Adam, [np.ones(10, np.float32)], comm, timeout=2)
opt.step([np.ones(10, np.float32)])
if comm.rank == 1:
    try:
        raise RuntimeError("rank 1 fails in its own code")
    except RuntimeError:
        if sys.argv[1] in ("abort_hook", "uncaught"):
            raise
        time.sleep(60)  # stuck: never reaches the next step
opt.step([np.ones(10, np.float32)])
print("rank", comm.rank, "finished", flush=True)
"""


@launcher
@pytest.mark.parametrize("scenario", ["stuck_rank", "uncaught", "abort_hook"])
def test_a_failing_rank_does_not_hang_the_others(tmp_path, scenario):
    script = tmp_path / "fault.py"
    script.write_text(FAULT_SCRIPT)
    proc, seconds = mpiexec(2, str(script), scenario, timeout=50)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "finished" not in out, out  # rank 0 did not go on as if nothing had happened
    assert seconds < 45  # and nobody waited forever
    if scenario == "uncaught":
        # rank 1's process exits with an error: MPICH's mpiexec may end the job itself, or
        # rank 0 gives up after its 2 s timeout; either way the job ends
        assert "rank 1 fails in its own code" in out, out
    else:
        assert "aborting the communicator" in out, out


@launcher
@pytest.mark.skipif(os.environ.get("FASTOPTIM_MPI_CI") == "1",
                    reason=".ci/run runs this file under mpiexec -n 2 and -n 3 itself")
@pytest.mark.parametrize("ranks", [2, 3])
def test_this_file_under_mpiexec(ranks):
    # run from tests/: `python -m pytest` puts the working directory on sys.path, and from
    # the checkout's root that would import its source tree instead of the installed package
    proc, _ = mpiexec(ranks, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--capture=sys",
                      os.path.abspath(__file__), timeout=400,
                      cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    passed = re.findall(r"\b(\d+) passed\b", proc.stdout)  # each rank's pytest summary
    assert passed and all(int(n) > 0 for n in passed), proc.stdout[-4000:]


@launcher
def test_example_trains_the_mlp_data_parallel():
    proc, _ = mpiexec(2, "examples/mlp_mpi.py", "--epochs", "3", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = re.search(r"same parameters on every rank \((\d+) ranks\)", proc.stdout)
    assert ranks and int(ranks.group(1)) == 2, proc.stdout
    match = re.search(r"max \|difference\| (\S+) \(parameters up to ([^;]+);", proc.stdout)
    assert match, proc.stdout
    diff, scale = float(match.group(1)), float(match.group(2))
    assert scale > 0 and 0 <= diff <= 1e-4 + 1e-3 * scale  # the example's allclose bound
