"""Autonomy levels overlay policy: shadow never executes, assist sends every action to a person."""

from __future__ import annotations

from charter.ledger.events import ActionDecided, ActionShadowed, ReviewRequested
from charter.runs.replay import replay
from charter.runs.runtime import Runtime
from tests.runs.domain import Effects, contract


def test_shadow_mode_decides_but_never_executes(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(autonomy={"level": "shadow"}), {"item": "crate"})
    state = rt.run(run_id)
    assert state.status == "completed"
    assert effects.applied() == []
    events = [e.event for e in rt.store.events(run_id)]
    decided = [e for e in events if isinstance(e, ActionDecided)]
    shadowed = [e for e in events if isinstance(e, ActionShadowed)]
    assert len(decided) == 2 and {d.decision["effect"] for d in decided} == {"allow"}
    assert [(s.step, s.effect) for s in shadowed] == [(d.step, "allow") for d in decided]
    assert state.executed == []
    # the policy decision is recorded as policy made it, so replay agrees
    assert replay(rt.store, rt.contract_for(state.policy_hash), run_id).agrees


def test_assist_mode_sends_allowed_actions_to_review(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(autonomy={"level": "assist"}), {"item": "crate"})
    state = rt.run(run_id)
    approved = 0
    while state.status == "waiting":
        assert len(effects.applied()) == approved  # nothing runs before its approval
        assert state.review is not None
        assert state.review.effect == "review"
        assert "autonomy level assist: every action is reviewed" in state.review.reasons
        rt.decide_review(state.review.review_id, "approve", by="ann")
        approved += 1
        state = rt.run(run_id)
    assert state.status == "completed"
    assert approved == 2 and len(effects.applied()) == 2
    requests = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ReviewRequested)]
    assert len(requests) == 2


def test_autonomous_mode_executes_what_policy_allows(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(autonomy={"level": "autonomous"}), {"item": "crate"})
    assert rt.run(run_id).status == "completed"
    assert len(effects.applied()) == 2
