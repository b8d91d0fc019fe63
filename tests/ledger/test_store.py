"""The SQLite store: opening, migrations, bad files, appends, leases, and count() by index."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from charter.errors import ConflictError, NotFoundError, StoreError
from charter.ledger.events import RunCancelled
from charter.ledger.migrations import MIGRATIONS
from charter.ledger.sqlite import SQLiteStore
from charter.ledger.store import open_store
from charter.runs.runtime import Runtime
from tests.ledger.tamper import execute, query
from tests.runs.domain import PROFILE_EMAIL, Clock, Effects, contract


# -- opening ------------------------------------------------------------------------------
def test_a_new_ledger_is_created_at_the_latest_schema(db: Path) -> None:
    store = open_store(str(db))
    assert isinstance(store, SQLiteStore)
    assert store.schema_version() == max(m.version for m in MIGRATIONS)
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    store.close()
    again = open_store(f"sqlite:///{db}")
    assert again.schema_version() == store.schema_version()
    assert query(db, "SELECT count(*) FROM charter_migrations") == [(len(MIGRATIONS),)]


def test_the_database_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    store = open_store()
    assert store.url == f"sqlite:///{tmp_path / 'env.db'}"
    assert (tmp_path / "env.db").exists()


def test_a_missing_ledger_is_not_created_by_read_commands(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreError, match=r"no ledger at .*nope\.db; start a run first"):
        open_store(str(missing), create=False)
    assert not missing.exists()


def test_a_ledger_in_a_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"directory .* does not exist"):
        open_store(str(tmp_path / "no" / "such" / "ledger.db"))


def test_unsupported_database_urls_are_reported() -> None:
    with pytest.raises(StoreError, match=r"unsupported database URL 'mysql://db/charter'"):
        open_store("mysql://db/charter")


def test_a_file_of_garbage_is_reported_as_not_a_ledger(db: Path) -> None:
    db.write_bytes(b"\x00\x13garbage, not a database " * 400)
    with pytest.raises(StoreError, match=r"is not a usable Charter ledger .*corrupted"):
        open_store(str(db))
    with pytest.raises(StoreError, match="is not a usable Charter ledger"):
        open_store(str(db), create=False)


def test_a_ledger_corrupted_after_use_is_reported(rt: Runtime, db: Path) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.run(run_id)
    rt.store.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    raw = bytearray(db.read_bytes())
    raw[100:] = b"\xde\xad\xbe\xef" * ((len(raw) - 100) // 4) + b"\x00" * ((len(raw) - 100) % 4)
    db.write_bytes(bytes(raw))
    with pytest.raises(StoreError) as info:
        store = open_store(str(db), create=False)
        store.events(run_id)
    assert str(db) in str(info.value)
    assert "malformed" in str(info.value) or "not a usable" in str(info.value)


def test_a_ledger_newer_than_the_code_is_refused(db: Path) -> None:
    open_store(str(db)).close()
    execute(db, "INSERT INTO charter_migrations VALUES (99, 'from the future', 'x')")
    with pytest.raises(StoreError, match="schema version 99, newer than this Charter supports"):
        open_store(str(db))


# -- appends and leases -------------------------------------------------------------------
def test_appends_are_optimistic_and_fenced_by_the_lease(
    rt: Runtime, db: Path, clock: Clock
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    store = rt.store
    with pytest.raises(ConflictError, match="moved on"):
        store.append(run_id, [RunCancelled("x", "y")], expected_seq=0, at="t")
    leased = store.claim_run(run_id, "w1", "2026-03-02T10:15:00Z", "2026-03-02T10:16:00Z")
    assert leased is not None and leased.epoch == 1
    with pytest.raises(ConflictError, match="taken over"):
        store.append(run_id, [RunCancelled("x", "y")], expected_seq=1, at="t", epoch=0)
    assert store.get_run(run_id).last_seq == 1
    # another worker cannot take a live lease, can take an expired one
    assert store.claim_run(run_id, "w2", "2026-03-02T10:15:30Z", "2026-03-02T10:17:00Z") is None
    assert store.claim("w2", "2026-03-02T10:15:30Z", "2026-03-02T10:17:00Z") is None
    taken = store.claim("w2", "2026-03-02T10:16:01Z", "2026-03-02T10:17:00Z")
    assert taken is not None and (taken.lease_owner, taken.epoch) == ("w2", 2)
    # the old holder can neither renew nor release it any more
    assert not store.renew(run_id, "w1", 1, "2026-03-02T11:00:00Z")
    store.release(run_id, "w1", 1)
    assert store.get_run(run_id).lease_owner == "w2"
    assert store.renew(run_id, "w2", 2, "2026-03-02T11:00:00Z")
    store.release(run_id, "w2", 2)
    assert store.get_run(run_id).lease_owner is None


def test_runs_are_found_by_unambiguous_prefix(rt: Runtime) -> None:
    c = contract()
    ids = [rt.submit(c, {"item": str(n)}) for n in range(3)]
    assert rt.store.find_run(ids[0]).run_id == ids[0]
    assert rt.store.find_run(ids[1][:16]).run_id == ids[1]
    with pytest.raises(NotFoundError, match="ambiguous"):
        rt.store.find_run("run_")
    with pytest.raises(NotFoundError, match="no run run_zzz; `charter run list`"):
        rt.store.find_run("run_zzz")
    with pytest.raises(NotFoundError, match="no review rv_zzz"):
        rt.store.get_review("rv_zzz")


# -- count() ------------------------------------------------------------------------------
def test_count_is_answered_by_the_executed_actions_index(rt: Runtime, db: Path) -> None:
    statements: list[str] = []
    assert isinstance(rt.store, SQLiteStore)
    rt.store.conn.set_trace_callback(statements.append)
    rt.store.count_executed(
        "send_email", {"to": "a@b.c"}, "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"
    )
    rt.store.conn.set_trace_callback(None)
    [sql] = [s for s in statements if "executed_actions" in s]
    plan = query(db, "EXPLAIN QUERY PLAN " + sql)
    assert any("USING INDEX executed_by_action" in row[-1] for row in plan), plan


def email_run(rt: Runtime, to: str) -> str:
    run_id = rt.submit(contract(script="email_then_finish"), {"item": "mail", "to": to})
    assert rt.run(run_id).status == "completed"
    return run_id


def email_decision(rt: Runtime, run_id: str) -> dict[str, object]:
    from charter.ledger.events import ActionDecided

    [d] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionDecided)]
    return d.decision


def test_a_rate_rule_denies_the_fourth_email_in_an_hour_across_runs(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    first = [email_run(rt, PROFILE_EMAIL) for _ in range(3)]
    assert [email_decision(rt, r)["effect"] for r in first] == ["allow"] * 3
    assert [email_decision(rt, r)["counts"][0][-1] for r in first] == [0, 1, 2]

    fourth = email_run(rt, PROFILE_EMAIL)
    decision = email_decision(rt, fourth)
    assert decision["effect"] == "deny" and decision["rules"] == ["email-rate"]
    assert decision["counts"] == [
        [
            "send_email",
            {"to": PROFILE_EMAIL},
            "2026-03-02T09:15:00.000000Z",
            "2026-03-02T10:15:00.000000Z",
            3,
        ]
    ]
    assert len([a for _, a, _ in effects.applied() if a == "send_email"]) == 3

    # another recipient has its own count; an hour later the window has moved on
    assert email_decision(rt, email_run(rt, "bob@example.com"))["effect"] == "allow"
    clock.advance(timedelta(hours=1, seconds=1))
    assert email_decision(rt, email_run(rt, PROFILE_EMAIL))["effect"] == "allow"


def test_count_matches_args_exactly(rt: Runtime, db: Path, effects: Effects) -> None:
    email_run(rt, PROFILE_EMAIL)
    store = rt.store
    window = ("2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z")
    assert store.count_executed("send_email", {}, *window) == 1
    assert store.count_executed("send_email", {"to": PROFILE_EMAIL}, *window) == 1
    assert store.count_executed("send_email", {"to": PROFILE_EMAIL.upper()}, *window) == 0
    assert store.count_executed("send_email", {"body": "hello", "to": PROFILE_EMAIL}, *window) == 1
    assert store.count_executed("send_email", {"missing": None}, *window) == 0
    assert store.count_executed("write", {}, *window) == 0
    assert (
        store.count_executed("send_email", {}, "2026-03-03T00:00:00Z", "2026-03-04T00:00:00Z") == 0
    )


def test_count_matches_numbers_and_nested_values(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.run(run_id)
    window = ("2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z")
    assert rt.store.count_executed("write", {"qty": 2}, *window) == 1
    assert rt.store.count_executed("write", {"qty": 2.0}, *window) == 1
    assert rt.store.count_executed("write", {"qty": "2"}, *window) == 0
    assert rt.store.count_executed("write", {"item": "bolt-1", "qty": 1}, *window) == 1


def test_the_queue_index_is_used_to_claim_work(db: Path) -> None:
    open_store(str(db)).close()
    conn = sqlite3.connect(db)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT run_id FROM runs WHERE "
        "(status = 'queued' OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?)) "
        "AND (lease_expires IS NULL OR lease_expires < ?) ORDER BY updated_at LIMIT 1",
        ("a", "a"),
    ).fetchall()
    conn.close()
    assert any("runs_queue" in row[-1] for row in plan), plan
