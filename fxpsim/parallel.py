"""Independent evaluations of a search, run in order on one process, a process pool or Dask (issue 18).

A search hands :meth:`Parallel.map` a module-level function ``fn(shared, item)``, the items
and one ``shared`` value (what every task needs: the model, the calibration arrays, the
profile: :class:`EvalSetup`). ``shared`` ships once per worker (the pool's initializer,
Dask's broadcast scatter); each task ships only its item (a frozen config, a bit count).
Results come back in the items' order, so a report is the same bytes for any ``jobs``.
Workers run one Numba and one BLAS thread (:data:`WORKER_ENV`, set before they import
NumPy or Numba): N single-threaded processes beat one oversubscribed one (PERF-NOTES).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
from dataclasses import dataclass

from .errors import FxpsimError, check

__all__ = ["EvalSetup", "Parallel", "SERIAL", "WORKER_ENV", "close", "evaluator_of", "one_thread"]

WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}
"""The environment of every worker process (a remote Dask worker must be started with it)."""

MAX_JOBS = 1024
_TCP = re.compile(r"tcp://[A-Za-z0-9._-]+:\d{1,5}")


@contextlib.contextmanager
def _worker_env():
    """:data:`WORKER_ENV` in ``os.environ`` while workers are spawned (they inherit it at start)."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_thread():
    """Numba kernels on one thread here, as in a worker (:data:`WORKER_ENV`), while the context
    lasts: a search's calls are small, and on a busy 2-core machine each kernel that woke a second
    thread waited for it (the digits CNN's acc table: 3.4x the CPU time, docs/PERFORMANCE.md).
    The bits do not change."""
    from .datapath.core import threads_for

    return threads_for(0)  # no work: below its threshold, so one thread


_SHARED: dict = {}
"""Per pool worker process: the ``shared`` value of the running map."""
_BUILT: dict = {}
"""Per worker process: what :func:`evaluator_of` built, by setup (the setup kept alive with it)."""


def _init(shared) -> None:
    _SHARED.clear()
    _SHARED["shared"] = shared


def _pool_call(task):
    fn, item = task
    return fn(_SHARED["shared"], item)


def _dask_call(fn, shared, item):
    return fn(shared, item)


@dataclass(frozen=True, slots=True)
class Parallel:
    """Where a search's independent evaluations run: ``jobs`` processes (1: here, in order), or
    Dask distributed with ``scheduler`` ``"local"`` (a LocalCluster of ``jobs`` workers) or
    ``"tcp://host:port"`` (a running scheduler; its workers)."""

    jobs: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.jobs, int) and not isinstance(self.jobs, bool) and 1 <= self.jobs <= MAX_JOBS,
              f"jobs={self.jobs!r} must be a whole number of worker processes, 1 to {MAX_JOBS}, e.g. 2")
        check(self.scheduler is None or self.scheduler == "local" or _TCP.fullmatch(self.scheduler) is not None,
              f"scheduler={self.scheduler!r} is not 'local' or tcp://HOST:PORT (a running Dask scheduler), "
              "e.g. tcp://10.0.0.5:8786")

    @property
    def serial(self) -> bool:
        return self.jobs == 1 and self.scheduler is None

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"Dask {self.scheduler}" + (f" ({self.jobs} workers)" if self.scheduler == "local" else "")
        return "1 process" if self.serial else f"{self.jobs} processes"

    def map(self, fn, items, shared) -> list:
        """``[fn(shared, item) for item in items]``, the same list wherever it runs; ``fn`` must be a
        module-level function (workers import it by name)."""
        items = list(items)
        if self.serial or len(items) <= 1:
            return [fn(shared, item) for item in items]
        if self.scheduler is None:
            return self._pool(fn, items, shared)
        return self._dask(fn, items, shared)

    def _pool(self, fn, items, shared) -> list:
        return list(_open(self, shared).map(_pool_call, [(fn, item) for item in items]))

    def _dask(self, fn, items, shared) -> list:
        client, fut = _open(self, shared)
        return client.gather([client.submit(_dask_call, fn, fut, item, pure=False) for item in items])


_OPEN: dict = {}
"""The one open pool (or Dask client) and the ``shared`` value its workers hold: a search that maps
layer after layer with the same setup starts its workers once."""


