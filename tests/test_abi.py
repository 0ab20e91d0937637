"""The kernel ABI has one definition, backends/_scalars.py: every kernel takes its arrays,
then the fields of SGDScalars / AdamScalars in order, then the flags SGD_FLAGS / ADAM_FLAGS
(less any flag the kernel variant fixes). These tests pin every signature to it, in each
language (the Numba functions, the C headers, definitions and the compiled module, the
CUDA kernels), and every call of a per-element update; swapping any two arguments fails."""
import ast
import importlib.util
import inspect
import pathlib
import re
import typing

import numpy as np
import pytest

import fastoptim
from fastoptim.backends import _math, _multi_numba, numba_backend
from fastoptim.backends._scalars import (
    ADAM_FLAGS,
    LION_FLAGS,
    SGD_FLAGS,
    AdamScalars,
    LionScalars,
    SGDScalars,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
BACKENDS = pathlib.Path(_math.__file__).resolve().parent


def abi(scalars, flags, fixed=()):
    """The parameter names after a kernel's arrays: scalars, then flags (``fixed`` left out)."""
    assert set(fixed) <= set(flags)
    return list(scalars._fields) + [f for f in flags if f not in fixed]


SGD = abi(SGDScalars, SGD_FLAGS)
ADAM = abi(AdamScalars, ADAM_FLAGS)
LION = abi(LionScalars, LION_FLAGS)
ABI_NAMES = set(SGD) | set(ADAM) | set(LION)


def c_types(scalars, flags, real, fixed=()):
    """The C types of ``abi(...)``: a floating field is ``real``, a bool or int one and every
    flag is ``int``."""
    hints = typing.get_type_hints(scalars)
    return [real if hints[f] is np.floating else "int" for f in scalars._fields] + [
        "int" for f in flags if f not in fixed]


# --------------------------------------------------------------------- Numba (inspect)
NUMBA = {
    "_math.sgd_update": (_math.sgd_update, ["p", "g", "buf"] + SGD),
    "_math.adam_update": (_math.adam_update, ["p", "g", "m", "v", "vmax"] + ADAM),
    "_math.lion_update": (_math.lion_update, ["p", "g", "m"] + LION),
    "numba_backend._lion": (numba_backend._lion, ["lo", "hi", "param", "grad", "exp_avg"] + LION),
    "numba_backend._sgd": (numba_backend._sgd, ["lo", "hi", "param", "grad"]
                           + abi(SGDScalars, SGD_FLAGS, fixed=["first_step"])),
    "numba_backend._sgd_momentum": (numba_backend._sgd_momentum,
                                    ["lo", "hi", "param", "grad", "buf"] + SGD),
    "numba_backend._adam": (numba_backend._adam,
                            ["lo", "hi", "param", "grad", "exp_avg", "exp_avg_sq"]
                            + abi(AdamScalars, ADAM_FLAGS, fixed=["amsgrad"])),
    "numba_backend._amsgrad": (numba_backend._amsgrad,
                               ["lo", "hi", "param", "grad", "exp_avg", "exp_avg_sq",
                                "max_exp_avg_sq"] + abi(AdamScalars, ADAM_FLAGS, fixed=["amsgrad"])),
    "_multi_numba._sgd_rows": (_multi_numba._sgd_rows.py_func, ["rows", "lo", "hi"] + SGD),
    "_multi_numba._adam_rows": (_multi_numba._adam_rows.py_func, ["rows", "lo", "hi"] + ADAM),
}


@pytest.mark.parametrize("name", NUMBA)
def test_numba_signatures_follow_the_scalars(name):
    func, expected = NUMBA[name]
    assert list(inspect.signature(func).parameters) == expected


def test_the_numba_kernels_compiled_are_those_functions():
    """What runs is what is pinned: each kernel pair compiles the range kernel above."""
    for pair, kernel in ((numba_backend._SGD, numba_backend._sgd),
                         (numba_backend._SGD_MOMENTUM, numba_backend._sgd_momentum),
                         (numba_backend._ADAM, numba_backend._adam),
                         (numba_backend._AMSGRAD, numba_backend._amsgrad),
                         (numba_backend._LION, numba_backend._lion)):
        assert pair.serial.py_func.__code__ is kernel.__code__
    assert numba_backend._adam_update.py_func.__code__ is _math.adam_update.__code__
    assert numba_backend._sgd_update.py_func.__code__ is _math.sgd_update.__code__
    assert numba_backend._lion_update.py_func.__code__ is _math.lion_update.__code__


# ------------------------------------------------------------------- CUDA (source AST)
def _source(module):
    """A module's source file, found without importing it (CUDA may not load here)."""
    return pathlib.Path(importlib.util.find_spec(module).origin).read_text()


def _ast_functions(text):
    return {node.name: node for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef)}


