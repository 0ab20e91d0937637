"""Replay torch's recorded trajectories (tests/data/optim_golden.npz) on every CPU backend.

The fixtures come from tools/gen_golden.py (torch 2.13, single-tensor path);
these tests do not need torch. Tolerances: golden_cases.TOLERANCE.
"""
import os

import golden_cases as G
import numpy as np
import pytest

import fastoptim

DATA = np.load(os.path.join(os.path.dirname(__file__), "data", "optim_golden.npz"))
CPU_BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


def replay(case, backend, steps=G.STEPS, opt=None, params=None, start=1):
    if params is None:
        params = G.initial_params(case)
    flat = [p for group in params for p in group]
    if opt is None:
        groups = [dict(params=ps, **kw) for ps, kw in zip(params, case["group_kwargs"])]
        opt = getattr(fastoptim, case["optimizer"])(groups, backend=backend, **case["kwargs"])
    for step in range(start, steps + 1):
        if case["lr_after"] is not None and step == G.LR_CHANGE_STEP:
            for group in opt.param_groups:
                group["lr"] = case["lr_after"]
        opt.step(G.grads_at(case, step, flat))
    return opt, params, flat


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", G.cases(), ids=lambda c: c["name"])
def test_matches_torch(case, backend):
    opt, _, flat = replay(case, backend)
    tol = G.TOLERANCE[case["dtype"]]
    for i, p in enumerate(flat):
        assert p.dtype == np.dtype(case["dtype"])
        np.testing.assert_allclose(p, DATA[G.key(case, i)], **tol, err_msg=f"param {i}")
        recorded = {k.split("/")[-1] for k in DATA.files if k.startswith(G.key(case, i) + "/")}
        assert set(opt.state.get(i, {})) == recorded, f"state keys of param {i}"
        for field in recorded:
            want = DATA[G.key(case, i, field)]
            got = opt.state[i][field]
            if field == "step":
                assert float(got) == float(want) == G.STEPS
            else:
                np.testing.assert_allclose(got, want, **tol, err_msg=f"{field} of param {i}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", ["Adam_groups_float32", "SGD_groups_float64", "AdamW_amsgrad_float32",
                                  "SGD_nesterov_wd_float32"])
def test_checkpoint_resume_is_exact(name, backend):
    """Run, state_dict, load into a fresh optimizer, continue == an uninterrupted run, bit for bit."""
    case = next(c for c in G.cases() if c["name"] == name)
    _, _, straight = replay(case, backend)

    opt, params, flat = replay(case, backend, steps=G.LR_CHANGE_STEP + 3)
    saved = opt.state_dict()
    copies = [[p.copy() for p in group] for group in params]
    groups = [dict(params=ps, **kw) for ps, kw in zip(copies, case["group_kwargs"])]
    fresh = getattr(fastoptim, case["optimizer"])(groups, backend=backend, **case["kwargs"])
    fresh.load_state_dict(saved)
    _, _, resumed = replay(case, backend, opt=fresh, params=copies, start=G.LR_CHANGE_STEP + 4)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