def _open(par: Parallel, shared):
    key = (par, id(shared))
    if _OPEN.get("key") != key:
        close()
        _OPEN.update(key=key, shared=shared, handle=_start(par, shared))
    return _OPEN["handle"][0]


def close() -> None:
    """Shut the open pool or Dask client down (also at exit)."""
    handle = _OPEN.pop("handle", None)
    _OPEN.clear()
    if handle is not None:
        if isinstance(handle[0], tuple):  # Dask: release the scattered setup before the workers go
            handle[0][1].release()
        handle[1].close()


def _start(par: Parallel, shared):
    """``(pool or (client, scattered shared), ExitStack that closes it)``."""
    stack = contextlib.ExitStack()
    if par.scheduler is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with _worker_env():
            pool = ProcessPoolExecutor(par.jobs, multiprocessing.get_context("spawn"), initializer=_init,
                                       initargs=(shared,))
            for f in [pool.submit(int) for _ in range(par.jobs)]:  # spawn every worker now, in that env
                f.result()
        stack.callback(pool.shutdown)
        return pool, stack
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise FxpsimError(f"--scheduler {par.scheduler} needs Dask distributed: pip install "
                          "'fxpsim[dist]' (or run with --jobs N, a local process pool)") from None
    if par.scheduler == "local":
        with _worker_env():
            cluster = stack.enter_context(LocalCluster(n_workers=par.jobs, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
        client = stack.enter_context(Client(cluster))
    else:
        try:
            client = stack.enter_context(Client(par.scheduler, timeout=10))
        except OSError as exc:
            raise FxpsimError(f"--scheduler {par.scheduler}: no Dask scheduler answers there ({exc}): start "
                              "one (dask scheduler; dask worker ADDRESS) or use --scheduler local") from None
    return (client, client.scatter(shared, broadcast=True)), stack


atexit.register(close)


SERIAL = Parallel()


@dataclass(frozen=True, eq=False)
class EvalSetup:
    """What a worker needs to rebuild a search's :class:`~fxpsim.simulate.Evaluator`: the model,
    the prepared calibration inputs and labels, the simulator's seed, ``prefix_stats`` and the
    profile the search uses (sent once per worker: about the model file plus ``x.nbytes``)."""

    model: object
    x: object
    y: object
    seed: int
    prefix_stats: bool
    prof: list

    @classmethod
    def of(cls, ev, prof) -> EvalSetup:
        """The setup of ``ev`` (a plain :class:`~fxpsim.simulate.Simulator` on the default backend)."""
        from .datapath import dense
        from .simulate import Simulator

        check(type(ev.sim) is Simulator and ev.sim.backend is dense,
              "a parallel search runs on the plain Simulator with the dense kernels: use jobs=1 for a "
              "Simulator subclass or another backend")
        kept, kept_prof = getattr(ev, "_setup", (None, [None]))  # one per evaluator and profile: the
        if kept is None or kept_prof[0] is not prof:                # open pool is reused
            model, prof_copy = _without_caches(ev.sim.model, prof)
            kept = cls(model, ev.x, ev.y, ev.sim.seed, ev.prefix_stats, prof_copy)
            kept_prof[0] = prof
            ev._setup = (kept, kept_prof)
        return kept

    @property
    def nbytes(self) -> int:
        """Bytes shipped once per worker (pickled)."""
        import pickle

        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


def _without_caches(model, prof):
    """Copies of ``model`` and ``prof`` without the layers' forward caches (the float trace leaves
    the calibration activations there: ~46 MB on the digits CNN, against 160 kB of weights)."""
    import copy

    layers = getattr(getattr(model, "network", model), "layers", ())
    memo = {id(c): None for c in (getattr(layer, "_cache", None) for layer in layers) if c is not None}
    return copy.deepcopy((model, list(prof)), memo)


def evaluator_of(setup: EvalSetup):
    """The worker's Evaluator for ``setup``: built on first use, then kept (its caches too)."""
    key = id(setup)
    if key not in _BUILT:
        from .simulate import Evaluator, Simulator

        if len(_BUILT) >= 4:  # a long-lived Dask worker: keep the newest few
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = (Evaluator(Simulator(setup.model, seed=setup.seed), setup.x, setup.y, prepared=True,
                                  prefix_stats=setup.prefix_stats), setup)
    return _BUILT[key][0]
