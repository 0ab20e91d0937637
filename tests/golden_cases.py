"""The grid of optimizer configurations recorded from torch (tools/gen_golden.py).

Shared by the generator (which needs torch) and the tests (which must not):
initial parameters and gradients are made here from seeds, so the fixtures
only store the results.
"""
import numpy as np

STEPS = 50
LR_CHANGE_STEP = 25  # cases with "lr_after" change every group's lr here, as a scheduler would
SMALL = [(), (1,), (7,), (3, 5), (1023,)]
ODD = [(4099,), (2, 3)]

# documented tolerances for the replay against torch after STEPS steps:
# torch's vectorized CPU kernels use fused multiply-add in places, fastoptim
# rounds every operation separately, so results differ by a few ulps per step.
TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def _case(name, optimizer, kwargs, groups=None, group_kwargs=None, lr_after=None):
    return dict(name=name, optimizer=optimizer, kwargs=kwargs,
                groups=groups or [SMALL], group_kwargs=group_kwargs or [{}],
                lr_after=lr_after)


def base_cases():
    sgd = [
        ("plain", {}),
        ("momentum", dict(momentum=0.9)),
        ("dampening", dict(momentum=0.9, dampening=0.3)),
        ("nesterov", dict(momentum=0.9, nesterov=True)),
        ("wd", dict(weight_decay=0.05)),
        ("momentum_wd_maximize", dict(momentum=0.8, weight_decay=0.05, maximize=True)),
        ("nesterov_wd", dict(momentum=0.5, nesterov=True, weight_decay=0.1)),
    ]
    adam = [
        ("default", {}),
        ("l2", dict(weight_decay=0.1)),
        ("amsgrad", dict(amsgrad=True)),
        ("maximize", dict(maximize=True)),
        ("amsgrad_l2_maximize", dict(amsgrad=True, weight_decay=0.05, maximize=True)),
        ("decoupled", dict(weight_decay=0.1, decoupled_weight_decay=True)),
        ("low_beta1_eps", dict(betas=(0.3, 0.9), eps=1e-3)),  # lerp weight >= 0.5 branch
        ("beta1_zero", dict(betas=(0.0, 0.99))),
    ]
    adamw = [
        ("default", {}),
        ("wd", dict(weight_decay=0.1)),
        ("amsgrad", dict(amsgrad=True, weight_decay=0.02)),
        ("maximize", dict(maximize=True, betas=(0.8, 0.95))),
    ]
    cases = []
    for optimizer, table, lr in (("SGD", sgd, 0.05), ("Adam", adam, 0.01), ("AdamW", adamw, 0.01)):
        for name, kwargs in table:
            cases.append(_case(f"{optimizer}_{name}", optimizer, dict(kwargs, lr=lr)))
    # several groups with their own hyperparameters, odd sizes, an lr change mid-run
    cases.append(_case("SGD_groups", "SGD", dict(lr=0.05, momentum=0.9), groups=[SMALL, ODD],
                       group_kwargs=[{}, dict(lr=0.02, weight_decay=0.1, nesterov=True)],
                       lr_after=0.01))
    cases.append(_case("Adam_groups", "Adam", dict(lr=0.01), groups=[SMALL, ODD],
                       group_kwargs=[dict(weight_decay=0.0), dict(lr=0.003, amsgrad=True, weight_decay=0.1)],
                       lr_after=0.002))
    cases.append(_case("AdamW_groups", "AdamW", dict(lr=0.01), groups=[ODD, SMALL],
                       group_kwargs=[dict(weight_decay=0.0), dict(betas=(0.5, 0.9))],
                       lr_after=0.005))
    return cases


def cases():
    out = []
    for dtype in ("float32", "float64"):
        for case in base_cases():
            out.append(dict(case, name=f"{case['name']}_{dtype}", dtype=dtype))
    return out


def initial_params(case):
    rng = np.random.default_rng(abs(hash_name(case["name"])))
    return [[rng.standard_normal(shape).astype(case["dtype"]) for shape in group]
            for group in case["groups"]]


def grads_at(case, step, params):
    """Gradient of step ``step``: a pull towards 0.3 * sign plus seeded noise (stable across runs)."""
    rng = np.random.default_rng(1000 + step)
    out = []
    for p in params:
        noise = rng.standard_normal(p.shape)
        out.append(np.asarray(0.5 * np.asarray(p, dtype=np.float64) + noise).astype(case["dtype"]))
    return out


def hash_name(name):
    h = 0
    for ch in name:
        h = (h * 131 + ord(ch)) % (2**31)
    return h


def key(case, index, field=None):
    return f"{case['name']}/p{index}" + (f"/{field}" if field else "")
