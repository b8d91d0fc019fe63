"""Runs completed per second with 1, 2 and 4 workers: Charter on PostgreSQL and SQLite, and
DBOS Transact's queue on the same PostgreSQL database, in one run.

Run ``python bench/scale.py`` (``--pg URL`` or ``$CHARTER_TEST_POSTGRES`` for the server;
``--runs`` per configuration, ``--workers 1,2,4``, ``--systems``, ``--json``). For each
system and worker count it

1. makes an empty place (a fresh PostgreSQL schema, a fresh SQLite file, a fresh DBOS
   system schema in the same database) and submits ``--runs`` runs before any worker starts;
2. starts that many worker *processes* (``Runtime.work()``, one thread each; DBOS with one
   queue, ``worker_concurrency=1`` per process, polling every 10 ms so it is not held back by
   its 1 s default), waits until all are ready and lets them go at once;
3. waits until every run has completed, then reads the completion times the systems
   recorded themselves and reports runs/s over the middle 80 % of completions (10th to 90th
   percentile: no start-up, no tail) and over the whole run.

The work per run is alike: Charter runs a contract whose scripted model proposes one
trivial action, then another, then answers (3 model calls, 2 executed actions, plus the
admit and outcome policy decisions: about ten committed transactions per run, each event
hash-chained); DBOS runs a workflow of 5 ``@DBOS.step`` functions (3 "model" steps, 2
"act" steps), each durable. Neither does real work in its steps, so this measures the
orchestration: queue, leases/dequeue, durable step records.

This is a script, not a test: figures depend on the machine (cores above all: four worker
processes and the database share them), so nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ENV = "CHARTER_TEST_POSTGRES"
SYSTEMS = ("charter-postgres", "charter-sqlite", "dbos-postgres")
QUEUE = "charter_scale"

CONTRACT: dict[str, Any] = {
    "contract": "scale",
    "version": 1,
    "domain": "bench",
    "description": "Two trivial actions and an answer: the orchestration cost of a run.",
    "input": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
    "model": {"provider": "scripted", "name": "scale", "seed": 1, "script": "bench.scale:propose"},
    "actions": {
        "bump": {
            "executor": "bench.scale:bump",
            "effect": "write",
            "args": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }
    },
    "policy": {
        "default": "deny",
        "rules": [
            {"id": "admit", "at": "admit", "when": "true", "effect": "allow", "reason": "All"},
            {"id": "bump", "when": 'action.name == "bump"', "effect": "allow", "reason": "Ok"},
        ],
    },
    "escalation": {"reviewers": ["ops"], "sla": "1h", "on_timeout": "deny"},
    "budget": {"max_model_calls": 5, "max_actions": 4},
}


# -- the Charter side of the workload (imported by worker processes) -------------------------
def propose(request: Any) -> dict[str, Any]:
    step = len(request.history)
    if step < 2:
        return {"actions": [{"name": "bump", "args": {"n": step}}], "confidence": 0.9}
    return {"final": {"n": request.input["n"]}, "confidence": 0.9, "rationale": "done"}


def bump(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"n": args["n"] + 1}


# -- places ----------------------------------------------------------------------------------
def _pg_admin(server: str) -> Any:
    import psycopg

    return psycopg.connect(server.split("?")[0], autocommit=True)


@contextmanager
def place(system: str, server: str, tmp: Path) -> Iterator[str]:
    """A URL (Charter ledger, or DBOS system database) in a place of its own."""
    name = f"scale_{uuid.uuid4().hex[:10]}"
    if system == "charter-sqlite":
        yield f"sqlite:///{tmp / (name + '.db')}"
        return
    try:
        yield f"{server}{'&' if '?' in server else '?'}schema={name}"
    finally:
        with _pg_admin(server) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _dbos_parts(url: str) -> tuple[str, str]:
    base, _, query = url.partition("?")
    return base, query.removeprefix("schema=")


# -- submitting and counting --------------------------------------------------------------------
def submit(system: str, url: str, runs: int) -> None:
    if system.startswith("charter"):
        from ruamel.yaml import YAML

        from charter.contract.model import Contract
        from charter.contract.source import parse_yaml
        from charter.ledger.store import open_store
        from charter.runs.runtime import Runtime

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "scale.yaml"
            with path.open("w") as fh:
                YAML(typ="safe", pure=True).dump(CONTRACT, fh)
            contract = Contract.from_document(parse_yaml(path.read_text(), str(path)))
        store = open_store(url)
        rt = Runtime(store)
        for n in range(runs):
            rt.submit(contract, {"n": n})
        store.close()
        return
    # DBOS: register the queue (a process that listens to no queue), then enqueue by client
    subprocess.run(
        [sys.executable, __file__, "--worker", "dbos-setup", "--url", url],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    from dbos import DBOSClient

    base, schema = _dbos_parts(url)
    client = DBOSClient(system_database_url=base, dbos_system_schema=schema)
    for n in range(runs):
        client.enqueue({"queue_name": QUEUE, "workflow_name": "scale_run"}, n)
    client.destroy()


def completion_times(system: str, url: str) -> list[float]:
    """Wall-clock completion times (epoch seconds) as each system recorded them."""
    if system.startswith("charter"):
        from charter.ledger.store import open_store

        store = open_store(url)
        rows = store.list_runs(status="completed", limit=10_000_000)
        store.close()
        return sorted(
            datetime.fromisoformat(r.updated_at.replace("Z", "+00:00")).timestamp() for r in rows
        )
    base, schema = _dbos_parts(url)
    with _pg_admin(base) as conn:
        rows = conn.execute(
            f'SELECT updated_at FROM "{schema}".workflow_status WHERE status = %s', ("SUCCESS",)
        ).fetchall()
    return sorted(r[0] / 1000 for r in rows)


def count_done(system: str, url: str) -> int:
    if system == "charter-sqlite":
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return int(
                conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
            )
        finally:
            conn.close()
    base, schema = (url.split("?")[0], url.split("schema=")[1])
    table = "runs" if system.startswith("charter") else "workflow_status"
    status = "completed" if system.startswith("charter") else "SUCCESS"
    with _pg_admin(base) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".{table} WHERE status = %s', (status,)
        ).fetchone()
    return int(row[0])


# -- workers ------------------------------------------------------------------------------------
def worker(kind: str, url: str, ready: Path | None, go: Path | None) -> None:
    """Body of a worker process: get ready, wait for the go, work until SIGTERM."""
    if kind == "charter":
        from charter.ledger.store import open_store
        from charter.runs.runtime import Runtime

        rt = Runtime(open_store(url))
        signal.signal(signal.SIGTERM, lambda *_: rt.stop())
        rt.contract_for  # noqa: B018 - imported and ready
        _ready_and_go(ready, go)
        rt.work(poll=0.05)
        rt.store.close()
        return
    import logging

    from dbos import DBOS

    @DBOS.step()
    def model(n: int, k: int) -> dict[str, Any]:
        return {"k": k}

    @DBOS.step()
    def act(n: int, k: int) -> int:
        return n + k

    @DBOS.workflow(name="scale_run")
    def scale_run(n: int) -> int:
        total = 0
        for k in range(3):
            model(n, k)
            if k < 2:
                total += act(n, k)
        return total

    base, schema = _dbos_parts(url)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(
        config={
            "name": "charter-scale",
            "system_database_url": base,
            "dbos_system_schema": schema,
            "log_level": "WARNING",
            "application_version": "bench",
        }
    )
    if kind == "dbos-setup":
        DBOS.listen_queues([])
        DBOS.launch()
        poll = float(os.environ.get("CHARTER_SCALE_DBOS_POLL", "0.01"))
        DBOS.register_queue(QUEUE, worker_concurrency=1, polling_interval_sec=poll)
        DBOS.destroy()
        return
    _ready_and_go(ready, go)
    DBOS.launch()
    done = False

    def stop(*_: Any) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, stop)
    while not done:
        time.sleep(0.1)
    DBOS.destroy()


def _ready_and_go(ready: Path | None, go: Path | None) -> None:
    if ready is not None:
        ready.write_text("ready")
    while go is not None and not go.exists():
        time.sleep(0.005)


@dataclass
class Result:
    system: str
    workers: int
    runs: int
    runs_per_s: float  # over the 10th..90th percentile of completions
    runs_per_s_overall: float  # from the go to the last completion
    seconds: float


def measure(system: str, server: str, workers: int, runs: int, timeout: float) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix="charter-scale-") as d,
        place(system, server, Path(d)) as url,
    ):
        tmp = Path(d)
        submit(system, url, runs)
        kind = "charter" if system.startswith("charter") else "dbos"
        go = tmp / "go"
        readies = [tmp / f"ready-{i}" for i in range(workers)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    "--url",
                    url,
                    "--ready",
                    str(r),
                    "--go",
                    str(go),
                ],
                cwd=ROOT,
                env=env,
            )
            for r in readies
        ]
        try:
            deadline = time.monotonic() + 120
            while not all(r.exists() for r in readies):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{system}: workers did not start")
                time.sleep(0.01)
            go.write_text("go")
            started = time.time()
            deadline = time.monotonic() + timeout
            while count_done(system, url) < runs:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{system}: {runs} runs not done within {timeout}s")
                time.sleep(0.05)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        times = completion_times(system, url)
    lo, hi = times[len(times) // 10], times[(len(times) * 9) // 10]
    middle = sum(1 for t in times if lo <= t <= hi)
    return Result(
        system,
        workers,
        runs,
        round((middle - 1) / (hi - lo), 1) if hi > lo else 0.0,
        round(runs / (times[-1] - started), 1),
        round(times[-1] - started, 2),
    )


def render(results: list[Result], worker_counts: list[int]) -> str:
    by = {(r.system, r.workers): r for r in results}
    systems = [s for s in SYSTEMS if any(r.system == s for r in results)]
    head = f"{'runs/s (middle 80%)':<22}" + "".join(
        f"{f'{n} worker(s)':>14}" for n in worker_counts
    )
    lines = [head]
    for s in systems:
        cells = "".join(
            f"{by[(s, n)].runs_per_s:>14.1f}" if (s, n) in by else f"{'-':>14}"
            for n in worker_counts
        )
        lines.append(f"{s:<22}{cells}")
    lines.append("")
    base = worker_counts[0]
    for s in systems:
        if (s, base) in by:
            scaling = ", ".join(
                f"{n}: {by[(s, n)].runs_per_s / by[(s, base)].runs_per_s:.2f}x"
                for n in worker_counts
                if (s, n) in by and by[(s, base)].runs_per_s
            )
            lines.append(f"scaling of {s} vs {base} worker(s): {scaling}")
    for s in ("charter-postgres", "charter-sqlite"):
        ratios = ", ".join(
            f"{n}: {by[(s, n)].runs_per_s / by[('dbos-postgres', n)].runs_per_s:.2f}x"
            for n in worker_counts
            if (s, n) in by and ("dbos-postgres", n) in by and by[("dbos-postgres", n)].runs_per_s
        )
        if ratios:
            lines.append(f"{s} / dbos-postgres (same workers): {ratios}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get(PG_ENV, ""), help=f"server (env {PG_ENV})")
    parser.add_argument("--runs", type=int, default=300, help="runs per configuration")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    # internal: the body of a worker process
    parser.add_argument(
        "--worker", choices=["charter", "dbos", "dbos-setup"], help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.url, args.ready, args.go)
        return 0
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if any(s.endswith("postgres") for s in systems) and not args.pg:
        parser.error(f"PostgreSQL systems need --pg or ${PG_ENV}")
    counts = [int(n) for n in args.workers.split(",")]
    results = []
    for n in counts:
        for s in systems:
            r = measure(s, args.pg, n, args.runs, args.timeout)
            results.append(r)
            if not args.json:
                print(
                    f"  {s:<18} {n} worker(s): {r.runs_per_s:8.1f} runs/s (overall {r.runs_per_s_overall}, {r.seconds}s)",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        print(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        print(
            f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; {args.runs} runs per cell"
        )
        print(render(results, counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
