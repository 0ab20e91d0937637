"""examples/: the NumPy MLP's backward pass, that it learns with each optimizer, and the scripts run."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastoptim import demo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlp():
    return load_example("mlp")


@pytest.fixture(scope="module")
def data():
    return demo.load_dataset()


def test_backward_matches_finite_differences(mlp):
    rng = np.random.default_rng(0)
    model = mlp.MLP(sizes=(6, 8, 5, 4), seed=1, dtype=np.float64)
    model.params["b1"][...] = rng.normal(0, 0.1, 8)
    X = rng.normal(size=(7, 6))
    y = rng.integers(0, 4, size=7)
    model.loss_and_backward(X, y)
    h = 1e-6
    for name, p in model.params.items():
        numeric = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = model.loss_and_backward(X, y)
            p[i] = old - h
            down = model.loss_and_backward(X, y)
            p[i] = old
            numeric[i] = (up - down) / (2 * h)
        model.loss_and_backward(X, y)
        np.testing.assert_allclose(model.grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_example_and_demo_compute_the_same_model(mlp):
    """One model: the example trains the demo's MLP, which computes the demo's plain functions."""
    assert mlp.MLP is demo.MLP
    model = mlp.MLP(seed=5)
    params = demo.init_mlp(seed=5)
    rng = np.random.default_rng(1)
    X = rng.random((20, 64), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    loss = model.loss_and_backward(X, y)
    ref_loss, ref_grads = demo.loss_and_grads(params, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for k in ref_grads:
        np.testing.assert_allclose(model.grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_one_kernel_call_per_step(mlp):
    """The optimizer sees one contiguous buffer (FlatParams), not six arrays."""
    model = mlp.MLP()
    opt = mlp.make_optimizer("adamw", model.params, 1e-3, 1e-2)
    assert len(opt._segments) == 1 and opt._segments[0] is not None


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_training_example_learns_with_each_optimizer(mlp, data, name):
    model = mlp.MLP(seed=0)
    start = model.loss_and_backward(data.X_train, data.y_train)
    assert start == pytest.approx(math.log(10), rel=0.3)
    model, history = mlp.train(name, epochs=4, schedule="none", seed=0, data=data)
    end = model.loss_and_backward(data.X_train, data.y_train)
    assert end < 0.15 * start, (name, start, end)
    assert history["val_acc"][-1] > 0.85
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_schedule_drives_the_optimizer_lr(mlp, data):
    _, history = mlp.train("adamw", lr=1e-3, epochs=10, schedule="warmup_cosine", data=data)
    lrs = history["lr"]
    assert lrs[0] == pytest.approx(1e-4)  # warm-up starts at start_factor * lr
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] < 1e-4


def _run(*args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_mlp_script_runs(tmp_path):
    proc = _run(str(EXAMPLES / "mlp.py"), "--epochs", "1", "--optimizer", "momentum")
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1" in proc.stdout and "val acc" in proc.stdout


def test_compare_script_is_the_demo():
    proc = _run(str(EXAMPLES / "compare.py"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "fastoptim demo" in proc.stdout and "--quick" in proc.stdout
