"""cffi builder (API mode) for fastoptim's C kernels.

setup.py names ``kernels/build_kernels.py:ffibuilder`` in ``cffi_modules``;
``pip install .`` then compiles ``fastoptim._ckernels``. The declarations are
read from the real header, so C and Python cannot drift apart.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _cdef_from_header(path):
    """The header without preprocessor lines and comments: what cffi's cdef accepts."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(os.path.join(HERE, "fastoptim.h")))
ffibuilder.cdef(_cdef_from_header(os.path.join(HERE, "multi_tensor.h")))  # table kernels
ffibuilder.set_source(
    "fastoptim._ckernels",
    '#include "fastoptim.h"\n#include "multi_tensor.h"',
    # relative paths: setuptools refuses absolute ones in sources
    sources=["kernels/fastoptim.c", "kernels/multi_tensor.c"],
    include_dirs=["kernels"],
    depends=["kernels/fastoptim.h", "kernels/fastoptim_kernels.inc", "kernels/multi_tensor.h"],
    extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"],
    extra_link_args=["-fopenmp"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
