"""The ``model_calls`` projection: spend by window, the prompt-hash index, old ledgers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from charter.errors import NotFoundError
from charter.ledger.events import ModelCalled, RunSubmitted
from charter.ledger.sqlite import SQLiteStore
from charter.runs.spend import window


def called(cost: float, prompt_hash: str, step: int = 1, **extra: object) -> ModelCalled:
    return ModelCalled(
        step=step,
        attempt=1,
        provider="openai",
        model="gpt-4o",
        params={},
        seed=None,
        prompt_hash=prompt_hash,
        prompt="p",
        raw_output="{}",
        input_tokens=100,
        output_tokens=10,
        cost_usd=cost,
        latency_ms=1.0,
        **extra,  # type: ignore[arg-type]
    )


def new_run(store: SQLiteStore, run_id: str, name: str, at: str) -> None:
    store.save_bundle("h" * 64, f"{name}@1", {"contract": {"file": "x", "data": {}}, "packs": []})
    store.create_run(
        run_id,
        contract=f"{name}@1",
        contract_name=name,
        policy_hash="h" * 64,
        idempotency_key=None,
        event=RunSubmitted(f"{name}@1", "c" * 64, "h" * 64, {}),
        at=at,
    )


def test_spend_is_summed_per_contract_and_window(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db")
    new_run(store, "run_a", "ops", "2026-03-01T23:00:00.000000Z")
    new_run(store, "run_b", "other", "2026-03-02T01:00:00.000000Z")
    store.append("run_a", [called(0.25, "aa11")], expected_seq=1, at="2026-03-01T23:59:59.999999Z")
    store.append(
        "run_a", [called(0.5, "aa22", 2)], expected_seq=2, at="2026-03-02T00:00:00.000000Z"
    )
    store.append("run_b", [called(2.0, "bb11")], expected_seq=1, at="2026-03-02T01:00:00.000000Z")
    assert store.spend("ops", "2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z") == 0.5
    assert store.spend("ops", "2026-03-01T00:00:00.000000Z", "2026-04-01T00:00:00.000000Z") == 0.75
    assert store.spend("nobody", "", "9") == 0.0
    # whole days come from the daily roll-up, other windows from the calls: they agree
    assert store.spend("ops", "2026-03-01T23:00:00.000001Z", "2026-03-02T00:00:00.000001Z") == 0.75
    assert store.conn.execute(
        "SELECT contract_name, day, calls, cost_usd FROM model_spend_daily ORDER BY 1, 2"
    ).fetchall() == [
        ("ops", "2026-03-01", 1, 0.25),
        ("ops", "2026-03-02", 1, 0.5),
        ("other", "2026-03-02", 1, 2.0),
    ]
    rows = store.model_spend(since="2026-03-02T00:00:00.000000Z")
    assert [(r["contract"], r["calls"], r["cost_usd"]) for r in rows] == [
        ("ops", 1, 0.5),
        ("other", 1, 2.0),
    ]
    # the spend query uses the index, not a scan
    plan = store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT sum(cost_usd) FROM model_calls WHERE contract_name = ? AND at >= ? AND at < ?",
        ("ops", "a", "b"),
    ).fetchall()
    assert "model_calls_spend" in str(plan)
    store.close()


def test_calendar_windows() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert window("day", at) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert window("month", at) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_prompt_hash_lookup_takes_the_latest_and_refuses_ambiguous_prefixes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db")
    new_run(store, "run_a", "ops", "2026-03-01T00:00:00.000000Z")
    store.append(
        "run_a",
        [called(0.1, "abc1"), called(0.1, "abd2", 2)],
        expected_seq=1,
        at="2026-03-01T01:00:00.000000Z",
    )
    store.append(
        "run_a", [called(0.1, "abc1", 3)], expected_seq=3, at="2026-03-01T02:00:00.000000Z"
    )
    assert store.find_model_call("abc1") == ("run_a", 4)
    assert store.find_model_call("abd") == ("run_a", 3)
    assert store.find_model_call("ffff") is None
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.find_model_call("ab")
    store.close()


def test_a_ledger_from_before_migration_2_is_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path, payload_cap=300)  # the big call below is stored by reference
    new_run(store, "run_a", "ops", "2026-03-01T00:00:00.000000Z")
    store.append("run_a", [called(0.2, "aa")], expected_seq=1, at="2026-03-01T01:00:00.000000Z")
    big = ModelCalled(**{**called(0.3, "bb", 2).__dict__, "prompt": "x" * 1000})
    store.append("run_a", [big], expected_seq=2, at="2026-03-01T02:00:00.000000Z")
    store.close()
    # make it an old ledger: no model_calls table, migration 2 not applied
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE model_calls")
    conn.execute("DROP TABLE model_spend_daily")
    conn.execute("DELETE FROM charter_migrations WHERE version = 2")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] >= 1
    conn.close()
    reopened = SQLiteStore(path)
    assert reopened.spend("ops", "2026-03-01", "2026-03-02") == pytest.approx(0.5)
    assert reopened.find_model_call("bb") == ("run_a", 3)
    day = ("2026-03-01T00:00:00.000000Z", "2026-03-02T00:00:00.000000Z")
    assert reopened.spend("ops", *day) == pytest.approx(0.5)  # the roll-up was backfilled too
    reopened.close()
