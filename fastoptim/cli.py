"""The ``fastoptim`` command: ``fastoptim bench`` and ``fastoptim demo``.

Only argparse is imported here; NumPy, Numba, rich, torch and matplotlib load
inside the command that needs them, so ``fastoptim --help`` is instant. The
commands themselves are ``fastoptim.bench.command`` and ``fastoptim.demo``.
Exit codes: 0 success, 1 a failure while running, 2 a usage error (unknown
optimizer or backend, bad size, missing optional dependency for an option).
"""
from __future__ import annotations

import argparse
import os
import sys

_BENCH_EPILOG = """\
examples:
  fastoptim bench                          # SGD, Adam, AdamW: fp32, fp64 in cache, the loop
  fastoptim bench --quick                  # small sizes, a few seconds
  fastoptim bench --optimizers adamw --sizes 64M,1M,16K --plot adamw.png
  fastoptim bench --threads 1 --no-peers --json bench.json
  fastoptim bench --latency --crossover
  fastoptim bench --loop                   # only the training-loop benchmark, full form
  fastoptim bench --loop --loop-dispatch   # ... with the in-loop serial/parallel crossover

Each fast backend is checked against the NumPy reference before it is timed.
See docs/benchmarks.md for what every column means.
"""


def _version() -> str:
    try:
        from fastoptim import __version__
    except Exception:  # pragma: no cover - a broken install still answers --version
        from importlib.metadata import version

        __version__ = version("fastoptim")
    return __version__


def _csv(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastoptim",
        description="torch.optim's SGD, Adam and AdamW for NumPy arrays: benchmark and demo.",
    )
    parser.add_argument("--version", action="version", version=f"fastoptim {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench", help="how fast is each backend, against the memory-bandwidth floor and peers",
        description="Time SGD (momentum), Adam and AdamW steps on every available backend, "
                    "against a bandwidth floor measured in the same run and against "
                    "torch.optim / DeepSpeed when importable.",
        epilog=_BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="small sizes and few repeats (well under 20 s)")
    bench.add_argument("--optimizers", type=_csv, default=None, metavar="LIST",
                       help="comma-separated: sgd, adam, adamw (default), sgd-plain, amsgrad")
    bench.add_argument("--backends", type=_csv, default=None, metavar="LIST",
                       help="comma-separated CPU backends: numpy, numba, c "
                            "(default: every available one)")
    bench.add_argument("--sizes", type=_csv, default=None, metavar="LIST",
                       help="single-tensor sizes in elements, K/M suffixes allowed "
                            "(default 16M,1M,256K; --quick 1M,64K)")
    bench.add_argument("--many", default="default", metavar="COUNTxSIZE",
                       help="the many-small-tensors case, FlatParams and plain list "
                            "(default 1000x1024; --quick 100x1024; 'none' to skip)")
    bench.add_argument("--dtype", choices=("float32", "float64"), default=None,
                       help="default float32 (the default run adds a float64 in-cache pass; "
                            "--loop: both unless given)")
    bench.add_argument("--threads", type=int, default=None, metavar="N",
                       help="threads for numba, the C OpenMP kernels and torch (default: all)")
    bench.add_argument("--repeat", type=int, default=None, metavar="N",
                       help="timed repeats per measurement, the median is shown "
                            "(default 10; --quick 5)")
    bench.add_argument("--no-peers", dest="peers", action="store_false",
                       help="do not time torch.optim / DeepSpeedCPUAdam")
    bench.add_argument("--latency", dest="latency", action="store_true", default=None,
                       help="measure the first-step latency with a cold and a warm Numba "
                            "cache (default: only if it fits the default run's time budget)")
    bench.add_argument("--no-latency", dest="latency", action="store_false")
    bench.add_argument("--crossover", action="store_true",
                       help="measure where the parallel kernels start beating the serial ones")
    bench.add_argument("--json", dest="json_path", metavar="PATH",
                       help="write every result and the machine description as JSON ('-': stdout)")
    bench.add_argument("--plot", dest="plot_path", metavar="PATH",
                       help="PNG of GB/s against size "
                            '(needs matplotlib: pip install "fastoptim[plot]")')
    bench.add_argument("--loop", action="store_true",
                       help="only the training-loop benchmark (a NumPy MLP, ~100K and ~3M "
                            "parameters, float32 and float64), full form; the default run "
                            "includes its short form")
    bench.add_argument("--no-loop", dest="no_loop", action="store_true",
                       help="leave the training-loop benchmark out of the default run")
    bench.add_argument("--loop-models", type=_csv, default=None, metavar="LIST",
                       help="with --loop: models to train (default 100K,3M)")
    bench.add_argument("--loop-dispatch", action="store_true",
                       help="with --loop: also time backend='auto' with other serial/parallel "
                            "thresholds (the crossover inside the loop)")
    bench.add_argument("--policies", action="store_true",
                       help="with --loop: compare the thread-policy alternatives (wait "
                            "policies, Numba layers, serial), each in a fresh process")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda runs the GPU benchmark (fastoptim.bench.cuda) instead")

    parser.bench_parser = bench  # for usage errors found after parsing (unknown names)

    demo = commands.add_parser("demo", help="train small NumPy models: optimizers, schedules "
                                            "and weight decay compared (fastoptim.demo)",
                               add_help=False)
    demo.add_argument("args", nargs=argparse.REMAINDER, help="passed to the demo")
    return parser


def main(argv=None) -> int:
    """Entry point of ``fastoptim`` and ``python -m fastoptim``; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # everything after "demo" is the demo's own (argparse's
        return _demo(argv[1:])  # REMAINDER would reject a leading --option)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(parser, args)
    if args.command == "demo":
        return _demo(args.args)
    parser.print_help(sys.stderr)
    return 2


def _usage_error(parser, message) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _bench(parser, args) -> int:
    try:
        from rich.console import Console
    except ImportError:
        print("fastoptim bench: the tables need the 'rich' package, which is not installed "
              "(pip install rich, or reinstall fastoptim, which depends on it)", file=sys.stderr)
        return 2
    from fastoptim.bench import command

    console = Console(stderr=args.json_path == "-")
    if not console.is_terminal and "COLUMNS" not in os.environ:  # a log file: room for the tables
        console = Console(stderr=args.json_path == "-", width=100)
    return command.main(args, console, lambda message: _usage_error(parser.bench_parser, message))


def _demo(argv) -> int:
    try:
        import fastoptim.demo as demo
    except ModuleNotFoundError as exc:
        if exc.name == "fastoptim.demo":
            print("fastoptim demo: the demo is not available in this installation "
                  "(no fastoptim.demo module)", file=sys.stderr)
            return 1
        print(f"fastoptim demo: the demo needs a package that is not installed: {exc.name} "
              '(try: pip install "fastoptim[examples]")', file=sys.stderr)
        return 1
    result = demo.main(list(argv))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
