"""A worker never burns the queue, never dies silently, and a crash loop ends.

These run the real ``charter worker`` command in subprocesses: what is tested is the exit
status an operator's supervisor sees and the ledger the next worker finds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli import cli
from charter.ledger.events import ActionFailed, ActionStarted
from charter.ledger.verify import verify_run
from charter.runs.runtime import Runtime
from tests.runs.domain import EFFECTS_ENV, Effects, contract

ROOT = Path(__file__).resolve().parents[2]
CHARTER = [sys.executable, "-c", "from charter.cli import main; main()"]


def worker(
    db: Path, effects: Effects, *, cwd: Path = ROOT, pythonpath: str | None = str(ROOT)
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CHARTER_FAILPOINT", "PYTHONPATH", "CHARTER_IMPORT_PATH")
    }
    env[EFFECTS_ENV] = str(effects.path)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [
            *CHARTER,
            "worker",
            "--db",
            str(db),
            "--idle-exit",
            "0.5",
            "--poll",
            "0.05",
            "--lease",
            "1",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_crash_looping_executor_is_given_up_after_its_attempts(
    db: Path, effects: Effects, tmp_path: Path
) -> None:
    quit_action = {
        "executor": "tests.runs.domain:quit_",
        "effect": "write",
        "max_attempts": 2,
        "args": {"type": "object"},
    }
    allow = {"id": "quit-ok", "when": 'action.name == "quit"', "effect": "allow"}
    c = contract(
        tmp_path / "quit.yaml", script="planned", actions={"quit": quit_action}, rules=[allow]
    )
    rt = Runtime(str(db))
    run_id = rt.submit(c, {"item": "x", "plan": [[["quit", {"how": "hard"}]]]})
    for attempt in (1, 2):  # each attempt takes its worker down with os._exit(13)
        crashed = worker(db, effects)
        assert crashed.returncode == 13, crashed.stderr
        assert [
            e.event.attempt for e in rt.store.events(run_id) if isinstance(e.event, ActionStarted)
        ] == list(range(1, attempt + 1))
    last = worker(db, effects)
    assert last.returncode == 0, last.stderr
    assert "after processing 1 run(s)" in last.stdout
    assert rt.state(run_id).status == "failed"
    [failed] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionFailed)]
    assert failed.error == (
        "gave up after 2 attempt(s) of quit: 2 never returned "
        "(the worker stopped or crashed during the call)"
    )
    assert len(effects.calls()) == 2
    assert verify_run(rt.store, run_id) is None


def test_a_worker_that_cannot_import_the_code_leaves_the_run_and_exits_non_zero(
    db: Path, effects: Effects, tmp_path: Path
) -> None:
    rt = Runtime(str(db))
    run_id = rt.submit(contract(), {"item": "bolt"})
    before = rt.store.events(run_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    broken = worker(db, effects, cwd=elsewhere, pythonpath=None)
    assert broken.returncode == 6, broken.stderr
    assert "cannot import module 'tests.runs.domain'" in broken.stderr
    assert f"run {run_id} was left untouched" in broken.stderr
    row = rt.store.get_run(run_id)
    assert (row.status, row.lease_owner) == ("queued", None)
    assert rt.store.events(run_id) == before
    # a correctly installed worker takes the same run
    fixed = worker(db, effects)
    assert fixed.returncode == 0, fixed.stderr
    assert rt.state(run_id).status == "completed"


def test_a_worker_thread_that_dies_is_reported_and_the_exit_status_is_non_zero(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Runtime, **kwargs: object) -> int:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(Runtime, "work", boom)
    result = CliRunner().invoke(cli, ["worker", "--db", str(db), "--idle-exit", "0.1"])
    assert result.exit_code == 1
    assert "a worker thread died: RuntimeError: a bug in the loop" in result.stderr
    assert "processed" not in result.stdout


def test_sigterm_stops_a_worker_stuck_in_an_executor_after_the_grace_period(
    db: Path, effects: Effects, tmp_path: Path
) -> None:
    hang = {"executor": "tests.runs.domain:hang", "effect": "write", "args": {"type": "object"}}
    allow = {"id": "hang-ok", "when": 'action.name == "hang"', "effect": "allow"}
    c = contract(tmp_path / "hang.yaml", script="planned", actions={"hang": hang}, rules=[allow])
    rt = Runtime(str(db))
    run_id = rt.submit(c, {"item": "x", "plan": [[["hang", {"seconds": 600}]]]})
    env = {k: v for k, v in os.environ.items() if k != "CHARTER_FAILPOINT"}
    env.update({EFFECTS_ENV: str(effects.path), "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen(
        [*CHARTER, "worker", "--db", str(db), "--poll", "0.05", "--grace", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not effects.calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert effects.calls(), "the executor was never called"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert time.monotonic() - started < 10  # the grace period, not the executor's 600 s
    assert proc.returncode == 1, err
    assert "worker stopped after 1s of grace with a step still running" in err
    # the started action is in the ledger: another worker retries it with the same key
    started_events = [
        e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionStarted)
    ]
    assert [s.idempotency_key for s in started_events] == [f"{run_id}:1"]
