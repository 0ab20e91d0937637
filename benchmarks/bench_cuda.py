"""GPU benchmark script: ``python benchmarks/bench_cuda.py`` (same as ``fastoptim bench --device cuda``).

The benchmark itself lives in the package, ``fastoptim/bench/cuda.py``, so that it
is installed with ``pip install .``.
"""
import sys

from fastoptim.bench.cuda import main

if __name__ == "__main__":
    sys.exit(main())
