"""Which :class:`~fastoptim.arrays.host.ArraySupport` serves a set of arrays.

Above ``host`` and ``device`` in ``fastoptim.arrays``: it imports ``device``
(and so ``numba.cuda``) only when it sees a device array.
"""
from __future__ import annotations

from .host import HOST, is_device_array


def check_backend_fits(backend, on_device):
    """Only the cuda backend updates device arrays, and only it needs them."""
    if on_device != (backend == "cuda"):
        raise ValueError(
            f"backend {backend!r} cannot update "
            + ("CUDA device arrays" if on_device else "host NumPy arrays")
        )


def device_support(arrays, names=None):
    """The array support for ``arrays``: all on the host, or all on one CUDA device."""
    flags = [is_device_array(a) for a in arrays]
    if any(flags):
        if not all(flags):
            first_host = flags.index(False)
            label = names[first_host] if names else "an array"
            raise ValueError(
                f"{label} is a host array but others are CUDA device arrays; "
                "all parameters of one optimizer must live in the same place"
            )
        from .device import DeviceArrays

        return DeviceArrays()
    return HOST
