"""Host and device array support, flat parameter buffers and the layout checks.

Everything in fastoptim that asks "where does this array live, may a kernel
write it, do these views tile one buffer?" asks this package. Its modules, in
dependency order (each imports only those before it, even inside a function;
``tests/test_imports.py`` checks it):

- ``host``: :func:`is_device_array`, :func:`find_segment`, :class:`ArraySupport`
  and :class:`HostArrays` (NumPy arrays).
- ``cuda_runtime``: the one module that imports ``numba.cuda`` (availability,
  streams, launch configurations).
- ``device``: :class:`~fastoptim.arrays.device.DeviceArrays`, the CUDA twin of
  ``HostArrays``, and the CUDA side's one namespace.
- ``flat``: :class:`FlatParams` and its gradient views.
- ``support``: :func:`device_support`, the support for a set of arrays.

Importing this package loads neither ``device`` nor ``numba.cuda``.
"""
from .flat import FlatGradDict, FlatGrads, FlatParams, copy_keeping_views, owner_of
from .host import HOST, ArraySupport, HostArrays, find_segment, is_array, is_device_array, root_of
from .support import check_backend_fits, device_support

__all__ = [
    "ArraySupport", "HostArrays", "HOST", "is_device_array", "is_array", "find_segment", "root_of",
    "FlatParams", "FlatGrads", "FlatGradDict", "owner_of", "copy_keeping_views",
    "device_support", "check_backend_fits",
]
