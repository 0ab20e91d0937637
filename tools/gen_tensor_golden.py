"""Record torch's steps for complex parameters and tensor hyperparameters (needs torch).

    python tools/gen_tensor_golden.py   # writes tests/data/tensor_golden.npz

Cases: tests/tensor_hyper_cases.py. The tests replay them without torch.
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import tensor_hyper_cases as C  # noqa: E402


def run_torch(case):
    tensors = [torch.tensor(p, requires_grad=True) for p in C.initial_params(case)]
    kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
              for k, v in C.hyper_arrays(case).items()}
    opt = getattr(torch.optim, case["optimizer"])(tensors, foreach=False, **kwargs)
    for step in range(1, C.STEPS + 1):
        for t, g in zip(tensors, C.grads_at(case, step)):
            t.grad = torch.tensor(g)
        opt.step()
    out = {}
    for i, t in enumerate(tensors):
        out[C.key(case, i)] = t.detach().numpy().copy()
        for field, value in opt.state[t].items():
            out[C.key(case, i, field)] = np.asarray(value.detach().numpy()).copy()
    return out


def main():
    torch.set_num_threads(1)
    arrays = {}
    for case in C.cases():
        arrays.update(run_torch(case))
    arrays["__meta__"] = np.array(json.dumps({"torch": torch.__version__, "steps": C.STEPS}))
    path = os.path.join(HERE, "..", "tests", "data", "tensor_golden.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(arrays) - 1} arrays to {path}")


if __name__ == "__main__":
    main()
