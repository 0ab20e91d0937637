"""A model-like set of 1000 tensors x 1024 elements, float32, in one pytest-benchmark group
per optimizer:

- fastoptim through FlatParams (one kernel call per step),
- the same 1M elements as ONE tensor (what the flat mode should match),
- the same 1000 tensors as a plain list (checked on every step, then one
  table-kernel call: fastoptim/_plain_list.py),
- the plain list through the general per-tensor path ("list-general": one kernel
  call per tensor, what every plain list paid before the table kernels),
- torch.optim for-loop / foreach / fused and DeepSpeedCPUAdam over the 1000 tensors,
- the floor for 1M elements.

Issue 12's goals read off one group: list within 2x of flat, at least 3x faster
than torch fused and DeepSpeedCPUAdam; flat within 1.5x of single.
"""
import pytest

from fastoptim import _plain_list
from fastoptim.bench import contestants, floor, specs

COUNT, SIZE = 1000, 1024
N = COUNT * SIZE
MANY = contestants.Case(f"{COUNT}x{specs.format_size(SIZE)}", (SIZE,) * COUNT, ("flat", "list"))
ONE = contestants.Case(specs.format_size(N), (N,), ("single",))
TORCH = {key: impl for key, _, impl in specs.TORCH_PEERS}
DTYPE = "float32"


def _group(optimizer):
    return f"{optimizer} {COUNT}x{SIZE} {DTYPE}"


def _general_path(step):
    """``step`` with the plain-list fast path switched off (the per-tensor path)."""
    def general():
        _plain_list.enabled = False
        try:
            step()
        finally:
            _plain_list.enabled = True
    return general


@pytest.mark.parametrize("mode", ["flat", "single", "list", "list-general"])
def test_fastoptim(benchmark, helpers, optimizer, backend, mode):
    case = ONE if mode == "single" else MANY
    step = helpers.fastoptim_step(optimizer, case, mode.split("-")[0], backend, DTYPE)
    if mode == "list-general":
        step = _general_path(step)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"{backend} {mode}")


@pytest.mark.parametrize("variant", list(floor.FLOOR_VARIANTS))
def test_floor(benchmark, helpers, optimizer, variant):
    step = helpers.floor_step(optimizer, N, DTYPE, variant)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"floor {variant}")


@pytest.mark.parametrize("peer", list(TORCH))
def test_torch(benchmark, helpers, optimizer, peer):
    step = helpers.torch_step(optimizer, MANY, TORCH[peer], DTYPE)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"{peer} x{COUNT} tensors")


def test_deepspeed(benchmark, helpers, optimizer):
    torch = pytest.importorskip("torch")
    pytest.importorskip("deepspeed")
    if optimizer not in ("adam", "adamw"):
        pytest.skip("DeepSpeedCPUAdam is Adam/AdamW only")
    try:
        step = contestants.setup_deepspeed(torch, specs.OPTIMIZERS[optimizer], MANY,
                                     helpers.data(DTYPE))
    except Exception as exc:  # no C++ toolchain for its op, ...
        pytest.skip(f"DeepSpeedCPUAdam refused: {exc}")
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"DeepSpeedCPUAdam x{COUNT} tensors")