CUDA = {  # module.function: parameters (the pointer-table kernels are _cuda_multi's)
    "cuda_backend._sgd_kernel": ["param", "grad", "buf", "ctrl", "pending"] + SGD
                                + ["track_first"],
    "cuda_backend._adam_kernel": (["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq",
                                   "ctrl", "cell"] + ADAM + ["attempted", "lr"]),
    "cuda_backend._lion_kernel": ["param", "grad", "exp_avg", "ctrl"] + LION,
    "_cuda_multi._sgd_multi": ["table", "total", "ctrl"] + SGD + ["track_first"],
    "_cuda_multi._adam_multi": ["table", "total", "ctrl"] + ADAM + ["attempted", "lr"],
}


@pytest.mark.parametrize("name", CUDA)
def test_cuda_signatures_follow_the_scalars(name):
    module, function = name.split(".")
    func = _ast_functions(_source(f"fastoptim.backends.{module}"))[function]
    assert [a.arg for a in func.args.args] == CUDA[name]


def test_cuda_compile_signatures_follow_the_scalars():
    """tests/test_cuda_compile.py compiles each kernel for the argument types of
    ``compile_targets``: at each scalar's place its field's type (a float field: the dtype;
    bool: boolean; int: int64), then a boolean per flag."""
    cuda_backend = pytest.importorskip("fastoptim.backends.cuda_backend")  # no numba-cuda
    from numba import types as T

    def numba_types(scalars, flags, dt):
        hints = typing.get_type_hints(scalars)
        kind = {np.floating: dt, bool: T.boolean, int: T.int64}
        return [kind[hints[f]] for f in scalars._fields] + [T.boolean] * len(flags)

    targets = {name: sig for name, _, sig, _ in cuda_backend.compile_targets()}
    for dt in (T.float32, T.float64):
        # the scalars start after (param, grad, buf, ctrl, pending), the five arrays and
        # (ctrl, cell), or a table kernel's (table, total, ctrl)
        for name, scalars, flags, start in (("sgd", SGDScalars, SGD_FLAGS, 5),
                                            ("adam", AdamScalars, ADAM_FLAGS, 7),
                                            ("lion", LionScalars, LION_FLAGS, 4),
                                            ("sgd_multi", SGDScalars, SGD_FLAGS, 3),
                                            ("adam_multi", AdamScalars, ADAM_FLAGS, 3)):
            expected = numba_types(scalars, flags, dt)
            assert list(targets[f"{name}_{dt}"][start:start + len(expected)]) == expected, name


# ------------------------------------------------------------------------ C (text)
def _c_text(name):
    text = (KERNELS / name).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text.replace("\\\n", " ")  # macro bodies on one line


def _c_params(params):
    """[(type, name)] of a C parameter list; ``restrict`` dropped, spaces normalized."""
    out = []
    for param in params.split(","):
        words = param.replace("*", " * ").replace("restrict", " ").split()
        out.append((" ".join(words[:-1]), words[-1]))
    return out


def c_functions(text, pattern):
    """{name: [(type, name)]} of the functions declared or defined in ``text`` whose name
    matches ``pattern`` (a regex with one group, the name)."""
    found = {}
    for m in re.finditer(rf"(?:{pattern})\s*\(([^()]*)\)\s*[;{{]", text):
        found[m.group(1)] = _c_params(m.group(2))
    return found


def _split_args(text, start):
    """The top-level, comma-separated arguments of the call whose '(' is at ``start``."""
    depth, args, current = 0, [], ""
    for k in range(start, len(text)):
        ch = text[k]
        if ch in "([":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                return args + [current.strip()]
        if ch == "," and depth == 1:
            args.append(current.strip())
            current = ""
        else:
            current += ch
    raise AssertionError("unbalanced call")


def c_calls(text, pattern):
    """[(callee, [argument text])] of the calls in ``text`` whose callee matches ``pattern``
    (one group) and whose arguments are not a parameter list (no '{' after the call)."""
    calls = [(m.group(1), _split_args(text, m.end() - 1))
             for m in re.finditer(rf"(?:{pattern})\s*\(", text)]
    return [(callee, args) for callee, args in calls if not _is_parameter_list(args)]


