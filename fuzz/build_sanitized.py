"""Build zarray's compiled extensions with clang, AddressSanitizer, UBSan and libFuzzer's
coverage instrumentation, for the atheris harnesses to fuzz the C code itself.

    python fuzz/build_sanitized.py                 # -> fuzz/build-sanitized/
    python fuzz/run.py --sanitized --seconds 600   # the harnesses against that build

Every Extension that ``setup.py`` lists is built (its own ``build_ext``, with the
compiler and flags swapped through the environment), so a new Cython module is
instrumented without editing this script. The flags are

    -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -g -O1

``fuzzer-no-link`` adds SanitizerCoverage (the edge counters libFuzzer steers by) but
no libFuzzer ``main``; the sanitizer and libFuzzer runtimes come from atheris's
``asan_with_fuzzer.so``, preloaded into the uninstrumented Python (atheris' documented
way for native extensions: https://github.com/google/atheris/blob/master/native_extension_fuzzing.md).
The result is a staged package, ``fuzz/build-sanitized/zarray/`` (the Python modules of
``src/zarray`` and the instrumented ``.so`` files), that ``run.py --sanitized`` puts
first on ``PYTHONPATH``, with ``LD_PRELOAD`` and ``ASAN_OPTIONS`` set; see
:func:`environment`.

Needs: clang (Debian: ``apt-get install clang libclang-rt-14-dev``), atheris, and the
build requirements in the running Python (``pip install "Cython>=3.1" "setuptools>=77"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "build-sanitized"
SANITIZE = "-fsanitize=address,undefined,fuzzer-no-link"
CFLAGS = f"{SANITIZE} -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"


def preload() -> Path:
    """atheris's libFuzzer + ASan (+ UBSan handlers) runtime, to preload."""
    import atheris

    path = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not path.exists():
        sys.exit(f"{path} is missing: this atheris was built without its sanitizer runtimes")
    return path


def environment(out: Path = OUT) -> dict[str, str]:
    """The environment in which a harness runs against the instrumented build."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(out), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LD_PRELOAD"] = str(preload())
    # CPython frees little at exit: leak reports would be noise. A failed huge malloc
    # is a crash (allocator_may_return_null=0), which is what the guard wants.
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=0:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env.pop("ZARRAY_PUREPYTHON", None)
    return env


def _check_tools() -> str:
    clang = shutil.which("clang")
    if clang is None:
        sys.exit("clang not found (Debian: apt-get install -y clang libclang-rt-14-dev)")
    needed = {"Cython": "Cython>=3.1", "setuptools": "setuptools>=77", "numpy": "numpy"}
    needed["atheris"] = "atheris"
    for module, spec in needed.items():
        try:
            __import__(module)
        except ImportError:
            sys.exit(f"{module} is needed in this Python: pip install '{spec}'")
    import setuptools

    # pyproject.toml's license = "MIT" (PEP 639) needs setuptools 77; a venv made by
    # ``python -m venv`` may carry an older one, which refuses the file outright.
    if int(setuptools.__version__.split(".")[0]) < 77:
        sys.exit(
            f"setuptools {setuptools.__version__} cannot read pyproject.toml (PEP 639 "
            "license): pip install 'setuptools>=77'"
        )
    return clang


def build(out: Path = OUT) -> dict[str, object]:
    """Build every extension of setup.py instrumented, and stage the package in ``out``."""
    clang = _check_tools()
    ldshared = sysconfig.get_config_var("LDSHARED") or "cc -shared"
    ldshared_flags = ldshared.split(None, 1)[1] if " " in ldshared else "-shared"
    env = dict(os.environ)
    env.update(
        CC=clang,
        CXX=shutil.which("clang++") or clang,
        LDSHARED=f"{clang} {ldshared_flags}",
        CFLAGS=CFLAGS,
        LDFLAGS=SANITIZE,
    )
    with tempfile.TemporaryDirectory(prefix="zarray-sanitized-") as tmp:
        lib = Path(tmp) / "lib"
        cmd = [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(lib),
            "--build-temp",
            str(Path(tmp) / "temp"),
            "--force",
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            sys.exit("the instrumented build failed")
        built = sorted(lib.rglob("*.so"))
        if not built:
            sys.exit("setup.py built no extension")
        if out.exists():
            shutil.rmtree(out)
        package = out / "zarray"
        package.mkdir(parents=True)
        for path in (REPO / "src" / "zarray").iterdir():
            if path.suffix in (".py", ".pyi") or path.name == "py.typed":
                shutil.copy2(path, package / path.name)
        for so in built:
            shutil.copy2(so, out / so.relative_to(lib))
    extensions = sorted(str(p.relative_to(out)) for p in out.rglob("*.so"))
    for so in out.rglob("*.so"):
        symbols = subprocess.run(["nm", "-u", str(so)], capture_output=True, text=True).stdout
        if "__asan_report" not in symbols or "__sanitizer_cov" not in symbols:
            sys.exit(f"{so} does not look instrumented (no ASan or coverage symbols)")
    version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
    info: dict[str, object] = {
        "extensions": extensions,
        "cflags": CFLAGS,
        "ldflags": SANITIZE,
        "compiler": version.splitlines()[0] if version else clang,
        "preload": str(preload()),
    }
    (out / "BUILD_INFO.json").write_text(json.dumps(info, indent=2))
    # The staged package must import, with the instrumented codec, under the preload.
    check = (
        "import zarray, zarray._codec as c, json, sys; "
        "assert c.IMPLEMENTATION == 'cython', c.IMPLEMENTATION; "
        f"assert zarray.__file__.startswith({str(out)!r}), zarray.__file__; "
        "import numpy as np; "
        "a = np.arange(12.0).reshape(3, 4); h = zarray.pack_header(a); "
        "print(json.dumps(zarray.unpack_header(h).shape))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check],
        env=environment(out),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "[3, 4]":
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit("the instrumented build does not import under the sanitizer runtime")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    a = p.parse_args(argv)
    info = build(a.out)
    print(f"instrumented build in {a.out}: {', '.join(info['extensions'])}")  # type: ignore[arg-type]
    print(f"  {info['compiler']}; CFLAGS {info['cflags']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
