"""The cases and the contestants of the CPU benchmark: data, set-up and the check.

A case is one tensor or many; a contestant is a fastoptim backend through the
optimizer classes (checked against the NumPy reference before it is timed), a
torch.optim implementation or DeepSpeed's ``DeepSpeedCPUAdam`` on the same data.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

import fastoptim

from .specs import format_size


@dataclass(frozen=True)
class Case:
    key: str  # "16M" or "1000x1024"
    sizes: tuple  # elements per tensor
    modes: tuple  # ("single",), or ("flat", "list", "one"): the many-tensors case
    all_peers: bool = True  # False: of the torch peers only torch fused (the extra cases)

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def title(self, mode) -> str:
        if mode == "single":
            return f"one tensor of {format_size(self.n)} elements"
        count, size = len(self.sizes), self.sizes[0]
        if mode == "flat":
            return (f"{count} tensors x {format_size(size)} via FlatParams "
                    "(one kernel call per step)")
        if mode == "one":
            return (f"the same {format_size(self.n)} elements as one tensor (what FlatParams "
                    f"over the {count} tensors is measured against, interleaved)")
        return (f"{count} tensors x {format_size(size)} as a plain list (checked every step, "
                "one table-kernel call)")


def make_cases(sizes, many, flat=None, suffix="", all_peers=lambda n: True) -> list:
    """Single-tensor cases, the many-tensors case (FlatParams, plain list and the same
    elements as one tensor, timed interleaved) and a FlatParams-only case; ``suffix`` tags the keys (the float64 pass: " f64");
    ``all_peers(n)``: whether a single-tensor case of ``n`` elements gets every torch peer."""
    cases = [Case(format_size(n) + suffix, (n,), ("single",), all_peers(n)) for n in sizes]
    if many is not None:
        count, size = many
        cases.append(Case(f"{count}x{format_size(size)}{suffix}", (size,) * count,
                          ("flat", "list", "one")))
    if flat is not None:
        count, size = flat
        cases.append(Case(f"{count}x{format_size(size)}{suffix}", (size,) * count, ("flat",),
                          False))
    return cases


class BenchData:
    """Initial parameters and gradients per (total size, dtype), reused by every contestant."""

    def __init__(self, dtype):
        self.dtype = dtype
        self._cache = {}

    def __call__(self, n):
        if n not in self._cache:
            self._cache.clear()  # keep one size in memory at a time
            rng = np.random.default_rng(n)
            param = rng.random(n, dtype=self.dtype)
            param -= 0.5
            grad = rng.random(n, dtype=self.dtype)
            grad -= 0.5
            grad *= 1e-2
            self._cache[n] = (param, grad)
        return self._cache[n]


def _bounds(sizes):
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def setup_fastoptim(spec, case, mode, data, backend):
    """(optimizer, params, step function) for one fastoptim contestant on fresh copies."""
    param0, grad = data(case.n)
    cls = getattr(fastoptim, spec.cls)
    bounds = _bounds(case.sizes)
    if mode in ("single", "one"):
        params, grads = [param0.copy()], [grad]
    elif mode == "flat":
        flat = fastoptim.FlatParams([param0[a:b] for a, b in bounds])
        flat.grad_buffer[...] = grad
        params, grads = flat.params, flat.grads
    else:  # separate arrays: one kernel call per tensor
        params = [param0[a:b].copy() for a, b in bounds]
        grads = [grad[a:b] for a, b in bounds]
    opt = cls(params, backend=backend, **spec.kwargs)
    return opt, params, lambda: opt.step(grads)


def step_arrays(opt, param, grad) -> tuple:
    """The arrays a step of a one-tensor fastoptim contestant reads and writes, the
    parameter and the gradient first, then its state arrays in the kernel's order (what
    ``floor.own_floor`` runs over)."""
    entry = opt.state[0]
    return (param, grad, *(entry[key] for key in opt._state_key_names()[0]))


def snapshot(opt, params):
    """Copies of the parameters and every state array (torch's state_dict layout)."""
    state = opt.state_dict()["state"]
    arrays = {f"param[{i}]": np.array(p) for i, p in enumerate(params)}
    for i, entry in state.items():
        for key, value in entry.items():
            if key != "step":
                arrays[f"{key}[{i}]"] = np.asarray(value)
    return arrays


def compare(got: dict, ref: dict, rtol: float):
    """None when ``got`` matches the reference, else one line describing the worst mismatch."""
    if got.keys() != ref.keys():
        return f"state differs: {sorted(set(got) ^ set(ref))[:3]}"
    for name, expected in ref.items():
        actual = got[name]
        try:
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)
        except AssertionError:
            with np.errstate(all="ignore"):
                rel = np.abs(actual.astype(np.float64) - expected) / np.abs(expected)
            worst = np.nanmax(np.where(np.isnan(rel), np.inf, rel)) if rel.size else 0.0
            return f"{name}: max rel err {worst:.1e} > rtol {rtol:.0e}"
    return None


def setup_torch(torch, spec, case, data, impl):
    param0, grad = data(case.n)
    params = []
    for a, b in _bounds(case.sizes):
        t = torch.from_numpy(param0[a:b].copy())
        t.grad = torch.from_numpy(grad[a:b])
        params.append(t)
    opt = getattr(torch.optim, spec.cls)(params, **spec.kwargs, **impl)
    return opt.step


def setup_deepspeed(torch, spec, case, data):
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    param0, grad = data(case.n)
    params = []
    for a, b in _bounds(case.sizes):
        t = torch.nn.Parameter(torch.from_numpy(param0[a:b].copy()))
        t.grad = torch.from_numpy(grad[a:b].copy())
        params.append(t)
    kw = dict(spec.kwargs)
    opt = DeepSpeedCPUAdam(params, adamw_mode=spec.name == "adamw", **kw)
    return opt.step


def import_torch():
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # a broken install is the same as none for a peer
        return None
    return torch


def deepspeed_importable() -> bool:
    if importlib.util.find_spec("deepspeed") is None:
        return False
    try:
        import deepspeed  # noqa: F401
    except Exception:
        return False
    return True
