"""The ``fastoptim`` command: bench and demo subcommands, exit codes, messages."""
import json
import os
import subprocess
import sys
import types

import pytest

import fastoptim
from fastoptim import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastoptim.__file__)))
TINY = ["bench", "--quick", "--sizes", "4K", "--many", "4x256", "--repeat", "2", "--no-peers",
        "--no-latency"]


def _python(*args, timeout=120):
    """Run ``python -m fastoptim ...`` on the same fastoptim these tests import."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("COLUMNS", None)
    # cwd: `python -m` puts the working directory first on sys.path, and from a checkout
    # that would import the uncompiled source tree instead of the installed package
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _tables(text):
    """Every table rich printed in ``text``: (header cells, [row cells, ...]) in order."""
    tables = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("┃"):
            tables.append(([c.strip() for c in line.strip("┃").split("┃")], []))
        elif line.startswith("│") and tables:
            tables[-1][1].append([c.strip() for c in line.strip("│").split("│")])
    return tables


CASE_COLUMNS = ["contestant", "check", "time/step", "GB/s", "of floor", "vs NumPy", "vs torch"]


def _expected_case_rows(results, case, mode):
    """The cells bench prints for one case from the JSON report's numbers."""
    from fastoptim.bench import rendering, specs

    rows = [r for r in results if r["case"] == case and r["mode"] in ("floor", mode)]
    numpy_time = next(r["time_s"] for r in rows if r["kind"] == "reference")
    return [[r["label"], r["check"], specs.format_time(r["time_s"]), f"{r['gb_per_s']:.1f}",
             f"{100 * r['fraction_of_floor']:.0f}%", rendering.ratio(numpy_time / r["time_s"]), "-"]
            for r in rows]


