"""The body of ``fastoptim bench``: from parsed arguments to tables, JSON and a plot.

``fastoptim.cli`` parses the command line (and imports nothing heavy); ``main``
here checks every argument before anything is measured, then runs the CPU
benchmark, the training loop alone (``--loop``) or the GPU one (``--device cuda``).
"""
from __future__ import annotations

import json
import os
import sys

from . import loop as training_loop
from . import policies, runner
from .contestants import import_torch
from .device import run_device
from .machine import Threads, check_threads, machine_info
from .rendering import plot, require_matplotlib
from .report import json_default
from .specs import DEFAULT_OPTIMIZERS, BenchError, parse_many, parse_size


def _check_output_path(option, path):
    """An output file's folder must exist and be writable: checked before the run."""
    if path is None or path == "-":
        return None
    if os.path.isdir(path):
        return f"{option} {path!r} is a directory, not a file"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{option} {path!r}: the folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{option} {path!r}: the folder {folder!r} is not writable"
    return None


def validate(args):
    """Every usage error of ``fastoptim bench``, found before anything is measured (or None)."""
    for option, value in (("--optimizers", args.optimizers), ("--backends", args.backends),
                          ("--sizes", args.sizes)):
        if value is not None and not value:
            return f"{option} is empty: give a comma-separated list"
    try:
        for size in args.sizes or ():
            parse_size(size)
        if args.many != "default":
            parse_many(args.many)
    except BenchError as exc:
        return str(exc)
    if args.json_path == "-" and args.plot_path == "-":
        return "--plot needs a file name"
    return _check_output_path("--json", args.json_path) or _check_output_path("--plot", args.plot_path)


def _write_json(doc, path, console=None, default=json_default):
    text = json.dumps(doc, indent=2, default=default)
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(path, "w") as f:
            f.write(text + "\n")
        if console is not None:
            console.print(f"wrote {path}")


def main(args, console, usage_error) -> int:
    """Run ``fastoptim bench`` for parsed ``args`` on a rich ``console``; the exit code.
    ``usage_error(message)`` prints a usage error and returns its exit code (2)."""
    problem = validate(args)
    if problem:
        return usage_error(problem)
    if args.plot_path:  # fail before a long run, not after it
        try:
            require_matplotlib()
        except ImportError as exc:
            return usage_error(str(exc))
    try:
        if args.device == "cuda":
            return _cuda(args, console)
        if args.loop:
            return _loop(args, console)
        report = runner.run(
            optimizers=args.optimizers or DEFAULT_OPTIMIZERS, backends=args.backends,
            sizes=args.sizes, many=args.many, dtype=args.dtype or "float32",
            threads=args.threads, repeat=args.repeat, peers=args.peers, quick=args.quick,
            latency=args.latency,
            crossover=args.crossover, console=console,
            loop=False if args.no_loop else None)
    except BenchError as exc:
        return usage_error(str(exc))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    if args.json_path:
        report.write_json(args.json_path)
        if args.json_path != "-":
            console.print(f"wrote {args.json_path}")
    if args.plot_path:
        plot(report, args.plot_path)
        console.print(f"wrote {args.plot_path}")
    return 0


def _loop(args, console) -> int:
    dtypes = [args.dtype] if args.dtype else list(training_loop.DEFAULT_DTYPES)
    threads = check_threads(args.threads)
    dispatch = training_loop.DISPATCH_SWEEP if args.loop_dispatch else ()
    models = args.loop_models or training_loop.DEFAULT_MODELS
    if args.policies:
        rows = policies.run_policies(models=models, console=console)
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump({"schema": "fastoptim-bench-policies/1",
                           "machine": machine_info(threads), "policies": rows}, f, indent=2)
        return 0
    try:
        with Threads(threads, import_torch() if args.peers else None):
            doc = training_loop.run(models=models, dtypes=dtypes, backends=args.backends,
                                    peers=args.peers,
                                    repeat=args.repeat or training_loop.DEFAULT_REPEAT,
                                    dispatch=dispatch, console=console)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if args.json_path:
        doc = {"schema": "fastoptim-bench-loop/1", "machine": machine_info(threads), **doc}
        _write_json(doc, args.json_path, console)
    return 0


def _cuda(args, console) -> int:
    try:
        result, passed = run_device(
            "cuda", console=console, optimizers=args.optimizers or list(DEFAULT_OPTIMIZERS),
            backends=args.backends, sizes=args.sizes, many=args.many, dtype=args.dtype or "float32",
            threads=args.threads, repeat=args.repeat, quick=args.quick, peers=args.peers,
            json_path=args.json_path, plot_path=args.plot_path)
    except BenchError as exc:
        print(f"fastoptim bench --device cuda: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # no GPU benchmark, no GPU, or a bad argument (ValueError too)
        print(f"fastoptim bench --device cuda: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    if args.plot_path and "plot_path" not in passed:
        print("fastoptim bench --device cuda: --plot is not supported by the CUDA benchmark",
              file=sys.stderr)
    if args.json_path and "json_path" not in passed and result is not None:
        doc = {"schema": "fastoptim-bench-cuda/1", "machine": machine_info(args.threads),
               "cuda": result}
        _write_json(doc, args.json_path, default=str)
    return 0 if not isinstance(result, int) else result
