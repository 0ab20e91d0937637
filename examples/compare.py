"""Compare SGD, SGD+momentum, Adam, AdamW and the learning-rate schedulers on a small MLP.

A thin wrapper of ``fastoptim demo`` (``fastoptim/demo.py``) for source checkouts::

    python examples/compare.py              # a few minutes; writes demo_out/
    python examples/compare.py --quick      # seconds, a smoke test
    python examples/compare.py --help
"""
import sys
from pathlib import Path

try:
    import fastoptim.demo
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastoptim.demo

if __name__ == "__main__":
    sys.exit(fastoptim.demo.main(sys.argv[1:]))
