"""fastoptim.bench.run: every case checked, timed and rendered, on tiny sizes (seconds)."""
import io
import json
import sys

import numpy as np
import pytest

from fastoptim import backends, bench
from fastoptim.bench import floor, rendering, runner, specs
from fastoptim.bench import report as report_module

TINY = dict(sizes=[4096], many=(4, 256), repeat=2, quick=True, latency=False)
FAST = [b for b in backends.available_backends() if b not in (backends.REFERENCE, "cuda")]


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=140, color_system=None)


def _timed_rows_are_sane(report):
    for row in report.results:
        if row.check in ("ok", "reference", "n/a", "peer"):
            assert row.time_s > 0 and row.repeats == 2 and len(row.times_s) == 2, row
            assert row.inner >= 1 and row.gb_per_s > 0
            assert all(t > 0 for t in row.times_s)


def test_run_prints_tables_and_fills_every_result():
    console = _console()
    report = bench.run(optimizers=["sgd", "adam", "adamw"], peers=False, console=console, **TINY)
    out = console.file.getvalue()
    assert "fastoptim bench" in out and "median of 2 repeats" in out
    for title in ("SGD (momentum 0.9), float32, one tensor of 4K elements",
                  "Adam, float32, 4 tensors x 256 via FlatParams",
                  "AdamW, float32, 4 tensors x 256 as a plain list",
                  "Summary"):
        assert title in out
    for name in ["floor", "numpy"] + FAST:
        assert name in out
    _timed_rows_are_sane(report)
    # per optimizer: one single-tensor case; the many case as flat, list and one tensor
    rows = [r for r in report.results if r.optimizer == "adam"]
    assert {(r.case, r.mode) for r in rows if r.kind != "floor"} == \
        {("4K", "single"), ("4x256", "flat"), ("4x256", "list"), ("4x256", "one")}
    assert "the same 1K elements as one tensor" in out
    assert all(r.check == "ok" for r in rows if r.kind == "fastoptim")
    assert {r.bytes_per_element for r in rows} == {28}
    assert {r.bytes_per_element for r in report.results if r.optimizer == "sgd"} == {20}
    for r in rows:
        if r.kind in ("reference", "fastoptim"):
            assert r.speedup_vs_numpy > 0 and r.fraction_of_floor > 0
    assert report.machine["numba_threading_layer"] != "not initialised"


def test_json_document(tmp_path):
    report = bench.run(optimizers=["adamw"], peers=False, console=None, **TINY)
    path = tmp_path / "bench.json"
    report.write_json(path)
    doc = json.loads(path.read_text())
    assert {"schema", "machine", "settings", "results", "latency", "crossover",
            "wall_time_s"} <= set(doc)
    for key in ("cpu", "logical_cpus", "numba_threading_layer", "python", "numpy", "numba",
                "torch", "fastoptim", "threads"):
        assert key in doc["machine"]
    assert doc["settings"]["repeat"] == 2 and doc["settings"]["dtype"] == "float32"
    timed = [r for r in doc["results"] if r["time_s"] is not None]
    # three floors per case (4K, 4x256), each backend in three modes (single, flat, list)
    floors_per_case = len(floor.FLOOR_VARIANTS)
    assert len(timed) == len(doc["results"]) == 2 * floors_per_case + 4 * len(["numpy"] + FAST)
    assert all(r["time_s"] > 0 and r["gb_per_s"] > 0 for r in timed)
    for case in ("4K", "4x256"):
        floors = [r for r in timed if r["case"] == case and r["kind"] == "floor"]
        assert sorted(r["contestant"] for r in floors) == ["floor", "floor-blocked",
                                                           "floor-prefetch"]
        # "of floor" divides by the fastest floor kernel: it is 1 there, <= 1 on the others
        assert max(r["fraction_of_floor"] for r in floors) == 1.0
        assert all(0 < r["fraction_of_floor"] <= 1.0 for r in floors)


