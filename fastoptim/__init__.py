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

# loaded on first use, so that `import fastoptim` stays fast
_SUBMODULES = ("lr_scheduler", "schedules", "clip", "checkpoint", "param_groups", "distributed")
_LAZY = {
    "clip_grad_norm_": "clip", "clip_grad_value_": "clip", "get_total_norm": "clip",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "param_groups_with_decay_mask": "param_groups",
}

__all__ = [
    "SGD", "Adam", "AdamW", "Optimizer", "FlatParams", "available_backends", "functional",
    *_SUBMODULES, *_LAZY,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
