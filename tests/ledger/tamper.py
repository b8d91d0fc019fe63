"""Editing a ledger behind Charter's back, as an attacker (or a bad disk) would."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charter.ledger.chain import GENESIS, event_hash
from charter.primitives import canonical


def execute(db: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return conn.execute(sql, params).rowcount
    finally:
        conn.close()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def edit_event(db: Path, run_id: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite one inline event's data (leaving its hashes alone)."""
    [(data,)] = query(db, "SELECT data FROM events WHERE run_id = ? AND seq = ?", (run_id, seq))
    payload = json.loads(data)
    change(payload)
    execute(
        db,
        "UPDATE events SET data = ? WHERE run_id = ? AND seq = ?",
        (canonical(payload), run_id, seq),
    )


def rechain(db: Path, run_id: str) -> None:
    """Recompute every hash of a run and its head: a forger covering their tracks."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        prev = GENESIS
        rows = conn.execute(
            "SELECT seq, type, at, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        for seq, type_, at, data in rows:
            h = event_hash(prev, run_id, seq, type_, at, canonical(json.loads(data)))
            conn.execute(
                "UPDATE events SET prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?",
                (prev, h, run_id, seq),
            )
            prev = h
        conn.execute(
            "UPDATE runs SET last_hash = ?, last_seq = ? WHERE run_id = ?",
            (prev, rows[-1][0], run_id),
        )
    finally:
        conn.close()


def seq_of(db: Path, run_id: str, type_: str, nth: int = 0) -> int:
    rows = query(
        db, "SELECT seq FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, type_)
    )
    return int(rows[nth][0])
