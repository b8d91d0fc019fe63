"""``charter run ...``, ``charter review ...``, ``verify``, ``replay``, ``worker``, ``report``."""

from __future__ import annotations

import getpass
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from charter.cli.common import echo_json, handle_errors, parse_json_object, progress
from charter.contract.model import Contract
from charter.contract.registry import load_packs
from charter.errors import CharterError, UsageError, WorkerCrashedError
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    BudgetExceeded,
    ChannelRead,
    CompensationStarted,
    ModelCalled,
    ProposalAccepted,
    ProposalRejected,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
    RunSubmitted,
    StoredEvent,
)
from charter.ledger.sqlbase import SqlStore
from charter.ledger.store import Store, open_store
from charter.ledger.verify import verify
from charter.primitives import format_time, parse_instant, parse_time
from charter.runs.limits import Limits
from charter.runs.replay import replay
from charter.runs.report import build_report
from charter.runs.runtime import Runtime
from charter.runs.state import RunState
from charter.scrub import scrub

F = TypeVar("F", bound=Callable[..., Any])

RUN_STATUSES = ("queued", "waiting", "completed", "failed", "escalated", "refused", "cancelled")
#: ``run start --wait``: the exit status of each way a run can stop (docs/cli.md)
RUN_EXIT_CODES = {
    "completed": 0,
    "waiting": 10,
    "failed": 11,
    "escalated": 12,
    "refused": 13,
    "cancelled": 14,
}


def db_option(func: F) -> F:
    return click.option(
        "--db",
        envvar="CHARTER_DATABASE_URL",
        default="charter.db",
        show_default=True,
        help="Ledger location: a SQLite path, sqlite:///path or "
        "postgresql://user@host:port/db[?schema=name] (env CHARTER_DATABASE_URL).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def since_option(func: F) -> F:
    return click.option("--since", help="Only runs submitted at or after this ISO 8601 instant.")(
        func
    )


def limit_option(func: F) -> F:
    return click.option(
        "--limit",
        type=click.IntRange(1),
        default=None,
        help="At most this many runs, the oldest first.",
    )(func)


@dataclass(frozen=True)
class Bounds:
    """What ``--since``/``--limit`` left out, said beside every count so that a partial
    check is never read as a full one."""

    since: str | None  # the instant, in UTC, as ISO 8601
    limit: int | None
    matching: int  # runs submitted since then, before the limit

    def note(self) -> str:
        """`` (submitted since …, first N of M)``, or nothing when nothing was left out."""
        parts = []
        if self.since is not None:
            parts.append(f"submitted since {self.since}")
        if self.limit is not None and self.matching > self.limit:
            parts.append(f"first {self.limit} of {self.matching}")
        return f" ({', '.join(parts)})" if parts else ""

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "limit": self.limit, "matching": self.matching}


def parse_since(since: str | None) -> datetime | None:
    """``--since`` as an instant; a usage error naming the option when it is not one."""
    try:
        return parse_instant(since) if since is not None else None
    except ValueError as exc:
        raise UsageError(f"option --since: {exc}") from None


def select_runs(
    store: Store,
    instant: datetime | None,
    limit: int | None,
    *,
    contract_name: str | None = None,
) -> tuple[list[str], Bounds | None]:
    """Run ids, oldest first, submitted at or after ``instant``, at most ``limit`` of them;
    with the bounds applied (``None`` when neither was given)."""
    ids = store.run_ids(
        contract_name=contract_name, since=format_time(instant) if instant else None
    )
    if instant is None and limit is None:
        return ids, None
    shown = instant.isoformat().replace("+00:00", "Z") if instant else None
    return ids[:limit], Bounds(shown, limit, len(ids))


def _runtime(db: str, *, write: bool = False, create: bool = False) -> Runtime:
    """A runtime over the ledger: read commands open it read-only (never migrating or
    creating anything); commands that write name it, and only ``run start`` creates one."""
    return Runtime(open_store(db, create=create, read_only=not write))


def state_summary(state: RunState) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "contract": state.contract,
        "status": state.status,
        "model_calls": state.model_calls,
        "tokens": state.tokens,
        "cost_usd": round(state.cost_usd, 6),
        "actions_executed": len(state.executed),
        "waiting_for": state.review.review_id if state.review else None,
        "events": state.seq,
    }


