"""The training-loop benchmark (fastoptim.bench.loop): checked contestants, interleaved
timing, ratios to the reference, the goals, and its place in `fastoptim bench`."""
import numpy as np
import pytest

import fastoptim
from fastoptim import bench, cli
from fastoptim.bench import loop as bench_loop

FAST = [b for b in fastoptim.available_backends() if b not in ("numpy", "cuda")]


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setitem(bench_loop.MODELS, "tiny", ((8, 16, 4), 8))
    return ["tiny"]


def test_mlp_gradients_match_finite_differences():
    mlp = bench_loop.MLP((5, 7, 3), 4, np.float64)
    params, grads, forward_backward = mlp.fresh()

    def loss():
        x, onehot = mlp.batches[0]
        h = np.maximum(x @ params[0] + params[1], 0)
        z = h @ params[2] + params[3]
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -(onehot * logp).sum() / x.shape[0]

    forward_backward(0)
    for i, (p, g) in enumerate(zip(params, grads)):
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for j in range(0, flat.size, max(1, flat.size // 5)):
            old = flat[j]
            flat[j] = old + 1e-6
            up = loss()
            flat[j] = old - 1e-6
            down = loss()
            flat[j] = old
            assert abs((up - down) / 2e-6 - gflat[j]) < 1e-6, (i, j)


def test_the_loop_trains_the_demo_mlp():
    """One model: the loop's MLP starts from the demo's He initialization and its gradients
    are the demo's (``loss_and_grads``) for the same weights and batch."""
    from fastoptim.demo import models

    mlp = bench_loop.MLP((5, 7, 3), 4, np.float64, seed=3)
    for a, b in zip(mlp.init, models.init_mlp((5, 7, 3), 3, np.float64).values()):
        np.testing.assert_array_equal(a, b)
    params, grads, forward_backward = mlp.fresh()
    params[1][...] = 0.1  # nonzero biases: their gradient path counts too
    forward_backward(2)
    x, onehot = mlp.batches[2]
    named = dict(zip(["W1", "b1", "W2", "b2"], params))
    _, expected = models.loss_and_grads(named, x, onehot.argmax(axis=1))
    for got, name in zip(grads, named):
        assert np.abs(got).max() > 0
        np.testing.assert_allclose(got, expected[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_inplace_adam_is_close_to_the_reference():
    rng = np.random.default_rng(0)
    p1 = rng.standard_normal(100).astype(np.float32)
    p2 = p1.copy()
    ref = fastoptim.Adam([p1], lr=1e-2, backend="numpy")
    hand = bench_loop.InPlaceAdam([p2], lr=1e-2)
    for _ in range(5):
        g = rng.standard_normal(100).astype(np.float32)
        ref.step([g])
        hand.step([g])
    np.testing.assert_allclose(p2, p1, rtol=1e-5, atol=1e-6)


def test_run_checks_times_and_derives_ratios(tiny_models):
    doc = bench_loop.run(models=tiny_models, dtypes=["float32", "float64"], steps=2, repeat=2,
                         peers=False, dispatch=(64, None), console=None, progress=False)
    rows = doc["results"]
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    keys = [r["contestant"] for r in rows if r["dtype"] == "float32"]
    assert keys[0] == "numpy" and "auto" in keys and bench_loop.INPLACE in keys
    assert set(FAST) <= set(keys) and {"auto@64", "auto@serial"} <= set(keys)
    for r in rows:
        assert r["loop_s"] > 0 and len(r["loop_times_s"]) == 2
        assert 0 < r["optimizer_s"] < r["loop_s"]
        if r["kind"] in ("fastoptim", "dispatch"):
            assert r["check"] == "bit-exact"
        if r["contestant"] == "numpy":
            assert r["loop_vs_numpy"] == 1.0 and r["optimizer_speedup"] == 1.0
    assert [(g["model"], g["dtype"]) for g in doc["goals"]] == [("tiny", "float32"),
                                                                ("tiny", "float64")]
    for g in doc["goals"]:
        assert set(g["met"]) == {"loop <= 0.8x numpy", "optimizer >= 3x numpy",
                                 "loop <= torch fused", "auto fastest (5%)"}
        assert g["met"]["loop <= torch fused"] is None  # no torch: not judged


@pytest.mark.skipif(not FAST, reason="no fast backend to break")
def test_a_contestant_that_differs_is_never_timed(tiny_models, monkeypatch):
    module = fastoptim.backends.load(FAST[0])
    real = module.adam

    def off_by_a_bit(param, *args, **kwargs):
        real(param, *args, **kwargs)
        param.reshape(-1)[0] += 1e-3

    monkeypatch.setattr(module, "adam", off_by_a_bit)
    rows = bench_loop.run_case("tiny", "float32", bench_loop.contestants([FAST[0]], None),
                               steps=1, repeat=1)
    bad = next(r for r in rows if r.contestant == FAST[0])
    assert bad.check == "mismatch" and "param[0]" in bad.detail and not bad.timed
    assert rows[0].timed


def test_default_bench_run_has_the_loop_short_form(tiny_models, monkeypatch):
    monkeypatch.setattr(bench_loop, "DEFAULT_MODELS", tuple(tiny_models))
    monkeypatch.setattr(bench_loop, "SHORT_STEPS", 1)
    monkeypatch.setattr(bench_loop, "SHORT_REPEAT", 1)
    run = bench_loop.run

    def short(**kwargs):
        kwargs["models"] = tiny_models
        return run(**kwargs)

    monkeypatch.setattr(bench_loop, "run", short)
    report = bench.run(optimizers=["adam"], sizes=[4096], many=None, repeat=1, peers=False,
                       latency=False, console=None, loop="short")
    assert report.loop["settings"]["steps"] == 1
    assert report.goals["loop"] == report.loop["goals"]
    assert report.to_dict()["loop"]["results"]


def test_print_report_renders_the_loop_tables(tiny_models):
    """A finished report with a loop prints one loop table per model and dtype, then its
    goals, each row's loop ratio the one in the report."""
    import io

    from rich.console import Console

    loop_doc = bench_loop.run(models=tiny_models, dtypes=["float32", "float64"], steps=1,
                              repeat=1, peers=False, inplace=False, console=None,
                              progress=False)
    report = bench.run(optimizers=["sgd"], sizes=[1024], many=None, repeat=1, peers=False,
                       latency=False, console=None, loop=False)
    report.loop = loop_doc
    console = Console(file=io.StringIO(), width=200, color_system=None)
    bench.print_report(report, console)
    out = console.file.getvalue()
    for dtype in ("float32", "float64"):
        assert f"Training loop, tiny model (8-16-4, 212 parameters, batch 8), {dtype}" in out
    assert "Training-loop goals" in out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│ numba ")]
    ratios = [cells[3] for cells in rows if cells[1] == "bit-exact"]  # the loop tables' rows
    expected = [f"{r['loop_vs_numpy']:.2f}x" for r in loop_doc["results"]
                if r["contestant"] == "numba"]
    assert ratios == expected


def test_cli_loop_writes_json(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_loop, "DEFAULT_STEPS", 1)
    path = tmp_path / "loop.json"
    assert cli.main(["bench", "--loop", "--loop-models", "tiny", "--dtype", "float32",
                     "--repeat", "1", "--no-peers", "--json", str(path)]) == 0
    import json

    doc = json.loads(path.read_text())
    assert doc["schema"] == "fastoptim-bench-loop/1" and doc["results"]
    assert cli.main(["bench", "--loop", "--loop-models", "nosuch", "--no-peers"]) == 2
