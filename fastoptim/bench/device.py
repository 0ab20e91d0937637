"""``--device cuda``: hand the request to the GPU benchmark (``cuda.py``), loaded only then."""
from __future__ import annotations

import importlib
import inspect

from .specs import BenchError


def _load_cuda_bench():
    try:
        return importlib.import_module("fastoptim.bench.cuda")
    except ImportError as exc:
        raise RuntimeError(f"the CUDA benchmark could not be loaded: {exc}") from None


def run_device(device, console=None, **options):
    """Hand ``--device cuda`` to ``run_cuda_bench`` of the GPU benchmark; return (result, kwargs).

    The GPU benchmark is ``fastoptim.bench.cuda``. Only the keyword arguments its ``run_cuda_bench``
    accepts are passed (of optimizers, backends, sizes, many, dtype, threads,
    repeat, quick, peers, json_path, plot_path, console). Raises BenchError for
    another device and RuntimeError when no GPU benchmark can be loaded; errors
    raised by ``run_cuda_bench`` itself (no GPU, bad argument) propagate.
    """
    if device != "cuda":
        raise BenchError(f"unknown device {device!r}: expected cpu or cuda")
    module = _load_cuda_bench()
    entry = getattr(module, "run_cuda_bench", None)
    if entry is None:
        raise RuntimeError(f"{module.__name__} has no run_cuda_bench() function")
    options["console"] = console
    try:
        params = inspect.signature(entry).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_all = {}, True
    kwargs = {k: v for k, v in options.items() if takes_all or k in params}
    return entry(**kwargs), kwargs
