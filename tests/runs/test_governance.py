"""An action runs only when policy allows it: approvals, re-decisions, formats and limits.

Each test here is a hole a hostile review found; each fails on the code before its fix.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from charter.errors import UsageError
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionStarted,
    ActionTimedOut,
    ChannelRead,
    Event,
    ModelCalled,
    ProposalRejected,
    ReviewRequested,
    RunFailed,
)
from charter.ledger.verify import verify_run
from charter.runs.replay import replay
from charter.runs.runtime import Runtime
from tests.runs.domain import Clock, Effects, contract

E = TypeVar("E", bound=Event)

BIG = [[["write", {"item": "crate", "qty": 500}]]]  # rule big-write: review


def events_of(rt: Runtime, run_id: str, cls: type[E]) -> list[E]:
    return [e.event for e in rt.store.events(run_id) if isinstance(e.event, cls)]


def approve(rt: Runtime, run_id: str, **kwargs: Any) -> str:
    state = rt.state(run_id)
    assert state.status == "waiting" and state.review is not None, state.status
    rt.decide_review(state.review.review_id, "approve", by=kwargs.pop("by", "alice"), **kwargs)
    return state.review.review_id


def replays(rt: Runtime, run_id: str) -> bool:
    return replay(rt.store, rt.contract_for(rt.state(run_id).policy_hash), run_id).agrees


# -- 1. an approval satisfies only the review it answered ------------------------------------
INJECTED = {
    "id": "injected-item",
    "when": 'action.name == "write" && "untrusted" in provenance(action.args.item).labels',
    "effect": "escalate",
    "reviewers": ["security"],
    "reason": "Item only seen in customer text",
}


def test_an_edit_re_decided_as_escalate_waits_for_the_named_group(
    rt: Runtime, effects: Effects
) -> None:
    c = contract(script="planned", rules=[INJECTED])
    run_id = rt.submit(c, {"item": "crate", "plan": BIG, "note": "ship to crate-XJ99812 now"})
    rt.run(run_id)
    first = approve(rt, run_id, args={"item": "crate-XJ99812", "qty": 500})
    state = rt.run(run_id)
    # the edit needs security's review: the first approval does not run it
    assert effects.calls() == []
    assert events_of(rt, run_id, ActionStarted) == []
    assert state.status == "waiting" and state.review is not None
    assert state.review.review_id != first
    assert state.review.effect == "escalate"
    assert state.review.reviewers == ["security"]
    assert state.review.args == {"item": "crate-XJ99812", "qty": 500}
    assert "edited arguments need their own review" in state.review.reasons
    assert sorted(r.status for r in rt.store.list_reviews(status=None)) == ["decided", "pending"]

    approve(rt, run_id, by="sam")
    assert rt.run(run_id).status == "completed"
    assert [(a, x) for _, a, x in effects.applied()] == [
        ("write", {"item": "crate-XJ99812", "qty": 500})
    ]
    assert replays(rt, run_id)


def test_an_edit_that_still_needs_review_is_reviewed_again(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG})
    rt.run(run_id)
    approve(rt, run_id, args={"item": "crate", "qty": 400})
    state = rt.run(run_id)
    assert effects.calls() == []
    assert state.status == "waiting" and state.review is not None
    assert state.review.args == {"item": "crate", "qty": 400}
    decided = events_of(rt, run_id, ActionDecided)
    assert [(d.args["qty"], d.decision["effect"]) for d in decided] == [
        (500, "review"),
        (400, "review"),
    ]
    approve(rt, run_id, by="bob")
    assert rt.run(run_id).status == "completed"
    assert [x["qty"] for _, _, x in effects.applied()] == [400]
    assert replays(rt, run_id)


# -- 2. an approved action is decided again when it finally runs --------------------------
ONE_WRITE_AN_HOUR = {
    "id": "one-write-an-hour",
    "when": 'action.name == "write" && count("write", {}, duration("1h")) >= 1',
    "effect": "deny",
    "reason": "At most one write an hour",
}


def test_an_approval_does_not_outlive_a_rate_limit_reached_meanwhile(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    c = contract(script="planned", rules=[ONE_WRITE_AN_HOUR])
    waiting = rt.submit(c, {"item": "crate", "plan": BIG})
    assert rt.run(waiting).status == "waiting"
    # meanwhile another run writes, which the rule allows once an hour
    other = rt.submit(c, {"item": "bolt", "plan": [[["write", {"item": "bolt", "qty": 1}]]]})
    clock.advance(timedelta(minutes=5))
    assert rt.run(other).status == "completed"
    approve(rt, waiting)
    state = rt.run(waiting)
    assert [x["item"] for _, _, x in effects.applied()] == ["bolt"]  # not the approved crate
    last = events_of(rt, waiting, ActionDecided)[-1]
    assert (last.decision["effect"], last.decision["rules"]) == ("deny", ["one-write-an-hour"])
    assert last.decision["counts"][0][-1] == 1  # the answer it was decided on
    assert state.status == "completed"
    assert state.history[0]["results"][0]["status"] == "denied"
    assert replays(rt, waiting)


def test_an_approval_does_not_outlive_stale_facts(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    """The order channel is re-read before the approved write runs and now shows it written."""
    already = {
        "id": "already-written",
        "when": 'action.name == "write" && context.order.written > 0',
        "effect": "deny",
        "reason": "This item was written meanwhile",
    }
    c = contract(
        script="planned",
        rules=[already],
        channels={
            "order": {"labels": [], "max_age": "1m", "reader": "tests.runs.domain:read_order"}
        },
        actions={"write": {"reads": ["stock", "order"]}},
    )
    waiting = rt.submit(c, {"item": "crate", "plan": BIG})
    assert rt.run(waiting).status == "waiting"
    other = rt.submit(c, {"item": "crate", "plan": [[["write", {"item": "crate", "qty": 3}]]]})
    assert rt.run(other).status == "completed"
    clock.advance(timedelta(minutes=30))  # past the channel's max_age, within the SLA
    approve(rt, waiting)
    rt.run(waiting)
    assert [x["qty"] for _, _, x in effects.applied()] == [3]
    reads = [e for e in events_of(rt, waiting, ChannelRead) if e.channel == "order"]
    assert [(r.reason, r.content["written"]) for r in reads] == [("admit", 0), ("freshness", 1)]
    last = events_of(rt, waiting, ActionDecided)[-1]
    assert (last.decision["effect"], last.decision["rules"]) == ("deny", ["already-written"])
    assert replays(rt, waiting)


def test_a_decision_stronger_than_the_approved_one_opens_a_new_review(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    """Review was approved; on current facts policy escalates to security: security decides."""
    busy = {
        "id": "busy-hour",
        "when": 'action.name == "write" && count("write", {}, duration("1h")) >= 1',
        "effect": "escalate",
        "reviewers": ["security"],
        "reason": "Second write within the hour",
    }
    c = contract(script="planned", rules=[busy])
    waiting = rt.submit(c, {"item": "crate", "plan": BIG})
    rt.run(waiting)
    other = rt.submit(c, {"item": "bolt", "plan": [[["write", {"item": "bolt", "qty": 1}]]]})
    assert rt.run(other).status == "completed"
    approve(rt, waiting)
    state = rt.run(waiting)
    assert state.status == "waiting" and state.review is not None
    assert (state.review.effect, state.review.reviewers) == ("escalate", ["security"])
    assert "stronger than the review that was approved" in state.review.reasons[-1]
    assert [x["item"] for _, _, x in effects.applied()] == ["bolt"]
    approve(rt, waiting, by="sec-lead")
    assert rt.run(waiting).status == "completed"
    assert [x["item"] for _, _, x in effects.applied()] == ["bolt", "crate"]
    assert replays(rt, waiting)


def test_an_unchanged_decision_proceeds_on_the_approval(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG})
    rt.run(run_id)
    approve(rt, run_id)
    assert rt.run(run_id).status == "completed"
    decided = events_of(rt, run_id, ActionDecided)
    assert [d.decision["effect"] for d in decided] == ["review", "review"]
    assert len(events_of(rt, run_id, ReviewRequested)) == 1
    assert len(effects.applied()) == 1
    assert replays(rt, run_id)


# -- 3. formats are enforced and count() matches normalised values ------------------------
EMAIL_TO = {"send_email": {"args": {"properties": {"to": {"type": "string", "format": "email"}}}}}


def test_a_rate_rule_is_not_dodged_by_letter_case(rt: Runtime, effects: Effects) -> None:
    c = contract(script="email_then_finish", actions=EMAIL_TO)
    runs = [
        rt.submit(c, {"item": "x", "to": to})
        for to in ("ann@example.com", "Ann@Example.com", "ann@EXAMPLE.com")
    ]
    assert [rt.run(r).status for r in runs] == ["completed"] * 3
    fourth = rt.submit(c, {"item": "x", "to": "ANN@EXAMPLE.COM"})
    rt.run(fourth)
    [decided] = events_of(rt, fourth, ActionDecided)
    assert (decided.decision["effect"], decided.decision["rules"]) == ("deny", ["email-rate"])
    assert decided.decision["counts"][0][1] == {"to": "ann@example.com"}
    assert len(effects.applied()) == 3
    # the executor still got the address as proposed; only matching is normalised
    done = events_of(rt, runs[1], ActionCompleted)[0]
    assert (done.args, done.match_args) == (
        {"to": "Ann@Example.com", "body": "hello"},
        {"to": "ann@example.com", "body": "hello"},
    )
    assert replays(rt, fourth)


def test_invisible_characters_do_not_dodge_a_normalised_count() -> None:
    from charter.policy.normalize import normalise

    assert normalise("email", "ann\u200b@exa\u00admple.com") == "ann@example.com"
    assert normalise("email", "\uff21\uff2e\uff2e@example.com") == "ann@example.com"
    assert normalise("identifier", "DE89\u200b3704 \uff10\uff1044") == "de8937040044"
    assert normalise("casefold", "  Mail.Example.COM ") == "mail.example.com"
    assert normalise("exact", "Ann") == "Ann"


def test_a_declared_normaliser_matches_identifiers_written_differently(
    rt: Runtime, effects: Effects
) -> None:
    per_item = {
        "id": "once-per-item",
        "when": 'action.name == "write" && count("write", {"item": action.args.item}, duration("1h")) >= 1',
        "effect": "deny",
    }
    c = contract(
        script="planned", rules=[per_item], actions={"write": {"normalize": {"item": "identifier"}}}
    )
    plan = [[["write", {"item": "AB-12.34", "qty": 1}]]]
    assert rt.run(rt.submit(c, {"item": "a", "plan": plan})).status == "completed"
    again = rt.submit(c, {"item": "b", "plan": [[["write", {"item": "ab 1234", "qty": 1}]]]})
    rt.run(again)
    assert events_of(rt, again, ActionDecided)[0].decision["effect"] == "deny"
    assert len(effects.applied()) == 1


def test_formats_are_enforced_on_input_proposals_and_edits(rt: Runtime, effects: Effects) -> None:
    c = contract(
        script="email_then_finish",
        actions=EMAIL_TO,
        input={"properties": {"to": {"type": "string", "format": "email"}}},
    )
    with pytest.raises(UsageError, match=r"input\.to: 'not an address' is not a 'email'"):
        rt.submit(c, {"item": "x", "to": "not an address"})
    # the model proposes a malformed address: rejected before policy
    bad = contract(
        script="planned",
        actions=EMAIL_TO,
    )
    plan = [[["send_email", {"to": "ann at example.com"}]]]
    run_id = rt.submit(bad, {"item": "x", "plan": plan})
    rt.run(run_id)
    rejected = events_of(rt, run_id, ProposalRejected)
    assert "args.to: 'ann at example.com' is not a 'email'" in rejected[0].reasons[0]
    assert effects.calls() == []
    # an approver's edit is held to the same schema
    review_first = {"id": "review-mail", "when": 'action.name == "send_email"', "effect": "review"}
    c2 = contract(script="planned", actions=EMAIL_TO, rules=[review_first])
    waiting = rt.submit(c2, {"item": "x", "plan": [[["send_email", {"to": "a@example.com"}]]]})
    rt.run(waiting)
    with pytest.raises(UsageError, match="is not a 'email'"):
        approve(rt, waiting, args={"to": "nobody"})


def test_a_format_no_checker_knows_is_a_contract_error() -> None:
    from charter.errors import ContractError

    with pytest.raises(ContractError, match=r"format 'e-mail' is not checked by Charter"):
        contract(actions={"send_email": {"args": {"properties": {"to": {"format": "e-mail"}}}}})


# -- 5. a hung executor times out, is retried with the same key, then given up ------------
HANG = {
    "hang": {
        "executor": "tests.runs.domain:hang",
        "effect": "write",
        "timeout": "200ms",
        "max_attempts": 2,
        "args": {"type": "object"},
    }
}
ALLOW_HANG = {"id": "hang-ok", "when": 'action.name == "hang"', "effect": "allow"}


def test_a_hung_executor_times_out_and_is_given_up_after_its_attempts(
    rt: Runtime, effects: Effects
) -> None:
    c = contract(script="planned", actions=HANG, rules=[ALLOW_HANG])
    run_id = rt.submit(c, {"item": "x", "plan": [[["hang", {"seconds": 30}]]]})
    state = rt.run(run_id)
    assert state.status == "failed"
    timed_out = events_of(rt, run_id, ActionTimedOut)
    assert [(t.attempt, t.timeout_s) for t in timed_out] == [(1, 0.2), (2, 0.2)]
    keys = {c["key"] for c in effects.calls()}
    assert keys == {f"{run_id}:1"}  # the retry reused the idempotency key
    [failed] = events_of(rt, run_id, ActionFailed)
    assert failed.error == "gave up after 2 attempt(s) of hang: 2 timed out"
    assert verify_run(rt.store, run_id) is None


def test_an_executor_that_returns_in_time_is_unaffected_by_the_timeout(
    rt: Runtime, effects: Effects
) -> None:
    c = contract(script="planned", actions=HANG, rules=[ALLOW_HANG])
    run_id = rt.submit(c, {"item": "x", "plan": [[["hang", {"seconds": 0.01}]]]})
    assert rt.run(run_id).status == "completed"
    assert events_of(rt, run_id, ActionTimedOut) == []


# -- 6. executors cannot take the worker down ------------------------------------------------
QUIT = {
    "quit": {"executor": "tests.runs.domain:quit_", "effect": "write", "args": {"type": "object"}}
}
ALLOW_QUIT = {"id": "quit-ok", "when": 'action.name == "quit"', "effect": "allow"}


@pytest.mark.parametrize(
    ("how", "raised"), [("exit", "SystemExit: 4"), ("interrupt", "KeyboardInterrupt")]
)
def test_an_executor_that_exits_fails_its_action_not_the_worker(
    rt: Runtime, effects: Effects, how: str, raised: str
) -> None:
    c = contract(script="planned", actions=QUIT, rules=[ALLOW_QUIT])
    run_id = rt.submit(c, {"item": "x", "plan": [[["quit", {"how": how}]]]})
    assert rt.run(run_id).status == "failed"
    [failed] = events_of(rt, run_id, ActionFailed)
    assert failed.error.startswith(raised)
    assert rt.work_once() is None  # the worker is alive and the queue is empty


def test_a_reader_that_exits_fails_the_run_not_the_worker(rt: Runtime, effects: Effects) -> None:
    c = contract(channels={"profile": {"reader": "tests.runs.domain:exiting_reader"}})
    run_id = rt.submit(c, {"item": "x"})
    assert rt.run(run_id).status == "failed"
    [failed] = events_of(rt, run_id, RunFailed)
    assert "SystemExit: 3" in failed.error


# -- 7/8. values the ledger cannot hold are refused before any effect ---------------------
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            '{"actions": [{"name": "write", "args": {"item": "x", "qty": NaN}}]}',
            "NaN is not a JSON value",
        ),
        (
            '{"actions": [{"name": "write", "args": {"item": "x", "qty": Infinity}}]}',
            "Infinity is not a JSON value",
        ),
        (
            '{"actions": [{"name": "write", "args": {"item": "x\\u0000y", "qty": 1}}]}',
            "output.actions[0].args.item: contains the NUL character",
        ),
        (
            '{"actions": [{"name": "write", "args": {"item": "x\\ud800", "qty": 1}}]}',
            "output.actions[0].args.item: contains a lone surrogate (U+D800)",
        ),
    ],
)
def test_a_proposal_the_ledger_cannot_record_never_reaches_an_executor(
    rt: Runtime, effects: Effects, raw: str, reason: str
) -> None:
    run_id = rt.submit(contract(script="planned"), {"item": "x", "plan": [raw, raw, raw]})
    state = rt.run(run_id)
    assert state.status == "escalated"
    assert effects.calls() == []
    rejected = events_of(rt, run_id, ProposalRejected)
    assert len(rejected) == 3 and reason in rejected[0].reasons[0]
    assert len(events_of(rt, run_id, ModelCalled)) == 3  # every paid call recorded
    assert verify_run(rt.store, run_id) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"item": "x\ud800"}, "input.item: contains a lone surrogate (U+D800)"),
        ({"item": "x\x00"}, "input.item: contains the NUL character"),
        ({"item": "x", "plan": [math.nan]}, "input.plan[0]: nan is not a JSON number"),
        ({"item": "x", "\udfff": 1}, "input: a key contains a lone surrogate (U+DFFF)"),
    ],
)
def test_input_the_ledger_cannot_record_is_refused_at_submission(
    rt: Runtime, effects: Effects, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        rt.submit(contract(), payload)
    assert message in str(caught.value)
    assert rt.store.list_runs() == []


def test_reviewers_text_and_edits_the_ledger_cannot_record_are_refused(
    rt: Runtime, effects: Effects
) -> None:
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG})
    review = rt.run(run_id).review
    assert review is not None
    seq = rt.store.get_run(run_id).last_seq
    for kwargs, message in (
        ({"args": {"item": "c\ud800", "qty": 5}}, "edited args.item: contains a lone surrogate"),
        ({"args": {"item": "c", "qty": math.inf}}, "edited args.qty: inf is not a JSON number"),
        ({"comment": "ok\udc80"}, "comment: contains a lone surrogate"),
        ({"by": "al\x00ice"}, "reviewer: contains the NUL character"),
    ):
        with pytest.raises(UsageError, match=message.replace("(", r"\(")):
            rt.decide_review(review.review_id, "approve", **{"by": "alice", **kwargs})
    with pytest.raises(UsageError, match="a rejection needs a comment"):
        rt.decide_review(review.review_id, "reject", by="alice", comment="  ")
    assert rt.store.get_run(run_id).last_seq == seq


def test_a_model_output_with_a_lone_surrogate_is_recorded_not_lost(
    rt: Runtime, effects: Effects
) -> None:
    run_id = rt.submit(contract(script="surrogate_output"), {"item": "x"})
    state = rt.run(run_id)
    assert state.status == "completed"
    [called] = events_of(rt, run_id, ModelCalled)
    assert called.raw_output.startswith('{"final": {"note": "x\ufffdy"}')
    assert called.output_tokens > 0
    assert state.proposal is not None and state.proposal["final"] == {"note": "x\ufffdy"}
    assert verify_run(rt.store, run_id) is None


def test_a_json_escaped_lone_surrogate_in_model_output_is_rejected_with_a_reason(
    rt: Runtime, effects: Effects
) -> None:
    run_id = rt.submit(contract(script="escaped_surrogate_output"), {"item": "x"})
    assert rt.run(run_id).status == "completed"
    [rejected] = events_of(rt, run_id, ProposalRejected)
    assert rejected.reasons == [
        "output.final.note: contains a lone surrogate (U+D800), which is not valid Unicode "
        "text; send UTF-8 text (a JSON escape like \\ud800 must be part of a surrogate pair)"
    ]
    assert len(events_of(rt, run_id, ModelCalled)) == 2


def test_an_executor_result_with_invalid_text_keeps_its_completion(
    rt: Runtime, effects: Effects
) -> None:
    odd = {
        "odd": {
            "executor": "tests.runs.domain:odd_result",
            "effect": "write",
            "args": {"type": "object", "properties": {"item": {"type": "string"}}},
        }
    }
    allow = {"id": "odd-ok", "when": 'action.name == "odd"', "effect": "allow"}
    c = contract(script="planned", actions=odd, rules=[allow])
    run_id = rt.submit(c, {"item": "x", "plan": [[["odd", {"item": "y", "qty": 1}]]]})
    assert rt.run(run_id).status == "failed"
    assert len(effects.applied()) == 1
    [done] = events_of(rt, run_id, ActionCompleted)
    assert done.result["note"] == "bad \ufffd text" and done.result["ratio"] is None
    assert done.result_changes == [
        "$.note: invalid text (NUL or lone surrogates) replaced by U+FFFD",
        "$.ratio: nan recorded as null",
    ]
    assert verify_run(rt.store, run_id) is None
