"""FlatParams and the recognition of parameters that tile one buffer."""
import numpy as np
import pytest

import fastoptim
from fastoptim.arrays import find_segment


def test_flat_params_copy_and_view():
    w, b = np.arange(6.0).reshape(2, 3), np.array([7.0, 8.0])
    flat = fastoptim.FlatParams({"w": w, "b": b}, dtype=np.float32)
    assert flat.buffer.dtype == np.float32 and flat.buffer.size == 8
    np.testing.assert_array_equal(flat.params["w"], w)
    flat.params["b"][0] = 100
    assert flat.buffer[6] == 100 and b[0] == 7.0  # views of the buffer, copies of the input
    flat.grads["w"][...] = 1
    assert flat.grad_buffer[:6].sum() == 6
    flat.zero_grad()
    assert not flat.grad_buffer.any()
    with pytest.raises(ValueError, match="empty"):
        fastoptim.FlatParams([])
    with pytest.raises(TypeError, match="float32 or float64"):
        fastoptim.FlatParams([np.zeros(2, np.int32)])


def test_find_segment():
    buf = np.zeros(10, np.float32)
    views = [buf[0:6].reshape(2, 3), buf[6:10]]
    root, start, flat = find_segment(views)
    assert root is buf and start == 0 and flat.size == 10
    flat[...] = 1
    assert buf.sum() == 10
    assert find_segment([buf[0:4], buf[5:10]]) is None  # gap
    assert find_segment([buf[4:8], buf[0:4]]) is None  # out of order
    assert find_segment([np.zeros(2), np.zeros(2)]) is None
    assert find_segment([buf[::2]]) is None


def test_manual_views_are_stepped_in_one_call():
    buf = np.ones(10, np.float64)
    views = [buf[0:6].reshape(2, 3), buf[6:10]]
    opt = fastoptim.SGD(views, lr=0.5, momentum=0.9)
    gbuf = np.full(10, 2.0)
    opt.step([gbuf[0:6].reshape(2, 3), gbuf[6:10]])
    np.testing.assert_array_equal(buf, np.zeros(10))
    assert opt.state[1]["momentum_buffer"].base is not None  # a view into one flat buffer


def test_partial_step_in_a_flat_group_unshares_counters():
    flat = fastoptim.FlatParams([np.ones(3), np.ones(2)])
    ref = [np.ones(3), np.ones(2)]
    opt = fastoptim.Adam(flat.params, lr=0.1)
    opt_ref = fastoptim.Adam(ref, lr=0.1, backend="numpy")
    flat.grads[0][...] = 1
    flat.grads[1][...] = 2
    for grads in (flat.grads, [np.ones(3), None], flat.grads):
        opt.step(grads)
        opt_ref.step([np.ones(3), np.full(2, 2.0)] if grads is flat.grads else [np.ones(3), None])
    assert float(opt.state[0]["step"]) == 3 and float(opt.state[1]["step"]) == 2
    np.testing.assert_array_equal(flat.params[0], ref[0])
    np.testing.assert_array_equal(flat.params[1], ref[1])


def test_flat_grads_from_another_buffer_fall_back_to_checks():
    a = fastoptim.FlatParams([np.ones(3)])
    b = fastoptim.FlatParams([np.ones(3), np.ones(2)])
    opt = fastoptim.SGD(b.params, lr=1.0)
    with pytest.raises(ValueError, match="expected 2 gradients"):
        opt.step(a.grads)


def test_gradient_views_tiling_another_parameter_buffer_are_rejected():
    a = fastoptim.FlatParams([np.ones(3), np.ones(2)])
    b = fastoptim.FlatParams([np.ones(3), np.ones(2)])
    opt = fastoptim.SGD(a.params + b.params, lr=0.1)  # two flat layouts in one group
    opt2 = fastoptim.SGD([{"params": a.params}, {"params": b.params}], lr=0.1)
    with pytest.raises(ValueError, match="shares memory with params"):
        opt2.step(list(b.params) + [np.ones(3), np.ones(2)])  # group 0's grads tile b's buffer
    assert (a.buffer == 1).all() and (b.buffer == 1).all()
    opt.step([np.ones(3), np.ones(2), np.ones(3), np.ones(2)])
    assert np.allclose(a.buffer, 0.9) and np.allclose(b.buffer, 0.9)
