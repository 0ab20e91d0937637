"""fastoptim demo end to end: --quick runs, the worker processes, the runs cache, arguments."""
import json
import sys

import numpy as np
import pytest

from fastoptim import demo
from fastoptim.demo import BORNE_OUT, CONTRADICTED, NOT_BORNE_OUT, NOT_TESTED


# ------------------------------------------------------------------ end to end
def test_quick_run_writes_report_figures_and_json(tmp_path, capsys):
    out = tmp_path / "demo"
    cache = tmp_path / "runs.pkl"
    assert demo.main(["--quick", "--out", out, "--runs-cache", cache]) == 0
    report = (out / demo.REPORT_NAME).read_text()
    assert report.startswith("# fastoptim demo")
    assert "`--quick` run" in report and "## Verdicts at a glance" in report
    assert "--runs-cache" not in report.splitlines()[2]
    results = json.loads((out / demo.RESULTS_NAME).read_text())
    assert set(results["tasks"]) == {"digits", "mnist1d"}
    verdicts = [v for t in results["tasks"].values() for v in t["verdicts"]]
    verdicts += results["heat"]["verdicts"] + results["cnn"]["verdicts"] + results["bn"]["verdicts"]
    assert len(verdicts) == 2 * 11 + 2 + 1 + 2 + 1
    for v in verdicts:
        assert v["verdict"] in (BORNE_OUT, NOT_BORNE_OUT, CONTRADICTED, NOT_TESTED)
        assert f"**{v['claim']}** — *{v['verdict']}.* {v['evidence']}" in report
    for t in results["tasks"].values():
        assert set(t["optimizers"]) == set(demo.OPTIMIZER_LABELS)
    heat = results["heat"]["methods"]
    assert set(heat) == {"adam", "adamw", "momentum", "momentum_w"}
    for m in heat.values():  # every cell of the quick grid, as an error in [0, 1]
        err = np.array(m["err_mean"])
        assert err.shape == (len(demo.QUICK.heat_lrs["adam"]), len(demo.QUICK.heat_decays))
        assert np.all((0 <= err) & (err <= 1))
    assert len(results["heat"]["confirm"]) == 6 and len(results["bn"]["table"]) == 4
    assert {(t["optimizer"], t["schedule"]) for t in results["cnn"]["table"]} == {
        ("momentum", "constant"), ("adam", "constant"), ("momentum", "step"), ("momentum", "cosine")}
    n_runs = results["meta"]["runs"]
    assert n_runs > 100 and f"{n_runs} training runs" in report
    printed = capsys.readouterr()
    assert "phase 1/2" in printed.err and "phase 2/2" in printed.err and "Verdicts:" in printed.out
    pytest.importorskip("matplotlib")
    names = [*demo.FIGURES.values(), *("mnist1d_" + n for n in demo.FIGURES.values()),
             demo.HEATMAP, demo.CNN_FIGURE]
    for name in names:
        png = out / demo.FIGURES_DIR / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 200_000
        assert f"]({demo.FIGURES_DIR}/{name})" in report
    # the runs cache: the same report again, without training
    again = tmp_path / "again"
    assert demo.main(["--quick", "--out", again, "--runs-cache", cache, "--no-plots", "-q"]) == 0
    assert json.loads((again / demo.RESULTS_NAME).read_text())["heat"] == results["heat"]
    assert demo.main(["--quick", "--seeds", "3", "--out", again, "--runs-cache", cache, "-q"]) == 2


def test_runs_without_sklearn_matplotlib_and_mnist1d(tmp_path, monkeypatch, capsys):
    for mod in ("sklearn", "sklearn.datasets", "matplotlib", "mnist1d", "mnist1d.data"):
        monkeypatch.setitem(sys.modules, mod, None)
    assert demo.main(["--quick", "--epochs", "2", "--seeds", "1", "--out", tmp_path]) == 0
    report = (tmp_path / demo.REPORT_NAME).read_text()
    assert "generated 8x8 shapes" in report
    assert "matplotlib is not installed" in report
    assert "mnist1d experiments were skipped" in report and "heatmap" not in report.lower()
    assert not (tmp_path / demo.FIGURES_DIR).exists()
    assert "single seed, no noise estimate" in report
    assert "mnist1d" in capsys.readouterr().out
    results = json.loads((tmp_path / demo.RESULTS_NAME).read_text())
    assert set(results["tasks"]) == {"digits"} and "heat" not in results


def test_worker_processes_give_the_same_runs():
    jobs = [demo.Job(demo.RunSpec(name, lr, epochs=1, seed=s), ("digits", "auto"), keep_params=True)
            for name, lr in (("adam", 1e-3), ("momentum_w", 0.05)) for s in (0, 1)]
    here = demo.run_jobs(jobs, workers=1, quiet=True)
    there = demo.run_jobs(jobs, workers=2, quiet=True)
    for a, b in zip(here, there):
        assert a.spec == b.spec
        np.testing.assert_array_equal(a.params, b.params)
        assert a.val_acc == b.val_acc


def test_progress_bar_without_a_terminal_prints_each_tenth():
    import io
    stream = io.StringIO()
    bar = demo.ProgressBar(20, "phase", stream=stream)
    for _ in range(20):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("phase [" + "#" * 30 + "] 20/20 runs")
    quiet = io.StringIO()
    demo.ProgressBar(5, "x", quiet=True, stream=quiet).update(5)
    assert quiet.getvalue() == ""


def test_bad_arguments_are_rejected():
    for bad in (["--seeds", "0"], ["--dataset", "mnist"], ["--jobs", "0"], ["--epochs", "1"]):
        with pytest.raises(SystemExit):
            demo.parse_args(bad)
    args = demo.parse_args([])
    assert args.out == demo.DEFAULT_OUT and not args.quick and args.jobs is None
