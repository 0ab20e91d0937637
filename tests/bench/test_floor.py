"""fastoptim.bench.floor: the no-math kernels move every array, in every variant."""
import numpy as np
import pytest

from fastoptim.bench import floor


@pytest.mark.parametrize("variant", list(floor.FLOOR_VARIANTS))
@pytest.mark.parametrize("arrays", [2, 3, 4, 5])
@pytest.mark.parametrize("n", [7, 40000])  # serial and parallel dispatch
def test_floor_kernels_move_every_array(variant, arrays, n):
    """The floor adds grad to every other array, over every element, both dispatches."""
    rng = np.random.default_rng(n)
    data = [rng.random(n, dtype=np.float32) for _ in range(arrays)]
    before = [a.copy() for a in data]
    floor.floor_kernel(arrays, n, variant)(*data)
    grad = before[1]
    np.testing.assert_array_equal(data[1], grad)
    for got, old in zip(data[:1] + data[2:], before[:1] + before[2:]):
        np.testing.assert_array_equal(got, old + grad)


@pytest.mark.parametrize("arrays", [2, 3, 4, 5])
@pytest.mark.parametrize("n", [7, 300000])  # serial, and the backends' parallel dispatch
def test_own_floor_gives_every_array_its_value_back(arrays, n):
    """The floor on a contestant's arrays leaves its parameters and state as they were, so
    the contestant goes on stepping the same numbers."""
    rng = np.random.default_rng(arrays)
    data = [rng.random(n, dtype=np.float32) - np.float32(0.5) for _ in range(arrays)]
    data[1] *= np.float32(1e-2)
    before = [a.copy() for a in data]
    run = floor.own_floor(data)
    run()
    run()
    for got, old in zip(data, before):
        np.testing.assert_array_equal(got, old)
    with pytest.raises(KeyError):
        floor.own_floor(data[:1])  # one array: no step reads and writes that few