# -- run ---------------------------------------------------------------------------------
@click.group("run")
def run_group() -> None:
    """Submit, inspect and cancel runs."""


@run_group.command("start")
@click.argument("contract", type=click.Path(path_type=Path))
@click.option("--input", "input_json", required=True, help="Task input as JSON or @file.json.")
@click.option("--context", "context_json", help="Extra facts for policy (context.*) as JSON.")
@click.option(
    "--key",
    "idempotency_key",
    help="Idempotency key: submitting the same task with the same key returns the first run; "
    "a different task under a known key is refused.",
)
@click.option(
    "--packs",
    "pack_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Policy pack file or directory.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Process the run in this process until it ends or waits for a review; the exit "
    "status says how it ended (0 completed, 10 waiting, 11 failed, 12 escalated, 13 refused, "
    "14 cancelled).",
)
@click.option(
    "--model",
    "model",
    metavar="PROVIDER:MODEL",
    help="Use this model instead of the contract's: openai:MODEL, anthropic:MODEL, "
    "replay[:RUN_ID|PROMPT_HASH] or scripted[:pkg.mod:func]. Recorded with the run.",
)
@db_option
@json_option
@handle_errors
def run_start(
    contract: Path,
    input_json: str,
    context_json: str | None,
    idempotency_key: str | None,
    pack_paths: tuple[Path, ...],
    wait: bool,
    model: str | None,
    db: str,
    as_json: bool,
) -> None:
    """Submit CONTRACT (a contract file) with an input; a worker or --wait processes it."""
    c = Contract.load(contract, load_packs(list(pack_paths)))
    payload = parse_json_object(input_json, "--input")
    assert payload is not None
    rt = _runtime(db, write=True, create=True)
    run_id = rt.submit(
        c,
        payload,
        context=parse_json_object(context_json, "--context"),
        idempotency_key=idempotency_key,
        model=model,
    )
    state = rt.run(run_id) if wait else rt.state(run_id)
    if as_json:
        echo_json(state_summary(state))
    else:
        click.echo(f"{run_id}  {state.contract}  {state.status}")
        if state.review:
            click.echo(
                f"waiting for review {state.review.review_id}: charter review show {state.review.review_id}"
            )
        elif state.terminal is not None and state.status != "completed":
            click.echo(f"  {_line(state.terminal, state.terminal.at).split('  ', 1)[1]}", err=True)
    if wait:
        # a script running a task to its end learns the outcome from the exit status
        code = RUN_EXIT_CODES.get(state.status, 0)
        if code:
            raise SystemExit(code)


