"""Flat param groups (``fastoptim/optimizers/_segments.py``): the ``uniform`` invariant.

While a flat group is uniform, ``opt.state`` holds views of one flat array per key and
one shared step counter; once it is not (a partial step, an edit), every parameter has
its own counter and the group steps like a plain list, with the same numbers.
"""
import numpy as np
import pytest

import fastoptim

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


def flat_adam(backend, device=None):
    flat = fastoptim.FlatParams([np.ones(4, np.float32), np.full(3, 2.0, np.float32)],
                                device=device)
    return flat, fastoptim.Adam(flat.params, lr=0.1, backend=backend)


def plain_adam(backend):
    params = [np.ones(4, np.float32), np.full(3, 2.0, np.float32)]
    return params, fastoptim.Adam(params, lr=0.1, backend=backend)


def grads_of(k):
    return [np.full(4, 0.5 + k, np.float32), np.full(3, -0.25 * k, np.float32)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_group_state_is_views_of_one_array_and_one_counter(backend):
    flat, opt = flat_adam(backend)
    flat.grad_buffer[:] = 0.5
    opt.step()
    segment = opt._segments[0]
    assert segment.uniform
    for key, views in segment.views.items():
        for i, view in enumerate(views):
            assert opt.state[i][key] is view and np.shares_memory(view, segment.state[key])
    assert opt.state[0]["step"] is opt.state[1]["step"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_partial_step_unshares_and_counts_each_parameter(backend):
    flat, opt = flat_adam(backend)
    params, ref = plain_adam(backend)
    for k, missing in enumerate([None, 1, None, 0, None]):
        grads = grads_of(k)
        if missing is not None:
            grads[missing] = None
        if k == 0:
            flat.grad_buffer[:] = np.concatenate(grads)
            opt.step()
        else:
            opt.step(grads)
        ref.step(grads)
        for a, b in zip(flat.params, params):
            np.testing.assert_array_equal(a, b)
    assert not opt._segments[0].uniform
    assert opt.state[0]["step"] is not opt.state[1]["step"]
    assert [float(opt.state[i]["step"]) for i in range(2)] == [4.0, 4.0]


def test_unshare_copies_a_cuda_step_counter():
    """On CUDA the shared counter is a DeviceStep: after a partial step each parameter
    must count its own steps (a shared one counted every parameter's step in it)."""
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if not fastoptim.backends.is_available("cuda"):
        pytest.skip("no cuda backend")
    flat, opt = flat_adam("cuda", device="cuda")
    host = [np.ones(4, np.float32), np.full(3, 2.0, np.float32)]
    ref = fastoptim.Adam(host, lr=0.1, backend="numpy")
    flat.grad_buffer.copy_to_device(np.concatenate(grads_of(0)))
    opt.step()
    ref.step(grads_of(0))
    assert opt._segments[0].uniform
    for k, missing in [(1, 1), (2, None)]:
        grads = grads_of(k)
        if missing is not None:
            grads[missing] = None
        opt.step([None if g is None else cuda.to_device(g) for g in grads])
        ref.step(grads)
    assert [float(opt.state[i]["step"]) for i in range(2)] == [3.0, 2.0]
    for a, b in zip(flat.params, host):
        np.testing.assert_allclose(a.copy_to_host(), b, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_edited_entry_makes_the_group_step_per_parameter(backend):
    flat, opt = flat_adam(backend)
    params, ref = plain_adam(backend)
    flat.grad_buffer[:] = np.concatenate(grads_of(0))
    opt.step()
    ref.step(grads_of(0))
    for o in (opt, ref):  # the same edit in both: a fresh exp_avg for parameter 1
        o.state[1]["exp_avg"] = np.full(3, 0.125, np.float32)
    for k in (1, 2):
        opt.step(grads_of(k))
        ref.step(grads_of(k))
    assert not opt._segments[0].uniform
    for a, b in zip(flat.params, params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_state_dict_makes_the_group_uniform_again(backend):
    flat, opt = flat_adam(backend)
    opt.step(grads_of(0))  # a list: per parameter from the start
    assert not opt._segments[0].uniform
    opt.load_state_dict(opt.state_dict())  # same keys and steps everywhere
    assert opt._segments[0].uniform
    assert opt.state[0]["step"] is opt.state[1]["step"]
