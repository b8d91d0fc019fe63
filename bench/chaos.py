"""Chaos: many worker processes, random SIGKILLs and dropped connections, then an audit.

Run ``python bench/chaos.py`` (``--store sqlite|postgres|both``, default both when
``$CHARTER_TEST_POSTGRES`` or ``--pg`` names a server). It

1. submits ``--runs`` runs (default 500) of a refunds-like contract (``bench/chaos_domain.py``)
   whose executors keep books of their own: every call, and every effect per idempotency key;
2. starts ``--workers`` real ``charter worker`` processes (default 4, ``--concurrency``
   threads each, a short ``--lease`` so a killed worker's runs are reclaimed quickly);
3. while runs remain unfinished, SIGKILLs a random worker at random moments
   (``--kill-every MIN:MAX`` seconds, at most ``--kills`` times) and restarts it, and on
   PostgreSQL also terminates every ledger connection of the workers
   (``pg_terminate_backend``, every ``--drop-every MIN:MAX`` seconds);
4. sends SIGTERM to every worker (they must exit cleanly) and audits the ledger and books:

   * every run reached a final state, none holds a lease, no review is left pending;
   * no effect was applied twice: effects per idempotency key and per (run, step) are at
     most one, every recorded completion has its effect and every effect its completion;
   * no execution the ledger did not start: each executor call matches one
     ``ActionStarted`` (key, attempt), none came after the action's completion; calls
     repeated with the same key after a crash are counted (that is the retry contract);
   * every review that timed out was decided exactly once;
   * no event is missing: every run's hash chain verifies.

It prints these counts (``--json`` for machine-readable output) and exits 1 if any
invariant failed or the runs did not all finish within ``--timeout`` seconds. The test
suite runs a small version of it on both stores (``tests/workers/test_chaos.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import chaos_domain  # noqa: E402
from charter.contract.model import Contract  # noqa: E402
from charter.contract.source import parse_yaml  # noqa: E402
from charter.ledger.events import (  # noqa: E402
    ActionCompleted,
    ActionStarted,
    ReviewDecided,
    ReviewRequested,
)
from charter.ledger.store import Store, open_store  # noqa: E402
from charter.ledger.verify import verify  # noqa: E402
from charter.runs.runtime import Runtime  # noqa: E402

PG_ENV = "CHARTER_TEST_POSTGRES"
FINAL = ("completed", "failed", "escalated", "refused", "cancelled")


def _span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


@dataclass
class Options:
    store: str
    pg: str
    workers: int = 4
    concurrency: int = 2
    runs: int = 500
    kills: int | None = None
    kill_every: tuple[float, float] = (0.3, 1.5)
    drop_every: tuple[float, float] = (1.0, 3.0)
    lease: float = 2.0
    latency_ms: float = 2.0
    timeout: float = 600.0
    seed: int = 7
    quiet: bool = False


@dataclass
class Report:
    store: str
    runs: int
    workers: int
    seconds: float = 0.0
    kills: int = 0
    restarts: int = 0
    connection_drops: int = 0
    connections_dropped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    unfinished: int = 0
    leased_at_end: int = 0
    pending_reviews: int = 0
    reviews_expired: int = 0
    reviews_decided_twice: int = 0
    effects: int = 0
    keys_with_double_effects: int = 0
    steps_with_double_effects: int = 0
    completions_without_effect: int = 0
    effects_without_completion: int = 0
    executor_calls: int = 0
    keys_retried_after_crash: int = 0
    calls_not_started_by_ledger: int = 0  # calls of a key beyond its ActionStarted events
    calls_repeating_an_attempt: int = 0  # attempt numbers seen twice (bookkeeping only)
    starts_after_completion: int = 0
    chains_verified: int = 0
    chains_broken: int = 0
    clean_exits: int = 0
    unclean_exits: int = 0
    stale_leases: int = 0  # finished runs still leased by a worker that was SIGKILLed
    examples: dict[str, list[str]] = field(default_factory=dict)  # offenders, for diagnosis

    @property
    def ok(self) -> bool:
        return (
            self.unfinished
            == self.leased_at_end
            == self.pending_reviews
            == self.reviews_decided_twice
            == self.keys_with_double_effects
            == self.steps_with_double_effects
            == self.completions_without_effect
            == self.effects_without_completion
            == self.calls_not_started_by_ledger
            == self.starts_after_completion
            == self.chains_broken
            == self.unclean_exits
            == 0
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


# -- places -------------------------------------------------------------------------------------
@contextmanager
def places(opts: Options, tmp: Path) -> Iterator[tuple[str, str]]:
    """(ledger URL, books URL): a SQLite file each, or one fresh PostgreSQL schema."""
    if opts.store == "sqlite":
        yield f"sqlite:///{tmp / 'ledger.db'}", f"sqlite:///{tmp / 'books.db'}"
        return
    import psycopg

    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in opts.pg else "?"
    url = f"{opts.pg}{sep}schema={schema}"
    try:
        yield url, url
    finally:
        with psycopg.connect(opts.pg.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def create_books(books: str) -> None:
    if books.startswith("sqlite:///"):
        conn = sqlite3.connect(books.removeprefix("sqlite:///"))
        for statement in chaos_domain.SCHEMA:
            conn.execute(statement)
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(chaos_domain._pg_conninfo(books), autocommit=True) as conn:
        for statement in chaos_domain.SCHEMA:
            conn.execute(statement)


def read_books(books: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(calls as (key, attempt), effects as (key, run_id, step))."""
    os.environ[chaos_domain.EFFECTS_ENV] = books
    with chaos_domain.books() as db:
        calls = db.execute("SELECT key, attempt FROM chaos_calls")
        effects = db.execute("SELECT key, run_id, step FROM chaos_effects")
    return calls, effects


