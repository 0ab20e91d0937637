"""fastoptim.bench.cuda: the GPU benchmark (under the CUDA simulator without a GPU)."""
import pytest

from fastoptim.bench import specs


@pytest.mark.filterwarnings("ignore:Simulator timings are bogus")
def test_the_gpu_benchmark_reads_the_same_optimizer_table():
    """One table: the GPU benchmark takes every optimizer the CPU run knows, under the same
    names, and counts the same bytes per element for its step."""
    from fastoptim.arrays import device as _cuda

    if not _cuda.is_available():
        pytest.skip(f"no CUDA (not even the simulator): {_cuda.why_unavailable()}")
    from fastoptim.bench import cuda as gpu

    rows = gpu.run_cuda_bench(sizes=[64], repeat=1, many=None, optimizers=list(specs.OPTIMIZERS),
                              peers=False, allow_simulator=True)
    for name, spec in specs.OPTIMIZERS.items():
        step = next(r for r in rows if r["case"] == f"{name} 1x64" and r["impl"] == "fastoptim cuda")
        assert step["bytes_per_element"] == spec.streams * 4, name
    with pytest.raises(ValueError, match="expected one of sgd, adam, adamw, sgd-plain, amsgrad"):
        gpu.run_cuda_bench(optimizers=["adagrad"], allow_simulator=True)
