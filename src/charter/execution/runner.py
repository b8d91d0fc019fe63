"""Calling an executor with a deadline, so one hung call cannot hold its run forever.

A Python callable cannot be interrupted from outside, so the call runs on a helper thread
and the worker waits for it at most the action's ``timeout``. A call that outlives it is
abandoned: its thread keeps running in the background (a daemon, so it never keeps the
process alive) and the worker records a timed-out attempt, to be retried with the *same*
idempotency key — whether the abandoned call applied its effect is unknown, which is
exactly the case idempotency keys exist for. The next call gets a fresh thread.

Everything an executor raises is returned to the worker as an :class:`ExecutorRaisedError`,
including ``SystemExit`` and ``KeyboardInterrupt``: an executor that calls ``sys.exit()``
fails its action instead of taking the worker down with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ExecutorTimeoutError(Exception):
    """The call did not return within its deadline (it may still be running)."""


class ExecutorRaisedError(Exception):
    """The call raised; ``error`` is what it raised (any BaseException)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


@dataclass
class _Job:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            job.result = job.fn()
        except BaseException as exc:  # the executor's own, reported to the worker
            job.error = exc
        job.done.set()


class CallRunner:
    """One helper thread that runs calls one at a time; replaced when a call hangs.

    Used by one worker thread at a time (each :class:`~charter.runs.runtime.Runtime` has
    its own). Handing a call to a waiting thread costs tens of microseconds, not a thread
    start per action.
    """

    def __init__(self, name: str = "charter-executor") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()``'s result; :class:`ExecutorTimeoutError` after ``timeout`` seconds;
        :class:`ExecutorRaisedError` wrapping whatever ``fn`` raised."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(self._jobs,), name=self._name, daemon=True
            ).start()
        job = _Job(fn)
        self._jobs.put(job)
        if not job.done.wait(timeout):
            # abandon the stuck thread: it ends on its own if the call ever returns
            self._jobs.put(None)
            self._jobs = None
            raise ExecutorTimeoutError(f"did not return within {timeout:g}s")
        if job.error is not None:
            raise ExecutorRaisedError(job.error)
        return job.result

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None