def drop_connections(server: str) -> int:
    """Terminate every ledger connection of the workers (``application_name = charter``)."""
    import psycopg

    with psycopg.connect(server.split("?")[0], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'charter' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        ).fetchall()
    return len(rows)


# -- workers -------------------------------------------------------------------------------------
class Workers:
    def __init__(self, opts: Options, ledger: str, books: str, logs: Path) -> None:
        self.opts = opts
        self.ledger = ledger
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            chaos_domain.EFFECTS_ENV: books,
            chaos_domain.LATENCY_ENV: str(opts.latency_ms),
        }
        self.env.pop("CHARTER_FAILPOINT", None)
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.spawned_at: dict[int, float] = {}
        self.log_of: dict[int, Path] = {}

    def spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        path = self.logs / f"worker-{self.started}.log"
        log = path.open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from charter.cli import main; main()",
                "worker",
                "--db",
                self.ledger,
                "--concurrency",
                str(self.opts.concurrency),
                "--lease",
                str(self.opts.lease),
                "--poll",
                "0.2",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.spawned_at[proc.pid] = time.monotonic()
        self.log_of[proc.pid] = path
        return proc

    def start(self) -> None:
        self.procs = [self.spawn() for _ in range(self.opts.workers)]

    def kill_one(self, rng: random.Random) -> None:
        i = rng.randrange(len(self.procs))
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self.spawn()

    def stop(self) -> tuple[int, list[str]]:
        """SIGTERM everyone; (clean exits, what the unclean ones said last)."""
        # a process still starting up has no SIGTERM handler yet (any program's default
        # applies): give a just-restarted worker time to come up before judging its shutdown
        youngest = max(self.spawned_at[p.pid] for p in self.procs)
        time.sleep(max(0.0, youngest + 3.0 - time.monotonic()))
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        clean = 0
        unclean: list[str] = []
        for p in self.procs:
            try:
                code = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                code = -9
            if code == 0:
                clean += 1
            else:
                tail = self.log_of[p.pid].read_text(errors="replace").strip().splitlines()[-3:]
                unclean.append(f"exit {code}: {' | '.join(tail)}")
        return clean, unclean


def unfinished(store: Store) -> int:
    return sum(1 for r in store.list_runs(limit=1_000_000) if r.status not in FINAL)


