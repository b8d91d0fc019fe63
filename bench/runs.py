"""How fast is a governed, durable step, next to other durable-execution engines?

Run ``python bench/runs.py`` (``--runs N`` to change the size, ``--json`` for
machine-readable figures, ``--only charter,raw`` to run a subset, ``--profile`` to print a
cProfile of Charter's timed section). It prints, from one process and one run, with every
database file in one temporary directory (``--dir`` chooses where; all on one disk), so
the figures are comparable:

* ``charter``: a contract (written to the temporary directory) with one action ``bump``
  whose executor increments an in-process counter, a scripted model
  (``model: {provider: scripted, script: bench.runs:script}``) that proposes one action per
  step for 10 steps and then a final answer, a channel read by a reader at admission, and
  a policy of 12 rules shaped like ``examples/refunds/refunds.yaml`` (admit, action and
  outcome rules; ``in`` lists, comprehensions, ``has``, ``provenance``, string functions).
  Runs go through ``charter.Runtime(<file>.db)``: ``submit`` N runs, then
  ``runtime.work_once()`` until the queue is empty. One *step* is one model call, proposal
  validation, policy decision, executor call and their events; a run has 10 of them (plus
  admission and the final answer, which are counted in the time but not as steps).
  ``charter (process)`` is the same runs without the time spent in ``submit``.
* ``dbos``: DBOS Transact, a workflow of 10 ``@DBOS.step`` functions (each a trivial
  increment) on a SQLite system database put in WAL mode before launch.
* ``langgraph``: a 10-node linear ``StateGraph`` (each node a trivial increment) compiled
  with ``SqliteSaver`` (WAL), invoked with ``durability="sync"`` on a new thread per run.
* ``raw sqlite``: the physical floor: one ``BEGIN IMMEDIATE; INSERT`` of a ~1 KB event
  ``; COMMIT`` per step, ``journal_mode=WAL``, ``synchronous=FULL``.

All systems are set up and warmed up first (``--warmup`` runs each, into the database the
timed runs use, so every WAL file has reached its working size), then the ``--runs`` timed
runs of each system are split into ``--rounds`` rounds and the systems take turns round by
round, so a slow spell of the disk or a busy neighbour hits all of them alike. Figures: ms
per step is the median over rounds of (round time / (round runs x 10)); total s is the sum
of all timed rounds; steps/s = 1000 / ms per step; and the ratios the performance targets
are stated in (issue 3): Charter at most 0.5 ms/step, at least 2x faster than LangGraph
and 4x faster than DBOS per durable step, within 2.5x of the raw commit floor. After the
timed runs, a separate untimed pass (``--accounting-runs`` runs with SQLite statement
tracing) counts transactions (commits) and SQL statements per step for each system. The
load average is printed before and after: fsync latency and CPU time on a shared machine
vary a lot, so read figures taken under load with care.

This is a script, not a test: timings depend on the machine and its disk, so nothing here
asserts.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # the contract names this module's functions as ``bench.runs:...``
    sys.path.insert(0, str(ROOT))

STEPS = 10
"""Governed steps (actions) per run, and steps per DBOS workflow / LangGraph graph."""

TARGETS = {
    "charter_ms_per_step": 0.5,
    "faster_than_langgraph": 2.0,
    "faster_than_dbos": 4.0,
    "within_raw_floor": 2.5,
}

# -- what the Charter contract names by import path (``bench.runs:...``) ---------------

COUNTERS: dict[str, int] = {}
"""What the ``bump`` executor increments (in process: the executor is trivial on purpose)."""


def bump(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Executor of ``bump``: add ``amount`` to a counter; trivial, like the DBOS/LangGraph steps."""
    key = args["counter"]
    COUNTERS[key] = COUNTERS.get(key, 0) + int(args["amount"])
    return {"counter": key, "value": COUNTERS[key], "idempotency_key": ctx.idempotency_key}


def read_account(payload: dict[str, Any]) -> dict[str, Any]:
    """Reader of the ``account`` channel: the customer's counters and limits (a few hundred bytes)."""
    return {
        "customer_id": payload["customer_id"],
        "email": "ada@example.com",
        "tier": "gold",
        "limit": 1000,
        "counters": [
            {"id": f"c-{i:03d}", "value": 0, "max": 500, "owner": payload["customer_id"]}
            for i in range(1, 6)
        ],
    }


