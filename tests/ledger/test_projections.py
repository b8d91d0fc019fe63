"""``charter verify`` checks every projection against the events, on every store.

Each tampering below edits a table that answers live decisions — ``executed_actions``
(``count()``), ``reviews``, ``model_calls`` and ``model_spend_daily`` (spend limits), the
runs row (what workers claim) — without touching an event. The chains stay intact, so the
chain check alone (``verify``) reports every run intact; ``verify_ledger`` names the table,
the row, the field, and both values.
"""

from __future__ import annotations

from typing import Any

from charter.ledger.events import (
    Event,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
)
from charter.ledger.verify import (
    ENDED,
    ROW,
    Mismatch,
    Verification,
    status_change,
    verify,
    verify_ledger,
)
from charter.runs.state import TERMINAL_STATUS
from charter.runs.unit import status_after
from tests.ledger.populated import Populated, populated
from tests.ledger.tampering import delete_run
from tests.stores import sql

__all__ = ["populated"]


def check(p: Populated, *, whole: bool = True) -> Verification:
    """The chains alone say every run is intact (as ``charter verify`` did before it checked
    projections); the full check's findings."""
    assert verify(p.store, p.runs) == (len(p.runs), [])
    found = verify_ledger(p.store, p.runs, whole=whole)
    assert found.broken == []
    return found


def test_an_untouched_ledger_has_every_projection_its_events_say(populated: Populated) -> None:
    found = check(populated)
    assert found.ok and found.mismatches == [] and found.whole
    assert found.checked == 4
    # every kind of row was compared, not just skipped
    for table in ("executed_actions", "reviews", "model_calls", "model_spend_daily"):
        assert sql(populated.url, f"SELECT count(*) FROM {table}")[0][0] > 0


def test_edited_executed_action_args_are_found(populated: Populated) -> None:
    """Rewriting what ran changes what count() matches: a rate limit evaded."""
    sql(
        populated.url,
        "UPDATE executed_actions SET args = ? WHERE run_id = ? AND step = 1",
        ('{"item":"other","qty":1}', populated.done),
    )
    assert check(populated).mismatches == [
        Mismatch(
            "executed_actions",
            f"run {populated.done} step 1",
            "args",
            {"item": "bolt-1", "qty": 1},
            {"item": "other", "qty": 1},
        )
    ]


def test_a_deleted_executed_action_is_found(populated: Populated) -> None:
    """Deleting what ran makes count() forget it: the next email passes the rate rule."""
    sql(
        populated.url,
        "DELETE FROM executed_actions WHERE run_id = ? AND step = 2",
        (populated.done,),
    )
    [m] = check(populated).mismatches
    assert (m.table, m.key, m.field, m.found) == (
        "executed_actions",
        f"run {populated.done} step 2",
        ROW,
        None,
    )
    assert m.expected["action"] == "write" and m.expected["args"] == {"item": "bolt-2", "qty": 2}
    assert str(m).startswith(f"executed_actions run {populated.done} step 2: row missing")


def test_an_inserted_executed_action_is_found(populated: Populated) -> None:
    """A row with no completion behind it makes count() deny what policy would allow."""
    sql(
        populated.url,
        "INSERT INTO executed_actions (run_id, step, action, args, at) VALUES (?, 9, 'send_email', ?, ?)",
        (populated.done, '{"to":"ann@example.com"}', "2026-03-02T10:15:00.000000Z"),
    )
    [m] = check(populated).mismatches
    assert (m.table, m.key, m.field, m.expected) == (
        "executed_actions",
        f"run {populated.done} step 9",
        ROW,
        None,
    )
    assert "has no event behind it" in str(m)


def test_an_edited_executed_action_time_is_found(populated: Populated) -> None:
    """Moving what ran out of count()'s window is as good as deleting it."""
    [(at,)] = sql(
        populated.url,
        "SELECT at FROM executed_actions WHERE run_id = ? AND step = 1",
        (populated.done,),
    )
    sql(
        populated.url,
        "UPDATE executed_actions SET at = '2020-01-01T00:00:00.000000Z' WHERE run_id = ? AND step = 1",
        (populated.done,),
    )
    assert check(populated).mismatches == [
        Mismatch(
            "executed_actions",
            f"run {populated.done} step 1",
            "at",
            at,
            "2020-01-01T00:00:00.000000Z",
        )
    ]