# -- one chaos run -----------------------------------------------------------------------------------
def run(opts: Options) -> Report:
    rng = random.Random(opts.seed)
    report = Report(opts.store, opts.runs, opts.workers)
    say = (lambda *a: None) if opts.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="charter-chaos-") as tmpdir:
        tmp = Path(tmpdir)
        with places(opts, tmp) as (ledger, books):
            store = open_store(ledger.replace("schema=", "application_name=chaos-driver&schema="))
            create_books(books)  # after the ledger: on PostgreSQL, in the schema it created
            from ruamel.yaml import YAML

            path = tmp / "chaos-refunds.yaml"
            with path.open("w") as fh:
                YAML(typ="safe", pure=True).dump(chaos_domain.CONTRACT, fh)
            contract = Contract.from_document(parse_yaml(path.read_text(), str(path)))
            rt = Runtime(store)
            for n in range(opts.runs):
                rt.submit(contract, chaos_domain.ticket(n), idempotency_key=f"ticket-{n}")
            say(f"[{opts.store}] {opts.runs} runs queued; starting {opts.workers} workers")

            workers = Workers(opts, ledger, books, tmp)
            started = time.monotonic()
            workers.start()
            next_kill = started + rng.uniform(*opts.kill_every)
            next_drop = started + rng.uniform(*opts.drop_every)
            deadline = started + opts.timeout
            left = opts.runs
            while time.monotonic() < deadline:
                time.sleep(0.1)
                left = unfinished(store)
                if left == 0:
                    break
                now = time.monotonic()
                if now >= next_kill and (opts.kills is None or report.kills < opts.kills):
                    workers.kill_one(rng)
                    report.kills += 1
                    next_kill = now + rng.uniform(*opts.kill_every)
                    say(f"[{opts.store}] SIGKILL #{report.kills}; {left} runs unfinished")
                if opts.store == "postgres" and now >= next_drop:
                    report.connection_drops += 1
                    report.connections_dropped += drop_connections(opts.pg)
                    next_drop = now + rng.uniform(*opts.drop_every)
            report.seconds = round(time.monotonic() - started, 2)
            report.restarts = workers.started - opts.workers
            report.clean_exits, unclean = workers.stop()
            report.unclean_exits = len(unclean)
            if unclean:
                report.examples["unclean_exits"] = unclean
            say(f"[{opts.store}] done in {report.seconds}s; auditing")
            audit(store, books, report)
            store.close()
    return report


def audit(store: Store, books: str, report: Report) -> None:
    rows = store.list_runs(limit=1_000_000)
    report.statuses = dict(Counter(r.status for r in rows))
    report.unfinished = sum(1 for r in rows if r.status not in FINAL)
    # a run a worker still holds must not be left unfinished; a finished run may keep the
    # lease of a worker SIGKILLed before it could release it (it simply expires)
    report.leased_at_end = sum(
        1 for r in rows if r.lease_owner is not None and r.status not in FINAL
    )
    report.stale_leases = sum(1 for r in rows if r.lease_owner is not None) - report.leased_at_end
    report.pending_reviews = len(store.list_reviews())
    checked, broken = verify(store, [r.run_id for r in rows])
    report.chains_verified, report.chains_broken = checked - len(broken), len(broken)

    starts: Counter[str] = Counter()
    completed: set[str] = set()
    after_completion = 0
    decided: Counter[str] = Counter()
    for r in rows:
        done: set[str] = set()
        for stored in store.events(r.run_id):
            ev = stored.event
            if isinstance(ev, ActionStarted):
                if ev.idempotency_key in done:
                    after_completion += 1
                starts[ev.idempotency_key] += 1
            elif isinstance(ev, ActionCompleted):
                key = f"{r.run_id}:{ev.step}" + (":compensate" if ev.compensation else "")
                done.add(key)
                completed.add(key)
            elif isinstance(ev, ReviewDecided):
                decided[ev.review_id] += 1
                report.reviews_expired += ev.verdict == "expired"
            elif isinstance(ev, ReviewRequested):
                decided.setdefault(ev.review_id, 0)
    report.starts_after_completion = after_completion
    report.reviews_decided_twice = sum(1 for n in decided.values() if n > 1)

    calls, effects = read_books(books)
    report.executor_calls = len(calls)
    # every executor call follows its own ActionStarted (appended, fenced, before the call):
    # more calls of a key than starts would be an execution the ledger never authorised
    per_key_calls = Counter(k for k, _ in calls)
    beyond = {k: n - starts[k] for k, n in per_key_calls.items() if n > starts[k]}
    report.calls_not_started_by_ledger = sum(beyond.values())
    # attempt numbers are bookkeeping: a repeat is reported, not counted as a double call
    per_attempt = Counter((k, a) for k, a in calls)
    repeats = [f"{k}#{a}" for (k, a), n in per_attempt.items() if n > 1]
    report.calls_repeating_an_attempt = len(repeats)
    report.examples |= {
        name: offenders[:5]
        for name, offenders in {
            "calls_not_started_by_ledger": sorted(beyond),
            "calls_repeating_an_attempt": repeats,
        }.items()
        if offenders
    }
    report.keys_retried_after_crash = sum(1 for n in per_key_calls.values() if n > 1)
    report.effects = len(effects)
    per_key = Counter(k for k, _, _ in effects)
    per_step = Counter((k.endswith(":compensate"), run, step) for k, run, step in effects)
    report.keys_with_double_effects = sum(1 for n in per_key.values() if n > 1)
    report.steps_with_double_effects = sum(1 for n in per_step.values() if n > 1)
    report.completions_without_effect = len(completed - set(per_key))
    report.effects_without_completion = len(set(per_key) - completed)


