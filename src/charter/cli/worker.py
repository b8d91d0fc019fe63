"""``charter worker``: process queued runs until stopped."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from types import FrameType

import click

from charter.cli.common import handle_errors
from charter.cli.options import (
    db_option,
)
from charter.errors import CharterError, WorkerCrashedError
from charter.ledger.store import open_store
from charter.runs.limits import Limits
from charter.runs.runtime import Runtime


@click.command("worker")
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Runs processed in parallel (threads).",
)
@click.option(
    "--idle-exit", type=float, default=None, help="Exit after this many seconds with nothing to do."
)
@click.option(
    "--max-runs",
    type=click.IntRange(1),
    default=None,
    help="Exit after processing this many runs (per thread).",
)
@click.option(
    "--poll",
    type=float,
    default=0.25,
    show_default=True,
    help="Seconds between polls when idle (PostgreSQL also wakes workers by LISTEN/NOTIFY).",
)
@click.option(
    "--lease",
    type=click.FloatRange(1),
    default=30.0,
    show_default=True,
    help="Seconds a claimed run stays leased without a heartbeat before others may reclaim it.",
)
@click.option(
    "--max-per-contract",
    "max_per_contract",
    multiple=True,
    metavar="NAME=N",
    help="At most N runs of contract NAME in flight across all workers (repeatable).",
)
@click.option(
    "--rate-limit",
    "rate_limits",
    multiple=True,
    metavar="PROVIDER=N/min",
    help="At most N model calls to PROVIDER per window (N/s, N/min, N/h) across all workers.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds to let the current step finish after SIGTERM/SIGINT before exiting anyway.",
)
@db_option
@handle_errors
def worker_cmd(
    concurrency: int,
    idle_exit: float | None,
    max_runs: int | None,
    poll: float,
    lease: float,
    max_per_contract: tuple[str, ...],
    rate_limits: tuple[str, ...],
    grace: float,
    db: str,
) -> None:
    """Process queued runs until SIGTERM/SIGINT (finishing the current step first).

    Any number of workers, on any number of machines, may share one PostgreSQL ledger (or
    one SQLite file on one machine). Limits hold across all of them; give every worker the
    same ones.
    """
    limits = Limits.parse(max_per_contract, rate_limits)
    store = open_store(db, create=True)  # one store (one connection pool) for all threads
    runtimes = [
        Runtime(store, limits=limits, lease=timedelta(seconds=lease)) for _ in range(concurrency)
    ]

    stopping_since: list[float] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping_since:
            stopping_since.append(time.monotonic())
        for rt in runtimes:
            rt.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    counts = [0] * concurrency
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            counts[i] = runtimes[i].work(idle_exit=idle_exit, poll=poll, max_runs=max_runs)
        except BaseException as exc:
            # a ledger that cannot be used, code this worker cannot import, or a bug: stop
            # every thread, report it, exit non-zero (a thread must never die silently)
            errors.append(exc)
            stop(signal.SIGTERM, None)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    abandoned = False
    for t in threads:
        while t.is_alive():
            t.join(0.2)
            if stopping_since and time.monotonic() - stopping_since[0] > grace:
                abandoned = True  # what a step had not committed is redone by the next worker
                break
    if not abandoned:
        store.close()
    if errors:
        first = errors[0]
        if isinstance(first, CharterError):
            raise first
        raise WorkerCrashedError(
            f"a worker thread died: {type(first).__name__}: {first}; runs it held are "
            "picked up again when their leases expire"
        ) from first
    if abandoned:
        click.echo(
            f"worker stopped after {grace:g}s of grace with a step still running; the run is "
            "picked up again by another worker (its started actions retry with the same key)",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"worker stopped after processing {sum(counts)} run(s)")
