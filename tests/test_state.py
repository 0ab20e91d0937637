"""The state store and its torch-style view (``fastoptim/optimizers/_state.py``)."""
import numpy as np
import pytest

import fastoptim

BACKENDS = [b for b in fastoptim.available_backends() if b != "cuda"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [lambda p, b: fastoptim.Adam(p, lr=0.1, backend=b),
                                  lambda p, b: fastoptim.SGD(p, lr=0.1, momentum=0.9, backend=b)])
def test_steps_are_not_edits_but_user_writes_are(backend, make):
    """The optimizer's own writes go to the store uncounted; the view counts every edit,
    which is what makes the next step check again."""
    params = [np.ones(5, np.float32), np.ones(3, np.float32)]
    grads = [np.full(5, 0.5, np.float32), np.full(3, 0.5, np.float32)]
    opt = make(params, backend)
    opt.step(grads)
    version = opt._layout.version[0]
    for _ in range(3):
        opt.step(grads)
    assert opt._layout.version[0] == version
    key = next(iter(opt.state[0]))
    opt.state[0][key] = np.zeros(5, np.float32)
    assert opt._layout.version[0] == version + 1
    opt.state[params[1]] = dict(opt.state[1])
    assert opt._layout.version[0] == version + 2


def test_the_view_and_the_store_are_one_dict():
    """Compiled code and ``distributed`` read entries with ``dict.get``: the view must be
    the store, and ``opt.state[i]``, ``opt.state[array]`` and the store agree."""
    w = np.ones(3)
    opt = fastoptim.Adam({"w": w}, lr=0.1, backend="numpy")
    opt.step({"w": np.ones(3)})
    entry = dict.get(opt.state, 0)
    assert entry is opt.state[0] is opt.state[w] is opt.state["w"]
    assert isinstance(opt.state, dict) and list(opt.state) == [0]
    assert float(entry["step"]) == 1.0


def test_reading_a_missing_entry_makes_an_empty_one_like_defaultdict():
    w = np.ones(3)
    opt = fastoptim.Adam([w], lr=0.1, backend="numpy")
    assert opt.state[w] == {} and 0 in opt.state
    opt.step([np.ones(3)])  # the empty entry read by the user is filled in place
    assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(TypeError, match="state entries must be dicts"):
        opt.state[0] = [1, 2]
    with pytest.raises(KeyError):
        opt.state[5]
