"""Ledger-wide commands: ``verify``, ``anchor``, ``replay``, ``migrate`` and ``report``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
from charter.ledger.anchor import FileSink, publish, verify_anchors, write_anchor
from charter.ledger.signing import SignatureChecker, TrustedKeys
from charter.ledger.sqlbase import SqlStore
from charter.ledger.store import open_store
from charter.ledger.verify import verify_ledger
from charter.runs.replay import replay
from charter.runs.report import build_report
from charter.scrub import scrub

F = TypeVar("F", bound=Callable[..., Any])


# -- ledger-wide -------------------------------------------------------------------------
def sink_option(func: F) -> F:
    return click.option(
        "--sink",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="CHARTER_ANCHOR_SINK",
        help="Anchor sink: a file of JSON lines, on another volume (env CHARTER_ANCHOR_SINK).",
    )(func)


@click.command("verify")
@click.argument("run_ids", nargs=-1)
@since_option
@limit_option
@click.option(
    "--anchors", is_flag=True, help="Also check the anchor log and every anchored run head."
)
@sink_option
@click.option(
    "--signatures", is_flag=True, help="Check the signature of every signed verdict and cancel."
)
@click.option(
    "--trusted-keys",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory of Ed25519 public keys (PEM), one per identity, named after it.",
)
@click.option(
    "--require-signatures",
    is_flag=True,
    help="Report approve/reject verdicts and cancels that are not signed.",
)
@db_option
@json_option
@handle_errors
def verify_cmd(
    run_ids: tuple[str, ...],
    since: str | None,
    limit: int | None,
    anchors: bool,
    sink: Path | None,
    signatures: bool,
    trusted_keys: Path | None,
    require_signatures: bool,
    db: str,
    as_json: bool,
) -> None:
    """Check every run's hash chain, and every table against the events; exit 1 on any finding.

    With --anchors (or --sink), also that no run was deleted, cut or re-hashed since an anchor;
    with --trusted-keys, the signature of every signed verdict and cancel.
    """
    if run_ids and (since is not None or limit is not None):
        raise UsageError(
            "--since and --limit choose runs from the ledger; name runs or bound the check, not both"
        )
    signatures = signatures or require_signatures or trusted_keys is not None
    if signatures and trusted_keys is None:
        raise UsageError("--signatures needs --trusted-keys DIR (the reviewers' public keys)")
    if sink is not None and not sink.exists():
        raise UsageError(f"--sink {sink}: no such file")
    anchors = anchors or sink is not None
    instant = parse_since(since)
    checker = (
        SignatureChecker(TrustedKeys(trusted_keys), require=require_signatures)
        if trusted_keys is not None
        else None
    )
    store = open_store(db, read_only=True)
    bounds = None
    if run_ids:
        ids = [store.find_run(r).run_id for r in run_ids]
    else:
        ids, bounds = select_runs(store, instant, limit)
    # every run (a limit that leaves nothing out too): the ledger-wide roll-ups are checked
    whole = not run_ids and instant is None and (bounds is None or bounds.matching == len(ids))
    with progress("checking", enabled=not as_json, total=len(ids)) as bar:
        found = verify_ledger(store, ids, bar, whole=whole, check_events=checker)
    anchored = verify_anchors(store, FileSink(sink) if sink else None) if anchors else None
    broken = found.broken
    if as_json:
        out: dict[str, Any] = {
            "checked": found.checked,
            "intact": found.checked - len(broken),
            "broken": [b.to_dict() for b in broken],
            "projections": "ledger" if whole else "runs",
            "mismatches": [m.to_dict() for m in found.mismatches],
            "notes": found.notes,
        }
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        if anchored is not None:
            out["anchors"] = anchored.to_dict()
        if checker is not None:
            out["signatures"] = {
                "verified": found.signed,
                "problems": [p.to_dict() for p in found.signatures],
            }
        echo_json(out)
    else:
        for b in broken:
            click.echo(f"BROKEN {b.run_id} at event {b.seq}: {b.problem}")
        for m in found.mismatches:
            click.echo(f"MISMATCH {m}")
        for p in found.signatures:
            click.echo(f"SIGNATURE {p.kind} {p}")
        for a in anchored.problems if anchored else []:
            click.echo(f"ANCHOR {a.kind}: {a.message}")
        click.echo(
            f"{found.checked} run(s) checked{bounds.note() if bounds else ''}, "
            f"{found.checked - len(broken)} intact, {len(broken)} broken"
        )
        # a clean check says nothing more (the tables were checked too; --json says which)
        if found.mismatches:
            click.echo(
                f"projections: {len(found.mismatches)} row(s) or field(s) differ from the events"
            )
        if anchored is not None:
            sink_note = (
                f" ({anchored.sink_entries} in {sink})" if anchored.sink_entries is not None else ""
            )
            click.echo(
                f"anchors: {anchored.anchors} anchor(s){sink_note} covering {anchored.covered} "
                f"run(s), {len(anchored.problems)} problem(s)"
            )
            for note in anchored.notes:
                click.echo(f"  note: {note}")
        if checker is not None:
            click.echo(f"signatures: {found.signed} verified, {len(found.signatures)} problem(s)")
        for note in found.notes:
            click.echo(f"note: {note}")
    if not found.ok or (anchored is not None and not anchored.ok):
        raise SystemExit(1)


@click.command("anchor")
@sink_option
@db_option
@json_option
@handle_errors
def anchor_cmd(sink: Path | None, db: str, as_json: bool) -> None:
    """Record a Merkle root over every run's head, chained to the last anchor, in --sink too.

    Exit 1 if runs that an earlier anchor covered are gone or shorter now (the anchor is
    written all the same; `charter verify --anchors` names them).
    """
    store = open_store(db, create=False)
    done = write_anchor(store)
    published = publish(store, FileSink(sink)) if sink is not None else []
    a = done.anchor
    if as_json:
        echo_json(
            {
                **a.to_dict(),
                "leaves": done.leaves,
                "published": published,
                "gone": done.gone,
                "shorter": [{"run_id": r, "anchored": s, "now": n} for r, s, n in done.shorter],
            }
        )
    else:
        for run_id in done.gone:
            click.echo(f"WARNING run {run_id}, covered by an earlier anchor, is gone")
        for run_id, was, now in done.shorter:
            click.echo(
                f"WARNING run {run_id} ends at event {now}, an earlier anchor covered event {was}"
            )
        click.echo(
            f"anchor {a.index} at {a.at}: root {a.root[:16]}… over {a.runs} run(s), "
            f"{done.leaves} changed head(s) recorded"
        )
        if published:
            click.echo(f"published anchor(s) {', '.join(map(str, published))} to {sink}")
    if done.gone or done.shorter:
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
    erased = [r for r in results if r.unreplayable]
    if as_json:
        out: dict[str, Any] = {
            "runs": len(results),
            "agree": len(results) - len(diverged) - len(erased),
            "unreplayable": len(erased),
            # with --all, only the runs that diverge (the rest agree)
            "results": [r.to_dict() for r in (diverged if all_runs else results)],
        }
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        echo_json(out)
    else:
        for r in results:
            if r.unreplayable:
                events = ", ".join(map(str, r.unreplayable))
                click.echo(
                    f"{r.run_id}: {len(r.unreplayable)} decision(s) cannot be replayed "
                    f"(events {events}): what they were made on is "
                    f"{r.unreadable_reason or 'unreadable'}"
                )
            elif r.agrees:
                if not all_runs:
                    click.echo(f"{r.run_id}: {r.decisions} decision(s) replayed, all identical")
            else:
                click.echo(
                    f"{r.run_id}: DIVERGES at event {r.divergence['seq'] if r.divergence else '?'}: {json.dumps(r.divergence)}"
                )
        click.echo(
            f"{len(results)} run(s) replayed{bounds.note() if bounds else ''}, "
            f"{len(results) - len(diverged) - len(erased)} agree, {len(diverged)} diverge"
            + (f", {len(erased)} cannot be replayed" if erased else "")
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
