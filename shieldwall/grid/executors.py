"""Where a grid's cells run: the :class:`Executor` contract and its three implementations.

An executor runs independent tasks ``fn(payload)`` and reports each one's outcome; it knows
nothing of matrices, configs or retries (those live in :mod:`shieldwall.grid.runner`). The
contract is three calls:

- ``capacity(resources)``: how many tasks needing ``resources`` fit at once right now (the
  runner keeps at most that many in flight, so "running" in the progress line means running);
- ``submit(key, fn, payload, resources)``: start one task;
- ``as_completed()``: yield ``(key, outcome)`` as tasks finish, where ``outcome`` is the task's
  return value, a :class:`WorkerDied` (the process or node running it went away: worth one
  retry) or a :class:`CellError` (the task raised: deterministic, not retried). Tasks submitted
  while iterating are picked up by the same iteration.

Implementations: :class:`LocalProcessExecutor` (spawned processes on this machine, the default
and what ``matrix --jobs`` always did), :class:`RayExecutor` (one Ray task per cell, resources
declared as ``num_cpus``/``num_gpus``; Ray's own retries are off so that retry counting is the
runner's) and :class:`DaskExecutor` (``distributed.Client.submit``; note that the Dask scheduler
itself reschedules a task whose worker died up to ``distributed.scheduler.allowed-failures``
times before the runner sees ``KilledWorker``). Ray and Dask are optional (``pip install
shieldwall[cluster]``) and imported only when their executor is built.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

__all__ = [
    "EXECUTORS", "CellError", "DaskExecutor", "Executor", "LocalProcessExecutor", "RayExecutor",
    "Resources", "WorkerDied", "build_executor",
]

EXECUTORS = ("local", "ray", "dask")


@dataclass(frozen=True)
class Resources:
    """What one task needs from the node that runs it."""

    num_cpus: float = 1.0
    """CPU cores (a cell runs torch with one thread, so 1 unless the config asks for more)."""
    num_gpus: float = 0.0
    """GPUs; a fraction (0.25) packs several cells onto one GPU. 0 for CPU cells."""

    def __post_init__(self) -> None:
        if not (self.num_cpus > 0 and math.isfinite(self.num_cpus)):
            raise ValueError(f"num_cpus must be a positive number, got {self.num_cpus}")
        if not (0 <= self.num_gpus and math.isfinite(self.num_gpus)):
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus}")


class WorkerDied(Exception):
    """The worker process (or its node) running a task went away; the task may be retried."""


class CellError(Exception):
    """The task itself raised; rerunning it would raise again."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Executor(ABC):
    """Runs independent tasks; see the module docstring for the contract."""

    name: str = "?"

    @abstractmethod
    def capacity(self, resources: Resources) -> int: ...

    @abstractmethod
    def submit(
        self, key: str, fn: Callable[[Any], Any], payload: Any, resources: Resources
    ) -> None: ...

    @abstractmethod
    def as_completed(self) -> Iterator[tuple[str, Any]]: ...

    def close(self) -> None:
        """Release what the executor started (processes, a private cluster)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exit_with_parent(parent: int, period: float = 1.0) -> None:
    """Pool initializer: end this worker process within ``period`` seconds of its parent's death.

    Without it, killing a grid's driver (``kill PID``, a scheduler's SIGTERM, an OOM kill) leaves
    its workers running their cells to the end, unseen, holding the cells' run directories and
    the cores a restarted grid needs. A daemon thread polls ``os.getppid()``: a worker whose
    parent has gone is re-parented, and exits at once as ``kill -9`` would; the cell's last
    checkpoint is on disk and its run-directory lock dies with the process.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        os._exit(143)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _unguarded_main_hint() -> str:
    """A hint when the driver is a script without a ``__main__`` guard: spawned workers
    re-import it, run its grid again and die while starting."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        source = Path(path).read_text() if path else ""
    except OSError:
        return ""
    if not source or "__main__" in source:
        return ""
    return (f"; {path} has no `if __name__ == \"__main__\":` guard, and spawned workers "
            "re-import it: put the code that runs the grid under one")


class LocalProcessExecutor(Executor):
    """``jobs`` spawned processes on this machine, reused across tasks.

    A process that dies breaks the whole :class:`~concurrent.futures.ProcessPoolExecutor`: every
    task in flight at that moment is reported as :class:`WorkerDied` and the pool is rebuilt.
    Workers end with the driver (:func:`exit_with_parent`).
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Any, str] = {}

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=get_context("spawn"),
                initializer=exit_with_parent, initargs=(os.getpid(),),
            )
        return self._pool

    def capacity(self, resources: Resources) -> int:
        return max(1, int(self.jobs // max(resources.num_cpus, 1.0)))

    def submit(self, key, fn, payload, resources):
        try:
            fut = self._get_pool().submit(fn, payload)
        except BrokenProcessPool:  # broken between two waits: start a fresh pool
            self._reset()
            fut = self._get_pool().submit(fn, payload)
        self._futures[fut] = key

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def as_completed(self):
        while self._futures:
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            for fut in done:
                key = self._futures.pop(fut)
                exc = fut.exception()
                if exc is None:
                    yield key, fut.result()
                elif isinstance(exc, BrokenProcessPool):  # the next submit() rebuilds the pool
                    yield key, WorkerDied(f"a local worker process died ({_describe(exc)})"
                                          + _unguarded_main_hint())
                else:
                    yield key, CellError(_describe(exc))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """One Ray task per cell on the cluster at ``address``.

    ``address``: ``"auto"`` (the cluster this node belongs to, started with ``ray start``),
    ``"HOST:PORT"`` (the head's GCS address), or ``None``/``"local"`` (a private single-node
    instance started for this run and shut down at :meth:`close`). When Ray is already
    initialised in this process (tests), that connection is used as is.
    """

    name = "ray"

    def __init__(self, address: str | None = "auto") -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError(
                "--executor ray needs Ray: pip install 'shieldwall[cluster]' (or 'ray')"
            ) from exc
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            try:
                # "local" always starts a private instance (None would join a cluster that
                # `ray start` left on this machine).
                ray.init(address="local" if address in (None, "local") else address,
                         include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise ValueError(
                    f"no Ray cluster at --address {address}: start one with `ray start --head` "
                    f"(then join workers), or use --address local; a cluster with token "
                    f"authentication needs RAY_AUTH_MODE=token and its token here ({exc})"
                ) from exc
            self._owns = True
        self._remote = ray.remote(_call_payload)
        self._refs: dict[Any, str] = {}

    def capacity(self, resources: Resources) -> int:
        total = self._ray.cluster_resources()
        slots = int(total.get("CPU", 0) // resources.num_cpus)
        if resources.num_gpus > 0:
            slots = min(slots, int(total.get("GPU", 0) // resources.num_gpus))
        return max(1, slots)

    def submit(self, key, fn, payload, resources):
        ref = self._remote.options(
            num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0,
            retry_exceptions=False, name=f"shieldwall-cell:{key}",
        ).remote(fn, payload)
        self._refs[ref] = key

    def as_completed(self):
        exceptions = self._ray.exceptions
        while self._refs:
            ready, _ = self._ray.wait(list(self._refs), num_returns=1)
            for ref in ready:
                key = self._refs.pop(ref)
                try:
                    value = self._ray.get(ref)
                except exceptions.RayTaskError as exc:  # the cell raised
                    cause = getattr(exc, "cause", None)
                    yield key, CellError(_describe(cause) if cause is not None else _describe(exc))
                except exceptions.RayError as exc:  # worker/node died, object lost, OOM kill
                    yield key, WorkerDied(_describe(exc))
                else:
                    yield key, value

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()
            self._owns = False


class DaskExecutor(Executor):
    """One Dask future per cell on the ``distributed`` scheduler at ``scheduler`` (HOST:PORT).

    A GPU cell asks for the abstract resource ``GPU`` (start such workers with
    ``dask worker ... --resources GPU=1``); CPU cells ask for nothing and fill worker threads.
    """

    name = "dask"

    def __init__(self, scheduler: str) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ValueError(
                "--executor dask needs Dask: pip install 'shieldwall[cluster]' "
                "(or 'dask distributed')"
            ) from exc
        if not scheduler:
            raise ValueError("--executor dask needs --scheduler HOST:PORT")
        address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
        try:
            self._client = Client(address, timeout="30s")
        except OSError as exc:  # TimeoutError, connection refused
            raise ValueError(f"no Dask scheduler at --scheduler {scheduler} ({exc})") from exc
        self._futures: dict[Any, str] = {}

    def capacity(self, resources: Resources) -> int:
        threads = sum(self._client.nthreads().values())
        return max(1, int(threads // resources.num_cpus))

    def submit(self, key, fn, payload, resources):
        import uuid

        extra = {"resources": {"GPU": resources.num_gpus}} if resources.num_gpus > 0 else {}
        fut = self._client.submit(fn, payload, key=f"shieldwall-cell-{key}-{uuid.uuid4().hex}",
                                  pure=False, retries=0, **extra)
        self._futures[fut] = key

    def as_completed(self):
        from distributed import KilledWorker
        from distributed import wait as dwait

        while self._futures:
            done, _ = dwait(list(self._futures), return_when="FIRST_COMPLETED")
            for fut in done:
                key = self._futures.pop(fut)
                if fut.status == "finished":
                    yield key, fut.result()
                    continue
                exc = fut.exception()
                if isinstance(exc, KilledWorker):
                    yield key, WorkerDied(_describe(exc))
                else:
                    yield key, CellError(_describe(exc))

    def close(self) -> None:
        self._client.close()


def _call_payload(fn: Callable[[Any], Any], payload: Any) -> Any:
    return fn(payload)


def build_executor(
    name: str, *, jobs: int = 1, address: str | None = "auto", scheduler: str | None = None
) -> Executor:
    """``local`` (``jobs`` processes), ``ray`` (cluster at ``address``) or ``dask``."""
    if name == "local":
        return LocalProcessExecutor(jobs)
    if name == "ray":
        return RayExecutor(address)
    if name == "dask":
        return DaskExecutor(scheduler or "")
    raise ValueError(f"unknown --executor {name!r}; choose one of {', '.join(EXECUTORS)}")