def _is_parameter_list(args):
    return all(re.fullmatch(r"(const\s+)?\w+\s*\**\s*(restrict\s+)?\w+", a) for a in args)


def header_expectations(real, suffix):
    t = real
    return {
        f"fo_sgd_{suffix}": (
            [f"{t} *", f"const {t} *", f"{t} *", "int64_t"] + c_types(SGDScalars, SGD_FLAGS, t),
            ["param", "grad", "momentum_buffer", "n"] + SGD),
        f"fo_adam_{suffix}": (
            [f"{t} *", f"const {t} *", f"{t} *", f"{t} *", f"{t} *", "int64_t"]
            + c_types(AdamScalars, ADAM_FLAGS, t),
            ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "n"] + ADAM),
        f"fo_lion_{suffix}": (
            [f"{t} *", f"const {t} *", f"{t} *", "int64_t"] + c_types(LionScalars, LION_FLAGS, t),
            ["param", "grad", "exp_avg", "n"] + LION),
        f"fo_multi_sgd_{suffix}": (
            ["const int64_t *", "const int64_t *", "int64_t"] + c_types(SGDScalars, SGD_FLAGS, t),
            ["rows", "bounds", "blocks"] + SGD),
        f"fo_multi_adam_{suffix}": (
            ["const int64_t *", "const int64_t *", "int64_t"]
            + c_types(AdamScalars, ADAM_FLAGS, t),
            ["rows", "bounds", "blocks"] + ADAM),
    }


HEADERS = {**header_expectations("float", "f32"), **header_expectations("double", "f64")}


def _header_declarations():
    found = {}
    for name in ("fastoptim.h", "multi_tensor.h"):
        found.update(c_functions(_c_text(name), r"\b(fo_\w+)"))
    return found


@pytest.mark.parametrize("name", HEADERS)
def test_c_header_declarations_follow_the_scalars(name):
    types, names = HEADERS[name]
    declared = _header_declarations()[name]
    assert [n for _, n in declared] == names
    assert [t for t, _ in declared] == types


