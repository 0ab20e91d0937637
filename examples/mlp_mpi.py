"""The NumPy MLP of examples/mlp.py, trained data-parallel over MPI with ZeRO-1.

    pip install ".[mpi]"
    mpiexec -n 2 python examples/mlp_mpi.py                  # ZeRO-1 AdamW: half the state per rank
    mpiexec -n 2 python examples/mlp_mpi.py --mode dp        # plain data parallelism (all-reduce)
    mpiexec -n 2 python examples/mlp_mpi.py --check          # ... and compare with one process

Every rank (process) holds the whole model. Each minibatch of ``--batch-size``
images is cut into one slice per rank; a rank computes the gradient of its
slice only. ``ZeroOptimizer.step`` then averages the gradients (a
reduce-scatter: each rank gets the average for its shard of the parameters),
steps its shard with the fused AdamW kernel, and all-gathers the parameters, so
every rank ends the step with the same model. With ``--mode dp`` the gradients
are all-reduced (``allreduce_grads``) and every rank runs a whole AdamW.

``--check`` verifies, at the end, that every rank holds the same parameters
and that they match single-process training on the whole minibatches (equal up
to float32 rounding: the matmuls of a slice sum in another order than those of
the whole batch). See docs/distributed.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # examples/mlp.py: the model
try:
    import fastoptim
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(HERE.parent))
    import fastoptim
from mlp import MLP
from mpi4py import MPI

from fastoptim import distributed, lr_scheduler
from fastoptim.demo import load_dataset


def train(comm, mode="zero", epochs=10, batch_size=64, lr=2e-3, weight_decay=1e-2, seed=0,
          data=None, verbose=True):
    """Train on ``comm``'s ranks; returns (model, per-epoch mean training loss)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    data = data if data is not None else load_dataset()
    model = MLP(seed=seed)
    distributed.broadcast_params(model.flat, comm)  # every rank starts from rank 0's weights
    if mode == "zero":
        opt = distributed.ZeroOptimizer(fastoptim.AdamW, model.params, comm, lr=lr,
                                        weight_decay=weight_decay)
    else:
        opt = fastoptim.AdamW(model.params, lr=lr, weight_decay=weight_decay)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(seed)  # the same shuffles on every rank
    n = len(data.y_train)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        steps = 0
        for start in range(0, n - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            mine = np.array_split(batch, size)[rank]  # this rank's slice of the minibatch
            loss = model.loss_and_backward(data.X_train[mine], data.y_train[mine])
            # the slice's mean gradient, weighted so that the average over the ranks is the
            # whole batch's mean gradient even when the slices differ in size
            model.grads.buffer *= np.float32(len(mine) * size / len(batch))
            if mode == "zero":
                opt.step(model.grads)  # reduce-scatter, fused AdamW on the shard, all-gather
            else:
                distributed.allreduce_grads(model.grads, comm)  # one Allreduce of the flat buffer
                opt.step(model.grads)
            total += loss * len(mine) / len(batch)
            steps += 1
        sched.step()
        losses.append(comm.allreduce(total, op=MPI.SUM) / steps)
        if verbose and rank == 0:
            acc = model.accuracy(data.X_val, data.y_val)
            print(f"epoch {epoch + 1:3d}  lr {opt.param_groups[0]['lr']:.2e}  "
                  f"train loss {losses[-1]:.4f}  val acc {acc:.2%}", flush=True)
    return model, opt, losses


def train_single(epochs, batch_size, lr, weight_decay, seed, data):
    """The same training in one process, on whole minibatches."""
    model = MLP(seed=seed)
    opt = fastoptim.AdamW(model.params, lr=lr, weight_decay=weight_decay)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(seed)
    n = len(data.y_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            model.loss_and_backward(data.X_train[batch], data.y_train[batch])
            opt.step(model.grads)
        sched.step()
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["zero", "dp"], default="zero",
                   help="zero: ZeRO-1 sharded AdamW state; dp: all-reduce + a whole AdamW per rank")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true",
                   help="check that every rank ends alike and matches single-process training")
    args = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    distributed.abort_on_exception(comm)  # an error on one rank ends the job, not a hang
    rank, size = comm.Get_rank(), comm.Get_size()
    data = load_dataset()
    if rank == 0:
        print(f"{data.name}: {len(data.y_train)} training images, {size} ranks, "
              f"batches of {args.batch_size} ({args.mode})", flush=True)
    model, opt, _ = train(comm, args.mode, args.epochs, args.batch_size, args.lr,
                          args.weight_decay, args.seed, data)
    state = opt.state_bytes() if args.mode == "zero" else sum(
        np.asarray(a).nbytes for entry in opt.state.values() for a in entry.values())
    states = comm.gather(state, root=0)
    if rank == 0:
        print(f"optimizer state per rank: {', '.join(f'{s / 1024:.1f} KiB' for s in states)}")
    if not args.check:
        return 0
    buffers = comm.allgather(model.flat.buffer)
    if rank == 0:
        if not all(np.array_equal(b, buffers[0]) for b in buffers):
            print("ERROR: the ranks ended with different parameters")
            return 1
        print(f"same parameters on every rank ({size} ranks)")
        single = train_single(args.epochs, args.batch_size, args.lr, args.weight_decay,
                              args.seed, data)
        diff = float(np.abs(single.flat.buffer - model.flat.buffer).max())
        scale = float(np.abs(single.flat.buffer).max())
        if not np.allclose(model.flat.buffer, single.flat.buffer, rtol=1e-3, atol=1e-4):
            print(f"ERROR: differs from single-process training by up to {diff:.2e}")
            return 1
        print(f"matches single-process training: max |difference| {diff:.2e} "
              f"(parameters up to {scale:.2f}; float32 rounding of the sliced matmuls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
