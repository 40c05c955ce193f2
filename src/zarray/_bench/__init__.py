"""The benchmark engine behind ``zarray bench`` and the suites in ``bench/``.

One process (the *driver*) sends arrays; a *peer* receives them, checks every one,
and acknowledges each batch. Each *method* is one way of moving an array: zarray
itself (zero-copy or copying), the JSON recipe of pyzmq's serialization guide,
pickle protocol 5 with out-of-band buffers, msgpack-numpy, and raw pyzmq frames as
the floor.

The parts, one module each:

* :mod:`~zarray._bench.arrays`: sizes, the benchmark arrays, the receiver's checks,
  :class:`BenchError`;
* :mod:`~zarray._bench.methods`: the methods and their registry (adding a method is
  one entry there);
* :mod:`~zarray._bench.link`: the sockets and the peer (process or thread) that
  receives, checks and acknowledges;
* :mod:`~zarray._bench.measure`: warm-up, batch sizes, repeats, the progress bar;
* :mod:`~zarray._bench.report`: the table, the speed-up lines, the plot and JSON;
* :mod:`~zarray._bench.header`: the header path alone, for ``bench/test_bench_header.py``;
* :mod:`~zarray._bench.samehost`: ``zarray bench --shm``'s floors beside the methods
  (``numpy.copyto`` here, mpi4py ``Send``/``Recv`` between two ranks, run by
  :mod:`~zarray._bench.mpi` under ``mpiexec``).

Everything uses zarray's public API, except :func:`~zarray._bench.header.header_path`,
which holds every private import in one place. This package re-exports the names
that the command and ``bench/`` use.
"""

from __future__ import annotations

from zarray._bench.arrays import (
    DEFAULT_SIZES,
    BenchError,
    Expected,
    GiB,
    KiB,
    MiB,
    check_received,
    check_sizes,
    format_size,
    make_array,
    parse_size,
    parse_sizes,
)
from zarray._bench.header import (
    PUBLIC_PATHS,
    HeaderPath,
    header_path,
    json_recipe_header_roundtrip,
)
from zarray._bench.link import TRANSPORTS, Link, process_memory, reset_peak_memory
from zarray._bench.measure import Progress, Result, measure, measure_many, run_bench, warmup_count
from zarray._bench.methods import (
    BASELINE,
    DEFAULT_METHODS,
    METHODS,
    REGISTRY,
    Method,
    PlotStyle,
    available_methods,
)
from zarray._bench.report import (
    check_plotting,
    format_speedups,
    format_table,
    machine_info,
    machine_title,
    plot_results,
    results_to_json,
)
from zarray._bench.samehost import (
    SHM_METHODS,
    SHM_SIZES,
    measure_copyto,
    measure_mpi,
    shm_targets,
)

__all__ = [
    "BASELINE",
    "DEFAULT_METHODS",
    "DEFAULT_SIZES",
    "METHODS",
    "PUBLIC_PATHS",
    "REGISTRY",
    "SHM_METHODS",
    "SHM_SIZES",
    "TRANSPORTS",
    "BenchError",
    "Expected",
    "GiB",
    "HeaderPath",
    "KiB",
    "Link",
    "Method",
    "MiB",
    "PlotStyle",
    "Progress",
    "Result",
    "available_methods",
    "check_plotting",
    "check_received",
    "check_sizes",
    "format_size",
    "format_speedups",
    "format_table",
    "header_path",
    "json_recipe_header_roundtrip",
    "machine_info",
    "machine_title",
    "make_array",
    "measure",
    "measure_copyto",
    "measure_many",
    "measure_mpi",
    "parse_size",
    "parse_sizes",
    "plot_results",
    "process_memory",
    "reset_peak_memory",
    "results_to_json",
    "run_bench",
    "shm_targets",
    "warmup_count",
]
