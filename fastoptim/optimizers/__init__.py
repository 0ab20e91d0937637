"""The optimizer classes: validate, keep hyperparameters and state, hold no math.

``base`` holds :class:`Optimizer` (``step``, state, copies), with its parts in
``_groups`` (param groups and their edits), ``_checks`` (what a step checks
before it writes), ``_segments`` (flat groups), ``_state`` (the state store and
its torch-style view) and ``_load`` (``state_dict``/``load_state_dict``);
``sgd`` and ``adam`` hold the torch optimizers, ``lion`` Lion.
"""
from .adam import Adam, AdamW
from .base import Optimizer
from .lion import Lion
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Lion"]