def test_python_m_fastoptim_bench_prints_tables_and_writes_json(tmp_path):
    """The tables on stdout show the numbers of the JSON report: one table per case and
    mode, one row per contestant, and a summary naming each case's fastest backend."""
    from fastoptim import backends
    from fastoptim.bench import specs

    path = tmp_path / "out.json"
    proc = _python("-m", "fastoptim", *TINY, "--optimizers", "adam", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"wrote {path}"
    doc = json.loads(path.read_text())
    assert {"machine", "settings", "results"} <= set(doc)
    assert doc["settings"]["optimizers"] == ["adam"] and doc["settings"]["sizes"] == [4096]
    assert doc["settings"]["many"] == [4, 256]
    results = doc["results"]
    assert results and all(r["time_s"] > 0 for r in results)
    assert {r["optimizer"] for r in results} == {"adam"}
    fast = [b for b in ("numba", "c") if backends.is_available(b)]
    contestants = {"floor", "floor-prefetch", "floor-blocked", "numpy", *fast}
    cases = {("4K", "single"): (4096, 1), ("4x256", "flat"): (1024, 4),
             ("4x256", "list"): (1024, 4), ("4x256", "one"): (1024, 4)}
    for (case, mode), (elements, tensors) in cases.items():
        rows = [r for r in results if r["case"] == case and r["mode"] in ("floor", mode)]
        assert {r["contestant"] for r in rows} == contestants, (case, mode)
        assert {(r["n_elements"], r["n_tensors"]) for r in rows} == {(elements, tensors)}
    tables = _tables(proc.stdout)
    case_tables = [rows for header, rows in tables if header == CASE_COLUMNS]
    expected = [_expected_case_rows(results, case, mode) for case, mode in cases]
    assert case_tables == expected
    summary = next(rows for header, rows in tables if header[:3] == ["optimizer", "case",
                                                                     "best backend"])
    best = []
    for case, mode in cases:
        rows = [r for r in results if r["case"] == case and r["mode"] == mode
                and r["kind"] == "fastoptim"]
        winner = min(rows, key=lambda r: r["time_s"]) if rows else None
        best.append([winner["contestant"], specs.format_time(winner["time_s"])]
                    if winner else ["-", "-"])
    assert [row[2:4] for row in summary] == best


def test_version():
    proc = _python("-m", "fastoptim", "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastoptim {fastoptim.__version__}"


def test_the_cli_module_imports_nothing_heavy():
    proc = _python("-c", "import sys, fastoptim.cli; "
                   "print(sorted(m for m in ('rich', 'torch', 'matplotlib', 'numba') "
                   "if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_in_process_bench_with_json_on_stdout(capsys):
    assert cli.main([*TINY, "--optimizers", "sgd", "--backends", "numpy", "--json", "-"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is the JSON document only; tables go to stderr
    assert {r["contestant"] for r in doc["results"]} == {"floor", "floor-prefetch", "floor-blocked",
                                                         "numpy"}
    assert {r["optimizer"] for r in doc["results"]} == {"sgd"}
    case_tables = [rows for header, rows in _tables(captured.err) if header == CASE_COLUMNS]
    assert case_tables == [_expected_case_rows(doc["results"], case, mode)
                           for case, mode in (("4K", "single"), ("4x256", "flat"),
                                              ("4x256", "list"), ("4x256", "one"))]


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "adam,adagrad"], "unknown optimizer: 'adagrad'"),
    (["--backends", "numba,tpu"], "unknown backend: 'tpu'"),
    (["--sizes", "12Q"], "bad size '12Q'"),
    (["--many", "1000"], "bad --many"),
    (["--threads", "0"], "--threads 0"),
    (["--repeat", "0"], "--repeat 0"),
])
def test_bad_requests_exit_2_with_a_clear_message(capsys, argv, message):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert "usage: fastoptim bench" in err and message in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--dtype", "float16"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert cli.main([*TINY, "--optimizers", "adam", "--many", "none", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in capsys.readouterr().out


def test_plot_without_matplotlib_fails_before_running(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main([*TINY, "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "fastoptim[plot]"' in err
    assert not (tmp_path / "x.png").exists()


def test_device_cuda_without_a_gpu_benchmark(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "fastoptim.bench.cuda", None)
    assert cli.main(["bench", "--device", "cuda"]) == 1
    assert "CUDA benchmark could not be loaded" in capsys.readouterr().err


def test_device_cuda_calls_run_cuda_bench(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("fastoptim.bench.cuda")
    fake.run_cuda_bench = lambda sizes=None, optimizers=None, quick=False, console=None: \
        calls.append((sizes, optimizers, quick)) or [{"impl": "fake", "ms": 1.0}]
    monkeypatch.setitem(sys.modules, "fastoptim.bench.cuda", fake)
    path = tmp_path / "cuda.json"
    assert cli.main(["bench", "--device", "cuda", "--quick", "--sizes", "1M",
                     "--optimizers", "adam", "--json", str(path)]) == 0
    assert calls == [(["1M"], ["adam"], True)]
    assert json.loads(path.read_text())["cuda"] == [{"impl": "fake", "ms": 1.0}]


def test_demo_passes_the_rest_of_the_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("fastoptim.demo")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastoptim.demo", fake)
    monkeypatch.setattr(fastoptim, "demo", fake, raising=False)
    assert cli.main(["demo", "--quick", "--out", "x"]) == 0
    assert seen == [["--quick", "--out", "x"]]


def test_demo_missing_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastoptim.demo", None)
    assert cli.main(["demo"]) == 1
    assert "demo is not available" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", ","], "--optimizers is empty"),
    (["--backends", " , "], "--backends is empty"),
    (["--sizes", "3.3"], "bad size '3.3': not a whole number of elements"),
    (["--sizes", "1.5K,0.3"], "bad size '0.3'"),
    (["--many", "10x2.5"], "bad size '2.5'"),
    (["--json", "/nonexistent-dir-for-fastoptim/out.json"], "does not exist"),
    (["--plot", "/nonexistent-dir-for-fastoptim/out.png"], "does not exist"),
])
def test_usage_errors_are_found_before_anything_runs(argv, message, capsys, monkeypatch):
    from fastoptim.bench import runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("bench.run was called")

    monkeypatch.setattr(runner, "run", must_not_run)
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_json_to_a_directory_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["bench", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_fractional_sizes_that_are_whole_counts_are_accepted():
    from fastoptim import bench

    assert bench.parse_size("1.5K") == 1536 and bench.parse_size("0.5M") == 2**19
    with pytest.raises(bench.BenchError, match="not a whole number"):
        bench.parse_size("1.0001K")


def test_missing_rich_is_a_clear_error():
    code = ("import sys; sys.modules['rich'] = None; sys.modules['rich.console'] = None; "
            "from fastoptim import cli; sys.exit(cli.main(['bench', '--quick']))")
    proc = _python("-c", code)
    assert proc.returncode == 2
    assert "the tables need the 'rich' package" in proc.stderr and "Traceback" not in proc.stderr
