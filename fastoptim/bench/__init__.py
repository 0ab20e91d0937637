"""``fastoptim bench``: how much faster than what you have, how close to what the hardware allows.

An optimizer step is memory-bandwidth bound, so every case is measured against a
*floor* taken in the same run: a Numba kernel that reads and writes the same
arrays as the optimizer (same bytes per element, same threads, same serial or
parallel dispatch) and does no math. Each contestant is then one row of a table:

- ``floor`` and ``floor, prefetching``: two such kernels, a plain ``prange`` loop
  and the chunked, prefetching loop the numba backend runs; the faster of the two
  is the bandwidth floor (SGD+momentum 20 B/element in fp32, Adam/AdamW 28 B,
  AMSGrad 36 B, plain SGD 12 B) that "of floor" divides by;
- ``numpy``: the NumPy reference backend, and every available fast backend
  (``numba``, ``c``), each through the optimizer classes a user calls. The first
  ``CHECK_STEPS`` steps of each fast backend are compared with the reference
  (``assert_allclose``, rtol 1e-6 in fp32, 1e-12 in fp64) BEFORE it is timed: a
  mismatch is reported, never timed;
- peers, when importable: ``torch.optim`` (for-loop, foreach, fused) and DeepSpeed's
  ``DeepSpeedCPUAdam``.

Time per step is the median of ``repeat`` repeats after a warm-up that also pays
first-touch page faults and JIT compilation. The cases: one large tensor, one
medium tensor, and a model-like set of many small tensors, stepped both through
``FlatParams`` (one kernel call per step) and as a plain list (one call per tensor).

    >>> from fastoptim import bench
    >>> report = bench.run(optimizers=["adam"], sizes=[4096], many=None, repeat=2,
    ...                    peers=False, console=None)      # doctest: +SKIP
    >>> report.write_json("bench.json")                      # doctest: +SKIP

The modules, each one concern (none imports this package's ``__init__``):

- ``specs``: settings, the one table of optimizers, the peers, size parsing;
- ``floor``: the no-math floor kernels and Adam's compute bound;
- ``contestants``: the cases, their data, each contestant's set-up and check;
- ``runner``: ``run()``, checking and timing every contestant (``timing``,
  ``machine``: the warm-up, the machine's description and load);
- ``report``: the rows, the ``--json`` document and the goals; ``rendering``: the tables;
- ``latency``, ``crossover``, ``loop`` (the training loop), ``policies``: the other
  measurements; ``device`` and ``cuda``: ``--device cuda``; ``command``: the command
  line's body (``fastoptim.cli`` parses the arguments).

``python -m fastoptim bench --help`` lists the command-line options. The names
below are loaded on first use, so ``import fastoptim.bench.cuda`` loads no CPU code.
"""
from __future__ import annotations

import importlib

_PUBLIC = {  # name -> the module that defines it
    "OPTIMIZERS": "specs", "DEFAULT_OPTIMIZERS": "specs", "BenchError": "specs",
    "parse_size": "specs", "parse_many": "specs", "format_size": "specs",
    "run": "runner", "run_latency": "latency", "run_crossover": "crossover",
    "run_device": "device", "Report": "report", "Result": "report",
    "print_report": "report", "plot": "rendering", "machine_info": "machine",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