def script(request: Any) -> dict[str, Any]:
    """The scripted model: one ``bump`` per step for 10 steps, then a final answer."""
    if request.step <= STEPS:
        return {
            "actions": [
                {
                    "name": "bump",
                    "args": {"counter": f"c-{(request.step - 1) % 5 + 1:03d}", "amount": 1},
                }
            ],
            "confidence": 0.92,
            "rationale": f"step {request.step}: the counter is below its maximum",
        }
    return {
        "final": {"bumped": STEPS, "summary": "all counters bumped"},
        "confidence": 0.95,
        "rationale": "done",
    }


CONTRACT_YAML = """\
# A benchmark contract: the shape of examples/refunds/refunds.yaml, with a trivial action.
contract: bench-counter
version: 1
domain: bench
description: >
  Read a request and bump the customer's counters, one per step. The request text is
  written by the customer and is untrusted.
input:
  type: object
  required: [ticket_id, customer_id, message, claimed]
  additionalProperties: false
  properties:
    ticket_id: {type: string}
    customer_id: {type: string}
    message: {type: string, maxLength: 4000}
    claimed: {type: integer, minimum: 0}
model: {provider: scripted, name: bench, temperature: 0, seed: 7, script: bench.runs:script}
channels:
  account:
    labels: [pii]
    reader: bench.runs:read_account
    description: The customer's counters and limits.
  ticket.message:
    labels: [untrusted]
    input: message
actions:
  bump:
    description: Add an amount to one of the customer's counters.
    executor: bench.runs:bump
    effect: write
    reads: [account]
    args:
      type: object
      required: [counter, amount]
      additionalProperties: false
      properties:
        counter: {type: string, pattern: "^c-[0-9]{3}$"}
        amount: {type: integer, minimum: 1}
        note: {type: string, minLength: 1}
  notify:
    description: Tell the customer (never proposed in this benchmark).
    executor: bench.runs:bump
    effect: irreversible
    egress: external
    allows_labels: [pii, untrusted]
    args:
      type: object
      required: [to, body]
      additionalProperties: false
      properties:
        to: {type: string, format: email}
        body: {type: string, maxLength: 4000}
policy:
  default: deny
  on_error: deny
  rules:
    - id: blocked-customer
      at: admit
      when: 'context.account.tier == "blocked"'
      effect: deny
      reason: Account is blocked
    - id: legal-threat
      at: admit
      when: 'input.message.lowerAscii().contains("lawyer") || input.message.lowerAscii().contains("legal action")'
      effect: escalate
      reviewers: [legal]
      reason: Mentions legal action
    - id: large-claim
      at: admit
      when: 'input.claimed > 100000'
      effect: review
      reason: Large claims go straight to a person
    - id: admit-ordinary
      at: admit
      when: 'true'
      effect: allow
      reason: Ordinary requests go to the model
    - id: unknown-counter
      when: 'action.name == "bump" && !context.account.counters.exists(c, c.id == action.args.counter)'
      effect: deny
      reason: The counter is not one of this customer's counters
    - id: over-max
      when: >
        action.name == "bump" && context.account.counters.exists(c,
          c.id == action.args.counter && c.value + action.args.amount > c.max)
      effect: deny
      reason: The counter would exceed its maximum
    - id: big-bump
      when: 'action.name == "bump" && action.args.amount > 100'
      effect: review
      reviewers: [leads]
      reason: Large bumps need a second pair of eyes
    - id: injected-note
      when: 'action.name == "bump" && has(action.args.note) && "untrusted" in provenance(action.args.note).labels'
      effect: escalate
      reviewers: [security]
      reason: The note appears only in customer-written text (possible injection)
    - id: foreign-recipient
      when: 'action.name == "notify" && action.args.to.lowerAscii() != context.account.email.lowerAscii()'
      effect: escalate
      reviewers: [security]
      reason: Recipient is not the customer on file
    - id: low-confidence
      when: 'proposal.confidence < 0.7'
      effect: review
      reason: The model is unsure
    - id: notify-rate
      when: 'action.name == "notify" && count("notify", {"to": action.args.to}, duration("1h")) >= 3'
      effect: deny
      reason: At most three messages per recipient per hour
    - id: routine
      when: 'action.name in ["bump", "notify"]'
      effect: allow
      reason: Routine action within limits
    - id: within-claim
      at: outcome
      when: 'size(outcome.actions.filter(a, a.name == "bump")) <= input.claimed'
      effect: allow
      reason: Bumped no more than asked
escalation: {reviewers: [leads], sla: 4h, on_timeout: deny}
budget: {max_model_calls: 12, max_tokens: 1000000, max_cost_usd: 1.0, max_actions: 10, max_proposal_retries: 2}
"""

