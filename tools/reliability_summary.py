"""Run zarray's reliability suite and print its figures.

    python tools/reliability_summary.py                # bounded fuzz (30 s per harness)
                                                       # + tests/reliability (default sizes)
    python tools/reliability_summary.py --full         # also the slow variants: 100,000
                                                       # small / 1,000 large messages,
                                                       # 100,000-cycle soaks
    python tools/reliability_summary.py --fuzz-seconds 600

It runs ``fuzz/run.py`` and ``pytest tests/reliability``; the tests record what they
verified (only when they pass) and this script prints: fuzz inputs tried, messages
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


def run_fuzz(seconds: int, out: Path) -> tuple[dict[str, Any] | None, int]:
    """The bounded fuzz run; returns its JSON report and exit status."""
    cmd = [sys.executable, str(REPO / "fuzz" / "run.py"), "--seconds", str(seconds)]
    cmd += ["--json", str(out)]
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


def report(
    fuzz: dict[str, Any] | None,
    fuzz_seconds: int,
    figs: dict[str, Any],
    tests: str,
    test_seconds: float,
    full: bool,
) -> str:
    """The summary text."""
    out = [f"zarray reliability summary ({'full' if full else 'default'} sizes)", _versions()]
    if fuzz is not None:
        per = ", ".join(f"fuzz_{r['harness']} {_fmt(r['inputs'])}" for r in fuzz["runs"])
        crashes = sum(len(r["crashes"]) for r in fuzz["runs"])
        out.append(
            f"fuzz ({fuzz['engine']}, {fuzz_seconds} s per harness): "
            f"{_fmt(fuzz['total'])} inputs tried ({per}); {crashes} crashes"
        )
    extra = figs.get("fuzz.inputs_in_tests")
    if extra:
        out.append(f"fuzz inside the test run: {_fmt(extra)} more inputs")
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
            f"+{run['rss_growth_KiB']} KiB at the end, live objects +{run['objects_growth']}"
        )
    if "memory.declared_8GiB_vm_growth_MiB_without_maxmsgsize" in figs:
        out.append(
            "hostile frame size (8 GiB declared, 1,000 bytes sent): address space +"
            f"{_fmt(figs['memory.declared_8GiB_vm_growth_MiB_without_maxmsgsize'])} MiB "
            "without MAXMSGSIZE, +"
            f"{_fmt(figs['memory.declared_8GiB_vm_growth_MiB_with_maxmsgsize'])} MiB with it"
        )
    out.append(f"tests/reliability: {tests} ({test_seconds:.0f} s wall)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="include the slow variants")
    p.add_argument("--fuzz-seconds", type=int, default=30, help="per harness (default 30)")
    p.add_argument("--no-fuzz", action="store_true", help="skip the bounded fuzz run")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zarray-summary-") as tmp:
        fuzz, fuzz_status = (None, 0)
        if not a.no_fuzz:
            fuzz, fuzz_status = run_fuzz(a.fuzz_seconds, Path(tmp) / "fuzz.json")
        figs, tests, test_status, seconds = run_tests(a.full, Path(tmp) / "figures.json")
    print(report(fuzz, a.fuzz_seconds, figs, tests, seconds, a.full))
    return 1 if fuzz_status or test_status else 0


if __name__ == "__main__":
    sys.exit(main())