def test_c_definitions_follow_the_scalars():
    """The definitions in fastoptim_kernels.inc (T for the precision) and the macros of
    multi_tensor.c: the names of the header, and the per-element updates' own lists."""
    inc = c_functions(_c_text("fastoptim_kernels.inc"), r"FN\((\w+)\)")
    generic = header_expectations("T", "T")
    for name in ("fo_sgd", "fo_adam", "fo_lion"):
        types, names = generic[f"{name}_T"]
        assert [n for _, n in inc[name]] == names
        assert [t for t, _ in inc[name]] == types
    assert [n for _, n in inc["sgd_update"]] == ["p", "g", "buf"] + SGD
    assert [t for t, _ in inc["sgd_update"]] == ["T", "T", "T *"] + c_types(SGDScalars, SGD_FLAGS,
                                                                             "T")
    assert [n for _, n in inc["adam_update"]] == (
        ["p", "g", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"] + ADAM)
    assert [t for t, _ in inc["adam_update"]] == (
        ["T", "T", "T *", "T *", "T *"] + c_types(AdamScalars, ADAM_FLAGS, "T"))
    assert [n for _, n in inc["lion_update"]] == ["p", "g", "exp_avg"] + LION
    assert [t for t, _ in inc["lion_update"]] == ["T", "T", "T *"] + c_types(LionScalars,
                                                                              LION_FLAGS, "T")
    multi = c_functions(_c_text("multi_tensor.c"), r"\b(fo_multi_\w+?)_##SUFFIX")
    for name in ("fo_multi_sgd", "fo_multi_adam"):
        types, names = generic[f"{name}_T"]
        assert [n for _, n in multi[name]] == names
        assert [t for t, _ in multi[name]] == types


@pytest.mark.skipif("c" not in fastoptim.available_backends(), reason="C kernels not compiled")
@pytest.mark.parametrize("name", HEADERS)
def test_the_compiled_c_module_has_those_types(name):
    from fastoptim._ckernels import ffi, lib

    types, _ = HEADERS[name]
    assert [a.cname for a in ffi.typeof(getattr(lib, name)).args] == [
        t.replace("const ", "") for t in types]  # cffi drops a pointee's const


# ------------------------------------------------------------------------ call sites
def _check_args(args, expected, where):
    """Each argument at an ABI place is the parameter of that name, a literal (a flag the
    variant fixes) or a local that is no ABI name (CUDA's bias corrections of a true step)."""
    assert len(args) == len(expected), where
    for arg, name in zip(args, expected):
        assert arg == name or re.fullmatch(r"-?\d+|True|False", arg) or arg not in ABI_NAMES, (
            where, arg, name)


def test_c_calls_of_the_updates_pass_the_scalars_in_order():
    calls = c_calls(_c_text("fastoptim_kernels.inc"), r"FN\(((?:sgd|adam|lion)_update)\)")
    assert len(calls) == 6
    for callee, args in calls:
        arrays, expected = {"sgd_update": (3, SGD), "adam_update": (5, ADAM),
                            "lion_update": (3, LION)}[callee]
        _check_args(args[arrays:], expected, callee)
    calls = c_calls(_c_text("multi_tensor.c"), r"\b(fo_(?:sgd|adam))_##SUFFIX")
    assert len(calls) == 2
    for callee, args in calls:
        arrays, expected = (4, SGD) if callee == "fo_sgd" else (6, ADAM)
        _check_args(args[arrays:], expected, callee)


def _python_calls(text, callees):
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                node.func.id in callees):
            yield node.func.id, [ast.unparse(a) for a in node.args]


@pytest.mark.parametrize("module", ["numba_backend", "_multi_numba", "cuda_backend",
                                    "_cuda_multi"])
def test_python_calls_of_the_updates_pass_the_scalars_in_order(module):
    text = _source(f"fastoptim.backends.{module}")
    calls = list(_python_calls(text, ("_sgd_update", "_adam_update", "sgd_update",
                                      "adam_update", "_lion_update")))
    assert len(calls) >= 4, f"{module}: no calls of the per-element updates found"
    for callee, args in calls:
        arrays, expected = ((3, SGD) if callee.endswith("sgd_update") else
                            (3, LION) if callee.endswith("lion_update") else (5, ADAM))
        _check_args(args[arrays:], expected, (module, callee))


def _flag_runs(text):
    """The names of the ``bool(flag)`` arguments right after each ``*s`` (the scalars)."""
    for node in ast.walk(ast.parse(text)):
        items = node.args if isinstance(node, ast.Call) else (
            node.elts if isinstance(node, ast.Tuple) else None)
        if not items:
            continue
        for k, item in enumerate(items):
            if isinstance(item, ast.Starred) and ast.unparse(item.value) == "s":
                names = []
                for flag in items[k + 1:]:
                    if not (isinstance(flag, ast.Call) and ast.unparse(flag.func) == "bool"):
                        break
                    names.append(ast.unparse(flag.args[0]))
                yield names


def _in_order(names, flags):
    return [f for f in flags if f in names] == names and set(names) <= set(flags)


@pytest.mark.parametrize("module", ["numba_backend", "c_backend", "_multi_numba", "_multi_c",
                                    "cuda_backend"])
def test_backends_pass_the_flags_in_order_after_the_scalars(module):
    runs = list(_flag_runs(_source(f"fastoptim.backends.{module}")))
    assert len(runs) >= 2, f"{module}: no 'kernel(..., *s, bool(flag), ...)' calls found"
    for names in runs:
        assert names and (_in_order(names, SGD_FLAGS) or _in_order(names, ADAM_FLAGS)
                          or _in_order(names, LION_FLAGS)), (
            module, names)


def test_numba_backend_passes_each_kernel_its_own_flags():
    """run(KERNEL, arrays, (*s, flags...)): the flags are the range kernel's, in order."""
    kernels = {"_SGD": numba_backend._sgd, "_SGD_MOMENTUM": numba_backend._sgd_momentum,
               "_ADAM": numba_backend._adam, "_AMSGRAD": numba_backend._amsgrad,
               "_LION": numba_backend._lion}
    seen = set()
    for node in ast.walk(ast.parse(_source("fastoptim.backends.numba_backend"))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "run":
            name, arrays, scalars = node.args
            params = list(inspect.signature(kernels[name.id]).parameters)
            scalars_of = (SGDScalars if "SGD" in name.id else
                          LionScalars if "LION" in name.id else AdamScalars)
            n = 2 + len(arrays.elts) + len(scalars_of._fields)
            assert [ast.unparse(f.args[0]) for f in scalars.elts[1:]] == params[n:], name.id
            seen.add(name.id)
    assert seen == set(kernels)


# ------------------------------------------------------- the checks catch one swap
def _swapped(items, a, b):
    items = list(items)
    i, j = items.index(a), items.index(b)
    items[i], items[j] = items[j], items[i]
    return items


def test_a_swapped_c_parameter_is_caught():
    text = _c_text("fastoptim.h")
    swapped = text.replace("float eps,\n                 float neg_step_size",
                           "float neg_step_size,\n                 float eps", 1)
    assert swapped != text
    declared = c_functions(swapped, r"\b(fo_\w+)")["fo_adam_f32"]
    assert [n for _, n in declared] != HEADERS["fo_adam_f32"][1]
    assert [n for _, n in declared] == ["param", "grad", "exp_avg", "exp_avg_sq",
                                        "max_exp_avg_sq", "n"] + _swapped(ADAM, "eps",
                                                                          "neg_step_size")


def test_a_swapped_call_argument_is_caught():
    inc = _c_text("fastoptim_kernels.inc")
    callee, args = c_calls(inc, r"FN\((sgd_update)\)")[0]
    _check_args(args[3:], SGD, callee)
    with pytest.raises(AssertionError):
        _check_args(_swapped(args, "neg_lr", "weight_decay")[3:], SGD, callee)
    with pytest.raises(AssertionError):
        _check_args(_swapped(args, "nesterov", "maximize")[3:], SGD, callee)
    assert not _in_order(["maximize", "nesterov"], SGD_FLAGS)
    assert not _in_order(["maximize", "amsgrad"], ADAM_FLAGS)


# ------------------------------------------------------------------ pool argument packs
def _struct_fields(text, pattern):
    """{struct name: [field names]} of the structs in ``text`` matching ``pattern``."""
    found = {}
    for m in re.finditer(rf"struct\s+(?:{pattern})\s*\{{([^{{}}]*)\}};", text):
        fields = []
        for decl in m.group(2).split(";"):
            for part in decl.split(","):
                words = part.replace("*", " ").split()
                if words:
                    fields.append(words[-1])
        found[m.group(1)] = fields
    return found


def _unpacked(args, prefix):
    """``a->name + lo`` / ``a->name ? a->name + lo : NULL`` -> ``name`` (else unchanged)."""
    out = []
    for arg in args:
        m = re.match(rf"{re.escape(prefix)}(\w+)", arg)
        out.append(m.group(1) if m else arg)
    return out


def test_pool_packs_hold_the_kernel_arguments_in_abi_order():
    """The argument packs of the pooled kernels (fastoptim_kernels.inc, multi_tensor.c):
    their fields, the initializers that fill them and the tasks that unpack them all follow
    the kernel's parameter list, so a swap in any of them fails here."""
    inc = _c_text("fastoptim_kernels.inc")
    generic = header_expectations("T", "T")
    structs = _struct_fields(inc, r"FN\((\w+)_args\)")
    assert set(structs) == {"sgd", "adam", "lion"}
    for name, fields in structs.items():
        names = generic[f"fo_{name}_T"][1]
        assert fields == names, name
        # the task's call of the loop: every argument from its field, n as hi - lo
        task_calls = [a for c, a in c_calls(inc, rf"FN\(({name}_loop)\)") if "a->param + lo" in a]
        assert len(task_calls) == 1, name
        expected = [("hi - lo" if x == "n" else x) for x in names] + ["0"]  # 0: no threads
        assert _unpacked(task_calls[0], "a->") == expected, name
        init = re.search(rf"struct FN\({name}_args\) a = \{{([^}}]*)\}}", inc).group(1)
        assert [x.strip() for x in init.split(",")] == names, name
    multi = _c_text("multi_tensor.c")
    structs = _struct_fields(multi, r"multi_(\w+)_args_##SUFFIX")
    assert set(structs) == {"sgd", "adam"}
    for name, fields in structs.items():
        names = generic[f"fo_multi_{name}_T"][1]
        assert fields == names, name
        init = re.search(rf"struct multi_{name}_args_##SUFFIX a = \{{([^}}]*)\}}", multi).group(1)
        assert [x.strip() for x in init.split(",")] == names, name
        (callee, args), = c_calls(multi, rf"\b(fo_{name})_##SUFFIX")
        scalars = SGD if name == "sgd" else ADAM
        arrays = 4 if name == "sgd" else 6
        assert _unpacked(args[arrays:], "(s)->") == scalars, name


def test_a_swapped_pack_field_is_caught():
    inc = _c_text("fastoptim_kernels.inc")
    swapped = inc.replace("T grad_scale; T lerp_weight;", "T lerp_weight; T grad_scale;", 1)
    assert swapped != inc
    fields = _struct_fields(swapped, r"FN\((\w+)_args\)")["adam"]
    assert fields != header_expectations("T", "T")["fo_adam_T"][1]
