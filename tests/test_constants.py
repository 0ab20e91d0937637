"""The constants shared by the Python and C kernels live once, in backends/_constants.py:
the C side is generated from it at build time and the compiled module agrees with it."""
import ast
import importlib.util
import os
import pathlib
import re

import pytest

import fastoptim
from fastoptim.backends import _constants

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
PACKAGE = pathlib.Path(fastoptim.__file__).resolve().parent
SHARED = {k: v for k, v in vars(_constants).items() if k.isupper() and type(v) is int}
C_AVAILABLE = "c" in fastoptim.available_backends()


def _builder():
    spec = importlib.util.spec_from_file_location("_fo_build_kernels", KERNELS / "build_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defines(text):
    return {m[1]: int(m[2].strip("()").rstrip("L"))
            for m in re.finditer(r"^#define FO_(\w+) (\S+)$", text, flags=re.M)}


def test_the_builder_reads_every_constant_without_importing_fastoptim():
    builder = _builder()
    assert builder.read_constants() == SHARED
    assert list(builder.read_constants()) == list(SHARED)  # the file's order, for the header
    assert {"PARALLEL_MIN", "CHUNK_BYTES", "PREFETCH_AHEAD_BYTES", "DECAY_DECOUPLED",
            "NCOL"} <= set(SHARED)


def test_the_generated_header_holds_each_value(tmp_path):
    builder = _builder()
    values = dict(SHARED, SKIPPED=-1, HUGE=2**40)  # a negative and a 64-bit value too
    assert _defines(builder.constants_header(values)) == values
    path = tmp_path / "fo_constants.h"
    assert builder.write_constants_header(path, SHARED)
    assert _defines(path.read_text()) == SHARED
    stamp = os.stat(path).st_mtime_ns
    assert not builder.write_constants_header(path, SHARED)  # unchanged: not rewritten
    assert os.stat(path).st_mtime_ns == stamp
    assert builder.write_constants_header(path, dict(SHARED, PARALLEL_MIN=7))
    assert _defines(path.read_text())["PARALLEL_MIN"] == 7


def test_no_c_source_spells_a_shared_constant_itself():
    """The C sources take every shared value from the generated header, none by hand."""
    for path in KERNELS.iterdir():
        if path.suffix not in (".c", ".h", ".inc") or path.name == "fo_constants.h":
            continue
        text = path.read_text()
        for name in SHARED:
            assert not re.search(rf"#define\s+(FO_)?{name}\s+[-(\d]", text), (path.name, name)
            assert not re.search(rf"\b{name}\s*=\s*[-\d]", text), (path.name, name)


def test_no_python_module_defines_a_shared_constant_again():
    """Module-level assignments of the shared names exist in _constants.py only (a
    module may import them, or rebind one at run time inside a function)."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_constants.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            assert not names & set(SHARED), (path.name, names & set(SHARED))


def test_every_python_user_reads_the_one_definition():
    from fastoptim.backends import _jit, _math, _multi_table, _scalars, _threads

    assert (_jit.LINE_BYTES, _jit.CHUNK_LINES, _jit.PREFETCH_AHEAD_BYTES) == (
        _constants.LINE_BYTES, _constants.CHUNK_LINES, _constants.PREFETCH_AHEAD_BYTES)
    assert (_math.DECAY_L2, _math.DECAY_DECOUPLED) == (_constants.DECAY_L2,
                                                       _constants.DECAY_DECOUPLED)
    assert (_scalars.DECAY_NONE, _scalars.DECAY_L2, _scalars.DECAY_DECOUPLED) == (
        _constants.DECAY_NONE, _constants.DECAY_L2, _constants.DECAY_DECOUPLED)
    assert (_multi_table.NCOL, _multi_table.MAX_KEYS, _multi_table.SKIPPED) == (
        _constants.NCOL, _constants.MAX_KEYS, _constants.SKIPPED)
    assert _threads._last_level_cache_bytes.__defaults__ == (
        _constants.BLOCKED_MAX_BYTES_DEFAULT,)


@pytest.mark.skipif(not C_AVAILABLE, reason="C kernels not compiled")
def test_the_compiled_c_kernels_were_built_with_these_values():
    from fastoptim._ckernels import lib

    assert {name: getattr(lib, "FO_" + name) for name in SHARED} == SHARED


@pytest.mark.skipif(not C_AVAILABLE, reason="C kernels not compiled")
def test_a_c_build_older_than_the_constants_is_named(monkeypatch):
    from fastoptim.backends import c_backend

    assert c_backend.stale_constants() == []
    monkeypatch.setattr(_constants, "PREFETCH_AHEAD_BYTES", 4096)
    monkeypatch.setattr(_constants, "DECAY_L2", 3)
    assert sorted(c_backend.stale_constants()) == ["DECAY_L2", "PREFETCH_AHEAD_BYTES"]


@pytest.mark.skipif(not C_AVAILABLE, reason="C kernels not compiled")
def test_the_compiled_table_filler_has_the_shared_layout():
    from fastoptim import _multi_table_c

    assert (_multi_table_c.NCOL, _multi_table_c.MAX_KEYS) == (_constants.NCOL,
                                                              _constants.MAX_KEYS)
