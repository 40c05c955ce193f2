"""Build the header codec extension; all other metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("zarray._header", ["src/zarray/_header.pyx"])],
        compiler_directives={"language_level": "3"},
    ),
)
