"""fastoptim.demo: the MLP's backward pass, training, the verdict sentences, and a --quick run end to end."""
import json
import math
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim import demo
from fastoptim import lr_scheduler as lrs
from fastoptim import schedules
from fastoptim.demo import BORNE_OUT, CONTRADICTED, NOT_BORNE_OUT, NOT_TESTED


# ----------------------------------------------------------------------- model
def numerical_grads(params, X, y, h=1e-6):
    grads = {}
    for name, p in params.items():
        g = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = demo.cross_entropy(demo.forward(params, X)[0], y)[0]
            p[i] = old - h
            down = demo.cross_entropy(demo.forward(params, X)[0], y)[0]
            p[i] = old
            g[i] = (up - down) / (2 * h)
        grads[name] = g
    return grads


@pytest.mark.parametrize("sizes", [(5, 3), (5, 7, 3), (6, 8, 5, 4)])
def test_backward_matches_finite_differences(sizes):
    rng = np.random.default_rng(1)
    params = demo.init_mlp(sizes, seed=2, dtype=np.float64)
    for k in params:  # nonzero biases, so their gradient path is exercised too
        if k.startswith("b"):
            params[k][...] = rng.normal(0, 0.1, params[k].shape)
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, sizes[-1], size=9)
    loss, grads = demo.loss_and_grads(params, X, y)
    expected = numerical_grads(params, X, y)
    assert math.isfinite(loss) and loss > 0
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_cross_entropy_of_uniform_logits_is_log_classes():
    loss, dlogits = demo.cross_entropy(np.zeros((4, 10)), np.array([0, 3, 9, 2]))
    assert loss == pytest.approx(math.log(10))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-12)


def test_grads_are_written_into_flat_params_views():
    flat = fastoptim.FlatParams(demo.init_mlp(seed=0))
    rng = np.random.default_rng(0)
    X = rng.random((16, 64), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    loss, grads = demo.loss_and_grads(flat.params, X, y, flat.grads)
    assert grads is flat.grads
    assert flat.grad_buffer.dtype == np.float32 and np.abs(flat.grad_buffer).sum() > 0
    _, fresh = demo.loss_and_grads(flat.params, X, y)
    for k in fresh:
        np.testing.assert_allclose(flat.grads[k], fresh[k], rtol=1e-6, atol=1e-7)


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


# -------------------------------------------------------- verdicts from numbers
def test_compare_needs_both_noise_and_min_effect():
    assert demo.compare([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], 0.003).sign == 1
    assert demo.compare([0.90, 0.91, 0.92], [0.95, 0.96, 0.97], 0.003).sign == -1
    assert demo.compare([0.90, 0.99, 0.95], [0.94, 0.93, 0.95], 0.003).sign == 0  # noisy
    assert demo.compare([0.951, 0.951], [0.950, 0.950], 0.003).sign == 0  # tiny effect
    single = demo.compare([0.96], [0.95], 0.003)
    assert math.isnan(single.se) and single.threshold == 0.003 and single.sign == 1


def test_verdict_adam_fast_both_ways():
    assert demo.verdict_adam_fast([3, 4], [8, 8]).verdict == BORNE_OUT
    assert demo.verdict_adam_fast([8, 8], [3, 4]).verdict == CONTRADICTED
    v = demo.verdict_adam_fast([6, 6], [7, 7])
    assert v.verdict == NOT_BORNE_OUT and "86%" in v.evidence
    assert demo.verdict_adam_fast([5, 5], [math.inf, math.inf]).verdict == BORNE_OUT
    v = demo.verdict_adam_fast([math.inf], [math.inf])
    assert v.verdict == NOT_BORNE_OUT and "too short" in v.evidence


def test_verdict_adam_little_tuning_both_ways():
    grid = [1e-4, 1e-3, 1e-2, 1e-1]
    wide = {"adam": dict(zip(grid, [0.95, 0.97, 0.97, 0.5])),
            "momentum": dict(zip(grid, [0.6, 0.8, 0.97, 0.3])),
            "sgd": dict(zip(grid, [0.2, 0.5, 0.9, 0.97]))}
    v = demo.verdict_adam_little_tuning(wide)
    assert v.verdict == BORNE_OUT and "Adam 2 of 4 (0.001, 0.01)" in v.evidence
    narrow = dict(wide, adam=dict(zip(grid, [0.5, 0.8, 0.97, 0.5])),
                  momentum=dict(zip(grid, [0.6, 0.965, 0.97, 0.3])))
    assert demo.verdict_adam_little_tuning(narrow).verdict == CONTRADICTED
    default_bad = dict(wide, adam=dict(zip(grid, [0.5, 0.8, 0.97, 0.97])))
    v = demo.verdict_adam_little_tuning(default_bad)
    assert v.verdict == NOT_BORNE_OUT and "is not among its good ones" in v.evidence


def test_verdict_momentum_catches_up_both_ways():
    early_m, early_a = [0.90, 0.91, 0.90], [0.95, 0.95, 0.96]
    assert demo.verdict_momentum_catches_up(early_m, early_a, [0.97, 0.97, 0.975],
                                            [0.97, 0.968, 0.97]).verdict == BORNE_OUT
    v = demo.verdict_momentum_catches_up([0.95, 0.95, 0.96], [0.95, 0.95, 0.96],
                                         [0.90, 0.91, 0.90], [0.97, 0.97, 0.975])
    assert v.verdict == CONTRADICTED
    v = demo.verdict_momentum_catches_up(early_a, early_a, [0.97] * 3, [0.97] * 3)
    assert v.verdict == NOT_BORNE_OUT and "not behind early" in v.evidence


def test_verdict_momentum_generalizes_both_ways():
    assert demo.verdict_momentum_generalizes([0.98, 0.981, 0.979], [0.96, 0.961, 0.959]).verdict == BORNE_OUT
    assert demo.verdict_momentum_generalizes([0.96, 0.961, 0.959], [0.98, 0.981, 0.979]).verdict == CONTRADICTED
    v = demo.verdict_momentum_generalizes([0.97, 0.975, 0.965], [0.97, 0.971, 0.969])
    assert v.verdict == NOT_BORNE_OUT and "within noise" in v.evidence and "+0.00 pp" in v.evidence


def test_relative_decay_and_quartiles():
    assert demo.relative_decay(0.5, 0.5) == pytest.approx(1.0)
    assert demo.relative_decay(0.25, 0.5) == pytest.approx(0.5)
    grad_rms = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8])
    mask = np.ones(9, bool)
    base = np.ones(9)
    decayed = np.array([9.0, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9])
    bottom, top = demo.decay_by_quartile(decayed, base, grad_rms, mask)
    assert bottom == pytest.approx(0.1) and top == pytest.approx(0.9)  # the zero-gradient weight is ignored


