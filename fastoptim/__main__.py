"""``python -m fastoptim``: the same command as ``fastoptim`` (see ``fastoptim.cli``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
