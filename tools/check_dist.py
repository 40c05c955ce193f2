"""Check what zarray's source distribution and wheel hold (run by .ci/run).

    python -m build --outdir dist . && python tools/check_dist.py dist

The sdist must be a complete source release: every file git tracks under src/, tests/,
bench/, docs/, fuzz/ and tools/, the build files and LICENSE, but no generated C, no
compiled modules and no caches. The wheel must be lean: the compiled extensions and
the package's .py, .pyi and py.typed, LICENSE in its metadata, and nothing else (no
Cython sources, no C, no tests). Both must name the MIT license. Exits 1 and says what
is wrong otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("src", "tests", "bench", "docs", "fuzz", "tools")
TOP_FILES = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in"}
NEVER = (".c", ".so", ".pyd", ".pyc", ".html")
EXTENSIONS = ("_header", "_fastpath")


def _tracked() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", *SOURCE_DIRS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split()) | TOP_FILES


def _license_problems(metadata: str, where: str) -> list[str]:
    msg = Parser().parsestr(metadata)
    problems = []
    if msg.get("License-Expression") != "MIT":
        problems.append(f"{where}: License-Expression is {msg.get('License-Expression')!r}")
    if "LICENSE" not in msg.get_all("License-File", []):
        problems.append(f"{where}: no License-File: LICENSE")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        names = tar.getnames()
        prefix = names[0].split("/")[0]
        members = {n[len(prefix) + 1 :] for n in names if n.startswith(prefix + "/")}
        files = {n for n in members if not tar.getmember(f"{prefix}/{n}").isdir()}
        pkg_info = tar.extractfile(f"{prefix}/PKG-INFO")
        assert pkg_info is not None
        problems = _license_problems(pkg_info.read().decode(), path.name)
    problems += [f"{path.name}: missing {n}" for n in sorted(_tracked() - files)]
    problems += [
        f"{path.name}: must not ship {n}"
        for n in sorted(files)
        if n.endswith(NEVER) or "__pycache__" in n
    ]
    return problems


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        files = set(whl.namelist())
        dist_info = next(n.split("/")[0] for n in files if n.split("/")[0].endswith(".dist-info"))
        problems = _license_problems(whl.read(f"{dist_info}/METADATA").decode(), path.name)
    if f"{dist_info}/licenses/LICENSE" not in files:
        problems.append(f"{path.name}: no {dist_info}/licenses/LICENSE")
    src = ROOT / "src"
    wanted = {
        PurePosixPath(p.relative_to(src)).as_posix()
        for p in (src / "zarray").rglob("*")
        if p.suffix in (".py", ".pyi") or p.name == "py.typed"
    }
    wanted &= {n[len("src/") :] for n in _tracked() if n.startswith("src/")}
    problems += [f"{path.name}: missing {n}" for n in sorted(wanted - files)]
    for ext in EXTENSIONS:
        if not any(n.startswith(f"zarray/{ext}.") and n.endswith((".so", ".pyd")) for n in files):
            problems.append(f"{path.name}: no compiled zarray/{ext} module")
    for n in sorted(files):
        top = n.split("/")[0]
        if top != "zarray" and top != dist_info:
            problems.append(f"{path.name}: must not ship {n} (outside the package)")
        elif n.endswith((".pyx", ".pxd", ".c", ".pyc", ".html")) or "__pycache__" in n:
            problems.append(f"{path.name}: must not ship {n}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dist = Path(argv[0])
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        print(f"expected one sdist and one wheel in {dist}, found {sdists + wheels}")
        return 1
    problems = check_sdist(sdists[0]) + check_wheel(wheels[0])
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"{sdists[0].name} and {wheels[0].name}: contents as they should be")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
