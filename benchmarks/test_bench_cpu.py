"""One large or medium tensor: optimizer x backend x size x dtype, the floor and torch.optim.

One pytest-benchmark group per (optimizer, size, dtype): read the ratios inside a group.
"""
import pytest

from fastoptim.bench import contestants, floor, specs

TORCH = {key: impl for key, _, impl in specs.TORCH_PEERS}


def _case(size):
    return contestants.Case(specs.format_size(size), (size,), ("single",))


def _group(optimizer, size, dtype):
    return f"{optimizer} {specs.format_size(size)} {dtype}"


def test_fastoptim(benchmark, helpers, optimizer, backend, size, dtype):
    step = helpers.fastoptim_step(optimizer, _case(size), "single", backend, dtype)
    helpers.run(benchmark, step, group=_group(optimizer, size, dtype), optimizer=optimizer,
                n=size, dtype=dtype, contestant=backend)


@pytest.mark.parametrize("variant", list(floor.FLOOR_VARIANTS))
def test_floor(benchmark, helpers, optimizer, size, dtype, variant):
    """Moves the optimizer's bytes with no math: what the memory bus allows (the faster
    of the two variants is the floor)."""
    step = helpers.floor_step(optimizer, size, dtype, variant)
    helpers.run(benchmark, step, group=_group(optimizer, size, dtype), optimizer=optimizer,
                n=size, dtype=dtype, contestant=f"floor {variant}")


@pytest.mark.parametrize("peer", list(TORCH))
def test_torch(benchmark, helpers, optimizer, peer, size, dtype):
    step = helpers.torch_step(optimizer, _case(size), TORCH[peer], dtype)
    helpers.run(benchmark, step, group=_group(optimizer, size, dtype), optimizer=optimizer,
                n=size, dtype=dtype, contestant=peer)
