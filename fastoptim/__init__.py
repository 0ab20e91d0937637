"""fastoptim: torch.optim's SGD, Adam and AdamW for NumPy arrays and NVIDIA GPUs.

    >>> import numpy as np, fastoptim
    >>> w = np.ones(3, dtype=np.float32)
    >>> opt = fastoptim.AdamW([w], lr=1e-3)
    >>> opt.step([np.full(3, 0.1, dtype=np.float32)])
"""
import importlib

from . import functional
from .backends import available_backends
from .flat import FlatParams
from .optimizers import SGD, Adam, AdamW, Optimizer

__version__ = "0.1.0"
__all__ = [
    "SGD", "Adam", "AdamW", "Optimizer", "FlatParams", "available_backends",
    "functional", "lr_scheduler", "schedules",
]


def __getattr__(name):  # lr_scheduler and schedules load on first use
    if name in ("lr_scheduler", "schedules"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
