"""A model-like set of 1000 tensors x 1024 elements, float32, in one pytest-benchmark group
per optimizer:

- fastoptim through FlatParams (one kernel call per step),
- the same 1M elements as ONE tensor (what the flat mode should match),
- the same 1000 tensors as a plain list (one kernel call per tensor),
- torch.optim for-loop / foreach / fused over the 1000 tensors,
- the floor for 1M elements.
"""
import pytest

from fastoptim import bench

COUNT, SIZE = 1000, 1024
N = COUNT * SIZE
MANY = bench.Case(f"{COUNT}x{bench.format_size(SIZE)}", (SIZE,) * COUNT, ("flat", "list"))
ONE = bench.Case(bench.format_size(N), (N,), ("single",))
TORCH = {key: impl for key, _, impl in bench.TORCH_PEERS}
DTYPE = "float32"


def _group(optimizer):
    return f"{optimizer} {COUNT}x{SIZE} {DTYPE}"


@pytest.mark.parametrize("mode", ["flat", "single", "list"])
def test_fastoptim(benchmark, helpers, optimizer, backend, mode):
    case = ONE if mode == "single" else MANY
    step = helpers.fastoptim_step(optimizer, case, mode, backend, DTYPE)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"{backend} {mode}")


@pytest.mark.parametrize("variant", list(bench.FLOOR_VARIANTS))
def test_floor(benchmark, helpers, optimizer, variant):
    step = helpers.floor_step(optimizer, N, DTYPE, variant)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"floor {variant}")


@pytest.mark.parametrize("peer", list(TORCH))
def test_torch(benchmark, helpers, optimizer, peer):
    step = helpers.torch_step(optimizer, MANY, TORCH[peer], DTYPE)
    helpers.run(benchmark, step, group=_group(optimizer), optimizer=optimizer, n=N, dtype=DTYPE,
                contestant=f"{peer} x{COUNT} tensors")
