"""Run zarray's fuzz harnesses for a bounded time and report how many inputs they tried.

    python fuzz/run.py                      # 30 s per harness (header, recv, send,
                                            # compressed)
    python fuzz/run.py --seconds 3600       # a long run: one hour per harness
    python fuzz/run.py --codec both         # each harness on the compiled and the
                                            # pure-Python codec (ZARRAY_PUREPYTHON=1)
    python fuzz/run.py --sanitized          # against fuzz/build_sanitized.py's build:
                                            # ASan + UBSan + coverage of the C code
    python fuzz/run.py --seconds 600 --harness recv --workdir fuzz/work

Each harness runs in its own process under atheris (libFuzzer), seeded with
``fuzz/corpus/<harness>/`` (``fuzz_compressed`` makes its messages itself and has
none); new interesting inputs go to ``--workdir`` (a temporary directory unless given,
so the committed seed corpus never changes by itself). A crash (any exception other
than zarray's own errors, a mismatch between the codecs or with the oracle, an
allocation past the guard's bound, a hang past ``-timeout``, RSS past
``--rss-limit-mb``, and in the instrumented build any ASan/UBSan report or a single
malloc past ``-malloc_limit_mb``) stops that harness; its input is written to
``--artifacts`` and the exit status is 1. Turn each such input into a regression test:
copy it to ``fuzz/regressions/`` (it is replayed by
tests/reliability/test_fuzz_regressions.py) and write a named test for it.

Without atheris (e.g. a Python for which it has no wheel), a plain loop over the same
seeds drives the same harness functions with the harnesses' own structure-aware
mutators and bit flips (no coverage guidance); the report says which engine ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HARNESSES = ("header", "recv", "send", "compressed")
CODECS = ("cython", "python")
#: In the instrumented build: the largest single malloc allowed, in MiB (the guard's C
#: level twin; ASan's allocator reports every malloc of the process to libFuzzer).
MALLOC_LIMIT_MB = 64


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _environment(codec: str, sanitized: bool) -> dict[str, str]:
    if sanitized:
        sys.path.insert(0, str(HERE))
        import build_sanitized

        env = build_sanitized.environment()
    else:
        env = dict(os.environ)
    env.pop("ZARRAY_PUREPYTHON", None)
    if codec == "python":
        env["ZARRAY_PUREPYTHON"] = "1"
    return env


def run_atheris(
    harness: str,
    seconds: int,
    workdir: Path,
    artifacts: Path,
    rss_limit_mb: int,
    codec: str = "cython",
    sanitized: bool = False,
) -> dict[str, Any]:
    """One harness under libFuzzer; returns its figures."""
    tag = f"{harness}-{codec}" + ("-sanitized" if sanitized else "")
    corpus = workdir / tag
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(HERE / f"fuzz_{harness}.py"),
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={rss_limit_mb * (4 if sanitized else 1)}",
        "-timeout=10",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/{tag}-",
        str(corpus),
    ]
    if (HERE / "corpus" / harness).is_dir():  # fuzz_compressed needs no seeds
        cmd.append(str(HERE / "corpus" / harness))
    if sanitized:
        cmd.insert(3, f"-malloc_limit_mb={MALLOC_LIMIT_MB}")
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        check=False,
        env=_environment(codec, sanitized),
    )
    elapsed = time.monotonic() - t0
    log = proc.stderr + proc.stdout
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    runs = int(m.group(1)) if m else 0
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    crashes = sorted(str(p) for p in artifacts.glob(f"{tag}-*"))
    result: dict[str, Any] = {
        "harness": harness,
        "codec": codec,
        "instrumented": sanitized,
        "engine": "atheris",
        "inputs": runs,
        "seconds": round(elapsed, 1),
        "coverage": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "corpus": len(list(corpus.iterdir())),
        "returncode": proc.returncode,
        "crashes": crashes,
        "ok": proc.returncode == 0 and not crashes and runs > 0,
    }
    if not result["ok"]:
        tail = [ln for ln in log.splitlines() if "# Uses:" not in ln][-60:]
        result["log_tail"] = "\n".join(tail)
    return result


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # set a byte to an interesting value
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and buf:  # duplicate a chunk
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randint(1, 64))
            buf[j:j] = buf[i:j]
        elif op == 5:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(buf) + 1)
            buf = buf[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 6 and len(buf) >= 8:  # overwrite 8 bytes with an edge integer
            i = rng.randrange(len(buf) - 7)
            value = rng.choice((0, 1, 2**63 - 1, 2**63, 2**64 - 1, rng.getrandbits(64)))
            buf[i : i + 8] = value.to_bytes(8, "little")
    return bytes(buf)


def run_fallback(harness: str, seconds: int, artifacts: Path, seed: int) -> dict[str, Any]:
    """A plain loop over the seeds (no coverage guidance), in this process: the harness's
    own structure-aware mutator when it has one, and byte mutations."""
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(f"fuzz_{harness}")
    seeds = [p.read_bytes() for p in sorted((HERE / "corpus" / harness).glob("*.bin"))]
    seeds += [p.read_bytes() for p in sorted((HERE / "regressions").glob(f"{harness}-*"))]
    structured = getattr(module, "custom_mutator", None)
    rng = random.Random(seed)
    runs = 0
    crashes: list[str] = []
    t0 = time.monotonic()
    try:
        for data in seeds:
            module.TestOneInput(data)
            runs += 1
        while time.monotonic() - t0 < seconds:
            if not seeds:  # a harness that builds its own messages (fuzz_compressed)
                data = rng.randbytes(rng.randrange(4, 64))
            elif structured is not None and rng.random() < 0.5:
                data = structured(rng.choice(seeds), 1 << 20, rng.randrange(2**32))
            else:
                data = _mutate(rng, rng.choice(seeds), seeds)
            try:
                module.TestOneInput(data)
            except Exception:
                artifacts.mkdir(parents=True, exist_ok=True)
                path = artifacts / f"{harness}-crash-{runs}"
                path.write_bytes(data)
                crashes.append(str(path))
                raise
            runs += 1
    except Exception as exc:  # report, do not hide: the caller exits 1
        return {
            "harness": harness,
            "codec": _codec_name(),
            "instrumented": False,
            "engine": "fallback",
            "inputs": runs,
            "seconds": round(time.monotonic() - t0, 1),
            "crashes": crashes,
            "ok": False,
            "log_tail": f"{type(exc).__name__}: {exc}"[:4000],
        }
    finally:
        if hasattr(module, "close"):
            module.close()
    return {
        "harness": harness,
        "codec": _codec_name(),
        "instrumented": False,
        "engine": "fallback",
        "inputs": runs,
        "seconds": round(time.monotonic() - t0, 1),
        "crashes": crashes,
        "ok": True,
    }


def _codec_name() -> str:
    from zarray import _codec

    return _codec.IMPLEMENTATION


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=30, help="per harness (default 30)")
    p.add_argument("--harness", choices=HARNESSES, action="append", help="default: all")
    p.add_argument(
        "--codec",
        choices=(*CODECS, "both"),
        default="cython",
        help="zarray's codec in the harness process (python: ZARRAY_PUREPYTHON=1)",
    )
    p.add_argument(
        "--sanitized",
        action="store_true",
        help="run against the ASan/UBSan/coverage build of fuzz/build_sanitized.py",
    )
    p.add_argument("--workdir", type=Path, help="keep the grown corpus here")
    p.add_argument("--artifacts", type=Path, default=None, help="where crash inputs go")
    p.add_argument("--rss-limit-mb", type=int, default=1024)
    p.add_argument("--engine", choices=("auto", "atheris", "fallback"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="fallback engine's random seed")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    engine = a.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "fallback"
    if engine == "atheris" and not _have_atheris():
        p.error("atheris is not installed: pip install atheris")
    if a.sanitized:
        if engine != "atheris":
            p.error("--sanitized needs atheris (its sanitizer runtime is preloaded)")
        if a.codec != "cython":
            p.error("--sanitized fuzzes the compiled codec: leave --codec at cython")
        if not (HERE / "build-sanitized" / "BUILD_INFO.json").exists():
            print("building the instrumented extensions (fuzz/build_sanitized.py)", flush=True)
            sys.path.insert(0, str(HERE))
            import build_sanitized

            build_sanitized.build()
    codecs = CODECS if a.codec == "both" else (a.codec,)
    tmp = Path(tempfile.mkdtemp(prefix="zarray-fuzz-"))
    artifacts = a.artifacts or (tmp / "artifacts")
    workdir = a.workdir or (tmp / "corpus")
    results = []
    try:
        for codec in codecs:
            for harness in a.harness or HARNESSES:
                if engine == "atheris":
                    r = run_atheris(
                        harness, a.seconds, workdir, artifacts, a.rss_limit_mb, codec, a.sanitized
                    )
                else:
                    if codec == "python":
                        os.environ["ZARRAY_PUREPYTHON"] = "1"
                    r = run_fallback(harness, a.seconds, artifacts, a.seed)
                results.append(r)
                status = "ok" if r["ok"] else "FAILED"
                where = f"{r['engine']}, {r['codec']} codec" + (
                    ", instrumented" if r["instrumented"] else ""
                )
                cov = f", cov {r['coverage']}" if r.get("coverage") is not None else ""
                print(
                    f"fuzz_{harness}: {r['inputs']:,} inputs in {r['seconds']} s "
                    f"({where}{cov}), {len(r['crashes'])} crashes: {status}",
                    flush=True,
                )
                if not r["ok"]:
                    print(r.get("log_tail", ""), file=sys.stderr)
                    for crash in r["crashes"]:
                        print(f"  crash input: {crash}", file=sys.stderr)
        total = sum(r["inputs"] for r in results)
        print(f"fuzz total: {total:,} inputs tried, engine {engine}")
        if a.json:
            report = {
                "engine": engine,
                "total": total,
                "codecs": list(codecs),
                "instrumented": a.sanitized,
                "runs": results,
            }
            a.json.write_text(json.dumps(report))
    finally:
        if a.artifacts is None and all(r["ok"] for r in results):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