def render(r: Report) -> str:
    status = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
    lines = [
        f"chaos on {r.store}: {r.runs} runs, {r.workers} workers, {r.seconds}s, "
        f"{r.kills} SIGKILLs ({r.restarts} restarts)"
        + (
            f", {r.connection_drops} connection drops ({r.connections_dropped} connections)"
            if r.store == "postgres"
            else ""
        ),
        f"  runs:     {status}; unfinished {r.unfinished}, leased at the end {r.leased_at_end} "
        f"(+{r.stale_leases} finished runs keep a killed worker's expiring lease)",
        f"  reviews:  {r.reviews_expired} expired (fail closed), decided twice "
        f"{r.reviews_decided_twice}, pending {r.pending_reviews}",
        f"  effects:  {r.effects} applied; keys applied twice {r.keys_with_double_effects}, "
        f"steps applied twice {r.steps_with_double_effects}, completions without effect "
        f"{r.completions_without_effect}, effects without completion {r.effects_without_completion}",
        f"  executor: {r.executor_calls} calls; keys retried after a crash "
        f"{r.keys_retried_after_crash} (same key), calls the ledger did not start "
        f"{r.calls_not_started_by_ledger}, attempt numbers reused {r.calls_repeating_an_attempt}, "
        f"starts after completion {r.starts_after_completion}",
        f"  ledger:   {r.chains_verified} chains verify, {r.chains_broken} broken",
        f"  shutdown: {r.clean_exits} workers exited cleanly on SIGTERM, {r.unclean_exits} did not",
        f"  verdict:  {'OK' if r.ok else 'FAILED'}",
    ]
    lines += [f"  example {name}: {', '.join(keys)}" for name, keys in r.examples.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default=None)
    parser.add_argument("--pg", default=os.environ.get(PG_ENV, ""), help=f"server (env {PG_ENV})")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="threads per worker")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=None, help="at most this many SIGKILLs")
    parser.add_argument("--kill-every", default="0.3:1.5", help="MIN:MAX seconds between kills")
    parser.add_argument("--drop-every", default="1:3", help="MIN:MAX s between connection drops")
    parser.add_argument("--lease", type=float, default=2.0, help="worker lease, seconds")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="per model/executor call")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    kinds = (
        [args.store]
        if args.store and args.store != "both"
        else ["sqlite", "postgres"]
        if args.pg or args.store == "both"
        else ["sqlite"]
    )
    if "postgres" in kinds and not args.pg:
        parser.error(f"PostgreSQL needs --pg or ${PG_ENV}")
    reports = []
    for kind in kinds:
        opts = Options(
            store=kind,
            pg=args.pg,
            workers=args.workers,
            concurrency=args.concurrency,
            runs=args.runs,
            kills=args.kills,
            kill_every=_span(args.kill_every),
            drop_every=_span(args.drop_every),
            lease=args.lease,
            latency_ms=args.latency_ms,
            timeout=args.timeout,
            seed=args.seed,
            quiet=args.json,
        )
        reports.append(run(opts))
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print("\n\n".join(render(r) for r in reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
