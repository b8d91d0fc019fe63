"""Many workers, one ledger: leases, heartbeats, fencing, limits, shutdown, wake-ups.

Every test runs on SQLite (several connections, as several processes would have) and on
PostgreSQL when ``$CHARTER_TEST_POSTGRES`` is set. Workers are threads, each with a store
(connection pool) of its own, or real ``charter worker`` processes where signals matter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charter.contract.model import Contract
from charter.ledger.events import ActionCompleted, ActionStarted, ReviewDecided
from charter.ledger.store import open_store
from charter.ledger.verify import verify_run
from charter.runs.limits import Limits, RateLimit
from charter.runs.runtime import Runtime
from tests.runs.domain import EFFECTS_ENV, Clock, Effects, contract
from tests.stores import terminate_backends
from tests.workers.timing import SLOW_ENV, calls

ROOT = Path(__file__).resolve().parents[2]
SLOW = {"actions": {"write": {"executor": "tests.workers.timing:slow_write"}}}


def one_write(item: str, qty: int = 1) -> dict[str, Any]:
    return {"item": item, "plan": [[["write", {"item": f"{item}-1", "qty": qty}]]]}


def work_in_threads(
    url: str,
    workers: int,
    *,
    idle_exit: float = 1.0,
    clock: Callable[[], Any] | None = None,
    limits: Limits | None = None,
    lease: timedelta = timedelta(seconds=30),
) -> list[int]:
    """Run ``workers`` runtimes (own store each) until idle; return runs each processed."""
    done = [0] * workers
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def loop(i: int) -> None:
        rt = Runtime(open_store(url), clock=clock, limits=limits, lease=lease)
        try:
            start.wait()
            done[i] = rt.work(idle_exit=idle_exit, poll=0.05)
        except BaseException as exc:  # surfaced below: a worker must never die
            errors.append(exc)
        finally:
            rt.store.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return done


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


# -- reviews and scheduled wake-ups ---------------------------------------------------------
def test_review_timeouts_fire_exactly_once_across_racing_workers(
    ledger: str, clock: Clock, effects: Effects
) -> None:
    c = contract(script="planned")
    rt = Runtime(ledger, clock=clock)
    ids = [rt.submit(c, one_write(f"big{n}", qty=150)) for n in range(8)]
    for run_id in ids:
        assert rt.run(run_id).status == "waiting"
    clock.advance(timedelta(hours=1, seconds=1))  # every review is past its SLA

    work_in_threads(ledger, 4, clock=clock, idle_exit=0.5)

    for run_id in ids:
        events = [e.event for e in rt.store.events(run_id)]
        expired = [e for e in events if isinstance(e, ReviewDecided)]
        assert [(e.verdict, e.effect) for e in expired] == [("expired", "deny")], run_id
        assert rt.store.get_run(run_id).status == "completed"
        assert verify_run(rt.store, run_id) is None
    assert effects.applied() == []  # fail closed: no write happened
    assert rt.store.list_reviews() == []
    rt.store.close()


def test_workers_racing_for_one_expired_review_decide_it_once(
    ledger: str, clock: Clock, effects: Effects
) -> None:
    c = contract(script="planned")
    first = Runtime(ledger, clock=clock)
    run_id = first.submit(c, one_write("big", qty=150))
    assert first.run(run_id).status == "waiting"
    clock.advance(timedelta(hours=2))
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def race() -> None:
        rt = Runtime(open_store(ledger), clock=clock)
        try:
            start.wait()
            rt.run(run_id)  # each claims this very run, waiting for the lease if held
        except BaseException as exc:
            errors.append(exc)
        finally:
            rt.store.close()

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    decided = [e for e in first.store.events(run_id) if isinstance(e.event, ReviewDecided)]
    assert len(decided) == 1
    assert verify_run(first.store, run_id) is None
    first.store.close()


# -- leases: heartbeats and fencing ---------------------------------------------------------
def test_a_heartbeat_keeps_a_long_executor_call_leased(
    ledger: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SLOW_ENV, "2.5")
    c = contract(script="planned", **SLOW)
    rt = Runtime(ledger, lease=timedelta(seconds=1))
    run_id = rt.submit(c, one_write("long"))
    poacher = open_store(ledger)
    stolen: list[str] = []
    stop = threading.Event()

    def poach() -> None:
        while not stop.is_set():
            now = time.time()
            row = poacher.claim("poacher", _iso(now), _iso(now + 60))
            if row is not None:
                stolen.append(row.run_id)
                poacher.release(row.run_id, "poacher", row.epoch)
            time.sleep(0.05)

    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(rt.run(run_id).status))
    runner.start()
    wait_for(lambda: bool(calls(effects.path, "start")))  # leased, and inside the executor
    thread = threading.Thread(target=poach)
    thread.start()
    try:
        runner.join(30)
    finally:
        stop.set()
        thread.join(10)
    assert outcome == ["completed"]
    assert stolen == []
    started = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionStarted)]
    assert [s.attempt for s in started] == [1]  # never retried: the lease never lapsed
    poacher.close()
    rt.store.close()


def test_a_stalled_worker_is_fenced_off_by_the_epoch(
    ledger: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops heartbeating (a GC pause, a frozen VM) mid-call loses its lease;
    the next worker redoes the step with the same idempotency key, and the first one's late
    result is refused by the epoch check instead of forking the run."""
    monkeypatch.setenv(SLOW_ENV, "2.0")
    c = contract(script="planned", **SLOW)
    stalled = Runtime(open_store(ledger), lease=timedelta(seconds=1))
    monkeypatch.setattr(stalled.worker, "beat", lambda: None)  # frozen: no heartbeats
    run_id = stalled.submit(c, one_write("fenced"))
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(stalled.run(run_id).status))
    thread.start()
    time.sleep(1.5)  # its lease has lapsed while its executor is still running
    rescuer = Runtime(open_store(ledger), lease=timedelta(seconds=30))
    assert rescuer.work_once() == run_id
    thread.join(30)

    events = [e.event for e in rescuer.store.events(run_id)]
    assert rescuer.store.get_run(run_id).status == "completed"
    starts = [e.attempt for e in events if isinstance(e, ActionStarted)]
    assert starts == [1, 2]
    assert len([e for e in events if isinstance(e, ActionCompleted)]) == 1
    key = f"{run_id}:1"
    assert [c["attempt"] for c in effects.calls(key)] == [1, 2]  # same key both times
    assert effects.applied_per_key() == {key: 1}
    assert verify_run(rescuer.store, run_id) is None
    # the stalled worker's late append was refused; it re-read the ledger and stepped back
    assert len(outcome) == 1 and not thread.is_alive()
    stalled.store.close()
    rescuer.store.close()


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- limits across workers --------------------------------------------------------------------
def test_runs_per_contract_are_capped_across_workers(
    ledger: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SLOW_ENV, "0.3")
    c = contract(script="planned", **SLOW)
    rt = Runtime(ledger)
    ids = [rt.submit(c, one_write(f"cap{n}")) for n in range(6)]
    work_in_threads(ledger, 4, limits=Limits(max_per_contract={"ops": 2}))
    writes = calls(effects.path, "write")
    assert len(writes) == 6
    peak = max_overlap([(w.started, w.ended or w.started) for w in writes])
    assert peak == 2, peak  # never more than the cap, and the cap was reached
    assert all(rt.store.get_run(r).status == "completed" for r in ids)
    rt.store.close()


