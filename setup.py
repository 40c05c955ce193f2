"""Build zarray's extension modules; all other metadata lives in pyproject.toml.

``_header`` (the codec) and ``_shuffle`` (the compression filter) use only the Python C
API. ``_fastpath`` uses numpy's C API, so it is compiled against numpy 2.x headers,
which also run on numpy 1.25 and later.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension("zarray._header", ["src/zarray/_header.pyx"]),
            Extension("zarray._shuffle", ["src/zarray/_shuffle.pyx"]),
            Extension(
                "zarray._fastpath",
                ["src/zarray/_fastpath.pyx"],
                include_dirs=[numpy.get_include()],
                define_macros=[
                    ("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
                    ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION"),
                ],
            ),
        ],
        compiler_directives={"language_level": "3"},
    ),
)
