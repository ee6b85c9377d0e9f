"""Run hostile CLI cases one after another in this process, for ``tests/cli/test_hostile.py``.

``python hostile_runner.py CASES.json RESULTS.json LIMIT``: each case (``id``, ``argv``, ``out``) runs
through :func:`fxpsim.cli.main` with its stdout and stderr captured; the result records the exit status,
the stderr text, the seconds it took, the process's high-water RSS after it (MiB) and what is left in its
``out`` folder. A case still running after ``LIMIT`` seconds is stopped by SIGALRM (it then shows up as an
exit-70 internal error naming ``CaseTimeout``). The test starts this under an address-space limit
(RLIMIT_AS), so a case that allocates without a bound ends in a MemoryError here, not in the machine's swap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for peak_rss
from peak_rss import peak_rss_bytes


class CaseTimeout(Exception):
    """A case ran longer than the limit."""


def _alarm(signum, frame):  # noqa: ARG001 - signal handler API
    raise CaseTimeout("the case ran past its time limit")


def run(cases: list[dict], limit: float) -> dict:
    from fxpsim.cli import main

    signal.signal(signal.SIGALRM, _alarm)
    results = {}
    for case in cases:
        out, err = io.StringIO(), io.StringIO()
        t0 = time.process_time()  # CPU: wall time on a shared machine measures the other processes
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(case["argv"])
        except BaseException as exc:  # noqa: BLE001 - recorded; the next case still runs
            rc = f"raised {type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.process_time() - t0
        folder = Path(case["out"])
        results[case["id"]] = {
            "rc": rc, "stderr": err.getvalue(), "seconds": seconds,
            "rss_mib": peak_rss_bytes() / 2**20,  # not ru_maxrss: it holds the parent pytest's peak
            "left": sorted(p.name for p in folder.iterdir()) if folder.is_dir() else [],
        }
    return results


if __name__ == "__main__":
    cases_path, results_path, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    results = run(json.loads(Path(cases_path).read_text()), limit)
    Path(results_path).write_text(json.dumps(results))
    os._exit(0)  # no interpreter teardown: the results are written
