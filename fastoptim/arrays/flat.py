"""Many tensors, one call: parameters laid out as views into one contiguous buffer.

A model has hundreds of small arrays; calling a kernel per array costs more
than the math. :class:`FlatParams` copies the arrays into one buffer and hands
back views of it (and a gradient buffer laid out the same way). An optimizer
built on those views recognizes the layout and updates each parameter group
with a single kernel call; ``opt.step(flat.grads)`` then costs the same
Python time for 10 or 10,000 tensors::

    flat = fastoptim.FlatParams({"w1": w1, "b1": b1, "w2": w2})
    model = flat.params                 # dict of views into flat.buffer
    opt = fastoptim.Adam(model, lr=1e-3)
    ...
    flat.grads["w1"][...] = dloss_dw1   # write gradients into the views
    opt.step(flat.grads)                # one fused kernel call

Any list of parameters that tile one contiguous buffer in order (for example
``[buf[0:6].reshape(2, 3), buf[6:10]]``) is recognized the same way.

``FlatParams(arrays, device="cuda")`` builds both buffers on the GPU (Numba
device arrays; ``.params`` / ``.grads`` are device views), and an optimizer
over those views launches one CUDA kernel per group per step (docs/cuda.md).
"""
from __future__ import annotations

import copy
import weakref

import numpy as np

from .._validation import FLOAT_DTYPES
from .host import is_device_array, root_of


class FlatGrads(list):
    """Gradient views into one buffer; ``.buffer`` is the whole flat gradient.

    Entries may be rebound, as torch's ``p.grad``: ``flat.grads[i] = dw`` or
    ``= None`` (skip that parameter). ``rebound`` is then True and the
    optimizer reads every entry instead of the buffer, until ``zero_grad``
    restores the views.
    """

    __slots__ = ("buffer", "param_buffer", "rebound")


class FlatGradDict(dict):
    """Named gradient views into one buffer; ``.buffer`` is the whole flat gradient
    (entries may be rebound, see :class:`FlatGrads`)."""

    __slots__ = ("buffer", "param_buffer", "rebound")


def _rebinding(cls, name):
    method = getattr(cls.__mro__[1], name)

    def edit(self, *args, **kwargs):
        self.rebound = True
        return method(self, *args, **kwargs)

    edit.__name__ = name
    setattr(cls, name, edit)


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
              "insert", "pop", "remove", "clear", "sort", "reverse"):
    _rebinding(FlatGrads, _name)
for _name in ("__setitem__", "__delitem__", "__ior__", "pop", "popitem", "clear", "update",
              "setdefault"):
    _rebinding(FlatGradDict, _name)

_OWNERS = {}  # id(FlatParams.buffer) -> weakref to the FlatParams


def owner_of(buffer):
    """The live FlatParams whose parameter buffer is ``buffer``, or None."""
    ref = _OWNERS.get(id(buffer))
    flat = ref() if ref is not None else None
    return flat if flat is not None and flat.buffer is buffer else None


def _register(flat):
    key = id(flat.buffer)

    def forget(ref, key=key):
        if _OWNERS.get(key) is ref:
            del _OWNERS[key]

    _OWNERS[key] = weakref.ref(flat, forget)


def copy_keeping_views(a, memo):
    """``copy.deepcopy(a, memo)`` for an array; a view of another NumPy array becomes a
    view of that array's deep copy (made once per memo), so views of one buffer
    stay aliased, as torch's deepcopy keeps views of one storage aliased."""
    if id(a) in memo or not isinstance(a, np.ndarray):
        return copy.deepcopy(a, memo)
    root = root_of(a)
    if root is a or not root.flags.c_contiguous:
        return copy.deepcopy(a, memo)
    new_root = copy.deepcopy(root, memo)
    offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    new = np.ndarray(a.shape, a.dtype, buffer=new_root, offset=offset, strides=a.strides)
    if type(a) is not np.ndarray:
        new = new.view(type(a))
    if not a.flags.writeable:
        new.flags.writeable = False
    memo[id(a)] = new
    memo.setdefault(id(memo), []).append(a)  # keep ``a`` alive while memo holds its id
    return new


