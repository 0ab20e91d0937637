"""What the benchmark runs: its settings, the optimizers under test and the peers.

Also the parsing and formatting of sizes and times that the command line, the
tables and the JSON report share, and ``BenchError`` (a bad request: exit code 2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fastoptim import backends as _backends

# one large tensor; one of the many-tensor case's 1M elements (FlatParams against one
# tensor, in the same run); one medium tensor
DEFAULT_SIZES = (16 * 2**20, 2 * 2**20, 2**20, 256 * 2**10, 64 * 2**10)
# the in-cache regime (issue 13): float64 at these sizes in the default run, and a
# FlatParams case whose total lies in it
IN_CACHE_F64_SIZES = (2**20, 256 * 2**10)
IN_CACHE_FLAT = (256, 1024)  # 256 tensors x 1K = 256K elements, one FlatParams call
IN_CACHE_RANGE = (64 * 2**10, 2 * 2**20)
# every torch peer at these sizes; the default run's other cases time torch fused only
FULL_PEER_SIZES = (16 * 2**20, 2**20, 256 * 2**10)
BOUND_BLOCK_BYTES = 4096  # per array and thread: 4 arrays x 4 KiB stay in L1
DEFAULT_MANY = (1000, 1024)  # a model-like set: 1000 tensors of 1024 elements
QUICK_SIZES = (2**20, 64 * 2**10)
QUICK_MANY = (100, 1024)
DEFAULT_REPEAT, QUICK_REPEAT = 10, 5
CHECK_STEPS = 3  # steps compared with the NumPy reference before timing
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
WARMUP_S, QUICK_WARMUP_S = 0.1, 0.02  # minimum warm-up after the checked steps
WARMUP_MIN_STEPS = 2
MIN_REPEAT_S = 2e-3  # a repeat times enough consecutive steps to last this long
CONTESTANT_BUDGET_S, QUICK_CONTESTANT_BUDGET_S = 2.0, 0.5  # timed seconds per contestant...
MIN_REPEATS = 3  # ...after at least this many repeats: a very slow row gets fewer repeats
DEFAULT_BUDGET_S = 120.0  # the default run adds --latency only if it fits in this
LATENCY_COST_S = 6.0  # rough cost of the latency measurement per optimizer
LATENCY_GOAL_S = {"cold": 2.0, "warm": 0.5}
CROSSOVER_SIZES = tuple(2**k for k in range(10, 21))  # 1K .. 1M elements


class BenchError(ValueError):
    """A bad benchmark request (unknown optimizer or backend, bad size): exit code 2."""


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer configuration, identical for fastoptim (CPU and GPU) and the peers."""

    name: str
    label: str
    cls: str  # class name in fastoptim and in torch.optim
    kwargs: dict
    arrays: int  # arrays the step reads (param, grad, state...); all but grad are written

    @property
    def writes(self) -> int:  # arrays the step writes: all it reads but the gradient
        return self.arrays - 1

    @property
    def streams(self) -> int:  # array passes per element: reads + writes
        return self.arrays + self.writes


# the one table of optimizers: the CPU run, the latency children, the training loop's
# labels and the GPU benchmark (cuda.py) all read it
OPTIMIZERS = {
    spec.name: spec
    for spec in (
        OptimizerSpec("sgd", "SGD (momentum 0.9)", "SGD", dict(lr=1e-2, momentum=0.9), 3),
        OptimizerSpec("adam", "Adam", "Adam", dict(lr=1e-3), 4),
        OptimizerSpec("adamw", "AdamW", "AdamW", dict(lr=1e-3, weight_decay=1e-2), 4),
        OptimizerSpec("sgd-plain", "SGD (no momentum)", "SGD", dict(lr=1e-2), 2),
        OptimizerSpec("amsgrad", "Adam (amsgrad)", "Adam", dict(lr=1e-3, amsgrad=True), 5),
    )
}
DEFAULT_OPTIMIZERS = ("sgd", "adam", "adamw")
TORCH_PEERS = (  # key, label, torch.optim keyword
    ("torch-forloop", "torch for-loop", dict(foreach=False)),
    ("torch-foreach", "torch foreach", dict(foreach=True)),
    ("torch-fused", "torch fused", dict(fused=True)),
)
DEEPSPEED = "deepspeed-cpuadam"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text) -> int:
    """``"16M"`` -> 16777216, ``"256K"`` -> 262144, ``"1000"`` -> 1000 (K = 1024)."""
    if isinstance(text, (int, np.integer)):
        value = int(text)
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise BenchError(f"bad size {text!r}: expected a count such as 4096, 256K or 16M")
        exact = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
        if exact != int(exact):
            raise BenchError(f"bad size {text!r}: not a whole number of elements")
        value = int(exact)
    if value < 1:
        raise BenchError(f"bad size {text!r}: must be at least 1 element")
    return value


def parse_many(text):
    """``"1000x1024"`` -> (1000, 1024); ``"none"`` or ``"0"`` -> None (skip that case)."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        count, size = text
        return parse_size(count), parse_size(size)
    if str(text).strip().lower() in ("", "0", "none", "off"):
        return None
    parts = str(text).lower().split("x")
    if len(parts) != 2:
        raise BenchError(f"bad --many {text!r}: expected COUNTxSIZE such as 1000x1024")
    return parse_size(parts[0]), parse_size(parts[1])


def format_size(n: int) -> str:
    for suffix, unit in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def format_time(seconds) -> str:
    """Three significant digits: 1.23 s, 45.6 ms, 789 µs."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {unit}"


def check_names(kind, names, known):
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(
            f"unknown {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}; "
            f"expected one of {', '.join(known)}"
        )


def resolve_backends(names=None) -> list:
    """The CPU backends to time, the NumPy reference first; BenchError if one cannot run."""
    if names is None:
        return [b for b in _backends.CPU_BACKENDS if _backends.is_available(b)]
    names = list(dict.fromkeys(names))
    if "cuda" in names:
        raise BenchError("the cuda backend is benchmarked with --device cuda, not --backends")
    check_names("backend", names, _backends.CPU_BACKENDS)
    for name in names:
        try:
            _backends.load(name)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
    return [b for b in _backends.CPU_BACKENDS if b in names]
