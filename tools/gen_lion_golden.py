"""Record Lion trajectories from the ``lion-pytorch`` package as golden fixtures (needs it).

    pip install torch==2.13.0 lion-pytorch==0.2.5
    python tools/gen_lion_golden.py   # writes tests/data/lion_golden.npz

For every case of tests/lion_cases.py: build lion_pytorch.Lion with the same groups
and hyperparameters, run the seeded steps and store the final parameters and each
``exp_avg``. fastoptim's weight decay is lion-pytorch's default (decoupled, as
AdamW: ``p *= 1 - lr * weight_decay``); its ``decoupled_weight_decay=True`` variant
(weight decay divided by the initial lr) is not used.
"""
import json
import os
import sys
from importlib.metadata import version

import numpy as np
import torch
from lion_pytorch import Lion

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import golden_cases as G  # noqa: E402
import lion_cases as L  # noqa: E402


def run(case):
    groups = G.initial_params(case)
    tensors = [[torch.tensor(p, requires_grad=True) for p in group] for group in groups]
    param_groups = [dict(params=ts, **kw) for ts, kw in zip(tensors, case["group_kwargs"])]
    opt = Lion(param_groups, **case["kwargs"])
    flat = [t for ts in tensors for t in ts]
    for step in range(1, L.STEPS + 1):
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
        out[G.key(case, i, "exp_avg")] = opt.state[t]["exp_avg"].detach().numpy().copy()
    return out


def main():
    torch.set_num_threads(1)
    arrays = {}
    for case in L.cases():
        arrays.update(run(case))
    arrays["__meta__"] = np.array(json.dumps(
        {"lion-pytorch": version("lion-pytorch"), "torch": torch.__version__, "steps": L.STEPS}))
    path = os.path.join(HERE, "..", "tests", "data", "lion_golden.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(L.cases())} cases, {len(arrays)} arrays to {os.path.relpath(path)}"
          f" ({os.path.getsize(path) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
