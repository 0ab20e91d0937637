"""fastoptim.bench.specs: sizes parsed and formatted, the bytes each optimizer moves."""
import pytest

from fastoptim import bench
from fastoptim.bench import specs


@pytest.mark.parametrize("text, expected", [
    ("4096", 4096), ("4K", 4096), ("4k", 4096), ("256K", 262144), ("16M", 16 * 2**20),
    ("1.5K", 1536), (" 2M ", 2 * 2**20), (7, 7),
])
def test_parse_size(text, expected):
    assert bench.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12Q", "-4", "0", "K", "1e6"])
def test_parse_size_rejects(text):
    with pytest.raises(bench.BenchError, match="bad size"):
        bench.parse_size(text)


def test_parse_many_and_format_size():
    assert bench.parse_many("1000x1K") == (1000, 1024)
    assert bench.parse_many("none") is None
    with pytest.raises(bench.BenchError):
        bench.parse_many("1000")
    assert [bench.format_size(n) for n in (1000, 1024, 262144, 16 * 2**20)] == \
        ["1000", "1K", "256K", "16M"]


def test_optimizer_specs_count_the_bytes_of_a_step():
    """reads (param, grad, state) + writes (all but grad): SGD+momentum 5 passes, Adam 7."""
    assert {name: (s.arrays, s.writes, s.streams) for name, s in specs.OPTIMIZERS.items()} == {
        "sgd": (3, 2, 5), "adam": (4, 3, 7), "adamw": (4, 3, 7), "sgd-plain": (2, 1, 3),
        "amsgrad": (5, 4, 9)}
