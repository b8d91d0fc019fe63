"""Reviews park a run durably; people approve, edit or reject; an SLA fails closed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from charter.errors import UsageError
from charter.ledger.events import (
    ActionDecided,
    ActionStarted,
    Event,
    ReviewDecided,
    ReviewRequested,
    RunEscalated,
)
from charter.ledger.verify import verify_run
from charter.runs.runtime import Runtime
from charter.runs.state import action_digest
from tests.runs.domain import Clock, Effects, contract

E = TypeVar("E", bound=Event)

BIG = [[["write", {"item": "crate", "qty": 500}]]]  # rule big-write: review


def events_of(rt: Runtime, run_id: str, cls: type[E]) -> list[E]:
    return [e.event for e in rt.store.events(run_id) if isinstance(e.event, cls)]


def start(rt: Runtime, plan: list[Any], **changes: Any) -> str:
    return rt.submit(contract(script="planned", **changes), {"item": "crate", "plan": plan})


def test_a_review_parks_the_run_until_approved_then_the_exact_action_runs(
    rt: Runtime, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    state = rt.run(run_id)
    assert state.status == "waiting"
    assert state.review is not None and state.review.action == "write"
    assert state.review.reasons == ["Large write"]
    assert rt.store.get_run(run_id).status == "waiting"
    [row] = rt.store.list_reviews()
    assert (row.review_id, row.run_id, row.kind, row.action, row.effect) == (
        state.review.review_id,
        run_id,
        "action",
        "write",
        "review",
    )
    assert effects.calls() == []
    assert rt.work_once() is None  # nothing runnable: no process waits for the person

    rt.decide_review(row.review_id, "approve", by="alice", comment="ok")
    assert rt.store.list_reviews() == []
    state = rt.run(run_id)
    assert state.status == "completed"
    assert [(a, x) for _, a, x in effects.applied()] == [("write", {"item": "crate", "qty": 500})]
    [decided] = events_of(rt, run_id, ReviewDecided)
    assert (decided.verdict, decided.by, decided.comment) == ("approve", "alice", "ok")
    # the approval is bound to the exact action: this run, this step, these args
    assert decided.digest == action_digest(run_id, 1, "write", {"item": "crate", "qty": 500})
    assert decided.digest == events_of(rt, run_id, ReviewRequested)[0].digest
    [review] = rt.store.list_reviews(status=None)
    assert (review.status, review.verdict, review.decided_by) == ("decided", "approve", "alice")


def test_a_rejected_action_never_executes_and_the_model_sees_why(
    rt: Runtime, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    rt.decide_review(review.review_id, "reject", by="bob", comment="we never restock crates")
    state = rt.run(run_id)
    assert state.status == "completed"
    assert effects.calls() == []
    assert events_of(rt, run_id, ActionStarted) == []
    # the model's next request carried the rejection, and its final answer quotes it
    assert state.proposal is not None and state.proposal["final"]["results"] == [
        {
            "action": "write",
            "args": {"item": "crate", "qty": 500},
            "status": "rejected",
            "reason": "we never restock crates",
        }
    ]


def test_approval_with_edited_args_is_re_decided_and_runs_with_the_edited_args(
    rt: Runtime, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    rt.decide_review(review.review_id, "approve", by="alice", args={"item": "crate", "qty": 50})
    state = rt.run(run_id)
    assert state.status == "completed"
    assert [(a, x) for _, a, x in effects.applied()] == [("write", {"item": "crate", "qty": 50})]
    decided = events_of(rt, run_id, ActionDecided)
    assert [(d.args["qty"], d.decision["effect"]) for d in decided] == [
        (500, "review"),
        (50, "allow"),
    ]
    [verdict] = events_of(rt, run_id, ReviewDecided)
    assert verdict.edited_args == {"item": "crate", "qty": 50}
    assert verdict.digest == action_digest(run_id, 1, "write", {"item": "crate", "qty": 50})
    [started] = events_of(rt, run_id, ActionStarted)
    assert started.args == {"item": "crate", "qty": 50}
    assert started.idempotency_key == f"{run_id}:1"


def test_invalid_edited_args_are_refused_and_nothing_is_written(
    rt: Runtime, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    before = rt.store.get_run(run_id)
    for bad in (
        {"item": "crate", "qty": "fifty"},
        {"item": "crate"},
        {"item": "c", "qty": 1, "x": 1},
    ):
        with pytest.raises(UsageError, match="edited args for write are invalid"):
            rt.decide_review(review.review_id, "approve", by="alice", args=bad)
    with pytest.raises(UsageError, match="only make sense with approve"):
        rt.decide_review(review.review_id, "reject", by="alice", args={"item": "c", "qty": 1})
    with pytest.raises(UsageError, match="verdict must be approve or reject"):
        rt.decide_review(review.review_id, "maybe", by="alice")
    after = rt.store.get_run(run_id)
    assert (after.last_seq, after.last_hash, after.status) == (
        before.last_seq,
        before.last_hash,
        "waiting",
    )
    assert [r.review_id for r in rt.store.list_reviews()] == [review.review_id]


def test_edited_args_that_policy_denies_are_not_executed(rt: Runtime, effects: Effects) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    # a reviewer's approval cannot override a deny: huge-write denies qty > 1000
    rt.decide_review(review.review_id, "approve", by="alice", args={"item": "crate", "qty": 5000})
    state = rt.run(run_id)
    assert effects.calls() == []
    assert events_of(rt, run_id, ActionStarted) == []
    assert events_of(rt, run_id, ActionDecided)[-1].decision["effect"] == "deny"
    assert state.status == "completed"
    assert state.proposal is not None
    [seen] = state.proposal["final"]["results"]
    assert (seen["status"], seen["reason"]) == ("denied", "Far too large")


def test_a_review_cannot_be_decided_twice(rt: Runtime, effects: Effects) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    rt.decide_review(review.review_id, "approve", by="alice")
    with pytest.raises(UsageError, match="already decided"):
        rt.decide_review(review.review_id, "reject", by="mallory", comment="no")
    rt.run(run_id)
    assert len(effects.applied()) == 1


def test_an_approval_whose_digest_does_not_match_the_action_never_executes(
    rt: Runtime, effects: Effects
) -> None:
    """An approval recorded for other args (a forged or misrouted verdict) is not honoured."""
    run_id = start(rt, BIG)
    state = rt.run(run_id)
    req = state.review
    assert req is not None
    forged = ReviewDecided(
        req.review_id,
        "approve",
        "mallory",
        "2026-03-02T10:16:00.000000Z",
        action_digest(run_id, 1, "write", {"item": "crate", "qty": 5}),
    )
    rt.store.append(
        run_id, [forged], expected_seq=state.seq, at="2026-03-02T10:16:00.000000Z", status="queued"
    )
    state = rt.run(run_id)
    assert effects.calls() == []
    assert events_of(rt, run_id, ActionStarted) == []
    assert state.status == "failed"
    assert state.terminal is not None
    assert "does not match the action about to run" in state.terminal.event.error  # type: ignore[attr-defined]


def test_an_expired_review_takes_on_timeout_deny_exactly_once(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None and review.due_at == "2026-03-02T11:15:00.000000Z"
    clock.advance(timedelta(minutes=59))
    assert rt.work_once() is None  # not due yet
    clock.advance(timedelta(minutes=1, seconds=1))
    assert rt.work_once() == run_id
    assert rt.work_once() is None
    [expired] = events_of(rt, run_id, ReviewDecided)
    assert (expired.verdict, expired.effect, expired.by) == ("expired", "deny", "system:timeout")
    assert effects.calls() == []
    state = rt.state(run_id)
    assert state.status == "completed"
    assert state.proposal is not None
    assert state.proposal["final"]["results"][0]["status"] == "rejected"
    assert "no decision within the SLA" in state.proposal["final"]["results"][0]["reason"]
    # a person arriving late cannot approve what already timed out
    with pytest.raises(UsageError, match="already"):
        rt.decide_review(review.review_id, "approve", by="alice")
    [row] = rt.store.list_reviews(status=None)
    assert (row.status, row.verdict) == ("decided", "expired")


def test_an_approval_after_the_sla_is_refused_even_before_a_worker_looks(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    clock.advance(timedelta(hours=2))
    with pytest.raises(UsageError, match="expired"):
        rt.decide_review(review.review_id, "approve", by="alice")
    assert rt.work_once() == run_id
    assert effects.calls() == []
    assert [e.verdict for e in events_of(rt, run_id, ReviewDecided)] == ["expired"]


def test_an_expired_review_with_on_timeout_escalate_escalates_the_run(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = start(rt, BIG, escalation={"on_timeout": "escalate", "sla": "30m"})
    assert rt.run(run_id).status == "waiting"
    clock.advance(timedelta(minutes=31))
    assert rt.work_once() == run_id
    assert rt.work_once() is None
    state = rt.state(run_id)
    assert state.status == "escalated"
    assert rt.store.get_run(run_id).status == "escalated"
    [esc] = events_of(rt, run_id, RunEscalated)
    assert esc.reviewers == ["ops-leads"]
    assert len(events_of(rt, run_id, ReviewDecided)) == 1
    assert effects.calls() == []


def test_a_review_without_sla_waits_forever(rt: Runtime, clock: Clock, effects: Effects) -> None:
    run_id = start(rt, BIG, escalation={"sla": None})
    review = rt.run(run_id).review
    assert review is not None and review.due_at is None
    clock.advance(timedelta(days=30))
    assert rt.work_once() is None
    assert rt.state(run_id).status == "waiting"


# -- admission ----------------------------------------------------------------------------
def test_admission_deny_refuses_the_run_before_any_model_call(
    rt: Runtime, effects: Effects
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "blocked"})
    state = rt.run(run_id)
    assert state.status == "refused"
    assert rt.store.get_run(run_id).status == "refused"
    assert state.model_calls == 0
    assert effects.model_calls() == []
    assert state.terminal is not None
    assert state.terminal.event.reason == "Customer is blocked"  # type: ignore[attr-defined]


def test_admission_review_then_approve_admits_and_runs(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "vip"})
    state = rt.run(run_id)
    assert state.status == "waiting" and not state.admitted
    assert state.review is not None and state.review.kind == "admit"
    assert effects.model_calls() == []
    rt.decide_review(state.review.review_id, "approve", by="alice")
    state = rt.run(run_id)
    assert state.status == "completed"
    assert len(effects.applied()) == 2


def test_admission_review_rejected_refuses_the_run(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "vip"})
    review = rt.run(run_id).review
    assert review is not None
    with pytest.raises(UsageError, match="only action reviews"):
        rt.decide_review(review.review_id, "approve", by="alice", args={"x": 1})
    rt.decide_review(review.review_id, "reject", by="alice", comment="not today")
    state = rt.run(run_id)
    assert state.status == "refused"
    assert effects.model_calls() == []


# -- cancel -------------------------------------------------------------------------------
def test_a_cancelled_waiting_run_never_executes_its_action(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    review = rt.run(run_id).review
    assert review is not None
    rt.cancel(run_id, by="ops", reason="customer withdrew")
    assert rt.state(run_id).status == "cancelled"
    assert rt.store.get_run(run_id).status == "cancelled"
    assert rt.store.list_reviews() == []  # nothing left for people to decide
    with pytest.raises(UsageError, match="was cancelled"):
        rt.decide_review(review.review_id, "approve", by="alice")
    with pytest.raises(UsageError, match="already ended"):
        rt.cancel(run_id, by="ops", reason="again")
    clock.advance(timedelta(days=1))  # past the SLA: nothing wakes up either
    assert rt.work_once() is None
    assert rt.run(run_id).status == "cancelled"
    assert effects.calls() == []


def test_a_cancelled_queued_run_is_never_processed(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.cancel(run_id, by="ops", reason="duplicate")
    assert rt.work_once() is None
    assert effects.model_calls() == [] and effects.calls() == []


def test_a_verdict_recorded_after_a_cancel_does_not_revive_the_run(
    rt: Runtime, effects: Effects
) -> None:
    run_id = start(rt, BIG)
    req = rt.run(run_id).review
    assert req is not None
    rt.cancel(run_id, by="ops", reason="stop")
    state = rt.state(run_id)
    late = ReviewDecided(
        req.review_id, "approve", "alice", "2026-03-02T10:20:00.000000Z", req.digest
    )
    rt.store.append(run_id, [late], expected_seq=state.seq, at="2026-03-02T10:20:00.000000Z")
    assert rt.state(run_id).status == "cancelled"
    assert rt.run(run_id).status == "cancelled"
    assert effects.calls() == []


def test_a_cancel_during_an_executor_call_still_records_what_it_did(
    rt: Runtime, db: Path, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_TEST_LEDGER", str(db))
    slow = {
        "executor": "tests.runs.domain:cancelled_meanwhile",
        "effect": "write",
        "args": {"type": "object"},
    }
    allow = {"id": "slow", "when": 'action.name == "slow"', "effect": "allow"}
    run_id = start(rt, [[["slow", {"n": 1}]]], actions={"slow": slow}, rules=[allow])
    state = rt.run(run_id)
    assert state.status == "cancelled"
    assert len(effects.applied()) == 1
    # the effect happened, so the ledger says so (after the cancel), and count() sees it
    types = [e.type for e in rt.store.events(run_id)]
    assert types[-2:] == ["run.cancelled", "action.completed"]
    assert [a["name"] for a in state.executed] == ["slow"]
    window = ("2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z")
    assert rt.store.count_executed("slow", {}, *window) == 1
    assert verify_run(rt.store, run_id) is None
    assert effects.model_calls(run_id) and len(effects.model_calls(run_id)) == 1


def test_an_admission_review_that_times_out_refuses_the_run(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "vip"})
    assert rt.run(run_id).status == "waiting"
    clock.advance(timedelta(hours=1, seconds=1))
    assert rt.work_once() == run_id
    state = rt.state(run_id)
    assert state.status == "refused"
    assert state.terminal is not None
    assert state.terminal.event.reason == "admission expired by system:timeout"  # type: ignore[attr-defined]
    assert effects.model_calls() == []


OUTCOME_REVIEW = {
    "id": "check-two-writes",
    "at": "outcome",
    "when": "size(outcome.actions) > 1",
    "effect": "review",
    "reason": "Two writes in one run",
}


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_an_outcome_review_completes_or_compensates_the_run(
    rt: Runtime, effects: Effects, verdict: str
) -> None:
    from charter.runs.replay import replay

    run_id = rt.submit(contract(rules=[OUTCOME_REVIEW]), {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "waiting"
    assert state.review is not None and state.review.kind == "outcome"
    assert len(effects.applied()) == 2
    rt.decide_review(state.review.review_id, verdict, by="lead", comment="checked")
    state = rt.run(run_id)
    if verdict == "approve":
        assert state.status == "completed"
        assert effects.undone() and set(effects.undone().values()) == {0}
    else:
        assert state.status == "failed"
        assert set(effects.undone().values()) == {1}
        assert state.terminal is not None
        assert "outcome reject by lead" in state.terminal.event.error  # type: ignore[attr-defined]
    result = replay(rt.store, rt.contract_for(state.policy_hash), run_id)
    assert result.agrees and result.decisions == 4
