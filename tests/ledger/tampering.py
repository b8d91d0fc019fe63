"""A database administrator with bad intentions, on either store (``tests.stores.sql``).

Unlike ``tests.ledger.tamper`` (SQLite files), every helper takes a ledger URL, and each
covers its tracks as far as the tables allow: a deleted run takes its projection rows and
its share of the daily spend with it, a re-chained run gets every hash and its head
recomputed. What is left to find it is what ``charter verify`` is for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from charter.ledger.chain import GENESIS, event_hash
from charter.primitives import canonical
from tests.stores import sql


def delete_run(url: str, run_id: str) -> None:
    """Remove a run entirely: events, projections, its row, and its spend in the roll-up."""
    for contract_name, day, calls, cost in sql(
        url,
        "SELECT contract_name, substr(at, 1, 10), count(*), sum(cost_usd) FROM model_calls "
        "WHERE run_id = ? GROUP BY contract_name, substr(at, 1, 10)",
        (run_id,),
    ):
        sql(
            url,
            "UPDATE model_spend_daily SET calls = calls - ?, cost_usd = cost_usd - ? "
            "WHERE contract_name = ? AND day = ?",
            (calls, cost, contract_name, day),
        )
    for table in ("events", "executed_actions", "reviews", "model_calls", "runs"):
        sql(url, f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def cut_tail(url: str, run_id: str, keep: int) -> None:
    """Delete every event after ``keep`` and move the run's head back to event ``keep``."""
    sql(url, "DELETE FROM events WHERE run_id = ? AND seq > ?", (run_id, keep))
    [(last_hash,)] = sql(
        url, "SELECT hash FROM events WHERE run_id = ? AND seq = ?", (run_id, keep)
    )
    sql(
        url,
        "UPDATE runs SET last_seq = ?, last_hash = ? WHERE run_id = ?",
        (keep, last_hash, run_id),
    )


def edit_event(url: str, run_id: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite one event's payload, leaving its hashes as they were."""
    [(data,)] = sql(url, "SELECT data FROM events WHERE run_id = ? AND seq = ?", (run_id, seq))
    payload = json.loads(data)
    change(payload)
    sql(
        url,
        "UPDATE events SET data = ? WHERE run_id = ? AND seq = ?",
        (canonical(payload), run_id, seq),
    )


def rechain(url: str, run_id: str) -> None:
    """Recompute every hash of a run and its head: a forger covering their tracks."""
    rows = sql(
        url, "SELECT seq, type, at, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    prev = GENESIS
    for seq, type_, at, data in rows:
        h = event_hash(prev, run_id, seq, type_, at, canonical(json.loads(data)))
        sql(
            url,
            "UPDATE events SET prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?",
            (prev, h, run_id, seq),
        )
        prev = h
    sql(
        url,
        "UPDATE runs SET last_seq = ?, last_hash = ? WHERE run_id = ?",
        (rows[-1][0], prev, run_id),
    )


def seq_of(url: str, run_id: str, type_: str, nth: int = 0) -> int:
    rows = sql(
        url, "SELECT seq FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, type_)
    )
    return int(rows[nth][0])
