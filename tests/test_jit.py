"""Numba's disk cache keys a function on its name and its own source file only: the
kernels' names carry a digest of their code and of everything it reaches (the per-element
updates of _math.py, the constants), so editing any of these gives a fresh cache entry."""
import inspect
import re
import subprocess
import sys
import textwrap
import types

import numba
import pytest

from fastoptim.backends import _jit, _math, numba_backend


def _edited(func, old, new):
    """``func`` recompiled from its source with ``old`` replaced by ``new``: an edit."""
    source = textwrap.dedent(inspect.getsource(func))
    assert old in source
    namespace = dict(func.__globals__)
    exec(compile(source.replace(old, new), inspect.getsourcefile(func), "exec"), namespace)
    return namespace[func.__name__]


def _with_globals(func, **changed):
    """A copy of ``func`` that sees ``changed`` in place of some of its globals."""
    return types.FunctionType(func.__code__, dict(func.__globals__, **changed), func.__name__)


def _names(pair):
    return (pair.serial.py_func.__qualname__, pair.parallel.py_func.__qualname__,
            pair.blocked.py_func.__qualname__)


def test_every_numba_kernel_is_cached_under_its_digest():
    assert numba_backend._adam_update.py_func.__qualname__ == (
        "adam_update__" + _jit.code_digest(_math.adam_update))
    assert numba_backend._sgd_update.py_func.__qualname__ == (
        "sgd_update__" + _jit.code_digest(_math.sgd_update))
    for pair, kernel in ((numba_backend._ADAM, numba_backend._adam),
                         (numba_backend._AMSGRAD, numba_backend._amsgrad),
                         (numba_backend._SGD, numba_backend._sgd),
                         (numba_backend._SGD_MOMENTUM, numba_backend._sgd_momentum),
                         (numba_backend._LION, numba_backend._lion)):
        serial, parallel, blocked = _names(pair)
        assert serial == f"{kernel.__name__}__{_jit.code_digest(kernel)}"
        assert parallel.endswith(_jit.code_digest(_jit._chunked_template, kernel))
        assert blocked.endswith(_jit.code_digest(_jit._blocked_template, kernel))


def test_editing_math_py_renames_the_kernels_that_call_it():
    """An edit of _math.adam_update's code (``+ eps`` to ``- eps``) reaches every kernel
    built on it: the update itself, the serial range kernel and both parallel wrappers."""
    edited = _edited(_math.adam_update, "+ eps", "- eps")
    assert _jit.code_digest(edited) != _jit.code_digest(_math.adam_update)
    kernel = _with_globals(numba_backend._adam, _adam_update=numba.njit(**_jit.SERIAL)(edited))
    before, after = _names(numba_backend._ADAM), _names(_jit.kernel_pair(kernel))
    assert all(a != b for a, b in zip(before, after))
    # the unedited code keeps its names, so a warm cache stays warm
    same = _with_globals(numba_backend._adam, _adam_update=numba_backend._adam_update)
    assert _names(_jit.kernel_pair(same)) == before


def test_a_changed_constant_renames_the_kernels_that_read_it():
    assert _jit.code_digest(_with_globals(_math.adam_update, DECAY_L2=7)) != (
        _jit.code_digest(_math.adam_update))
    # read through a module (``module.NAME``) or a closure
    module = types.ModuleType("some_constants")
    module.LIMIT = 5
    namespace = {"some_constants": module}
    exec("def reads_module(a):\n    return a + some_constants.LIMIT\n", namespace)
    digest = _jit.code_digest(namespace["reads_module"])
    module.LIMIT = 6
    assert _jit.code_digest(namespace["reads_module"]) != digest

    def closure(limit):
        def reads_cell(a):
            return a + limit
        return reads_cell

    assert _jit.code_digest(closure(5)) == _jit.code_digest(closure(5))
    assert _jit.code_digest(closure(5)) != _jit.code_digest(closure(6))
    # the chunked loop's own constants are in its wrapper's digest
    chunk = _with_globals(_jit._chunked_template, PREFETCH_AHEAD_BYTES=4096)
    assert _jit.code_digest(chunk, numba_backend._adam) != _jit.code_digest(
        _jit._chunked_template, numba_backend._adam)


