"""A real compile of every CUDA kernel in CI, without a GPU.

The simulator (tests/test_cuda.py) does no type checking, so a float64 slip in
a float32 kernel would pass there and run slowly (or fail) on hardware. Here
each kernel fastoptim launches (``cuda_backend.compile_targets()``: update
kernels, the pointer-table kernels for plain lists, which the simulator cannot
run, the reductions, fills and clip kernels) is compiled to PTX for sm_80 (A100)
and sm_90 (H100/H200) by numba-cuda's NVVM, in a subprocess without the
simulator. Skipped, with the reason, where numba-cuda's compilers are not
installed (``pip install ".[cuda13]"``; .ci/run installs them).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("cuda_compile_check.py")


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         env=env, cwd="/", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        pytest.skip("numba-cuda's NVVM compiler is not installed here "
                    f"(pip install '.[cuda13]'): {report['reason'][:300]}")
    return report["results"]


def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    failed = [f"{r['name']} {r['cc']}: {r['error']}" for r in compiled if r["error"]]
    assert not failed, "\n".join(failed)
    names = {r["name"] for r in compiled}
    for kind in ("sgd", "adam", "sgd_multi", "adam_multi", "stats", "stats_chunks", "finalize"):
        assert {f"{kind}_float32", f"{kind}_float64"} <= names
    assert "fill_int64" in names  # SGD's "first step pending" cells
    assert {"clip_scale_float32", "clip_clamp_float64", "bench_floor5_float32",
            "bench_spin"} <= names
    assert {r["cc"] for r in compiled} == {"sm_80", "sm_90"}


def test_float32_kernels_have_no_float64_instruction(compiled):
    slips = [f"{r['name']} {r['cc']}: {r['lines']}" for r in compiled
             if r["float32"] and r["f64"]]
    assert not slips, "float64 instructions in float32 kernels:\n" + "\n".join(slips)
    # the check can fail: the float64 kernels do contain float64 instructions
    assert all(r["f64"] for r in compiled if not r["float32"] and not r["error"]
               and not r["name"].startswith(("fill", "clip_clamp")))
