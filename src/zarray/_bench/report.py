"""Reporting: the text table, the speed-up lines, the plot, JSON, and the machine.

Every figure printed is a ratio or a time measured in the same run; nothing here
measures anything.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import zmq

import zarray
from zarray._bench.arrays import format_size
from zarray._bench.header import header_path
from zarray._bench.measure import Result
from zarray._bench.methods import BASELINE, METHODS, PlotStyle

__all__ = [
    "check_plotting",
    "format_speedups",
    "format_table",
    "machine_info",
    "machine_title",
    "plot_results",
    "results_to_json",
]


def _ratio(r: Result, base: Result | None) -> float:
    if base is None or r.error or base.error:
        return math.nan
    return base.seconds / r.seconds


def format_table(results: Sequence[Result], baseline: str = BASELINE) -> str:
    """Format results as a text table grouped by size.

    ``vs raw`` is throughput relative to the baseline method at the same size
    (1.00x: as fast as raw pyzmq frames; 0.50x: half as fast).
    """
    base = {r.nbytes: r for r in results if r.method == baseline}
    header = f"{'method':<16}{'size':>10}{'µs/msg':>12}{'GB/s':>9}{'vs ' + baseline:>9}"
    lines = [header, "-" * len(header)]
    last = None
    for r in sorted(results, key=lambda r: r.nbytes):
        if last is not None and r.nbytes != last:
            lines.append("")
        last = r.nbytes
        if r.error:
            first = r.error.strip().splitlines()[-1]
            lines.append(f"{r.method:<16}{format_size(r.nbytes):>10}  FAILED: {first}")
            continue
        ratio = _ratio(r, base.get(r.nbytes))
        if not math.isfinite(ratio):
            ratio_s = "-"
        else:
            ratio_s = f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"
        lines.append(
            f"{r.method:<16}{format_size(r.nbytes):>10}{r.usec:>12.1f}{r.gbps:>9.2f}{ratio_s:>9}"
        )
    return "\n".join(lines)


def format_speedups(results: Sequence[Result], num: str, den: str) -> str | None:
    """One line: throughput of ``num`` over ``den`` at each size where both ran."""
    a = {r.nbytes: r for r in results if r.method == num and not r.error}
    b = {r.nbytes: r for r in results if r.method == den and not r.error}
    sizes = sorted(set(a) & set(b))
    if not sizes:
        return None
    parts = [f"{format_size(n)} {b[n].seconds / a[n].seconds:.2f}x" for n in sizes]
    return f"{num} / {den}: " + ", ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """Describe the machine and the software versions the numbers belong to."""
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "zarray": zarray.__version__,
        "codec": header_path("active").codec,
    }


def machine_title(info: dict[str, str] | None = None) -> str:
    """One line: CPU, cores, OS."""
    i = info or machine_info()
    return f"{i['cpu']}, {i['cores']} cores, {i['platform']}"


def _matplotlib() -> tuple[ModuleType, ModuleType]:
    """``(matplotlib.pyplot, matplotlib.ticker)`` with the file-only Agg backend."""
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot"), importlib.import_module(
        "matplotlib.ticker"
    )


def check_plotting() -> None:
    """Import what :func:`plot_results` needs, so a missing package fails before a run.

    Raises
    ------
    ImportError
        If matplotlib (the ``bench`` extra) cannot be imported.
    """
    _matplotlib()


def plot_results(
    results: Sequence[Result],
    path: str,
    *,
    transport: str,
    info: dict[str, str] | None = None,
    note: str = "",
) -> None:
    """Write a log-log PNG of throughput against array size, one line per method.

    ``note`` is printed small in the bottom right corner (e.g. the command line).

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    plt, ticker = _matplotlib()
    info = info or machine_info()

    order = list(dict.fromkeys(r.method for r in results))
    fig, ax = plt.subplots(figsize=(8, 5.4), dpi=150)
    for k, name in enumerate(order):
        pts = sorted((r.nbytes, r.gbps) for r in results if r.method == name and not r.error)
        if not pts:
            continue
        method = METHODS.get(name)
        style = method.plot if method is not None and method.plot is not None else None
        if style is None:
            style = PlotStyle(name, f"C{5 + k % 5}")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=style.color,
            marker=style.marker,
            linestyle=style.linestyle,
            linewidth=style.linewidth,
            label=style.label,
            zorder=style.zorder,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r.nbytes for r in results})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: format_size(int(x))))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _pos: f"{y:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("array size (one message)")
    ax.set_ylabel("throughput, GB/s (log scale)")
    where = (
        "inproc, two threads of one process"
        if transport == "inproc"
        else f"{transport}, between two processes"
    )
    ax.set_title(
        f"zarray bench: pipelined throughput over {where}\n"
        f"{machine_title(info)}; pyzmq {info['pyzmq']}, libzmq {info['libzmq']}",
        fontsize=9.5,
    )
    if note:
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="0.4")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8.5, loc="best", frameon=True, framealpha=0.9)
    fig.tight_layout(rect=(0.0, 0.03, 1.0, 1.0) if note else None)
    fig.savefig(path)
    plt.close(fig)


def results_to_json(
    results: Sequence[Result], *, transport: str, info: dict[str, str] | None = None
) -> str:
    """Serialise results (and the machine) as JSON, for records and later plots."""
    return json.dumps(
        {
            "transport": transport,
            "machine": info or machine_info(),
            "results": [
                {
                    "method": r.method,
                    "nbytes": r.nbytes,
                    "seconds_per_message": r.seconds if not r.error else None,
                    "samples": r.samples,
                    "count": r.count,
                    "gbps": r.gbps if not r.error else None,
                    "error": r.error,
                }
                for r in results
            ],
        },
        indent=1,
    )