MESSAGE = (
    "Hello, please bump my counters c-001 to c-005 twice each; I was promised this in my "
    "last conversation with your colleague and the dashboard still shows zero. Thanks, Ada."
)


def _input(i: int) -> dict[str, Any]:
    return {
        "ticket_id": f"t-{i:06d}",
        "customer_id": f"cust-{i % 97:03d}",
        "message": MESSAGE,
        "claimed": STEPS,
    }


# -- results ----------------------------------------------------------------------------


@dataclass
class Result:
    system: str
    runs: int
    steps: int
    total_s: float
    round_ms_per_step: list[float]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ms_per_step(self) -> float:
        """The median over rounds (robust to a round hit by a disk hiccup)."""
        return statistics.median(self.round_ms_per_step)

    @property
    def steps_per_s(self) -> float:
        return 1000 / self.ms_per_step

    @property
    def ms_per_run(self) -> float:
        return self.ms_per_step * STEPS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            ms_per_step=round(self.ms_per_step, 4),
            mean_ms_per_step=round(self.total_s * 1000 / self.steps, 4),
            steps_per_s=round(self.steps_per_s, 1),
            ms_per_run=round(self.ms_per_run, 3),
            total_s=round(self.total_s, 4),
            round_ms_per_step=[round(x, 4) for x in self.round_ms_per_step],
        )
        return d


class _Tracer:
    """Counts SQL statements and commits seen by ``sqlite3`` trace callbacks."""

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self.begins = 0

    def __call__(self, sql: str) -> None:
        head = sql.lstrip()[:8].upper()
        if head.startswith(("COMMIT", "END")):
            self.commits += 1
        elif head.startswith("BEGIN"):
            self.begins += 1
        else:
            self.statements += 1

    def per_step(self, steps: int) -> dict[str, float]:
        return {
            "commits_per_step": round(self.commits / steps, 2),
            "statements_per_step": round(self.statements / steps, 2),
        }


class System:
    """One engine under test: set up, run batches of runs (timed), count, close."""

    name = ""
    note = ""

    def setup(self, workdir: Path) -> None:
        raise NotImplementedError

    def batch(self, n: int) -> float:
        """Run ``n`` runs to completion; return the seconds the timed part took."""
        raise NotImplementedError

    def account(self, n: int) -> dict[str, Any]:
        """Run ``n`` runs untimed with statement tracing; return counts per step."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what the warm-up accumulated."""

    def close(self) -> None:
        pass

    def results(self, runs: int, total_s: float, rounds: list[float]) -> list[Result]:
        return [Result(self.name, runs, runs * STEPS, total_s, rounds, self.note)]


def _clock(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- raw SQLite floor ---------------------------------------------------------------------


class Raw(System):
    name = "raw sqlite"
    note = "1 transaction (BEGIN IMMEDIATE, INSERT of a ~1 KB event, COMMIT) per step"

    def setup(self, workdir: Path) -> None:
        self.conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, "
            "data TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
        )
        self.payload = json.dumps(
            {"step": 0, "args": {"counter": "c-001", "amount": 1}, "pad": "x" * 960}
        )
        assert 1000 <= len(self.payload) <= 1100
        self.seq = 0

    def _loop(self, n: int) -> None:
        conn, payload = self.conn, self.payload
        for _ in range(n):
            self.seq += 1
            run_id = f"run{self.seq:08d}"
            for step in range(1, STEPS + 1):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO events (run_id, seq, type, data) VALUES (?, ?, ?, ?)",
                    (run_id, step, "step", payload),
                )
                conn.execute("COMMIT")

    def batch(self, n: int) -> float:
        return _clock(lambda: self._loop(n))

    def account(self, n: int) -> dict[str, Any]:
        tracer = _Tracer()
        self.conn.set_trace_callback(tracer)
        self._loop(n)
        self.conn.set_trace_callback(None)
        return {
            "journal_mode": self.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.conn.execute("PRAGMA synchronous").fetchone()[0],
            **tracer.per_step(n * STEPS),
        }

    def close(self) -> None:
        self.conn.close()


