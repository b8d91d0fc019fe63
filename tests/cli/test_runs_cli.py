"""``charter run|review|verify|replay|worker|report``: outputs, JSON, exit codes, clean errors."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from charter.cli import cli
from charter.cli.options import RUN_EXIT_CODES
from tests.ledger.tamper import edit_event, execute, rechain, seq_of
from tests.runs.domain import EFFECTS_ENV, Effects, contract

BIG = json.dumps({"item": "crate", "plan": [[["write", {"item": "crate", "qty": 500}]]]})


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Effects:
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects.db"))
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)
    return Effects(tmp_path / "effects.db")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@pytest.fixture
def ops(tmp_path: Path) -> str:
    path = tmp_path / "ops.yaml"
    contract(path)
    return str(path)


@pytest.fixture
def planned(tmp_path: Path) -> str:
    path = tmp_path / "planned.yaml"
    contract(path, script="planned")
    return str(path)


def invoke(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    # errors are messages and exit codes, never tracebacks
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def start(contract_file: str, payload: str, db: str, *extra: str) -> dict[str, Any]:
    """``run start``; with ``--wait`` the exit status must be the one its outcome documents."""
    result = invoke("run", "start", contract_file, "--input", payload, "--db", db, "--json", *extra)
    out: dict[str, Any] = as_json(result)
    expected = RUN_EXIT_CODES.get(out["status"], 0) if "--wait" in extra else 0
    assert result.exit_code == expected, (out["status"], result.output)
    return out


def test_run_start_wait_runs_to_the_end(ops: str, db: str, effects: Effects) -> None:
    out = start(ops, '{"item": "bolt"}', db, "--wait")
    assert out["status"] == "completed"
    assert (out["actions_executed"], out["model_calls"], out["waiting_for"]) == (2, 3, None)
    assert len(effects.applied()) == 2


def test_run_start_with_a_key_is_idempotent(ops: str, db: str, effects: Effects) -> None:
    first = start(ops, '{"item": "bolt"}', db, "--key", "t-1")
    again = start(ops, '{"item": "bolt"}', db, "--key", "t-1")
    assert first["run_id"] == again["run_id"]
    assert len(as_json(ok("run", "list", "--db", db, "--json"))) == 1


def test_run_start_refuses_a_key_reused_for_another_input(
    ops: str, db: str, effects: Effects
) -> None:
    first = start(ops, '{"item": "bolt"}', db, "--key", "t-1")
    result = invoke("run", "start", ops, "--input", '{"item": "nut"}', "--db", db, "--key", "t-1")
    assert result.exit_code == 2
    assert f"idempotency key 't-1' already names run {first['run_id']}" in result.stderr
    assert "different: input" in result.stderr
    assert len(as_json(ok("run", "list", "--db", db, "--json"))) == 1


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_queued_run_is_processed_by_the_worker(
    ops: str, db: str, effects: Effects, restore_signals: None
) -> None:
    out = ok("run", "start", ops, "--input", "@" + _write_input(db, {"item": "bolt"}), "--db", db)
    run_id, contract_ref, status = out.stdout.split()
    assert (contract_ref, status) == ("ops@1", "queued")
    assert effects.applied() == []
    worker = ok("worker", "--db", db, "--idle-exit", "0", "--poll", "0.01")
    assert "worker stopped after processing 1 run(s)" in worker.stdout
    assert as_json(ok("run", "show", run_id, "--db", db, "--json"))["status"] == "completed"


def test_a_threaded_worker_processes_each_run_once(
    ops: str, db: str, effects: Effects, restore_signals: None
) -> None:
    ids = [start(ops, json.dumps({"item": f"i{n}"}), db)["run_id"] for n in range(4)]
    out = ok("worker", "--db", db, "--concurrency", "3", "--idle-exit", "0.3", "--poll", "0.01")
    assert "worker stopped after processing 4 run(s)" in out.stdout
    assert {as_json(ok("run", "show", i, "--db", db, "--json"))["status"] for i in ids} == {
        "completed"
    }
    assert list(effects.applied_per_key().values()) == [1] * 8
    assert len(effects.calls()) == 8


def _write_input(db: str, payload: dict[str, Any]) -> str:
    path = Path(db).with_name("input.json")
    path.write_text(json.dumps(payload), encoding="utf-8")
    return str(path)


def test_run_list_and_show(ops: str, db: str, effects: Effects) -> None:
    run_id = start(ops, '{"item": "bolt"}', db, "--wait")["run_id"]
    start(ops, '{"item": "nut", "tier": "blocked"}', db, "--wait")
    rows = as_json(ok("run", "list", "--db", db, "--json"))
    assert sorted(r["status"] for r in rows) == ["completed", "refused"]
    assert {r["contract"] for r in rows} == {"ops@1"}
    refused = as_json(ok("run", "list", "--db", db, "--json", "--status", "refused"))
    assert len(refused) == 1 and refused[0]["run_id"] != run_id
    text = ok("run", "list", "--db", db).stdout
    assert run_id in text and "completed" in text

    shown = as_json(ok("run", "show", run_id[:12], "--db", db, "--json"))
    assert shown["run_id"] == run_id
    types = [e["type"] for e in shown["timeline"]]
    assert types[0] == "run.submitted" and types[-1] == "run.completed"
    assert types.count("action.completed") == 2
    timeline = ok("run", "show", run_id, "--db", db).stdout
    assert f"run {run_id}  ops@1  status: completed" in timeline
    assert "decided write step 1: ALLOW by routine — Routine" in timeline
    assert f"started write step 1 attempt 1 key {run_id}:1" in timeline
    assert "COMPLETED" in timeline


def test_review_list_show_approve(planned: str, db: str, effects: Effects) -> None:
    waiting = invoke("run", "start", planned, "--input", BIG, "--db", db, "--wait")
    assert waiting.exit_code == RUN_EXIT_CODES["waiting"] == 10
    out = waiting.stdout
    assert "waiting" in out and "waiting for review rv_" in out
    [review] = as_json(ok("review", "list", "--db", db, "--json"))
    assert (review["action"], review["effect"], review["status"]) == ("write", "review", "pending")
    assert review["review_id"] in ok("review", "list", "--db", db).stdout
    shown = ok("review", "show", review["review_id"], "--db", db).stdout
    assert "asks: review of action write" in shown
    assert '"qty": 500' in shown and "why: Large write" in shown
    detail = as_json(ok("review", "show", review["review_id"], "--db", db, "--json"))
    assert detail["args"] == {"item": "crate", "qty": 500} and len(detail["digest"]) == 64

    approved = as_json(
        ok("review", "approve", review["review_id"], "--by", "alice", "--db", db, "--json")
    )
    assert approved["status"] == "completed"
    assert [x for _, _, x in effects.applied()] == [{"item": "crate", "qty": 500}]
    assert "no reviews waiting" in ok("review", "list", "--db", db).stdout
    [decided] = as_json(ok("review", "list", "--all", "--db", db, "--json"))
    assert (decided["verdict"], decided["decided_by"]) == ("approve", "alice")


def test_review_approve_with_edited_args(planned: str, db: str, effects: Effects) -> None:
    start(planned, BIG, db, "--wait")
    [review] = as_json(ok("review", "list", "--db", db, "--json"))
    bad = invoke("review", "approve", review["review_id"], "--args", '{"qty": "x"}', "--db", db)
    assert bad.exit_code == 2
    assert "edited args for write are invalid" in bad.stderr
    edit = '{"item": "crate", "qty": 40}'
    out = ok("review", "approve", review["review_id"], "--args", edit, "--by", "al", "--db", db)
    assert f"approved {review['review_id']}: the action ran; run" in out.stdout
    assert "completed" in out.stdout
    assert [x for _, _, x in effects.applied()] == [{"item": "crate", "qty": 40}]


def test_review_reject_needs_a_reason(planned: str, db: str, effects: Effects) -> None:
    run_id = start(planned, BIG, db, "--wait")["run_id"]
    [review] = as_json(ok("review", "list", "--db", db, "--json"))
    missing = invoke("review", "reject", review["review_id"], "--db", db)
    assert missing.exit_code == 2 and "--comment" in missing.output
    out = ok(
        "review", "reject", review["review_id"], "--comment", "no", "--no-continue", "--db", db
    )
    assert (
        f"rejected {review['review_id']}: the action will not run; run {run_id} is now running"
        in out.stdout
    )
    again = invoke("review", "reject", review["review_id"], "--comment", "no", "--db", db)
    assert again.exit_code == 2 and "already decided" in again.stderr
    ok("worker", "--db", db, "--idle-exit", "0")
    assert as_json(ok("run", "show", run_id, "--db", db, "--json"))["status"] == "completed"
    assert effects.calls() == []


def test_run_cancel(planned: str, db: str, effects: Effects) -> None:
    run_id = start(planned, BIG, db, "--wait")["run_id"]
    declined = invoke("run", "cancel", run_id, "--db", db, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert as_json(ok("run", "show", run_id, "--db", db, "--json"))["status"] == "waiting"
    out = ok("run", "cancel", run_id, "-y", "--by", "ops", "--reason", "withdrawn", "--db", db)
    assert out.stdout.strip() == f"cancelled {run_id}"
    shown = ok("run", "show", run_id, "--db", db).stdout
    assert "CANCELLED by ops: withdrawn" in shown
    again = invoke("run", "cancel", run_id, "-y", "--db", db)
    assert again.exit_code == 2 and "already ended (cancelled)" in again.stderr
    assert "no reviews waiting" in ok("review", "list", "--db", db).stdout


def test_verify_exit_codes(ops: str, db: str, effects: Effects) -> None:
    run_id = start(ops, '{"item": "bolt"}', db, "--wait")["run_id"]
    other = start(ops, '{"item": "nut"}', db, "--wait")["run_id"]
    assert "2 run(s) checked, 2 intact, 0 broken" in ok("verify", "--db", db).stdout
    execute(
        Path(db),
        "UPDATE events SET data = replace(data, 'bolt', 'gold') WHERE run_id = ? AND seq = 1",
        (run_id,),
    )
    bad = invoke("verify", "--db", db)
    assert bad.exit_code == 1
    assert f"BROKEN {run_id} at event 1: content does not match its hash" in bad.stdout
    assert "2 run(s) checked, 1 intact, 1 broken" in bad.stdout
    report = as_json(invoke("verify", "--db", db, "--json"))
    assert report["broken"] == [
        {
            "run_id": run_id,
            "seq": 1,
            "problem": "content does not match its hash (the event was altered)",
        }
    ]
    assert ok("verify", other, "--db", db).stdout.startswith("1 run(s) checked, 1 intact")


def test_replay_exit_codes(ops: str, db: str, effects: Effects) -> None:
    run_id = start(ops, '{"item": "bolt"}', db, "--wait")["run_id"]
    assert "4 decision(s) replayed, all identical" in ok("replay", run_id, "--db", db).stdout
    assert as_json(ok("replay", "--all", "--db", db, "--json"))["agree"] == 1
    none = invoke("replay", "--db", db)
    assert none.exit_code == 2 and "name a run id, or pass --all" in none.stderr

    seq = seq_of(Path(db), run_id, "action.decided")
    edit_event(Path(db), run_id, seq, lambda d: d["decision"].update(effect="deny"))
    rechain(Path(db), run_id)
    ok("verify", "--db", db)
    diverged = invoke("replay", run_id, "--db", db)
    assert diverged.exit_code == 1
    assert f"{run_id}: DIVERGES at event {seq}" in diverged.stdout
    out = as_json(invoke("replay", "--all", "--db", db, "--json"))
    assert out["agree"] == 0 and out["results"][0]["divergence"]["seq"] == seq


def test_report(ops: str, planned: str, db: str, effects: Effects) -> None:
    start(ops, '{"item": "bolt"}', db, "--wait")
    start(ops, '{"item": "bolt", "tier": "blocked"}', db, "--wait")
    start(planned, BIG, db, "--wait")
    [review] = as_json(ok("review", "list", "--db", db, "--json"))
    ok("review", "approve", review["review_id"], "--args", '{"item": "c", "qty": 5}', "--db", db)
    [rep] = as_json(ok("report", "--db", db, "--json"))
    assert rep["contract"] == "ops@1"
    assert rep["runs"] == {"completed": 2, "refused": 1}
    assert rep["actions"] == {
        "auto_allowed": 2,
        "reviewed": 1,
        "escalated": 0,
        "denied": 0,
        "executed": 3,
    }
    assert rep["reviews"] == {"decided": 1, "overridden": 1, "expired": 0, "override_rate": 1.0}
    assert rep["model_calls"] == 5
    assert rep["latency_s"]["p50"] is not None
    text = ok("report", "--db", db).stdout
    assert "ops@1" in text and "2 auto-allowed, 1 sent to review" in text


@pytest.mark.parametrize(
    "command",
    [
        ["run", "list"],
        ["run", "show", "run_x"],
        ["review", "list"],
        ["review", "approve", "rv_x"],
        ["verify"],
        ["replay", "--all"],
        ["report"],
        ["run", "cancel", "run_x", "-y"],
    ],
)
def test_read_commands_on_a_missing_ledger_say_so(
    tmp_path: Path, effects: Effects, command: list[str]
) -> None:
    missing = tmp_path / "missing.db"
    result = invoke(*command, "--db", str(missing))
    assert result.exit_code == 3
    assert f"error: no ledger at {missing}" in result.stderr
    assert not missing.exists()


def test_unknown_ids_are_not_found(ops: str, db: str, effects: Effects) -> None:
    start(ops, '{"item": "bolt"}', db)
    for command in (
        ["run", "show", "run_nope"],
        ["review", "show", "rv_nope"],
        ["verify", "run_nope"],
    ):
        result = invoke(*command, "--db", db)
        assert result.exit_code == 5, command
        assert result.stderr.startswith("error: no ")
    envelope = as_json(invoke("run", "show", "run_nope", "--db", db, "--json"))
    assert envelope["error"]["code"] == "not_found"
    assert "no run run_nope" in envelope["error"]["message"]


def test_a_corrupted_ledger_is_reported(tmp_path: Path, effects: Effects) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    result = invoke("run", "list", "--db", str(bad))
    assert result.exit_code == 3
    assert "is not a usable Charter ledger" in result.stderr


def test_bad_input_is_a_usage_error_and_writes_nothing(ops: str, db: str, effects: Effects) -> None:
    malformed = invoke("run", "start", ops, "--input", "{item: 1", "--db", db)
    assert malformed.exit_code == 2 and "malformed JSON" in malformed.stderr
    invalid = invoke("run", "start", ops, "--input", '{"item": 1}', "--db", db)
    assert invalid.exit_code == 2
    assert "input.item: 1 is not of type 'string'" in invalid.stderr
    assert as_json(ok("run", "list", "--db", db, "--json")) == []


def test_the_database_comes_from_the_environment(
    ops: str, db: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", db)
    run_id = as_json(ok("run", "start", ops, "--input", '{"item": "b"}', "--json"))["run_id"]
    assert [r["run_id"] for r in as_json(ok("run", "list", "--json"))] == [run_id]