def test_a_nested_function_and_a_callee_cycle_are_digested():
    def outer(a):
        return sum(a * k for k in range(3))

    edited = _edited(outer, "* k", "+ k")
    assert _jit.code_digest(outer) != _jit.code_digest(edited)

    namespace = {}
    exec("def ping(n):\n    return pong(n - 1) if n else 0\n"
         "def pong(n):\n    return ping(n - 1) if n else 1\n", namespace)
    digest = _jit.code_digest(namespace["ping"])  # terminates
    exec("def pong(n):\n    return ping(n - 1) if n else 2\n", namespace)
    assert _jit.code_digest(namespace["ping"]) != digest  # the callee's callee counts


@pytest.mark.parametrize("name", ["_adam", "_sgd_momentum"])
def test_the_digest_is_the_same_in_another_process(name):
    """No address or other per-process value enters a name: a warm cache is found again."""
    code = ("from fastoptim.backends import _jit, numba_backend as nb; "
            f"print(_jit.code_digest(nb.{name}), _jit.code_digest(_jit._chunked_template, nb.{name}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    kernel = getattr(numba_backend, name)
    assert out == [_jit.code_digest(kernel), _jit.code_digest(_jit._chunked_template, kernel)]


def test_the_table_kernels_follow_math_py_too():
    from fastoptim.backends import _multi_numba

    rows = _multi_numba._adam_rows.py_func
    assert rows.__qualname__ == f"_adam_rows__{_jit.code_digest(rows)}"
    edited = numba.njit(**_jit.SERIAL)(_edited(_math.adam_update, "+ eps", "- eps"))
    assert _jit.code_digest(_with_globals(rows, _adam_update=edited)) != _jit.code_digest(rows)
    blocks = _multi_numba._adam_blocks.py_func  # the parallel one reaches it through the rows
    assert _jit.code_digest(_with_globals(blocks, _adam_rows=numba.njit(
        _with_globals(rows, _adam_update=edited)))) != _jit.code_digest(blocks)


def test_the_cuda_kernels_are_cached_under_their_digest_too():
    """numba-cuda's disk cache keys on the name as well: each CUDA kernel's name carries
    the digest of its code and of the _math update it calls, so an edit of _math.py
    reaches the GPU kernels (under the simulator this is checked on the Python side)."""
    cuda_backend = pytest.importorskip("fastoptim.backends.cuda_backend")
    from fastoptim.backends import _cuda_multi

    kernels = [cuda_backend._sgd_kernel, cuda_backend._adam_kernel, cuda_backend._lion_kernel]
    if _cuda_multi.POINTER_KERNELS:
        kernels += [_cuda_multi.sgd_multi_kernel, _cuda_multi.adam_multi_kernel]
    names = [kernel.py_func.__name__.rsplit("__", 1) for kernel in kernels]
    assert [name for name, _ in names] == ["_sgd_kernel", "_adam_kernel", "_lion_kernel",
                                           "_sgd_multi", "_adam_multi"][:len(kernels)]
    assert all(re.fullmatch("[0-9a-f]{10,}", digest) for _, digest in names)
    lion = cuda_backend._lion_kernel.py_func
    edited_update = _edited(_math.lion_update, "m * beta2", "m * beta1")
    device = cuda_backend.cuda.jit(device=True, inline=True)(edited_update)
    assert _jit.code_digest(_with_globals(lion, _lion_update=device)) != _jit.code_digest(lion)


def test_the_same_code_in_two_modules_gets_two_names():
    """The renamed kernels of every module share one cache: a function of the same code
    defined in another module must not load the first one's entry (whose code refers to
    that module)."""
    source = "def twin(a):\n    return a + 1\n"
    first, second = {"__name__": "module_one"}, {"__name__": "module_two"}
    exec(source, first)
    exec(source, second)
    assert first["twin"].__code__.co_code == second["twin"].__code__.co_code
    assert _jit.code_digest(first["twin"]) != _jit.code_digest(second["twin"])
    again = {"__name__": "module_one"}
    exec(source, again)  # the same code in the same place keeps its name (a warm cache)
    assert _jit.code_digest(again["twin"]) == _jit.code_digest(first["twin"])
