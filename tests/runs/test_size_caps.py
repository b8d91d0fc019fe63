"""Sizes a run accepts: task input, reviewers' edits, channel reads and executor results.

Each is capped (charter.caps) so one hostile value cannot fill the ledger or the model's
context. What arrives before anything happened is refused and nothing is written; what
arrives after an effect happened (an executor's result) is recorded without its body and
the run does not go on as if it had the result.
"""

from __future__ import annotations

from typing import TypeVar

import pytest

from charter.caps import CAPS
from charter.errors import UsageError
from charter.ledger.events import ActionCompleted, ChannelRead, Event, RunFailed
from charter.runs.runtime import Runtime
from tests.runs.domain import Effects, contract

E = TypeVar("E", bound=Event)


def events_of(rt: Runtime, run_id: str, cls: type[E]) -> list[E]:
    return [e.event for e in rt.store.events(run_id) if isinstance(e.event, cls)]


def test_input_over_its_cap_is_refused_and_no_run_is_written(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPS["input_bytes"].env, "200")
    with pytest.raises(UsageError, match=r"input: .* over the limit of 200 \(input_bytes\)"):
        rt.submit(contract(), {"item": "x" * 300})
    assert rt.store.list_runs() == []
    assert rt.submit(contract(), {"item": "x" * 100})  # under the cap: accepted


def test_context_over_the_input_cap_is_refused(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPS["input_bytes"].env, "200")
    with pytest.raises(UsageError, match=r"context: .*\(input_bytes\); raise it with"):
        rt.submit(contract(), {"item": "bolt"}, context={"note": "é" * 150})
    assert rt.store.list_runs() == []


def test_an_edit_over_the_argument_cap_is_refused_and_the_review_stays_open(
    rt: Runtime, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = [[["write", {"item": "crate", "qty": 500}]]]  # big-write: review
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": plan})
    state = rt.run(run_id)
    assert state.status == "waiting" and state.review is not None
    monkeypatch.setenv(CAPS["argument_bytes"].env, "100")
    with pytest.raises(UsageError, match=r"edited args: .*\(argument_bytes\)"):
        rt.decide_review(
            state.review.review_id, "approve", by="alice", args={"item": "c" * 200, "qty": 5}
        )
    assert [r.review_id for r in rt.store.list_reviews()] == [state.review.review_id]
    assert effects.calls() == []


def test_a_channel_read_over_the_observation_cap_fails_the_run_before_the_model_sees_it(
    rt: Runtime, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPS["observation_bytes"].env, "20")  # the profile is 41 bytes
    c = contract(channels={"profile": {"reader": "tests.runs.domain:read_profile"}})
    run_id = rt.submit(c, {"item": "bolt"})
    assert rt.run(run_id).status == "failed"
    assert events_of(rt, run_id, ChannelRead) == []
    [failed] = events_of(rt, run_id, RunFailed)
    assert "channel profile: " in failed.error and "(observation_bytes)" in failed.error
    assert effects.model_calls(run_id) == []


def test_a_result_over_the_observation_cap_is_recorded_without_its_body(
    rt: Runtime, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the channels' reads are under 60 bytes, this write's result is about 90
    monkeypatch.setenv(CAPS["observation_bytes"].env, "60")
    plan = [[["write", {"item": "b" * 40, "qty": 5}]]]
    run_id = rt.submit(contract(script="planned"), {"item": "bolt", "plan": plan})
    assert rt.run(run_id).status == "failed"
    [done] = events_of(rt, run_id, ActionCompleted)
    # the effect happened and is counted; its result never reaches the model
    assert list(done.result) == ["omitted"] and "(observation_bytes)" in done.result["omitted"]
    assert done.result_changes == [done.result["omitted"]]
    # the run stops as after any failure: the write is compensated
    assert [a for _, a, _ in effects.applied()] == ["write", "undo"]
    [failed] = events_of(rt, run_id, RunFailed)
    assert "result of write cannot be used as returned" in failed.error
    assert "(observation_bytes)" in failed.error
    assert rt.store.count_executed("write", {}, "2000-01-01", "2100-01-01") == 1
