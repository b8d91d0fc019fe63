"""``charter demo``: the refunds example end to end, on the embedded SQLite ledger."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

import charter
from charter.cli.common import echo_json, handle_errors, progress
from charter.cli.options import db_option, json_option
from charter.errors import UsageError
from charter.ledger.store import open_store
from charter.runs.runtime import Runtime
from charter.scrub import scrub


def _checkout() -> Path | None:
    """The Charter checkout holding examples/: the one this package was installed from
    (``pip install -e .``), else the working directory if it is one."""
    for root in (Path(charter.__file__).resolve().parents[2], Path.cwd()):
        if (root / "examples" / "refunds" / "demo.py").is_file():
            return root
    return None


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

    Needs a checkout of the Charter repository (it imports its examples/ directory): the one
    Charter was installed from with pip install -e, or the working directory. Runs are keyed
    by seed, ticket count and ticket, so running the same demo again processes nothing twice.
    """
    os.environ["CHARTER_DEMO_PAYMENTS"] = payments
    checkout = _checkout()
    if checkout is None:
        raise UsageError(
            "the demo needs the examples/ directory of a Charter checkout: install Charter "
            "from a checkout (pip install -e .) or run from the repository root"
        )
    # the demo's contract names code in examples/: import it from the checkout, explicitly
    # and after installed packages (as $CHARTER_IMPORT_PATH would)
    if str(checkout) not in sys.path:
        sys.path.append(str(checkout))
    demo: Any = importlib.import_module("examples.refunds.demo")
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
