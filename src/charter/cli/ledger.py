"""Ledger-wide commands: ``verify``, ``replay``, ``migrate`` and ``report``."""

from __future__ import annotations

import json
from typing import Any

import click

from charter.cli.common import echo_json, handle_errors, progress
from charter.cli.options import (
    db_option,
    json_option,
    limit_option,
    parse_since,
    runtime_for,
    select_runs,
    since_option,
)
from charter.contract.model import Contract
from charter.errors import CharterError, UsageError
from charter.ledger.sqlbase import SqlStore
from charter.ledger.store import open_store
from charter.ledger.verify import verify
from charter.runs.replay import replay
from charter.runs.report import build_report
from charter.scrub import scrub


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
    rt = runtime_for(db)
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


@click.command("report")
@click.option("--contract", help="Only this contract (name or name@version).")
@db_option
@json_option
@handle_errors
def report_cmd(contract: str | None, db: str, as_json: bool) -> None:
    """Per contract: runs by outcome, decisions, human overrides, cost, value, latency;
    model spend per provider:model, and today's and this month's spend against the limits."""
    from charter.runs.spend import window_spend

    rt = runtime_for(db)
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