def test_provider_calls_are_rate_limited_across_workers(ledger: str, effects: Effects) -> None:
    c = contract(model={"script": "tests.workers.timing:timed_final"})
    rt = Runtime(ledger)
    for n in range(7):
        rt.submit(c, {"item": f"rate{n}"})
    limits = Limits(rates={"scripted": RateLimit(3, timedelta(seconds=1))})
    started = time.time()
    work_in_threads(ledger, 4, limits=limits)
    stamps = sorted(call.started for call in calls(effects.path, "model"))
    assert len(stamps) == 7
    # any 1 s window holds at most 3 calls (stamps are taken just after the slot, hence
    # a little slack for a loaded machine)
    for i in range(len(stamps) - 3):
        assert stamps[i + 3] - stamps[i] >= 0.9, stamps
    assert stamps[-1] - started >= 1.9  # 7 calls at 3/s need at least two full windows
    rt.store.close()


def test_limits_parse_from_the_command_line() -> None:
    limits = Limits.parse(["ops=2", "refunds=10"], ["openai=500/min", "anthropic=5/s"])
    assert limits.max_per_contract == {"ops": 2, "refunds": 10}
    assert limits.rates["openai"] == RateLimit(500, timedelta(minutes=1))
    assert limits.rates["anthropic"] == RateLimit(5, timedelta(seconds=1))
    assert RateLimit.parse("1000/h").window == timedelta(hours=1)
    assert RateLimit.parse("10/30s") == RateLimit(10, timedelta(seconds=30))
    assert RateLimit.parse("60") == RateLimit(60, timedelta(minutes=1))
    from charter.errors import UsageError

    for bad in (["ops"], ["ops=0"], ["=3"]):
        with pytest.raises(UsageError, match="NAME=N"):
            Limits.parse(bad)
    for rate in ("fast", "0/s", "5/fortnight"):
        with pytest.raises(UsageError):
            RateLimit.parse(rate)