def test_a_review_marked_approved_behind_the_ledgers_back_is_found(populated: Populated) -> None:
    [(review_id,)] = sql(
        populated.url, "SELECT review_id FROM reviews WHERE run_id = ?", (populated.waiting,)
    )
    sql(
        populated.url,
        "UPDATE reviews SET status = 'decided', verdict = 'approve', decided_by = 'mallory' "
        "WHERE review_id = ?",
        (review_id,),
    )
    key = f"review {review_id} (run {populated.waiting})"
    assert check(populated).mismatches == [
        Mismatch("reviews", key, "status", "pending", "decided"),
        Mismatch("reviews", key, "decided_by", None, "mallory"),
        Mismatch("reviews", key, "verdict", None, "approve"),
    ]


def test_a_changed_approver_and_a_revived_cancelled_review_are_found(
    populated: Populated,
) -> None:
    sql(
        populated.url,
        "UPDATE reviews SET decided_by = 'bob' WHERE run_id = ?",
        (populated.approved,),
    )
    sql(
        populated.url,
        "UPDATE reviews SET status = 'pending' WHERE run_id = ?",
        (populated.cancelled,),
    )
    found = {(m.table, m.field, m.expected, m.found) for m in check(populated).mismatches}
    assert found == {
        ("reviews", "decided_by", "alice", "bob"),
        ("reviews", "status", "cancelled", "pending"),
    }


def test_edited_daily_spend_is_found(populated: Populated) -> None:
    """The roll-up the daily and monthly limits read: lowered, a budget is overspent."""
    [(name, day, calls)] = sql(
        populated.url, "SELECT contract_name, day, calls FROM model_spend_daily"
    )
    sql(
        populated.url,
        "UPDATE model_spend_daily SET calls = calls - 1, cost_usd = 12.5 WHERE day = ?",
        (day,),
    )
    assert check(populated).mismatches == [
        Mismatch("model_spend_daily", f"{name} {day}", "calls", calls, calls - 1),
        Mismatch("model_spend_daily", f"{name} {day}", "cost_usd", 0.0, 12.5),
    ]


def test_a_deleted_daily_spend_row_is_found(populated: Populated) -> None:
    sql(populated.url, "DELETE FROM model_spend_daily")
    [m] = check(populated).mismatches
    assert (m.table, m.field, m.found) == ("model_spend_daily", ROW, None)
    assert m.expected == {"calls": 7, "cost_usd": 0.0}  # 3 + 2 (approved) + 1 + 1


def test_an_edited_model_call_is_found(populated: Populated) -> None:
    [(seq,)] = sql(
        populated.url,
        "SELECT min(seq) FROM model_calls WHERE run_id = ?",
        (populated.done,),
    )
    sql(
        populated.url,
        "UPDATE model_calls SET cost_usd = 3.0, output_tokens = 1 WHERE run_id = ? AND seq = ?",
        (populated.done, seq),
    )
    found = {(m.table, m.key, m.field, m.found) for m in check(populated).mismatches}
    assert found == {
        ("model_calls", f"run {populated.done} seq {seq}", "output_tokens", 1),
        ("model_calls", f"run {populated.done} seq {seq}", "cost_usd", 3.0),
    }


def test_an_edited_run_status_is_found(populated: Populated) -> None:
    """A cancelled run set back to queued would be claimed and run again."""
    sql(populated.url, "UPDATE runs SET status = 'queued' WHERE run_id = ?", (populated.cancelled,))
    sql(
        populated.url, "UPDATE runs SET status = 'completed' WHERE run_id = ?", (populated.waiting,)
    )
    assert sorted(check(populated).mismatches, key=str) == sorted(
        [
            Mismatch("runs", f"run {populated.waiting}", "status", "waiting", "completed"),
            Mismatch("runs", f"run {populated.cancelled}", "status", "cancelled", "queued"),
        ],
        key=str,
    )


