"""``charter review ...``: list, show and decide pending reviews."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from charter.cli.common import echo_json, handle_errors, parse_json_object
from charter.cli.options import (
    db_option,
    json_option,
    runtime_for,
    state_summary,
)
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ReviewDecided,
    ReviewRequested,
    StoredEvent,
)
from charter.ledger.signing import KEY_ENV, signer_from
from charter.ledger.store import open_store

F = TypeVar("F", bound=Callable[..., Any])


def signing_key_option(func: F) -> F:
    return click.option(
        "--key",
        "key_path",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar=KEY_ENV,
        help=f"Sign the verdict with this Ed25519 private key (PEM) (env {KEY_ENV}).",
    )(func)


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
    rt = runtime_for(db)
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
    key_path: Path | None = None,
) -> None:
    signer = signer_from(key_path)  # a bad key is refused before anything else
    rt = runtime_for(db, write=True)
    args = parse_json_object(args_json, "--args")
    run_id = rt.people.decide_review(
        review_id, verdict, by=by or getpass.getuser(), comment=comment, args=args, signer=signer
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
@signing_key_option
@db_option
@json_option
@handle_errors
def review_approve(
    review_id: str,
    args_json: str | None,
    by: str | None,
    comment: str,
    cont: bool,
    key_path: Path | None,
    db: str,
    as_json: bool,
) -> None:
    """Approve the exact action (or admission/outcome) under review."""
    _decide(review_id, "approve", by, comment, args_json, cont, db, as_json, key_path)


@review_group.command("reject")
@click.argument("review_id")
@click.option("--comment", required=True, help="Why; the model sees it as the reason.")
@click.option("--by", help="Reviewer name (default: the OS user).")
@click.option(
    "--continue/--no-continue", "cont", default=True, help="Continue the run in this process."
)
@signing_key_option
@db_option
@json_option
@handle_errors
def review_reject(
    review_id: str,
    comment: str,
    by: str | None,
    cont: bool,
    key_path: Path | None,
    db: str,
    as_json: bool,
) -> None:
    """Reject what is under review; the action never executes."""
    _decide(review_id, "reject", by, comment, None, cont, db, as_json, key_path)