# -- shutdown and wake-ups ---------------------------------------------------------------------
def worker_process(url: str, env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    full.pop("CHARTER_FAILPOINT", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from charter.cli import main; main()",
            "worker",
            "--db",
            url,
            *args,
        ],
        env=full,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_finishes_the_current_step_then_releases_the_run(
    ledger: str, effects: Effects
) -> None:
    c = contract(script="write_then_finish", **SLOW)
    rt = Runtime(ledger)
    run_id = rt.submit(c, {"item": "term"})
    proc = worker_process(
        ledger, {EFFECTS_ENV: str(effects.path), SLOW_ENV: "1.5"}, "--poll", "0.05"
    )
    try:
        wait_for(lambda: bool(calls(effects.path, "start")))  # inside the executor
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "worker stopped after processing" in out
    # the step in flight was finished and recorded, and the run handed back, not abandoned
    events = [e.event for e in rt.store.events(run_id)]
    assert isinstance(events[-1], ActionCompleted)
    row = rt.store.get_run(run_id)
    assert (row.status, row.lease_owner) == ("queued", None)
    assert rt.work_once() == run_id  # another worker takes it over at once
    assert rt.store.get_run(run_id).status == "completed"
    assert set(effects.applied_per_key().values()) == {1}
    assert verify_run(rt.store, run_id) is None
    rt.store.close()


def test_an_idle_worker_wakes_when_work_arrives(
    store_kind: str, ledger: str, effects: Effects
) -> None:
    """PostgreSQL wakes idle workers by NOTIFY: with a 30 s poll, a run queued while the
    worker sleeps still starts at once. (SQLite polls; its worker here polls every 0.1 s.)"""
    poll = 30.0 if store_kind == "postgres" else 0.1
    worker = Runtime(open_store(ledger))
    thread = threading.Thread(target=lambda: worker.work(poll=poll))
    thread.start()
    try:
        time.sleep(0.5)  # the worker found nothing and is waiting
        rt = Runtime(ledger)
        submitted = time.monotonic()
        run_id = rt.submit(contract(script="final_answer"), {"item": "wake"})
        wait_for(lambda: rt.store.get_run(run_id).status == "completed", timeout=10)
        assert time.monotonic() - submitted < 5
    finally:
        worker.stop()
        thread.join(40)
    assert not thread.is_alive()  # stop() interrupts the wait promptly
    rt.store.close()
    worker.store.close()


def test_workers_ride_out_dropped_database_connections(
    store_kind: str, ledger: str, effects: Effects
) -> None:
    if store_kind != "postgres":
        pytest.skip("only a server can drop its clients' connections")
    rt = Runtime(ledger)
    c = contract()
    ids = [rt.submit(c, {"item": f"drop{n}"}) for n in range(30)]
    stop = threading.Event()
    dropped: list[int] = []

    def dropper() -> None:
        while not stop.wait(0.15):
            dropped.append(terminate_backends(ledger))

    chaos = threading.Thread(target=dropper)
    chaos.start()
    try:
        work_in_threads(ledger, 2, idle_exit=2.0)
    finally:
        stop.set()
        chaos.join(10)
    assert sum(dropped) > 0
    # anything handed back by a worker that lost its connection, or still leased by one
    # whose release could not reach the server: its lease has expired on this clock
    rt2 = Runtime(ledger, clock=lambda: datetime.now(UTC) + timedelta(minutes=1))
    rt2.work(idle_exit=0.5)
    for run_id in ids:
        assert rt2.store.get_run(run_id).status == "completed", run_id
        assert verify_run(rt2.store, run_id) is None
    assert set(effects.applied_per_key().values()) == {1}
    rt.store.close()
    rt2.store.close()


def test_contract_for_is_loaded_from_the_ledger_by_any_worker(
    ledger: str, effects: Effects
) -> None:
    """Workers need no contract files: the exact bundle a run was submitted with is in the
    ledger, so a worker on another machine processes it identically."""
    c: Contract = contract()
    run_id = Runtime(ledger).submit(c, {"item": "remote"})
    other = Runtime(open_store(ledger))
    assert other.work_once() == run_id
    assert other.store.get_run(run_id).status == "completed"
    other.store.close()
