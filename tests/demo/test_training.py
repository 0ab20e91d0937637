"""fastoptim.demo data and training: the data sets, one run, optimizers and schedules."""
import math
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim import demo, schedules
from fastoptim import lr_scheduler as lrs


# ------------------------------------------------------------------------ data
def test_synthetic_data_set_is_a_stratified_float32_split():
    data = demo.load_dataset("synthetic")
    assert data.X_train.dtype == np.float32 and data.X_train.shape[1] == 64
    assert 0.0 <= data.X_train.min() and data.X_train.max() <= 1.0
    assert abs(len(data.y_train) - len(data.y_val)) <= 10
    assert set(np.unique(data.y_train)) == set(range(10)) == set(np.unique(data.y_val))
    again = demo.load_dataset("synthetic")
    np.testing.assert_array_equal(data.X_val, again.X_val)


def test_auto_data_set_falls_back_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert "generated" in demo.load_dataset("auto").name
    with pytest.raises(ImportError, match="scikit-learn"):
        demo.load_dataset("digits")


# -------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data():
    return demo.load_dataset()


@pytest.mark.parametrize("opt,lr", [("sgd", 0.3), ("momentum", 0.05), ("adam", 3e-3), ("adamw", 3e-3)])
def test_training_learns(data, opt, lr):
    result = demo.train(demo.RunSpec(opt, lr, epochs=3), data)
    assert result.steps == 3 * (len(data.y_train) // 32)
    assert result.train_loss[-1] < 0.25 * math.log(10)
    assert result.val_acc[-1] > 0.8
    assert not result.diverged


def test_training_is_deterministic_per_seed(data):
    a = demo.train(demo.RunSpec("adam", 1e-3, epochs=1, seed=3), data, keep_params=True)
    b = demo.train(demo.RunSpec("adam", 1e-3, epochs=1, seed=3), data, keep_params=True)
    c = demo.train(demo.RunSpec("adam", 1e-3, epochs=1, seed=4), data, keep_params=True)
    np.testing.assert_array_equal(a.params, b.params)
    assert a.train_loss == b.train_loss
    assert not np.array_equal(a.params, c.params)


def test_divergence_is_recorded_not_raised(data):
    result = demo.train(demo.RunSpec("sgd", 1e6, epochs=3), data)
    assert result.diverged
    assert result.val_acc == [0.1] * 3 and all(math.isnan(x) for x in result.train_loss)
    assert len(result.train_loss) == len(result.lr) == 3


def test_adamw_shrinks_zero_gradient_weights_by_exactly_one_minus_lr_wd_per_step(data):
    lr, wd = 1e-3, 5.0
    base = demo.train(demo.RunSpec("adam", lr, epochs=1), data, keep_params=True, track_grad_sq=True)
    run = demo.train(demo.RunSpec("adamw", lr, wd, epochs=1), data, keep_params=True)
    dead = demo.zero_input_mask(fastoptim.FlatParams(demo.init_mlp()), data.X_train)
    assert dead.sum() > 0 and np.all(base.grad_sq[dead] == 0)
    np.testing.assert_allclose(run.params[dead], base.params[dead] * (1 - lr * wd) ** run.steps,
                               rtol=1e-4)


@pytest.mark.parametrize("name", demo.SCHEDULES)
def test_every_schedule_builds_and_steps(name):
    opt = fastoptim.SGD([np.zeros(3, np.float32)], lr=0.1, momentum=0.9)
    sched = demo.make_scheduler(name, opt, 20)
    for epoch in range(20):
        lr = opt.param_groups[0]["lr"]
        assert 0 < lr <= 0.1 + 1e-12
        if name == "plateau":
            sched.step(1.0)
        elif sched is not None:
            sched.step()


def test_warmup_cosine_scheduler_matches_the_closed_form_drawn_next_to_it():
    epochs = 40
    opt = fastoptim.SGD([np.zeros(3, np.float32)], lr=0.1)
    sched = demo.make_scheduler("warmup_cosine", opt, epochs)
    got = []
    for _ in range(epochs):
        got.append(opt.param_groups[0]["lr"])
        sched.step()
    closed = schedules.warmup_cosine(list(range(epochs)), 0.1, demo.warmup_epochs(epochs), epochs,
                                     warmup_start_factor=demo.WARMUP_START)
    np.testing.assert_allclose(got, closed, rtol=1e-9, atol=1e-15)
    assert isinstance(sched, lrs.SequentialLR)




def test_mnist1d_is_generated_offline_and_leaves_the_global_random_state(monkeypatch):
    pytest.importorskip("mnist1d")
    import socket

    def no_network(*a, **k):
        raise AssertionError("mnist1d tried to use the network")
    monkeypatch.setattr(socket, "socket", no_network)
    from fastoptim.demo import data as data_module
    monkeypatch.setattr(data_module, "_MNIST1D", {})  # generate it here, not from the cache
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    data = demo.load_mnist1d(300)
    assert np.random.random() == expected_next
    assert data.X_train.shape == (300, 40) and data.X_val.shape == (1000, 40)
    assert data.X_train.dtype == np.float32 and set(np.unique(data.y_val)) == set(range(10))
    np.testing.assert_array_equal(demo.load_mnist1d(300).X_train, data.X_train)
    with pytest.raises(ValueError, match="n_train"):
        demo.load_mnist1d(5)


def test_missing_mnist1d_is_a_clear_error(monkeypatch):
    from fastoptim.demo import data as data_module
    monkeypatch.setattr(data_module, "_MNIST1D", {})
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="fastoptim\\[examples\\]"):
        demo.load_mnist1d()