def test_verdict_l2_diluted_both_ways():
    diluted = [{"wd": 1e-3, "l2": (0.3, 0.9), "adamw": (0.99, 0.99)},
               {"wd": 1e-2, "l2": (0.1, 0.65), "adamw": (0.9, 0.88)},
               {"wd": 1.0, "l2": (0.001, 0.001), "adamw": (0.6, 0.5)}]  # L2 collapsed: not judged
    v = demo.verdict_l2_diluted(diluted)
    assert v.verdict == BORNE_OUT
    assert "wd=1 " not in v.evidence.split("AdamW")[0]  # the collapsed value is left out
    both = [{"wd": 1e-2, "l2": (0.1, 0.65), "adamw": (0.5, 0.95)}]
    v = demo.verdict_l2_diluted(both)
    assert v.verdict == NOT_BORNE_OUT and "under AdamW as well" in v.evidence
    uniform = [{"wd": 1e-2, "l2": (0.5, 0.55), "adamw": (0.5, 0.5)}]
    assert demo.verdict_l2_diluted(uniform).verdict == NOT_BORNE_OUT
    assert demo.verdict_l2_diluted([{"wd": 1e-4, "l2": (0.99, 1.0), "adamw": (1.0, 1.0)}]).verdict \
        == NOT_BORNE_OUT


def test_verdict_adamw_direct_both_ways():
    assert demo.verdict_adamw_direct(0.3261, 0.3262, 0.005, 1.0, 512).verdict == BORNE_OUT
    assert demo.verdict_adamw_direct(0.40, 0.3262, 0.005, 1.0, 512).verdict == NOT_BORNE_OUT
    assert demo.verdict_adamw_direct(math.nan, 0.3262, math.nan, 1.0, 0).verdict == NOT_TESTED


def test_verdict_decoupled_better_both_ways():
    hi, lo = [0.97, 0.971, 0.969], [0.95, 0.951, 0.949]
    assert demo.verdict_decoupled_better(hi, lo, 0.1, 1e-4).verdict == BORNE_OUT
    assert demo.verdict_decoupled_better(lo, hi, 0.1, 1e-4).verdict == CONTRADICTED
    assert demo.verdict_decoupled_better(hi, hi, 0.1, 1e-4).verdict == NOT_BORNE_OUT


