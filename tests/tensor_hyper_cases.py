"""Cases recorded from torch 2.13 by tools/gen_tensor_golden.py (needs torch): complex
parameters (torch updates them as real pairs, view_as_real) and tensor
hyperparameters (a 0-d/1-element tensor lr or betas: torch computes with them in
their dtype). Shared with the tests, which replay them without torch.
"""
import numpy as np

STEPS = 6
SHAPES = [(3, 4), (5,), ()]


def cases():
    out = []
    for dtype in ("complex64", "complex128"):
        out += [
            dict(name=f"SGD_momentum_{dtype}", optimizer="SGD", dtype=dtype,
                 kwargs=dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
            dict(name=f"Adam_{dtype}", optimizer="Adam", dtype=dtype, kwargs=dict(lr=0.01)),
            dict(name=f"Adam_amsgrad_l2_max_{dtype}", optimizer="Adam", dtype=dtype,
                 kwargs=dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)),
            dict(name=f"AdamW_{dtype}", optimizer="AdamW", dtype=dtype,
                 kwargs=dict(lr=0.02, weight_decay=0.1)),
        ]
    for dtype in ("float32", "float64"):
        for lr_shape in ((), (1,)):
            tag = f"{dtype}_lr{len(lr_shape)}d"
            out += [
                dict(name=f"SGD_tensor_lr_{tag}", optimizer="SGD", dtype=dtype,
                     kwargs=dict(lr=0.05, momentum=0.5), tensor=dict(lr=lr_shape)),
                dict(name=f"Adam_tensor_lr_{tag}", optimizer="Adam", dtype=dtype,
                     kwargs=dict(lr=0.0123), tensor=dict(lr=lr_shape)),
                dict(name=f"AdamW_tensor_lr_{tag}", optimizer="AdamW", dtype=dtype,
                     kwargs=dict(lr=0.0123, weight_decay=0.3), tensor=dict(lr=lr_shape)),
            ]
    out.append(dict(name="Adam_tensor_lr_complex64", optimizer="Adam", dtype="complex64",
                    kwargs=dict(lr=0.0123), tensor=dict(lr=())))
    return out


def hyper_arrays(case):
    """The case's kwargs with its tensor hyperparameters as float32 NumPy arrays."""
    kwargs = dict(case["kwargs"])
    for name, shape in case.get("tensor", {}).items():
        kwargs[name] = np.full(shape, kwargs[name], np.float32)
    return kwargs


def _values(rng, shape, dtype):
    real = np.asarray(rng.standard_normal(shape))
    if np.dtype(dtype).kind == "c":
        return np.asarray(real + 1j * rng.standard_normal(shape)).astype(dtype)
    return real.astype(dtype)


def initial_params(case):
    rng = np.random.default_rng(len(case["name"]))
    return [_values(rng, s, case["dtype"]) for s in SHAPES]


def grads_at(case, step):
    rng = np.random.default_rng(1000 * step + len(case["name"]))
    return [_values(rng, s, case["dtype"]) for s in SHAPES]


def key(case, i, field="param"):
    return f"{case['name']}/{i}/{field}"
