"""What every benchmark shares: timing, the BLAS and load lines, and the rows table/CSV.

A row is ``(benchmark, case, seconds, baseline_seconds)``; its ratio is
``seconds / baseline_seconds`` in every benchmark (> 1: slower than the
baseline, which is NumPy float32 matmul of the same logical shape unless
the case says otherwise). The CSV is written whole or not at all.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fxpsim.tables import write_text_atomic  # noqa: E402

COLUMNS = ["benchmark", "case", "seconds", "baseline_seconds", "ratio"]


SETTLE_SECONDS = 0.15
"""Pause before each timed call: OpenBLAS's worker threads spin for ~0.1 s after a
matmul and would slow whatever is timed next (the baselines are interleaved)."""


def timed(fn) -> float:
    """Wall seconds of one call of ``fn``, started after :data:`SETTLE_SECONDS` of idling."""
    time.sleep(SETTLE_SECONDS)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def blas_line() -> str:
    """Which BLAS kernel threadpoolctl reports (and the OPENBLAS_CORETYPE override, if any)."""
    from threadpoolctl import threadpool_info

    parts = [f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
             f"threads={i.get('num_threads')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    env = os.environ.get("OPENBLAS_CORETYPE")
    return "; ".join(parts or ["no BLAS found"]) + (f" (OPENBLAS_CORETYPE={env})" if env else "")


def load_line() -> str:
    return (f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
            "(a shared machine makes timings noisy)")


def with_ratios(rows) -> list[tuple]:
    """``(benchmark, case, seconds, baseline)`` -> the same with ``seconds / baseline`` appended.

    A row without a baseline (NaN, e.g. a compile time) gets a NaN ratio.
    """
    return [(b, c, s, bs, s / bs if bs else float("nan")) for b, c, s, bs in rows]


def _num(v: float, fmt: str) -> str:
    return "" if v != v else format(v, fmt)  # NaN: no baseline, no ratio


def print_rows(rows, bench_width: int = 28, case_width: int | None = None) -> None:
    """The rows as an aligned table (``case_width`` None: as wide as the longest case)."""
    table = with_ratios(rows)
    case_width = case_width or max(len(r[1]) for r in table)
    print(f"{'benchmark':<{bench_width}} {'case':<{case_width}} {'seconds':>9} {'baseline':>9} {'ratio':>8}")
    for bench, case, sec, bsec, ratio in table:
        print(f"{bench:<{bench_width}} {case:<{case_width}} {sec:>9.4f} {_num(bsec, '.4f'):>9} "
              f"{_num(ratio, '.3f'):>8}")


def write_rows(path: Path, rows) -> Path:
    """The rows as CSV with :data:`COLUMNS`, atomically."""
    lines = [",".join(COLUMNS)]
    for bench, case, sec, bsec, ratio in with_ratios(rows):
        lines.append(f'"{bench}","{case}",{sec:.6f},{_num(bsec, ".6f")},{_num(ratio, ".4f")}')
    path = write_text_atomic(Path(path), "\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path
