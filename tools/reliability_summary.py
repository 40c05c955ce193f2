"""Run zarray's reliability suite and print its figures.

    python tools/reliability_summary.py                # bounded fuzz (20 s per harness
                                                       # and codec) + tests/reliability
    python tools/reliability_summary.py --sanitized    # and the harnesses against the
                                                       # ASan/UBSan/coverage build
    python tools/reliability_summary.py --full         # also the slow variants: 100,000
                                                       # small / 1,000 large messages,
                                                       # 100,000-cycle soaks, long fuzz
    python tools/reliability_summary.py --fuzz-seconds 600

It runs ``fuzz/run.py`` (the three harnesses, on the compiled and the pure-Python codec,
and with ``--sanitized`` on the instrumented build) and ``pytest tests/reliability``; the
tests record what they verified (only when they pass) and this script prints: fuzz
inputs tried per harness, codec and build, with the allocation guard's bound; messages
sent and verified under load, faults injected and survived, and RSS growth over the
soak. Exit status 1 if the fuzzers found anything or a test failed (the figures of the
tests that passed are still printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _versions() -> str:
    import numpy
    import zmq

    import zarray

    return (
        f"zarray {zarray.__version__}, numpy {numpy.__version__}, pyzmq {zmq.__version__}, "
        f"libzmq {zmq.zmq_version()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()} {platform.system()}"
    )


def run_fuzz(
    seconds: int, out: Path, codec: str = "both", sanitized: bool = False
) -> tuple[dict[str, Any] | None, int]:
    """The bounded fuzz run; returns its JSON report and exit status."""
    cmd = [sys.executable, str(REPO / "fuzz" / "run.py"), "--seconds", str(seconds)]
    cmd += ["--json", str(out)]
    cmd += ["--sanitized"] if sanitized else ["--codec", codec]
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, check=False)
    sys.stderr.write(proc.stdout + proc.stderr)
    report = json.loads(out.read_text()) if out.exists() else None
    return report, proc.returncode


def run_tests(full: bool, out: Path) -> tuple[dict[str, Any], str, int, float]:
    """``pytest tests/reliability``; returns (figures, summary line, status, seconds)."""
    env = dict(os.environ, ZARRAY_RELIABILITY_FIGURES=str(out))
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"]
    if full:
        env["ZARRAY_RUNSLOW"] = "1"
        conftest = REPO / "tests" / "conftest.py"
        if conftest.exists() and "--runslow" in conftest.read_text():
            cmd.append("--runslow")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, check=False)
    elapsed = time.monotonic() - t0
    lines = proc.stdout.strip().splitlines()
    summary = next(
        (ln.strip("= ") for ln in reversed(lines) if re.search(r"\d+ (passed|failed)", ln)),
        "no test summary",
    )
    if proc.returncode != 0:
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        sys.stderr.write("\n".join(failed or lines[-40:]) + "\n")
    figures = json.loads(out.read_text()) if out.exists() else {}
    return figures, summary, proc.returncode, elapsed


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def _fuzz_line(fuzz: dict[str, Any], seconds: int) -> str:
    runs = fuzz["runs"]
    per = ", ".join(
        f"fuzz_{r['harness']} {r['codec']} {_fmt(r['inputs'])}"
        + (f" (cov {r['coverage']})" if r.get("coverage") is not None else "")
        for r in runs
    )
    crashes = sum(len(r["crashes"]) for r in runs)
    what = (
        "instrumented build (ASan + UBSan + coverage of the C code)"
        if fuzz.get("instrumented")
        else "codecs " + " and ".join(fuzz.get("codecs", ["cython"]))
    )
    return (
        f"fuzz ({fuzz['engine']}, {seconds} s per harness, {what}): "
        f"{_fmt(fuzz['total'])} inputs tried ({per}); {crashes} crashes"
    )


def _guard_line() -> str:
    sys.path.insert(0, str(REPO / "fuzz"))
    import _guard

    return (
        "  allocation guard: every receive, send and header decode under tracemalloc; "
        f"a crash past 4 x message bytes + {_guard.constant() / 2**20:.0f} MiB "
        "(the constant from zarray.limits)"
    )


def _shm_lines(figs: dict[str, Any]) -> list[str]:
    if "shm.messages_verified" not in figs:
        return []
    before, after = figs.get("shm.dev_shm_entries_before_after", [0, 0])
    out = [
        f"shared memory: {_fmt(figs['shm.messages_verified'])} messages verified across "
        f"processes, {figs.get('shm.kills_survived', 0)} SIGKILLs survived, "
        f"{figs.get('shm.slots_reclaimed_from_dead_receivers', 0)} slots reclaimed from "
        "dead receivers, "
        f"{figs.get('shm.references_refused_after_sender_death', 0)} references refused "
        f"after the sender died, {figs.get('shm.full_pool_refusals', 0)} full-pool "
        f"refusals; other user refused x{figs.get('shm.other_user_refused', 0)} (allowed "
        f"when configured x{figs.get('shm.other_user_allowed', 0)}), other network "
        f"namespace refused x{figs.get('shm.other_namespace_refused', 0)}; "
        f"shared-memory files left behind: {after - before}"
    ]
    for run in figs.get("shm.soak", []):
        out.append(
            f"  shm soak: {_fmt(run['messages'])} messages, sender fds "
            f"{run['sender_fds'][0]} -> {run['sender_fds'][1]}, receiver fds "
            f"{run['receiver_fds'][0]} -> {run['receiver_fds'][1]}, RSS growth sender "
            f"{run['sender_rss_growth_KiB']} KiB, receiver {run['receiver_rss_growth_KiB']} KiB"
        )
    return out


def report(
    fuzz: dict[str, Any] | None,
    fuzz_seconds: int,
    figs: dict[str, Any],
    tests: str,
    test_seconds: float,
    full: bool,
    sanitized: dict[str, Any] | None = None,
) -> str:
    """The summary text."""
    out = [f"zarray reliability summary ({'full' if full else 'default'} sizes)", _versions()]
    if fuzz is not None:
        out.append(_fuzz_line(fuzz, fuzz_seconds))
    if sanitized is not None:
        out.append(_fuzz_line(sanitized, fuzz_seconds))
    if fuzz is not None or sanitized is not None:
        out.append(_guard_line())
    extra = figs.get("fuzz.inputs_in_tests")
    if extra:
        out.append(
            f"fuzz inside the test run: {_fmt(extra)} more inputs (both codecs, a few "
            "seconds per harness), and hypothesis examples of the same generators"
        )
    slow = figs.get("fuzz.inputs_in_slow_tests")
    if slow:
        out.append(f"fuzz in the slow tests: {_fmt(slow)} more inputs")
    inst = figs.get("fuzz.inputs_instrumented_in_slow_tests")
    if inst:
        out.append(f"fuzz in the slow tests, instrumented build: {_fmt(inst)} inputs")
    comp = figs.get("fuzz.compressed_inputs_in_tests")
    if comp:
        out.append(
            f"fuzz of compressed payloads inside the test run: {_fmt(comp)} inputs "
            "(decoded as the reference codec decodes them, under the allocation guard)"
        )
    verified = figs.get("load.messages_verified", 0)
    mib = figs.get("load.bytes_verified", 0) / 2**20
    out.append(
        f"load: {_fmt(verified)} messages sent and verified (seq + CRC-32, in order, none "
        f"lost or corrupted), {_fmt(mib)} MiB in the PUSH/PULL streams"
    )
    for run in figs.get("load.pushpull", []):
        out.append(
            f"  PUSH/PULL {run['transport']}: {_fmt(run['small'])} small + "
            f"{_fmt(run['large'])} x 2 MiB; large arrays at {_fmt(run['large_MiB_per_s'])} "
            f"MiB/s, small at {_fmt(run['small_msgs_per_s'])} msg/s (measured, not asserted)"
        )
    if "load.max_senders" in figs:
        out.append(
            f"  many senders: {figs['load.max_senders']} processes into one PULL, "
            "per-sender order kept"
        )
    if "load.pushback_events" in figs:
        out.append(
            f"  slow consumer, HWM 2: {_fmt(figs['load.pushback_events'])} push-backs "
            "(zmq.Again or a blocking send), nothing dropped"
        )
    if "load.pubsub_sent" in figs:
        sent, dropped = figs["load.pubsub_sent"], figs.get("load.pubsub_dropped_at_hwm", 0)
        out.append(
            f"  PUB/SUB slow subscriber: {_fmt(dropped)} of {_fmt(sent)} dropped at the "
            "HWM (documented), every received message intact and in order"
        )
    if "curve.messages_verified" in figs:
        out.append(
            f"  CURVE: {figs['curve.messages_verified']} messages verified, "
            f"{figs.get('curve.bad_clients_refused', 0)} bad clients refused"
        )
    kinds = sorted(
        k.split(".", 1)[1]
        for k in figs
        if k.startswith("faults.")
        and k
        not in (
            "faults.injected",
            "faults.survived",
            "faults.messages_verified",
            "faults.zero_copy_sends_in_flight",
        )
    )
    out.append(
        f"faults: {_fmt(figs.get('faults.injected', 0))} injected, "
        f"{_fmt(figs.get('faults.survived', 0))} survived ("
        + ", ".join(f"{k} x{figs['faults.' + k]}" for k in kinds)
        + ")"
    )
    for run in figs.get("soak.runs", []):
        out.append(
            f"soak {run['transport']}: {_fmt(run['cycles'])} zero-copy send/recv cycles, RSS "
            f"{run['rss_warm_MiB']} MiB after {_fmt(run['warmup'])} warm-up cycles, "
            f"{run['rss_growth_KiB']:+} KiB at the end, live objects {run['objects_growth']:+}"
        )
    if "memory.declared_8GiB_vm_growth_MiB_without_maxmsgsize" in figs:
        out.append(
            "hostile frame size (8 GiB declared, 1,000 bytes sent): address space +"
            f"{_fmt(figs['memory.declared_8GiB_vm_growth_MiB_without_maxmsgsize'])} MiB "
            "without MAXMSGSIZE, +"
            f"{_fmt(figs['memory.declared_8GiB_vm_growth_MiB_with_maxmsgsize'])} MiB with it"
        )
    out.extend(_shm_lines(figs))
    out.append(f"tests/reliability: {tests} ({test_seconds:.0f} s wall)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="include the slow variants")
    p.add_argument(
        "--fuzz-seconds", type=int, default=20, help="per harness and codec (default 20)"
    )
    p.add_argument("--fuzz-codec", choices=("cython", "python", "both"), default="both")
    p.add_argument(
        "--sanitized", action="store_true", help="also fuzz the ASan/UBSan/coverage build"
    )
    p.add_argument("--no-fuzz", action="store_true", help="skip the bounded fuzz run")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zarray-summary-") as tmp:
        fuzz, fuzz_status = (None, 0)
        sanitized, sanitized_status = (None, 0)
        if not a.no_fuzz:
            fuzz, fuzz_status = run_fuzz(a.fuzz_seconds, Path(tmp) / "fuzz.json", a.fuzz_codec)
            if a.sanitized:
                sanitized, sanitized_status = run_fuzz(
                    a.fuzz_seconds, Path(tmp) / "sanitized.json", sanitized=True
                )
        figs, tests, test_status, seconds = run_tests(a.full, Path(tmp) / "figures.json")
    print(report(fuzz, a.fuzz_seconds, figs, tests, seconds, a.full, sanitized))
    return 1 if fuzz_status or sanitized_status or test_status else 0


if __name__ == "__main__":
    sys.exit(main())
