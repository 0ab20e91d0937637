"""Wires the compiled parts into the build; all metadata lives in pyproject.toml.

- ``fastoptim._ckernels``: the C kernels, through cffi (``cffi_modules``); running
  ``kernels/build_kernels.py`` also writes ``kernels/fo_constants.h`` from
  ``fastoptim/backends/_constants.py`` for both C parts.
- ``fastoptim._multi_table_c``: a small CPython extension (NumPy C API) that checks
  a plain list of parameters, gradients and state arrays and fills the pointer
  table of one multi-tensor kernel call (``fastoptim/backends/_multi_table.py``), and
  reads the writeable flags of a FlatParams group's views on every step.

Both are optional: if the compiler is missing or fails, the package still
installs (pure Python + Numba); ``fastoptim.available_backends()`` then leaves
out ``"c"`` and plain lists are checked by the pure-Python table filler.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the compiled parts if possible; warn and carry on without them if not."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, ...)
            self._warn(exc)

    def build_extension(self, ext):
        try:
            if ext.name == "fastoptim._multi_table_c":
                import numpy  # a build requirement (pyproject.toml); imported only here

                ext.include_dirs.append(numpy.get_include())
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, no NumPy headers
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc, name="fastoptim's compiled parts"):
        print(
            f"WARNING: {name} could not be built ({exc}); installing without it "
            "(the 'c' backend or the compiled plain-list checks are then unavailable).",
            file=sys.stderr,
        )


setup(
    cffi_modules=["kernels/build_kernels.py:ffibuilder"],
    ext_modules=[
        Extension(
            "fastoptim._multi_table_c",
            sources=["kernels/multi_table.c"],
            # fo_constants.h: the table layout, written by build_kernels.py (which
            # cffi_modules runs when setup() starts, before anything compiles)
            include_dirs=["kernels"],
            depends=["kernels/fo_constants.h", "fastoptim/backends/_constants.py"],
            extra_compile_args=["-O2"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
