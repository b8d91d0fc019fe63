"""Executors and models that take time and say when: for leases, limits and shutdown tests.

They record what they did, with wall-clock times and the process id, in a table ``timing``
of the test's effects database (``$CHARTER_TEST_EFFECTS``), so that worker threads and
worker processes report to one place. ``$CHARTER_TEST_SLOW`` is how long each call takes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.execution.base import ExecutionContext
from charter.models.base import ModelRequest
from tests.runs.domain import EFFECTS_ENV
from tests.runs.domain import write as idempotent_write

SLOW_ENV = "CHARTER_TEST_SLOW"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS timing (n INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT, "
    "key TEXT, pid INTEGER, started REAL, ended REAL)"
)


def _record(what: str, key: str, started: float, ended: float | None) -> None:
    conn = sqlite3.connect(os.environ[EFFECTS_ENV], isolation_level=None, timeout=30)
    try:
        conn.execute(_SCHEMA)
        conn.execute(
            "INSERT INTO timing (what, key, pid, started, ended) VALUES (?,?,?,?,?)",
            (what, key, os.getpid(), started, ended),
        )
    finally:
        conn.close()


def slow_write(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """``write`` that takes ``$CHARTER_TEST_SLOW`` seconds, recording when it ran."""
    started = time.time()
    _record("start", ctx.idempotency_key, started, None)
    time.sleep(float(os.environ.get(SLOW_ENV, "0.2")))
    result = idempotent_write(args, ctx)
    _record("write", ctx.idempotency_key, started, time.time())
    return result


def timed_final(request: ModelRequest) -> dict[str, Any]:
    """A final answer at once; records the moment of the call."""
    now = time.time()
    _record("model", request.run_id, now, now)
    return {"final": {"ok": True}, "confidence": 0.95, "rationale": "done"}


@dataclass(frozen=True)
class Call:
    what: str
    key: str
    pid: int
    started: float
    ended: float | None


def calls(path: Path, what: str | None = None) -> list[Call]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        conn.execute(_SCHEMA)
        rows = conn.execute("SELECT what, key, pid, started, ended FROM timing ORDER BY n")
        return [Call(*r) for r in rows if what is None or r[0] == what]
    finally:
        conn.close()