class FlatParams:
    """Copy arrays into one contiguous buffer and expose views of it.

    Args:
        arrays: a list (or dict of name -> array) of float arrays, used as the
            initial values; they are copied, not aliased.
        dtype: the buffer's dtype (default: the arrays' common dtype, which must
            be float32 or float64).
        device: None or "cpu" (default): NumPy buffers in host memory; "cuda":
            device buffers on the current CUDA device (Numba device arrays;
            the inputs may be host or device arrays and are copied).

    Attributes:
        buffer: the 1-D parameter buffer.
        params: views into ``buffer`` with the original shapes (list or dict).
        grad_buffer: a 1-D zero buffer of the same size for the gradients.
        grads: views into ``grad_buffer``; pass this object to ``opt.step``.
        device: "cpu" or "cuda".
    """

    def __init__(self, arrays, dtype=None, device=None):
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"FlatParams device must be None, 'cpu' or 'cuda', got {device!r}")
        self.device = device or "cpu"
        named = isinstance(arrays, dict)
        keys = list(arrays.keys()) if named else None
        values = [_host_copy(a) for a in (arrays.values() if named else arrays)]
        if not values:
            raise ValueError("FlatParams got an empty list of arrays")
        dtype = np.dtype(dtype) if dtype is not None else np.result_type(*values)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"FlatParams dtype must be float32 or float64, got {dtype}")
        sizes = [v.size for v in values]
        self.shapes = [v.shape for v in values]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.buffer = np.empty(total, dtype=dtype)
        params = self._views(self.buffer)
        for view, value in zip(params, values):
            view[...] = value
        if self.device == "cuda":
            from . import cuda_runtime, device  # loads numba.cuda: only for device="cuda"

            cuda_runtime._require()
            self.buffer = cuda_runtime.to_device(self.buffer)
            self.grad_buffer = cuda_runtime.zeros(total, dtype)
            device.register_flat_buffer(self.buffer)  # views of it are one segment
            params = self._views(self.buffer)
        else:
            self.grad_buffer = np.zeros(total, dtype=dtype)
        grads = self._views(self.grad_buffer)
        if named:
            self.params = dict(zip(keys, params))
            self.grads = FlatGradDict(zip(keys, grads))
        else:
            self.params = params
            self.grads = FlatGrads(grads)
        self.grads.buffer = self.grad_buffer
        self.grads.param_buffer = self.buffer
        self.grads.rebound = False
        self._grad_views = grads
        _register(self)

    def __deepcopy__(self, memo):
        """A copy with its own buffers whose ``params`` and ``grads`` are views of them."""
        if self.device != "cpu":
            raise TypeError("copy.deepcopy of a CUDA FlatParams is not supported")
        for a in [self.buffer, self.grad_buffer, *self._grad_views,
                  *(self.params.values() if isinstance(self.params, dict) else self.params)]:
            copy_keeping_views(a, memo)
        for g in (self.grads.values() if isinstance(self.grads, dict) else self.grads):
            if g is not None:
                copy_keeping_views(g, memo)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, copy.deepcopy(value, memo))
        for name in ("buffer", "param_buffer", "rebound"):
            setattr(new.grads, name, copy.deepcopy(getattr(self.grads, name), memo))
        _register(new)
        return new

    def _views(self, buffer):
        return [
            buffer[start:stop].reshape(shape)
            for start, stop, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def __len__(self):
        return len(self.shapes)

    def zero_grad(self, set_to_none=True):
        """Set every gradient to zero in one pass.

        Entries of ``grads`` that were rebound (to another array or None) are
        restored to their views first. ``set_to_none`` is torch's argument: a
        buffer cannot hold a missing gradient, so it zeroes either way.
        """
        if not isinstance(set_to_none, (bool, np.bool_)):
            raise TypeError(f"set_to_none must be a bool, but got {type(set_to_none).__name__}")
        if self.grads.rebound:
            if isinstance(self.grads, dict):
                keys = list(self.params.keys())
                dict.clear(self.grads)
                dict.update(self.grads, zip(keys, self._grad_views))
            else:
                list.clear(self.grads)
                list.extend(self.grads, self._grad_views)
            self.grads.rebound = False
        if self.device == "cuda":
            from . import cuda_runtime

            cuda_runtime.fill(self.grad_buffer, 0)
        else:
            self.grad_buffer[...] = 0


def _host_copy(a):
    """``a`` as a NumPy array; device arrays (CUDA Array Interface) are copied to the host."""
    if is_device_array(a):
        from . import device

        return device.DeviceArrays.to_host(a)
    return np.asarray(a)
