"""Replay re-decides every recorded decision from the ledger alone, and must agree bit for bit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from charter.contract.model import Contract
from charter.ledger.verify import verify_run
from charter.primitives import canonical
from charter.runs.replay import ReplayResult, replay
from charter.runs.runtime import Runtime
from tests.ledger.tamper import edit_event, execute, query, rechain, seq_of
from tests.runs.domain import PROFILE_EMAIL, Clock, Effects, contract

BIG = [[["write", {"item": "crate", "qty": 500}]]]


def replayed(rt: Runtime, run_id: str) -> ReplayResult:
    return replay(rt.store, rt.contract_for(rt.store.get_run(run_id).policy_hash), run_id)


def planned(rt: Runtime, plan: list[Any], **changes: Any) -> str:
    return rt.submit(contract(script="planned", **changes), {"item": "crate", "plan": plan})


def review_of(rt: Runtime, run_id: str) -> str:
    review = rt.run(run_id).review
    assert review is not None
    return review.review_id


def test_replay_agrees_on_runs_of_every_shape(rt: Runtime, clock: Clock, effects: Effects) -> None:
    c = contract()
    runs: dict[str, str] = {}
    runs["plain"] = rt.submit(c, {"item": "bolt"})
    rt.run(runs["plain"])
    runs["refused"] = rt.submit(c, {"item": "bolt", "tier": "blocked"})
    rt.run(runs["refused"])
    runs["admit-review"] = rt.submit(c, {"item": "bolt", "tier": "vip"})
    rt.decide_review(review_of(rt, runs["admit-review"]), "approve", by="alice")
    rt.run(runs["admit-review"])
    runs["approved"] = planned(rt, BIG)
    rt.decide_review(review_of(rt, runs["approved"]), "approve", by="alice")
    rt.run(runs["approved"])
    runs["edited"] = planned(rt, BIG)
    rt.decide_review(review_of(rt, runs["edited"]), "approve", by="a", args={"item": "c", "qty": 9})
    rt.run(runs["edited"])
    runs["edited-denied"] = planned(rt, BIG)
    rt.decide_review(
        review_of(rt, runs["edited-denied"]), "approve", by="a", args={"item": "c", "qty": 9999}
    )
    rt.run(runs["edited-denied"])
    runs["rejected"] = planned(rt, BIG)
    rt.decide_review(review_of(rt, runs["rejected"]), "reject", by="bob", comment="no")
    rt.run(runs["rejected"])
    runs["compensated"] = planned(rt, [[["write", {"item": "a", "qty": 1}], ["explode", {}]]])
    rt.run(runs["compensated"])
    outcome_rule = {
        "id": "one-write",
        "at": "outcome",
        "when": "size(outcome.actions) > 1",
        "effect": "deny",
    }
    runs["outcome-denied"] = rt.submit(contract(rules=[outcome_rule]), {"item": "bolt"})
    rt.run(runs["outcome-denied"])
    for n in range(4):
        runs[f"email-{n}"] = rt.submit(
            contract(script="email_then_finish"), {"item": "m", "to": PROFILE_EMAIL}
        )
        rt.run(runs[f"email-{n}"])
    runs["expired"] = planned(rt, BIG)
    rt.run(runs["expired"])
    clock.advance(timedelta(hours=2))
    rt.work(idle_exit=0)

    statuses = {name: rt.state(r).status for name, r in runs.items()}
    assert statuses["refused"] == "refused"
    assert statuses["compensated"] == statuses["outcome-denied"] == "failed"
    assert {
        s for n, s in statuses.items() if n not in ("refused", "compensated", "outcome-denied")
    } == {"completed"}

    results = {name: replayed(rt, r) for name, r in runs.items()}
    assert {n: r.divergence for n, r in results.items() if not r.agrees} == {}
    assert results["plain"].decisions == 4  # admit, two actions, outcome
    assert results["refused"].decisions == 1
    assert results["edited"].decisions == 4  # admit, review, re-decision of the edit, outcome
    assert results["outcome-denied"].decisions == 4  # the outcome deny is recorded too
    assert results["email-3"].decisions == 3


def _rewrite(db: Path, run_id: str, seq: int, change: Any) -> None:
    edit_event(db, run_id, seq, change)
    rechain(db, run_id)


def test_a_rewritten_decision_is_caught_by_replay_even_when_the_chain_is_rebuilt(
    rt: Runtime, db: Path, effects: Effects
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.run(run_id)
    seq = seq_of(db, run_id, "action.decided")
    _rewrite(db, run_id, seq, lambda d: d["decision"].update(effect="review", rules=["big-write"]))
    assert verify_run(rt.store, run_id) is None  # the forger re-hashed everything
    result = replayed(rt, run_id)
    assert not result.agrees
    assert result.divergence is not None
    assert (result.divergence["seq"], result.divergence["at"], result.divergence["action"]) == (
        seq,
        "action",
        "write",
    )
    assert result.divergence["fields"]["effect"] == {"recorded": "review", "replayed": "allow"}
    assert result.divergence["fields"]["rules"] == {
        "recorded": ["big-write"],
        "replayed": ["routine"],
    }


def test_replay_uses_the_recorded_count_answers(rt: Runtime, db: Path, effects: Effects) -> None:
    ids = []
    for _ in range(4):
        run_id = rt.submit(contract(script="email_then_finish"), {"item": "m", "to": PROFILE_EMAIL})
        rt.run(run_id)
        ids.append(run_id)
    # deleting the history the live decision saw changes nothing: replay has the answers
    execute(db, "DELETE FROM executed_actions")
    assert replayed(rt, ids[3]).agrees
    # but forging the recorded answer is caught
    seq = seq_of(db, ids[3], "action.decided")

    def forge(d: dict[str, Any]) -> None:
        d["decision"]["counts"][0][-1] = 0

    _rewrite(db, ids[3], seq, forge)
    assert verify_run(rt.store, ids[3]) is None
    result = replayed(rt, ids[3])
    assert result.divergence is not None and result.divergence["seq"] == seq
    assert result.divergence["fields"]["effect"] == {"recorded": "deny", "replayed": "allow"}


def test_a_rewritten_admission_is_caught(rt: Runtime, db: Path, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "blocked"})
    rt.run(run_id)
    seq = seq_of(db, run_id, "run.refused")
    _rewrite(db, run_id, seq, lambda d: d["decision"].update(reasons=["because"]))
    result = replayed(rt, run_id)
    assert result.divergence is not None
    assert (result.divergence["seq"], result.divergence["at"]) == (seq, "admit")


def test_a_rewritten_input_changes_what_policy_sees(
    rt: Runtime, db: Path, effects: Effects
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt", "tier": "blocked"})
    rt.run(run_id)
    _rewrite(db, run_id, 2, lambda d: d["content"].update(tier="gold"))  # the profile read
    assert verify_run(rt.store, run_id) is None
    result = replayed(rt, run_id)
    assert result.divergence is not None
    assert result.divergence["fields"]["effect"] == {"recorded": "deny", "replayed": "allow"}


def test_an_edited_contract_bundle_is_caught_by_its_policy_hash(
    rt: Runtime, db: Path, effects: Effects
) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.run(run_id)
    [(policy_hash, bundle)] = query(db, "SELECT policy_hash, bundle FROM contracts")
    data = json.loads(bundle)
    data["contract"]["data"]["policy"]["default"] = "allow"
    execute(db, "UPDATE contracts SET bundle = ?", (canonical(data),))
    fresh = Runtime(str(db))
    forged: Contract = fresh.contract_for(policy_hash)
    assert forged.policy_hash != policy_hash
    result = replay(fresh.store, forged, run_id)
    assert result.divergence is not None
    assert "policy_hash" in result.divergence["fields"]


def test_replay_does_not_call_models_readers_or_executors(rt: Runtime, effects: Effects) -> None:
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.run(run_id)
    before = (effects.calls(), effects.model_calls(), effects.reads("stock"))
    assert replayed(rt, run_id).agrees
    assert (effects.calls(), effects.model_calls(), effects.reads("stock")) == before