@run_group.command("list")
@click.option(
    "--status",
    type=click.Choice(RUN_STATUSES),
    help="Only runs in this status.",
)
@click.option("--contract", help="Only runs of this contract (name or name@version).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@db_option
@json_option
@handle_errors
def run_list(status: str | None, contract: str | None, limit: int, db: str, as_json: bool) -> None:
    """List runs, newest first."""
    rows = open_store(db, read_only=True).list_runs(status=status, contract=contract, limit=limit)
    if as_json:
        echo_json([r.__dict__ for r in rows])
        return
    for r in rows:
        click.echo(f"{r.run_id}  {r.contract:<16} {r.status:<10} {r.created_at}")
    if not rows:
        click.echo("no runs")


def _line(stored: StoredEvent, t0: str) -> str:
    ev = stored.event
    offset = (parse_time(stored.at) - parse_time(t0)).total_seconds() * 1000
    head = f"{stored.seq:>4} +{offset:9.1f}ms  "
    if isinstance(ev, RunSubmitted):
        return head + f"submitted {ev.contract} input={json.dumps(ev.input)[:120]}"
    if isinstance(ev, ChannelRead):
        return head + f"read {ev.channel} [{','.join(ev.labels) or '-'}] ({ev.reason})"
    if isinstance(ev, RunAdmitted):
        return head + (
            "admitted after review " + ev.by_review
            if ev.by_review
            else f"admitted ({', '.join(ev.decision.get('rules', [])) or 'no rules'})"
        )
    if isinstance(ev, RunRefused):
        return head + f"REFUSED: {ev.reason}"
    if isinstance(ev, ModelCalled):
        kinds = [
            f"{n} {kind}"
            for n, kind in (
                (ev.cached_input_tokens, "cached"),
                (ev.reasoning_tokens, "reasoning"),
            )
            if n
        ]
        priced = f"prices {ev.price_version}" if ev.price_version else "unpriced"
        redacted = (
            f", redacted {','.join(str(r['channel']) for r in ev.redacted)}" if ev.redacted else ""
        )
        return head + (
            f"model {ev.provider}:{ev.model} step {ev.step} attempt {ev.attempt}: "
            f"{ev.input_tokens}+{ev.output_tokens} tokens"
            + (f" ({', '.join(kinds)})" if kinds else "")
            + f", ${ev.cost_usd:.4f} ({priced}), {ev.latency_ms:.1f}ms{redacted}"
        )
    if isinstance(ev, ProposalAccepted):
        what = (
            "final answer " + json.dumps(ev.final)
            if ev.final is not None
            else ", ".join(f"{a['name']}({json.dumps(a.get('args', {}))})" for a in ev.actions)
        )
        return head + f"proposal (confidence {ev.confidence:.2f}): {what}"
    if isinstance(ev, ProposalRejected):
        return head + f"proposal REJECTED: {'; '.join(ev.reasons)}"
    if isinstance(ev, ActionDecided):
        d = ev.decision
        rules = ", ".join(d.get("rules") or []) or "default"
        return (
            head
            + f"decided {ev.action} step {ev.step}: {d['effect'].upper()} by {rules} — {'; '.join(d.get('reasons', []))}"
        )
    if isinstance(ev, ReviewRequested):
        due = f", due {ev.due_at}" if ev.due_at else ""
        return (
            head
            + f"review {ev.review_id} requested ({ev.kind}, {ev.effect}) from {', '.join(ev.reviewers) or '-'}{due}"
        )
    if isinstance(ev, ReviewDecided):
        edit = f" with args {json.dumps(ev.edited_args)}" if ev.edited_args is not None else ""
        return head + f"review {ev.review_id}: {ev.verdict} by {ev.by}{edit} {ev.comment}".rstrip()
    if isinstance(ev, ActionStarted):
        kind = "compensation " if ev.compensation else ""
        return (
            head
            + f"{kind}started {ev.action} step {ev.step} attempt {ev.attempt} key {ev.idempotency_key}"
        )
    if isinstance(ev, ActionCompleted):
        return (
            head + f"completed {ev.action} in {ev.duration_ms:.1f}ms: {json.dumps(ev.result)[:120]}"
        )
    if isinstance(ev, ActionFailed):
        return head + f"FAILED {ev.action}: {ev.error}"
    if isinstance(ev, ActionShadowed):
        return head + f"shadow mode: {ev.action} step {ev.step} decided {ev.effect}, not executed"
    if isinstance(ev, CompensationStarted):
        return head + f"compensating steps {ev.steps}: {ev.reason}"
    if isinstance(ev, BudgetExceeded):
        return (
            head
            + f"BUDGET {ev.limit} exceeded: {ev.used:g} used + {ev.requested:g} requested > {ev.allowed:g}"
        )
    if isinstance(ev, RunCompleted):
        return head + f"COMPLETED success={ev.success} value={ev.value} cost=${ev.cost_usd:.4f}"
    if isinstance(ev, RunFailed):
        return head + f"FAILED: {ev.error}"
    if isinstance(ev, RunEscalated):
        return head + f"ESCALATED to {', '.join(ev.reviewers) or '-'}: {ev.reason}"
    if isinstance(ev, RunCancelled):
        return head + f"CANCELLED by {ev.by}: {ev.reason}"
    return head + ev.TYPE


@run_group.command("show")
@click.argument("run_id")
@db_option
@json_option
@handle_errors
def run_show(run_id: str, db: str, as_json: bool) -> None:
    """Print a run's timeline: model calls, proposals, decisions, reviews, actions."""
    rt = _runtime(db)
    state = rt.state(run_id)
    events = rt.store.events(state.run_id)
    if as_json:
        echo_json(
            {
                **state_summary(state),
                "timeline": [
                    {
                        "seq": e.seq,
                        "at": e.at,
                        "type": e.type,
                        "data": e.event.to_data(),
                        "hash": e.hash,
                    }
                    for e in events
                ],
            }
        )
        return
    click.echo(f"run {state.run_id}  {state.contract}  status: {state.status}")
    click.echo(
        f"model calls {state.model_calls}, tokens {state.tokens}, cost ${state.cost_usd:.4f}, actions executed {len(state.executed)}"
    )
    for e in events:
        click.echo(_line(e, events[0].at))


@run_group.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="cancelled by operator", show_default=True)
@click.option("--by", default=None, help="Who cancels (default: the OS user).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
@handle_errors
def run_cancel(run_id: str, reason: str, by: str | None, yes: bool, db: str) -> None:
    """Cancel a run that has not ended; its pending actions never execute."""
    if not yes:
        click.confirm(f"Cancel run {run_id}?", abort=True)
    rt = _runtime(db, write=True)
    rt.cancel(run_id, by=by or getpass.getuser(), reason=reason)
    click.echo(f"cancelled {rt.state(run_id).run_id}")


# -- review ------------------------------------------------------------------------------
@click.group("review")
def review_group() -> None:
    """List and decide pending reviews."""


@review_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include decided reviews.")
@db_option
@json_option
@handle_errors
def review_list(show_all: bool, db: str, as_json: bool) -> None:
    """Reviews waiting for a person (oldest first)."""
    rows = open_store(db, read_only=True).list_reviews(status=None if show_all else "pending")
    if as_json:
        echo_json([r.__dict__ for r in rows])
        return
    for r in rows:
        what = r.action or r.kind
        click.echo(
            f"{r.review_id}  {r.run_id}  {r.contract:<14} {what:<14} {r.effect:<9} {r.status:<8} {'; '.join(r.reasons)[:70]}"
        )
    if not rows:
        click.echo("no reviews waiting" if not show_all else "no reviews")


@review_group.command("show")
@click.argument("review_id")
@db_option
@json_option
@handle_errors
def review_show(review_id: str, db: str, as_json: bool) -> None:
    """What a review is about: the exact action, why policy asked, and the run so far."""
    rt = _runtime(db)
    row = rt.store.get_review(review_id)
    state = rt.state(row.run_id)
    req = next((r for r in state.requests if r.review_id == row.review_id), None)
    data = {
        **row.__dict__,
        "args": req.args if req else None,
        "digest": req.digest if req else None,
        "input": state.input,
        "proposal": state.proposal,
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"review {row.review_id} ({row.status}) on run {row.run_id} [{row.contract}]")
    click.echo(f"  asks: {row.effect} of {row.kind} {row.action or ''}".rstrip())
    if req and req.args is not None:
        click.echo(f"  args: {json.dumps(req.args)}")
    click.echo(f"  why: {'; '.join(row.reasons)}")
    click.echo(f"  reviewers: {', '.join(row.reviewers) or '-'}; due {row.due_at or 'no SLA'}")
    click.echo(f"  input: {json.dumps(state.input)[:300]}")
    if state.proposal:
        click.echo(
            f"  model rationale ({state.proposal.get('confidence')}): {state.proposal.get('rationale')}"
        )


def _decide(
    review_id: str,
    verdict: str,
    by: str | None,
    comment: str,
    args_json: str | None,
    cont: bool,
    db: str,
    as_json: bool,
) -> None:
    rt = _runtime(db, write=True)
    args = parse_json_object(args_json, "--args")
    run_id = rt.decide_review(
        review_id, verdict, by=by or getpass.getuser(), comment=comment, args=args
    )
    state = rt.run(run_id) if cont else rt.state(run_id)
    outcome = _verdict_outcome(rt.store.events(run_id), rt.store.get_review(review_id).review_id)
    if as_json:
        echo_json({**state_summary(state), "review": review_id, "outcome": outcome})
    else:
        done = {"approve": "approved", "reject": "rejected"}[verdict]
        click.echo(f"{done} {review_id}: {outcome}; run {run_id} is now {state.status}")


def _verdict_outcome(events: list[StoredEvent], review_id: str) -> str:
    """What became of the action a verdict answered, from the events after it.

    An approval authorises one decision: the action is decided again before it runs, so
    "approved" alone would claim more than happened (docs/runs.md, Reviews).
    """
    request: ReviewRequested | None = None
    verdict: ReviewDecided | None = None
    for stored in events:
        ev = stored.event
        if isinstance(ev, ReviewRequested) and ev.review_id == review_id:
            request = ev
        elif isinstance(ev, ReviewDecided) and ev.review_id == review_id:
            verdict = ev
        elif verdict is None or request is None:
            continue
        elif request.kind != "action" or verdict.verdict != "approve":
            break
        elif (
            isinstance(ev, ActionDecided)
            and ev.step == request.step
            and ev.decision["effect"] == "deny"
        ):
            rules = ", ".join(ev.decision.get("rules") or []) or "default"
            return f"policy denied the action when deciding it again ({rules}): it did not run"
        elif isinstance(ev, ReviewRequested) and ev.step == request.step:
            who = ", ".join(ev.reviewers) or "-"
            return f"the action needs another review first: {ev.review_id} ({ev.effect}, {who})"
        elif isinstance(ev, ActionCompleted) and ev.step == request.step and not ev.compensation:
            return "the action ran"
        elif isinstance(ev, ActionFailed) and ev.step == request.step and not ev.compensation:
            return f"the action ran and failed: {ev.error}"
    if verdict is None:
        return "recorded"
    if verdict.verdict != "approve":
        return "the action will not run" if request and request.kind == "action" else "recorded"
    if request is not None and request.kind == "action":
        return "the action is decided again on current facts before it runs"
    return f"the {request.kind if request else 'run'} may proceed"


@review_group.command("approve")
@click.argument("review_id")
@click.option(
    "--args", "args_json", help="Edited action args as JSON; re-validated and re-decided by policy."
)
@click.option("--by", help="Reviewer name (default: the OS user).")
@click.option("--comment", default="")
@click.option(
    "--continue/--no-continue", "cont", default=True, help="Continue the run in this process."
)
@db_option
@json_option
@handle_errors
def review_approve(
    review_id: str,
    args_json: str | None,
    by: str | None,
    comment: str,
    cont: bool,
    db: str,
    as_json: bool,
) -> None:
    """Approve the exact action (or admission/outcome) under review."""
    _decide(review_id, "approve", by, comment, args_json, cont, db, as_json)


@review_group.command("reject")
@click.argument("review_id")
@click.option("--comment", required=True, help="Why; the model sees it as the reason.")
@click.option("--by", help="Reviewer name (default: the OS user).")
@click.option(
    "--continue/--no-continue", "cont", default=True, help="Continue the run in this process."
)
@db_option
@json_option
@handle_errors
def review_reject(
    review_id: str, comment: str, by: str | None, cont: bool, db: str, as_json: bool
) -> None:
    """Reject what is under review; the action never executes."""
    _decide(review_id, "reject", by, comment, None, cont, db, as_json)


# -- ledger-wide -------------------------------------------------------------------------
@click.command("verify")
@click.argument("run_ids", nargs=-1)
@since_option
@limit_option
@db_option
@json_option
@handle_errors
def verify_cmd(
    run_ids: tuple[str, ...], since: str | None, limit: int | None, db: str, as_json: bool
) -> None:
    """Check the hash chain of every run (or the given runs); exit 1 on the first broken link of any."""
    if run_ids and (since is not None or limit is not None):
        raise UsageError(
            "--since and --limit choose runs from the ledger; name runs or bound the check, not both"
        )
    instant = parse_since(since)
    store = open_store(db, read_only=True)
    bounds = None
    if run_ids:
        ids = [store.find_run(r).run_id for r in run_ids]
    else:
        ids, bounds = select_runs(store, instant, limit)
    with progress("checking", enabled=not as_json, total=len(ids)) as bar:
        checked, broken = verify(store, ids, bar)
    if as_json:
        out: dict[str, Any] = {
            "checked": checked,
            "intact": checked - len(broken),
            "broken": [b.to_dict() for b in broken],
        }
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        echo_json(out)
    else:
        for b in broken:
            click.echo(f"BROKEN {b.run_id} at event {b.seq}: {b.problem}")
        click.echo(
            f"{checked} run(s) checked{bounds.note() if bounds else ''}, "
            f"{checked - len(broken)} intact, {len(broken)} broken"
        )
    if broken:
        raise SystemExit(1)


@click.command("migrate")
@db_option
@handle_errors
def migrate_cmd(db: str) -> None:
    """Create the ledger, or bring an older one to this Charter's schema.

    Read commands never migrate (they open the ledger read-only); commands that write
    migrate as they open it, and this does only that.
    """
    store = open_store(db, create=True)
    version = store.schema_version() if isinstance(store, SqlStore) else "?"
    store.close()
    click.echo(f"ledger {scrub(db)} is at schema version {version}")  # no password of a URL


@click.command("replay")
@click.argument("run_ids", nargs=-1)
@click.option("--all", "all_runs", is_flag=True, help="Replay every run in the ledger.")
@click.option("--since", help="With --all: only runs submitted at or after this ISO 8601 instant.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="With --all: at most this many runs, the oldest first.",
)
@db_option
@json_option
@handle_errors
def replay_cmd(
    run_ids: tuple[str, ...],
    all_runs: bool,
    since: str | None,
    limit: int | None,
    db: str,
    as_json: bool,
) -> None:
    """Re-decide runs from the ledger (no model or executor calls); exit 1 on any divergence."""
    if not run_ids and not all_runs:
        raise UsageError("name a run id, or pass --all")
    if not all_runs and (since is not None or limit is not None):
        raise UsageError("--since and --limit bound --all; pass --all, or drop them")
    instant = parse_since(since)
    rt = _runtime(db)
    bounds = None
    if all_runs:
        ids, bounds = select_runs(rt.store, instant, limit)
    else:
        ids = [rt.store.find_run(r).run_id for r in run_ids]
    results = []
    with progress("replaying", enabled=not as_json, total=len(ids)) as bar:
        for done, rid in enumerate(ids, 1):
            row = rt.store.get_run(rid)
            results.append(replay(rt.store, rt.contract_for(row.policy_hash), rid))
            bar(done, len(ids))
    diverged = [r for r in results if not r.agrees]
    if as_json:
        out: dict[str, Any] = {
            "runs": len(results),
            "agree": len(results) - len(diverged),
            # with --all, only the runs that diverge (the rest agree)
            "results": [r.to_dict() for r in (diverged if all_runs else results)],
        }
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        echo_json(out)
    else:
        for r in results:
            if r.agrees:
                if not all_runs:
                    click.echo(f"{r.run_id}: {r.decisions} decision(s) replayed, all identical")
            else:
                click.echo(
                    f"{r.run_id}: DIVERGES at event {r.divergence['seq'] if r.divergence else '?'}: {json.dumps(r.divergence)}"
                )
        click.echo(
            f"{len(results)} run(s) replayed{bounds.note() if bounds else ''}, "
            f"{len(results) - len(diverged)} agree, {len(diverged)} diverge"
        )
    if diverged:
        raise SystemExit(1)


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


@click.command("report")
@click.option("--contract", help="Only this contract (name or name@version).")
@db_option
@json_option
@handle_errors
def report_cmd(contract: str | None, db: str, as_json: bool) -> None:
    """Per contract: runs by outcome, decisions, human overrides, cost, value, latency;
    model spend per provider:model, and today's and this month's spend against the limits."""
    from charter.runs.spend import window_spend

    rt = _runtime(db)
    units: dict[str, str] = {}
    contracts: dict[str, Contract] = {}
    for row in rt.store.list_runs(contract=contract, limit=1_000_000):
        if row.contract not in units:
            try:
                c = rt.contract_for(row.policy_hash)
            except CharterError as exc:
                click.echo(f"warning: contract of {row.contract} cannot be read: {exc}", err=True)
                units[row.contract] = ""
                continue
            units[row.contract] = c.value.unit if c.value else ""
            contracts[row.contract] = c
    reports = build_report(rt.store, contract, {k: v for k, v in units.items() if v})
    for r in reports:
        if r.contract in contracts:
            c = contracts[r.contract]
            r.spend = window_spend(rt.store, c.name, c.budget, rt.clock())
    if as_json:
        echo_json([r.to_dict() for r in reports])
        return
    if not reports:
        click.echo("no runs")
    for r in reports:
        d = r.to_dict()
        click.echo(f"{r.contract}")
        click.echo("  runs:     " + ", ".join(f"{k} {v}" for k, v in sorted(d["runs"].items())))
        a = d["actions"]
        click.echo(
            f"  actions:  {a['auto_allowed']} auto-allowed, {a['reviewed']} sent to review, {a['escalated']} escalated, {a['denied']} denied; {a['executed']} executed"
        )
        rv = d["reviews"]
        rate = f"{rv['override_rate'] * 100:.1f}%" if rv["override_rate"] is not None else "n/a"
        click.echo(
            f"  reviews:  {rv['decided']} decided, {rv['overridden']} overridden (override rate {rate}), {rv['expired']} expired"
        )
        click.echo(
            f"  model:    {d['model_calls']} calls, {d['tokens']} tokens, cost ${d['cost_usd']:.4f}"
        )
        for m in d["models"]:
            extra = [
                f"{m[k]} {label}"
                for k, label in (
                    ("cached_input_tokens", "cached"),
                    ("reasoning_tokens", "reasoning"),
                    ("unpriced_calls", "calls UNPRICED"),
                )
                if m[k]
            ]
            click.echo(
                f"            {m['model']}: {m['calls']} calls, {m['input_tokens']} in + "
                f"{m['output_tokens']} out tokens"
                + (f" ({', '.join(extra)})" if extra else "")
                + f", ${m['cost_usd']:.4f}"
            )
        if d["spend"]:
            parts = []
            for kind, w in d["spend"].items():
                limit = f" of ${w['limit_usd']:.2f}" if w["limit_usd"] is not None else ""
                parts.append(f"this {kind} ${w['spent_usd']:.4f}{limit}")
            click.echo(
                f"  spend:    {', '.join(parts)} (all versions of {d['contract'].split('@')[0]})"
            )
        if d["value"] is not None:
            click.echo(f"  value:    {d['value']:.2f} {d['value_unit']}")
        lat = d["latency_s"]
        if lat["p50"] is not None:
            click.echo(
                f"  latency:  p50 {lat['p50']:.3f}s, p95 {lat['p95']:.3f}s (submitted → ended)"
            )
        if r.unreadable:
            click.echo(
                f"  UNREADABLE: {len(r.unreadable)} run(s) left out of these figures "
                "(counted by status only; `charter verify` locates the damage):"
            )
            for line in r.unreadable:
                click.echo(f"            {line}")


@click.command("backtest")
@click.argument("contract", type=click.Path(path_type=Path))
@click.option(
    "--runs",
    "run_ids",
    multiple=True,
    help="Only these runs (repeatable); default: every run of the contract's name.",
)
@since_option
@limit_option
@click.option(
    "--packs",
    "pack_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Policy pack file or directory.",
)
@db_option
@json_option
@handle_errors
def backtest_cmd(
    contract: Path,
    run_ids: tuple[str, ...],
    since: str | None,
    limit: int | None,
    pack_paths: tuple[Path, ...],
    db: str,
    as_json: bool,
) -> None:
    """Evaluate a new contract version against recorded runs and report which decisions change."""
    from charter.runs.replay import backtest

    if run_ids and (since is not None or limit is not None):
        raise UsageError(
            "--since and --limit choose runs from the ledger; pass --runs or bound the backtest, not both"
        )
    instant = parse_since(since)
    new = Contract.load(contract, load_packs(list(pack_paths)))
    rt = _runtime(db)
    bounds = None
    if run_ids:
        ids = [rt.store.find_run(r).run_id for r in run_ids]
    else:
        ids, bounds = select_runs(rt.store, instant, limit, contract_name=new.name)
    with progress("evaluating", enabled=not as_json, total=len(ids)) as bar:
        result = backtest(rt.store, new, ids, rt.contract_for, bar)
    if as_json:
        out = result.to_dict()
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        echo_json(out)
        return
    click.echo(
        f"backtest of {new.ref} against {result.runs} run(s) of {', '.join(result.old) or '-'}"
        f"{bounds.note() if bounds else ''}: {result.decisions} decisions, "
        f"{len(result.changes)} would change"
    )
    for line in result.summary():
        click.echo(f"  {line}")
    if result.changes:
        click.echo(
            f"  {'run':<26} {'event':>5}  {'at':<8} {'action':<14} {'before':<9} {'after':<9} rules"
        )
        for c in result.changes[:50]:
            click.echo(
                f"  {c.run_id:<26} {c.seq:>5}  {c.at:<8} {c.action or '-':<14} {c.before:<9} {c.after:<9} {', '.join(c.rules_after)}"
            )
        if len(result.changes) > 50:
            click.echo(f"  ... {len(result.changes) - 50} more (use --json for all)")
    for e in result.errors:
        click.echo(f"  error: {e}", err=True)
