"""A worker SIGKILLed at every point of the loop leaves a ledger the next worker finishes from.

The first worker is the real ``charter worker`` command in a subprocess, killed by a
failpoint (or by the executor itself); the second is a Runtime in this process whose clock
runs a minute ahead, so the dead worker's 30 s lease has expired. Afterwards every effect
has been applied exactly once, the chain verifies, and an action whose completion was not
recorded was retried with the same idempotency key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from charter.ledger.events import ActionCompleted, ActionStarted, ModelCalled
from charter.ledger.verify import verify_run
from charter.runs.replay import replay
from charter.runs.runtime import Runtime
from tests.runs.domain import DIE_ENV, EFFECTS_ENV, Effects, contract

ROOT = Path(__file__).resolve().parents[2]


def start_worker(db: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHARTER_FAILPOINT", DIE_ENV)}
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from charter.cli import main; main()",
            "worker",
            "--db",
            str(db),
            "--idle-exit",
            "1",
            "--poll",
            "0.05",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


CRASH_POINTS = {
    "after_model_call": {"CHARTER_FAILPOINT": "after_model_call"},
    "after_decision": {"CHARTER_FAILPOINT": "after_decision"},
    "inside_executor": {DIE_ENV: "write"},
    "after_executor": {"CHARTER_FAILPOINT": "after_executor"},
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_worker_killed_mid_run_is_finished_by_the_next_with_effects_applied_once(
    point: str, db: Path, effects: Effects
) -> None:
    rt = Runtime(str(db))
    run_id = rt.submit(contract(), {"item": "bolt"})

    first = start_worker(db, {**CRASH_POINTS[point], EFFECTS_ENV: str(effects.path)})
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr)

    # the crash happened exactly where it was meant to
    types = [e.type for e in rt.store.events(run_id)]
    if point == "after_model_call":
        # the channel reads and the admission ride in the model call's transaction, which
        # the crash prevented: nothing of the step is in the ledger, so it is redone
        assert types == ["run.submitted"]
        assert len(effects.model_calls()) == 1
        assert effects.calls() == []
    elif point == "after_decision":
        assert types[-2:] == ["action.decided", "action.started"]
        assert effects.calls() == []
    else:
        assert types[-2:] == ["action.decided", "action.started"]
        assert [c["key"] for c in effects.calls()] == [f"{run_id}:1"]
        assert effects.applied_per_key() == {f"{run_id}:1": 1}
    assert rt.store.get_run(run_id).status == "queued"

    # the next worker: the dead one's 30 s lease has expired on its clock
    second = Runtime(str(db), clock=lambda: datetime.now(UTC) + timedelta(minutes=1))
    assert second.work(idle_exit=0, poll=0.01) == 1
    state = second.state(run_id)
    assert state.status == "completed"

    # every effect exactly once, in order, under its stable key
    assert effects.applied() == [
        (f"{run_id}:1", "write", {"item": "bolt-1", "qty": 1}),
        (f"{run_id}:2", "write", {"item": "bolt-2", "qty": 2}),
    ]
    assert verify_run(rt.store, run_id) is None
    assert replay(rt.store, rt.contract_for(state.policy_hash), run_id).agrees

    events = [e.event for e in rt.store.events(run_id)]
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    assert [c.step for c in completed] == [1, 2]
    assert sum(isinstance(e, ModelCalled) for e in events) == 3
    started = [
        (e.step, e.attempt, e.idempotency_key) for e in events if isinstance(e, ActionStarted)
    ]
    calls = effects.calls(f"{run_id}:1")
    if point == "after_model_call":
        # the unrecorded model output was asked for again; nothing else was repeated
        assert len(effects.model_calls(run_id)) == 4
        assert started == [(1, 1, f"{run_id}:1"), (2, 1, f"{run_id}:2")]
        assert len(calls) == 1
    elif point == "after_decision":
        # started but never called: started again (attempt 2) with the same key, called once
        assert len(effects.model_calls(run_id)) == 3
        assert started == [(1, 1, f"{run_id}:1"), (1, 2, f"{run_id}:1"), (2, 1, f"{run_id}:2")]
        assert [c["attempt"] for c in calls] == [2]
    else:
        # called, effect applied, completion lost: retried with the same key, not re-applied
        assert len(effects.model_calls(run_id)) == 3
        assert started == [(1, 1, f"{run_id}:1"), (1, 2, f"{run_id}:1"), (2, 1, f"{run_id}:2")]
        assert [c["attempt"] for c in calls] == [1, 2]
        assert calls[0]["pid"] != calls[1]["pid"] == os.getpid()
    assert effects.applied_per_key() == {f"{run_id}:1": 1, f"{run_id}:2": 1}


def test_a_live_lease_keeps_a_second_worker_off_the_run(db: Path, effects: Effects) -> None:
    Runtime(str(db)).submit(contract(), {"item": "bolt"})
    first = start_worker(
        db, {"CHARTER_FAILPOINT": "after_decision", EFFECTS_ENV: str(effects.path)}
    )
    assert first.returncode == -signal.SIGKILL
    # same clock as the dead worker: its lease has not expired, so nobody may take the run
    assert Runtime(str(db)).work_once() is None
    assert effects.calls() == []


def test_a_worker_killed_inside_a_compensation_is_finished_without_undoing_twice(
    db: Path, effects: Effects
) -> None:
    rt = Runtime(str(db))
    plan = [[["write", {"item": "a", "qty": 1}], ["explode", {}]]]
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": plan})
    first = start_worker(db, {DIE_ENV: "undo", EFFECTS_ENV: str(effects.path)})
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert [e.type for e in rt.store.events(run_id)][-2:] == [
        "compensation.started",
        "action.started",
    ]
    second = Runtime(str(db), clock=lambda: datetime.now(UTC) + timedelta(minutes=1))
    assert second.work(idle_exit=0, poll=0.01) == 1
    assert second.state(run_id).status == "failed"
    undos = effects.calls(f"{run_id}:1:compensate")
    assert len(undos) == 2 and undos[0]["pid"] != undos[1]["pid"]
    assert [u["attempt"] for u in undos] == [1, 2]  # the retry is recorded as one
    assert list(effects.undone().values()) == [1]
    assert effects.applied_per_key() == {f"{run_id}:1": 1, f"{run_id}:1:compensate": 1}
    assert verify_run(rt.store, run_id) is None