# -- Charter --------------------------------------------------------------------------------


class Charter(System):
    name = "charter"
    note = "Runtime.submit + work_once; a step = model call, validation, policy, executor, events"

    def __init__(self, profile: bool = False) -> None:
        self.profiler: Any = None
        if profile:
            import cProfile

            self.profiler = cProfile.Profile()
        self.submit_s = 0.0
        self.process_s = 0.0
        self.process_rounds: list[float] = []

    def reset(self) -> None:
        self.submit_s = self.process_s = 0.0
        self.process_rounds = []
        if self.profiler is not None:
            import cProfile

            self.profiler = cProfile.Profile()

    def setup(self, workdir: Path) -> None:
        from charter import Contract, Runtime

        path = workdir / "bench-counter.yaml"
        path.write_text(CONTRACT_YAML, encoding="utf-8")
        self.contract = Contract.load(path)
        self.runtime = Runtime(str(workdir / "charter.db"))
        self.conn: sqlite3.Connection = self.runtime.store.conn  # type: ignore[attr-defined]
        self.counter = 0

    def _submit(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            self.counter += 1
            ids.append(self.runtime.submit(self.contract, _input(self.counter)))
        return ids

    def _work(self) -> int:
        done = 0
        while self.runtime.work_once() is not None:
            done += 1
        return done

    def _check(self, ids: list[str]) -> None:
        for run_id in [*ids[:: max(1, len(ids) // 5)], ids[-1]]:
            state = self.runtime.state(run_id)
            if state.status != "completed" or len(state.executed) != STEPS:
                raise SystemExit(
                    f"charter run {run_id} ended {state.status} with {len(state.executed)} "
                    f"actions executed, not completed with {STEPS}; did the benchmark contract "
                    "or the runtime change?"
                )

    def batch(self, n: int) -> float:
        ids: list[str] = []
        processed = 0

        def work() -> None:
            nonlocal processed
            processed = self._work()

        submit_s = _clock(lambda: ids.extend(self._submit(n)))
        if self.profiler is not None:
            self.profiler.enable()
        process_s = _clock(work)
        if self.profiler is not None:
            self.profiler.disable()
        if processed != n:
            raise SystemExit(f"charter processed {processed} runs, expected {n}")
        self._check(ids)
        self.submit_s += submit_s
        self.process_s += process_s
        self.process_rounds.append(process_s * 1000 / (n * STEPS))
        return submit_s + process_s

    def account(self, n: int) -> dict[str, Any]:
        tracer = _Tracer()
        self.conn.set_trace_callback(tracer)
        ids = self._submit(n)
        self._work()
        self.conn.set_trace_callback(None)
        self._check(ids)
        n_events, n_bytes, prompt_bytes = self.conn.execute(
            "SELECT count(*), sum(length(data)), "
            "sum(CASE WHEN type = 'model.called' THEN length(data) ELSE 0 END) "
            f"FROM events WHERE run_id IN ({','.join('?' * len(ids))})",
            ids,
        ).fetchone()
        return {
            "journal_mode": self.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.conn.execute("PRAGMA synchronous").fetchone()[0],
            **tracer.per_step(n * STEPS),
            "commits_per_run": round(tracer.commits / n, 2),
            "statements_per_run": round(tracer.statements / n, 2),
            "events_per_run": round(n_events / n, 2),
            "event_bytes_per_run": round((n_bytes or 0) / n),
            "model_called_bytes_per_run": round((prompt_bytes or 0) / n),
        }

    def close(self) -> None:
        self.runtime.store.close()

    def results(self, runs: int, total_s: float, rounds: list[float]) -> list[Result]:
        main = Result(self.name, runs, runs * STEPS, total_s, rounds, self.note)
        main.extra.update(submit_s=round(self.submit_s, 4), process_s=round(self.process_s, 4))
        if self.profiler is not None:
            import io
            import pstats

            buf = io.StringIO()
            stats = pstats.Stats(self.profiler, stream=buf)
            stats.sort_stats("cumulative").print_stats(50)
            stats.sort_stats("tottime").print_stats(35)
            main.extra["profile"] = buf.getvalue()
        process = Result(
            "charter (process)",
            runs,
            runs * STEPS,
            self.process_s,
            self.process_rounds,
            "the same runs, work_once only (submit excluded)",
        )
        return [main, process]


# -- DBOS Transact --------------------------------------------------------------------------


class Dbos(System):
    name = "dbos"

    def setup(self, workdir: Path) -> None:
        import logging

        import sqlalchemy as sa
        from dbos import DBOS

        self.note = f"DBOS Transact {_version('dbos')}: a workflow of 10 @DBOS.step functions"
        db = workdir / "dbos.sqlite"
        with sqlite3.connect(db) as pre:  # WAL persists in the file: set it before DBOS opens it
            pre.execute("PRAGMA journal_mode=WAL")
        self.db = db
        # keep every DB-API connection SQLAlchemy opens, to trace the accounting pass
        self.dbapi_conns: list[sqlite3.Connection] = []
        self.tracer: _Tracer | None = None

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            self.dbapi_conns.append(dbapi_conn)
            if self.tracer is not None:
                dbapi_conn.set_trace_callback(self.tracer)

        self.on_connect = on_connect
        sa.event.listen(sa.pool.Pool, "connect", on_connect)

        @DBOS.step()
        def bench_step(x: int) -> int:
            return x + 1

        @DBOS.workflow()
        def bench_workflow(n: int) -> int:
            x = n
            for _ in range(STEPS):
                x = bench_step(x)
            return x

        self.workflow = bench_workflow
        logging.getLogger("dbos").setLevel(logging.WARNING)
        DBOS(
            config={
                "name": "charter-bench",
                "system_database_url": f"sqlite:///{db}",
                "log_level": "WARNING",
                "application_version": "bench",
            }
        )
        DBOS.launch()
        self.seq = 0

    def _loop(self, n: int) -> None:
        from dbos import SetWorkflowID

        for _ in range(n):
            self.seq += 1
            with SetWorkflowID(f"wf-{self.seq:08d}"):
                if self.workflow(self.seq) != self.seq + STEPS:
                    raise SystemExit("the DBOS workflow returned a wrong result")

    def batch(self, n: int) -> float:
        return _clock(lambda: self._loop(n))

    def account(self, n: int) -> dict[str, Any]:
        tracer = self.tracer = _Tracer()
        for c in self.dbapi_conns:
            c.set_trace_callback(tracer)
        self._loop(n)
        self.tracer = None
        for c in self.dbapi_conns:
            c.set_trace_callback(None)
        with sqlite3.connect(self.db) as check:
            mode = check.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.dbapi_conns[-1].execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": mode, "synchronous": sync, **tracer.per_step(n * STEPS)}

    def close(self) -> None:
        import sqlalchemy as sa
        from dbos import DBOS

        DBOS.destroy(destroy_registry=True)
        sa.event.remove(sa.pool.Pool, "connect", self.on_connect)


# -- LangGraph --------------------------------------------------------------------------------


class LangGraph(System):
    name = "langgraph"

    def setup(self, workdir: Path) -> None:
        from typing import TypedDict

        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph

        self.note = (
            f"LangGraph {_version('langgraph')} + SqliteSaver "
            f"{_version('langgraph-checkpoint-sqlite')}: 10 nodes, durability=sync"
        )

        class State(TypedDict):
            x: int

        def node(state: State) -> dict[str, int]:
            return {"x": state["x"] + 1}

        builder = StateGraph(State)
        names = [f"n{i}" for i in range(1, STEPS + 1)]
        for name in names:
            builder.add_node(name, node)
        builder.add_edge(START, names[0])
        for a, b in itertools.pairwise(names):
            builder.add_edge(a, b)
        builder.add_edge(names[-1], END)
        self.conn = sqlite3.connect(workdir / "langgraph.db", check_same_thread=False)
        saver = SqliteSaver(self.conn)
        saver.setup()  # journal_mode=WAL; synchronous stays SQLite's default (FULL)
        self.graph = builder.compile(checkpointer=saver)
        self.seq = 0

    def _loop(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            out = self.graph.invoke(
                {"x": self.seq},
                {"configurable": {"thread_id": f"t-{self.seq:08d}"}},
                durability="sync",
            )
            if out["x"] != self.seq + STEPS:
                raise SystemExit("the LangGraph graph returned a wrong result")

    def batch(self, n: int) -> float:
        return _clock(lambda: self._loop(n))

    def account(self, n: int) -> dict[str, Any]:
        tracer = _Tracer()
        self.conn.set_trace_callback(tracer)
        self._loop(n)
        self.conn.set_trace_callback(None)
        return {
            "journal_mode": self.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.conn.execute("PRAGMA synchronous").fetchone()[0],
            **tracer.per_step(n * STEPS),
        }

    def close(self) -> None:
        self.conn.close()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# -- report --------------------------------------------------------------------------------


def ratios(results: dict[str, Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    charter = results.get("charter")
    if charter is None:
        return out

    def item(value: float, op: str, target: float) -> dict[str, Any]:
        met = value <= target if op == "<=" else value >= target
        return {"value": round(value, 3), "target": f"{op} {target}", "met": met}

    out["charter_ms_per_step"] = item(charter.ms_per_step, "<=", TARGETS["charter_ms_per_step"])
    if "langgraph" in results:
        v = results["langgraph"].ms_per_step / charter.ms_per_step
        out["faster_than_langgraph"] = item(v, ">=", TARGETS["faster_than_langgraph"])
    if "dbos" in results:
        v = results["dbos"].ms_per_step / charter.ms_per_step
        out["faster_than_dbos"] = item(v, ">=", TARGETS["faster_than_dbos"])
    if "raw sqlite" in results:
        v = charter.ms_per_step / results["raw sqlite"].ms_per_step
        out["times_raw_floor"] = item(v, "<=", TARGETS["within_raw_floor"])
    return out


RATIO_LABELS = {
    "charter_ms_per_step": "Charter ms/step",
    "faster_than_langgraph": "Charter vs LangGraph (x faster)",
    "faster_than_dbos": "Charter vs DBOS (x faster)",
    "times_raw_floor": "Charter vs raw commit floor (x slower)",
}


def print_table(results: list[Result], rat: dict[str, Any], meta: dict[str, Any]) -> None:
    print(
        f"Durable steps on SQLite: {meta['runs']} runs x {STEPS} steps per system in "
        f"{meta['rounds']} interleaved rounds, {meta['warmup']} warm-up runs each; "
        f"python {meta['python']}, sqlite {meta['sqlite']}, {meta['machine']}"
    )
    print(
        f"databases in {meta['dir']} ({meta['fs']}); load average before "
        f"{meta['loadavg_before']}, after {meta['loadavg_after']}"
    )
    print()
    head = (
        f"{'system':<18} {'steps':>6} {'total s':>8} {'ms/step':>8} {'steps/s':>8} "
        f"{'ms/run':>8} {'rounds ms/step':>16} {'commits/step':>12} {'stmts/step':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r.extra.get("commits_per_step")
        s = r.extra.get("statements_per_step")
        spread = f"{min(r.round_ms_per_step):.3f}-{max(r.round_ms_per_step):.3f}"
        print(
            f"{r.system:<18} {r.steps:>6} {r.total_s:>8.3f} {r.ms_per_step:>8.3f} "
            f"{r.steps_per_s:>8.0f} {r.ms_per_run:>8.2f} {spread:>16} "
            f"{'' if c is None else f'{c:.2f}':>12} {'' if s is None else f'{s:.2f}':>10}"
        )
    print()
    print("ms/step: median over rounds; total s: all timed runs; ms/run = ms/step x 10")
    for r in results:
        if r.note:
            print(f"  {r.system}: {r.note}")
    ch = next((r for r in results if r.system == "charter"), None)
    if ch is not None and "commits_per_run" in ch.extra:
        e = ch.extra
        print(
            f"  charter per run: {e['commits_per_run']} commits, {e['statements_per_run']} SQL "
            f"statements, {e['events_per_run']} events, {e['event_bytes_per_run']} bytes of event "
            f"data ({e['model_called_bytes_per_run']} in model.called); "
            f"submit {e['submit_s']:.3f} s + process {e['process_s']:.3f} s in total"
        )
    if rat:
        print()
        print(f"{'ratio':<40} {'value':>8} {'target':>8}  met")
        for key, it in rat.items():
            print(
                f"{RATIO_LABELS[key]:<40} {it['value']:>8.3f} {it['target']:>8}  "
                f"{'yes' if it['met'] else 'NO'}"
            )


def _filesystem(path: Path) -> str:
    try:
        best = ("", "?")
        with Path("/proc/mounts").open(encoding="utf-8") as f:
            for line in f:
                dev, mount, fstype, *_ = line.split()
                if str(path).startswith(mount) and len(mount) > len(best[0]):
                    best = (mount, f"{fstype} on {dev}")
        return best[1]
    except OSError:
        return "?"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=300, help="timed runs per system, over all rounds (default 300)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="the timed runs are split into rounds, systems interleaved (default 5)",
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs per system")
    parser.add_argument(
        "--accounting-runs",
        type=int,
        default=5,
        help="untimed runs with statement tracing, to count commits/statements per step",
    )
    parser.add_argument(
        "--only",
        default="raw,charter,langgraph,dbos",
        help="comma-separated subset of raw,charter,langgraph,dbos",
    )
    parser.add_argument("--dir", default=None, help="directory for the databases (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile Charter's timed work loop and print it"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - {"raw", "charter", "langgraph", "dbos"}
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    rounds = max(1, min(args.rounds, args.runs))
    per_round = [args.runs // rounds + (1 if i < args.runs % rounds else 0) for i in range(rounds)]
    workdir = Path(tempfile.mkdtemp(prefix="charter-bench-", dir=args.dir)).resolve()
    meta = {
        "runs": args.runs,
        "rounds": rounds,
        "warmup": args.warmup,
        "steps_per_run": STEPS,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "dir": str(workdir),
        "fs": _filesystem(workdir),
        "loadavg_before": _loadavg(),
    }
    factories: dict[str, Callable[[], System]] = {
        "raw": Raw,
        "charter": lambda: Charter(profile=args.profile),
        "langgraph": LangGraph,
        "dbos": Dbos,
    }

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    systems: list[System] = []
    skipped: dict[str, str] = {}
    results: list[Result] = []
    old_cwd = Path.cwd()
    os.chdir(workdir)  # whatever a library writes next to the cwd lands in the temp dir
    try:
        for key in ("raw", "charter", "langgraph", "dbos"):
            if key not in wanted:
                continue
            system = factories[key]()
            try:
                system.setup(workdir)
            except ImportError as exc:
                skipped[key] = f"not installed ({exc}); pip install -e '.[bench]'"
                continue
            say(f"... {system.name}: set up, {args.warmup} warm-up runs")
            system.batch(args.warmup)
            system.reset()
            systems.append(system)
        timings: dict[str, list[float]] = {s.name: [] for s in systems}
        for i, n in enumerate(per_round, 1):
            for system in systems:
                say(f"... round {i}/{rounds}: {system.name}, {n} runs")
                gc.collect()
                timings[system.name].append(system.batch(n))
        for system in systems:
            say(f"... {system.name}: accounting pass")
            counts = system.account(args.accounting_runs) if args.accounting_runs else {}
            out = system.results(
                args.runs,
                sum(timings[system.name]),
                [
                    t * 1000 / (n * STEPS)
                    for t, n in zip(timings[system.name], per_round, strict=True)
                ],
            )
            out[0].extra.update(counts)
            results.extend(out)
    finally:
        for system in systems:
            system.close()
        os.chdir(old_cwd)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["loadavg_after"] = _loadavg()
    rat = ratios({r.system: r for r in results})
    profile = next((r.extra.pop("profile") for r in results if "profile" in r.extra), None)
    if args.json:
        print(
            json.dumps(
                {
                    "meta": meta,
                    "results": [r.to_dict() for r in results],
                    "ratios": rat,
                    "targets": TARGETS,
                    "skipped": skipped,
                },
                indent=2,
            )
        )
    else:
        print_table(results, rat, meta)
        for key, why in skipped.items():
            print(f"skipped {key}: {why}")
        if profile:
            print()
            print(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
