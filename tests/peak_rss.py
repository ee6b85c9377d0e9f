"""Peak resident memory of a process's own address space, for the hostile-input tests.

Linux carries a parent's peak RSS into ``ru_maxrss`` of a child across fork and exec, so a child of
a pytest process that has grown past 500 MB reports at least that much whatever it used itself.
``VmHWM`` in /proc/self/status belongs to the address space the child built after exec.

``python tests/peak_rss.py OUT -m MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this process
and writes its peak RSS in bytes to OUT when it exits.
"""

from __future__ import annotations

import resource


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    import atexit
    import runpy
    import sys
    from pathlib import Path

    out, flag, module = sys.argv[1], sys.argv[2], sys.argv[3]
    assert flag == "-m", "usage: python tests/peak_rss.py OUT -m MODULE ARGS..."
    atexit.register(lambda: Path(out).write_text(str(peak_rss_bytes())))
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
