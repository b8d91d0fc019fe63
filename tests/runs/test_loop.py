"""The run loop: submission, budgets, proposal validation, compensation, freshness, failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from charter.errors import CharterError, IdempotencyConflictError, UsageError
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionStarted,
    BudgetExceeded,
    ChannelRead,
    CompensationStarted,
    Event,
    ModelCalled,
    ProposalRejected,
    RunEscalated,
    RunFailed,
    RunSubmitted,
)
from charter.models.base import ModelRequest, ModelResponse, Usage
from charter.primitives import digest
from charter.runs.replay import replay
from charter.runs.runtime import Runtime
from tests.runs import domain
from tests.runs.domain import Clock, Effects, contract

E = TypeVar("E", bound=Event)


def events_of(rt: Runtime, run_id: str, cls: type[E]) -> list[E]:
    return [e.event for e in rt.store.events(run_id) if isinstance(e.event, cls)]


def run_plan(rt: Runtime, plan: list[Any], **changes: Any) -> str:
    run_id = rt.submit(contract(script="planned", **changes), {"item": "crate", "plan": plan})
    rt.run(run_id)
    return run_id


# -- submission ---------------------------------------------------------------------------
def test_submitting_with_the_same_idempotency_key_returns_the_same_run(
    rt: Runtime, effects: Effects
) -> None:
    c = contract()
    first = rt.submit(c, {"item": "bolt"}, idempotency_key="ticket-7")
    again = rt.submit(c, {"item": "bolt"}, idempotency_key="ticket-7")
    other = rt.submit(c, {"item": "bolt"}, idempotency_key="ticket-8")
    assert first == again != other
    assert sorted(r.run_id for r in rt.store.list_runs()) == sorted([first, other])
    [submitted] = events_of(rt, first, RunSubmitted)
    assert submitted.input == {"item": "bolt"} and submitted.idempotency_key == "ticket-7"


@pytest.mark.parametrize(
    ("changes", "different"),
    [
        ({"payload": {"item": "nut"}}, "input"),
        ({"context": {"vip": True}}, "context"),
        ({"contract": {"budget": {"max_actions": 1}}}, "contract"),
        ({"model": "scripted:tests.runs.domain:final_answer"}, "model"),
    ],
)
def test_a_key_reused_for_another_submission_is_refused_naming_both_hashes(
    rt: Runtime, effects: Effects, changes: dict[str, Any], different: str
) -> None:
    first = rt.submit(contract(), {"item": "bolt"}, idempotency_key="ticket-7")
    c = contract(**changes.get("contract", {}))
    with pytest.raises(IdempotencyConflictError) as caught:
        rt.submit(
            c,
            changes.get("payload", {"item": "bolt"}),
            context=changes.get("context"),
            model=changes.get("model"),
            idempotency_key="ticket-7",
        )
    message = str(caught.value)
    assert f"already names run {first}" in message
    assert f"input sha256:{digest({'item': 'bolt'})[:16]}" in message
    assert f"(different: {different})" in message
    assert [r.run_id for r in rt.store.list_runs()] == [first]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "input: 'item' is a required property"),
        ({"item": 5}, "input.item: 5 is not of type 'string'"),
        ({"item": "x", "plan": "soon"}, "input.plan: 'soon' is not of type 'array'"),
    ],
)
def test_invalid_input_is_refused_and_nothing_is_written(
    rt: Runtime, effects: Effects, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match="does not match the input schema of ops@1") as info:
        rt.submit(contract(), payload)
    assert message in str(info.value)
    assert rt.store.list_runs() == []


def test_code_the_contract_names_is_checked_at_submission(rt: Runtime, effects: Effects) -> None:
    c = contract(actions={"explode": {"executor": "tests.runs.domain:no_such_function"}})
    with pytest.raises(CharterError, match="no callable 'no_such_function'"):
        rt.submit(c, {"item": "bolt"})
    assert rt.store.list_runs() == []


def test_a_finished_run_is_left_alone(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    assert rt.run(run_id).status == "completed"
    seq = rt.store.get_run(run_id).last_seq
    assert rt.run(run_id).status == "completed"
    assert rt.work_once() is None
    assert rt.store.get_run(run_id).last_seq == seq
    assert len(effects.applied()) == 2


def test_a_worker_processes_queued_runs_and_stops_at_max_runs(
    rt: Runtime, effects: Effects
) -> None:
    ids = [rt.submit(contract(), {"item": f"i{n}"}) for n in range(3)]
    assert rt.work(idle_exit=0, max_runs=2) == 2
    assert rt.work(idle_exit=0) == 1
    assert {rt.state(i).status for i in ids} == {"completed"}
    assert len(effects.applied()) == 6


# -- budgets ------------------------------------------------------------------------------
def test_max_model_calls_stops_the_run_before_the_call_over_the_limit(
    rt: Runtime, effects: Effects
) -> None:
    c = contract(script="keep_writing", budget={"max_model_calls": 2, "max_actions": 10})
    run_id = rt.submit(c, {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "escalated"
    assert len(effects.model_calls()) == 2
    assert len(events_of(rt, run_id, ModelCalled)) == 2
    [exceeded] = events_of(rt, run_id, BudgetExceeded)
    assert (exceeded.limit, exceeded.allowed, exceeded.used, exceeded.requested) == (
        "max_model_calls",
        2,
        2,
        1,
    )
    [esc] = events_of(rt, run_id, RunEscalated)
    assert "budget max_model_calls exceeded" in esc.reason
    assert esc.reviewers == ["ops-leads"]
    assert len(effects.applied()) == 2


def test_max_actions_stops_the_run_before_the_action_over_the_limit(
    rt: Runtime, effects: Effects
) -> None:
    c = contract(script="keep_writing", budget={"max_model_calls": 10, "max_actions": 2})
    run_id = rt.submit(c, {"item": "bolt"})
    assert rt.run(run_id).status == "escalated"
    assert len(effects.applied()) == 2
    [exceeded] = events_of(rt, run_id, BudgetExceeded)
    assert (exceeded.limit, exceeded.used, exceeded.requested) == ("max_actions", 2, 1)
    # the third proposal was made, but its action was neither decided nor started
    assert len(events_of(rt, run_id, ModelCalled)) == 3
    assert len(events_of(rt, run_id, ActionDecided)) == 2


def test_max_tokens_reserves_before_each_call(rt: Runtime, effects: Effects) -> None:
    c = contract(script="keep_writing", budget={"max_tokens": 3000, "max_model_calls": 50})
    run_id = rt.submit(c, {"item": "bolt"})
    assert rt.run(run_id).status == "escalated"
    called = events_of(rt, run_id, ModelCalled)
    used = sum(m.input_tokens + m.output_tokens for m in called)
    [exceeded] = events_of(rt, run_id, BudgetExceeded)
    assert exceeded.limit == "max_tokens"
    assert exceeded.used == used <= 3000 < exceeded.used + exceeded.requested
    assert len(effects.model_calls()) == len(called) >= 1


def test_a_zero_token_budget_makes_no_model_call(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(budget={"max_tokens": 0}), {"item": "bolt"})
    assert rt.run(run_id).status == "escalated"
    assert effects.model_calls() == []
    assert events_of(rt, run_id, BudgetExceeded)[0].limit == "max_tokens"


class PricedProvider:
    """A provider that charges for every call, to exercise the cost budget."""

    name = "priced"
    model = "priced-1"

    def __init__(self, script: Callable[[ModelRequest], Any], cost: float) -> None:
        self.script = script
        self.cost = cost
        self.calls = 0

    def estimate(self, request: ModelRequest) -> Usage:
        return Usage(10, 10, self.cost)

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        return ModelResponse(json.dumps(self.script(request)), Usage(9, 9, self.cost), self.model)


def test_max_cost_usd_stops_the_run_before_it_overspends(
    db: Any, clock: Clock, effects: Effects
) -> None:
    provider = PricedProvider(domain.keep_writing, cost=0.10)
    rt = Runtime(str(db), clock=clock, providers={"priced": provider})
    c = contract(model={"provider": "priced", "script": None}, budget={"max_cost_usd": 0.25})
    run_id = rt.submit(c, {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "escalated"
    assert provider.calls == 2
    assert state.cost_usd == pytest.approx(0.2)
    [exceeded] = events_of(rt, run_id, BudgetExceeded)
    assert exceeded.limit == "max_cost_usd"
    assert [m.provider for m in events_of(rt, run_id, ModelCalled)] == ["priced", "priced"]


def test_an_unconfigured_provider_fails_the_run_with_a_clear_reason(
    rt: Runtime, effects: Effects
) -> None:
    # (openai and anthropic are real providers now: tests/models covers them unconfigured)
    run_id = rt.submit(contract(model={"provider": "watsonx", "script": None}), {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "failed"
    [failed] = events_of(rt, run_id, RunFailed)
    assert "model provider 'watsonx' is not available" in failed.error


# -- proposal validation ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            "hallucinate",
            "actions[0]: unknown action 'launch_missiles'; available: explode, send_email, undo, write",
        ),
        ("bad_args", "actions[0] (write): args.qty: 'lots' is not of type 'integer'"),
        ("malformed", "output is not valid JSON"),
    ],
)
def test_invalid_proposals_are_rejected_with_reasons_fed_back_then_the_run_escalates(
    rt: Runtime, effects: Effects, script: str, reason: str
) -> None:
    run_id = rt.submit(contract(script=script), {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "escalated"
    rejected = events_of(rt, run_id, ProposalRejected)
    assert [r.attempt for r in rejected] == [1, 2, 3]  # one call and max_proposal_retries: 2
    for r in rejected:
        assert any(reason in x for x in r.reasons), r.reasons
    calls = effects.model_calls(run_id)
    assert [c["attempt"] for c in calls] == [1, 2, 3]
    assert calls[0]["feedback"] == []
    assert all(any(reason in f for f in c["feedback"]) for c in calls[1:])
    [esc] = events_of(rt, run_id, RunEscalated)
    assert esc.reason.startswith("no valid proposal after 3 attempts")
    # nothing invalid ever reached policy or an executor
    assert events_of(rt, run_id, ActionDecided) == []
    assert effects.calls() == []


def test_a_proposal_with_one_hallucinated_action_is_rejected_whole(
    rt: Runtime, effects: Effects
) -> None:
    plan = [[["write", {"item": "crate", "qty": 1}], ["teleport", {"to": "mars"}]]]
    run_id = run_plan(rt, plan, budget={"max_proposal_retries": 0})
    assert rt.state(run_id).status == "escalated"
    [rejected] = events_of(rt, run_id, ProposalRejected)
    assert rejected.reasons == [
        "actions[1]: unknown action 'teleport'; available: explode, send_email, undo, write"
    ]
    assert effects.calls() == []


def test_a_corrected_retry_is_accepted_and_saw_the_feedback(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(script="malformed_then_final"), {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "completed"
    assert len(events_of(rt, run_id, ProposalRejected)) == 1
    assert state.proposal is not None
    assert any("not valid JSON" in f for f in state.proposal["final"]["feedback"])
    # the reasons are in the prompt the model got, too
    prompts = [m.prompt for m in events_of(rt, run_id, ModelCalled)]
    assert "Your previous answer was invalid" not in prompts[0]
    assert "Your previous answer was invalid" in prompts[1]


# -- failure and compensation -------------------------------------------------------------
def test_a_failure_after_earlier_writes_compensates_them_in_reverse_order(
    rt: Runtime, effects: Effects
) -> None:
    plan = [
        [
            ["write", {"item": "a", "qty": 1}],
            ["write", {"item": "b", "qty": 2}],
            ["explode", {}],
        ]
    ]
    run_id = run_plan(rt, plan)
    state = rt.state(run_id)
    assert state.status == "failed"
    [comp] = events_of(rt, run_id, CompensationStarted)
    assert comp.steps == [2, 1]
    assert "action explode failed: RuntimeError: the warehouse is on fire" in comp.reason
    undos = [c for c in effects.calls() if c["action"] == "undo"]
    written = {
        x["item"]: x
        for x in (e.result for e in events_of(rt, run_id, ActionCompleted))
        if "item" in x
    }
    assert [(c["key"], c["args"]) for c in undos] == [
        (f"{run_id}:2:compensate", {"effect_id": written["b"]["effect_id"]}),
        (f"{run_id}:1:compensate", {"effect_id": written["a"]["effect_id"]}),
    ]
    assert all(c["compensation"] for c in undos)
    assert effects.undone() == {written["a"]["effect_id"]: 1, written["b"]["effect_id"]: 1}
    [failed] = events_of(rt, run_id, RunFailed)
    assert "compensated steps [2, 1]" in failed.error
    assert [e.compensation for e in events_of(rt, run_id, ActionStarted)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_a_failure_with_nothing_to_compensate_fails_the_run(rt: Runtime, effects: Effects) -> None:
    run_id = run_plan(rt, [[["explode", {}]]])
    assert rt.state(run_id).status == "failed"
    assert events_of(rt, run_id, CompensationStarted) == []
    [failed] = events_of(rt, run_id, ActionFailed)
    assert failed.error == "RuntimeError: the warehouse is on fire"


def test_an_outcome_denied_by_policy_compensates_the_writes(rt: Runtime, effects: Effects) -> None:
    rule = {
        "id": "one-write-only",
        "at": "outcome",
        "when": "size(outcome.actions) > 1",
        "effect": "deny",
        "reason": "At most one write per run",
    }
    run_id = rt.submit(contract(rules=[rule]), {"item": "bolt"})
    assert rt.run(run_id).status == "failed"
    assert events_of(rt, run_id, CompensationStarted)[0].steps == [2, 1]
    assert sorted(effects.undone().values()) == [1, 1]
    assert "outcome denied: At most one write per run" in events_of(rt, run_id, RunFailed)[0].error


def test_an_executor_returning_non_json_fails_the_run_but_its_completion_is_kept(
    rt: Runtime, effects: Effects
) -> None:
    """The executor returned, so its effect happened: the completion is recorded (count()
    and compensation must know), the result as the closest JSON value, and the run stops."""
    weird = {
        "executor": "tests.runs.domain:unserialisable",
        "effect": "read",
        "args": {"type": "object"},
    }
    allow = {"id": "weird", "when": 'action.name == "weird"', "effect": "allow"}
    run_id = run_plan(rt, [[["weird", {}]]], actions={"weird": weird}, rules=[allow])
    assert rt.state(run_id).status == "failed"
    assert events_of(rt, run_id, ActionFailed) == []
    [done] = events_of(rt, run_id, ActionCompleted)
    assert isinstance(done.result["when"], str)  # the datetime, recorded as its text
    assert done.result_changes == ["$.when: a datetime recorded as text"]
    [failed] = events_of(rt, run_id, RunFailed)
    assert "result of weird cannot be used as returned" in failed.error
    assert rt.store.count_executed("weird", {}, "2000-01-01", "2100-01-01") == 1


def test_a_reader_that_raises_fails_the_run_and_the_worker_carries_on(
    rt: Runtime, effects: Effects
) -> None:
    broken = contract(channels={"profile": {"reader": "tests.runs.domain:broken_reader"}})
    bad = rt.submit(broken, {"item": "bolt"})
    good = rt.submit(contract(), {"item": "nut"})
    assert rt.work(idle_exit=0) == 2
    assert rt.state(bad).status == "failed"
    assert rt.store.get_run(bad).status == "failed"
    [failed] = events_of(rt, bad, RunFailed)
    assert failed.error == "run stopped by an error: ConnectionError: the CRM is down"
    assert rt.state(good).status == "completed"


def test_a_model_that_raises_after_a_write_compensates_it(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(script="write_then_fail"), {"item": "bolt"})
    assert rt.run(run_id).status == "failed"
    assert events_of(rt, run_id, CompensationStarted)[0].steps == [1]
    assert list(effects.undone().values()) == [1]
    assert (
        "ConnectionError: model provider unavailable" in events_of(rt, run_id, RunFailed)[0].error
    )


# -- freshness ----------------------------------------------------------------------------
def admitted_after(rt: Runtime, clock: Clock, delay: timedelta, **changes: Any) -> str:
    """A run whose channels were read at admission, acting ``delay`` later (via an admit review)."""
    run_id = rt.submit(contract(**changes), {"item": "bolt", "tier": "vip"})
    review = rt.run(run_id).review
    assert review is not None and review.kind == "admit"
    clock.advance(delay)
    rt.decide_review(review.review_id, "approve", by="alice")
    rt.run(run_id)
    return run_id


STALE = {
    "id": "stale-stock",
    "when": 'action.name == "write" && context.stock.version < 2',
    "effect": "deny",
    "reason": "decided on stale stock",
}


def test_a_channel_older_than_max_age_is_re_read_before_an_action_that_reads_it(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = admitted_after(rt, clock, timedelta(minutes=10), rules=[STALE])
    state = rt.state(run_id)
    assert state.status == "completed"
    reads = [(r.channel, r.reason) for r in events_of(rt, run_id, ChannelRead)]
    assert reads == [("profile", "admit"), ("stock", "admit"), ("stock", "freshness")]
    assert effects.reads("stock") == 2 and effects.reads("profile") == 1
    # the re-read came before the first decision, and policy decided on the fresh data
    types = [e.type for e in rt.store.events(run_id)]
    assert types.index("channel.read", 4) < types.index("action.decided")
    assert len(effects.applied()) == 2
    assert replay(rt.store, rt.contract_for(state.policy_hash), run_id).agrees


def test_a_channel_within_max_age_is_not_re_read(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = admitted_after(rt, clock, timedelta(minutes=2))
    assert rt.state(run_id).status == "completed"
    assert [r.reason for r in events_of(rt, run_id, ChannelRead)] == ["admit", "admit"]
    assert effects.reads("stock") == 1


def test_a_stale_channel_is_not_re_read_for_an_action_that_does_not_read_it(
    rt: Runtime, clock: Clock, effects: Effects
) -> None:
    run_id = rt.submit(
        contract(script="email_then_finish"),
        {"item": "bolt", "tier": "vip", "to": domain.PROFILE_EMAIL},
    )
    review = rt.run(run_id).review
    assert review is not None
    clock.advance(timedelta(minutes=50))
    rt.decide_review(review.review_id, "approve", by="alice")
    assert rt.run(run_id).status == "completed"
    assert effects.reads("stock") == 1
    assert [a for _, a, _ in effects.applied()] == ["send_email"]