@pytest.mark.skipif(not FAST, reason="no fast backend to break")
def test_a_broken_backend_is_reported_and_never_timed(monkeypatch):
    victim = FAST[0]
    module = backends.load(victim)
    original = module.adam

    def broken_adam(param, *args, **kwargs):
        original(param, *args, **kwargs)
        param *= np.float32(1.001)  # a small, systematic error

    monkeypatch.setattr(module, "adam", broken_adam)
    console = _console()
    report = bench.run(optimizers=["adam"], peers=False, console=console, **TINY)
    broken = [r for r in report.results if r.contestant == victim]
    assert len(broken) == 4 and all(r.check == "mismatch" for r in broken)
    assert all(r.time_s is None and r.times_s == [] for r in broken)
    # the numbers behind the message: at least the 1.001 factor's error, far above rtol
    import re

    match = re.fullmatch(r"param\[0\]: max rel err ([0-9.e+-]+) > rtol ([0-9.e+-]+)", broken[0].detail)
    assert match, broken[0].detail
    err, rtol = float(match.group(1)), float(match.group(2))
    assert err >= 5e-4 and err > 100 * rtol and rtol <= 1e-5
    out = console.file.getvalue()
    assert "MISMATCH" in out and "not timed" in out
    # the other contestants are still checked and timed
    others = [r for r in report.results if r.contestant != victim]
    assert all(r.timed for r in others)


@pytest.mark.skipif(not FAST, reason="no fast backend")
def test_a_backend_that_raises_is_reported(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(backends.load(FAST[0]), "sgd", fails)
    report = bench.run(optimizers=["sgd"], sizes=[1024], many=None, repeat=2, peers=False,
                       latency=False, quick=True, console=None)
    row = next(r for r in report.results if r.contestant == FAST[0])
    assert row.check == "error" and "kernel exploded" in row.detail and not row.timed


def test_sequential_schedule_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(runner, "physical_memory", lambda: 1)
    report = bench.run(optimizers=["sgd"], sizes=[2048], many=None, repeat=2, peers=False,
                       latency=False, quick=True, console=None)
    assert {r.schedule for r in report.results} == {"sequential"}
    _timed_rows_are_sane(report)


def test_float64_uses_its_own_tolerance():
    report = bench.run(optimizers=["sgd-plain", "amsgrad"], sizes=[1000], many=None, repeat=2,
                       dtype="float64", peers=False, latency=False, quick=True, console=None)
    assert report.settings["rtol"] == 1e-12
    assert {r.bytes_per_element for r in report.results if r.optimizer == "sgd-plain"} == {24}
    assert {r.bytes_per_element for r in report.results if r.optimizer == "amsgrad"} == {72}
    assert all(r.check in ("ok", "reference", "n/a") for r in report.results)


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizers=["adagrad"]), "unknown optimizer: 'adagrad'"),
    (dict(backends=["tpu"]), "unknown backend: 'tpu'"),
    (dict(backends=["cuda"]), "--device cuda"),
    (dict(sizes=["12Q"]), "bad size"),
    (dict(dtype="float16"), "bad dtype"),
    (dict(threads=0), "--threads 0"),
    (dict(repeat=0), "--repeat 0"),
])
def test_bad_requests_raise_bench_error(kwargs, message):
    with pytest.raises(bench.BenchError, match=message.replace("(", r"\(")):
        bench.run(console=None, **{**TINY, **kwargs})


