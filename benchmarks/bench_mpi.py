"""Plain data parallelism vs ZeRO-1 over MPI: step time (communication and compute apart)
and optimizer-state memory per rank, both contestants interleaved in one job.

    python benchmarks/bench_mpi.py                      # launches mpiexec -n 1, 2, 4 and prints a table
    python benchmarks/bench_mpi.py --ranks 2 --numel 4M --steps 10
    mpiexec -n 2 python benchmarks/bench_mpi.py --worker   # one job, prints one JSON line

Per step and rank, both on one FlatParams buffer of ``--numel`` float32 (Adam), or with
``--layout list --tensors K`` on K separate arrays (the bucketed all-reduce, and ZeRO-1's
packing into a padded buffer, counted with its communication):

* plain DP: ``allreduce_grads(flat.grads)`` (one Allreduce + the division by N),
  then ``Adam.step`` on the whole buffer (every rank holds all the state);
* ZeRO-1: ``ZeroOptimizer.step(flat.grads)``: Reduce_scatter_block (+ division)
  of the gradients, the Adam kernel on this rank's 1/N shard, Allgather of the
  parameters (its ``last_step_seconds`` give the phases).

The two alternate step by step (which goes first alternates too), after a
barrier each, so they see the same machine. Reported: the median over the
steps of each rank's times, the slowest rank's median (a step is as slow as
its slowest rank). The kernels get ``cores // N`` threads per rank (at least 1)
so N ranks do not oversubscribe the cores more than the MPI processes already do.
At the end both runs' parameters are compared (they take the same steps).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def parse_numel(text):
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def worker(args):
    import numpy as np
    from mpi4py import MPI

    import fastoptim
    from fastoptim import distributed as D

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    init = rng.standard_normal(args.numel).astype(np.float32)
    grads = np.random.default_rng(1 + rank).standard_normal(args.numel).astype(np.float32)
    pieces = np.array_split(np.arange(args.numel), args.tensors)
    split = lambda a: [a[x[0]:x[-1] + 1].copy() for x in pieces]  # noqa: E731
    dp_flat, zero_flat = fastoptim.FlatParams(split(init)), fastoptim.FlatParams(split(init))
    del init
    if args.layout == "list":  # separate arrays: the bucketed all-reduce and the packing path
        dp_params, zero_params = split(dp_flat.buffer), split(zero_flat.buffer)
        dp_grads, zero_grads = split(grads), split(grads)
    else:
        dp_params, zero_params = dp_flat.params, zero_flat.params
        dp_grads, zero_grads = dp_flat.grads, zero_flat.grads
    dp = fastoptim.Adam(dp_params, lr=1e-3)
    zero = D.ZeroOptimizer(fastoptim.Adam, zero_params, comm, lr=1e-3)

    def set_grads(target):
        if args.layout == "list":
            for g, x in zip(target, pieces):
                g[...] = grads[x[0]:x[-1] + 1]
        else:
            target.buffer[...] = grads
    clock = time.perf_counter
    rows = {"dp_comm": [], "dp_kernel": [], "dp_step": [],
            "zero_reduce_scatter": [], "zero_kernel": [], "zero_allgather": [], "zero_step": []}

    def run_dp(record):
        set_grads(dp_grads)
        comm.Barrier()
        t0 = clock()
        D.allreduce_grads(dp_grads, comm)
        t1 = clock()
        dp.step(dp_grads)
        t2 = clock()
        if record:
            rows["dp_comm"].append(t1 - t0)
            rows["dp_kernel"].append(t2 - t1)
            rows["dp_step"].append(t2 - t0)

    def run_zero(record):
        set_grads(zero_grads)
        comm.Barrier()
        t0 = clock()
        zero.step(zero_grads)
        t1 = clock()
        if record:
            phases = zero.last_step_seconds  # the copies of the list path count as communication
            rows["zero_reduce_scatter"].append(phases["pack"] + phases["reduce_scatter"])
            rows["zero_kernel"].append(phases["kernel"])
            rows["zero_allgather"].append(phases["allgather"] + phases["unpack"])
            rows["zero_step"].append(t1 - t0)

    for i in range(args.warmup + args.steps):
        record = i >= args.warmup
        for run in ((run_dp, run_zero) if i % 2 == 0 else (run_zero, run_dp)):
            run(record)
    medians = {k: float(np.median(v)) for k, v in rows.items()}
    every = comm.gather(medians, root=0)
    dp_state = sum(np.asarray(a).nbytes for e in dp.state.values() for a in e.values())
    zero_states = comm.gather(zero.state_bytes(), root=0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(dp_params, zero_params)
               if a.size) if args.layout == "list" else float(
        np.abs(dp_flat.buffer - zero_flat.buffer).max())
    diffs = comm.gather(diff, root=0)
    if rank == 0:
        import numba

        slowest = {k: max(m[k] for m in every) for k in medians}
        print(json.dumps({
            "ranks": size, "numel": args.numel, "steps": args.steps, "layout": args.layout,
            "tensors": args.tensors,
            "numba_threads": numba.get_num_threads(), "backend": dp.backend,
            "seconds": slowest, "dp_state_bytes": dp_state,
            "zero_state_bytes": max(zero_states), "zero_padding": zero.padding,
            "max_param_difference": max(diffs),
        }), flush=True)


def cpu_name():
    import platform

    from fastoptim.backends._threads import cpuinfo

    return cpuinfo("model name") or platform.processor() or "unknown CPU"


def driver(args):
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install '.[mpi]'")
    cores = os.cpu_count() or 1
    results = []
    for n in args.ranks:
        threads = max(1, cores // n)
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        cmd = [mpiexec, "-launcher", "fork", "-iface", "lo", "-n", str(n), sys.executable,
               os.path.abspath(__file__), "--worker", "--numel", str(args.numel),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--layout", args.layout, "--tensors", str(args.tensors)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        if proc.returncode != 0:
            sys.exit(f"mpiexec -n {n} failed:\n{proc.stdout}\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ms = lambda s: f"{s * 1e3:8.2f}"  # noqa: E731
    mib = lambda b: f"{b / 2**20:8.1f}"  # noqa: E731
    print(f"{args.numel / 2**20:g}M float32 in {args.tensors} tensor(s), "
          f"{'FlatParams' if args.layout == 'flat' else 'plain list'}, Adam, {cpu_name()}, {cores} cores; "
          f"median of {args.steps} interleaved steps, slowest rank; times in ms")
    print(f"{'ranks':>5} | {'DP allred':>9} {'DP kernel':>9} {'DP step':>8} | {'Z red-sc':>8} "
          f"{'Z kernel':>8} {'Z allgat':>8} {'Z step':>8} | {'Z/DP':>5} | {'DP MiB':>8} "
          f"{'Z MiB':>8} {'Z/DP':>5} | thr | max |DP-Z|")
    for r in results:
        s = r["seconds"]
        print(f"{r['ranks']:5d} | {ms(s['dp_comm']):>9} {ms(s['dp_kernel']):>9} {ms(s['dp_step'])} | "
              f"{ms(s['zero_reduce_scatter'])} {ms(s['zero_kernel'])} {ms(s['zero_allgather'])} "
              f"{ms(s['zero_step'])} | {s['zero_step'] / s['dp_step']:5.2f} | "
              f"{mib(r['dp_state_bytes'])} {mib(r['zero_state_bytes'])} "
              f"{r['zero_state_bytes'] / r['dp_state_bytes']:5.3f} | {r['numba_threads']:3d} | "
              f"{r['max_param_difference']:.3g}")
    print("max |DP-Z|: the largest difference between the two runs' parameters at the end "
          "(0: bit for bit; with 3+ ranks the Allreduce and the Reduce_scatter may add the "
          "ranks' gradients in different orders)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "cores": cores, "results": results}, f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help="run one job's measurement (under mpiexec)")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts (driver)")
    p.add_argument("--numel", default="16M", help="parameters, e.g. 16M, 4M, 100000")
    p.add_argument("--layout", choices=["flat", "list"], default="flat",
                   help="flat: one FlatParams buffer (no copies); list: separate arrays")
    p.add_argument("--tensors", type=int, default=1, help="split the parameters into this many arrays")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900, help="seconds per mpiexec job")
    p.add_argument("--json", help="also write the results to this file (driver)")
    args = p.parse_args(argv)
    args.numel = parse_numel(str(args.numel))
    if args.worker:
        worker(args)
    else:
        args.ranks = [int(x) for x in args.ranks.split(",")]
        driver(args)


if __name__ == "__main__":
    main()
