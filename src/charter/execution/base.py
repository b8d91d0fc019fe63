"""The contract between the runtime and an executor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionContext:
    """Passed to every executor call.

    ``idempotency_key`` is stable for one action of one run (``<run_id>:<step>``): an
    executor retried after a crash receives the same key and must not apply its effect
    twice (e.g. a UNIQUE constraint on the key, or the ``Idempotency-Key`` HTTP header).
    """

    run_id: str
    step: int
    action: str
    idempotency_key: str
    attempt: int = 1
    compensation: bool = False