def test_sgdw_decays_then_steps_like_adamw_does():
    """SGDW: w <- w * (1 - lr * wd), then the SGD+momentum step; with wd=0 it is plain SGD."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=50).astype(np.float32)
    grads = [rng.normal(size=50).astype(np.float32) for _ in range(3)]
    flat = fastoptim.FlatParams({"w": w0.copy()})
    opt = demo.SGDW(flat, lr=0.1, momentum=0.9, weight_decay=0.5)
    ref = w0.astype(np.float64)
    buf = None
    for g in grads:
        flat.grads["w"][...] = g
        opt.step(flat.grads)
        ref = ref * (1 - 0.1 * 0.5)
        buf = g if buf is None else 0.9 * buf + g
        ref = ref - 0.1 * buf
    np.testing.assert_allclose(flat.params["w"], ref, rtol=1e-5, atol=1e-6)
    plain = fastoptim.FlatParams({"w": w0.copy()})
    sgd = demo.SGDW(plain, lr=0.1, momentum=0.9, weight_decay=0.0)
    other = fastoptim.SGD([w0.copy()], lr=0.1, momentum=0.9)
    for g in grads:
        plain.grads["w"][...] = g
        sgd.step(plain.grads)
        other.step([g])
    np.testing.assert_array_equal(plain.params["w"], other.param_groups[0]["params"][0])
    with pytest.raises(ValueError, match="weight_decay"):
        demo.SGDW(plain, lr=0.1, weight_decay=-1)


def test_sgdw_follows_the_schedule():
    flat = fastoptim.FlatParams({"w": np.ones(4, np.float32)})
    opt = demo.make_optimizer("momentum_w", flat.params, 0.1, 0.5, flat=flat)
    sched = demo.make_scheduler("step", opt, 3)  # lr 0.1, then 0.01
    flat.grads["w"][...] = 0.0
    opt.step(flat.grads)
    sched.step()
    opt.step(flat.grads)
    np.testing.assert_allclose(flat.params["w"], (1 - 0.05) * (1 - 0.005), rtol=1e-6)
    with pytest.raises(ValueError, match="flat"):
        demo.make_optimizer("momentum_w", flat.params, 0.1, 0.5)


@pytest.mark.parametrize("model,arch", [("mlp_bn", (64, 32, 10)), ("cnn", (4, 8))])
def test_other_models_train_and_learn(data, model, arch):
    if model == "cnn":
        pytest.importorskip("mnist1d")
        data = demo.load_mnist1d(400)
    spec = demo.RunSpec("momentum", 0.05, epochs=4, model=model, arch=arch)
    result = demo.train(spec, data)
    assert not result.diverged and result.steps == 4 * (len(data.y_train) // 32)
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.val_acc[-1] > 1.5 / data.n_classes and 0 <= result.train_acc <= 1


def test_unknown_model_is_rejected(data):
    with pytest.raises(ValueError, match="unknown model"):
        demo.train(demo.RunSpec("sgd", 0.1, epochs=1, model="resnet"), data)
