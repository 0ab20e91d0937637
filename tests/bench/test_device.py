"""fastoptim.bench.device: ``--device cuda`` hands over to the GPU benchmark."""
import sys
import types

import pytest

from fastoptim import bench


def test_device_cuda_without_the_module(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fastoptim.bench.cuda", None)
    with pytest.raises(RuntimeError, match="CUDA benchmark could not be loaded"):
        bench.run_device("cuda", sizes=["4K"])


def test_device_cuda_passes_only_the_options_it_accepts(monkeypatch):
    seen = {}

    def run_cuda_bench(sizes, dtype, console=None):
        seen.update(sizes=sizes, dtype=dtype, console=console)
        return {"ok": True}

    fake = types.ModuleType("fastoptim.bench.cuda")
    fake.run_cuda_bench = run_cuda_bench
    monkeypatch.setitem(sys.modules, "fastoptim.bench.cuda", fake)
    result, passed = bench.run_device("cuda", sizes=["4K"], dtype="float32", repeat=3)
    assert result == {"ok": True} and set(passed) == {"sizes", "dtype", "console"}
    assert seen["sizes"] == ["4K"]
    with pytest.raises(bench.BenchError, match="unknown device"):
        bench.run_device("tpu")