def test_torch_peers_are_labelled_and_compared():
    pytest.importorskip("torch")
    report = bench.run(optimizers=["adam"], sizes=[4096], many=None, repeat=2, peers=True,
                       latency=False, quick=True, console=None)
    peers = [r for r in report.results if r.kind == "peer"]
    torch_peers = {"torch-forloop", "torch-foreach", "torch-fused"}
    assert torch_peers <= {r.contestant for r in peers} <= torch_peers | {"deepspeed-cpuadam"}
    assert all(r.check in ("peer", "error") for r in peers)
    assert any(r.timed for r in peers)
    fast = [r for r in report.results if r.kind == "fastoptim"]
    assert fast and all(r.speedup_vs_best_torch > 0 for r in fast)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    report = bench.run(optimizers=["sgd", "adam"], sizes=[1024, 4096], many=None, repeat=2,
                       peers=False, latency=False, quick=True, console=None)
    path = tmp_path / "bench.png"
    bench.plot(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "fastoptim\[plot\]"'):
        rendering.require_matplotlib()


def test_print_report_renders_a_finished_report():
    report = bench.run(optimizers=["sgd"], sizes=[1024], many=(2, 128), repeat=2, peers=False,
                       latency=False, quick=True, console=None)
    console = _console()
    bench.print_report(report, console)
    out = console.file.getvalue()
    assert "one tensor of 1K elements" in out and "via FlatParams" in out and "Summary" in out


def test_a_slow_contestant_stops_after_its_time_budget(monkeypatch):
    monkeypatch.setattr(runner, "QUICK_CONTESTANT_BUDGET_S", 0.0)
    report = bench.run(optimizers=["sgd"], sizes=[1024], many=None, repeat=6, peers=False,
                       latency=False, quick=True, console=None)
    assert {r.repeats for r in report.results} == {specs.MIN_REPEATS}
    assert report.settings["min_repeats"] == specs.MIN_REPEATS


def test_many_case_goals_come_from_its_own_interleaved_rows(monkeypatch):
    """The many-tensors goals: list/flat, flat/one (the same elements as one tensor, in
    the same case) and the peers against the list, judged against MANY_GOALS."""
    console = _console()
    report = bench.run(optimizers=["sgd"], sizes=[4096], many=(4, 256), repeat=2,
                       peers=False, latency=False, console=console, in_cache=False, loop=False)
    entries = {e["backend"]: e for e in report.goals["many"]}
    assert set(entries) == set(FAST)
    rows = {(r.contestant, r.mode): r for r in report.results if r.case == "4x256"}
    for b, e in entries.items():
        assert e["list_over_flat"] == rows[b, "list"].time_s / rows[b, "flat"].time_s
        assert e["flat_over_one"] == rows[b, "flat"].time_s / rows[b, "one"].time_s
        assert rows[b, "one"].n_elements == 1024 and rows[b, "one"].check == "ok"
        assert e["goals"]["FlatParams <= 1.5x one tensor"] == (e["flat_over_one"] <= 1.5)
        assert e["goals"]["plain list <= 2x FlatParams"] == (e["list_over_flat"] <= 2.0)
        assert not any("torch" in k for k in e["goals"])  # no peers in this run
    assert "Many tensors: plain list, FlatParams, one tensor" in console.file.getvalue()
    # the modes compared are timed over as many consecutive steps each (a repeat's first,
    # cold step weighs the same in every mode), the reference and the floors over their own
    assert len({r.inner for r in rows.values() if r.kind == "fastoptim"}) == 1
    assert all(r.inner >= 1 for r in rows.values())
    # the thresholds are MANY_GOALS': none can be met at 0
    monkeypatch.setattr(report_module, "MANY_GOALS", dict(
        list_over_flat=0.0, flat_over_one=0.0, peer_over_list=3.0))
    assert not any(v for e in report_module.many_goals(report) for v in e["goals"].values())


def test_same_inner_gives_every_entry_the_most_steps_any_needs():
    entries = [runner._Entry(None, None) for _ in range(3)]
    for e, inner in zip(entries, (3, 7, 5)):
        e.inner = inner
    runner._same_inner(e for e in entries)
    assert [e.inner for e in entries] == [7, 7, 7]
    runner._same_inner([])  # nothing to do


def test_in_cache_pass_bound_and_goals(monkeypatch):
    """The in-cache extras: a float64 pass, a FlatParams case, Adam's compute bound next to
    the floor, and a goals entry per case judged against the thresholds."""
    monkeypatch.setattr(runner, "IN_CACHE_F64_SIZES", (4096,))
    monkeypatch.setattr(runner, "IN_CACHE_FLAT", (4, 256))
    goals = dict(report_module.KERNEL_GOALS, of_floor={("float32", 4096): 0.0, ("float64", 4096): 2.0})
    monkeypatch.setattr(report_module, "KERNEL_GOALS", goals)
    console = _console()
    report = bench.run(optimizers=["adam"], sizes=[4096], many=None, repeat=2, peers=False,
                       latency=False, console=console, in_cache=True, loop=False)
    bound = report.machine["adam_compute_bound_ns_per_element"]
    assert set(bound) == {"float32", "float64"} and all(v > 0 for v in bound.values())
    rows = [r for r in report.results if r.kind == "bound"]
    assert {(r.case, r.dtype) for r in rows} == {("4K", "float32"), ("4K f64", "float64")}
    assert all(r.time_s == pytest.approx(bound[r.dtype] * 1e-9 * 4096) for r in rows)
    entries = {(e["case"], e["mode"]): e for e in report.goals["kernels"]}
    assert set(entries) == {("4K", "single"), ("4x256", "flat"), ("4K f64", "single")}
    for e in entries.values():
        assert set(e["of_floor"]) == set(FAST) and e["floor_s"] > 0
    f32, f64 = entries[("4K", "single")], entries[("4K f64", "single")]
    assert all(f32["goals"][f"{b} >= 0 of floor"] for b in FAST)  # 0.0: always met
    assert not any(f64["goals"][f"{b} >= 2 of floor"] for b in FAST)  # 2.0: never met
    if len(FAST) == 2:
        assert "numba and c within 15%" in f32["goals"]
    out = console.file.getvalue()
    assert "compute bound (Adam math, data in L1)" in out and "Adam, float64" in out
    assert "goals of this run" in out


@pytest.mark.parametrize("interleaved", [True, False])
def test_beyond_the_cache_each_backend_gets_a_floor_on_its_own_arrays(monkeypatch, interleaved):
    """A one-tensor case beyond the last-level cache times the no-math loop over each fast
    backend's own arrays, right beside it, and its floor goal compares the two; cases in
    the cache and the many-tensors case do without."""
    monkeypatch.setattr(runner._threads, "BLOCKED_MAX_BYTES", 8 * 4096)  # 4K Adam: beyond
    if not interleaved:
        monkeypatch.setattr(runner._Runner, "_interleave", lambda self, spec, case: False)
    goals = dict(report_module.KERNEL_GOALS, of_floor={("float32", 4096): 0.0})
    monkeypatch.setattr(report_module, "KERNEL_GOALS", goals)
    console = _console()
    report = bench.run(optimizers=["adam", "sgd"], sizes=[4096, 1024], many=(4, 256), repeat=2,
                       peers=False, latency=False, loop=False, console=console)
    own = [r for r in report.results if r.kind == "own-floor"]
    # Adam moves 16 B per element (4K: 64 KiB, beyond), SGD 12 (48 KiB); 1K of either fits
    assert sorted((r.optimizer, r.case, r.detail) for r in own) == sorted(
        (o, "4K", b) for o in ("adam", "sgd") for b in FAST)
    for r in own:
        assert r.timed and len(r.times_s) == 2 and r.contestant == f"own-floor-{r.detail}"
        assert r.schedule == ("interleaved" if interleaved else "sequential")
    for r in report.results:
        match = [o for o in own if (o.optimizer, o.case, o.detail) == (r.optimizer, r.case,
                                                                        r.contestant)]
        if r.kind == "fastoptim" and match:
            assert r.check == "ok"
            assert r.fraction_of_own_floor == pytest.approx(match[0].time_s / r.time_s)
        else:
            assert r.fraction_of_own_floor is None
    entry = next(e for e in report.goals["kernels"] if (e["optimizer"], e["case"]) ==
                 ("adam", "4K"))
    assert set(entry["of_own_floor"]) == set(FAST)
    assert all(entry["goals"][f"{b} >= 0 of its own floor"] for b in FAST)
    assert not any(k.endswith(" of floor") for k in entry["goals"])
    out = console.file.getvalue()
    assert "own floor" in out and f"floor on {FAST[0]}'s arrays" in out
