"""``charter run ...``: submit, list, show and cancel runs."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from charter.cli.common import echo_json, handle_errors, parse_json_object
from charter.cli.options import (
    RUN_EXIT_CODES,
    RUN_STATUSES,
    db_option,
    json_option,
    load_contract,
    packs_option,
    runtime_for,
    state_summary,
)
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    ActionTimedOut,
    BudgetExceeded,
    ChannelRead,
    CompensationStarted,
    Event,
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
from charter.ledger.signing import KEY_ENV, signer_from
from charter.ledger.store import open_store
from charter.primitives import parse_time


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
@packs_option
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
    c = load_contract(contract, pack_paths)
    payload = parse_json_object(input_json, "--input")
    assert payload is not None
    rt = runtime_for(db, write=True, create=True)
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
            click.echo(f"  {_TIMELINE[type(state.terminal.event)](state.terminal.event)}", err=True)
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


_Says = Callable[[Any], str]
_TIMELINE: dict[type[Event], _Says] = {}


def _says(*types: type[Event]) -> Callable[[_Says], _Says]:
    """Register how ``charter run show`` prints an event type (one function per type)."""

    def register(fn: _Says) -> _Says:
        for t in types:
            _TIMELINE[t] = fn
        return fn

    return register


def _line(stored: StoredEvent, t0: str) -> str:
    offset = (parse_time(stored.at) - parse_time(t0)).total_seconds() * 1000
    says = _TIMELINE.get(type(stored.event))
    text = says(stored.event) if says is not None else stored.event.TYPE
    if stored.unreadable:  # sealed content this process cannot read (docs/security.md)
        text += f"  [{stored.unreadable_reason}: {', '.join(stored.unreadable)}]"
    return f"{stored.seq:>4} +{offset:9.1f}ms  {text}"


@_says(RunSubmitted)
def _submitted(ev: RunSubmitted) -> str:
    return f"submitted {ev.contract} input={json.dumps(ev.input)[:120]}"


@_says(ChannelRead)
def _read(ev: ChannelRead) -> str:
    return f"read {ev.channel} [{','.join(ev.labels) or '-'}] ({ev.reason})"


@_says(RunAdmitted)
def _admitted(ev: RunAdmitted) -> str:
    if ev.by_review:
        return "admitted after review " + ev.by_review
    return f"admitted ({', '.join(ev.decision.get('rules', [])) or 'no rules'})"


@_says(RunRefused)
def _refused(ev: RunRefused) -> str:
    return f"REFUSED: {ev.reason}"


@_says(ModelCalled)
def _model_called(ev: ModelCalled) -> str:
    kinds = [
        f"{n} {kind}"
        for n, kind in ((ev.cached_input_tokens, "cached"), (ev.reasoning_tokens, "reasoning"))
        if n
    ]
    priced = f"prices {ev.price_version}" if ev.price_version else "unpriced"
    redacted = (
        f", redacted {','.join(str(r['channel']) for r in ev.redacted)}" if ev.redacted else ""
    )
    return (
        f"model {ev.provider}:{ev.model} step {ev.step} attempt {ev.attempt}: "
        f"{ev.input_tokens}+{ev.output_tokens} tokens"
        + (f" ({', '.join(kinds)})" if kinds else "")
        + f", ${ev.cost_usd:.4f} ({priced}), {ev.latency_ms:.1f}ms{redacted}"
    )


@_says(ProposalAccepted)
def _accepted(ev: ProposalAccepted) -> str:
    what = (
        "final answer " + json.dumps(ev.final)
        if ev.final is not None
        else ", ".join(f"{a['name']}({json.dumps(a.get('args', {}))})" for a in ev.actions)
    )
    return f"proposal (confidence {ev.confidence:.2f}): {what}"


@_says(ProposalRejected)
def _rejected(ev: ProposalRejected) -> str:
    return f"proposal REJECTED: {'; '.join(ev.reasons)}"


@_says(ActionDecided)
def _decided(ev: ActionDecided) -> str:
    d = ev.decision
    rules = ", ".join(d.get("rules") or []) or "default"
    reasons = "; ".join(d.get("reasons", []))
    return f"decided {ev.action} step {ev.step}: {d['effect'].upper()} by {rules} — {reasons}"


@_says(ReviewRequested)
def _review_requested(ev: ReviewRequested) -> str:
    due = f", due {ev.due_at}" if ev.due_at else ""
    who = ", ".join(ev.reviewers) or "-"
    return f"review {ev.review_id} requested ({ev.kind}, {ev.effect}) from {who}{due}"


@_says(ReviewDecided)
def _review_decided(ev: ReviewDecided) -> str:
    edit = f" with args {json.dumps(ev.edited_args)}" if ev.edited_args is not None else ""
    return f"review {ev.review_id}: {ev.verdict} by {ev.by}{edit} {ev.comment}".rstrip()


@_says(ActionStarted)
def _started(ev: ActionStarted) -> str:
    kind = "compensation " if ev.compensation else ""
    return f"{kind}started {ev.action} step {ev.step} attempt {ev.attempt} key {ev.idempotency_key}"


@_says(ActionCompleted)
def _completed(ev: ActionCompleted) -> str:
    return f"completed {ev.action} in {ev.duration_ms:.1f}ms: {json.dumps(ev.result)[:120]}"


@_says(ActionTimedOut)
def _timed_out(ev: ActionTimedOut) -> str:
    kind = "compensation " if ev.compensation else ""
    return (
        f"{kind}TIMED OUT {ev.action} step {ev.step} attempt {ev.attempt} after {ev.timeout_s:g}s"
    )


@_says(ActionFailed)
def _action_failed(ev: ActionFailed) -> str:
    return f"FAILED {ev.action}: {ev.error}"


@_says(ActionShadowed)
def _shadowed(ev: ActionShadowed) -> str:
    return f"shadow mode: {ev.action} step {ev.step} decided {ev.effect}, not executed"


@_says(CompensationStarted)
def _compensating(ev: CompensationStarted) -> str:
    return f"compensating steps {ev.steps}: {ev.reason}"


@_says(BudgetExceeded)
def _budget(ev: BudgetExceeded) -> str:
    return (
        f"BUDGET {ev.limit} exceeded: {ev.used:g} used + {ev.requested:g} requested "
        f"> {ev.allowed:g}"
    )


@_says(RunCompleted)
def _run_completed(ev: RunCompleted) -> str:
    return f"COMPLETED success={ev.success} value={ev.value} cost=${ev.cost_usd:.4f}"


@_says(RunFailed)
def _run_failed(ev: RunFailed) -> str:
    return f"FAILED: {ev.error}"


@_says(RunEscalated)
def _escalated(ev: RunEscalated) -> str:
    return f"ESCALATED to {', '.join(ev.reviewers) or '-'}: {ev.reason}"


@_says(RunCancelled)
def _cancelled(ev: RunCancelled) -> str:
    return f"CANCELLED by {ev.by}: {ev.reason}"


@run_group.command("show")
@click.argument("run_id")
@db_option
@json_option
@handle_errors
def run_show(run_id: str, db: str, as_json: bool) -> None:
    """Print a run's timeline: model calls, proposals, decisions, reviews, actions."""
    rt = runtime_for(db)
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
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar=KEY_ENV,
    help=f"Sign the cancel with this Ed25519 private key (PEM) (env {KEY_ENV}).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
@handle_errors
def run_cancel(
    run_id: str, reason: str, by: str | None, key_path: Path | None, yes: bool, db: str
) -> None:
    """Cancel a run that has not ended; its pending actions never execute."""
    signer = signer_from(key_path)  # a bad key is refused before anything else
    if not yes:
        click.confirm(f"Cancel run {run_id}?", abort=True)
    rt = runtime_for(db, write=True)
    rt.people.cancel(run_id, by=by or getpass.getuser(), reason=reason, signer=signer)
    click.echo(f"cancelled {rt.state(run_id).run_id}")
