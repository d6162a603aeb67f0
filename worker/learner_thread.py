"""A worker's learner thread: batches learned one after another, in the order they were handed over.

What ``ThreadPoolExecutor(max_workers=1)`` did, without its process-wide lock: every ``submit`` of
every executor in a process takes one module lock (``_global_shutdown_lock``), and the first one
starts the executor's thread while holding it. A pool of 100 models (one learner thread each,
200 threads taking turns at the GIL) queued on that lock: its threads spent ~30 % of their time
in ``submit`` in the first seconds (py-spy), long enough for leases to expire (issue 15). Here the
thread starts with the worker, and a batch is handed over through a ``queue.SimpleQueue`` (one C
call, no Python-level lock).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[[], Any]]


class LearnerThread:
    """One thread running the calls handed to ``submit``, first in first out; ``shutdown()`` ends it."""

    def __init__(self, name: str = "digitstream-learner") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` after the calls submitted before; its result (or exception) in the future."""
        future: Future[T] = Future()
        self._jobs.put((future, functools.partial(fn, *args)))
        return future

    def shutdown(self) -> None:
        """Finish the calls submitted so far, then end the thread (and wait for it)."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the waiting worker, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)


__all__ = ["LearnerThread"]
