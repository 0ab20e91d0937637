"""fastoptim.param_groups: weight-decay masks as two param groups."""
import numpy as np
import pytest

import fastoptim
from fastoptim.param_groups import (
    decay_groups,
    flat_param_groups_with_decay_mask,
    grads_in_group_order,
    param_groups_with_decay_mask,
)

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


def model(dtype=np.float32):
    rng = np.random.default_rng(0)
    shapes = {"embed.weight": (10, 4), "layer0.weight": (4, 4), "layer0.bias": (4,),
              "norm.weight": (4,), "norm.bias": (4,), "head.weight": (3, 4), "temperature": ()}
    return {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}


def test_default_rule_exempts_vectors_and_scalars():
    params = model()
    groups = param_groups_with_decay_mask(params, 0.1, lr=0.01)
    assert [g["param_names"] for g in groups] == [
        ["embed.weight", "layer0.weight", "head.weight"],
        ["layer0.bias", "norm.weight", "norm.bias", "temperature"]]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(g["lr"] == 0.01 for g in groups)
    assert groups[0]["params"][0] is params["embed.weight"]  # the arrays themselves
    assert decay_groups is param_groups_with_decay_mask


def test_substrings_and_predicates():
    params = model()
    groups = param_groups_with_decay_mask(params, 0.1, no_decay=["bias", "norm"])
    assert groups[1]["param_names"] == ["layer0.bias", "norm.weight", "norm.bias"]
    assert "temperature" in groups[0]["param_names"]
    groups = param_groups_with_decay_mask(params, 0.1, no_decay="embed")
    assert groups[1]["param_names"] == ["embed.weight"]
    groups = param_groups_with_decay_mask(params, 0.1, no_decay=lambda n, a: a.size > 12)
    assert groups[1]["param_names"] == ["embed.weight", "layer0.weight"]
    pairs = list(params.items())  # torch's named_parameters() shape
    assert param_groups_with_decay_mask(pairs, 0.1)[0]["param_names"] == \
        param_groups_with_decay_mask(params, 0.1)[0]["param_names"]


def test_empty_group_is_left_out():
    only_matrices = {"a": np.ones((2, 2)), "b": np.ones((3, 1))}
    groups = param_groups_with_decay_mask(only_matrices, 0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.5
    groups = param_groups_with_decay_mask({"b": np.ones(3)}, 0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_adamw_with_mask_equals_per_parameter_decay(backend):
    """The groups drive AdamW exactly like two hand-built optimizers would."""
    params = model()
    groups = param_groups_with_decay_mask(params, 0.1)
    opt = fastoptim.AdamW(groups, lr=0.01, backend=backend)
    refs = {n: a.copy() for n, a in params.items()}
    decayed = groups[0]["param_names"]
    ref_opts = {n: fastoptim.AdamW([refs[n]], lr=0.01, weight_decay=0.1 if n in decayed else 0.0,
                                   backend="numpy") for n in refs}
    rng = np.random.default_rng(1)
    for _ in range(3):
        grads = {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in params.items()}
        opt.step(grads_in_group_order(opt.param_groups, grads))
        for n, o in ref_opts.items():
            o.step([grads[n]])
    for n in params:
        np.testing.assert_array_equal(params[n], refs[n])
    assert opt.state_dict()["param_groups"][1]["param_names"][0] == "layer0.bias"


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_layout_keeps_one_call_per_group(backend):
    arrays = model()
    fg = flat_param_groups_with_decay_mask(arrays, 0.1, lr=0.01)
    assert list(fg.params) == fg.groups[0]["param_names"] + fg.groups[1]["param_names"]
    opt = fastoptim.AdamW(fg.groups, backend=backend)
    assert all(s is not None for s in opt._segments)  # each group is one flat segment
    refs = {n: a.copy() for n, a in arrays.items()}
    ref = fastoptim.AdamW(param_groups_with_decay_mask(refs, 0.1, lr=0.01), backend="numpy")
    rng = np.random.default_rng(2)
    for _ in range(2):
        grads = {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in arrays.items()}
        for n, g in grads.items():
            fg.grads[n][...] = g
        opt.step(fg.flat.grads)
        ref.step(grads_in_group_order(ref.param_groups, grads))
    for n in arrays:
        np.testing.assert_array_equal(fg.params[n], refs[n])


@pytest.mark.parametrize("backend", BACKENDS)
def test_l2_versus_decoupled_decay_behave_as_the_docstring_says(backend):
    """param_groups_with_decay_mask's docstring: AdamW shrinks every weight by the same
    factor (1 - lr * wd); Adam's L2 term goes through the adaptive denominator, so on a
    first step with no loss gradient it moves every weight by lr, whatever its size."""
    lr, wd = 0.01, 0.1
    theta = np.array([1.0, -10.0, 0.001], np.float32)
    zero = np.zeros(3, np.float32)
    decoupled, l2 = theta.copy(), theta.copy()
    fastoptim.AdamW([decoupled], lr=lr, weight_decay=wd, backend=backend).step([zero])
    fastoptim.Adam([l2], lr=lr, weight_decay=wd, backend=backend).step([zero])
    np.testing.assert_allclose(decoupled / theta, np.full(3, 1 - lr * wd), rtol=1e-6)
    np.testing.assert_allclose(theta - l2, lr * np.sign(theta), rtol=1e-3)


@pytest.mark.parametrize("args, kwargs, error, message", [
    (({"a": np.ones(2)}, -0.1), {}, ValueError, "Invalid weight_decay value"),
    (({"a": np.ones(2)}, "0.1"), {}, TypeError, "weight_decay must be a real number"),
    (({}, 0.1), {}, ValueError, "named_params is empty"),
    ((np.ones(3), 0.1), {}, TypeError, "named_params must be a dict"),
    (([np.ones(3)], 0.1), {}, TypeError, r"named_params\[0\] must be a \(name, array\) pair"),
    (([("a", np.ones(2)), ("a", np.ones(2))], 0.1), {}, ValueError, "'a' appears more than once"),
    (({1: np.ones(2)}, 0.1), {}, TypeError, "parameter names must be str"),
    (({"a": [1.0, 2.0]}, 0.1), {}, TypeError, "parameter 'a' must be an array"),
    (({"a": np.ones(2)}, 0.1), dict(no_decay=3), TypeError, "no_decay must be None"),
    (({"a": np.ones(2)}, 0.1), dict(no_decay=["a", 1]), TypeError, "no_decay must be a predicate"),
    (({"a": np.ones(2)}, 0.1), dict(no_decay=lambda n, a: "yes"), TypeError, "must return a bool"),
    (({"a": np.ones(2)}, 0.1), dict(params=[]), TypeError, "cannot set 'params'"),
])
def test_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        param_groups_with_decay_mask(*args, **kwargs)


def test_grads_in_group_order_errors():
    groups = param_groups_with_decay_mask(model(), 0.1)
    grads = {n: None for g in groups for n in g["param_names"]}
    assert grads_in_group_order(groups, grads) == [None] * 7
    with pytest.raises(KeyError, match="no gradient for"):
        grads_in_group_order(groups, {})
    with pytest.raises(ValueError, match="unknown parameters"):
        grads_in_group_order(groups, dict(grads, extra=None))
    with pytest.raises(ValueError, match="has no 'param_names'"):
        grads_in_group_order([{"params": []}], {})
    with pytest.raises(TypeError, match="must be a dict"):
        grads_in_group_order(groups, [])
