"""Record torch.optim trajectories as golden fixtures for the tests (needs torch).

    python tools/gen_golden.py        # writes tests/data/optim_golden.npz

For every case of tests/golden_cases.py: build torch's optimizer with the same
groups and hyperparameters, run STEPS steps with the seeded gradients, and
store the final parameters and every state array. The tests replay the cases
on every fastoptim backend without torch.
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import golden_cases as G  # noqa: E402


def run_torch(case):
    groups = G.initial_params(case)
    tensors = [[torch.tensor(p, requires_grad=True) for p in group] for group in groups]
    param_groups = [dict(params=ts, **kw) for ts, kw in zip(tensors, case["group_kwargs"])]
    opt = getattr(torch.optim, case["optimizer"])(param_groups, **case["kwargs"])
    flat = [t for ts in tensors for t in ts]
    for step in range(1, G.STEPS + 1):
        if case["lr_after"] is not None and step == G.LR_CHANGE_STEP:
            for group in opt.param_groups:
                group["lr"] = case["lr_after"]
        grads = G.grads_at(case, step, [t.detach().numpy() for t in flat])
        for t, g in zip(flat, grads):
            t.grad = torch.tensor(g)
        opt.step()
    out = {}
    for i, t in enumerate(flat):
        out[G.key(case, i)] = t.detach().numpy().copy()
        for field, value in opt.state[t].items():
            out[G.key(case, i, field)] = np.asarray(value.detach().numpy()).copy()
    return out


def main():
    torch.set_num_threads(1)
    arrays = {}
    for case in G.cases():
        arrays.update(run_torch(case))
    arrays["__meta__"] = np.array(json.dumps({"torch": torch.__version__, "steps": G.STEPS}))
    path = os.path.join(HERE, "..", "tests", "data", "optim_golden.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(G.cases())} cases, {len(arrays)} arrays to {os.path.relpath(path)}"
          f" ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
