"""The grid of Lion configurations recorded from an outside implementation (tools/gen_lion_golden.py).

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") is not in
torch.optim; the fixtures come from the ``lion-pytorch`` package (Phil Wang's
reference implementation, used as a fixture generator only). Initial parameters and
gradients are made from seeds by ``golden_cases``, so the fixtures store only results.
"""
import golden_cases as G

STEPS = G.STEPS
# lion-pytorch runs torch's vectorized CPU kernels, which fuse the multiply-adds of
# ``add(grad, alpha=1 - beta)``; fastoptim rounds each operation separately, so the
# moment differs by a few ulps per step (the sign of the update almost never does).
TOLERANCE = G.TOLERANCE


def base_cases():
    table = [
        ("default", dict(lr=1e-4)),
        ("lr", dict(lr=3e-3)),
        ("wd", dict(lr=1e-3, weight_decay=0.5)),
        ("betas", dict(lr=1e-3, betas=(0.95, 0.98))),
        ("beta1_zero", dict(lr=1e-3, betas=(0.0, 0.99), weight_decay=0.1)),
    ]
    cases = [G._case(f"Lion_{name}", "Lion", kwargs) for name, kwargs in table]
    cases.append(G._case("Lion_groups", "Lion", dict(lr=1e-3), groups=[G.SMALL, G.ODD],
                         group_kwargs=[{}, dict(lr=3e-4, weight_decay=0.2, betas=(0.8, 0.9))],
                         lr_after=5e-4))
    return cases


def cases():
    return [dict(case, name=f"{case['name']}_{dtype}", dtype=dtype)
            for dtype in ("float32", "float64") for case in base_cases()]
