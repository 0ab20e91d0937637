"""Compile every CUDA kernel of fastoptim to PTX, with no GPU: ``python cuda_compile_check.py``.

Run by tests/test_cuda_compile.py in a subprocess *without* Numba's CUDA
simulator (tests/conftest.py switches the simulator on for the test process).
Needs numba-cuda with its NVVM compiler (``pip install "fastoptim[cuda13]"``).
Prints one JSON object: {"ok": false, "reason": ...} when the compiler is
missing, else {"ok": true, "results": [{name, cc, float32, f64, error}, ...]}.
"""
import json
import os
import sys

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
CCS = ((8, 0), (9, 0))


def bench_targets():
    """The benchmark's floor and busy-wait kernels (fastoptim/bench/cuda.py), as
    ``compile_targets`` lists the library's (the library does not import the benchmark)."""
    from numba import cuda
    from numba import types as T

    from fastoptim.bench import cuda as bench_cuda

    bench_cuda.cuda = cuda
    targets = [(f"bench_floor{reads}_float32", fn, (T.float32[::1],) * reads, True)
               for reads, fn in ((2, bench_cuda._r2w1), (3, bench_cuda._r3w2),
                                 (4, bench_cuda._r4w3), (5, bench_cuda._r5w4))]
    targets.append(("bench_spin", bench_cuda._spin, (T.int64,), True))
    return targets


def main():
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        print(json.dumps({"ok": False, "reason": "numba-cuda is not installed (numba's "
                          "built-in CUDA target needs a driver to compile)"}))
        return 0
    try:
        from numba import cuda, float32

        def probe(a):
            a[0] = a[0] + float32(1)

        cuda.compile_ptx(probe, (float32[::1],), cc=CCS[0])
    except Exception as exc:  # no numba-cuda, no NVVM, ...
        print(json.dumps({"ok": False, "reason": f"{type(exc).__name__}: {exc}"}))
        return 0
    from fastoptim.backends import cuda_backend

    results = []
    for name, fn, sig, is_f32 in cuda_backend.compile_targets() + bench_targets():
        for cc in CCS:
            entry = {"name": name, "cc": f"sm_{cc[0]}{cc[1]}", "float32": is_f32,
                     "f64": None, "error": None}
            try:
                ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
                entry["f64"] = ".f64" in ptx
                entry["lines"] = [line.strip() for line in ptx.splitlines() if ".f64" in line][:5]
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            results.append(entry)
    import numba

    print(json.dumps({"ok": True, "numba": numba.__version__, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
