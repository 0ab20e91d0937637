"""fastoptim: torch.optim's SGD, Adam and AdamW (and Lion) for NumPy arrays and NVIDIA GPUs.

    >>> import numpy as np, fastoptim
    >>> w = np.ones(3, dtype=np.float32)
    >>> opt = fastoptim.AdamW([w], lr=1e-3)
    >>> opt.step([np.full(3, 0.1, dtype=np.float32)])
"""
import importlib

from .backends import _threads

_threads.apply_env_defaults()  # before anything can load libgomp (see backends/_threads.py)

from . import functional  # noqa: E402
from .arrays import FlatParams  # noqa: E402
from .backends import available_backends  # noqa: E402
from .backends._threads import get_num_threads, set_num_threads  # noqa: E402
from .backends._threads import info as thread_info  # noqa: E402
from .optimizers import SGD, Adam, AdamW, Lion, Optimizer  # noqa: E402

__version__ = "0.1.0"

# loaded on first use, so that `import fastoptim` stays fast
_SUBMODULES = ("lr_scheduler", "schedules", "clip", "checkpoint", "param_groups", "distributed")
_LAZY = {
    "clip_grad_norm_": "clip", "clip_grad_value_": "clip", "get_total_norm": "clip",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "param_groups_with_decay_mask": "param_groups",
}

__all__ = [
    "SGD", "Adam", "AdamW", "Lion", "Optimizer", "FlatParams", "available_backends", "functional",
    "set_num_threads", "get_num_threads", "thread_info",
    *_SUBMODULES, *_LAZY,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