def test_edited_run_wake_up_and_policy_are_found(populated: Populated) -> None:
    """A review's expiry moved, a run pointed at another contract's policy."""
    [(due, policy)] = sql(
        populated.url,
        "SELECT wake_at, policy_hash FROM runs WHERE run_id = ?",
        (populated.waiting,),
    )
    assert due is not None
    sql(
        populated.url,
        "UPDATE runs SET wake_at = '2099-01-01T00:00:00.000000Z' WHERE run_id = ?",
        (populated.waiting,),
    )
    [(other,)] = sql(
        populated.url, "SELECT policy_hash FROM runs WHERE run_id = ?", (populated.done,)
    )
    assert other != policy
    sql(
        populated.url,
        "UPDATE runs SET policy_hash = ? WHERE run_id = ?",
        (other, populated.waiting),
    )
    key = f"run {populated.waiting}"
    assert check(populated).mismatches == [
        Mismatch("runs", key, "policy_hash", policy, other),
        Mismatch("runs", key, "wake_at", due, "2099-01-01T00:00:00.000000Z"),
    ]


def test_rows_of_a_run_that_does_not_exist_are_found(populated: Populated) -> None:
    """A fabricated history for count(): rows of a run the ledger never had."""
    sql(
        populated.url,
        "INSERT INTO executed_actions (run_id, step, action, args, at) VALUES ('run_ghost', 1, 'write', ?, ?)",
        ('{"item":"x","qty":1}', "2026-03-02T10:15:00.000000Z"),
    )
    assert check(populated).mismatches == [
        Mismatch("executed_actions", "run run_ghost", ROW, None, "1 row(s) of a run not in runs")
    ]


def test_a_deleted_runs_projection_rows_remain_visible(populated: Populated) -> None:
    """Deleting a run's events and row but not all its projections leaves a trace."""
    for table in ("events", "reviews", "runs"):  # PostgreSQL: reviews reference runs
        sql(populated.url, f"DELETE FROM {table} WHERE run_id = ?", (populated.approved,))
    found = {(m.table, m.key) for m in check(populated).mismatches}
    assert found == {
        ("executed_actions", f"run {populated.approved}"),
        ("model_calls", f"run {populated.approved}"),
        (
            "model_spend_daily",
            f"ops {sql(populated.url, 'SELECT day FROM model_spend_daily')[0][0]}",
        ),
    }


def test_a_whole_run_deleted_with_its_tracks_needs_an_anchor(populated: Populated) -> None:
    """Projections alone cannot show a run that is gone with every row of it: anchors do
    (tests/ledger/test_anchors.py)."""
    delete_run(populated.url, populated.approved)
    assert check(populated).ok


def test_named_runs_are_checked_without_the_ledger_wide_roll_up(populated: Populated) -> None:
    sql(populated.url, "UPDATE model_spend_daily SET cost_usd = 99")
    sql(populated.url, "UPDATE runs SET status = 'queued' WHERE run_id = ?", (populated.done,))
    found = verify_ledger(populated.store, [populated.done])
    assert not found.whole
    assert [m.table for m in found.mismatches] == ["runs"]


def test_a_broken_chain_is_reported_once_not_as_mismatches(populated: Populated) -> None:
    sql(
        populated.url,
        "UPDATE events SET data = replace(data, 'bolt-1', 'bolt-9') WHERE run_id = ?",
        (populated.done,),
    )
    found = verify_ledger(populated.store, populated.runs, whole=False)
    assert [b.run_id for b in found.broken] == [populated.done]
    assert found.mismatches == []


def test_the_status_fold_is_the_runtimes() -> None:
    """verify's fold of the runs row's status is the runtime's (ledger cannot import runs)."""
    assert dict(ENDED) == dict(TERMINAL_STATUS)
    samples: list[Event] = [
        RunRefused({}),
        RunCompleted({}, {}, True, None, 0.0, "t"),
        RunFailed("x"),
        RunEscalated("x", []),
        RunCancelled("ops", "x"),
        ReviewRequested("rv", "action", 1, "w", {}, "d", "review", [], [], "t", "due", "deny"),
        ReviewDecided("rv", "approve", "a", "t", "d"),
    ]
    for ev in samples:
        expected: Any = status_after([ev])
        change = status_change(ev)
        assert change is not None
        assert {"status": change[0], "wake_at": change[1]} == expected
