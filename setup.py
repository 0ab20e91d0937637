"""Only wires the cffi C kernels into the build; all metadata lives in pyproject.toml.

The C backend is optional: if the compiler is missing or fails, the package
still installs (pure Python + Numba) and ``fastoptim.available_backends()``
leaves out ``"c"``.
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the C kernels if possible; warn and carry on without them if not."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, ...)
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(
            f"WARNING: fastoptim's C kernels could not be built ({exc}); "
            "installing without the 'c' backend.",
            file=sys.stderr,
        )


setup(
    cffi_modules=["kernels/build_kernels.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
