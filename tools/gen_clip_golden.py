"""Record torch.nn.utils' gradient norms and clipping as golden fixtures (needs torch).

    python tools/gen_clip_golden.py   # writes tests/data/clip_golden.npz

The grid (norm types, dtype sets, max_norm / clip_value values, the NaN/Inf and
float32 overflow cases) and the seeded gradients come from tests/test_clip.py
itself (make_grads, NORMS, DTYPE_SETS, ...), so generator and tests cannot
drift apart; every gradient set's fingerprint is stored too, and the tests
check that they rebuild exactly the inputs torch saw. Stored per case:

* ``norm/<dtypes>/<p>/<seed>``: get_total_norm of make_grads(seed, dtypes, ...)
* ``nonfinite/<bad>/<p>``: get_total_norm of make_grads(4) with one NaN/Inf
* ``overflow/<i>``: get_total_norm of OVERFLOW_CASES[i] (float32 squares overflow)
* ``clipnorm/<dtypes>/<max_norm>/{norm,g<i>}``: torch's norm of make_grads(7, dtypes)
  and the gradients after clip_grads_with_norm_ with that norm
* ``clipnorm_nonfinite/<bad>/{norm,g<i>}``: clip_grad_norm_ on NONFINITE_CLIP_GRADS
* ``clipvalue/<clip_value>/<dtype>``: clip_grad_value_ of CLIP_VALUE_INPUT
* ``error/...``: torch's error messages and the no-error result of error_if_nonfinite
* ``inputs/...``: sha256 fingerprints of the gradient sets

The fixtures were made with torch 2.13.0 (CPU, one thread).
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.append(os.path.join(HERE, ".."))  # the source tree, if fastoptim is not installed
import test_clip as T  # noqa: E402


def tensors(grads):
    return [torch.from_numpy(np.array(g)) for g in grads]


def params_with(grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    return params


def norm(grads, p):
    return float(torch.nn.utils.get_total_norm(tensors(grads), p))


def main():
    torch.set_num_threads(1)
    out = {}

    for name, dtypes in T.DTYPE_SETS.items():
        for seed in T.NORM_SEEDS:
            grads = T.make_grads(seed, dtypes, specials=seed == 1)
            out[T.input_key("norm", name, seed)] = T.fingerprint(grads)
            for p in T.NORMS:
                out[T.k("norm", name, p, seed)] = norm(grads, p)

    out[T.input_key("nonfinite")] = T.fingerprint(T.make_grads(4))
    for bad in T.BADS:
        grads = T.nonfinite_grads(bad)
        for p in T.NORMS:
            out[T.k("nonfinite", bad, p)] = norm(grads, p)

    for i, grads in enumerate(T.OVERFLOW_CASES):
        out[T.k("overflow", i)] = norm(grads, 2.0)

    for name, dtypes in T.DTYPE_SETS.items():
        grads = T.make_grads(7, dtypes)
        out[T.input_key("clipnorm", name)] = T.fingerprint(grads)
        for max_norm in T.MAX_NORMS:
            params = params_with(grads)
            total = torch.nn.utils.get_total_norm([p.grad for p in params])
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
            out[T.k("clipnorm", name, max_norm, "norm")] = float(total)
            out[T.k("clipnorm", name, max_norm, "dtype")] = str(total.numpy().dtype)
            for i, p in enumerate(params):
                out[T.k("clipnorm", name, max_norm, f"g{i}")] = p.grad.numpy().copy()

    for bad in T.NONFINITE_CLIP_BADS:
        params = params_with(T.nonfinite_clip_grads(bad))
        out[T.k("clipnorm_nonfinite", bad, "norm")] = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        for i, p in enumerate(params):
            out[T.k("clipnorm_nonfinite", bad, f"g{i}")] = p.grad.numpy().copy()

    for clip_value in T.CLIP_VALUES:
        for dtype in (np.float32, np.float64):
            params = params_with([T.clip_value_input(dtype)])
            torch.nn.utils.clip_grad_value_(params, clip_value)
            out[T.k("clipvalue", clip_value, np.dtype(dtype).name)] = params[0].grad.numpy().copy()

    # error_if_nonfinite: torch's messages, and the result where nothing is wrong
    try:
        torch.nn.utils.clip_grad_norm_(params_with(T.ERROR_GRADS), 1.0, error_if_nonfinite=True)
    except RuntimeError as e:
        out["error/clip_grad_norm_"] = str(e)
    try:
        torch.nn.utils.get_total_norm(tensors([np.array([np.nan])]), "inf", error_if_nonfinite=True)
    except RuntimeError as e:
        out["error/total_norm_inf"] = str(e)
    out["error/finite_result"] = float(torch.nn.utils.clip_grad_norm_(
        params_with([np.array([3.0, 4.0])]), 1.0, error_if_nonfinite=True))
    assert "error/clip_grad_norm_" in out and "error/total_norm_inf" in out

    arrays = {key: np.asarray(value) for key, value in out.items()}
    arrays["__meta__"] = np.array(json.dumps({"torch": torch.__version__}))
    path = os.path.join(HERE, "..", "tests", "data", "clip_golden.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(arrays)} arrays to {os.path.relpath(path)} ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