def test_verdict_decay_helps_both_ways():
    names = ["constant", "step", "cosine", "plateau", "cosine_2x"]
    loss = {n: [0.1, 0.1] for n in names}
    good = {n: [0.98, 0.981] for n in names}
    good["constant"] = [0.95, 0.951]
    assert demo.verdict_decay_helps(loss, good).verdict == BORNE_OUT
    bad = {n: [0.95, 0.951] for n in names}
    bad["constant"] = [0.98, 0.981]
    assert demo.verdict_decay_helps(loss, bad).verdict == CONTRADICTED
    same = {n: [0.97, 0.971] for n in names}
    low_loss = dict(loss, step=[0.01, 0.01], cosine=[0.01, 0.01], plateau=[0.01, 0.01])
    v = demo.verdict_decay_helps(low_loss, same)
    assert v.verdict == NOT_BORNE_OUT and "3 of 3 decaying" in v.evidence
    assert "did not carry over" in v.evidence


def test_verdict_step_vs_cosine_is_never_judged():
    for a, b in (([0.9, 0.91], [0.97, 0.971]), ([0.97, 0.971], [0.9, 0.91])):
        v = demo.verdict_step_vs_cosine(a, b)
        assert v.verdict == NOT_TESTED and "neither a CNN nor a transformer" in v.evidence
    assert "cosine ended ahead" in demo.verdict_step_vs_cosine([0.9, 0.91], [0.97, 0.971]).evidence


def test_verdict_plateau_both_ways():
    hi, lo = [0.97, 0.971, 0.969], [0.95, 0.951, 0.949]
    assert demo.verdict_plateau_unpredictable(hi, lo, hi).verdict == BORNE_OUT
    assert demo.verdict_plateau_unpredictable(lo, hi, hi).verdict == CONTRADICTED
    v = demo.verdict_plateau_unpredictable(hi, hi, hi)
    assert v.verdict == NOT_BORNE_OUT and "cost the cosine nothing" in v.evidence


def test_narrow_margins_are_flagged():
    c = demo.compare([0.9740, 0.9750, 0.9745], [0.9700, 0.9710, 0.9705], 0.003)
    assert c.sign == 1 and "narrow margin" in demo._threshold_text(c)
    c = demo.compare([0.99, 0.991], [0.95, 0.951], 0.003)
    assert "narrow" not in demo._threshold_text(c)


# ------------------------------------------------------------------ end to end
def test_quick_run_writes_report_figures_and_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--out", out]) == 0
    report = (out / demo.REPORT_NAME).read_text()
    assert report.startswith("# fastoptim demo")
    assert "`--quick` run" in report and "## Verdicts" in report
    results = json.loads((out / demo.RESULTS_NAME).read_text())
    verdicts = results["verdicts"]
    assert len(verdicts) == 10
    for v in verdicts:
        assert v["verdict"] in (BORNE_OUT, NOT_BORNE_OUT, CONTRADICTED, NOT_TESTED)
        assert f"**{v['claim']}** — *{v['verdict']}.* {v['evidence']}" in report
    assert set(results["optimizers"]) == set(demo.OPTIMIZER_LABELS)
    printed = capsys.readouterr().out
    assert "1/3" in printed and "Verdicts:" in printed
    pytest.importorskip("matplotlib")
    for name in demo.FIGURES.values():
        png = out / demo.FIGURES_DIR / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 150_000
        assert f"]({demo.FIGURES_DIR}/{name})" in report


def test_runs_without_sklearn_and_matplotlib(tmp_path, monkeypatch):
    for mod in ("sklearn", "sklearn.datasets", "matplotlib"):
        monkeypatch.setitem(sys.modules, mod, None)
    assert demo.main(["--quick", "--epochs", "2", "--seeds", "1", "--out", tmp_path, "-q"]) == 0
    report = (tmp_path / demo.REPORT_NAME).read_text()
    assert "generated 8x8 shapes" in report
    assert "matplotlib is not installed" in report
    assert not (tmp_path / demo.FIGURES_DIR).exists()
    assert "single seed, no noise estimate" in report


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        demo.parse_args(["--seeds", "0"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--dataset", "mnist"])
    args = demo.parse_args([])
    assert args.out == demo.DEFAULT_OUT and not args.quick
