"""One conformance suite for every store: what SQLite does, PostgreSQL does, to the byte.

Each test runs once per store (``store_kind``: ``sqlite``, ``postgres``); the PostgreSQL
variants need ``$CHARTER_TEST_POSTGRES`` and get a schema of their own. Hashes are compared
with values computed independently of any store, so a chain written by one store verifies
exactly as one written by the other.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from charter.errors import ConflictError, NotFoundError, StoreError
from charter.ledger.chain import GENESIS, event_hash
from charter.ledger.events import (
    ActionCompleted,
    ModelCalled,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCancelled,
    RunSubmitted,
)
from charter.ledger.migrations import MIGRATIONS
from charter.ledger.store import Store, open_store
from charter.ledger.verify import verify_run
from charter.primitives import canonical
from charter.runs.runtime import Runtime
from tests.runs.domain import Clock, Effects, contract
from tests.stores import sql

T0 = "2026-03-02T10:15:00.000000Z"


def at(seconds: float) -> str:
    """A store time ``seconds`` after T0 (store times are ISO text, compared as text)."""
    whole = int(seconds)
    micros = round((seconds - whole) * 1_000_000)
    minute, second = divmod(15 * 60 + whole, 60)
    return f"2026-03-02T10:{minute:02d}:{second:02d}.{micros:06d}Z"


def submitted(n: int = 0) -> RunSubmitted:
    return RunSubmitted("ops@1", "c" * 64, "p" * 64, {"item": f"thing-{n}", "ü": "ß"})


def new_run(
    store: Store, run_id: str, *, name: str = "ops", key: str | None = None, when: str = T0
) -> tuple[str, bool]:
    store.save_bundle("p" * 64, "ops@1", {"contract": {"file": "ops.yaml", "data": {}}})
    return store.create_run(
        run_id,
        contract=f"{name}@1",
        contract_name=name,
        policy_hash="p" * 64,
        idempotency_key=key,
        event=submitted(),
        at=when,
    )


def completed(step: int, action: str, args: dict[str, Any], when: str) -> ActionCompleted:
    return ActionCompleted(step, action, args, {"ok": True}, when, 1.5)


# -- opening and migrations ---------------------------------------------------------------
def test_a_new_ledger_is_at_the_latest_schema_and_reopens(ledger: str) -> None:
    store = open_store(ledger)
    newest = max(m.version for m in MIGRATIONS)
    assert store.schema_version() == newest  # type: ignore[attr-defined]
    store.close()
    again = open_store(ledger)
    assert again.schema_version() == newest  # type: ignore[attr-defined]
    again.close()
    assert sql(ledger, "SELECT count(*) FROM charter_migrations") == [(len(MIGRATIONS),)]


def test_every_migration_has_ddl_for_both_stores() -> None:
    for m in MIGRATIONS:
        assert m.sqlite and m.postgres, f"migration {m.version} ({m.name}) lacks DDL"
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions))


def test_a_ledger_newer_than_the_code_is_refused(ledger: str) -> None:
    open_store(ledger).close()
    sql(ledger, "INSERT INTO charter_migrations VALUES (99, 'from the future', 'x')")
    with pytest.raises(StoreError, match="schema version 99, newer than this Charter supports"):
        open_store(ledger)


def test_read_commands_do_not_create_a_ledger(store_kind: str, tmp_path: Path) -> None:
    from tests.stores import ledger_url

    with ledger_url(store_kind, tmp_path) as url:
        with pytest.raises(StoreError, match="no ledger"):
            open_store(url, create=False)
        open_store(url).close()
        open_store(url, create=False).close()


def test_a_read_only_open_neither_migrates_nor_writes(store_kind: str, tmp_path: Path) -> None:
    from tests.stores import ledger_url

    with ledger_url(store_kind, tmp_path) as url:
        with pytest.raises(StoreError, match="no ledger"):
            open_store(url, read_only=True)
        writer = open_store(url)
        new_run(writer, "run_r")
        writer.close()
        # an older ledger is refused by read commands, never upgraded behind their back
        newest = MIGRATIONS[-1].version  # its statements can run again: derived data only
        sql(url, f"DELETE FROM charter_migrations WHERE version = {newest}")
        with pytest.raises(StoreError, match=r"older than this Charter's .*charter migrate"):
            open_store(url, read_only=True)
        open_store(url).close()  # a writer migrates
        reader = open_store(url, read_only=True)
        assert reader.get_run("run_r").status == "queued"
        with pytest.raises(StoreError, match="opened read-only"):
            reader.append("run_r", [RunCancelled("x", "y")], expected_seq=1, at=at(1))
        reader.close()
        assert [r[0] for r in sql(url, "SELECT seq FROM events")] == [1]


# -- runs and events ----------------------------------------------------------------------
def test_runs_are_created_once_per_idempotency_key(store: Store) -> None:
    assert new_run(store, "run_a", key="k1") == ("run_a", True)
    assert new_run(store, "run_b", key="k1") == ("run_a", False)
    assert new_run(store, "run_c") == ("run_c", True)
    row = store.get_run("run_a")
    assert (row.status, row.last_seq, row.epoch, row.lease_owner) == ("queued", 1, 0, None)
    assert row.idempotency_key == "k1" and row.contract == "ops@1"


def test_chain_hashes_are_those_of_the_canonical_json(store: Store) -> None:
    new_run(store, "run_h")
    ev = submitted()
    first = event_hash(GENESIS, "run_h", 1, ev.TYPE, T0, canonical(ev.to_data()))
    assert store.get_run("run_h").last_hash == first
    [stored] = store.append("run_h", [RunAdmitted({"effect": "allow"})], expected_seq=1, at=at(1))
    data = canonical({"by_review": None, "decision": {"effect": "allow"}})
    assert stored.hash == event_hash(first, "run_h", 2, "run.admitted", at(1), data)
    raw = list(store.raw_events("run_h"))
    assert [(r.seq, r.type, r.prev_hash) for r in raw] == [
        (1, "run.submitted", GENESIS),
        (2, "run.admitted", first),
    ]
    assert raw[0].data_json == canonical(ev.to_data())
    assert [e.event for e in store.events("run_h")] == [ev, RunAdmitted({"effect": "allow"})]
    assert verify_run(store, "run_h") is None


def test_appends_are_optimistic_and_fenced_by_the_lease(store: Store) -> None:
    new_run(store, "run_f")
    with pytest.raises(ConflictError, match="moved on"):
        store.append("run_f", [RunCancelled("x", "y")], expected_seq=0, at=at(1))
    leased = store.claim_run("run_f", "w1", at(0), at(60))
    assert leased is not None and (leased.lease_owner, leased.epoch) == ("w1", 1)
    with pytest.raises(ConflictError, match="taken over"):
        store.append("run_f", [RunCancelled("x", "y")], expected_seq=1, at=at(1), epoch=0)
    with pytest.raises(NotFoundError):
        store.append("run_nope", [RunCancelled("x", "y")], expected_seq=1, at=at(1))
    assert store.get_run("run_f").last_seq == 1
    # another worker cannot take a live lease, can take an expired one
    assert store.claim_run("run_f", "w2", at(30), at(120)) is None
    assert store.claim("w2", at(30), at(120)) is None
    taken = store.claim("w2", at(61), at(120))
    assert taken is not None and (taken.lease_owner, taken.epoch) == ("w2", 2)
    # the old holder can neither append, renew nor release any more
    with pytest.raises(ConflictError, match="taken over"):
        store.append("run_f", [RunCancelled("x", "y")], expected_seq=1, at=at(62), epoch=1)
    assert not store.renew("run_f", "w1", 1, at(600))
    store.release("run_f", "w1", 1)
    assert store.get_run("run_f").lease_owner == "w2"
    assert store.renew("run_f", "w2", 2, at(600))
    assert store.get_run("run_f").lease_expires == at(600)
    store.append("run_f", [RunCancelled("x", "y")], expected_seq=1, at=at(62), epoch=2)
    store.release("run_f", "w2", 2)
    row = store.get_run("run_f")
    assert (row.lease_owner, row.lease_expires, row.last_seq) == (None, None, 2)


def test_status_and_wake_time_are_set_with_the_append(store: Store) -> None:
    new_run(store, "run_s")
    store.append(
        "run_s", [RunAdmitted({})], expected_seq=1, at=at(1), status="waiting", wake_at=at(50)
    )
    row = store.get_run("run_s")
    assert (row.status, row.wake_at, row.updated_at) == ("waiting", at(50), at(1))
    store.append("run_s", [RunAdmitted({})], expected_seq=2, at=at(2))  # keeps both
    assert (store.get_run("run_s").status, store.get_run("run_s").wake_at) == ("waiting", at(50))
    store.append("run_s", [RunAdmitted({})], expected_seq=3, at=at(3), wake_at=None)
    assert store.get_run("run_s").wake_at is None


def test_large_payloads_are_stored_by_reference_and_read_back(ledger: str) -> None:
    import os

    os.environ["CHARTER_PAYLOAD_CAP"] = "200"
    try:
        store = open_store(ledger)
    finally:
        del os.environ["CHARTER_PAYLOAD_CAP"]
    assert store.payload_cap == 200
    new_run(store, "run_big")
    big = RunAdmitted({"note": "x" * 1000, "ü": "ß" * 10})
    store.append("run_big", [big, big], expected_seq=1, at=at(1))
    assert [e.event for e in store.events("run_big")][1:] == [big, big]
    assert verify_run(store, "run_big") is None
    stored = sql(ledger, "SELECT data FROM events WHERE run_id = 'run_big' AND seq = 2")
    assert stored[0][0].startswith('{"$blob":')
    assert sql(ledger, "SELECT count(*) FROM blobs WHERE size > 1000") == [(1,)]  # shared
    # tampering with the referenced blob breaks the chain
    sql(ledger, "UPDATE blobs SET data = replace(data, 'xxxx', 'yyyy')")
    broken = verify_run(store, "run_big")
    assert broken is not None and broken.seq == 2
    store.close()


def test_runs_are_found_by_unambiguous_prefix_and_listed(store: Store) -> None:
    for n, name in enumerate(["run_aa1", "run_aa2", "run_b"]):
        new_run(store, name, name="ops" if n < 2 else "other", when=at(n))
    assert store.find_run("run_aa1").run_id == "run_aa1"
    assert store.find_run("run_b").run_id == "run_b"
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.find_run("run_aa")
    with pytest.raises(NotFoundError, match="no run run_zzz; `charter run list`"):
        store.find_run("run_zzz")
    with pytest.raises(NotFoundError, match="no run run_zzz"):
        store.get_run("run_zzz")
    with pytest.raises(NotFoundError):
        store.events("run_zzz")
    assert [r.run_id for r in store.list_runs()] == ["run_b", "run_aa2", "run_aa1"]
    assert [r.run_id for r in store.list_runs(contract="ops", limit=1)] == ["run_aa2"]
    assert [r.run_id for r in store.list_runs(contract="other@1")] == ["run_b"]
    assert store.list_runs(status="completed") == []
    assert store.run_ids() == ["run_aa1", "run_aa2", "run_b"]
    assert store.run_ids(contract_name="ops", since=at(1)) == ["run_aa2"]


def test_bundles_are_kept_by_policy_hash(store: Store) -> None:
    bundle = {"contract": {"file": "a.yaml", "data": {"x": [1, "ü"]}}, "packs": []}
    store.save_bundle("h" * 64, "a@1", bundle)
    store.save_bundle("h" * 64, "a@1", bundle)  # idempotent
    assert store.load_bundle("h" * 64) == bundle
    with pytest.raises(StoreError, match="missing from the ledger"):
        store.load_bundle("0" * 64)


# -- reviews projection -------------------------------------------------------------------
def review(review_id: str, due: str | None) -> ReviewRequested:
    return ReviewRequested(
        review_id, "action", 1, "write", {"qty": 5}, "d" * 64, "review", ["ops-leads"],
        ["Large write"], at(1), due, "deny",
    )  # fmt: skip


def test_reviews_are_projected_in_the_same_transaction(store: Store) -> None:
    new_run(store, "run_r1")
    new_run(store, "run_r2")
    store.append("run_r1", [review("rv_1", at(3600))], expected_seq=1, at=at(1))
    store.append("run_r2", [review("rv_2", None)], expected_seq=1, at=at(2))
    assert [r.review_id for r in store.list_reviews()] == ["rv_1", "rv_2"]
    pending = store.get_review("rv_1")
    assert (pending.status, pending.reviewers, pending.reasons) == (
        "pending",
        ["ops-leads"],
        ["Large write"],
    )
    assert (pending.contract, pending.step, pending.due_at) == ("ops@1", 1, at(3600))
    decided = ReviewDecided("rv_1", "approve", "ann", at(5), "d" * 64)
    store.append("run_r1", [decided], expected_seq=2, at=at(5))
    store.append("run_r2", [RunCancelled("bob", "no")], expected_seq=2, at=at(6))
    assert store.list_reviews() == []
    assert {r.review_id: r.status for r in store.list_reviews(status=None)} == {
        "rv_1": "decided",
        "rv_2": "cancelled",
    }
    got = store.get_review("rv_1")
    assert (got.verdict, got.decided_by, got.decided_at) == ("approve", "ann", at(5))
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.get_review("rv_")
    with pytest.raises(NotFoundError, match="no review rv_9"):
        store.get_review("rv_9")


# -- count() ------------------------------------------------------------------------------
def test_count_matches_args_as_sqlite_compares_them(store: Store) -> None:
    new_run(store, "run_c")
    args = [
        {"to": "ann@example.com", "n": 2, "flag": True, "none": None, "nested": {"a": [1, 2]}},
        {"to": "ann@example.com", "n": 1, "flag": False},
        {"to": "bob@example.com", "n": 2.5},
    ]
    events = [completed(i + 1, "send_email", a, at(10 + i)) for i, a in enumerate(args)]
    events.append(
        ActionCompleted(9, "send_email", {"to": "x"}, None, at(20), 1.0, compensation=True)
    )
    store.append("run_c", events, expected_seq=1, at=at(30))
    window = (at(0), at(100))

    def count(match: dict[str, Any], since: str = window[0], until: str = window[1]) -> int:
        return store.count_executed("send_email", match, since, until)

    assert count({}) == 3  # compensations are not executions
    assert count({"to": "ann@example.com"}) == 2
    assert count({"to": "ANN@example.com"}) == 0
    assert count({"to": "ann@example.com", "n": 2}) == 1
    assert count({"n": 2.0}) == 1
    assert count({"n": "2"}) == 0
    assert count({"n": 2.5}) == 1
    assert count({"flag": True}) == 1
    assert count({"flag": 1}) == 1  # SQLite: JSON true is the integer 1
    assert count({"n": True}) == 1  # ... and 1 is true
    assert count({"flag": False}) == 1
    assert count({"none": None}) == 0  # JSON null is SQL NULL: equal to nothing
    assert count({"missing": "x"}) == 0
    assert count({}, at(11), at(12)) == 2  # both ends inclusive
    assert count({}, at(13), at(100)) == 0
    assert store.count_executed("write", {}, *window) == 0


def test_count_matches_the_normal_form_recorded_with_the_completion(store: Store) -> None:
    new_run(store, "run_n")
    done = ActionCompleted(
        1, "send_email", {"to": "Ann@Example.COM"}, {}, at(10), 1.0,
        match_args={"to": "ann@example.com"},
    )  # fmt: skip
    store.append("run_n", [done], expected_seq=1, at=at(10))
    assert store.count_executed("send_email", {"to": "ann@example.com"}, at(0), at(20)) == 1
    assert store.count_executed("send_email", {"to": "Ann@Example.COM"}, at(0), at(20)) == 0


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (completed(1, "w", {"x": "a\x00b"}, T0), "action.completed.x: contains the NUL character"),
        (completed(1, "w", {"x": float("nan")}, T0), "Out of range float values"),
        (completed(1, "w", {"x": "\ud800"}, T0), "action.completed.x: contains a lone surrogate"),
        (RunAdmitted({"why": float("inf")}), "Out of range float values"),
        (RunCancelled("ops\x00", "r"), None),  # NUL inside a payload is escaped JSON: stored
        (ReviewDecided("rv_1", "approve", "al\x00ice", T0, "d"), "contains the NUL character"),
    ],
)
def test_every_store_refuses_the_same_unrecordable_events_before_writing(
    store: Store, event: Any, problem: str | None
) -> None:
    """NaN, lone surrogates and NUL in projected columns are refused by both stores alike,
    before anything is written; NUL inside a JSON payload is escaped and kept by both."""
    new_run(store, "run_x")
    if problem is None:
        [stored] = store.append("run_x", [event], expected_seq=1, at=at(1))
        assert store.events("run_x")[-1].event == stored.event == event
        assert verify_run(store, "run_x") is None
        return
    with pytest.raises(StoreError, match=problem.replace("(", r"\(")):
        store.append("run_x", [event], expected_seq=1, at=at(1))
    assert [e.seq for e in store.events("run_x")] == [1]
    assert store.count_executed("w", {}, at(0), at(100)) == 0


# -- model spend (the model_calls projection) ---------------------------------------------
def called(prompt_hash: str, cost: float, *, reasoning: int | None = None) -> ModelCalled:
    return ModelCalled(
        1, 1, "scripted", "m1", {}, None, prompt_hash, "prompt", "{}", 100, 20, cost, 1.0,
        cached_input_tokens=10, reasoning_tokens=reasoning,
    )  # fmt: skip


def test_model_calls_are_projected_for_spend_and_lookup(store: Store) -> None:
    new_run(store, "run_m1")
    new_run(store, "run_m2", name="other")
    store.append("run_m1", [called("aa11", 0.25), called("aa22", 0.5)], expected_seq=1, at=at(1))
    store.append("run_m2", [called("bb33", 1.0, reasoning=5)], expected_seq=1, at=at(5))
    assert store.spend("ops", at(0), at(2)) == 0.75
    assert store.spend("ops", at(0), at(1)) == 0.0  # until is exclusive
    assert store.spend("other", at(0), at(60)) == 1.0
    assert store.model_spend() == [
        {
            "contract": "ops", "provider": "scripted", "model": "m1", "calls": 2,
            "input_tokens": 200, "cached_input_tokens": 20, "output_tokens": 40,
            "reasoning_tokens": 0, "cost_usd": 0.75,
        },
        {
            "contract": "other", "provider": "scripted", "model": "m1", "calls": 1,
            "input_tokens": 100, "cached_input_tokens": 10, "output_tokens": 20,
            "reasoning_tokens": 5, "cost_usd": 1.0,
        },
    ]  # fmt: skip
    assert [r["contract"] for r in store.model_spend(since=at(2))] == ["other"]
    assert store.find_model_call("bb") == ("run_m2", 2)
    assert store.find_model_call("aa22") == ("run_m1", 3)
    assert store.find_model_call("cc") is None
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.find_model_call("aa")


def test_the_daily_spend_roll_up_is_kept_with_every_call(ledger: str) -> None:
    """Whole UTC days are answered from the roll-up; it must equal the calls it sums."""
    store = open_store(ledger)
    new_run(store, "run_d")
    day1, day2 = "2026-03-01T23:59:59.000000Z", "2026-03-02T00:00:01.000000Z"
    store.append("run_d", [called("d1", 0.25)], expected_seq=1, at=day1)
    store.append("run_d", [called("d2", 0.5), called("d3", 1.0)], expected_seq=2, at=day2)
    assert sql(ledger, "SELECT day, calls, cost_usd FROM model_spend_daily ORDER BY day") == [
        ("2026-03-01", 1, 0.25),
        ("2026-03-02", 2, 1.5),
    ]
    midnight = "T00:00:00.000000Z"
    assert store.spend("ops", "2026-03-01" + midnight, "2026-03-03" + midnight) == 1.75
    assert store.spend("ops", "2026-03-02" + midnight, "2026-03-03" + midnight) == 1.5
    # a window that is not whole days is summed from the calls themselves
    assert store.spend("ops", day1, day2) == 0.25
    # what the roll-up says is what the calls say
    assert sql(
        ledger,
        "SELECT d.day, d.calls, d.cost_usd, c.calls, c.cost FROM model_spend_daily d JOIN "
        "(SELECT substr(at, 1, 10) AS day, count(*) AS calls, sum(cost_usd) AS cost "
        "FROM model_calls GROUP BY substr(at, 1, 10)) c ON c.day = d.day ORDER BY d.day",
    ) == [("2026-03-01", 1, 0.25, 1, 0.25), ("2026-03-02", 2, 1.5, 2, 1.5)]
    store.close()


# -- the queue ----------------------------------------------------------------------------
def test_claims_take_the_oldest_runnable_run(store: Store) -> None:
    for n in range(3):
        new_run(store, f"run_{n}", when=at(n))
    store.append(
        "run_0", [review("rv_q", at(100))], expected_seq=1, at=at(5), status="waiting",
        wake_at=at(100),
    )  # fmt: skip
    store.append("run_2", [RunCancelled("a", "b")], expected_seq=1, at=at(6), status="cancelled")
    first = store.claim("w1", at(10), at(170))
    assert first is not None and first.run_id == "run_1" and first.lease_owner == "w1"
    assert store.claim("w2", at(10), at(170)) is None  # run_0 waits, run_2 ended
    # the review's due time comes: the waiting run is runnable (its timeout fires)
    due = store.claim("w2", at(100), at(170))
    assert due is not None and due.run_id == "run_0"
    assert store.claim("w3", at(100), at(170)) is None


def test_a_worker_can_re_claim_its_own_run(store: Store) -> None:
    new_run(store, "run_own")
    first = store.claim_run("run_own", "w1", at(0), at(60))
    again = store.claim_run("run_own", "w1", at(1), at(60))
    assert first is not None and again is not None and again.epoch == first.epoch + 1
    with pytest.raises(NotFoundError):
        store.claim_run("run_missing", "w1", at(0), at(60))


def test_per_contract_caps_hold_across_claimers(store: Store) -> None:
    for n in range(3):
        new_run(store, f"run_a{n}", name="alpha", when=at(n))
    new_run(store, "run_b0", name="beta", when=at(5))
    caps = {"alpha": 2}
    got = [store.claim(f"w{i}", at(10), at(70), max_per_contract=caps) for i in range(4)]
    assert [g.run_id if g else None for g in got] == ["run_a0", "run_a1", "run_b0", None]
    # a lease released or expired frees a place
    assert got[0] is not None
    store.release("run_a0", "w0", got[0].epoch)
    freed = store.claim("w5", at(11), at(70), max_per_contract=caps)
    assert freed is not None and freed.run_id == "run_a0"
    assert store.claim("w6", at(12), at(70), max_per_contract=caps) is None
    expired = store.claim("w7", at(71), at(130), max_per_contract=caps)
    assert expired is not None and expired.run_id == "run_a0"  # oldest of the reclaimable
    # without a cap the claim ignores it
    assert store.claim("w8", at(72), at(130)) is not None


def test_rate_slots_form_a_sliding_window(store: Store) -> None:
    def take(t: float) -> str | None:
        return store.acquire_rate_slot("provider:x", 2, at(t), at(t - 10))

    assert take(0) is None
    assert take(1) is None
    assert take(2) == at(0)  # full: the oldest call leaves the window at 10 s
    assert store.acquire_rate_slot("provider:y", 2, at(2), at(-8)) is None  # its own window
    assert take(9.999) == at(0)
    assert take(10) is None  # the call at 0 left the window (since is exclusive)
    assert take(10.5) == at(1)


def test_concurrent_claims_lease_each_run_once(ledger: str) -> None:
    seeding = open_store(ledger)
    for n in range(40):
        new_run(seeding, f"run_{n:02d}", when=at(n / 100))
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(i: int) -> None:
        store = open_store(ledger)  # a connection (pool) of its own, as a process would have
        start.wait()
        while (row := store.claim(f"w{i}", at(1), at(600))) is not None:
            with lock:
                claimed[row.run_id] += 1
        store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == [f"run_{n:02d}" for n in range(40)]
    assert set(claimed.values()) == {1}
    assert {r.epoch for r in seeding.list_runs(limit=100)} == {1}
    seeding.close()


def test_concurrent_appends_at_one_position_let_exactly_one_win(ledger: str) -> None:
    seeding = open_store(ledger)
    new_run(seeding, "run_race")
    results: list[str] = []
    start = threading.Barrier(5)

    def writer(i: int) -> None:
        store = open_store(ledger)
        start.wait()
        try:
            store.append("run_race", [RunCancelled(f"w{i}", "race")], expected_seq=1, at=at(1))
            results.append("won")
        except ConflictError:
            results.append("conflict")
        store.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["conflict"] * 4 + ["won"]
    assert seeding.get_run("run_race").last_seq == 2
    assert verify_run(seeding, "run_race") is None
    seeding.close()


def test_idle_workers_wait_for_work_and_stop_promptly(store_kind: str, store: Store) -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    store.wait_for_work(10.0, stop)
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    store.wait_for_work(0.1)
    assert time.monotonic() - started < 2.0


def test_postgres_wakes_idle_workers_when_a_run_is_queued(store_kind: str, ledger: str) -> None:
    if store_kind != "postgres":
        pytest.skip("SQLite has no notifications: idle workers poll")
    waiter = open_store(ledger)
    writer = open_store(ledger)
    waiter.wait_for_work(0.3)  # connects the listener; later waits see what came meanwhile
    woke: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        waiter.wait_for_work(20.0)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    new_run(writer, "run_wake")
    thread.join(20)
    assert woke and woke[0] < 5.0, woke
    writer.close()
    waiter.close()


# -- through the runtime ------------------------------------------------------------------
def test_a_run_completes_identically_on_every_store(
    ledger: str, clock: Clock, effects: Effects
) -> None:
    rt = Runtime(ledger, clock=clock, worker_id="w")
    run_id = rt.submit(contract(), {"item": "bolt"}, idempotency_key="ticket-1")
    assert rt.submit(contract(), {"item": "bolt"}, idempotency_key="ticket-1") == run_id
    state = rt.run(run_id)
    assert state.status == "completed"
    assert [e.type for e in rt.store.events(run_id)] == [
        "run.submitted", "channel.read", "channel.read", "run.admitted",
        "model.called", "proposal.accepted", "action.decided", "action.started",
        "action.completed", "model.called", "proposal.accepted", "action.decided", "action.started", "action.completed", "model.called",
        "proposal.accepted", "run.completed",
    ]  # fmt: skip
    assert verify_run(rt.store, run_id) is None
    row = rt.store.get_run(run_id)
    assert (row.status, row.lease_owner, row.wake_at) == ("completed", None, None)
    assert effects.applied_per_key() == {f"{run_id}:1": 1, f"{run_id}:2": 1}
    assert rt.store.count_executed("write", {"qty": 2}, at(-60), at(60)) == 1
    rt.store.close()


# -- PostgreSQL specifics ---------------------------------------------------------------------
def test_postgres_urls_name_the_schema_either_way() -> None:
    from charter.ledger.postgres import parse_url

    conninfo, schema, pool = parse_url("postgresql://u@h:5/db?schema=ops&pool_size=3")
    assert (schema, pool) == ("ops", 3)
    assert conninfo == "postgresql://u@h:5/db?application_name=charter"
    conninfo, schema, _ = parse_url(
        "postgres://u@h/db?options=-csearch_path%3Dledger&application_name=w1"
    )
    assert schema == "ledger" and "application_name=w1" in conninfo
    assert parse_url("postgresql://u@h/db")[1] == "public"
    with pytest.raises(StoreError, match="pool_size"):
        parse_url("postgresql://u@h/db?pool_size=many")


def test_postgres_options_search_path_selects_the_schema(store_kind: str, ledger: str) -> None:
    if store_kind != "postgres":
        pytest.skip("PostgreSQL URLs only")
    base, _, query = ledger.partition("?")
    schema = query.removeprefix("schema=")
    store = open_store(f"{base}?options=-csearch_path%3D{schema}")
    new_run(store, "run_opt")
    store.close()
    assert sql(ledger, "SELECT run_id FROM runs") == [("run_opt",)]


def test_postgres_queries_are_answered_by_their_indexes(store_kind: str, ledger: str) -> None:
    if store_kind != "postgres":
        pytest.skip("SQLite's plans are checked in test_store.py")
    open_store(ledger).close()
    import psycopg

    from charter.ledger.postgres import parse_url

    conninfo, schema, _ = parse_url(ledger)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("SET enable_seqscan = off")  # tiny tables: ask which index *can* serve
        count = conn.execute(
            "EXPLAIN SELECT count(*) FROM executed_actions WHERE action = 'a' "
            "AND at >= 'x' AND at <= 'y' AND args -> 'to' = ANY('{\"\\\"b\\\"\"}'::jsonb[])"
        ).fetchall()
        claim = conn.execute(
            "EXPLAIN SELECT run_id FROM runs WHERE status IN ('queued', 'waiting') "
            "AND (status = 'queued' OR (wake_at IS NOT NULL AND wake_at <= 'x')) "
            "AND (lease_expires IS NULL OR lease_expires < 'x') "
            "ORDER BY updated_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"
        ).fetchall()
    assert "executed_by_action" in str(count), count
    assert "runs_runnable" in str(claim), claim
