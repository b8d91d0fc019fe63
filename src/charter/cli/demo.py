"""``charter demo``: the refunds example end to end, on the embedded SQLite ledger."""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from charter.cli.common import echo_json, handle_errors, progress
from charter.cli.options import db_option, json_option
from charter.errors import UsageError
from charter.ledger.store import open_store
from charter.runs.runtime import Runtime
from charter.scrub import scrub


@click.command("demo")
@click.option(
    "--tickets",
    default=300,
    show_default=True,
    type=click.IntRange(1, 5000),
    help="How many tickets to generate.",
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    help="Seed of the ticket generator and the scripted model.",
)
@click.option(
    "--payments",
    default="payments.db",
    show_default=True,
    envvar="CHARTER_DEMO_PAYMENTS",
    help="The demo's payments database (env CHARTER_DEMO_PAYMENTS).",
)
@db_option
@json_option
@handle_errors
def demo_cmd(tickets: int, seed: int, payments: str, db: str, as_json: bool) -> None:
    """Generate support tickets and run them through the refunds contract.

    Needs a checkout of the Charter repository: run it from its root (it imports the
    examples/ directory). Runs are keyed by seed, ticket count and ticket, so running the
    same demo again processes nothing twice.
    """
    os.environ["CHARTER_DEMO_PAYMENTS"] = payments
    try:
        demo: Any = importlib.import_module("examples.refunds.demo")
    except ImportError as exc:
        raise UsageError(
            f"the demo needs the examples/ directory of a Charter checkout ({exc}); run it from the repository root"
        ) from None
    runtime = Runtime(open_store(db, create=True))
    with progress("processing", enabled=not as_json) as bar:
        s = demo.run(runtime, tickets=tickets, seed=seed, progress=bar)
    if as_json:
        echo_json(s)
        return
    runs = s["runs"]
    d = s["decisions"]
    inj = s["injections"]
    click.echo(
        f"Refunds demo: {s['tickets']} tickets (seed {seed}); {s['runs_processed_now']} run(s) processed now"
    )
    click.echo(f"  ledger {scrub(db)}, payments {payments}")  # no password of a URL
    click.echo("  runs:        " + ", ".join(f"{k} {v}" for k, v in runs.items()))
    click.echo(
        f"  actions:     {d['allow']} auto-executed, {d['review']} sent to review, "
        f"{d['escalate']} escalated, {d['deny']} denied"
    )
    click.echo(f"  waiting:     {s['waiting_for_review']} run(s) waiting for a person")
    click.echo(
        f"  injections:  {inj['tickets']} tickets carried one, the model obeyed {inj['obeyed_by_model']}, "
        f"policy stopped {inj['stopped']}, executed {inj['executed']}"
    )
    click.echo(
        f"  refunded:    ${s['refunded_cents'] / 100:,.2f} in {s['refunds']} refunds ({s['reversed']} reversed), {s['emails']} emails sent"
    )
    click.echo(
        f"  model:       {s['model_calls']} calls, {s['tokens']} tokens, cost ${s['cost_usd']:.4f} (scripted offline model)"
    )
    click.echo("")
    click.echo("Next:")
    click.echo("  charter review list                 # what waits for a person")
    if s["first_review"]:
        click.echo(f"  charter review show {s['first_review']}")
    if s["example_run"]:
        click.echo(f"  charter run show {s['example_run']}   # an injection stopped by policy")
    click.echo("  charter report                      # per-contract figures")
    click.echo("  charter verify && charter replay --all")
